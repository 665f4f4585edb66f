//! Error text for people: the whole `source()` chain on one line, so a log
//! says "tcp connect error: Connection refused", not just "transport error";
//! and the one JSON shape HTTP errors take.

/// `e` and each of its sources, joined with `: `.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let next = inner.to_string();
        // Some errors repeat their source in their own message.
        if !s.ends_with(&next) {
            s.push_str(": ");
            s.push_str(&next);
        }
        src = inner.source();
    }
    s
}

/// The JSON every HTTP error of edgeplane carries, whoever answers (the
/// admin API, the proxy, a worker's end of a tunnel): `error`, a stable
/// code a script can match on, and `message`, for people. Callers may add
/// fields (`request_id`, `service`, ...).
pub fn envelope(code: &str, message: impl std::fmt::Display) -> serde_json::Value {
    serde_json::json!({ "error": code, "message": message.to_string() })
}

/// [`envelope`] as an HTTP response.
pub fn response(status: http::StatusCode, code: &str, message: impl std::fmt::Display) -> axum::response::Response {
    use axum::response::IntoResponse;
    (status, axum::Json(envelope(code, message))).into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_envelope_has_a_code_and_a_message() {
        let v = super::envelope("bad_status", "unknown status `x`");
        assert_eq!(
            v,
            serde_json::json!({"error": "bad_status", "message": "unknown status `x`"})
        );
    }

    #[test]
    fn sources_are_joined() {
        let inner = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let outer = std::io::Error::other(inner);
        assert_eq!(super::chain(&outer), "Connection refused");
        #[derive(Debug, thiserror::Error)]
        #[error("connect failed")]
        struct Wrap(#[source] std::io::Error);
        let e = Wrap(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused",
        ));
        assert_eq!(super::chain(&e), "connect failed: Connection refused");
    }
}
