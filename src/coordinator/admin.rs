//! `edgeplane.v1.Admin`: the operator's gRPC view of the fleet.

use super::admin_credentials::lookup_status;
use crate::auth::Scope;
use crate::proto::{
    admin_server::Admin, DrainWorkerRequest, EventKind, GetWorkerRequest, ListWorkersRequest, ListWorkersResponse,
    WatchWorkersRequest, Worker, WorkerEvent, WorkerStatus,
};
use crate::registry::{ChangeKind, Registry, WorkerState};
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

pub struct AdminService {
    registry: Arc<Registry>,
    catalog: Arc<crate::catalog::Catalog>,
    closing: CancellationToken,
    security: Arc<super::security::Security>,
}

impl AdminService {
    pub fn new(
        registry: Arc<Registry>,
        catalog: Arc<crate::catalog::Catalog>,
        closing: CancellationToken,
        security: Arc<super::security::Security>,
    ) -> Self {
        AdminService {
            registry,
            catalog,
            closing,
            security,
        }
    }
}

fn status_filter(raw: i32) -> Result<Option<WorkerState>, Status> {
    match WorkerStatus::try_from(raw) {
        Ok(WorkerStatus::Unspecified) => Ok(None),
        Ok(p) => WorkerState::from_proto(p)
            .map(Some)
            .ok_or_else(|| Status::invalid_argument("no worker is listed as REMOVED")),
        Err(_) => Err(Status::invalid_argument(format!("unknown worker status {raw}"))),
    }
}

/// Watch events buffered per client before backpressure.
const WATCH_BUFFER: usize = 256;

#[tonic::async_trait]
impl Admin for AdminService {
    async fn list_workers(
        &self,
        request: Request<ListWorkersRequest>,
    ) -> Result<Response<ListWorkersResponse>, Status> {
        need(&request, Scope::Read)?;
        let filter = status_filter(request.get_ref().status)?;
        let workers = self.registry.snapshot(filter).iter().map(|w| w.to_proto()).collect();
        Ok(Response::new(ListWorkersResponse { workers }))
    }

    async fn get_worker(&self, request: Request<GetWorkerRequest>) -> Result<Response<Worker>, Status> {
        need(&request, Scope::Read)?;
        let w = self.registry.get(&request.get_ref().worker).map_err(lookup_status)?;
        Ok(Response::new(w.to_proto()))
    }

    type WatchWorkersStream = ReceiverStream<Result<WorkerEvent, Status>>;

    async fn watch_workers(
        &self,
        request: Request<WatchWorkersRequest>,
    ) -> Result<Response<Self::WatchWorkersStream>, Status> {
        need(&request, Scope::Read)?;
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let registry = self.registry.clone();
        let closing = self.closing.clone();
        tokio::spawn(async move {
            let (snapshot, mut events) = registry.subscribe();
            if !send_snapshot(&tx, snapshot.iter().map(|w| w.to_proto())).await {
                return;
            }
            loop {
                let ev = tokio::select! {
                    ev = events.recv() => ev,
                    _ = tx.closed() => return,
                    _ = closing.cancelled() => return,
                };
                let ok = match ev {
                    Ok(ev) => {
                        let kind = match ev.kind {
                            ChangeKind::Added => EventKind::Added,
                            ChangeKind::Updated => EventKind::Updated,
                            ChangeKind::Removed => EventKind::Removed,
                        };
                        let mut worker = ev.worker.to_proto();
                        if ev.kind == ChangeKind::Removed {
                            worker.status = WorkerStatus::Removed as i32;
                        }
                        let e = WorkerEvent {
                            kind: kind as i32,
                            worker: Some(worker),
                            reason: ev.reason,
                        };
                        tx.send(Ok(e)).await.is_ok()
                    }
                    // Fell behind: start over from a fresh snapshot rather than
                    // leave the watcher with a silently wrong picture.
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let now = registry.snapshot(None);
                        send_snapshot(&tx, now.iter().map(|w| w.to_proto())).await
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if !ok {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn list_services(
        &self,
        request: Request<crate::proto::ListServicesRequest>,
    ) -> Result<Response<crate::proto::ListServicesResponse>, Status> {
        need(&request, Scope::Read)?;
        let table = self.registry.routes().borrow().clone();
        let workers = self.registry.snapshot(None);
        let services = super::catalog_views::services(&self.catalog, &table, &workers)
            .into_iter()
            .map(service_to_proto)
            .collect();
        Ok(Response::new(crate::proto::ListServicesResponse { services }))
    }

    async fn list_gaps(
        &self,
        request: Request<crate::proto::ListGapsRequest>,
    ) -> Result<Response<crate::proto::ListGapsResponse>, Status> {
        need(&request, Scope::Read)?;
        let table = self.registry.routes().borrow().clone();
        let workers = self.registry.snapshot(None);
        let gaps = super::catalog_views::gaps(&self.catalog, &table, &workers)
            .into_iter()
            .map(|g| crate::proto::Gap {
                service: g.service,
                status: g.status.into(),
                ready: g.ready as u32,
                providers: g.providers as u32,
                reason: g.reason.map(String::from),
                priority: g.priority,
            })
            .collect();
        Ok(Response::new(crate::proto::ListGapsResponse { gaps }))
    }

    async fn drain_worker(&self, request: Request<DrainWorkerRequest>) -> Result<Response<Worker>, Status> {
        need(&request, Scope::Admin)?;
        let r = request.get_ref();
        let w = self.registry.drain(&r.worker, &r.reason).map_err(lookup_status)?;
        Ok(Response::new(w.to_proto()))
    }

    async fn revoke_worker(
        &self,
        request: Request<crate::proto::RevokeWorkerRequest>,
    ) -> Result<Response<crate::proto::RevokeWorkerResponse>, Status> {
        need(&request, Scope::Admin)?;
        let r =
            super::admin_credentials::revoke_worker(&self.registry, &self.security, &request.get_ref().worker).await?;
        Ok(Response::new(r))
    }

    async fn create_join_token(
        &self,
        request: Request<crate::proto::CreateJoinTokenRequest>,
    ) -> Result<Response<crate::proto::CreateJoinTokenResponse>, Status> {
        need(&request, Scope::Admin)?;
        let r = super::admin_credentials::create_token(&self.security, request.get_ref())?;
        Ok(Response::new(r))
    }

    async fn list_join_tokens(
        &self,
        request: Request<crate::proto::ListJoinTokensRequest>,
    ) -> Result<Response<crate::proto::ListJoinTokensResponse>, Status> {
        need(&request, Scope::Admin)?;
        let tokens = self
            .security
            .tokens
            .list()
            .iter()
            .map(super::admin_credentials::token_proto)
            .collect();
        Ok(Response::new(crate::proto::ListJoinTokensResponse { tokens }))
    }

    async fn revoke_join_token(
        &self,
        request: Request<crate::proto::RevokeJoinTokenRequest>,
    ) -> Result<Response<crate::proto::JoinToken>, Status> {
        need(&request, Scope::Admin)?;
        let v = self
            .security
            .tokens
            .revoke(&request.get_ref().id)
            .map_err(|e| Status::not_found(e.to_string()))?;
        Ok(Response::new(super::admin_credentials::token_proto(&v)))
    }
}

/// Refuses a call whose credential's scope is below `scope`. The scope is
/// put in the request by the Admin server's interceptor (see
/// [`super::admin_credentials::interceptor`]); with none, nothing passes.
fn need<T>(request: &Request<T>, scope: Scope) -> Result<(), Status> {
    match request.extensions().get::<Scope>() {
        Some(have) if *have >= scope => Ok(()),
        Some(have) => Err(Status::permission_denied(format!(
            "this call needs the {} scope; the credential presented has the {} scope",
            scope.as_str(),
            have.as_str()
        ))),
        None => Err(Status::unauthenticated("admin credential required")),
    }
}

fn service_to_proto(s: super::catalog_views::ServiceInfo) -> crate::proto::Service {
    use crate::proto::{ServiceProvider, ServiceState};
    let state = |name: &str| {
        [
            ServiceState::Loading,
            ServiceState::Ready,
            ServiceState::Failed,
            ServiceState::Stopped,
        ]
        .into_iter()
        .find(|st| crate::registry::service_state_str(*st) == name)
        .unwrap_or(ServiceState::Unspecified)
    };
    crate::proto::Service {
        gap: super::catalog_views::gap_status(s.ready).into(),
        name: s.name,
        aliases: s.aliases,
        requires: s.requires,
        priority: s.priority.unwrap_or(0),
        port: s.port.map_or(0, u32::from),
        in_catalog: s.in_catalog,
        ready: s.ready as u32,
        providers: s
            .providers
            .into_iter()
            .map(|p| ServiceProvider {
                worker_status: WorkerState::parse(p.worker_status).map_or(0, |w| w.to_proto() as i32),
                state: state(p.state) as i32,
                worker_id: p.worker_id,
                worker: p.worker,
                message: p.message,
                routable: p.routable,
            })
            .collect(),
    }
}

async fn send_snapshot(tx: &mpsc::Sender<Result<WorkerEvent, Status>>, workers: impl Iterator<Item = Worker>) -> bool {
    for w in workers {
        let e = WorkerEvent {
            kind: EventKind::Existing as i32,
            worker: Some(w),
            reason: String::new(),
        };
        if tx.send(Ok(e)).await.is_err() {
            return false;
        }
    }
    let synced = WorkerEvent {
        kind: EventKind::Synced as i32,
        worker: None,
        reason: String::new(),
    };
    tx.send(Ok(synced)).await.is_ok()
}
