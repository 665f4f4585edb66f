//! Join tokens an operator can hand out: `{id}.{secret}`, printed once by
//! `edgeplane token create`. The coordinator keeps the id (public, names
//! the token in `list` and `revoke`) and the SHA-256 digest of the whole
//! token, never the token; a presented token is compared against that
//! digest in constant time. Each may expire, be limited to a number of
//! joins, and to worker names matching a glob (`gpu-box-*`).
//!
//! The static `EDGEPLANE_JOIN_TOKEN` keeps working beside them: it has no
//! expiry, no limit and no pattern.

use super::{load, save, StoreError};
use crate::auth::Secret;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;
use subtle::ConstantTimeEq;

pub const FILE: &str = "join-tokens.json";

/// Longest name pattern accepted.
pub const MAX_PATTERN: usize = 256;
/// Tokens kept at most (expired and used-up ones count until revoked).
pub const MAX_TOKENS: usize = 10_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    id: String,
    /// Hex SHA-256 of the whole token.
    digest: String,
    #[serde(default)]
    name_pattern: String,
    /// `None`: unlimited.
    uses_left: Option<u32>,
    expires_at_unix: Option<i64>,
    created_at_unix: i64,
    #[serde(default)]
    revoked: bool,
}

/// A token as `list` shows it: everything but the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenView {
    pub id: String,
    pub name_pattern: String,
    pub uses_left: Option<u32>,
    pub expires_at_unix: Option<i64>,
    pub created_at_unix: i64,
    pub revoked: bool,
}

impl From<&Stored> for TokenView {
    fn from(s: &Stored) -> Self {
        TokenView {
            id: s.id.clone(),
            name_pattern: s.name_pattern.clone(),
            uses_left: s.uses_left,
            expires_at_unix: s.expires_at_unix,
            created_at_unix: s.created_at_unix,
            revoked: s.revoked,
        }
    }
}

/// Why a join was refused. The messages never contain the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinRefusal {
    #[error("a join token is required (authorization: Bearer ...)")]
    Missing,
    #[error("invalid join token")]
    Invalid,
    #[error("join token `{0}` has expired")]
    Expired(String),
    #[error("join token `{0}` is used up")]
    UsedUp(String),
    #[error("join token `{0}` was revoked")]
    Revoked(String),
    #[error("join token `{id}` is for workers named `{pattern}`, not `{name}`")]
    NameMismatch { id: String, pattern: String, name: String },
}

#[derive(Debug)]
pub struct JoinTokens {
    path: Option<PathBuf>,
    tokens: Mutex<Vec<Stored>>,
    static_token: Secret,
}

fn digest_hex(token: &[u8]) -> String {
    Sha256::digest(token).iter().map(|b| format!("{b:02x}")).collect()
}

fn random_chars(n: usize) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..n)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

impl JoinTokens {
    pub fn load(path: Option<PathBuf>, static_token: Secret) -> Result<Self, StoreError> {
        let tokens = load(path.as_deref())?;
        Ok(JoinTokens {
            path,
            tokens: Mutex::new(tokens),
            static_token,
        })
    }

    /// Whether any join credential exists; with none, joining is open (as
    /// the worker stream is without `EDGEPLANE_JOIN_TOKEN`).
    fn any(&self, tokens: &[Stored]) -> bool {
        self.static_token.is_set() || !tokens.is_empty()
    }

    /// Makes a token; returns it whole (the only time it exists outside
    /// the caller) with its view.
    pub fn create(
        &self,
        ttl: Option<Duration>,
        name_pattern: &str,
        uses: Option<u32>,
        now_unix: i64,
    ) -> Result<(TokenView, String), StoreError> {
        if name_pattern.len() > MAX_PATTERN || name_pattern.chars().any(char::is_control) {
            return Err(StoreError::BadPattern(format!(
                "at most {MAX_PATTERN} printable characters"
            )));
        }
        let mut tokens = self.lock();
        if tokens.len() >= MAX_TOKENS {
            return Err(StoreError::BadPattern(format!(
                "{MAX_TOKENS} tokens exist; revoke some first"
            )));
        }
        let id = random_chars(6);
        let token = format!("{id}.{}", random_chars(32));
        let stored = Stored {
            id,
            digest: digest_hex(token.as_bytes()),
            name_pattern: name_pattern.to_string(),
            uses_left: uses,
            expires_at_unix: ttl.map(|t| now_unix.saturating_add(t.as_secs() as i64)),
            created_at_unix: now_unix,
            revoked: false,
        };
        let view = TokenView::from(&stored);
        tokens.push(stored);
        save(self.path.as_deref(), &*tokens)?;
        Ok((view, token))
    }

    pub fn list(&self) -> Vec<TokenView> {
        self.lock().iter().map(TokenView::from).collect()
    }

    pub fn revoke(&self, id: &str) -> Result<TokenView, StoreError> {
        let mut tokens = self.lock();
        let t = tokens
            .iter_mut()
            .find(|t| t.id == id)
            .ok_or_else(|| StoreError::UnknownToken(id.to_string()))?;
        t.revoked = true;
        let view = TokenView::from(&*t);
        save(self.path.as_deref(), &*tokens)?;
        Ok(view)
    }

    /// Checks the `authorization` value of a join for a worker named
    /// `name`, and spends one use of the token.
    pub fn admit(&self, authorization: Option<&[u8]>, name: &str, now_unix: i64) -> Result<(), JoinRefusal> {
        let mut tokens = self.lock();
        if !self.any(&tokens) {
            return Ok(());
        }
        let presented = authorization
            .and_then(crate::auth::strip_bearer)
            .ok_or(JoinRefusal::Missing)?;
        if self.static_token.verify_token(presented) {
            return Ok(());
        }
        let digest = digest_hex(presented);
        // Every stored digest is compared, so the time taken does not say
        // which (or whether any) matched.
        let mut found = None;
        for (i, t) in tokens.iter().enumerate() {
            if bool::from(t.digest.as_bytes().ct_eq(digest.as_bytes())) {
                found = Some(i);
            }
        }
        let t = &mut tokens[found.ok_or(JoinRefusal::Invalid)?];
        if t.revoked {
            return Err(JoinRefusal::Revoked(t.id.clone()));
        }
        if t.expires_at_unix.is_some_and(|at| now_unix >= at) {
            return Err(JoinRefusal::Expired(t.id.clone()));
        }
        if t.uses_left == Some(0) {
            return Err(JoinRefusal::UsedUp(t.id.clone()));
        }
        if !t.name_pattern.is_empty() && !wildmatch::WildMatch::new(&t.name_pattern).matches(name) {
            return Err(JoinRefusal::NameMismatch {
                id: t.id.clone(),
                pattern: t.name_pattern.clone(),
                name: name.chars().take(64).collect(),
            });
        }
        if let Some(n) = t.uses_left.as_mut() {
            *n -= 1;
            // Best effort: a join is not refused because the disk is full,
            // but the spent use may come back after a restart.
            if let Err(e) = save(self.path.as_deref(), &*tokens) {
                tracing::warn!(error = %e, "could not record a join token's use");
            }
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Stored>> {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(t: &str) -> Vec<u8> {
        format!("Bearer {t}").into_bytes()
    }

    #[test]
    fn a_token_is_refused_once_expired_used_up_revoked_or_for_another_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let store = JoinTokens::load(Some(path.clone()), Secret::new(None)).unwrap();
        assert_eq!(store.admit(None, "x", 0), Ok(()), "no token exists: open");

        let (view, token) = store
            .create(Some(Duration::from_secs(60)), "gpu-box-*", Some(2), 1000)
            .unwrap();
        assert!(token.starts_with(&format!("{}.", view.id)));
        assert!(
            !std::fs::read_to_string(&path).unwrap().contains(&token),
            "only the digest is kept"
        );

        let t = bearer(&token);
        assert_eq!(store.admit(None, "gpu-box-1", 1000), Err(JoinRefusal::Missing));
        assert_eq!(
            store.admit(Some(b"Bearer nope"), "gpu-box-1", 1000),
            Err(JoinRefusal::Invalid)
        );
        assert!(matches!(
            store.admit(Some(&t), "cpu-box-1", 1000),
            Err(JoinRefusal::NameMismatch { .. })
        ));
        assert_eq!(store.admit(Some(&t), "gpu-box-1", 1059), Ok(()));
        assert_eq!(store.admit(Some(&t), "gpu-box-2", 1000), Ok(()));
        assert_eq!(
            store.admit(Some(&t), "gpu-box-3", 1000),
            Err(JoinRefusal::UsedUp(view.id.clone()))
        );

        // Kept across a restart, spent uses included.
        let again = JoinTokens::load(Some(path), Secret::new(None)).unwrap();
        assert_eq!(again.list()[0].uses_left, Some(0));

        let (v2, t2) = again.create(Some(Duration::from_secs(10)), "", None, 1000).unwrap();
        assert_eq!(
            again.admit(Some(&bearer(&t2)), "any", 1010),
            Err(JoinRefusal::Expired(v2.id.clone()))
        );
        let (v3, t3) = again.create(None, "", None, 1000).unwrap();
        again.revoke(&v3.id).unwrap();
        assert_eq!(
            again.admit(Some(&bearer(&t3)), "any", 1000),
            Err(JoinRefusal::Revoked(v3.id))
        );
    }

    #[test]
    fn the_static_token_keeps_working_beside_them() {
        let store = JoinTokens::load(None, Secret::new(Some("static"))).unwrap();
        assert_eq!(store.admit(Some(b"Bearer static"), "any", 0), Ok(()));
        assert_eq!(store.admit(Some(b"Bearer other"), "any", 0), Err(JoinRefusal::Invalid));
    }
}
