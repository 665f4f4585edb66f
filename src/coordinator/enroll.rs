//! `edgeplane.v1.Enrollment/Join`: a join token and a CSR in, a client
//! certificate naming the worker's id out. The one worker call that needs
//! no client certificate, so it is its own service with its own checks:
//! over TLS only (the token and the certificate must not cross in the
//! clear), the join token (static or handed out, spent here), a bounded
//! request, and an id that is this machine's.

use super::security::Security;
use crate::credentials::JoinRefusal;
use crate::proto::{enrollment_server::Enrollment, JoinRequest, JoinResponse};
use crate::registry::Registry;
use std::sync::Arc;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

pub struct EnrollService {
    pub registry: Arc<Registry>,
    pub security: Arc<Security>,
}

#[tonic::async_trait]
impl Enrollment for EnrollService {
    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        let peer = request
            .extensions()
            .get::<crate::tls::PeerInfo>()
            .cloned()
            .unwrap_or_default();
        if !peer.tls {
            return Err(Status::failed_precondition(
                "join over TLS only: the join token and the certificate must not cross in the clear",
            ));
        }
        let ca = self
            .security
            .ca
            .as_ref()
            .ok_or_else(|| Status::failed_precondition(super::security::NO_CA))?;
        let auth = request.metadata().get("authorization").map(|v| v.as_bytes().to_vec());
        let r = request.into_inner();
        if !crate::registry::limits::check_worker_name(&r.name) {
            return Err(Status::invalid_argument(format!(
                "name must be 1 to {} printable characters",
                crate::registry::limits::MAX_NAME_LEN
            )));
        }
        let max = crate::registry::limits::MAX_ID_LEN;
        if r.instance_id.len() > max || r.previous_worker_id.len() > max {
            return Err(Status::invalid_argument(format!(
                "instance_id and previous_worker_id are at most {max} bytes"
            )));
        }
        if let Err(refusal) = self
            .security
            .tokens
            .admit(auth.as_deref(), &r.name, crate::tls::unix_now())
        {
            warn!(worker = %r.name, reason = %refusal, "refused a join");
            return Err(match refusal {
                JoinRefusal::Missing | JoinRefusal::Invalid => Status::unauthenticated(refusal.to_string()),
                _ => Status::permission_denied(refusal.to_string()),
            });
        }
        let prev = &r.previous_worker_id;
        let worker_id = if crate::registry::is_worker_id(prev)
            && !self.security.revoked.is_revoked(prev)
            && self.registry.rejoinable(prev, &r.instance_id)
        {
            prev.clone()
        } else {
            crate::registry::new_worker_id()
        };
        let (certificate_pem, not_after) = self
            .security
            .sign(&r.csr_pem, &worker_id, &r.name)
            .map_err(Status::invalid_argument)?;
        info!(worker = %r.name, %worker_id, "worker joined: certificate issued");
        Ok(Response::new(JoinResponse {
            worker_id,
            certificate_pem,
            ca_pem: ca.cert_pem().to_string(),
            not_after: Some(prost_types::Timestamp {
                seconds: not_after,
                nanos: 0,
            }),
        }))
    }
}
