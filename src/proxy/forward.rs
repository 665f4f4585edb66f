//! Rewriting a request for its upstream, and a response for its client:
//! hop-by-hop headers out, `x-forwarded-*` and a request id in.
//!
//! This runs on every proxied request, so it avoids what costs more than the
//! work itself: header names are constants, nothing is formatted twice, and
//! the request id comes from a thread-local generator (a v4 UUID from
//! `getrandom` is a system call per request).

use super::ProxyError;
pub use crate::upstream::MAX_TARGET;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use rand::Rng;

/// Headers that describe one connection, not the message (RFC 9110 7.6.1).
static HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Whether `name` (any case) is a hop-by-hop header: [`HOP_BY_HOP`],
/// `trailer` or `te`. For the HTTP/1 fast path, which sees names as text.
pub(super) fn is_hop_by_hop_name(name: &str) -> bool {
    let is = |h: &str| name.eq_ignore_ascii_case(h);
    HOP_BY_HOP.iter().any(|h| is(h.as_str())) || is(header::TRAILER.as_str()) || is(header::TE.as_str())
}

/// Removes hop-by-hop headers, including any the `Connection` header names.
/// `te: trailers` is kept for gRPC, which needs it end to end.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the few names present costs
    // less than nine hashed removals.
    let hop = |n: &HeaderName| HOP_BY_HOP.contains(n) || n == header::TRAILER || n == header::TE;
    if !headers.keys().any(hop) {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        for h in &named {
            headers.remove(h);
        }
    }
    for h in &HOP_BY_HOP {
        headers.remove(h);
    }
    headers.remove(header::TRAILER);
    if headers.get(header::TE).is_some_and(|v| v != "trailers") {
        headers.remove(header::TE);
    }
}

/// A client's address as an `x-forwarded-for` value, formatted once per
/// connection rather than on every request.
#[derive(Clone, Debug)]
pub struct ClientAddr(HeaderValue);

impl ClientAddr {
    pub fn new(ip: std::net::IpAddr) -> Option<Self> {
        HeaderValue::try_from(ip.to_string()).ok().map(ClientAddr)
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// Adds the `x-forwarded-*` headers for a request that arrived from `client`.
pub fn add_forwarded(headers: &mut HeaderMap, client: Option<&ClientAddr>, original_host: Option<HeaderValue>) {
    if let Some(ClientAddr(ip)) = client {
        let value = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            None => Some(ip.clone()),
            Some(prev) => {
                let mut value = String::with_capacity(prev.len() + 2 + ip.len());
                value.push_str(prev);
                value.push_str(", ");
                value.push_str(ip.to_str().unwrap_or_default());
                HeaderValue::try_from(value).ok()
            }
        };
        if let Some(v) = value {
            headers.insert(X_FORWARDED_FOR.clone(), v);
        }
    }
    if let Some(host) = original_host {
        headers.insert(X_FORWARDED_HOST.clone(), host);
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
}

/// The request id: the client's `x-request-id` if it sent a sane one, else a
/// new one (a random v4 UUID, 32 hex digits).
pub fn request_id(headers: &HeaderMap) -> String {
    request_id_from(headers.get(&X_REQUEST_ID).and_then(|v| v.to_str().ok()))
}

/// [`request_id`], given the client's value if it sent one.
pub fn request_id_from(theirs: Option<&str>) -> String {
    let sane = |v: &&str| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b));
    match theirs.filter(sane) {
        Some(v) => v.to_string(),
        None => {
            let bytes: [u8; 16] = rand::rng().random();
            let mut hex = [0u8; uuid::fmt::Simple::LENGTH];
            let id = uuid::Builder::from_random_bytes(bytes).into_uuid();
            id.simple().encode_lower(&mut hex).to_string()
        }
    }
}

/// The request id as a header value. Marked sensitive, which tells HPACK
/// (HTTP/2: gRPC upstreams and the tunnel) not to index it: a value that is
/// new on every request would otherwise churn the dynamic table, and make
/// every later lookup of that name walk a long chain of dead ids.
pub fn request_id_value(rid: &str) -> Option<HeaderValue> {
    let mut v = HeaderValue::from_str(rid).ok()?;
    v.set_sensitive(true);
    Some(v)
}

/// Whether `segment` is `.` or `..`, spelled plainly or with `%2e`: how
/// many dots, or 0 for any other segment. Servers behind the proxy decode
/// `%2e` before resolving dot segments, so both spellings count.
fn dots(segment: &str) -> usize {
    if segment.len() > 6 || segment.is_empty() {
        return 0;
    }
    let lower = segment.to_ascii_lowercase();
    match lower.replace("%2e", ".").as_str() {
        "." => 1,
        ".." => 2,
        _ => 0,
    }
}

/// Whether `path` has a `.` or `..` segment (in any spelling [`dots`] knows).
pub fn has_dot_segment(path: &str) -> bool {
    (path.contains("/.") || path.contains("%2e") || path.contains("%2E")) && path.split('/').any(|s| dots(s) > 0)
}

/// `path` with its dot segments resolved (RFC 3986 5.2.4), so that
/// `/service/notes/../x` names the service `x` (as a browser would have sent
/// it) and no `..` reaches a replica to climb out of its path prefix there.
/// `..` never climbs above the root.
pub fn remove_dot_segments(path: &str) -> std::borrow::Cow<'_, str> {
    if !has_dot_segment(path) {
        return std::borrow::Cow::Borrowed(path);
    }
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut out: Vec<&str> = Vec::with_capacity(segments.len());
    for (i, s) in segments.iter().enumerate() {
        match dots(s) {
            0 => out.push(s),
            n => {
                if n == 2 {
                    out.pop();
                }
                // A trailing dot segment leaves a directory: `/a/b/..` is `/a/`.
                if i == last {
                    out.push("");
                }
            }
        }
    }
    std::borrow::Cow::Owned(format!("/{}", out.join("/")))
}

/// `prefix` + `rest` (which starts with `/`), keeping the query.
pub fn upstream_path(prefix: &str, rest: &str, query: Option<&str>) -> Result<PathAndQuery, ProxyError> {
    let len = target_len(prefix, rest, query);
    if len > MAX_TARGET {
        return Err(ProxyError::TargetTooLong { limit: MAX_TARGET });
    }
    let mut s = String::with_capacity(len);
    s.push_str(prefix);
    s.push_str(if rest.is_empty() { "/" } else { rest });
    if let Some(q) = query {
        s.push('?');
        s.push_str(q);
    }
    PathAndQuery::from_maybe_shared(bytes::Bytes::from(s)).map_err(|e| ProxyError::BadPath(e.to_string()))
}

/// The length of the target [`upstream_path`] builds.
pub fn target_len(prefix: &str, rest: &str, query: Option<&str>) -> usize {
    prefix.len() + rest.len().max(1) + query.map_or(0, |q| q.len() + 1)
}

/// Takes the peer headers out of `headers`: `Some((authorization,
/// worker))` when the request names a worker as forwarded by a peer.
/// Removed either way, so that no client can pass them to a replica.
pub fn take_peer_headers(headers: &mut HeaderMap) -> Option<(Option<HeaderValue>, String)> {
    let auth = headers.remove(crate::routes::PEER_AUTH_HEADER);
    let worker = headers.remove(crate::routes::PEER_WORKER_HEADER)?;
    Some((auth, worker.to_str().unwrap_or_default().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_and_end_to_end_ones_stay() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, x-secret-hop".parse().unwrap());
        h.insert("x-secret-hop", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        h.insert(header::TE, "trailers".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert!(h.get("x-secret-hop").is_none() && h.get("keep-alive").is_none());
        assert!(h.get(header::CONNECTION).is_none());
        assert_eq!(h.get(header::CONTENT_TYPE).unwrap(), "application/json");
        assert_eq!(h.get(header::TE).unwrap(), "trailers");
    }

    #[test]
    fn forwarded_for_appends() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "10.0.0.1".parse().unwrap());
        let client = ClientAddr::new("127.0.0.1".parse().unwrap());
        add_forwarded(&mut h, client.as_ref(), Some("example".parse().unwrap()));
        assert_eq!(h.get("x-forwarded-for").unwrap(), "10.0.0.1, 127.0.0.1");
        assert_eq!(h.get("x-forwarded-host").unwrap(), "example");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "http");
        let mut fresh = HeaderMap::new();
        let v6 = ClientAddr::new("::1".parse().unwrap());
        add_forwarded(&mut fresh, v6.as_ref(), None);
        assert_eq!(fresh.get("x-forwarded-for").unwrap(), "::1");
        assert!(fresh.get("x-forwarded-host").is_none());
    }

    #[test]
    fn paths_keep_prefix_and_query() {
        assert_eq!(
            upstream_path("", "/convert", Some("a=1&b=2")).unwrap(),
            "/convert?a=1&b=2"
        );
        assert_eq!(upstream_path("/api", "/x", None).unwrap(), "/api/x");
        assert_eq!(upstream_path("", "", None).unwrap(), "/");
        let longest = format!("/{}", "a".repeat(MAX_TARGET - 3));
        assert_eq!(upstream_path("/p", &longest, None).unwrap().as_str().len(), MAX_TARGET);
        let too_long = format!("/{}", "a".repeat(MAX_TARGET - 2));
        assert!(matches!(
            upstream_path("/p", &too_long, None),
            Err(ProxyError::TargetTooLong { limit: MAX_TARGET })
        ));
        assert!(matches!(
            upstream_path("/p", "/a", Some(&"q".repeat(MAX_TARGET))),
            Err(ProxyError::TargetTooLong { .. })
        ));
    }

    #[test]
    fn dot_segments_are_resolved_in_every_spelling() {
        for (path, want) in [
            ("/service/notes/x", "/service/notes/x"),
            ("/service/notes/../outside", "/service/outside"),
            ("/service/notes/%2e%2e/outside", "/service/outside"),
            ("/service/notes/%2E./x", "/service/x"),
            ("/service/notes/.%2E/x", "/service/x"),
            ("/service/notes/a/./b", "/service/notes/a/b"),
            ("/service/notes/a/%2e/b", "/service/notes/a/b"),
            ("/service/notes/a/..", "/service/notes/"),
            ("/service/notes/a/.", "/service/notes/a/"),
            ("/../../etc/passwd", "/etc/passwd"),
            ("/service/notes/..a/.b/a..", "/service/notes/..a/.b/a.."),
            ("/service/notes/%2e%2e%2e", "/service/notes/%2e%2e%2e"),
        ] {
            assert_eq!(remove_dot_segments(path), want, "{path}");
            assert_eq!(has_dot_segment(path), path != want, "{path}");
        }
    }

    #[test]
    fn request_ids_are_kept_or_made() {
        let mut h = HeaderMap::new();
        let made = request_id(&h);
        assert_eq!(made.len(), 32);
        assert!(made.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(uuid::Uuid::parse_str(&made).unwrap().get_version_num(), 4);
        assert_ne!(made, request_id(&h));
        assert!(request_id_value(&made).unwrap().is_sensitive());
        h.insert("x-request-id", "abc".parse().unwrap());
        assert_eq!(request_id(&h), "abc");
    }
}
