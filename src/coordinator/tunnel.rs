//! Admitting a worker's tunnel and running the HTTP/2 client on it (the
//! wire format is [`crate::tunnel`]'s; the worker's end is `worker::tunnel`).

use crate::proto::TunnelChunk;
use crate::registry::Registry;
use crate::tunnel::pipe::pipe;
use crate::tunnel::{RESUME_TOKEN_HEADER, WORKER_ID_HEADER};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Status, Streaming};
use tracing::{debug, warn};

pub type TunnelStream = Pin<Box<dyn Stream<Item = Result<TunnelChunk, Status>> + Send>>;

/// Checks the call belongs to a live session and starts the tunnel.
/// (The join token was checked by `control::Gate`, before any handler.)
/// `certified`: the worker id the caller's client certificate names; a
/// tunnel for any other worker is refused, whatever token comes with it.
pub fn admit(
    registry: Arc<Registry>,
    request: Request<Streaming<TunnelChunk>>,
    certified: Option<&str>,
) -> Result<TunnelStream, Status> {
    let md = request.metadata();
    let get = |k: &str| md.get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
    let (Some(worker_id), Some(token)) = (get(WORKER_ID_HEADER), get(RESUME_TOKEN_HEADER)) else {
        return Err(Status::invalid_argument(format!(
            "a tunnel needs `{WORKER_ID_HEADER}` and `{RESUME_TOKEN_HEADER}` metadata"
        )));
    };
    if let Some(c) = certified.filter(|c| *c != worker_id) {
        return Err(Status::permission_denied(format!(
            "the client certificate names worker {c}; this tunnel claims worker {}",
            worker_id.chars().take(64).collect::<String>()
        )));
    }
    let generation = registry
        .verify_tunnel(&worker_id, &token)
        .ok_or_else(|| Status::permission_denied("no live session for this worker id and token"))?;
    let (tx, rx) = mpsc::channel::<TunnelChunk>(64);
    let io = TokioIo::new(pipe(request.into_inner(), tx));
    tokio::spawn(async move {
        let handshake = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .initial_stream_window_size(crate::tunnel::STREAM_WINDOW)
            .initial_connection_window_size(crate::tunnel::CONNECTION_WINDOW)
            .max_concurrent_reset_streams(1024)
            .max_header_list_size(crate::tunnel::MAX_HEADER_LIST)
            .handshake::<_, axum::body::Body>(io)
            .await;
        let (sender, conn) = match handshake {
            Ok(h) => h,
            Err(e) => {
                warn!(worker_id = %worker_id, error = %e, "tunnel handshake failed");
                return;
            }
        };
        if !registry.attach_tunnel(&worker_id, generation, sender) {
            debug!(worker_id = %worker_id, "tunnel for a session that has ended");
            return;
        }
        if let Err(e) = conn.await {
            debug!(worker_id = %worker_id, error = %e, "tunnel connection ended");
        }
        registry.detach_tunnel(&worker_id, generation);
    });
    Ok(Box::pin(ReceiverStream::new(rx).map(Ok)))
}
