//! How the worker reaches one coordinator: the endpoint for a target,
//! with TLS for an `https://` URL (a private CA or the system roots, and
//! the worker's own certificate while it is valid), and getting that
//! certificate: `Enrollment/Join` with the join token and a CSR.

use super::config::WorkerConfig;
use super::credentials::Credentials;
use super::targets::Target;
use crate::proto::{enrollment_client::EnrollmentClient, JoinRequest};
use crate::tls::client::ClientTls;
use std::sync::Arc;
use tonic::transport::Endpoint;

/// Everything needed to open a connection to one target; cheap to clone,
/// so the tunnel can redial with the certificate current at the time.
#[derive(Clone)]
pub struct Dialer {
    pub target: Target,
    /// PEM of `--ca-cert`; the system roots when `None`.
    pub ca_pem: Option<String>,
    pub credentials: Arc<Credentials>,
    pub config: Arc<WorkerConfig>,
}

/// What joining came to.
pub enum Joined {
    /// A certificate is stored.
    Certified,
    /// The coordinator issues no certificates (no CA): go on with the
    /// join token over server-authenticated TLS.
    NoCa,
}

impl Dialer {
    pub fn tls(&self) -> bool {
        self.target.dial.starts_with("https://")
    }

    /// The endpoint, with the certificate valid now (if any).
    pub fn endpoint(&self) -> Result<Endpoint, String> {
        self.build(true)
    }

    fn build(&self, with_identity: bool) -> Result<Endpoint, String> {
        let t = &self.target;
        let cfg = &self.config;
        let mut e =
            Endpoint::from_shared(t.dial.clone()).map_err(|e| format!("bad coordinator URL `{}`: {e}", t.dial))?;
        if t.dial != t.url {
            // One address of a name: the request still names the name.
            if let Ok(origin) = t.url.parse() {
                e = e.origin(origin);
            }
        }
        if self.tls() {
            let host = t
                .url
                .parse::<http::Uri>()
                .ok()
                .and_then(|u| u.host().map(str::to_string))
                .unwrap_or_default();
            let tls = ClientTls {
                ca_pem: self.ca_pem.clone(),
                identity: with_identity
                    .then(|| self.credentials.usable(crate::tls::unix_now()))
                    .flatten(),
            };
            e = e.tls_config(tls.tonic(&host)).map_err(|e| format!("TLS: {e}"))?;
        }
        Ok(e.connect_timeout(cfg.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(cfg.http2_keepalive_interval)
            .keep_alive_timeout(cfg.http2_keepalive_timeout)
            .keep_alive_while_idle(true))
    }

    /// Whether this dial should join first: TLS, and no valid certificate.
    pub fn needs_join(&self) -> bool {
        self.tls() && self.credentials.usable(crate::tls::unix_now()).is_none()
    }

    /// Joins: a CSR for a new key, the join token, a certificate back.
    pub async fn join(&self, name: &str, instance_id: &str) -> Result<Joined, String> {
        let channel = self
            .build(false)?
            .connect()
            .await
            .map_err(|e| format!("cannot reach {}: {}", self.target.url, crate::errors::chain(&e)))?;
        let csr = self.credentials.request(name).map_err(|e| e.to_string())?;
        let mut req = tonic::Request::new(JoinRequest {
            name: name.to_string(),
            csr_pem: csr,
            instance_id: instance_id.to_string(),
            previous_worker_id: self.credentials.worker_id().unwrap_or_default(),
        });
        if let Some(t) = self.config.join_token.as_deref().filter(|t| !t.is_empty()) {
            let v = crate::auth::bearer(t)
                .parse()
                .map_err(|_| "join token has characters that cannot go in a header".to_string())?;
            req.metadata_mut().insert("authorization", v);
        }
        let mut client = EnrollmentClient::new(channel);
        match tokio::time::timeout(self.config.connect_timeout, client.join(req)).await {
            Ok(Ok(r)) => {
                let r = r.into_inner();
                self.credentials
                    .accept(&r.certificate_pem)
                    .map_err(|e| format!("could not store the certificate: {e}"))?;
                tracing::info!(worker = %name, worker_id = %r.worker_id, "joined: certificate stored");
                Ok(Joined::Certified)
            }
            Ok(Err(s)) if matches!(s.code(), tonic::Code::FailedPrecondition | tonic::Code::Unimplemented) => {
                tracing::warn!(worker = %name, reason = s.message(), "the coordinator issues no certificates; going on with the join token");
                Ok(Joined::NoCa)
            }
            Ok(Err(s)) => Err(format!("join refused: {:?}: {}", s.code(), s.message())),
            Err(_) => Err("no answer to Join".into()),
        }
    }
}
