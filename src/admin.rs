//! The admin client: what `gossip-node members|actors|locate|status` use to talk to a
//! running node over its gossip port (same handshake, same secret).

use crate::error::{Error, Result};
use crate::message::{AdminReply, AdminRequest, Frame, Role};
use crate::transport::{self, TransportConfig};
use std::path::Path;

/// Sends one request to the node at `addr` (`ws://HOST:PORT`) and returns its reply.
/// `tls` is needed for a `wss://` node (its CA, and a client certificate it trusts).
pub async fn request(
    addr: &str,
    secret: Option<Vec<u8>>,
    tls: Option<std::sync::Arc<crate::tls::Tls>>,
    req: AdminRequest,
) -> Result<AdminReply> {
    let cfg = TransportConfig {
        secret: secret.map(std::sync::Arc::new),
        tls,
        ..TransportConfig::default()
    };
    let (mut ws, _) = transport::dial(addr, &Role::Admin, &cfg).await?;
    transport::send(&mut ws, &Frame::Admin(req)).await?;
    let reply = tokio::time::timeout(std::time::Duration::from_secs(30), transport::recv(&mut ws))
        .await
        .map_err(|_| transport::TransportError::Timeout("admin reply"))??;
    let _ = futures_util::SinkExt::close(&mut ws).await;
    match reply {
        Some(Frame::AdminReply(AdminReply::Error(e))) => Err(Error::Remote(e)),
        Some(Frame::AdminReply(r)) => Ok(r),
        Some(Frame::Reject { reason }) => Err(transport::TransportError::Rejected(reason).into()),
        Some(other) => Err(transport::TransportError::Protocol(format!(
            "expected a reply, got {}",
            transport::frame_name(&other)
        ))
        .into()),
        None => Err(transport::TransportError::Closed.into()),
    }
}

/// Reads a cluster secret file: its bytes, surrounding whitespace trimmed. Empty is an error.
pub fn read_secret(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(Error::io(path))?;
    let trimmed = bytes.trim_ascii().to_vec();
    if trimmed.is_empty() {
        return Err(Error::EmptySecret(path.to_path_buf()));
    }
    Ok(trimmed)
}
