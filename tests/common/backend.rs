//! Real backend servers for routing tests: an HTTP app and a gRPC notes
//! service, each on 127.0.0.1:0, that report which replica answered.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use edgeplane::proto::notes::{
    notes_server::{Notes, NotesServer},
    ConvertChunk, ConvertReply, ConvertRequest,
};
use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct BackendState {
    pub name: String,
    /// `/health` answers 200 only while this is true.
    pub ready: Arc<AtomicBool>,
    /// Requests served, `/health` excluded.
    pub hits: Arc<AtomicUsize>,
    /// `/stream` sends its second chunk only after this is notified.
    pub release: Arc<Notify>,
}

pub struct Backend {
    pub addr: SocketAddr,
    pub url: String,
    pub state: BackendState,
    pub stop: CancellationToken,
}

impl Backend {
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    pub fn set_ready(&self, ready: bool) {
        self.state.ready.store(ready, Ordering::SeqCst);
    }
}

async fn health(State(s): State<BackendState>) -> StatusCode {
    if s.ready.load(Ordering::SeqCst) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// Echoes what arrived: method, path, query, body and forwarding headers.
async fn echo(State(s): State<BackendState>, req: Request) -> Response {
    s.hits.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let h = |n: &str| {
        parts
            .headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    Json(serde_json::json!({
        "backend": s.name,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query().unwrap_or(""),
        "body": String::from_utf8_lossy(&body),
        "x_forwarded_for": h("x-forwarded-for"),
        "x_forwarded_host": h("x-forwarded-host"),
        "x_forwarded_proto": h("x-forwarded-proto"),
        "x_request_id": h("x-request-id"),
        "connection": h("connection"),
        // Headers only coordinators may see: a replica must never get them.
        "peer_headers": parts
            .headers
            .keys()
            .filter(|k| k.as_str().starts_with("x-edgeplane-peer"))
            .map(|k| k.as_str().to_string())
            .collect::<Vec<_>>(),
    }))
    .into_response()
}

/// The notes service's JSON reply, shaped like the older fleet's.
async fn convert(State(s): State<BackendState>, Json(v): Json<serde_json::Value>) -> Response {
    s.hits.fetch_add(1, Ordering::SeqCst);
    let notes = v["notes"].as_str().unwrap_or("").to_string();
    Json(serde_json::json!({
        "matters_discussed": [notes.clone()],
        "our_actions": [],
        "full_text": notes,
        "client_name": v["client_name"],
        "served_by": s.name,
    }))
    .into_response()
}

/// Two chunks; the second waits for the test, proving the first was not held back.
async fn stream(State(s): State<BackendState>) -> Response {
    s.hits.fetch_add(1, Ordering::SeqCst);
    let release = s.release.clone();
    let chunks = async_chunks(release);
    Body::from_stream(chunks).into_response()
}

fn async_chunks(release: Arc<Notify>) -> impl futures_core::Stream<Item = Result<Bytes, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::spawn(async move {
        let _ = tx.send(Ok(Bytes::from_static(b"first\n"))).await;
        release.notified().await;
        let _ = tx.send(Ok(Bytes::from_static(b"second\n"))).await;
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Never answers (until the client gives up).
async fn hang(State(s): State<BackendState>) -> Response {
    s.hits.fetch_add(1, Ordering::SeqCst);
    std::future::pending::<()>().await;
    unreachable!()
}

/// 32 MiB in 64 KiB chunks, produced only as fast as the client reads.
async fn big(State(s): State<BackendState>) -> Response {
    s.hits.fetch_add(1, Ordering::SeqCst);
    let chunk = Bytes::from(vec![0u8; 64 * 1024]);
    let chunks = futures_util::stream::iter((0..512).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    Body::from_stream(chunks).into_response()
}

/// Counts the bytes of a (large, streamed) upload.
async fn upload(State(s): State<BackendState>, body: Body) -> Response {
    s.hits.fetch_add(1, Ordering::SeqCst);
    let mut n = 0usize;
    let mut body = body.into_data_stream();
    use futures_util::StreamExt;
    while let Some(chunk) = body.next().await {
        n += chunk.map(|c| c.len()).unwrap_or(0);
    }
    Json(serde_json::json!({ "bytes": n, "backend": s.name })).into_response()
}

struct NotesSvc(BackendState);

#[tonic::async_trait]
impl Notes for NotesSvc {
    async fn convert(
        &self,
        req: tonic::Request<ConvertRequest>,
    ) -> Result<tonic::Response<ConvertReply>, tonic::Status> {
        self.0.hits.fetch_add(1, Ordering::SeqCst);
        let r = req.into_inner();
        Ok(tonic::Response::new(ConvertReply {
            matters_discussed: vec![r.notes.clone()],
            our_actions: vec![],
            full_text: r.notes,
            served_by: self.0.name.clone(),
        }))
    }

    type ConvertStreamStream = tokio_stream::wrappers::ReceiverStream<Result<ConvertChunk, tonic::Status>>;

    async fn convert_stream(
        &self,
        req: tonic::Request<ConvertRequest>,
    ) -> Result<tonic::Response<Self::ConvertStreamStream>, tonic::Status> {
        self.0.hits.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let name = self.0.name.clone();
        let lines: Vec<String> = req.into_inner().notes.lines().map(str::to_string).collect();
        tokio::spawn(async move {
            for line in lines {
                let _ = tx
                    .send(Ok(ConvertChunk {
                        line,
                        served_by: name.clone(),
                    }))
                    .await;
            }
            let _ = tx.send(Err(tonic::Status::data_loss("trailer from the backend"))).await;
        });
        Ok(tonic::Response::new(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }
}

/// Starts a backend serving HTTP (and the notes gRPC service) on one port.
pub async fn start(name: &str) -> Backend {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    start_on(listener, name)
}

pub fn start_on(listener: tokio::net::TcpListener, name: &str) -> Backend {
    let addr = listener.local_addr().unwrap();
    let state = BackendState {
        name: name.to_string(),
        ready: Arc::new(AtomicBool::new(true)),
        hits: Arc::new(AtomicUsize::new(0)),
        release: Arc::new(Notify::new()),
    };
    let grpc = tonic::service::Routes::new(NotesServer::new(NotesSvc(state.clone()))).into_axum_router();
    let app = Router::new()
        .route("/health", get(health))
        .route("/convert", post(convert))
        .route("/stream", get(stream))
        .route("/upload", post(upload))
        .route("/big", get(big))
        .route("/hang", get(hang))
        .route("/echo", any(echo))
        .route("/echo/{*rest}", any(echo))
        .with_state(state.clone())
        .merge(grpc);
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(s.cancelled_owned())
            .await
            .unwrap();
    });
    Backend {
        addr,
        url: format!("http://{addr}"),
        state,
        stop,
    }
}
