//! Serving an exposition over HTTP: the response (`Content-Type` of the
//! Prometheus text format), and a listener of its own that serves only
//! `/metrics` (a coordinator's or an agent's `--metrics-listen`).

use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// `text` as a `/metrics` answer.
pub fn response(text: String) -> Response {
    ([(axum::http::header::CONTENT_TYPE, super::CONTENT_TYPE)], text).into_response()
}

/// Serves `GET /metrics` (what `encode` gives at each scrape) on `listener`
/// until `shutdown`, without any credential: for a listener an operator
/// put on a private address.
pub async fn apart(
    listener: tokio::net::TcpListener,
    encode: Arc<dyn Fn() -> String + Send + Sync>,
    shutdown: CancellationToken,
) {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let encode = encode.clone();
            async move { response(encode()) }
        }),
    );
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    {
        tracing::warn!(error = %e, "the metrics listener stopped");
    }
}
