//! Why a request to a replica got no response head. The kind decides what
//! the proxy may do next: after a failed connect nothing was sent, so the
//! request may go to another replica and this one is ejected for a while;
//! after a reset the request may have been processed, so only a request
//! that may be replayed is tried again. The cause is kept as an error
//! source (not flattened to a string), so logs and the client's error read
//! the whole chain through [`crate::errors::chain`].

use std::time::Duration;

/// What caused a failure: any error, kept for its chain of sources.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum SendFailure {
    /// The replica could not be reached: refused, unreachable, or the
    /// connection's handshake failed.
    #[error("connect to {target}")]
    Connect {
        target: String,
        #[source]
        cause: Cause,
    },
    /// Connecting took longer than the connect timeout.
    #[error("connect to {target} timed out after {}", crate::duration::format_short(*after))]
    ConnectTimeout { target: String, after: Duration },
    /// The connection broke (or the worker's end of a tunnel could not
    /// forward) before any response byte.
    #[error("no response")]
    Reset(#[source] Cause),
}

impl SendFailure {
    pub fn connect(target: impl std::fmt::Display, cause: impl Into<Cause>) -> Self {
        SendFailure::Connect {
            target: target.to_string(),
            cause: cause.into(),
        }
    }

    pub fn reset(cause: impl Into<Cause>) -> Self {
        SendFailure::Reset(cause.into())
    }

    /// Nothing was sent: safe to send elsewhere, and the replica is ejected.
    pub fn is_connect(&self) -> bool {
        matches!(self, SendFailure::Connect { .. } | SendFailure::ConnectTimeout { .. })
    }

    /// The whole chain, for a log line or a client's error message.
    pub fn detail(&self) -> String {
        crate::errors::chain(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cause_is_kept_and_read_as_a_chain() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let f = SendFailure::connect("10.0.0.5:8100", refused);
        assert!(f.is_connect());
        assert_eq!(f.detail(), "connect to 10.0.0.5:8100: connection refused");
        let source = std::error::Error::source(&f).unwrap();
        assert_eq!(source.to_string(), "connection refused");
        let t = SendFailure::ConnectTimeout {
            target: "h:1".into(),
            after: Duration::from_secs(2),
        };
        assert!(t.is_connect());
        assert_eq!(t.detail(), "connect to h:1 timed out after 2s");
        let r = SendFailure::reset("tunnel: stream closed");
        assert!(!r.is_connect());
        assert_eq!(r.detail(), "no response: tunnel: stream closed");
    }
}
