//! The live cluster dashboard, served at `/` of the HTTP endpoint (`--http-listen`).
//!
//! One page, its script and its style are compiled into the binary (`include_str!`): no
//! files to deploy, no CDN, no build step. The page opens `/api/stream`, a server-sent
//! event stream fed by the [`hub`]: a snapshot, then patches as the roster changes. Read
//! only: the page can log in and out, nothing else; every change goes through the admin
//! API. With a cluster secret set, the data needs the dashboard token (see [`auth`]).

pub mod auth;
pub(crate) mod hub;
pub mod view;

use crate::node::Node;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hub::Hub;
use std::convert::Infallible;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// Only our own scripts, styles and connections: nothing inline, nothing from elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

#[derive(Clone)]
struct Dash {
    node: Node,
    hub: Hub,
}

/// The dashboard's routes; the hub runs until `cancel`.
pub(crate) fn routes(node: Node, cancel: CancellationToken) -> Router {
    let hub = Hub::spawn(node.clone(), cancel);
    Router::new()
        .route("/", get(index))
        .route("/assets/app.js", get(app_js))
        .route("/assets/style.css", get(style_css))
        .route("/api/session", get(session))
        .route("/api/login", post(login))
        .route("/api/logout", post(logout))
        .route("/api/snapshot", get(snapshot))
        .route("/api/stream", get(stream))
        .with_state(Dash { node, hub })
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn style_css() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "the dashboard token is required (gossip-node dashboard-token --secret-file FILE)\n",
    )
        .into_response()
}

/// Whether a token is needed, and whether this request has one that works.
async fn session(State(d): State<Dash>, headers: HeaderMap) -> Response {
    Json(serde_json::json!({
        "token_required": auth::required(&d.node),
        "authenticated": auth::allowed(&d.node, &headers),
    }))
    .into_response()
}

#[derive(serde::Deserialize)]
struct Login {
    token: String,
}

/// Checks the token (sent in the body, never the URL) and sets the session cookie.
async fn login(State(d): State<Dash>, Json(body): Json<Login>) -> Response {
    let token = body.token.trim();
    if !auth::required(&d.node) {
        return StatusCode::NO_CONTENT.into_response();
    }
    if !auth::accepts(&d.node, token) {
        return unauthorized();
    }
    (
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, auth::set_cookie(Some(token)))],
    )
        .into_response()
}

async fn logout() -> Response {
    (
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, auth::set_cookie(None))],
    )
        .into_response()
}

fn busy() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "the node is stopping; no dashboard data\n",
    )
        .into_response()
}

/// What a page gets first on the stream, as one JSON document (for scripts and tests).
async fn snapshot(State(d): State<Dash>, headers: HeaderMap) -> Response {
    if !auth::allowed(&d.node, &headers) {
        return unauthorized();
    }
    let Some(mut rx) = d.hub.join().await else {
        return busy();
    };
    match rx.recv().await {
        Some(first) => (
            [(header::CONTENT_TYPE, "application/json")],
            first.to_string(),
        )
            .into_response(),
        None => busy(),
    }
}

/// The live stream: a snapshot, then patches, as server-sent events.
async fn stream(State(d): State<Dash>, headers: HeaderMap) -> Response {
    if !auth::allowed(&d.node, &headers) {
        return unauthorized();
    }
    let Some(rx) = d.hub.join().await else {
        return busy();
    };
    // The token is checked again before every message: once a SIGHUP drops its secret, an
    // open stream ends like any new request would be refused.
    let token = auth::held(&headers);
    let node = d.node.clone();
    let events = futures_util::stream::unfold(rx, move |mut rx| {
        let (node, token) = (node.clone(), token.clone());
        async move {
            let msg = rx.recv().await?;
            if auth::required(&node) && !token.is_some_and(|t| auth::accepts(&node, &t)) {
                return None;
            }
            Some((Ok::<_, Infallible>(Event::default().data(&*msg)), rx))
        }
    });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
