//! Worker ids and resume tokens.
//!
//! A worker id is short and readable (`w-` and 12 hex digits) because
//! operators type it. A resume token is 256 random bits: it is the only
//! thing that lets a new stream take over an existing worker's id, so the
//! registry keeps only its SHA-256 digest and compares digests.

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

pub fn new_worker_id() -> String {
    let mut b = [0u8; 6];
    rand::rng().fill_bytes(&mut b);
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("w-{hex}")
}

/// Whether `s` has the shape of an id this coordinator hands out.
pub fn is_worker_id(s: &str) -> bool {
    s.len() == 14 && s.starts_with("w-") && s[2..].bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// A fresh resume token and the digest the registry keeps of it.
pub fn new_resume_token() -> (String, [u8; 32]) {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let digest = token_digest(&token);
    (token, digest)
}

pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_one_shape() {
        for _ in 0..100 {
            assert!(is_worker_id(&new_worker_id()));
        }
        assert!(!is_worker_id("w-ABCDEF012345"));
        assert!(!is_worker_id("w-123"));
        assert!(!is_worker_id("../etc/passwd!"));
    }

    #[test]
    fn tokens_are_long_random_and_digested() {
        let (a, da) = new_resume_token();
        let (b, _) = new_resume_token();
        assert_ne!(a, b);
        assert!(a.len() >= 43);
        assert_eq!(token_digest(&a), da);
    }
}
