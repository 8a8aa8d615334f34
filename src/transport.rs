//! WebSocket transport: dial, accept, the handshake, and framed send/receive with limits.
//!
//! Handshake (both sides time-bounded by `handshake_timeout`):
//! 1. dialer -> listener: `Hello { protocol, cluster, role, nonce_d }`
//! 2. listener checks protocol and cluster, answers `Hello { .., nonce_l,
//!    proof = HMAC(s, "listener" | nonce_d | nonce_l) for each of its secrets s }` (or `Reject`)
//! 3. dialer checks the same and that one of those proofs is made with a secret it knows,
//!    answers `Proof { HMAC(s', "dialer" | nonce_l | nonce_d) }` with the first of its secrets
//!    the listener proved; the listener checks it against all its secrets and rejects a wrong one.
//!
//! Steps 1 and 2 ride in the WebSocket upgrade, as an `x-gossip-hello` header of the request
//! and of its response (the frame's bytes, base64): a connection is ready a round trip
//! sooner, with two frames fewer. A side that finds no such header (a release before it)
//! speaks them as frames instead, so both kinds of node connect.
//!
//! A node may hold several secrets during a rotation ([`crate::secrets`] has the rule): two
//! sides connect when they share one. Without a secret the proofs are empty; a side with a
//! secret never accepts an empty one, so a node with a secret and one without refuse each
//! other. Secrets are never logged.
//!
//! Each handshake reads the node's current [`Credentials`] once at its start, so replacing
//! them ([`SharedCredentials::replace`]) affects new connections only.

use crate::credentials::{Credentials, SharedCredentials};
use crate::message::{Frame, FrameKind, Role, PROTOCOL_VERSION};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64;
use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

pub type Ws = WebSocketStream<crate::tls::Stream>;

/// The upgrade header that carries a side's Hello (module docs).
const HELLO_HEADER: &str = "x-gossip-hello";

/// Limits and credentials shared by every connection of a node.
#[derive(Clone)]
pub struct TransportConfig {
    pub cluster: String,
    /// Cluster secrets and TLS identity, replaceable while running (clones share them).
    pub credentials: SharedCredentials,
    /// Largest frame accepted (and sent); bigger ones close the connection.
    pub max_frame_bytes: usize,
    pub handshake_timeout: Duration,
    /// A connection with nothing received for this long is closed.
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
    /// Where handshake frames are counted (a node's metrics); nowhere by default.
    pub frames: FrameObserver,
}

/// A count of frames by kind and direction, told each handshake frame: the connection's
/// later frames are counted by its owner, which the handshake does not have yet.
#[derive(Clone, Default)]
pub struct FrameObserver(Option<Arc<ObserveFn>>);

type ObserveFn = dyn Fn(Direction, FrameKind, usize) + Send + Sync;

/// Which way a frame went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Sent,
    Received,
}

impl FrameObserver {
    pub fn new(f: impl Fn(Direction, FrameKind, usize) + Send + Sync + 'static) -> Self {
        FrameObserver(Some(Arc::new(f)))
    }

    fn tell(&self, direction: Direction, kind: FrameKind, bytes: usize) {
        if let Some(f) = &self.0 {
            f(direction, kind, bytes);
        }
    }
}

impl std::fmt::Debug for TransportConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransportConfig")
            .field("cluster", &self.cluster)
            .field("credentials", &self.credentials)
            .field("max_frame_bytes", &self.max_frame_bytes)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .finish()
    }
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            cluster: "default".into(),
            credentials: SharedCredentials::default(),
            max_frame_bytes: 1 << 20,
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(3),
            frames: FrameObserver::default(),
        }
    }
}

impl TransportConfig {
    fn ws_config(&self) -> WebSocketConfig {
        WebSocketConfig {
            max_message_size: Some(self.max_frame_bytes),
            max_frame_size: Some(self.max_frame_bytes),
            ..WebSocketConfig::default()
        }
    }
}

/// The listener's proofs: one per secret (empty without a secret).
fn listener_proofs(creds: &Credentials, nonce_d: &[u8; 32], nonce_l: &[u8; 32]) -> Vec<u8> {
    creds
        .secrets
        .as_ref()
        .map(|s| s.prove_each(b"listener", nonce_d, nonce_l))
        .unwrap_or_default()
}

/// The dialer's check of the listener's proofs: `Some(proof to answer with)` when they are
/// made with a secret we know (or, without a secret, when they are empty).
fn dialer_answer(
    creds: &Credentials,
    nonce_d: &[u8; 32],
    nonce_l: &[u8; 32],
    proofs: &[u8],
) -> Option<Vec<u8>> {
    match &creds.secrets {
        None => proofs.is_empty().then(Vec::new),
        Some(s) => {
            let index = s.first_shared(b"listener", nonce_d, nonce_l, proofs)?;
            Some(s.prove_with(index, b"dialer", nonce_l, nonce_d))
        }
    }
}

/// The listener's check of the dialer's answer, in constant time; without a secret it must
/// be empty.
fn listener_accepts(
    creds: &Credentials,
    nonce_d: &[u8; 32],
    nonce_l: &[u8; 32],
    proof: &[u8],
) -> bool {
    match &creds.secrets {
        None => proof.is_empty(),
        Some(s) => s.accepts(b"dialer", nonce_l, nonce_d, proof),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("websocket: {0}")]
    Ws(Box<tokio_tungstenite::tungstenite::Error>),
    #[error("timed out: {0}")]
    Timeout(&'static str),
    #[error("refused by the other side: {0}")]
    Rejected(String),
    /// This side refused the other (the reason was sent to it too).
    #[error("{0}")]
    Refused(String),
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("authentication failed: {0}")]
    Auth(&'static str),
    #[error("connection closed")]
    Closed,
    #[error("bad address {0:?}: expected ws://HOST:PORT (or wss:// with TLS)")]
    BadAddress(String),
    /// A dial answered with a plain HTTP response: someone else's port, or a node's
    /// `--http-listen` one (trial: `websocket: HTTP error: 200 OK`).
    #[error("answered HTTP {0} instead of a WebSocket upgrade: not a node's --listen port (a node's --http-listen port serves only HTTP)")]
    NotWebSocket(u16),
    #[error("{0}")]
    Tls(String),
}

impl From<tokio_tungstenite::tungstenite::Error> for TransportError {
    fn from(e: tokio_tungstenite::tungstenite::Error) -> Self {
        if let tokio_tungstenite::tungstenite::Error::Http(response) = &e {
            return TransportError::NotWebSocket(response.status().as_u16());
        }
        TransportError::Ws(Box::new(e))
    }
}

/// `ws://host:port` or `wss://host:port` -> `host:port`.
pub fn host_port(addr: &str) -> Result<&str, TransportError> {
    let rest = addr
        .strip_prefix("ws://")
        .or_else(|| addr.strip_prefix("wss://"))
        .ok_or_else(|| TransportError::BadAddress(addr.to_owned()))?;
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || !rest.contains(':') || rest.contains('/') {
        return Err(TransportError::BadAddress(addr.to_owned()));
    }
    // A port no one can dial (0, or not a port at all) is no address of a node: a Hello or
    // an announcement with one was taken (a trial).
    let port = rest.rsplit_once(':').map_or("", |(_, p)| p);
    if !port.parse::<u16>().is_ok_and(|p| p > 0) {
        return Err(TransportError::BadAddress(addr.to_owned()));
    }
    Ok(rest)
}

/// Sends one frame.
pub async fn send(ws: &mut Ws, frame: &Frame) -> Result<(), TransportError> {
    ws.send(Message::Binary(frame.encode())).await?;
    Ok(())
}

/// [`send`] during a handshake: counted by the config's observer.
async fn send_counted(
    ws: &mut Ws,
    cfg: &TransportConfig,
    frame: &Frame,
) -> Result<(), TransportError> {
    let bytes = frame.encode();
    let n = bytes.len();
    ws.send(Message::Binary(bytes)).await?;
    cfg.frames.tell(Direction::Sent, frame.kind(), n);
    Ok(())
}

/// [`recv`] during a handshake: counted by the config's observer.
async fn recv_counted(ws: &mut Ws, cfg: &TransportConfig) -> Result<Option<Frame>, TransportError> {
    let got = recv_sized(ws).await?;
    if let Some((frame, n)) = &got {
        cfg.frames.tell(Direction::Received, frame.kind(), *n);
    }
    Ok(got.map(|(frame, _)| frame))
}

/// Receives the next frame; `Ok(None)` when the other side closed.
pub async fn recv<S>(stream: &mut S) -> Result<Option<Frame>, TransportError>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    Ok(recv_sized(stream).await?.map(|(frame, _)| frame))
}

/// [`recv`], with the frame's size in bytes (for metrics).
pub async fn recv_sized<S>(stream: &mut S) -> Result<Option<(Frame, usize)>, TransportError>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match stream.next().await {
            None => return Ok(None),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(Message::Binary(bytes))) => {
                return Frame::decode(&bytes)
                    .map(|f| Some((f, bytes.len())))
                    .map_err(|e| TransportError::Protocol(format!("undecodable frame: {e}")))
            }
            Some(Ok(Message::Close(_))) => return Ok(None),
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Ok(Message::Text(_))) => {
                return Err(TransportError::Protocol(
                    "text frame (only binary frames are spoken)".into(),
                ))
            }
        }
    }
}

fn nonce() -> [u8; 32] {
    rand::random()
}

async fn reject(ws: &mut Ws, cfg: &TransportConfig, reason: String) -> TransportError {
    let _ = send_counted(
        ws,
        cfg,
        &Frame::Reject {
            reason: reason.clone(),
        },
    )
    .await;
    let _ = ws.close(None).await;
    TransportError::Refused(reason)
}

/// The error for a handshake reply other than the `expected` frame: the peer's own
/// rejection, a frame out of place (which we reject), or a closed connection.
async fn unexpected(
    ws: &mut Ws,
    cfg: &TransportConfig,
    expected: &str,
    got: Option<Frame>,
) -> TransportError {
    match got {
        Some(Frame::Reject { reason }) => TransportError::Rejected(reason),
        Some(other) => {
            let reason = format!("expected {expected}, got {}", frame_name(&other));
            reject(ws, cfg, reason).await
        }
        None => TransportError::Closed,
    }
}

/// The checks of the other side's Hello, where `role` is the side that needs them: admin
/// clients need not know the cluster name (the secret still applies to them); a member must
/// present a node id and an address that a node would accept as its own.
fn check_hello(
    cfg: &TransportConfig,
    protocol: u32,
    cluster: &str,
    role: &Role,
) -> Result<(), String> {
    if protocol != PROTOCOL_VERSION {
        return Err(format!(
            "protocol version {protocol} is not ours ({PROTOCOL_VERSION})"
        ));
    }
    let Role::Member { id, addr, .. } = role else {
        return Ok(());
    };
    if cluster != cfg.cluster {
        return Err(cluster_mismatch(&cfg.cluster, cluster));
    }
    crate::names::validate_node_id(id.as_str())
        .map_err(|e| format!("the peer's node id is not valid: {e}"))?;
    host_port(addr).map_err(|e| format!("the peer's address is not valid: {e}"))?;
    Ok(())
}

/// The cluster-mismatch reason, from the side that reports it.
fn cluster_mismatch(ours: &str, theirs: &str) -> String {
    format!("cluster mismatch: we are in cluster {ours:?}, the peer says {theirs:?}")
}

/// Why the other side's proof failed, as far as we can tell: a side without a secret sends
/// an empty proof, so an empty or unexpected one says who lacks the secret.
fn proof_failure(ours: bool, theirs_empty: bool) -> &'static str {
    match (ours, theirs_empty) {
        (false, _) => "the node requires a secret: give its secret file (--secret-file)",
        (true, true) => "the peer has no secret, but this side has one (--secret-file)",
        (true, false) => "the peer's proof matches none of our secrets (a different secret file)",
    }
}

/// Server side: upgrade to WebSocket and run the handshake. Returns the peer's role.
pub async fn accept(
    stream: TcpStream,
    me: &Role,
    cfg: &TransportConfig,
) -> Result<(Ws, Role), TransportError> {
    let _ = stream.set_nodelay(true);
    let creds = cfg.credentials.current();
    tokio::time::timeout(cfg.handshake_timeout, async {
        let stream = match &creds.tls {
            Some(tls) => tls
                .accept(stream)
                .await
                .map_err(|e| TransportError::Tls(format!("TLS: {e}")))?,
            None => crate::tls::Stream::Plain(stream),
        };
        // The dialer's Hello in the upgrade request is answered in its response.
        let mut early: Option<Result<Answer, String>> = None;
        // The callback's type is tungstenite's, refusal and all.
        #[allow(clippy::result_large_err)]
        let answer_in_upgrade = |request: &Request, mut response: Response| {
            let Some(value) = request.headers().get(HELLO_HEADER) else {
                return Ok(response);
            };
            let theirs = frame_from_header(value).and_then(|(frame, len)| {
                cfg.frames
                    .tell(Direction::Received, FrameKind::Handshake, len);
                Hello::of(frame).map_err(|other| {
                    format!(
                        "expected a Hello in the {HELLO_HEADER} header, got {}",
                        frame_name(&other)
                    )
                })
            });
            match theirs {
                Ok(theirs) => {
                    let answer = answer_hello(cfg, &creds, me, theirs);
                    let (value, len) = hello_header(&answer.ours);
                    cfg.frames.tell(Direction::Sent, FrameKind::Handshake, len);
                    response.headers_mut().insert(HELLO_HEADER, value);
                    early = Some(Ok(answer));
                    Ok(response)
                }
                Err(reason) => {
                    early = Some(Err(reason.clone()));
                    let mut refusal = ErrorResponse::new(Some(reason));
                    *refusal.status_mut() = StatusCode::BAD_REQUEST;
                    Err(refusal)
                }
            }
        };
        let upgraded = tokio_tungstenite::accept_hdr_async_with_config(
            stream,
            answer_in_upgrade,
            Some(cfg.ws_config()),
        )
        .await;
        let (mut ws, early) = match (upgraded, early) {
            (_, Some(Err(reason))) => return Err(TransportError::Protocol(reason)),
            (Err(e), _) => return Err(e.into()),
            (Ok(ws), early) => (ws, early.and_then(Result::ok)),
        };
        let answer = match early {
            Some(answer) => answer,
            // A dialer of a release before the header: its Hello comes as a frame.
            None => {
                let theirs = match recv_counted(&mut ws, cfg).await?.map(Hello::of) {
                    Some(Ok(hello)) => hello,
                    Some(Err(other)) => {
                        return Err(reject(
                            &mut ws,
                            cfg,
                            format!("expected Hello, got {}", frame_name(&other)),
                        )
                        .await)
                    }
                    None => return Err(TransportError::Closed),
                };
                let answer = answer_hello(cfg, &creds, me, theirs);
                // On a refusal our Hello goes first only where the dialer can read it (same
                // protocol), so that it finds the mismatch itself and words it from its side.
                if answer.refusal.is_none() || answer.same_protocol {
                    let sent = send_counted(&mut ws, cfg, &answer.ours).await;
                    if answer.refusal.is_none() {
                        sent?;
                    }
                }
                answer
            }
        };
        if let Some(reason) = answer.refusal {
            return Err(reject(&mut ws, cfg, reason).await);
        }
        match recv_counted(&mut ws, cfg).await? {
            Some(Frame::Proof { proof })
                if listener_accepts(&creds, &answer.their_nonce, &answer.my_nonce, &proof) =>
            {
                Ok((ws, answer.role))
            }
            Some(Frame::Proof { proof }) => {
                let _ = reject(
                    &mut ws,
                    cfg,
                    "authentication failed (wrong or missing cluster secret)".into(),
                )
                .await;
                Err(TransportError::Auth(proof_failure(
                    creds.secrets.is_some(),
                    proof.is_empty(),
                )))
            }
            other => Err(unexpected(&mut ws, cfg, "Proof", other).await),
        }
    })
    .await
    .map_err(|_| TransportError::Timeout("handshake"))?
}

/// What the listener needs of the dialer's Hello.
struct Hello {
    protocol: u32,
    cluster: String,
    role: Role,
    nonce: [u8; 32],
}

/// The listener's answer to a dialer's Hello: its own Hello (with proofs only for a dialer
/// it accepts) and, for one it refuses, why.
struct Answer {
    ours: Frame,
    my_nonce: [u8; 32],
    their_nonce: [u8; 32],
    role: Role,
    refusal: Option<String>,
    same_protocol: bool,
}

impl Hello {
    /// The fields of a [`Frame::Hello`]; any other frame is given back.
    fn of(frame: Frame) -> Result<Hello, Frame> {
        match frame {
            Frame::Hello {
                protocol,
                cluster,
                role,
                nonce,
                ..
            } => Ok(Hello {
                protocol,
                cluster,
                role,
                nonce,
            }),
            other => Err(other),
        }
    }
}

/// Checks the dialer's Hello and makes ours.
fn answer_hello(cfg: &TransportConfig, creds: &Credentials, me: &Role, theirs: Hello) -> Answer {
    let refusal = check_hello(cfg, theirs.protocol, &theirs.cluster, &theirs.role).err();
    let my_nonce = nonce();
    let proof = match refusal {
        None => listener_proofs(creds, &theirs.nonce, &my_nonce),
        Some(_) => Vec::new(),
    };
    Answer {
        ours: Frame::Hello {
            protocol: PROTOCOL_VERSION,
            cluster: cfg.cluster.clone(),
            role: me.clone(),
            nonce: my_nonce,
            proof,
        },
        my_nonce,
        their_nonce: theirs.nonce,
        role: theirs.role,
        refusal,
        same_protocol: theirs.protocol == PROTOCOL_VERSION,
    }
}

/// A Hello as the value of [`HELLO_HEADER`], and its size as a frame.
fn hello_header(hello: &Frame) -> (HeaderValue, usize) {
    let bytes = hello.encode();
    let value = HeaderValue::from_str(&BASE64.encode(&bytes)).expect("base64 is a header value");
    (value, bytes.len())
}

/// The frame in a [`HELLO_HEADER`] (base64), and its size.
fn frame_from_header(value: &HeaderValue) -> Result<(Frame, usize), String> {
    let undecodable =
        |e: String| format!("the {HELLO_HEADER} header is not a Hello frame in base64 ({e})");
    let bytes = BASE64
        .decode(value.as_bytes())
        .map_err(|e| undecodable(e.to_string()))?;
    let frame = Frame::decode(&bytes).map_err(undecodable)?;
    Ok((frame, bytes.len()))
}

/// Client side: connect to `addr` (`ws://host:port`) and run the handshake.
pub async fn dial(
    addr: &str,
    me: &Role,
    cfg: &TransportConfig,
) -> Result<(Ws, Role), TransportError> {
    dial_named(addr, None, me, cfg).await
}

/// [`dial`], with TLS verifying the peer against `server_name` instead of the address's
/// host (an address found by resolving a seed name: the certificate holds the name).
pub async fn dial_named(
    addr: &str,
    server_name: Option<&str>,
    me: &Role,
    cfg: &TransportConfig,
) -> Result<(Ws, Role), TransportError> {
    let target = host_port(addr)?;
    let secure = addr.starts_with("wss://");
    let creds = cfg.credentials.current();
    if secure != creds.tls.is_some() {
        return Err(TransportError::Tls(if secure {
            format!("{addr} speaks TLS: give --tls-cert, --tls-key and --tls-ca")
        } else {
            format!("{addr} is plain ws://, but this side requires TLS")
        }));
    }
    let stream = tokio::time::timeout(cfg.connect_timeout, TcpStream::connect(target))
        .await
        .map_err(|_| TransportError::Timeout("connect"))??;
    let _ = stream.set_nodelay(true);
    tokio::time::timeout(cfg.handshake_timeout, async {
        let stream = match &creds.tls {
            Some(tls) => {
                let host = target.rsplit_once(':').map_or(target, |(h, _)| h);
                let host = host.trim_start_matches('[').trim_end_matches(']');
                tls.connect(server_name.unwrap_or(host), stream)
                    .await
                    .map_err(|e| TransportError::Tls(format!("TLS with {addr}: {e}")))?
            }
            None => crate::tls::Stream::Plain(stream),
        };
        let my_nonce = nonce();
        let hello = Frame::Hello {
            protocol: PROTOCOL_VERSION,
            cluster: cfg.cluster.clone(),
            role: me.clone(),
            nonce: my_nonce,
            proof: Vec::new(),
        };
        let mut request = format!("ws://{target}/").into_client_request()?;
        let (value, len) = hello_header(&hello);
        request.headers_mut().insert(HELLO_HEADER, value);
        let (mut ws, response) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(cfg.ws_config()))
                .await?;
        cfg.frames.tell(Direction::Sent, FrameKind::Handshake, len);
        let theirs = match response.headers().get(HELLO_HEADER).map(frame_from_header) {
            Some(Ok((frame, len))) => {
                cfg.frames
                    .tell(Direction::Received, FrameKind::Handshake, len);
                Some(frame)
            }
            Some(Err(reason)) => return Err(reject(&mut ws, cfg, reason).await),
            // A listener of a release before the header: Hellos go as frames.
            None => {
                send_counted(&mut ws, cfg, &hello).await?;
                recv_counted(&mut ws, cfg).await?
            }
        };
        match theirs {
            Some(Frame::Hello {
                protocol,
                cluster,
                role,
                nonce: their_nonce,
                proof,
            }) => {
                // An admin client may ask a node of any cluster: it skips the member checks.
                let checked = if *me == Role::Admin { me } else { &role };
                if let Err(reason) = check_hello(cfg, protocol, &cluster, checked) {
                    return Err(reject(&mut ws, cfg, reason).await);
                }
                let Some(proof) = dialer_answer(&creds, &my_nonce, &their_nonce, &proof) else {
                    let _ = reject(
                        &mut ws,
                        cfg,
                        "authentication failed (wrong or missing cluster secret)".into(),
                    )
                    .await;
                    return Err(TransportError::Auth(proof_failure(
                        creds.secrets.is_some(),
                        proof.is_empty(),
                    )));
                };
                send_counted(&mut ws, cfg, &Frame::Proof { proof }).await?;
                Ok((ws, role))
            }
            other => Err(unexpected(&mut ws, cfg, "Hello", other).await),
        }
    })
    .await
    .map_err(|_| TransportError::Timeout("handshake"))?
}

pub fn frame_name(f: &Frame) -> &'static str {
    match f {
        Frame::Hello { .. } => "Hello",
        Frame::Proof { .. } => "Proof",
        Frame::Reject { .. } => "Reject",
        Frame::Events(_) => "Events",
        Frame::Fingerprint(_) => "Fingerprint",
        Frame::Digest(_) => "Digest",
        Frame::Sync { .. } => "Sync",
        Frame::Delta(_) => "Delta",
        Frame::Audit { .. } => "Audit",
        Frame::Audited { .. } => "Audited",
        Frame::Swim(_) => "Swim",
        Frame::Admin(_) => "Admin",
        Frame::AdminReply(_) => "AdminReply",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::NodeId;

    fn member(id: &str) -> Role {
        Role::Member {
            id: NodeId::new(id),
            generation: 1,
            addr: format!("ws://{id}:1"),
        }
    }

    fn cfg(cluster: &str, secret: Option<&str>) -> TransportConfig {
        TransportConfig {
            cluster: cluster.into(),
            credentials: SharedCredentials::new(Credentials {
                secrets: secret.map(|s| crate::secrets::Secrets::parse(s.as_bytes()).unwrap()),
                tls: None,
            }),
            ..TransportConfig::default()
        }
    }

    /// Runs one handshake over loopback; returns both sides' results.
    async fn handshake(
        server: TransportConfig,
        client: TransportConfig,
    ) -> (Result<Role, String>, Result<Role, String>) {
        handshake_as(server, client, member("client")).await
    }

    /// [`handshake`] with the dialer presenting `me`.
    async fn handshake_as(
        server: TransportConfig,
        client: TransportConfig,
        me: Role,
    ) -> (Result<Role, String>, Result<Role, String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("ws://{}", listener.local_addr().unwrap());
        let srv = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let r = accept(stream, &member("server"), &server).await;
            r.map(|(mut ws, role)| {
                tokio::spawn(async move { while let Ok(Some(_)) = recv(&mut ws).await {} });
                role
            })
            .map_err(|e| e.to_string())
        });
        let c = dial(&addr, &me, &client)
            .await
            .map(|(_, role)| role)
            .map_err(|e| e.to_string());
        (srv.await.unwrap(), c)
    }

    #[tokio::test]
    async fn same_cluster_and_secret_connect() {
        let (s, c) = handshake(cfg("a", Some("k")), cfg("a", Some("k"))).await;
        assert_eq!(s.unwrap(), member("client"));
        assert_eq!(c.unwrap(), member("server"));
        let (s, c) = handshake(cfg("a", None), cfg("a", None)).await;
        assert!(s.is_ok() && c.is_ok());
    }

    #[tokio::test]
    async fn cluster_mismatch_is_refused_with_a_reason_from_each_side() {
        let (s, c) = handshake(cfg("a", None), cfg("b", None)).await;
        let (s, c) = (s.unwrap_err(), c.unwrap_err());
        assert!(
            s.contains(r#"cluster mismatch: we are in cluster "a", the peer says "b""#),
            "listener: {s}"
        );
        assert!(
            c.contains(r#"cluster mismatch: we are in cluster "b", the peer says "a""#),
            "dialer: {c}"
        );
    }

    #[tokio::test]
    async fn a_member_presenting_an_invalid_id_or_address_is_refused() {
        let long = "x".repeat(257);
        for (id, addr, why) in [
            ("a b", "ws://h:1", "node id is not valid"),
            ("", "ws://h:1", "node id is not valid"),
            ("evil\u{202e}id", "ws://h:1", "node id is not valid"),
            (long.as_str(), "ws://h:1", "node id is not valid"),
            ("ok", "http://h:1", "address is not valid"),
            ("ok", "ws://nohost", "address is not valid"),
            ("ok", "ws://h:0", "address is not valid"),
            ("ok", "ws://h:99999", "address is not valid"),
        ] {
            let me = Role::Member {
                id: NodeId::new(id),
                generation: 1,
                addr: addr.into(),
            };
            let (s, c) = handshake_as(cfg("a", None), cfg("a", None), me).await;
            let s = s.unwrap_err();
            assert!(s.contains(why), "{id:?} {addr:?}: {s}");
            // The dialer learns of the refusal at once or on its next read.
            if let Err(c) = c {
                assert!(c.contains(why), "{id:?} {addr:?}: {c}");
            }
        }
    }

    #[tokio::test]
    async fn a_missing_secret_is_named_as_such() {
        let admin = TransportConfig {
            cluster: String::new(),
            ..cfg("a", None)
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("ws://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let _ = accept(stream, &member("server"), &cfg("a", Some("k"))).await;
        });
        let err = dial(&addr, &Role::Admin, &admin)
            .await
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("the node requires a secret") && err.contains("--secret-file"),
            "{err}"
        );
        server.await.unwrap();
        // A member with a secret dialing one without: the peer lacks it.
        let (s, c) = handshake(cfg("a", None), cfg("a", Some("k"))).await;
        assert!(c.unwrap_err().contains("the peer has no secret"));
        assert!(s.is_err());
    }

    #[tokio::test]
    async fn wrong_or_missing_secret_is_refused_both_ways() {
        for (server, client) in [
            (Some("k"), Some("other")),
            (Some("k"), None),
            (None, Some("k")),
        ] {
            let (s, c) = handshake(cfg("a", server), cfg("a", client)).await;
            assert!(s.is_err(), "server accepted {server:?} vs {client:?}");
            let c = c.err();
            // The dialer learns of a refusal either at once or on its next read.
            if let Some(c) = c {
                assert!(c.contains("authentication") || c.contains("refused"), "{c}");
            }
        }
    }

    #[tokio::test]
    async fn nodes_sharing_one_of_their_secrets_connect_during_a_rotation() {
        for (server, client, connects) in [
            ("A", "B\nA", true),
            ("B\nA", "A", true),
            ("B\nA", "B", true),
            ("B", "B\nA", true),
            ("A", "B", false),
            ("B", "A", false),
        ] {
            let (s, c) = handshake(cfg("a", Some(server)), cfg("a", Some(client))).await;
            assert_eq!(s.is_ok(), connects, "{server:?} vs {client:?}: {s:?}");
            if connects {
                assert!(c.is_ok(), "{server:?} vs {client:?}: {c:?}");
            } else if let Err(c) = c {
                assert!(c.contains("authentication") || c.contains("refused"), "{c}");
            }
        }
    }

    /// A listener echoing frames on every connection it accepts.
    async fn echo_server(cfg: TransportConfig) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("ws://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let cfg = cfg.clone();
                tokio::spawn(async move {
                    if let Ok((mut ws, _)) = accept(stream, &member("server"), &cfg).await {
                        while let Ok(Some(frame)) = recv(&mut ws).await {
                            if send(&mut ws, &frame).await.is_err() {
                                break;
                            }
                        }
                    }
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn replaced_credentials_apply_to_new_handshakes_only() {
        let server = cfg("a", Some("A"));
        let addr = echo_server(server.clone()).await;
        let (mut old, _) = dial(&addr, &member("c1"), &cfg("a", Some("A")))
            .await
            .unwrap();
        server
            .credentials
            .replace(Credentials {
                secrets: Some(crate::secrets::Secrets::parse(b"B").unwrap()),
                tls: None,
            })
            .unwrap();
        // The connection opened with A stays up.
        let ping = Frame::Reject {
            reason: "echo".into(),
        };
        send(&mut old, &ping).await.unwrap();
        assert!(
            matches!(recv(&mut old).await.unwrap(), Some(Frame::Reject { reason }) if reason == "echo")
        );
        // New ones need B.
        let refused = dial(&addr, &member("c2"), &cfg("a", Some("A"))).await;
        let refused = refused.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(refused.contains("authentication"), "{refused}");
        assert!(dial(&addr, &member("c3"), &cfg("a", Some("B")))
            .await
            .is_ok());
    }

    /// The frames of a dialer of a release before the Hello header (no secret).
    async fn dial_with_hello_frames(addr: &str, me: Role) -> Result<Role, TransportError> {
        let (mut ws, _) = tokio_tungstenite::connect_async(addr).await?;
        let hello = Frame::Hello {
            protocol: PROTOCOL_VERSION,
            cluster: "a".into(),
            role: me,
            nonce: nonce(),
            proof: Vec::new(),
        };
        ws.send(Message::Binary(hello.encode())).await?;
        let role = match recv(&mut ws).await? {
            Some(Frame::Hello { role, proof, .. }) if proof.is_empty() => role,
            other => return Err(TransportError::Protocol(format!("{other:?}"))),
        };
        let proof = Frame::Proof { proof: Vec::new() };
        ws.send(Message::Binary(proof.encode())).await?;
        Ok(role)
    }

    /// The listener of a release before the Hello header (no secret): it ignores the
    /// header and speaks Hellos as frames.
    async fn listener_with_hello_frames() -> (String, tokio::task::JoinHandle<Option<Role>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("ws://{}", listener.local_addr().unwrap());
        let served = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
            let Some(Frame::Hello { role, .. }) = recv(&mut ws).await.unwrap() else {
                return None;
            };
            let hello = Frame::Hello {
                protocol: PROTOCOL_VERSION,
                cluster: "a".into(),
                role: member("old"),
                nonce: nonce(),
                proof: Vec::new(),
            };
            ws.send(Message::Binary(hello.encode())).await.unwrap();
            match recv(&mut ws).await.unwrap() {
                Some(Frame::Proof { proof }) if proof.is_empty() => Some(role),
                _ => None,
            }
        });
        (addr, served)
    }

    #[tokio::test]
    async fn nodes_with_and_without_the_hello_header_connect_both_ways() {
        // An old dialer to a new listener.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("ws://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (mut ws, role) = accept(stream, &member("new"), &cfg("a", None)).await?;
            tokio::spawn(async move { while let Ok(Some(_)) = recv(&mut ws).await {} });
            Ok::<_, TransportError>(role)
        });
        let dialed = dial_with_hello_frames(&addr, member("old")).await.unwrap();
        assert_eq!(dialed, member("new"));
        assert_eq!(server.await.unwrap().unwrap(), member("old"));
        // A new dialer to an old listener.
        let (addr, served) = listener_with_hello_frames().await;
        let (_ws, role) = dial(&addr, &member("new"), &cfg("a", None)).await.unwrap();
        assert_eq!(role, member("old"));
        assert_eq!(served.await.unwrap(), Some(member("new")));
    }

    #[tokio::test]
    async fn a_hello_in_the_upgrade_is_answered_in_the_upgrade() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (ws, role) = accept(stream, &member("server"), &cfg("a", None)).await?;
            Ok::<_, TransportError>((ws, role))
        });
        let hello = Frame::Hello {
            protocol: PROTOCOL_VERSION,
            cluster: "a".into(),
            role: member("client"),
            nonce: nonce(),
            proof: Vec::new(),
        };
        let mut request = format!("ws://{addr}/").into_client_request().unwrap();
        request
            .headers_mut()
            .insert(HELLO_HEADER, hello_header(&hello).0);
        let (mut ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
        let answer = response
            .headers()
            .get(HELLO_HEADER)
            .expect("a Hello header");
        let (theirs, _) = frame_from_header(answer).unwrap();
        assert!(
            matches!(&theirs, Frame::Hello { role, proof, .. } if *role == member("server") && proof.is_empty()),
            "{theirs:?}"
        );
        // The Proof is the first frame: no Hello frames.
        let proof = Frame::Proof { proof: Vec::new() };
        ws.send(Message::Binary(proof.encode())).await.unwrap();
        let (_ws, role) = server.await.unwrap().unwrap();
        assert_eq!(role, member("client"));
    }

    /// Dials with `value` as the Hello header; returns the listener's error.
    async fn listener_error_for_header(value: &str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            accept(stream, &member("server"), &cfg("a", None))
                .await
                .map(|_| ())
                .unwrap_err()
                .to_string()
        });
        let mut request = format!("ws://{addr}/").into_client_request().unwrap();
        request
            .headers_mut()
            .insert(HELLO_HEADER, HeaderValue::from_str(value).unwrap());
        let refused = tokio_tungstenite::connect_async(request).await.unwrap_err();
        assert!(refused.to_string().contains("400"), "{refused}");
        server.await.unwrap()
    }

    #[tokio::test]
    async fn a_bad_hello_header_is_refused_with_the_reason() {
        let e = listener_error_for_header("not base64!").await;
        assert!(
            e.contains("the x-gossip-hello header is not a Hello frame in base64"),
            "{e}"
        );
        let e = listener_error_for_header(&BASE64.encode(b"\x01\x02")).await;
        assert!(
            e.contains("the x-gossip-hello header is not a Hello frame in base64"),
            "{e}"
        );
        let proof = Frame::Proof { proof: Vec::new() }.encode();
        let e = listener_error_for_header(&BASE64.encode(proof)).await;
        assert!(
            e.contains("expected a Hello in the x-gossip-hello header, got Proof"),
            "{e}"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { failure_persistence: None, ..proptest::prelude::ProptestConfig::with_cases(32) })]
        /// Twin of the `handshake` fuzz target: arbitrary binary messages (and an arbitrary
        /// Hello header) to a listener in its handshake end in a refusal, a timeout or a
        /// handshake, never a panic.
        #[test]
        fn arbitrary_messages_in_the_handshake_never_panic(
            header in proptest::option::of(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)),
            msgs in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64), 0..4)
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = listener.local_addr().unwrap();
                let server = tokio::spawn(async move {
                    let (stream, _) = listener.accept().await.unwrap();
                    let cfg = TransportConfig { handshake_timeout: Duration::from_millis(200), ..cfg("a", Some("k")) };
                    accept(stream, &member("server"), &cfg).await.is_ok()
                });
                let mut request = format!("ws://{addr}/").into_client_request().unwrap();
                if let Some(bytes) = header {
                    let value = HeaderValue::from_str(&BASE64.encode(bytes)).unwrap();
                    request.headers_mut().insert(HELLO_HEADER, value);
                }
                // A header that is not a Hello is refused in the upgrade.
                if let Ok((mut ws, _)) = tokio_tungstenite::connect_async(request).await {
                    for m in msgs {
                        if ws.send(Message::Binary(m)).await.is_err() {
                            break;
                        }
                    }
                }
                // Without the secret's proof no byte string gets through.
                assert!(!server.await.unwrap());
            });
        }
    }

    #[test]
    fn addresses_are_checked() {
        assert_eq!(host_port("ws://127.0.0.1:7000").unwrap(), "127.0.0.1:7000");
        assert!(host_port("http://x:1").is_err());
        assert!(host_port("ws://nohost").is_err());
        assert!(host_port("ws://127.0.0.1:0").is_err());
        assert!(host_port("ws://[::1]:7000").is_ok());
    }
}
