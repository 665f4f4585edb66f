//! TLS for the one port and for every client of it, and the cluster CA
//! that gives each worker its own certificate.
//!
//! rustls with the ring provider only (the one tonic's `tls-ring` uses), so
//! the tree has no OpenSSL and no second crypto library. Certificates are
//! made and signed with rcgen; no ASN.1 is written by hand.
//!
//! - [`files`]: PEM in and out, private files written 0600.
//! - [`identity`]: who a verified certificate names (a worker id or an
//!   admin), read from its `spiffe://edgeplane/...` URI.
//! - [`ca`]: the cluster CA: load or generate, sign a worker's CSR, issue
//!   admin and server certificates.
//! - [`csr`]: the worker's side: a key pair made locally and its CSR.
//! - [`peer`]: what a request knows of its connection (address, certificate).
//! - [`server`]: the coordinator's rustls config: ALPN, optional client
//!   certificates, the server certificate reloaded on change.
//! - [`client`]: rustls and tonic configs for workers, the CLI and tests.

pub mod ca;
pub mod client;
pub mod csr;
pub mod files;
pub mod identity;
pub mod peer;
pub mod server;

pub use ca::ClusterCa;
pub use identity::{CertIdentity, Role};
pub use peer::PeerInfo;
pub use server::ServerTls;
/// The server side as the front door holds it.
pub type ServerTlsRef = std::sync::Arc<ServerTls>;

use std::path::PathBuf;

/// The ALPN protocols the coordinator offers, in its order of preference.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path}: no PEM certificate in it")]
    NoCertificate { path: PathBuf },
    #[error("{path}: no PEM private key in it")]
    NoKey { path: PathBuf },
    #[error("{what}: {source}")]
    Rustls { what: &'static str, source: rustls::Error },
    #[error("{what}: {source}")]
    Certificate { what: &'static str, source: rcgen::Error },
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("{0}")]
    Invalid(String),
}

/// The one crypto provider every config here is built with.
pub fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

/// Seconds since the Unix epoch, for certificate lifetimes.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
