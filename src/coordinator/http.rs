//! The HTTP side of the coordinator's one port: `/health` for load
//! balancers and people, `/api/admin/*` as JSON for curl and jq, the
//! fleet's event stream (`/api/admin/events`) and the dashboard (`/`).

use crate::auth::{AdminAuth, Scope};
use crate::json::JsonWorker;
use crate::registry::{LookupError, Registry, WorkerState};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct HttpState {
    pub registry: Arc<Registry>,
    pub catalog: Arc<crate::catalog::Catalog>,
    pub admin: AdminAuth,
    pub closing: CancellationToken,
    /// This coordinator's cluster membership, with `--etcd`.
    pub member: Option<Arc<crate::cluster::Member>>,
    pub metrics: Arc<crate::metrics::CoordinatorMetrics>,
}

/// Called inside the runtime: it starts the event hub's task, which
/// follows the registry until `state.closing`.
pub fn router(state: HttpState) -> Router {
    let events = super::event_stream::EventStreams::new(
        super::events::EventHub::start(state.registry.clone(), state.closing.clone()),
        state.closing.clone(),
    );
    let dashboard = super::dashboard::Dashboard {
        admin: state.admin.clone(),
    };
    // Every `/api/admin/` route is behind a credential, by one layer per
    // scope: a route added here cannot forget the check.
    let read = Router::new()
        .route("/api/admin/workers", get(list_workers))
        .route("/api/admin/workers/{worker}", get(get_worker))
        .route("/api/admin/services", get(services))
        .route("/api/admin/gaps", get(gaps))
        .route("/api/admin/events", get(super::event_stream::events).with_state(events))
        // Behind the read scope when a token is set (`--metrics-listen`
        // serves it apart, without one).
        .route("/metrics", get(metrics))
        .route_layer(axum::middleware::from_fn_with_state(
            (state.clone(), Scope::Read),
            require,
        ));
    let admin = Router::new()
        .route("/api/admin/workers/{worker}/drain", post(drain_worker))
        .route_layer(axum::middleware::from_fn_with_state(
            (state.clone(), Scope::Admin),
            require,
        ));
    Router::new()
        .route("/health", get(health))
        // The page holds no data: it asks for a token, then reads the APIs.
        .route("/", get(super::dashboard::page).with_state(dashboard.clone()))
        .route("/ui", get(super::dashboard::page).with_state(dashboard))
        .merge(read)
        .merge(admin)
        .with_state(state)
}

/// A JSON error with a stable `error` code a script can match on.
pub fn error(status: StatusCode, code: &str, message: impl std::fmt::Display) -> Response {
    crate::errors::response(status, code, message)
}

/// Refuses a request without a credential of `scope` or above.
async fn require(
    State((state, scope)): State<(HttpState, Scope)>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match check(&state, &req, scope) {
        None => next.run(req).await,
        Some(refusal) => refusal,
    }
}

/// The refusal for a request whose credential is below `scope`, if any.
fn check(state: &HttpState, req: &axum::extract::Request, scope: Scope) -> Option<Response> {
    let peer = req.extensions().get::<crate::tls::PeerInfo>();
    match state.admin.scope_of(req.headers(), peer) {
        Ok(have) if have >= scope => None,
        Ok(have) => Some(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "this call needs the {} scope; the credential presented has the {} scope",
                scope.as_str(),
                have.as_str()
            ),
        )),
        Err(e) => Some(error(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            format!("admin token required: {e}"),
        )),
    }
}

fn lookup_error(e: LookupError) -> Response {
    match e {
        LookupError::NotFound(_) => error(StatusCode::NOT_FOUND, "worker_not_found", e),
        LookupError::Ambiguous(_) => error(StatusCode::CONFLICT, "ambiguous_worker", e),
    }
}

/// The Prometheus text exposition.
async fn metrics(State(state): State<HttpState>) -> Response {
    crate::metrics::serve::response(state.metrics.encode())
}

async fn health(State(state): State<HttpState>) -> Response {
    let counts = state.registry.counts();
    let mut workers = serde_json::Map::new();
    let mut total = 0;
    for st in [
        WorkerState::Healthy,
        WorkerState::Degraded,
        WorkerState::Disconnected,
        WorkerState::Draining,
    ] {
        let n = counts.get(&st).copied().unwrap_or(0);
        total += n;
        workers.insert(st.as_str().into(), n.into());
    }
    workers.insert("total".into(), total.into());
    let (code, status) = if state.closing.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting_down")
    } else {
        (StatusCode::OK, "serving")
    };
    let mut body = json!({ "status": status, "workers": workers });
    if let Some(m) = &state.member {
        body["cluster"] = cluster_health(m);
    }
    (code, Json(body)).into_response()
}

/// This coordinator's place in its cluster: its id, its etcd link, and the
/// coordinators it sees. A coordinator cut off from etcd still answers 200:
/// it goes on serving the workers it holds.
fn cluster_health(m: &crate::cluster::Member) -> serde_json::Value {
    let link = m.link().borrow().clone();
    let peers = m.peers().borrow().clone();
    let mut v = json!({
        "coordinator_id": m.id(),
        "peer": m.info().peer,
        "etcd": if link.is_up() { "up" } else { "down" },
        "role": m.role().borrow().as_str(),
        "coordinators": peers.keys().collect::<Vec<_>>(),
    });
    if let crate::cluster::Link::Down { since_unix_ms, error } = link {
        v["etcd_error"] = error.into();
        v["etcd_down_since_unix_ms"] = since_unix_ms.into();
    }
    v
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
}

async fn list_workers(State(state): State<HttpState>, Query(q): Query<ListQuery>) -> Response {
    let filter = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) => match WorkerState::parse(s) {
            Some(st) => Some(st),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_status",
                    format!("unknown status `{s}`; use healthy, degraded, disconnected or draining"),
                )
            }
        },
    };
    let list: Vec<JsonWorker> = state
        .registry
        .snapshot(filter)
        .iter()
        .map(|w| JsonWorker::from(&w.to_proto()))
        .collect();
    Json(list).into_response()
}

async fn get_worker(State(state): State<HttpState>, Path(worker): Path<String>) -> Response {
    match state.registry.get(&worker) {
        Ok(w) => Json(JsonWorker::from(&w.to_proto())).into_response(),
        Err(e) => lookup_error(e),
    }
}

async fn drain_worker(State(state): State<HttpState>, Path(worker): Path<String>) -> Response {
    match state.registry.drain(&worker, "drained over HTTP") {
        Ok(w) => Json(JsonWorker::from(&w.to_proto())).into_response(),
        Err(e) => lookup_error(e),
    }
}

async fn services(State(state): State<HttpState>) -> Response {
    let table = state.registry.routes().borrow().clone();
    let workers = state.registry.snapshot(None);
    Json(super::catalog_views::services(&state.catalog, &table, &workers)).into_response()
}

async fn gaps(State(state): State<HttpState>) -> Response {
    let table = state.registry.routes().borrow().clone();
    let workers = state.registry.snapshot(None);
    Json(super::catalog_views::gaps(&state.catalog, &table, &workers)).into_response()
}
