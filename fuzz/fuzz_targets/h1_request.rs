//! A client's request head: `request::parse` never panics, what it takes
//! is consistent with the bytes, and the request it writes upstream
//! (`request::write_request`) parses back to the same method, body length
//! and target, for any prefix, host and client address.
#![no_main]

use edgeplane::proxy::h1::request::{self, Forward, Parsed};
use edgeplane_fuzz::Input;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let max_body = usize::from(input.byte()) * 64;
    let raw = input.rest();
    let mut headers = [httparse::EMPTY_HEADER; request::MAX_HEADERS];
    let head = match request::parse(raw, &mut headers, max_body) {
        Parsed::Fast(head) => head,
        Parsed::Partial | Parsed::Other => return,
    };
    assert!(head.len <= raw.len());
    assert!(raw[..head.len].ends_with(b"\n\n") || raw[..head.len].ends_with(b"\n\r\n"));
    assert!(!head.name.is_empty() && !head.name.contains('/'));
    assert!(head.rest.is_empty() || head.rest.starts_with('/'));
    assert!(head.content_length <= max_body);
    let hosts = head
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"))
        .count();
    assert_eq!(hosts, 1);
    let body_end = (head.len + head.content_length).min(raw.len());
    let body = &raw[head.len..body_end];
    let mut out = Vec::new();
    request::write_request(
        &head,
        &Forward {
            prefix: "/prefix",
            host: b"replica:1",
            client: Some(b"2001:db8::1"),
            rid: b"rid",
        },
        body,
        &mut out,
    );
    let mut h = [httparse::EMPTY_HEADER; 256];
    let mut up = httparse::Request::new(&mut h);
    let Ok(httparse::Status::Complete(n)) = up.parse(&out) else {
        panic!("the upstream request does not parse");
    };
    assert_eq!(up.method, Some(head.method));
    assert!(up.path.unwrap().starts_with("/prefix/"));
    assert_eq!(&out[n..], body);
});
