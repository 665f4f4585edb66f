//! Reaching a replica over HTTP/1 or TCP: the dial (TLS to `https://` ones), upstream connections
//! driven inline by the connection that uses them, what a request written
//! to one looks like (`Host`, the size of a head), and why a send failed.
//!
//! A leaf: the coordinator's proxy and the worker's tunnel forwarder both
//! reach services this way, and neither depends on the other for it.

mod dial;
mod failure;
mod inline;
mod tls;

pub use dial::{connect, connect_tcp, ServiceStream};
pub use failure::{Cause, SendFailure};
use http::header::{HeaderMap, HeaderValue};
pub use inline::{InlineUpstreams, MAX_PER_CLIENT};
pub use tls::{is_https, HttpsConnector, ServiceTls};

/// Largest response head taken from a replica over HTTP/1, on every path
/// (the fast path, and the HTTP/1 clients of the coordinator and of the
/// worker's tunnel): past it the client gets a 502.
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// The longest request target (path and query) a replica is sent: the
/// `http` crate's bound on a path and query, which the proxy's hyper path
/// and the worker's end of the tunnel cannot exceed. The fast path, which
/// writes targets as bytes, keeps to it too, so that a request gets the
/// same answer (414) on every path.
pub const MAX_TARGET: usize = 65_534;

/// `Host` for an HTTP/1 request to `origin`, as the HTTP client would write
/// it (the port only when it is not the scheme's default). Set by the proxy
/// so the client does not have to format it, and grow the header map, per request.
pub fn host_for(origin: &http::Uri) -> Option<HeaderValue> {
    let authority = origin.authority()?;
    let default_port = match origin.scheme_str() {
        Some("https") => 443,
        _ => 80,
    };
    match authority.port_u16() {
        Some(p) if p != default_port => HeaderValue::from_str(authority.as_str()).ok(),
        _ => HeaderValue::from_str(authority.host()).ok(),
    }
}

/// About how many bytes `headers` take as HTTP/1 header lines
/// (`name: value\r\n`), to hold heads to one bound on every path.
pub fn head_bytes(headers: &HeaderMap) -> usize {
    headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum()
}

/// A header list's size as HTTP/2 counts it (RFC 9113 6.5.2: name, value
/// and 32 bytes a field), without the pseudo-headers.
pub fn header_list_size(headers: &HeaderMap) -> usize {
    headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 32).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_drops_only_the_default_port() {
        let host = |u: &str| host_for(&u.parse().unwrap()).unwrap();
        assert_eq!(host("http://127.0.0.1:8100/"), "127.0.0.1:8100");
        assert_eq!(host("http://notes:80/"), "notes");
        assert_eq!(host("http://notes/"), "notes");
        assert_eq!(host("https://notes:443/"), "notes");
        assert_eq!(host("https://notes:80/"), "notes:80");
    }
}
