//! `edgeplane.v1.WorkerControl`: admits Connect streams (the handshake
//! pools) and Tunnel streams, and hands each Connect to its own session
//! task. Every call first passes the one [`Gate`] (shutdown, join token).

use super::session;
use super::shared::ControlShared;
use crate::auth::{AuthError, Secret};
use crate::proto::{worker_control_server::WorkerControl, CoordinatorMessage, TunnelChunk, WorkerMessage};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::service::Interceptor;
use tonic::{Request, Response, Status, Streaming};
use tracing::warn;

/// Messages queued towards one worker before backpressure applies.
const OUTBOX: usize = 64;

/// The interceptor in front of the whole `WorkerControl` server, so that
/// no call (Connect, Tunnel, or one added later) can skip it: refused with
/// UNAVAILABLE while the coordinator shuts down (the worker reconnects
/// elsewhere or later), then with UNAUTHENTICATED without the join token.
///
/// A client certificate from the cluster CA stands in for the join token
/// (the worker spent one to get it): the call goes on with the worker id it
/// names ([`Certified`]), unless that worker was revoked. With
/// `--require-client-cert`, a call without one is refused.
#[derive(Clone)]
pub struct Gate {
    closing: CancellationToken,
    join: Secret,
    revoked: Arc<crate::credentials::Revocations>,
    require_client_cert: bool,
    metrics: Option<Arc<crate::metrics::FleetMetrics>>,
}

/// The worker id a call's verified client certificate names.
#[derive(Debug, Clone)]
pub struct Certified(pub String);

impl Certified {
    /// What the Gate put on `request`.
    fn of<T>(request: &Request<T>) -> Option<String> {
        request.extensions().get::<Certified>().map(|c| c.0.clone())
    }
}

/// What a call without a certificate is told under `--require-client-cert`.
pub const CERT_REQUIRED: &str =
    "a client certificate is required: join with a join token first (edgeplane.v1.Enrollment/Join)";

impl Gate {
    pub fn new(closing: CancellationToken, join: Secret) -> Self {
        Gate {
            closing,
            join,
            revoked: Default::default(),
            require_client_cert: false,
            metrics: None,
        }
    }

    /// Counts refusals into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::FleetMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn refused(&self, reason: &'static str, status: Status) -> Status {
        if let Some(m) = &self.metrics {
            m.refused(reason);
        }
        status
    }

    pub fn with_certificates(mut self, revoked: Arc<crate::credentials::Revocations>, require: bool) -> Self {
        self.revoked = revoked;
        self.require_client_cert = require;
        self
    }
}

impl Interceptor for Gate {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if self.closing.is_cancelled() {
            return Err(self.refused(
                "shutting_down",
                Status::unavailable("coordinator is shutting down; reconnect shortly"),
            ));
        }
        let peer = request.extensions().get::<crate::tls::PeerInfo>();
        if let Some(id) = peer.and_then(|p| p.certified_worker()).map(str::to_string) {
            if self.revoked.is_revoked(&id) {
                warn!(worker_id = %id, "refused a revoked worker's certificate");
                return Err(self.refused(
                    "revoked",
                    Status::permission_denied(format!(
                        "worker {id} was revoked: its certificate is no longer accepted"
                    )),
                ));
            }
            request.extensions_mut().insert(Certified(id));
            return Ok(request);
        }
        if self.require_client_cert {
            return Err(self.refused("no_certificate", Status::unauthenticated(CERT_REQUIRED)));
        }
        if let Err(e) = self.join.verify_headers(request.metadata().as_ref()) {
            warn!(
                peer_has_token = !matches!(e, AuthError::Missing),
                "refused a worker: bad join token"
            );
            return Err(self.refused(
                "bad_join_token",
                Status::unauthenticated(format!("join token required: {e}")),
            ));
        }
        Ok(request)
    }
}

#[derive(Clone)]
pub struct ControlService {
    shared: Arc<ControlShared>,
}

impl ControlService {
    pub fn new(shared: Arc<ControlShared>) -> Self {
        ControlService { shared }
    }
}

#[tonic::async_trait]
impl WorkerControl for ControlService {
    type ConnectStream = ReceiverStream<Result<CoordinatorMessage, Status>>;

    async fn connect(
        &self,
        request: Request<Streaming<WorkerMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let shared = &self.shared;
        let peer = request
            .extensions()
            .get::<crate::tls::PeerInfo>()
            .and_then(|p| p.addr)
            .map(|a| a.ip());
        let permit = shared.handshakes.admit(peer).map_err(|refused| {
            shared.metrics.refused("too_many_handshakes");
            Status::resource_exhausted(refused.to_string())
        })?;
        let certified = Certified::of(&request);
        let (tx, rx) = mpsc::channel(OUTBOX);
        tokio::spawn(session::run(
            shared.clone(),
            request.into_inner(),
            tx,
            permit,
            certified,
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type TunnelStream = super::tunnel::TunnelStream;

    async fn tunnel(&self, request: Request<Streaming<TunnelChunk>>) -> Result<Response<Self::TunnelStream>, Status> {
        let certified = Certified::of(&request);
        let stream = super::tunnel::admit(self.shared.registry.clone(), request, certified.as_deref())?;
        Ok(Response::new(stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(gate: &mut Gate, token: Option<&str>) -> Result<(), Status> {
        let mut req = Request::new(());
        if let Some(t) = token {
            req.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        gate.call(req).map(|_| ())
    }

    #[test]
    fn the_gate_refuses_while_closing_then_without_the_join_token() {
        let closing = CancellationToken::new();
        let mut gate = Gate::new(closing.clone(), Secret::new(Some("join")));
        assert!(call(&mut gate, Some("join")).is_ok());
        let missing = call(&mut gate, None).unwrap_err();
        assert_eq!(missing.code(), tonic::Code::Unauthenticated);
        assert_eq!(
            missing.message(),
            "join token required: missing bearer token in the `authorization` header"
        );
        let wrong = call(&mut gate, Some("nope")).unwrap_err();
        assert_eq!(wrong.message(), "join token required: invalid token");

        // Shutting down comes first, token or not.
        closing.cancel();
        for token in [Some("join"), None] {
            let st = call(&mut gate, token).unwrap_err();
            assert_eq!(st.code(), tonic::Code::Unavailable);
            assert_eq!(st.message(), "coordinator is shutting down; reconnect shortly");
        }
        let mut open = Gate::new(CancellationToken::new(), Secret::new(None));
        assert!(call(&mut open, None).is_ok(), "no join token configured: open");
    }
}
