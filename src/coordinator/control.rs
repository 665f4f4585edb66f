//! `edgeplane.v1.WorkerControl`: admits Connect streams (join token, the
//! handshake pools, shutdown) and hands each to its own session task.

use super::session;
use super::shared::ControlShared;
use crate::proto::{worker_control_server::WorkerControl, CoordinatorMessage, TunnelChunk, WorkerMessage};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::warn;

/// Messages queued towards one worker before backpressure applies.
const OUTBOX: usize = 64;

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
        if shared.closing.is_cancelled() {
            return Err(Status::unavailable("coordinator is shutting down; reconnect shortly"));
        }
        if let Err(e) = shared.join.verify_headers(request.metadata().as_ref()) {
            warn!(
                peer_has_token = !matches!(e, crate::auth::AuthError::Missing),
                "refused a worker: bad join token"
            );
            return Err(Status::unauthenticated(format!("join token required: {e}")));
        }
        let peer = request.remote_addr().map(|a| a.ip());
        let permit = shared
            .handshakes
            .admit(peer)
            .map_err(|refused| Status::resource_exhausted(refused.to_string()))?;
        let (tx, rx) = mpsc::channel(OUTBOX);
        tokio::spawn(session::run(shared.clone(), request.into_inner(), tx, permit));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type TunnelStream = super::tunnel::TunnelStream;

    async fn tunnel(&self, request: Request<Streaming<TunnelChunk>>) -> Result<Response<Self::TunnelStream>, Status> {
        let shared = &self.shared;
        if shared.closing.is_cancelled() {
            return Err(Status::unavailable("coordinator is shutting down; reconnect shortly"));
        }
        if let Err(e) = shared.join.verify_headers(request.metadata().as_ref()) {
            return Err(Status::unauthenticated(format!("join token required: {e}")));
        }
        let stream = super::tunnel::admit(shared.registry.clone(), request)?;
        Ok(Response::new(stream))
    }
}
