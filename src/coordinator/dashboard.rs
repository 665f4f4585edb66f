//! The dashboard at `/` (and `/ui`): one HTML page embedded in the binary,
//! its CSS and JavaScript inline, nothing loaded from anywhere else. The
//! page holds no fleet data, so it is served without a token; it reads the
//! fleet from the APIs (`/api/admin/events`, `/api/admin/gaps`,
//! `/metrics`) with the token the operator types into it, sent as an
//! `Authorization` header, never in a URL.
//!
//! The Content-Security-Policy allows exactly the page's own inline script
//! and style (by their SHA-256, computed once from the embedded page) and
//! requests to this origin; nothing else runs or loads.

use crate::auth::AdminAuth;
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

const PAGE: &str = include_str!("dashboard.html");

/// Where the page learns whether it must ask for a token.
const AUTH_MARK: &str = "data-auth=\"unknown\"";

/// What the page handler needs: how to tell whether this browser must
/// present a token (it need not with no tokens set, or with an admin
/// certificate).
#[derive(Clone)]
pub struct Dashboard {
    pub admin: AdminAuth,
}

pub async fn page(State(d): State<Dashboard>, req: axum::extract::Request) -> Response {
    let peer = crate::tls::PeerInfo::of(req.extensions());
    let open = d.admin.scope_of(&axum::http::HeaderMap::new(), peer).is_ok();
    let body = match open {
        true => pages().open.as_str(),
        false => pages().token.as_str(),
    };
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_str(&pages().csp).unwrap_or(HeaderValue::from_static("default-src 'none'")),
            ),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
            (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

struct Pages {
    /// For a browser that needs no token.
    open: String,
    /// For one that must present a token.
    token: String,
    csp: String,
}

fn pages() -> &'static Pages {
    static PAGES: OnceLock<Pages> = OnceLock::new();
    PAGES.get_or_init(|| Pages {
        open: PAGE.replacen(AUTH_MARK, "data-auth=\"none\"", 1),
        token: PAGE.replacen(AUTH_MARK, "data-auth=\"token\"", 1),
        csp: csp(PAGE),
    })
}

/// The text between the first `open` tag and the next `close`.
fn inline<'a>(page: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = page.find(open)? + open.len();
    let len = page[start..].find(close)?;
    Some(&page[start..start + len])
}

fn sha256(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    format!("'sha256-{}'", base64::engine::general_purpose::STANDARD.encode(digest))
}

/// The page's policy: its own script and style, requests to this origin
/// (the APIs), `data:` images (the empty favicon), and nothing else.
fn csp(page: &str) -> String {
    let hash = |open, close| inline(page, open, close).map_or("'none'".to_string(), sha256);
    format!(
        "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src 'self' data:; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        hash("<script>", "</script>"),
        hash("<style>", "</style>"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_exactly_the_inline_script_and_style() {
        let p = pages();
        assert_eq!(PAGE.matches("<script>").count(), 1, "one inline script");
        assert_eq!(PAGE.matches("<style>").count(), 1, "one inline style");
        assert!(!PAGE.contains("<script src"), "nothing loaded from elsewhere");
        assert!(
            !PAGE.contains("http://") && !PAGE.contains("https://"),
            "no external URL"
        );
        assert!(
            p.csp.starts_with("default-src 'none'; script-src 'sha256-"),
            "{}",
            p.csp
        );
        assert!(p.csp.contains("style-src 'sha256-"), "{}", p.csp);
        assert!(!p.csp.contains("unsafe"), "{}", p.csp);
        assert!(HeaderValue::from_str(&p.csp).is_ok());
    }

    #[test]
    fn the_page_says_whether_to_ask_for_a_token() {
        assert!(PAGE.contains(AUTH_MARK));
        assert!(pages().open.contains("data-auth=\"none\""));
        assert!(pages().token.contains("data-auth=\"token\""));
    }

    #[test]
    fn the_hash_is_of_the_text_between_the_tags() {
        let page = "<style>a{}</style><script>x()</script>";
        assert_eq!(inline(page, "<script>", "</script>"), Some("x()"));
        // printf 'x()' | openssl dgst -sha256 -binary | base64
        assert_eq!(sha256("x()"), "'sha256-D6IGS8VMvCoyaR/l0h9tERrBTATY01CoPS7l6xDv0kI='");
    }
}
