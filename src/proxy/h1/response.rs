//! An upstream's response head, read with `httparse` and rewritten for the
//! client: hop-by-hop headers out, the request id in, and the body's framing
//! (RFC 9112 6.3) worked out so the body can be copied as it comes.

use super::headers::{frames_the_message, has_connection, is_hop_by_hop, is_token_in, named_in_connection};
use super::request::parse_length;

/// Most headers accepted in a response head.
pub const MAX_HEADERS: usize = 100;

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 1xx, 204, 304).
    Empty,
    Length(u64),
    /// Forwarded as is, chunk framing and trailers included.
    Chunked,
    /// Until the upstream closes; the client connection closes after it.
    UntilClose,
}

/// A response head, ready to be written to the client.
#[derive(Debug)]
pub struct Head {
    pub status: u16,
    /// Bytes of the upstream's head (to skip in its buffer).
    pub len: usize,
    pub framing: Framing,
    /// The upstream connection may carry another request after this one.
    pub reusable: bool,
    /// The client connection is closed after this response (and was told so).
    pub closes_client: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    #[error("malformed response head: {0}")]
    Malformed(httparse::Error),
    #[error("unsupported transfer-encoding")]
    TransferEncoding,
    #[error("malformed content-length")]
    Length,
    #[error("unexpected 101 Switching Protocols")]
    Switching,
}

/// Parses the head at the start of `buf` and, when complete, writes the
/// client's version into `out`. `Ok(None)`: not the whole head yet.
/// Interim (1xx) responses come back with `Framing::Empty` and status < 200;
/// the caller skips them.
pub fn rewrite(
    buf: &[u8],
    head_request: bool,
    request_id: &[u8],
    close_client: bool,
    out: &mut Vec<u8>,
) -> Result<Option<Head>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf).map_err(HeadError::Malformed)? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let status = resp.code.unwrap_or(0);
    let http11 = resp.version == Some(1);
    if status == 101 {
        return Err(HeadError::Switching);
    }
    if status < 200 {
        return Ok(Some(Head {
            status,
            len,
            framing: Framing::Empty,
            reusable: true,
            closes_client: false,
        }));
    }
    let mut length = None;
    let mut chunked = false;
    let mut upstream_close = !http11;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = parse_length(h.value).ok_or(HeadError::Length)? as u64;
            if length.is_some_and(|l| l != v) {
                return Err(HeadError::Length);
            }
            length = Some(v);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Only plain `chunked` is forwarded as is; a client could not
            // be handed anything else without decoding it.
            if chunked || !h.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err(HeadError::TransferEncoding);
            }
            chunked = true;
        } else if h.name.eq_ignore_ascii_case("connection") {
            if is_token_in(h.value, "close") {
                upstream_close = true;
            } else if !http11 && is_token_in(h.value, "keep-alive") {
                upstream_close = false;
            }
        }
    }
    let framing = if head_request || status == 204 || status == 304 {
        Framing::Empty
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    // A response with both is a smuggling attempt or a broken server
    // (RFC 9112 6.3): neither connection can be trusted after it.
    let reusable = !upstream_close && framing != Framing::UntilClose && !(chunked && length.is_some());
    let close_client = close_client || framing == Framing::UntilClose || (chunked && length.is_some());

    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let listed = has_connection(resp.headers);
    let mut dated = false;
    let mut length_written = false;
    for h in resp.headers.iter() {
        let keep_framing = h.name.eq_ignore_ascii_case("transfer-encoding") && framing == Framing::Chunked;
        // `Connection` naming `Content-Length` would otherwise send the
        // body without its length, and the client would read the rest of
        // it as the next response.
        let named = listed && !frames_the_message(h.name) && named_in_connection(resp.headers, h.name);
        let hop = !keep_framing && (is_hop_by_hop(h.name) || named);
        if hop || h.name.eq_ignore_ascii_case("x-request-id") {
            continue;
        }
        // A chunked body is forwarded chunked: a length beside it would lie.
        // Equal lengths given twice go out once (RFC 9110 8.6: a proxy
        // replaces them with one valid field): a client that refuses the
        // pair, or adds them up, would frame the body otherwise.
        if h.name.eq_ignore_ascii_case("content-length") {
            if chunked || length_written {
                continue;
            }
            length_written = true;
        }
        // Exactly one `Date` reaches the client: the upstream's first valid
        // one (RFC 9110 6.6.1: an invalid one may be replaced), else ours
        // below. Counted here, among the headers forwarded, so that one
        // `Connection` named (and so dropped) is replaced, not lost.
        if h.name.eq_ignore_ascii_case("date") {
            if dated || !valid_date(h.value) {
                continue;
            }
            dated = true;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    // A proxy forwarding a response without `Date` adds one (RFC 9110 6.6.1).
    if !dated {
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(&http_date());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"x-request-id: ");
    out.extend_from_slice(request_id);
    out.extend_from_slice(b"\r\n");
    if close_client {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(Some(Head {
        status,
        len,
        framing,
        reusable,
        closes_client: close_client,
    }))
}

/// Whether `v` is an HTTP date (RFC 9110 5.6.7, any of its three forms).
fn valid_date(v: &[u8]) -> bool {
    std::str::from_utf8(v).is_ok_and(|s| httpdate::parse_http_date(s).is_ok())
}

/// The current time as an HTTP date, formatted at most once a second per thread.
pub fn http_date() -> [u8; 29] {
    use std::cell::Cell;
    use std::time::{SystemTime, UNIX_EPOCH};
    thread_local! {
        static CACHED: Cell<(u64, [u8; 29])> = const { Cell::new((u64::MAX, [0; 29])) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with(|c| {
        let (at, text) = c.get();
        if at == secs {
            return text;
        }
        let mut text = [0u8; 29];
        let s = httpdate::fmt_http_date(now);
        if s.len() == text.len() {
            text.copy_from_slice(s.as_bytes());
        }
        c.set((secs, text));
        text
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(raw: &str, head_request: bool) -> (Head, String) {
        let mut out = Vec::new();
        let h = rewrite(raw.as_bytes(), head_request, b"rid", false, &mut out)
            .unwrap()
            .unwrap();
        (h, String::from_utf8(out).unwrap())
    }

    #[test]
    fn hop_by_hop_headers_go_and_the_request_id_comes() {
        let (h, out) = run(
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: x-hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nX-Request-Id: theirs\r\nContent-Type: a/b\r\n\r\n{}",
            false,
        );
        assert_eq!(h.framing, Framing::Length(2));
        assert!(h.reusable);
        let date = String::from_utf8(http_date().to_vec()).unwrap();
        assert!(httpdate::parse_http_date(&date).is_ok(), "{date}");
        assert_eq!(
            out,
            format!("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: a/b\r\ndate: {date}\r\nx-request-id: rid\r\n\r\n")
        );
        let (_, out) = run(
            "HTTP/1.1 200 OK\r\nDate: Mon, 30 Nov 2026 00:00:00 GMT\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        assert_eq!(out.matches("ate: ").count(), 1, "the upstream's date is kept: {out}");
    }

    /// The upstream's `Date` named in `Connection` was dropped (as a
    /// hop-by-hop header) and none added: the client got no `Date`.
    /// Duplicates and invalid ones: exactly one valid `Date` goes out.
    #[test]
    fn exactly_one_valid_date_reaches_the_client() {
        let theirs = "Mon, 30 Nov 2026 00:00:00 GMT";
        let dates = |out: &str| -> Vec<String> {
            out.split("\r\n")
                .filter_map(|l| l.split_once(": "))
                .filter(|(n, _)| n.eq_ignore_ascii_case("date"))
                .map(|(_, v)| v.to_string())
                .collect()
        };
        let valid = |d: &str| httpdate::parse_http_date(d).is_ok();
        let (_, out) = run(
            &format!("HTTP/1.1 200 OK\r\nConnection: date\r\nDate: {theirs}\r\nContent-Length: 0\r\n\r\n"),
            false,
        );
        let d = dates(&out);
        assert!(
            d.len() == 1 && d[0] != theirs && valid(&d[0]),
            "named in Connection: ours replaces it: {out}"
        );
        let (_, out) = run(
            &format!(
                "HTTP/1.1 200 OK\r\nDate: {theirs}\r\nDate: Tue, 01 Dec 2026 00:00:00 GMT\r\nContent-Length: 0\r\n\r\n"
            ),
            false,
        );
        assert_eq!(dates(&out), [theirs], "{out}");
        let (_, out) = run(
            &format!("HTTP/1.1 200 OK\r\nDate: yesterday\r\nDate: {theirs}\r\nContent-Length: 0\r\n\r\n"),
            false,
        );
        assert_eq!(dates(&out), [theirs], "{out}");
        let (_, out) = run("HTTP/1.1 200 OK\r\nDate: yesterday\r\nContent-Length: 0\r\n\r\n", false);
        let d = dates(&out);
        assert!(d.len() == 1 && valid(&d[0]), "{out}");
        // Other hop-by-hop headers named in Connection go, and so does
        // Connection itself; the framing stays.
        let (_, out) = run(
            "HTTP/1.1 200 OK\r\nConnection: x-a, Keep-Alive, content-length\r\nX-A: 1\r\nKeep-Alive: 5\r\nX-B: 2\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        let lower = out.to_ascii_lowercase();
        assert!(
            !lower.contains("x-a:") && !lower.contains("keep-alive") && !lower.contains("connection"),
            "{out}"
        );
        assert!(
            out.contains("X-B: 2\r\n") && out.contains("Content-Length: 0\r\n"),
            "{out}"
        );
    }

    /// Two equal `Content-Length` fields were both forwarded: the client
    /// got `Content-Length: 2` twice, which RFC 9110 8.6 forbids a proxy to
    /// send (found writing the checks of `fuzz/` h1_response).
    #[test]
    fn equal_lengths_go_out_once() {
        let (h, out) = run(
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\ncontent-length: 2\r\nX: y\r\n\r\nok",
            false,
        );
        assert_eq!(h.framing, Framing::Length(2));
        assert_eq!(out.to_ascii_lowercase().matches("content-length").count(), 1, "{out}");
        assert!(out.contains("Content-Length: 2\r\nX: y\r\n"), "{out}");
    }

    #[test]
    fn connection_cannot_take_the_framing_off_a_response() {
        let (h, out) = run(
            "HTTP/1.1 200 OK\r\nConnection: content-length, transfer-encoding\r\nContent-Length: 2\r\n\r\nok",
            false,
        );
        assert_eq!(h.framing, Framing::Length(2));
        assert!(out.contains("\r\nContent-Length: 2\r\n"), "{out}");
        let (h, out) = run(
            "HTTP/1.1 200 OK\r\nConnection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        );
        assert_eq!(h.framing, Framing::Chunked);
        assert!(out.contains("\r\nTransfer-Encoding: chunked\r\n"), "{out}");
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let framing = |raw: &str, head| run(raw, head).0.framing;
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false),
            Framing::Chunked
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true),
            Framing::Empty
        );
        assert_eq!(framing("HTTP/1.1 204 No Content\r\n\r\n", false), Framing::Empty);
        assert_eq!(framing("HTTP/1.1 304 Not Modified\r\n\r\n", false), Framing::Empty);
        let (h, out) = run("HTTP/1.1 200 OK\r\n\r\n", false);
        assert_eq!(h.framing, Framing::UntilClose);
        assert!(!h.reusable && out.contains("connection: close\r\n"));
        let (h, _) = run("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false);
        assert!(!h.reusable, "HTTP/1.0 closes unless it says keep-alive");
        let (h, _) = run(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
            false,
        );
        assert!(!h.reusable);
        let (h, _) = run("HTTP/1.1 100 Continue\r\n\r\n", false);
        assert_eq!(h.status, 100);
    }

    #[test]
    fn a_chunked_response_with_a_length_closes_both_sides() {
        let (h, out) = run(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            false,
        );
        assert_eq!(h.framing, Framing::Chunked);
        assert!(!h.reusable);
        assert!(!out.to_ascii_lowercase().contains("content-length"));
        assert!(out.contains("Transfer-Encoding: chunked\r\n") && out.contains("connection: close\r\n"));
    }

    #[test]
    fn heads_that_cannot_be_forwarded_are_refused() {
        let mut out = Vec::new();
        for raw in [
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "NOT HTTP\r\n\r\n",
        ] {
            assert!(
                rewrite(raw.as_bytes(), false, b"r", false, &mut out).is_err(),
                "{raw:?}"
            );
        }
        assert!(rewrite(b"HTTP/1.1 200 OK\r\n", false, b"r", false, &mut out)
            .unwrap()
            .is_none());
    }

    /// Heads cut short or with random bytes changed: never a panic, and a
    /// complete head is never mistaken for a partial one when intact.
    #[test]
    fn damaged_heads_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        let good = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\nConnection: close, x\r\nX: 1\r\n\r\n";
        let mut out = Vec::new();
        for _ in 0..5000 {
            let mut raw = good.to_vec();
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(0..raw.len());
                raw[i] = rng.random();
            }
            raw.truncate(rng.random_range(1..=raw.len()));
            out.clear();
            let _ = rewrite(&raw, rng.random_bool(0.5), b"r", false, &mut out);
        }
    }
}
