//! Who may read the dashboard: anyone when the node has no cluster secret (as with the
//! admin API), otherwise whoever shows the dashboard token (`gossip-node dashboard-token`,
//! an HMAC of a fixed label under the secret, see [`crate::Secrets::dashboard_token`]) as
//! `Authorization: Bearer TOKEN` or in the session cookie that `POST /api/login` sets.
//! Never in a URL: a query string ends up in logs and browser history.

use crate::node::Node;
use axum::http::{header, HeaderMap, HeaderValue};

/// The session cookie: the token itself, HttpOnly (no script reads it) and SameSite=Strict
/// (no other site's page sends it).
pub const COOKIE: &str = "gossip_dashboard";

/// Whether the node asks for a token at all.
pub fn required(node: &Node) -> bool {
    node.credentials().secrets.is_some()
}

/// The token a request carries, from its Authorization header or its cookie.
fn presented(headers: &HeaderMap) -> Option<&str> {
    // The scheme is case-insensitive (RFC 9110, 11.1).
    if let Some(bearer) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token)
    {
        return Some(bearer.trim());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

/// Whether `token` opens this node's dashboard (any token when no secret is set). Read
/// from the current credentials, so a secret rotated by SIGHUP applies at once.
pub fn accepts(node: &Node, token: &str) -> bool {
    match &node.credentials().secrets {
        None => true,
        Some(secrets) => secrets.accepts_dashboard_token(token),
    }
}

/// Whether the request may read the dashboard.
pub fn allowed(node: &Node, headers: &HeaderMap) -> bool {
    !required(node) || presented(headers).is_some_and(|t| accepts(node, t))
}

/// The token of an allowed request (`None` when the node needs none), to check again
/// later: a stream stays open for hours, across a rotation that drops its secret.
pub fn held(headers: &HeaderMap) -> Option<String> {
    presented(headers).map(str::to_owned)
}

/// `Set-Cookie` for a session holding `token`; `None` clears it.
pub fn set_cookie(token: Option<&str>) -> HeaderValue {
    let value = match token {
        Some(t) => format!("{COOKIE}={t}; HttpOnly; SameSite=Strict; Path=/"),
        None => format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    };
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn a_token_is_read_from_the_bearer_header_or_the_cookie() {
        assert_eq!(
            presented(&headers(&[(header::AUTHORIZATION, "Bearer abc")])),
            Some("abc")
        );
        assert_eq!(
            presented(&headers(&[(header::AUTHORIZATION, "bearer abc")])),
            Some("abc")
        );
        assert_eq!(
            presented(&headers(&[(
                header::COOKIE,
                "x=1; gossip_dashboard=def; y=2"
            )])),
            Some("def")
        );
        assert_eq!(
            presented(&headers(&[(header::COOKIE, "gossip_dashboardx=1")])),
            None
        );
        assert_eq!(
            presented(&headers(&[(header::AUTHORIZATION, "Basic abc")])),
            None
        );
        assert_eq!(presented(&HeaderMap::new()), None);
    }

    #[test]
    fn the_session_cookie_is_http_only_and_same_site_strict() {
        let c = set_cookie(Some("t0k"));
        let c = c.to_str().unwrap();
        assert!(c.starts_with("gossip_dashboard=t0k;"));
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict"));
        assert!(set_cookie(None).to_str().unwrap().contains("Max-Age=0"));
        // A token that would break the header is refused rather than sent.
        assert_eq!(set_cookie(Some("a\nb")).to_str().unwrap(), "");
    }
}
