//! Connections: accept, dial, and one reader and one writer per connection. They hold no
//! protocol state: frames go to the driver (`node.rs`) as [`Input`]s through bounded
//! channels, and the driver hands encoded frames to each connection's writer queues.
//!
//! Each connection has two writer queues: probe traffic (pings, acks) goes ahead of gossip,
//! so a backlog of large gossip frames never delays failure detection.

use crate::error::Error;
use crate::event::{Generation, Lsn, NodeId};
use crate::local::Identity;
use crate::machine::{Command, Reply, Wire};
use crate::message::{Frame, Role};
use crate::metrics::{DropReason, Metrics};
use crate::node::{Driver, NodeConfig};
use crate::store::WalStats;
use crate::transport::{self, TransportConfig, TransportError, Ws};
use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Frames waiting for one peer's writer; beyond this, gossip frames are dropped (lossy by
/// design: anti-entropy repairs) rather than letting a slow peer grow our memory.
pub(crate) const PEER_QUEUE: usize = 1024;
/// Probe frames waiting for one peer's writer.
const PROBE_QUEUE: usize = 256;
/// A writer puts frames that wait together into one write up to about this many bytes.
const WRITE_BATCH_BYTES: usize = 64 * 1024;
/// Inputs waiting for the driver: probe traffic, durability and connection changes.
const CONTROL_QUEUE: usize = 4096;
/// Inputs waiting for the driver: gossip, anti-entropy, admin.
const DATA_QUEUE: usize = 1024;

/// Work for the driver from a handle or an admin connection (a query of its state).
pub(crate) type Job = Box<dyn FnOnce(&Driver) + Send>;

/// What connections, timers and handles tell the driver.
pub(crate) enum Input {
    Frame {
        from: NodeId,
        frame: Frame,
    },
    /// A member connection is ready; `kept` says whether the driver uses it (`Ok(false)`:
    /// it keeps another one to that peer) or refuses the peer (`Err(reason)`).
    Up {
        peer: NodeId,
        conn: Conn,
        /// Where we dialed it; `None` for a connection the peer opened.
        dialed_addr: Option<String>,
        /// For a connection the peer opened: the generation and address its handshake
        /// presented, which the driver admits or refuses (an id in use) in the same turn.
        admit: Option<(Generation, String)>,
        kept: oneshot::Sender<Result<bool, String>>,
    },
    /// A member connection closed; `hint`: unexpectedly (probe that member soon).
    Down {
        peer: NodeId,
        conn_id: u64,
        hint: bool,
    },
    DialFailed {
        /// Why, when nothing was logged for it yet (the driver warns about seeds).
        error: Option<String>,
        addr: String,
        refused: Option<String>,
        /// The address reached this very node (another address of ours).
        itself: bool,
    },
    /// A member refused us after the handshake.
    Refused {
        addr: String,
        reason: String,
    },
    Command {
        command: Command,
        reply: oneshot::Sender<Reply>,
    },
    Query(Job),
    /// Seeds found by discovery (DNS), for the machine.
    Discovered(Vec<String>),
    Durable(Lsn),
    Failed(Error),
    /// Stop the node (an admin client's `leave`, once answered).
    Stop(crate::node::StopReason),
}

/// What every connection task needs: who we are, limits, the driver's inputs, shutdown.
pub(crate) struct Ctx {
    pub(crate) role: Role,
    pub(crate) transport: TransportConfig,
    pub(crate) control: mpsc::Sender<Input>,
    pub(crate) data: mpsc::Sender<Input>,
    pub(crate) cancel: CancellationToken,
    pub(crate) tasks: TaskTracker,
    /// Frames and bytes by kind, drops, handshake failures, compactions (for `/metrics`).
    pub(crate) metrics: Metrics,
    /// Why the node stopped, once it has (for admin clients waiting on a change).
    pub(crate) stop_reason: std::sync::OnceLock<String>,
    /// TLS names of addresses found by resolving seed names (address -> name).
    pub(crate) seed_names: Arc<std::sync::Mutex<HashMap<String, String>>>,
    inbound: Arc<Semaphore>,
    next_conn: AtomicU64,
    /// When each (address, refusal) was last warned about: a node with the wrong secret
    /// retries its peers every few hundred ms and would say so each time.
    refusals_warned: std::sync::Mutex<HashMap<(String, String), std::time::Instant>>,
}

/// A refusal by or of the same peer, for the same reason, is a WARN at most this often.
const REFUSAL_WARN_EVERY: Duration = Duration::from_secs(30);

impl Ctx {
    pub(crate) fn new(
        me: &Identity,
        addr: &str,
        config: &NodeConfig,
        wal: &WalStats,
    ) -> (Ctx, mpsc::Receiver<Input>, mpsc::Receiver<Input>) {
        let (control, control_rx) = mpsc::channel(CONTROL_QUEUE);
        let (data, data_rx) = mpsc::channel(DATA_QUEUE);
        let metrics = Metrics::new(
            me.id.as_str(),
            me.generation,
            &config.transport.cluster,
            wal,
        );
        let transport = TransportConfig {
            frames: metrics.frame_observer(),
            ..config.transport.clone()
        };
        let ctx = Ctx {
            role: Role::Member {
                id: me.id.clone(),
                generation: me.generation,
                addr: addr.to_owned(),
            },
            transport,
            control,
            data,
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
            metrics,
            stop_reason: std::sync::OnceLock::new(),
            seed_names: Arc::default(),
            inbound: Arc::new(Semaphore::new(config.max_connections)),
            next_conn: AtomicU64::new(1),
            refusals_warned: Default::default(),
        };
        (ctx, control_rx, data_rx)
    }

    /// Whether `key` was not said in the last [`REFUSAL_WARN_EVERY`] (and is now).
    fn fresh(&self, key: (String, String)) -> bool {
        let now = std::time::Instant::now();
        let mut said = self
            .refusals_warned
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if said.len() > 1024 {
            said.retain(|_, at| now.duration_since(*at) < REFUSAL_WARN_EVERY);
        }
        match said.get(&key) {
            Some(at) if now.duration_since(*at) < REFUSAL_WARN_EVERY => false,
            // Over a thousand keys said within the window (a flood from many hosts): the
            // map stays bounded and the rest goes to DEBUG.
            None if said.len() > 1024 => false,
            _ => {
                said.insert(key, now);
                true
            }
        }
    }

    /// A refused handshake, at WARN once per address and reason per [`REFUSAL_WARN_EVERY`],
    /// else at DEBUG.
    fn warn_refusal(&self, addr: &str, error: &TransportError, what: &'static str) {
        let fresh = self.fresh((addr.to_owned(), error.to_string()));
        if fresh {
            tracing::warn!(%addr, %error, "{what} (said once per 30 s per peer and reason)");
        } else {
            tracing::debug!(%addr, %error, "{what}");
        }
    }

    fn generation(&self) -> Option<Generation> {
        match &self.role {
            Role::Member { generation, .. } => Some(*generation),
            Role::Admin => None,
        }
    }

    fn me(&self) -> &NodeId {
        match &self.role {
            Role::Member { id, .. } => id,
            Role::Admin => unreachable!("a node is a member"),
        }
    }
}

/// The driver's end of one member connection.
pub(crate) struct Conn {
    pub(crate) id: u64,
    /// Who dialed it (for the simultaneous-dial tie-break).
    pub(crate) dialer: NodeId,
    tx: mpsc::Sender<Wire>,
    probe_tx: mpsc::Sender<Wire>,
    pub(crate) close: CancellationToken,
    /// Where drops are counted.
    ctx: Arc<Ctx>,
}

impl Conn {
    /// Queues a frame for the writer; dropped when the queue is full (a slow peer must not
    /// grow our memory: anti-entropy repairs).
    pub(crate) fn push(&self, wire: Wire, probe: bool) {
        let q = if probe { &self.probe_tx } else { &self.tx };
        if let Err(e) = q.try_send(wire) {
            self.ctx.metrics.dropped(match e {
                mpsc::error::TrySendError::Full(_) => DropReason::QueueFull,
                mpsc::error::TrySendError::Closed(_) => DropReason::Closed,
            });
        }
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.tx.capacity() == PEER_QUEUE && self.probe_tx.capacity() == PROBE_QUEUE
    }
}

/// Accepts connections until shutdown; each gets its own task. Over the connection cap, a
/// new connection is closed at once.
pub(crate) async fn accept_loop(ctx: Arc<Ctx>, listener: tokio::net::TcpListener) {
    loop {
        let accepted = tokio::select! {
            _ = ctx.cancel.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = ctx.inbound.clone().try_acquire_owned() else {
            // Once per 30 s: a flood over the cap must not become a flood of log lines
            // (a trial's 200 idle connections to a cap of 16 wrote 185 warnings).
            if ctx.fresh(("connection cap".into(), String::new())) {
                tracing::warn!(%remote, "connection cap (--max-connections) reached; closing new connections (said once per 30 s)");
            } else {
                tracing::debug!(%remote, "connection cap reached; closing a new connection");
            }
            continue;
        };
        let ctx2 = ctx.clone();
        ctx.tasks.spawn(async move {
            let _permit = permit;
            let result = tokio::select! {
                _ = ctx2.cancel.cancelled() => return,
                r = transport::accept(stream, &ctx2.role, &ctx2.transport) => r,
            };
            match result {
                Ok((ws, Role::Admin)) => crate::admin_server::serve(ctx2, ws).await,
                Ok((ws, Role::Member { id, generation, addr })) => {
                    run_member(ctx2, ws, id, None, Some((generation, addr))).await
                }
                Err(e) => {
                    // A flood of bad connections must not become a flood of log lines, nor
                    // hide a later peer's failure of another kind: once per 30 s per remote
                    // host and kind of failure.
                    ctx2.metrics.handshake_failures.inc();
                    let n = ctx2.metrics.handshake_failures.get();
                    let key = (format!("inbound {}", remote.ip()), failure_kind(&e).to_owned());
                    if ctx2.fresh(key) {
                        tracing::info!(%remote, error = %e, failures_so_far = n, "handshake failed (said once per 30 s per host and kind of failure)");
                    } else {
                        tracing::debug!(%remote, error = %e, "handshake failed");
                    }
                }
            }
        });
    }
}

/// What kind of failure a handshake error is, for grouping log lines (never the peer's own
/// words: they could make every line new).
fn failure_kind(e: &TransportError) -> &'static str {
    match e {
        TransportError::Io(_) => "io",
        TransportError::Ws(_) | TransportError::NotWebSocket(_) => "websocket",
        TransportError::Timeout(_) => "timeout",
        TransportError::Rejected(_) => "rejected",
        TransportError::Refused(_) => "refused",
        TransportError::Protocol(_) => "protocol",
        TransportError::Auth(_) => "authentication",
        TransportError::Closed => "closed",
        TransportError::BadAddress(_) => "address",
        TransportError::Tls(_) => "tls",
    }
}

/// Dials `addr`; on success the connection is served like an accepted one.
pub(crate) async fn dial(ctx: Arc<Ctx>, addr: String) {
    let name = ctx
        .seed_names
        .lock()
        .ok()
        .and_then(|names| names.get(&addr).cloned());
    let result = tokio::select! {
        _ = ctx.cancel.cancelled() => return,
        r = transport::dial_named(&addr, name.as_deref(), &ctx.role, &ctx.transport) => r,
    };
    match result {
        Ok((ws, Role::Member { id, .. })) if id != *ctx.me() => {
            run_member(ctx, ws, id, Some(addr), None).await
        }
        Ok((_, role)) => {
            let refused = match role {
                // Another process answers with our id: a live node holds it (we were started
                // with its --node-id and another data dir). Not us under another address:
                // that would be our own generation.
                Role::Member {
                    id,
                    generation,
                    addr: theirs,
                } if Some(generation) != ctx.generation() => Some(format!(
                    "{}{id} is held by the live member at {theirs} (generation {generation})",
                    crate::machine::ID_IN_USE
                )),
                Role::Member { .. } => {
                    tracing::info!(%addr, "this address reaches this node itself; not dialing it again");
                    let _ = ctx
                        .control
                        .send(Input::DialFailed {
                            addr,
                            refused: None,
                            error: None,
                            itself: true,
                        })
                        .await;
                    return;
                }
                Role::Admin => None,
            };
            let _ = ctx
                .control
                .send(Input::DialFailed {
                    addr,
                    refused,
                    error: None,
                    itself: false,
                })
                .await;
        }
        Err(e) => {
            let refused = match &e {
                TransportError::Rejected(reason) => {
                    ctx.warn_refusal(&addr, &e, "peer refused the connection");
                    Some(reason.clone())
                }
                // A dialer's Auth error is its own check of the listener's proof failing.
                TransportError::Refused(_) | TransportError::Auth(_) => {
                    ctx.warn_refusal(&addr, &e, "refused the peer");
                    None
                }
                TransportError::Tls(_) => {
                    ctx.warn_refusal(&addr, &e, "TLS with the peer failed");
                    None
                }
                _ => {
                    tracing::debug!(%addr, error = %e, "dial failed");
                    let error = Some(e.to_string());
                    let _ = ctx
                        .control
                        .send(Input::DialFailed {
                            addr,
                            refused: None,
                            error,
                            itself: false,
                        })
                        .await;
                    return;
                }
            };
            let _ = ctx
                .control
                .send(Input::DialFailed {
                    addr,
                    refused,
                    error: None,
                    itself: false,
                })
                .await;
        }
    }
}

/// Serves one member connection after its handshake, until either side closes it: one we
/// dialed at `dialed_addr`, or one the peer opened presenting `admit` (its generation and
/// address).
async fn run_member(
    ctx: Arc<Ctx>,
    mut ws: Ws,
    peer: NodeId,
    dialed_addr: Option<String>,
    admit: Option<(Generation, String)>,
) {
    let dialed_by_me = dialed_addr.is_some();
    let (tx, mut rx) = mpsc::channel::<Wire>(PEER_QUEUE);
    let (probe_tx, mut probe_rx) = mpsc::channel::<Wire>(PROBE_QUEUE);
    let close = CancellationToken::new();
    let conn_id = ctx.next_conn.fetch_add(1, Ordering::Relaxed);
    let dialer = if dialed_by_me {
        ctx.me().clone()
    } else {
        peer.clone()
    };
    let (kept_tx, kept) = oneshot::channel();
    let up = Input::Up {
        peer: peer.clone(),
        conn: Conn {
            id: conn_id,
            dialer,
            tx,
            probe_tx,
            close: close.clone(),
            ctx: ctx.clone(),
        },
        dialed_addr: dialed_addr.clone(),
        admit: admit.clone(),
        kept: kept_tx,
    };
    if ctx.control.send(up).await.is_err() {
        return;
    }
    match kept.await {
        Ok(Ok(true)) => {}
        Ok(Err(reason)) => {
            let (generation, addr) = admit.unwrap_or_default();
            if peer == *ctx.me() && Some(generation) == ctx.generation() {
                // Our own dial of an address that reaches us (the dialing side says so).
                tracing::debug!(%addr, "refused a connection from this node itself");
            } else {
                tracing::warn!(%peer, %addr, %reason, "refused a member");
            }
            let _ = transport::send(&mut ws, &Frame::Reject { reason }).await;
            let _ = ws.close(None).await;
            return;
        }
        Ok(Ok(false)) | Err(_) => return,
    }
    tracing::debug!(%peer, dialed_by_me, "connected");
    let (mut sink, mut stream) = ws.split();
    let counters = ctx.clone();
    let writer = ctx.tasks.spawn(async move {
        loop {
            let mut wire = tokio::select! {
                biased;
                Some(w) = probe_rx.recv() => w,
                Some(w) = rx.recv() => w,
                else => break,
            };
            // The frames already waiting go out with it, in one write where they fit: a
            // driver turn often queues several for one peer.
            let mut batched = 0;
            loop {
                counters.metrics.sent(wire.kind, wire.len());
                batched += wire.len();
                if sink.feed(Message::Binary(wire.to_vec())).await.is_err() {
                    return;
                }
                if batched >= WRITE_BATCH_BYTES {
                    break;
                }
                match probe_rx.try_recv().or_else(|_| rx.try_recv()) {
                    Ok(next) => wire = next,
                    Err(_) => break,
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
    });
    let idle = ctx.transport.idle_timeout;
    let reason = loop {
        let next = tokio::select! {
            _ = ctx.cancel.cancelled() => break "shutting down".to_string(),
            _ = close.cancelled() => break "closed by the node".to_string(),
            n = tokio::time::timeout(idle, transport::recv_sized(&mut stream)) => n,
        };
        let frame = match next {
            Err(_) => break format!("idle for {idle:?}"),
            Ok(Ok(None)) => break "closed by peer".to_string(),
            Ok(Err(e)) => {
                let reason = e.to_string();
                if reason.contains("too long") || reason.contains("Space limit") {
                    tracing::warn!(%peer, %reason, "a peer sends frames larger than our --max-frame-bytes: every node of a cluster must use the same value");
                }
                break reason;
            }
            Ok(Ok(Some((frame, bytes)))) => {
                ctx.metrics.received(frame.kind(), bytes);
                frame
            }
        };
        let (queue, input) = match frame {
            Frame::Reject { reason } => {
                let addr = dialed_addr.clone().unwrap_or_else(|| peer.to_string());
                let _ = ctx
                    .control
                    .send(Input::Refused {
                        addr,
                        reason: reason.clone(),
                    })
                    .await;
                break format!("refused: {reason}");
            }
            f @ Frame::Swim(_) => (
                &ctx.control,
                Input::Frame {
                    from: peer.clone(),
                    frame: f,
                },
            ),
            // Liveness news (a suspicion, a refutation, a death) goes ahead of bulk data: a
            // refutation queued behind 20,000 actor events would arrive after the suspicion
            // it answers has timed out.
            Frame::Events(events) => {
                let (liveness, data): (Vec<_>, Vec<_>) =
                    events.into_iter().partition(|e| !e.is_data());
                if !liveness.is_empty() {
                    let urgent = Input::Frame {
                        from: peer.clone(),
                        frame: Frame::Events(liveness),
                    };
                    if ctx.control.send(urgent).await.is_err() {
                        break "shutting down".to_string();
                    }
                }
                if data.is_empty() {
                    continue;
                }
                (
                    &ctx.data,
                    Input::Frame {
                        from: peer.clone(),
                        frame: Frame::Events(data),
                    },
                )
            }
            f => (
                &ctx.data,
                Input::Frame {
                    from: peer.clone(),
                    frame: f,
                },
            ),
        };
        if queue.send(input).await.is_err() {
            break "shutting down".to_string();
        }
    };
    tracing::debug!(%peer, %reason, "connection closed");
    let hint = !ctx.cancel.is_cancelled() && !close.is_cancelled();
    let _ = ctx
        .control
        .send(Input::Down {
            peer,
            conn_id,
            hint,
        })
        .await;
    let _ = writer.await;
}
