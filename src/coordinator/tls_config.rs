//! The coordinator's TLS and certificate flags (flattened into
//! [`super::CoordinatorConfig`]).

use crate::duration::parse_duration;
use std::path::PathBuf;
use std::time::Duration;

/// Default lifetime of a worker's certificate.
pub const DEFAULT_CERT_LIFETIME: &str = "24h";

#[derive(Debug, Clone, clap::Args)]
pub struct TlsConfig {
    /// PEM certificate (chain) to serve: the port then speaks TLS only
    /// (gRPC and HTTP, ALPN h2 and http/1.1). Reloaded on change and on SIGHUP.
    #[arg(long = "tls-cert", env = "EDGEPLANE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long = "tls-key", env = "EDGEPLANE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// The cluster CA that signs workers' certificates (and checks them).
    /// Without it, one is generated on first start into --state-dir.
    #[arg(long = "ca-cert", env = "EDGEPLANE_CA_CERT", requires = "ca_key")]
    pub ca_cert: Option<PathBuf>,

    /// PEM private key of --ca-cert.
    #[arg(long = "ca-key", env = "EDGEPLANE_CA_KEY", requires = "ca_cert")]
    pub ca_key: Option<PathBuf>,

    /// Lifetime of the certificate a worker gets at join and at each
    /// renewal (it renews at about two thirds of it).
    #[arg(long = "cert-lifetime", env = "EDGEPLANE_CERT_LIFETIME", default_value = DEFAULT_CERT_LIFETIME, value_parser = parse_duration)]
    pub cert_lifetime: Duration,

    /// Worker streams (Connect, Tunnel) need a client certificate from the
    /// cluster CA; joining (Enrollment.Join) is the one call without.
    #[arg(long = "require-client-cert", env = "EDGEPLANE_REQUIRE_CLIENT_CERT")]
    pub require_client_cert: bool,

    /// PEM CA to verify `https://` services against when this coordinator
    /// dials them itself (the direct path); the system roots otherwise.
    /// Workers verify the services they reach with their own --service-ca.
    #[arg(long = "service-ca", env = "EDGEPLANE_SERVICE_CA")]
    pub service_ca: Option<PathBuf>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            tls_cert: None,
            tls_key: None,
            ca_cert: None,
            ca_key: None,
            cert_lifetime: parse_duration(DEFAULT_CERT_LIFETIME).expect("the default parses"),
            require_client_cert: false,
            service_ca: None,
        }
    }
}

impl TlsConfig {
    /// The port speaks TLS.
    pub fn enabled(&self) -> bool {
        self.tls_cert.is_some() && self.tls_key.is_some()
    }
}
