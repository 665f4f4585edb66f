//! The worker's certificate and key, in its state dir (`worker-cert.pem`,
//! `worker-key.pem`, both 0600). The key is generated here and never sent
//! anywhere; the certificate comes from the coordinator's CA at join and
//! at each renewal. An expired certificate is as good as none: the worker
//! joins again with its join token.

use crate::tls::{csr, files, identity, TlsError};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub const CERT_FILE: &str = "worker-cert.pem";
pub const KEY_FILE: &str = "worker-key.pem";

#[derive(Clone)]
struct Held {
    cert_pem: String,
    key_pem: String,
    worker_id: String,
    not_before: i64,
    not_after: i64,
}

pub struct Credentials {
    dir: PathBuf,
    held: Mutex<Option<Held>>,
    /// The key of a renewal asked for and not yet answered.
    pending_key: Mutex<Option<String>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({})", self.dir.display())
    }
}

fn parse(cert_pem: &str, key_pem: String) -> Option<Held> {
    let der = files::certs_from_pem(cert_pem.as_bytes()).into_iter().next()?;
    let id = identity::from_der(&der)?;
    Some(Held {
        worker_id: id.worker_id()?.to_string(),
        cert_pem: cert_pem.to_string(),
        key_pem,
        not_before: id.not_before_unix,
        not_after: id.not_after_unix,
    })
}

impl Credentials {
    /// What the state dir holds (nothing, if it holds no readable pair).
    pub fn load(dir: &Path) -> Self {
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
        let held = match (read(CERT_FILE), read(KEY_FILE)) {
            (Some(c), Some(k)) => parse(&c, k),
            _ => None,
        };
        Credentials {
            dir: dir.to_path_buf(),
            held: Mutex::new(held),
            pending_key: Mutex::new(None),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Held>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The certificate and key, while the certificate is valid at `now`.
    pub fn usable(&self, now_unix: i64) -> Option<(String, String)> {
        self.lock()
            .as_ref()
            .filter(|h| now_unix < h.not_after)
            .map(|h| (h.cert_pem.clone(), h.key_pem.clone()))
    }

    /// The worker id the certificate names (valid or not).
    pub fn worker_id(&self) -> Option<String> {
        self.lock().as_ref().map(|h| h.worker_id.clone())
    }

    /// When to ask for the next certificate: two thirds into this one.
    pub fn renew_at(&self) -> Option<i64> {
        self.lock()
            .as_ref()
            .map(|h| h.not_before + (h.not_after - h.not_before) * 2 / 3)
    }

    /// How long to wait for a renewal's answer before asking again: a
    /// tenth of the certificate's lifetime.
    pub fn retry_after(&self) -> std::time::Duration {
        let secs = self
            .lock()
            .as_ref()
            .map_or(60, |h| (h.not_after - h.not_before).max(0) / 10);
        std::time::Duration::from_secs(secs as u64)
    }

    /// A new key and its CSR; the key is kept until [`Self::accept`].
    pub fn request(&self, name: &str) -> Result<String, TlsError> {
        let r = csr::generate(name)?;
        *self.pending_key.lock().unwrap_or_else(|e| e.into_inner()) = Some(r.key_pem);
        Ok(r.csr_pem)
    }

    /// Stores a certificate issued for the pending key.
    pub fn accept(&self, cert_pem: &str) -> Result<(), TlsError> {
        let key = self
            .pending_key
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| TlsError::Invalid("a certificate arrived that was not asked for".into()))?;
        self.store(cert_pem, key)
    }

    /// Writes the pair (key first, both 0600) and uses it from now on.
    pub fn store(&self, cert_pem: &str, key_pem: String) -> Result<(), TlsError> {
        let held = parse(cert_pem, key_pem)
            .ok_or_else(|| TlsError::Invalid("the coordinator's certificate names no worker".into()))?;
        files::write_private(&self.dir.join(KEY_FILE), held.key_pem.as_bytes())?;
        files::write_private(&self.dir.join(CERT_FILE), held.cert_pem.as_bytes())?;
        *self.lock() = Some(held);
        Ok(())
    }
}
