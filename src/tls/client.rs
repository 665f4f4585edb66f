//! The client side: tonic TLS for workers and the CLI (a private CA or the
//! system roots, and the client's own certificate when it has one), and a
//! rustls client config for dialing services over `https://`.

use super::{files, provider, TlsError};
use rustls_pki_types::CertificateDer;
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

/// A rustls client config trusting `ca` (PEM certificates), or the system
/// roots when `None`; ALPN `http/1.1` (the services' side is HTTP/1 here).
pub fn rustls_config(ca: Option<&[CertificateDer<'static>]>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(certs) => {
            for c in certs {
                roots.add(c.clone()).map_err(|source| TlsError::Rustls {
                    what: "service CA",
                    source,
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls {
            what: "TLS versions",
            source,
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
