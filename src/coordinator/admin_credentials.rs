//! The Admin API's credential calls (revoke a worker, join tokens) and the
//! interceptor that gives every Admin call its scope.

use super::security::Security;
use crate::auth::AdminAuth;
use crate::credentials::TokenView;
use crate::proto::{CreateJoinTokenRequest, CreateJoinTokenResponse, JoinToken, RevokeWorkerResponse};
use crate::registry::{LookupError, Registry};
use std::time::Duration;
use tonic::{Request, Status};
use tracing::warn;

/// The Admin server's interceptor: the request's scope from its bearer
/// token or admin certificate, put in its extensions for the handler.
pub fn interceptor(auth: AdminAuth) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |mut req: Request<()>| {
        let peer = req.extensions().get::<crate::tls::PeerInfo>();
        let scope = auth
            .scope_of(req.metadata().as_ref(), peer)
            .map_err(|e| Status::unauthenticated(format!("admin token required: {e}")))?;
        req.extensions_mut().insert(scope);
        Ok(req)
    }
}

/// Adds the worker to the revocation list (written down first), then
/// closes its live session and removes its record.
pub async fn revoke_worker(
    registry: &Registry,
    security: &Security,
    worker: &str,
) -> Result<RevokeWorkerResponse, Status> {
    let id = match registry.get(worker) {
        Ok(view) => view.worker_id,
        // A worker that is gone (or never connected here) can be revoked
        // by its id: its certificate is refused when it comes back.
        Err(LookupError::NotFound(_)) if crate::registry::is_worker_id(worker) => worker.to_string(),
        Err(e) => return Err(lookup_status(e)),
    };
    let now = crate::tls::unix_now();
    security
        .revoked
        .revoke(&id, now)
        .map_err(|e| Status::internal(format!("could not record the revocation: {e}")))?;
    let session_closed = match registry.revoke(&id, REVOKED) {
        Ok((_, live)) => live,
        Err(_) => false,
    };
    warn!(worker_id = %id, session_closed, "worker revoked");
    // In a cluster, every other coordinator learns it through etcd (and
    // the one holding the worker's session closes it).
    if let Some(member) = security.cluster.get() {
        crate::cluster::revocations::publish(member, &id, now).await.map_err(|e| {
            Status::unavailable(format!(
                "worker {id} is revoked on this coordinator, but the revocation is not in etcd yet ({e}); other coordinators still accept it: run the revocation again"
            ))
        })?;
    }
    Ok(RevokeWorkerResponse {
        worker_id: id,
        session_closed,
    })
}

/// Why a revoked worker's session ended, as it is told.
pub const REVOKED: &str = "revoked by an operator";

/// A revocation made on another coordinator, learnt through etcd.
pub fn learn_revocation(registry: &Registry, security: &Security, worker_id: &str, at_unix: i64) {
    security.revoked.learn(worker_id, at_unix);
    if let Ok((_, true)) = registry.revoke(worker_id, REVOKED) {
        warn!(
            worker_id,
            "worker revoked on another coordinator; its session here is closed"
        );
    }
}

/// A failed lookup as a gRPC status.
pub fn lookup_status(e: LookupError) -> Status {
    match e {
        LookupError::NotFound(_) => Status::not_found(e.to_string()),
        LookupError::Ambiguous(_) => Status::failed_precondition(e.to_string()),
    }
}

pub fn create_token(security: &Security, r: &CreateJoinTokenRequest) -> Result<CreateJoinTokenResponse, Status> {
    let ttl = (r.ttl_seconds > 0).then(|| Duration::from_secs(r.ttl_seconds));
    let uses = (r.uses > 0).then_some(r.uses);
    let (view, secret) = security
        .tokens
        .create(ttl, &r.name_pattern, uses, crate::tls::unix_now())
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(CreateJoinTokenResponse {
        token: Some(token_proto(&view)),
        secret,
    })
}

fn ts(seconds: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds, nanos: 0 }
}

pub fn token_proto(v: &TokenView) -> JoinToken {
    JoinToken {
        id: v.id.clone(),
        name_pattern: v.name_pattern.clone(),
        uses_left: v.uses_left.unwrap_or(0),
        uses_limited: v.uses_left.is_some(),
        expires_at: v.expires_at_unix.map(ts),
        created_at: Some(ts(v.created_at_unix)),
        revoked: v.revoked,
    }
}
