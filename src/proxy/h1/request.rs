//! A client's request head, read with `httparse`, and whether the fast path
//! takes it. Anything it does not take (another path, a chunked or large
//! body, `Expect`, `Upgrade`, HTTP/1.0, absolute-form targets) goes to the
//! full HTTP/1 server with the bytes untouched.

use super::headers::{frames_the_message, has_connection, header, is_hop_by_hop, is_token_in, named_in_connection};

/// Most headers a request may carry on the fast path (more: the full server
/// decides, and refuses past its own limit).
pub const MAX_HEADERS: usize = 64;

/// A parsed request head: offsets into the connection's buffer.
#[derive(Debug)]
pub struct Head<'b> {
    pub method: &'b str,
    /// Everything after `/service/`: `{name}` then `{rest}` (with `/`) and the query.
    pub name: &'b str,
    pub rest: &'b str,
    pub query: Option<&'b str>,
    pub headers: &'b [httparse::Header<'b>],
    /// Bytes of the head, CRLFCRLF included.
    pub len: usize,
    pub content_length: usize,
    /// The client asked to close after this response.
    pub close: bool,
}

/// What the bytes read so far amount to.
#[derive(Debug)]
pub enum Parsed<'b> {
    /// Not the whole head yet.
    Partial,
    /// A request the fast path serves.
    Fast(Head<'b>),
    /// Anything else: the full server takes the connection from here.
    Other,
}

/// Reads a request head from `buf`. `max_body` is the largest body the fast
/// path buffers (so that a failed attempt can be replayed).
pub fn parse<'b>(buf: &'b [u8], headers: &'b mut [httparse::Header<'b>], max_body: usize) -> Parsed<'b> {
    let mut req = httparse::Request::new(headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        // Too many headers, or not HTTP the fast path can vouch for: the
        // full server answers (with its own error if it is one).
        Err(_) => return Parsed::Other,
    };
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Parsed::Other;
    };
    // Printable ASCII only, and no fragment: the target is forwarded as is.
    if !target.bytes().all(|b| (0x21..0x7f).contains(&b) && b != b'#') {
        return Parsed::Other;
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let Some(after) = path
        .strip_prefix(crate::proxy::SERVICE_PREFIX)
        .and_then(|p| p.strip_prefix('/'))
    else {
        return Parsed::Other;
    };
    let (name, rest) = match after.find('/') {
        Some(i) => (&after[..i], &after[i..]),
        None => (after, ""),
    };
    // Dot segments are resolved by the full server before routing
    // (`forward::remove_dot_segments`), so that none reaches a replica.
    if name.is_empty() || crate::proxy::has_dot_segment(path) {
        return Parsed::Other;
    }
    let mut content_length = None;
    let mut close = false;
    let mut hosts = 0;
    for h in req.headers.iter() {
        let n = h.name;
        if n.eq_ignore_ascii_case("host") {
            hosts += 1;
        } else if n.eq_ignore_ascii_case("content-length") {
            let v = match parse_length(h.value) {
                Some(v) if content_length.is_none() => v,
                _ => return Parsed::Other,
            };
            content_length = Some(v);
        } else if n.eq_ignore_ascii_case("transfer-encoding")
            || n.eq_ignore_ascii_case("expect")
            || n.eq_ignore_ascii_case("upgrade")
        {
            return Parsed::Other;
        } else if n.eq_ignore_ascii_case(crate::routes::PEER_WORKER_HEADER)
            || n.eq_ignore_ascii_case(crate::routes::PEER_AUTH_HEADER)
        {
            // Forwarded by a peer (or claiming to be): the full path checks it.
            return Parsed::Other;
        } else if n.eq_ignore_ascii_case("connection") && is_token_in(h.value, "close") {
            close = true;
        }
    }
    // RFC 9112 3.2: exactly one `Host`; the full server refuses the rest.
    if hosts != 1 {
        return Parsed::Other;
    }
    let content_length = content_length.unwrap_or(0);
    if content_length > max_body {
        return Parsed::Other;
    }
    Parsed::Fast(Head {
        method,
        name,
        rest,
        query,
        headers: req.headers,
        len,
        content_length,
        close,
    })
}

/// Where a request goes, as [`write_request`] needs it.
#[derive(Debug, Clone, Copy)]
pub struct Forward<'a> {
    /// The replica's path prefix (`""` or `/something`, no trailing `/`).
    pub prefix: &'a str,
    /// The `Host` the replica expects.
    pub host: &'a [u8],
    /// The client's address, for `x-forwarded-for` (`None`: not added).
    pub client: Option<&'a [u8]>,
    /// The request id sent as `x-request-id`.
    pub rid: &'a [u8],
}

/// The request as the replica gets it, appended to `out`: its path under
/// the replica's prefix, hop-by-hop headers out, `x-forwarded-*` and the
/// request id in, then `body` (the `Content-Length` bytes after the head).
/// The fast path's one writer of upstream requests, and a pure function, so
/// that `fuzz/` checks the real framing (`h1_differential`).
pub fn write_request(h: &Head<'_>, to: &Forward<'_>, body: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(h.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(to.prefix.as_bytes());
    out.extend_from_slice(if h.rest.is_empty() { b"/" } else { h.rest.as_bytes() });
    if let Some(q) = h.query {
        out.push(b'?');
        out.extend_from_slice(q.as_bytes());
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    header(out, b"host", to.host);
    let mut host = None;
    let mut forwarded_for = None;
    let has_host = h.headers.iter().any(|x| x.name.eq_ignore_ascii_case("host"));
    let listed = has_connection(h.headers);
    for hd in h.headers {
        let n = hd.name;
        if n.eq_ignore_ascii_case("host") {
            host = Some(hd.value);
            continue;
        }
        if n.eq_ignore_ascii_case("x-forwarded-for") && to.client.is_some() {
            forwarded_for.get_or_insert(hd.value);
            continue;
        }
        if is_hop_by_hop(n)
            || (listed && !frames_the_message(n) && named_in_connection(h.headers, n))
            || n.eq_ignore_ascii_case("x-forwarded-proto")
            || n.eq_ignore_ascii_case("x-request-id")
            || (has_host && n.eq_ignore_ascii_case("x-forwarded-host"))
        {
            continue;
        }
        header(out, n.as_bytes(), hd.value);
    }
    if let Some(client) = to.client {
        out.extend_from_slice(b"x-forwarded-for: ");
        if let Some(prev) = forwarded_for {
            out.extend_from_slice(prev);
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(client);
        out.extend_from_slice(b"\r\n");
    }
    if let Some(v) = host {
        header(out, b"x-forwarded-host", v);
    }
    out.extend_from_slice(b"x-forwarded-proto: http\r\n");
    header(out, b"x-request-id", to.rid);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

/// A `Content-Length` value: digits only, no sign, no list.
pub fn parse_length(v: &[u8]) -> Option<usize> {
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast(raw: &str) -> Option<(String, String, Option<String>, usize, bool)> {
        let mut h = [httparse::EMPTY_HEADER; MAX_HEADERS];
        match parse(raw.as_bytes(), &mut h, 1024) {
            Parsed::Fast(r) => Some((
                r.name.into(),
                r.rest.into(),
                r.query.map(Into::into),
                r.content_length,
                r.close,
            )),
            _ => None,
        }
    }

    #[test]
    fn service_requests_are_taken() {
        let r = fast("POST /service/notes/convert?a=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}").unwrap();
        assert_eq!(r, ("notes".into(), "/convert".into(), Some("a=1".into()), 2, false));
        let r = fast("GET /service/notes HTTP/1.1\r\nhost: h\r\nConnection: keep-alive, Close\r\n\r\n").unwrap();
        assert_eq!(r, ("notes".into(), "".into(), None, 0, true));
    }

    #[test]
    fn everything_else_goes_to_the_full_server() {
        for raw in [
            "GET /health HTTP/1.1\r\n\r\n",
            "GET /service/ HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET /servicex/a HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET /service/a HTTP/1.0\r\nHost: h\r\n\r\n",
            "GET http://h/service/a HTTP/1.1\r\nHost: h\r\n\r\n",
            "POST /service/a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST /service/a HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            "GET /service/a HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n",
            "POST /service/a HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            "POST /service/a HTTP/1.1\r\nHost: h\r\nContent-Length: +1\r\n\r\n",
            "POST /service/a HTTP/1.1\r\nHost: h\r\nContent-Length: 2048\r\n\r\n",
            "GET /service/a\x01 HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET /service/a HTTP/1.1\r\n\r\n",
            "GET /service/a HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET /service/a/../b HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /service/a/%2E%2e/b HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /service/a/./b HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            assert!(fast(raw).is_none(), "{raw:?}");
        }
        let mut h = [httparse::EMPTY_HEADER; MAX_HEADERS];
        assert!(matches!(
            parse(b"GET /service/a HTTP/1.1\r\nA: b\r\n", &mut h, 0),
            Parsed::Partial
        ));
    }

    #[test]
    fn lengths_are_strict() {
        assert_eq!(parse_length(b"0"), Some(0));
        assert_eq!(parse_length(b"123"), Some(123));
        for bad in [&b""[..], b"-1", b"1,1", b" 1", b"0x10", b"9999999999999999999"] {
            assert_eq!(parse_length(bad), None, "{bad:?}");
        }
    }

    /// Requests with random bytes changed: never a panic, and whatever is
    /// taken still names a service and has a body that fits.
    #[test]
    fn damaged_requests_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0xfa57);
        let good = b"POST /service/notes/x?y=1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\nContent-Length: 12\r\n\r\n";
        for _ in 0..5000 {
            let mut raw = good.to_vec();
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(0..raw.len());
                raw[i] = rng.random();
            }
            let mut h = [httparse::EMPTY_HEADER; MAX_HEADERS];
            if let Parsed::Fast(r) = parse(&raw, &mut h, 64) {
                assert!(!r.name.is_empty() && !r.name.contains('/') && r.content_length <= 64);
                assert!(r.len <= raw.len());
            }
        }
    }
}
