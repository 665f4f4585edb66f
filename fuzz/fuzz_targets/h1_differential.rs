//! The whole fast-path transformation, client bytes -> upstream bytes,
//! against a reference: `httparse` plus RFC 9112's framing rules (6.3).
//!
//! Whenever the fast path takes a request (`request::parse` says `Fast`
//! and the body is all there), the request it writes upstream
//! (`request::write_request`, what the live path writes) must:
//! - be framed, by the reference, exactly as the reference frames the
//!   client's request: the same body length, and `Content-Length` only;
//! - be one request: its head plus that body is every byte written (a
//!   second request in the same bytes is request smuggling);
//! - carry the client's body unchanged, its target under the prefix, one
//!   `Host` (the replica's), one `x-request-id`, no hop-by-hop field;
//! - pass a strict sender's check (CRLF only, no obs-fold, token names).
//! And anything the reference cannot frame (TE, CL with TE, conflicting or
//! malformed CL) must never be taken.
#![no_main]

use edgeplane::proxy::h1::request::{self, Forward, Parsed};
use edgeplane_fuzz::{request_framing, strict_head, values, Input, RequestFraming};
use libfuzzer_sys::fuzz_target;

const MAX_BODY: usize = 4096;
const PREFIXES: [&str; 4] = ["", "/p", "/a/b", "/v1%20x"];
const HOSTS: [&[u8]; 3] = [b"127.0.0.1:8100", b"svc.internal", b""];

const HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let choice = input.byte();
    let raw = input.rest();
    let to = Forward {
        prefix: PREFIXES[usize::from(choice & 3)],
        host: HOSTS[usize::from(choice >> 2 & 3) % HOSTS.len()],
        client: (choice & 0x10 != 0).then_some(&b"192.0.2.7"[..]),
        rid: b"0123456789abcdef",
    };

    // The reference's reading of the client's bytes.
    let mut ref_headers = [httparse::EMPTY_HEADER; 128];
    let mut ref_req = httparse::Request::new(&mut ref_headers);
    let reference = match ref_req.parse(raw) {
        Ok(httparse::Status::Complete(n)) => {
            Some((n, request_framing(ref_req.headers.iter().map(|h| (h.name, h.value)))))
        }
        _ => None,
    };

    let mut headers = [httparse::EMPTY_HEADER; request::MAX_HEADERS];
    let head = match request::parse(raw, &mut headers, MAX_BODY) {
        Parsed::Fast(head) => head,
        Parsed::Partial | Parsed::Other => return,
    };
    let (ref_len, ref_framing) = reference.expect("the fast path took a request the reference cannot parse");
    assert_eq!(head.len, ref_len, "head length");
    assert_eq!(
        ref_framing,
        RequestFraming::Length(head.content_length as u64),
        "the fast path frames the request otherwise than RFC 9112 6.3"
    );
    assert_eq!(head.method, ref_req.method.unwrap());
    if raw.len() < head.len + head.content_length {
        return; // the live path waits for the rest of the body
    }
    let body = &raw[head.len..head.len + head.content_length];
    let mut out = Vec::new();
    request::write_request(&head, &to, body, &mut out);

    // The reference's reading of what goes upstream.
    let mut up_headers = [httparse::EMPTY_HEADER; 256];
    let mut up = httparse::Request::new(&mut up_headers);
    let n = match up.parse(&out) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!("the upstream request does not parse: {other:?}"),
    };
    assert_eq!(up.version, Some(1));
    assert_eq!(up.method, Some(head.method));
    let framing = request_framing(up.headers.iter().map(|h| (h.name, h.value)));
    assert_eq!(framing, ref_framing, "upstream framing differs from the client's");
    let RequestFraming::Length(len) = framing else {
        unreachable!()
    };
    assert_eq!(
        n as u64 + len,
        out.len() as u64,
        "the upstream bytes hold more than one request"
    );
    assert_eq!(&out[n..], body, "the body changed on the way");

    // A strict sender's view of the same head.
    let (start, fields) = strict_head(&out[..n]);
    let mut target = to.prefix.to_string();
    target.push_str(if head.rest.is_empty() { "/" } else { head.rest });
    if let Some(q) = head.query {
        target.push('?');
        target.push_str(q);
    }
    assert_eq!(start, format!("{} {target} HTTP/1.1", head.method).as_bytes());
    assert_eq!(values(&fields, "host"), [to.host], "exactly the replica's Host");
    assert_eq!(values(&fields, "x-request-id"), [to.rid]);
    assert_eq!(values(&fields, "x-forwarded-proto"), [&b"http"[..]]);
    let cl = values(&fields, "content-length");
    assert!(cl.len() <= 1, "Content-Length twice upstream");
    for hop in HOP {
        assert!(values(&fields, hop).is_empty(), "hop-by-hop `{hop}` forwarded");
    }
    // Whatever the client's Connection named is gone too (but the framing).
    for c in ref_req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
    {
        for token in c.value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
            let Ok(token) = std::str::from_utf8(token) else {
                continue;
            };
            if token.is_empty()
                || token.eq_ignore_ascii_case("content-length")
                || token.eq_ignore_ascii_case("host")
                || token.eq_ignore_ascii_case("x-forwarded-for")
                || token.eq_ignore_ascii_case("x-forwarded-host")
                || token.eq_ignore_ascii_case("x-forwarded-proto")
                || token.eq_ignore_ascii_case("x-request-id")
            {
                continue;
            }
            assert!(
                values(&fields, token).is_empty(),
                "`{token}`, named in Connection, forwarded"
            );
        }
    }
});
