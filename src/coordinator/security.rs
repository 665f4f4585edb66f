//! The coordinator's TLS and credentials, built once at start from its
//! configuration: the server certificate (reloaded), the cluster CA, join
//! tokens, the revocation list, and the operator credentials with scopes.

use super::CoordinatorConfig;
use crate::auth::AdminAuth;
use crate::credentials::{JoinTokens, Revocations, StoreError};
use crate::tls::client::Trust;
use crate::tls::{ClusterCa, ServerTls, TlsError};
use crate::upstream::ServiceTls;
use std::sync::Arc;
use std::time::Duration;
use tracing::warn;

#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("state: {0}")]
    Store(#[from] StoreError),
}

pub struct Security {
    /// With `--tls-cert`: the port is TLS only.
    pub server: Option<Arc<ServerTls>>,
    /// Signs workers' certificates; checks client certificates.
    pub ca: Option<Arc<ClusterCa>>,
    pub cert_lifetime: Duration,
    pub require_client_cert: bool,
    pub tokens: Arc<JoinTokens>,
    pub revoked: Arc<Revocations>,
    pub admin: AdminAuth,
    /// How `https://` replicas on the direct path are verified.
    pub service_tls: ServiceTls,
    /// How other coordinators at `https://` peer addresses are verified:
    /// the cluster CA (which every coordinator of a cluster shares, as
    /// each checks every worker's certificate) and the system roots.
    pub peer_tls: ServiceTls,
    /// This coordinator's membership of a cluster, once it has joined:
    /// revocations are then written to etcd for every coordinator.
    pub cluster: std::sync::OnceLock<Arc<crate::cluster::Member>>,
}

impl Security {
    pub fn build(cfg: &CoordinatorConfig) -> Result<Self, SecurityError> {
        let t = &cfg.tls;
        let state_dir = cfg.cluster.state_dir.as_deref();
        let ca = match (&t.ca_cert, &t.ca_key, state_dir) {
            (Some(c), Some(k), _) => Some(ClusterCa::load(c, k)?),
            (_, _, Some(dir)) if t.enabled() => Some(ClusterCa::load_or_create(dir)?),
            _ => None,
        };
        if t.enabled() && ca.is_none() {
            warn!("TLS without a cluster CA (--ca-cert/--ca-key or --state-dir): workers cannot join for certificates");
        }
        let server = match (&t.tls_cert, &t.tls_key) {
            (Some(cert), Some(key)) => {
                let roots = ca.as_ref().map(|c| vec![c.cert_der().clone()]);
                Some(Arc::new(ServerTls::new(cert, key, roots.as_deref())?))
            }
            _ => None,
        };
        let file = |name: &str| state_dir.map(|d| d.join(name));
        let peer_tls = match &ca {
            Some(ca) => ServiceTls::new(Trust::from_pem(ca.cert_pem().as_bytes(), "cluster CA")?.and_system())?,
            None => ServiceTls::default(),
        };
        Ok(Security {
            service_tls: ServiceTls::from_file(t.service_ca.as_deref())?,
            peer_tls,
            cluster: std::sync::OnceLock::new(),
            server,
            ca: ca.map(Arc::new),
            cert_lifetime: t.cert_lifetime,
            require_client_cert: t.require_client_cert,
            tokens: Arc::new(JoinTokens::load(
                file(crate::credentials::tokens::FILE),
                crate::auth::Secret::new(cfg.join_token.as_deref()),
            )?),
            revoked: Arc::new(Revocations::load(file(crate::credentials::revoked::FILE))?),
            admin: AdminAuth::new(cfg.admin_token.as_deref(), cfg.read_token.as_deref()),
        })
    }

    /// Signs `csr_pem` for `worker_id`; `(certificate PEM, not_after)`.
    pub fn sign(&self, csr_pem: &str, worker_id: &str, name: &str) -> Result<(String, i64), String> {
        let ca = self.ca.as_ref().ok_or_else(|| NO_CA.to_string())?;
        if csr_pem.len() > MAX_CSR {
            return Err(format!("a CSR is at most {MAX_CSR} bytes"));
        }
        ca.sign_worker(csr_pem, worker_id, name, self.cert_lifetime)
            .map_err(|e| e.to_string())
    }
}

/// Largest CSR accepted (a P-256 one is under 1 KiB; RSA-4096 about 2).
pub const MAX_CSR: usize = 16 * 1024;

pub const NO_CA: &str = "this coordinator has no cluster CA (start it with --ca-cert/--ca-key, or TLS and --state-dir)";
