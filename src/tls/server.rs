//! The coordinator's TLS: one rustls config for the one port, offering
//! `h2` and `http/1.1`, asking for (never demanding) a client certificate
//! signed by the cluster CA, and serving a certificate reloaded from disk.
//!
//! Client certificates are optional at the TLS layer because one port
//! serves everyone: curl with an admin token, a browser, a worker joining
//! with a join token. What a request may do without one is decided above
//! TLS (`--require-client-cert` for worker streams, admin scopes). A
//! certificate that is presented must verify, or the handshake fails.
//!
//! Reloading: the files are looked at every [`RELOAD_POLL`] and on SIGHUP;
//! a pair that changed and loads is served to the next handshake. Open
//! connections keep the certificate they were made with, so nothing is
//! dropped; a pair that fails to load is logged and the old one kept.

use super::{files, provider, TlsError, ALPN};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::CertificateDer;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How often the certificate files are checked for a change.
pub const RELOAD_POLL: Duration = Duration::from_secs(1);

/// The server's certificate and key, reloadable.
pub struct ServerTls {
    acceptor: tokio_rustls::TlsAcceptor,
    certs: Arc<Reloading>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServerTls({})", self.certs.cert.display())
    }
}

struct Reloading {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' modification times when last loaded.
    stamp: Mutex<Option<(SystemTime, SystemTime)>>,
}

impl std::fmt::Debug for Reloading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Reloading({})", self.cert.display())
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

fn stamps(cert: &Path, key: &Path) -> Option<(SystemTime, SystemTime)> {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((m(cert)?, m(key)?))
}

fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = files::certs(cert)?;
    let key_der = files::key(key)?;
    let ck = CertifiedKey::from_der(chain, key_der, &provider()).map_err(|source| TlsError::Rustls {
        what: "server certificate and key",
        source,
    })?;
    Ok(ck)
}

impl ServerTls {
    /// The server side, from the certificate and key files; client
    /// certificates are checked against `client_roots` when given.
    pub fn new(cert: &Path, key: &Path, client_roots: Option<&[CertificateDer<'static>]>) -> Result<Self, TlsError> {
        let stamp = stamps(cert, key);
        let certs = Arc::new(Reloading {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(Arc::new(load(cert, key)?)),
            stamp: Mutex::new(stamp),
        });
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsError::Rustls {
                what: "TLS versions",
                source,
            })?;
        let builder = match client_roots {
            Some(roots) => {
                let mut store = rustls::RootCertStore::empty();
                for r in roots {
                    store.add(r.clone()).map_err(|source| TlsError::Rustls {
                        what: "client CA",
                        source,
                    })?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider())
                    .allow_unauthenticated()
                    .build()?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(certs.clone());
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(ServerTls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            certs,
        })
    }

    pub fn acceptor(&self) -> &tokio_rustls::TlsAcceptor {
        &self.acceptor
    }

    /// Loads the files again if they changed (or `force`); true when a new
    /// certificate is now served.
    pub fn reload(&self, force: bool) -> Result<bool, TlsError> {
        let c = &self.certs;
        let now = stamps(&c.cert, &c.key);
        let mut stamp = c.stamp.lock().unwrap_or_else(|e| e.into_inner());
        if !force && now == *stamp {
            return Ok(false);
        }
        // Remembered even when loading fails: a half-written pair is tried
        // again when it changes next, not logged every second.
        *stamp = now;
        let fresh = load(&c.cert, &c.key)?;
        *c.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh);
        Ok(true)
    }

    /// Reloads on change (checked every `every`) and on SIGHUP, until `stop`.
    pub async fn watch(self: Arc<Self>, every: Duration, stop: CancellationToken) {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let force = tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => false,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
            };
            match self.reload(force) {
                Ok(true) => info!(cert = %self.certs.cert.display(), "reloaded the TLS certificate"),
                Ok(false) => {}
                Err(e) => warn!(error = %e, "could not reload the TLS certificate; still serving the previous one"),
            }
        }
    }
}
