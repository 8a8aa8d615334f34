//! The admin client: what `gossip-node members|actors|locate|status` use to talk to a
//! running node over its gossip port (same handshake, same secret).

use crate::credentials::{Credentials, SharedCredentials};
use crate::error::{Error, Result};
use crate::message::{AdminReply, AdminRequest, Frame, Role};
use crate::secrets::Secrets;
use crate::transport::{self, TransportConfig};
use std::path::Path;

/// Sends one request to the node at `addr` (`ws://HOST:PORT`) and returns its reply, joined
/// from as many frames as the node needed. `tls` is needed for a `wss://` node (its CA, and a
/// client certificate it trusts). Actor changes of any size go through [`change_actors`].
pub async fn request(
    addr: &str,
    secret: Option<Secrets>,
    tls: Option<std::sync::Arc<crate::tls::Tls>>,
    req: AdminRequest,
) -> Result<AdminReply> {
    let mut session = Session::open(addr, secret, tls).await?;
    let reply = session.ask(req).await;
    session.close().await;
    reply
}

/// Registers (`add`) or removes actors on the node at `addr`, in as many requests as the
/// names need (each under the frame cap); returns the names that changed.
pub async fn change_actors(
    addr: &str,
    secret: Option<Secrets>,
    tls: Option<std::sync::Arc<crate::tls::Tls>>,
    names: Vec<String>,
    add: bool,
) -> Result<Vec<String>> {
    for n in &names {
        crate::names::validate_actor_name(n)?;
    }
    let mut session = Session::open(addr, secret, tls).await?;
    let mut changed = Vec::new();
    for chunk in split_names(names, REQUEST_BYTES) {
        let req = if add {
            AdminRequest::AddActors { actors: chunk }
        } else {
            AdminRequest::RemoveActors { actors: chunk }
        };
        match session.ask(req).await? {
            AdminReply::ActorsChanged { changed: c } => changed.extend(c),
            other => {
                return Err(transport::TransportError::Protocol(format!(
                    "expected the actors that changed, got {other:?}"
                ))
                .into())
            }
        }
    }
    session.close().await;
    Ok(changed)
}

/// Names per request stay under this many bytes: well under any frame cap we allow, and a
/// change small enough that the node handles probes in between (about 4,000 names).
const REQUEST_BYTES: usize = 64 * 1024;

fn split_names(names: Vec<String>, max: usize) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut used = 0;
    for n in names {
        if !current.is_empty() && used + n.len() + 5 > max {
            out.push(std::mem::take(&mut current));
            used = 0;
        }
        used += n.len() + 5;
        current.push(n);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// One admin connection: requests in turn, each answered before the next.
struct Session {
    ws: transport::Ws,
}

impl Session {
    async fn open(
        addr: &str,
        secret: Option<Secrets>,
        tls: Option<std::sync::Arc<crate::tls::Tls>>,
    ) -> Result<Session> {
        let cfg = TransportConfig {
            credentials: SharedCredentials::new(Credentials {
                secrets: secret,
                tls,
            }),
            ..TransportConfig::default()
        };
        let (ws, _) = transport::dial(addr, &Role::Admin, &cfg).await?;
        Ok(Session { ws })
    }

    async fn ask(&mut self, req: AdminRequest) -> Result<AdminReply> {
        transport::send(&mut self.ws, &Frame::Admin(req)).await?;
        let mut parts = Vec::new();
        loop {
            // Each frame comes quickly once the node has the answer; a change is answered
            // once durable, which a slow disk can delay: a generous bound.
            let reply = tokio::time::timeout(
                std::time::Duration::from_secs(120),
                transport::recv(&mut self.ws),
            )
            .await
            .map_err(|_| transport::TransportError::Timeout("admin reply"))??;
            match reply {
                Some(Frame::AdminReply(AdminReply::Part(p))) => parts.push(p),
                Some(Frame::AdminReply(AdminReply::Error(e))) => return Err(Error::Remote(e)),
                Some(Frame::AdminReply(AdminReply::Members(m))) => {
                    parts.push(m);
                    return Ok(AdminReply::Members(crate::admin_server::join_parts(parts)));
                }
                Some(Frame::AdminReply(AdminReply::Located(m))) => {
                    parts.push(m);
                    return Ok(AdminReply::Located(crate::admin_server::join_parts(parts)));
                }
                Some(Frame::AdminReply(r)) => return Ok(r),
                Some(Frame::Reject { reason }) => {
                    return Err(transport::TransportError::Rejected(reason).into())
                }
                Some(other) => {
                    return Err(transport::TransportError::Protocol(format!(
                        "expected a reply, got {}",
                        transport::frame_name(&other)
                    ))
                    .into())
                }
                None => return Err(transport::TransportError::Closed.into()),
            }
        }
    }

    async fn close(mut self) {
        let _ = futures_util::SinkExt::close(&mut self.ws).await;
    }
}

/// Reads a cluster secret file: one secret a line, the first the one we prove with (see
/// [`crate::secrets`]). A file without a secret is an error.
pub fn read_secret(path: &Path) -> Result<Secrets> {
    Secrets::read_file(path)
}
