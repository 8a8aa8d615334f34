//! The operator's HTTP endpoint (`--http-listen`): `/metrics` for Prometheus, `/health` and
//! `/ready` for Kubernetes-style probes, and the live dashboard at `/` ([`crate::dashboard`]).
//! Read-only, and off unless asked for. The probes and metrics need no authentication, so
//! bind it to an address only operators reach; the dashboard's data needs the dashboard
//! token when a cluster secret is set.

use crate::metrics;
use crate::node::{Node, StopReason};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Longest a probe or scrape waits for the driver (busy applying a large batch, say) before
/// it answers 503: a probe that hangs is worse than one that says why it failed.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves until `cancel`; requests in flight finish first.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    node: Node,
    cancel: CancellationToken,
) {
    let app = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(node.clone())
        .merge(crate::dashboard::routes(node, cancel.clone()));
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "the HTTP endpoint stopped");
    }
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body + "\n",
    )
        .into_response()
}

/// 200 while the node runs; 503 once it stopped by itself (its WAL failed, its id is taken):
/// a supervisor should restart it.
async fn health(State(node): State<Node>) -> Response {
    match node.stop_reason() {
        None | Some(StopReason::Shutdown) => text(StatusCode::OK, "ok".into()),
        Some(reason) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("stopped: {reason}"),
        ),
    }
}

/// Why this node should not take traffic yet, if it should not.
pub fn not_ready_reason(status: &crate::message::Status) -> Option<String> {
    if let Some(why) = &status.down {
        return Some(format!("down (split-brain downing): {why}"));
    }
    if !status.joined {
        return Some("not joined: no seed has answered yet".into());
    }
    if !status.in_majority {
        return Some(format!(
            "not in the majority: {} alive of the largest recent cluster of {}",
            status.alive, status.largest_cluster
        ));
    }
    None
}

/// 200 once joined and in the majority; 503 with the reason in one line otherwise.
async fn ready(State(node): State<Node>) -> Response {
    if let Some(reason) = node.stop_reason() {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("stopped: {reason}"),
        );
    }
    match tokio::time::timeout(QUERY_TIMEOUT, node.status()).await {
        Err(_) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("busy: no answer from the node within {QUERY_TIMEOUT:?}"),
        ),
        Ok(Err(e)) => text(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Ok(Ok(status)) => match not_ready_reason(&status) {
            Some(reason) => text(StatusCode::SERVICE_UNAVAILABLE, reason),
            None => text(
                StatusCode::OK,
                format!(
                    "ready: {} alive of the largest recent cluster of {}",
                    status.alive, status.largest_cluster
                ),
            ),
        },
    }
}

async fn metrics(State(node): State<Node>) -> Response {
    match tokio::time::timeout(QUERY_TIMEOUT, node.status()).await {
        Err(_) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("busy: no answer from the node within {QUERY_TIMEOUT:?}"),
        ),
        Ok(Err(e)) => text(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Ok(Ok(status)) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
            node.metrics().render(&status),
        )
            .into_response(),
    }
}
