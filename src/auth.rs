//! Shared-secret checks: the join token for workers, the admin token for
//! operators. Both travel as `authorization: Bearer <token>`.
//!
//! Tokens are compared in constant time over their SHA-256 digests, so
//! neither the content nor the length leaks through timing, and they are
//! never printed (`Debug` is redacted).

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// An optional shared secret. `None` means the check is off.
#[derive(Clone, Default)]
pub struct Secret(Option<[u8; 32]>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Secret(<set>)"
        } else {
            "Secret(<unset>)"
        })
    }
}

/// Why a request was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing bearer token in the `authorization` header")]
    Missing,
    #[error("invalid token")]
    Invalid,
}

impl Secret {
    /// Whether a secret is configured (the check is on).
    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// A secret from configuration; an empty string counts as unset.
    pub fn new(token: Option<&str>) -> Self {
        match token {
            Some(t) if !t.is_empty() => Secret(Some(digest(t.as_bytes()))),
            _ => Secret(None),
        }
    }

    /// Checks an `authorization` header value against the secret.
    pub fn verify(&self, authorization: Option<&[u8]>) -> Result<(), AuthError> {
        let Some(expected) = &self.0 else { return Ok(()) };
        let presented = authorization.and_then(|v| strip_bearer(v)).ok_or(AuthError::Missing)?;
        if bool::from(digest(presented).ct_eq(expected)) {
            Ok(())
        } else {
            Err(AuthError::Invalid)
        }
    }

    /// Checks the `authorization` header of an HTTP or gRPC request.
    pub fn verify_headers(&self, headers: &http::HeaderMap) -> Result<(), AuthError> {
        self.verify(headers.get(http::header::AUTHORIZATION).map(|v| v.as_bytes()))
    }
}

fn strip_bearer(v: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = v.split_at(v.iter().position(|b| *b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// A secret this process both presents and checks (the cluster secret
/// between coordinators): its digest for checking, and the header value to
/// send, marked sensitive so that HTTP/2 never indexes it and `Debug`
/// never shows it.
#[derive(Clone, Default)]
pub struct SharedSecret {
    check: Secret,
    send: Option<http::HeaderValue>,
}

impl std::fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.check.fmt(f)
    }
}

impl SharedSecret {
    pub fn new(token: Option<&str>) -> Self {
        let check = Secret::new(token);
        let send = token
            .filter(|t| !t.is_empty())
            .and_then(|t| http::HeaderValue::from_str(&bearer(t)).ok())
            .map(|mut v| {
                v.set_sensitive(true);
                v
            });
        SharedSecret { check, send }
    }

    /// The `Bearer` value to present; `None` when no secret is set.
    pub fn header(&self) -> Option<&http::HeaderValue> {
        self.send.as_ref()
    }

    /// Checks a presented value; with no secret set, nothing passes.
    pub fn verify(&self, presented: Option<&[u8]>) -> Result<(), AuthError> {
        if !self.check.is_set() {
            return Err(AuthError::Invalid);
        }
        self.check.verify(presented)
    }
}

/// The header value a client sends for `token`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_secret_accepts_anything() {
        assert_eq!(Secret::new(None).verify(None), Ok(()));
        assert_eq!(Secret::new(Some("")).verify(None), Ok(()));
    }

    #[test]
    fn set_secret_needs_the_exact_bearer() {
        let s = Secret::new(Some("hunter2"));
        assert_eq!(s.verify(None), Err(AuthError::Missing));
        assert_eq!(s.verify(Some(b"hunter2")), Err(AuthError::Missing));
        assert_eq!(s.verify(Some(b"Bearer hunter3")), Err(AuthError::Invalid));
        assert_eq!(s.verify(Some(b"Bearer hunter2x")), Err(AuthError::Invalid));
        assert_eq!(s.verify(Some(b"Bearer hunter2")), Ok(()));
        assert_eq!(s.verify(Some(b"bearer  hunter2 ")), Ok(()));
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
