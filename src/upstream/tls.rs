//! TLS to services at `https://` URLs, on every path that dials one: the
//! coordinator's direct path (fast path and hyper path), the worker's end of
//! the tunnel (forwarded requests and raw pipes), and readiness probes.
//!
//! Each side verifies against its own `--service-ca` or the system roots:
//! the coordinator on the direct path, the worker on the tunnel path. The
//! server name checked is the URL's host, as a browser would. A handshake
//! that fails is a failed connect (nothing was sent), so the request may go
//! to another replica and the error names the reason.

use super::failure::SendFailure;
use crate::tls::client::Trust;
use crate::tls::TlsError;
use http::uri::Authority;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls_pki_types::ServerName;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// hyper-util's connector for `http://` and `https://` services.
pub type HttpsConnector = hyper_rustls::HttpsConnector<HttpConnector>;

/// How one side verifies the services it dials over TLS.
#[derive(Clone)]
pub struct ServiceTls {
    trust: Trust,
    /// ALPN `http/1.1`: the HTTP/1 paths and raw pipes.
    http1: TlsConnector,
    /// ALPN `h2`: gRPC services.
    h2: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for ServiceTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceTls").field("trust", &self.trust).finish()
    }
}

impl Default for ServiceTls {
    /// The system roots.
    fn default() -> Self {
        Self::new(Trust::system()).expect("ring supports the default TLS versions")
    }
}

impl ServiceTls {
    pub fn new(trust: Trust) -> Result<Self, TlsError> {
        Ok(ServiceTls {
            http1: TlsConnector::from(trust.rustls(&[b"http/1.1"])?),
            h2: trust.rustls(&[b"h2"])?,
            trust,
        })
    }

    /// `--service-ca FILE`, or the system roots.
    pub fn from_file(path: Option<&std::path::Path>) -> Result<Self, TlsError> {
        Self::new(Trust::from_file(path, "--service-ca")?)
    }

    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    /// A hyper-util connector that speaks TLS to `https://` URLs (ALPN
    /// `h2` when `h2`, else `http/1.1`) and plain TCP to `http://` ones.
    pub fn connector(&self, mut http: HttpConnector, h2: bool) -> HttpsConnector {
        http.enforce_http(false);
        let mut config = if h2 {
            (*self.h2).clone()
        } else {
            (**self.http1.config()).clone()
        };
        // The builder sets ALPN from the versions enabled below.
        config.alpn_protocols.clear();
        let b = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_or_http();
        if h2 {
            b.enable_http2().wrap_connector(http)
        } else {
            b.enable_http1().wrap_connector(http)
        }
    }

    /// TLS over `tcp` to `host`, bounded by `timeout`.
    pub async fn handshake(
        &self,
        tcp: TcpStream,
        authority: &Authority,
        timeout: Duration,
    ) -> Result<Box<TlsStream<TcpStream>>, SendFailure> {
        let host = authority.host().trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| SendFailure::connect(authority, format!("`{host}` is not a TLS server name: {e}")))?;
        match tokio::time::timeout(timeout, self.http1.connect(name, tcp)).await {
            Ok(Ok(tls)) => Ok(Box::new(tls)),
            Ok(Err(e)) => Err(SendFailure::connect(authority, HandshakeError(e))),
            Err(_) => Err(SendFailure::ConnectTimeout {
                target: format!("{authority} (TLS handshake)"),
                after: timeout,
            }),
        }
    }
}

/// Why a TLS handshake with a service failed (rustls's reason: an unknown
/// issuer, a name that does not match, an expired certificate, ...).
#[derive(Debug, thiserror::Error)]
#[error("TLS handshake: {0}")]
struct HandshakeError(std::io::Error);

/// Whether `origin` (a service's `scheme://authority`) is dialed with TLS.
pub fn is_https(origin: &http::Uri) -> bool {
    origin.scheme() == Some(&http::uri::Scheme::HTTPS)
}
