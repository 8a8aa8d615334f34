//! SIGHUP rereads the secret file and the TLS files and swaps them in for new connections
//! (established ones stay up). A reload that fails keeps the credentials in use.

use gossip_roster::{CredentialFiles, Node};
use tokio::signal::unix::{signal, Signal, SignalKind};

/// Installs the SIGHUP handler now: the default action of SIGHUP would end the process.
pub fn hangups() -> anyhow::Result<Signal> {
    use anyhow::Context as _;
    signal(SignalKind::hangup()).context("installing the SIGHUP handler")
}

/// On each SIGHUP, reloads `files` into `node`, until the process ends.
pub async fn reload_on_hangup(mut hangups: Signal, node: Node, files: CredentialFiles) {
    while hangups.recv().await.is_some() {
        reload(&node, &files);
    }
}

fn reload(node: &Node, files: &CredentialFiles) {
    if files.secret_file.is_none() && files.tls.is_none() {
        tracing::info!("SIGHUP: no --secret-file or TLS files to reload");
        return;
    }
    if let Err(e) = files.load().and_then(|c| node.reload_credentials(c)) {
        tracing::error!(
            error = %e,
            kept = %node.credentials().describe(),
            "SIGHUP: reloading the credentials failed; keeping the ones in use"
        );
    }
}
