//! Header names and values as the fast path sees them: text in a buffer,
//! not an `http::HeaderMap`. Which headers are hop-by-hop, which frame the
//! message, what a `Connection` header names.

pub(super) fn header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The client's `x-request-id` if it sent a sane one, else a new one.
pub(super) fn request_id(headers: &[httparse::Header<'_>]) -> String {
    let theirs = headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("x-request-id"))
        .and_then(|h| std::str::from_utf8(h.value).ok());
    crate::proxy::forward::request_id_from(theirs)
}

/// Hop-by-hop headers (RFC 9110 7.6.1), the hyper path's list. `te` is
/// dropped even as `te: trailers`, which the hyper path keeps for gRPC: no
/// gRPC call comes this way.
pub(super) fn is_hop_by_hop(name: &str) -> bool {
    crate::proxy::forward::is_hop_by_hop_name(name)
}

/// Methods that may be sent again on a fresh connection when a reused one
/// turned out to be closed (RFC 9110 9.2.2).
pub(super) fn idempotent(method: &str) -> bool {
    http::Method::from_bytes(method.as_bytes()).is_ok_and(|m| m.is_idempotent())
}

/// Headers that frame the message (RFC 9112 6): whatever `Connection`
/// names, these are never dropped from a message whose body is forwarded
/// with the framing they gave it. Dropping `Content-Length` while writing
/// the body was request smuggling: the replica read the body as the next
/// request on a connection other clients share.
pub(super) fn frames_the_message(name: &str) -> bool {
    name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("transfer-encoding")
}

/// Whether `headers` has a `Connection` header (most have none, and then no
/// other header needs checking against it).
pub(super) fn has_connection(headers: &[httparse::Header<'_>]) -> bool {
    headers.iter().any(|h| h.name.eq_ignore_ascii_case("connection"))
}

/// Whether a `Connection` header among `headers` names `name`.
pub(super) fn named_in_connection(headers: &[httparse::Header<'_>], name: &str) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .any(|h| is_token_in(h.value, name))
}

/// Whether the comma-separated list `value` holds `token` (any case).
pub(super) fn is_token_in(value: &[u8], token: &str) -> bool {
    value
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}
