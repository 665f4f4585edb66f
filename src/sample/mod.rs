//! `edgeplane sample-service`: a stand-in for a model-serving service, for
//! demos and tests. It takes `--load-time` to become ready (as a model
//! load would), answering its readiness checks (`GET /health`, and gRPC
//! health for `""` and `notes.v1.Notes`) only afterwards; then it serves the
//! older notes service's `POST /convert` and the `notes.v1.Notes` gRPC API.

mod notes;
mod tls;

use crate::duration::parse_duration;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tracing::info;

#[derive(Debug, Clone, clap::Args)]
pub struct SampleConfig {
    /// Port to listen on (all interfaces).
    #[arg(long, env = "PORT", default_value_t = 8100)]
    pub port: u16,
    /// Time before the service is ready (a stand-in for loading a model).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub load_time: Duration,
    /// The service name it reports.
    #[arg(long, default_value = "notes-coa")]
    pub name: String,
    /// Address to bind (default all interfaces).
    #[arg(long, default_value = "0.0.0.0")]
    pub bind: std::net::IpAddr,
    /// PEM certificate to serve HTTPS (and gRPC over TLS) with.
    #[arg(long = "tls-cert", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long = "tls-key", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
}

#[derive(Clone)]
struct AppState {
    name: Arc<str>,
    ready: Arc<AtomicBool>,
}

async fn health(State(s): State<AppState>) -> Response {
    if s.ready.load(Ordering::Relaxed) {
        (
            StatusCode::OK,
            Json(serde_json::json!({ "status": "ready", "service": &*s.name })),
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "loading", "service": &*s.name })),
        )
            .into_response()
    }
}

#[derive(serde::Deserialize)]
struct ConvertBody {
    #[serde(default)]
    notes: String,
    #[serde(default)]
    client_name: String,
}

async fn convert(
    State(s): State<AppState>,
    body: Result<Json<ConvertBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if !s.ready.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "error": "loading" })),
        )
            .into_response();
    }
    let Json(b) = match body {
        Ok(b) => b,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({ "error": "bad_request", "message": e.body_text() })),
            )
                .into_response()
        }
    };
    Json(notes::convert_json(&b.notes, &b.client_name, &s.name)).into_response()
}

/// Serves until `shutdown`; `on_ready` fires once the load time has passed.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: SampleConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let ready = Arc::new(AtomicBool::new(false));
    let state = AppState {
        name: config.name.clone().into(),
        ready: ready.clone(),
    };
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    for svc in ["", notes::GRPC_SERVICE] {
        health_reporter.set_service_status(svc, ServingStatus::NotServing).await;
    }
    let grpc = tonic::service::Routes::new(health_service)
        .add_service(crate::proto::notes::notes_server::NotesServer::new(
            notes::NotesService::new(config.name.clone(), ready.clone()),
        ))
        .into_axum_router();
    let app = Router::new()
        .route("/health", get(health))
        .route("/convert", post(convert))
        .with_state(state)
        .merge(grpc);
    let load_time = config.load_time;
    let name = config.name.clone();
    tokio::spawn(async move {
        info!(service = %name, ?load_time, "loading");
        tokio::time::sleep(load_time).await;
        ready.store(true, Ordering::Relaxed);
        for svc in ["", notes::GRPC_SERVICE] {
            health_reporter.set_service_status(svc, ServingStatus::Serving).await;
        }
        info!(service = %name, "ready");
    });
    let listen = listener.local_addr()?;
    if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
        let tls = crate::tls::ServerTls::new(cert, key, None).map_err(std::io::Error::other)?;
        info!(service = %config.name, %listen, "sample service listening (TLS)");
        let listener = tls::TlsListener { inner: listener, tls };
        return axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
    }
    info!(service = %config.name, %listen, "sample service listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// Binds `bind:port` and serves.
pub async fn run(config: SampleConfig, shutdown: CancellationToken) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(config.bind, config.port)).await?;
    serve(listener, config, shutdown).await
}
