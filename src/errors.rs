//! Error text for people: the whole `source()` chain on one line, so a log
//! says "tcp connect error: Connection refused", not just "transport error".

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

#[cfg(test)]
mod tests {
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
