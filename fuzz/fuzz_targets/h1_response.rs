//! An upstream's response head (`response::rewrite`), as the client gets
//! it: never a panic; when forwarded, the head is strict HTTP/1.1 with
//! exactly one valid `Date` and one `x-request-id`, no hop-by-hop field and
//! nothing the upstream's `Connection` named (but the framing), and its
//! framing agrees with the framing the proxy copies the body by.
#![no_main]

use edgeplane::proxy::h1::response::{self, Framing};
use edgeplane_fuzz::{strict_head, values, Input};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let flags = input.byte();
    let (head_request, close_client) = (flags & 1 != 0, flags & 2 != 0);
    let raw = input.rest();
    let mut out = Vec::new();
    let head = match response::rewrite(raw, head_request, b"rid-1", close_client, &mut out) {
        Ok(Some(h)) => h,
        Ok(None) | Err(_) => return,
    };
    assert!(head.len <= raw.len());
    if head.status < 200 {
        assert!(out.is_empty(), "an interim response is skipped, not written");
        return;
    }
    // The upstream's head, as httparse reads it.
    let mut uh = [httparse::EMPTY_HEADER; response::MAX_HEADERS];
    let mut upstream = httparse::Response::new(&mut uh);
    assert!(matches!(upstream.parse(raw), Ok(httparse::Status::Complete(n)) if n == head.len));

    let mut ch = [httparse::EMPTY_HEADER; response::MAX_HEADERS + 8];
    let mut client = httparse::Response::new(&mut ch);
    let n = match client.parse(&out) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!("the client's head does not parse: {other:?}"),
    };
    assert_eq!(n, out.len(), "bytes after the head");
    assert_eq!(client.code, Some(head.status));
    let (_, fields) = strict_head(&out);
    let dates = values(&fields, "date");
    assert_eq!(dates.len(), 1, "exactly one Date: {:?}", String::from_utf8_lossy(&out));
    assert!(httpdate::parse_http_date(std::str::from_utf8(dates[0]).unwrap()).is_ok());
    assert_eq!(values(&fields, "x-request-id"), [&b"rid-1"[..]]);
    let te = values(&fields, "transfer-encoding");
    let cl = values(&fields, "content-length");
    match head.framing {
        Framing::Chunked => {
            assert!(te.len() == 1 && te[0].eq_ignore_ascii_case(b"chunked") && cl.is_empty());
        }
        Framing::Length(len) => {
            assert!(
                te.is_empty() && cl.len() == 1,
                "one Content-Length: {:?}",
                String::from_utf8_lossy(&out)
            );
            assert!(cl
                .iter()
                .all(|v| std::str::from_utf8(v).unwrap().parse::<u64>() == Ok(len)));
        }
        Framing::UntilClose => assert!(te.is_empty() && cl.is_empty() && head.closes_client && !head.reusable),
        Framing::Empty => assert!(te.is_empty() || head_request || head.status == 204 || head.status == 304),
    }
    let connection = values(&fields, "connection");
    if head.closes_client {
        assert_eq!(connection, [&b"close"[..]]);
    } else {
        assert!(connection.is_empty());
    }
    for hop in [
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "proxy-authenticate",
    ] {
        assert!(values(&fields, hop).is_empty(), "hop-by-hop `{hop}` forwarded");
    }
    for c in upstream
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
    {
        for token in c.value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
            let Ok(token) = std::str::from_utf8(token) else {
                continue;
            };
            let ours = [
                "content-length",
                "transfer-encoding",
                "date",
                "x-request-id",
                "connection",
            ];
            if token.is_empty() || ours.iter().any(|o| token.eq_ignore_ascii_case(o)) {
                continue;
            }
            assert!(
                values(&fields, token).is_empty(),
                "`{token}`, named in Connection, forwarded"
            );
        }
    }
});
