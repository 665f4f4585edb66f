//! The client side: tonic TLS for workers and the CLI (a private CA or the
//! system roots, and the client's own certificate when it has one), and a
//! rustls client config for dialing services over `https://`.

use super::{files, provider, TlsError};
use std::sync::Arc;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// What a client trusts and presents.
#[derive(Clone, Default)]
pub struct ClientTls {
    /// PEM of the CA to trust; the system roots when `None`.
    pub ca_pem: Option<String>,
    /// PEM certificate and key to present.
    pub identity: Option<(String, String)>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("private_ca", &self.ca_pem.is_some())
            .field("identity", &self.identity.is_some())
            .finish()
    }
}

impl ClientTls {
    /// From files: `--ca-cert`, and `--cert`/`--key` when both are given.
    pub fn from_files(
        ca: Option<&std::path::Path>,
        cert: Option<&std::path::Path>,
        key: Option<&std::path::Path>,
    ) -> Result<Self, TlsError> {
        let text = |p: &std::path::Path| files::read(p).map(|b| String::from_utf8_lossy(&b).into_owned());
        let ca_pem = ca.map(text).transpose()?;
        let identity = match (cert, key) {
            (Some(c), Some(k)) => Some((text(c)?, text(k)?)),
            (None, None) => None,
            _ => return Err(TlsError::Invalid("--cert and --key go together".into())),
        };
        Ok(ClientTls { ca_pem, identity })
    }

    /// tonic's config for a coordinator named `domain`.
    pub fn tonic(&self, domain: &str) -> ClientTlsConfig {
        let mut c = ClientTlsConfig::new().domain_name(domain.trim_start_matches('[').trim_end_matches(']'));
        c = match &self.ca_pem {
            Some(pem) => c.ca_certificate(Certificate::from_pem(pem)),
            None => c.with_native_roots(),
        };
        if let Some((cert, key)) = &self.identity {
            c = c.identity(Identity::from_pem(cert, key));
        }
        c
    }
}

/// The system's root certificates, read once per process (tests start many
/// coordinators and workers in one process; each would read them again).
fn system_roots() -> Arc<rustls::RootCertStore> {
    static ROOTS: std::sync::OnceLock<Arc<rustls::RootCertStore>> = std::sync::OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            Arc::new(roots)
        })
        .clone()
}

/// What a client verifies servers against: the certificates of a private
/// CA (`--service-ca`, the cluster CA), or the system roots.
#[derive(Clone)]
pub struct Trust {
    roots: Arc<rustls::RootCertStore>,
    /// The PEM the roots came from, for tonic (`None`: the system roots).
    pem: Option<String>,
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trust")
            .field("private_ca", &self.pem.is_some())
            .field("roots", &self.roots.len())
            .finish()
    }
}

impl Trust {
    /// The system roots.
    pub fn system() -> Self {
        Trust {
            roots: system_roots(),
            pem: None,
        }
    }

    /// The certificates in `pem` (at least one, each a valid CA certificate).
    pub fn from_pem(pem: &[u8], what: &'static str) -> Result<Self, TlsError> {
        let certs = files::certs_from_pem(pem);
        if certs.is_empty() {
            return Err(TlsError::Invalid(format!("{what}: no PEM certificate in it")));
        }
        let mut roots = rustls::RootCertStore::empty();
        for c in certs {
            roots.add(c).map_err(|source| TlsError::Rustls { what, source })?;
        }
        Ok(Trust {
            roots: Arc::new(roots),
            pem: Some(String::from_utf8_lossy(pem).into_owned()),
        })
    }

    /// These roots and the system's.
    pub fn and_system(mut self) -> Self {
        let mut roots = (*self.roots).clone();
        roots.roots.extend(system_roots().roots.iter().cloned());
        self.roots = Arc::new(roots);
        self
    }

    /// A PEM file's certificates, or the system roots when `None`.
    pub fn from_file(path: Option<&std::path::Path>, what: &'static str) -> Result<Self, TlsError> {
        match path {
            Some(p) => {
                let pem = files::read(p)?;
                Self::from_pem(&pem, what).map_err(|e| TlsError::Invalid(format!("{}: {e}", p.display())))
            }
            None => Ok(Self::system()),
        }
    }

    /// A rustls client config offering `alpn` and no client certificate.
    pub fn rustls(&self, alpn: &[&[u8]]) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsError::Rustls {
                what: "TLS versions",
                source,
            })?
            .with_root_certificates(self.roots.clone())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }

    /// tonic's config for a server named `domain`.
    pub fn tonic(&self, domain: &str) -> ClientTlsConfig {
        let c = ClientTlsConfig::new().domain_name(domain.trim_start_matches('[').trim_end_matches(']'));
        match &self.pem {
            Some(pem) => c.ca_certificate(Certificate::from_pem(pem)),
            None => c.with_native_roots(),
        }
    }
}
