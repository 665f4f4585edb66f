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

    /// Whether `token` (the bare token, no scheme) is the secret; false
    /// when none is set.
    pub fn verify_token(&self, token: &[u8]) -> bool {
        self.0
            .as_ref()
            .is_some_and(|expected| bool::from(digest(token).ct_eq(expected)))
    }

    /// Checks the `authorization` header of an HTTP or gRPC request.
    pub fn verify_headers(&self, headers: &http::HeaderMap) -> Result<(), AuthError> {
        self.verify(headers.get(http::header::AUTHORIZATION).map(|v| v.as_bytes()))
    }
}

/// The token of a `Bearer` authorization value.
pub fn strip_bearer(v: &[u8]) -> Option<&[u8]> {
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

/// What an operator's credential allows. `Read`: list, get, watch, the
/// health views. `Admin`: also drain, revoke, and join tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Read,
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }
}

/// The operator credentials: an admin-scoped token, a read-scoped one,
/// and client certificates with the admin role. With no token set, the
/// admin API is open (as it was before scopes).
#[derive(Clone, Debug, Default)]
pub struct AdminAuth {
    admin: Secret,
    read: Secret,
}

impl AdminAuth {
    pub fn new(admin: Option<&str>, read: Option<&str>) -> Self {
        AdminAuth {
            admin: Secret::new(admin),
            read: Secret::new(read),
        }
    }

    /// The scope a request has, from its `authorization` header and
    /// whether it came with an admin certificate.
    pub fn scope(&self, authorization: Option<&[u8]>, admin_cert: bool) -> Result<Scope, AuthError> {
        if admin_cert || (!self.admin.is_set() && !self.read.is_set()) {
            return Ok(Scope::Admin);
        }
        let token = authorization.and_then(strip_bearer).ok_or(AuthError::Missing)?;
        // Both are compared, whichever matches, so timing says nothing.
        let (admin, read) = (self.admin.verify_token(token), self.read.verify_token(token));
        match (admin, read) {
            (true, _) => Ok(Scope::Admin),
            (false, true) => Ok(Scope::Read),
            _ => Err(AuthError::Invalid),
        }
    }

    /// [`Self::scope`] of an HTTP or gRPC request.
    pub fn scope_of(&self, headers: &http::HeaderMap, peer: Option<&crate::tls::PeerInfo>) -> Result<Scope, AuthError> {
        self.scope(
            headers.get(http::header::AUTHORIZATION).map(|v| v.as_bytes()),
            peer.is_some_and(|p| p.is_admin_cert()),
        )
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
    fn scopes_come_from_the_token_or_an_admin_certificate() {
        let a = AdminAuth::new(Some("adm"), Some("ro"));
        assert_eq!(a.scope(Some(b"Bearer adm"), false), Ok(Scope::Admin));
        assert_eq!(a.scope(Some(b"Bearer ro"), false), Ok(Scope::Read));
        assert_eq!(a.scope(Some(b"Bearer x"), false), Err(AuthError::Invalid));
        assert_eq!(a.scope(None, false), Err(AuthError::Missing));
        assert_eq!(a.scope(None, true), Ok(Scope::Admin));
        assert_eq!(AdminAuth::new(None, None).scope(None, false), Ok(Scope::Admin));
        // A read token alone: admin only by certificate.
        let ro = AdminAuth::new(None, Some("ro"));
        assert_eq!(ro.scope(Some(b"Bearer ro"), false), Ok(Scope::Read));
        assert_eq!(ro.scope(None, false), Err(AuthError::Missing));
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
