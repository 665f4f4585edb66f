//! The fast backend: HTTP/1.1 with keep-alive, one thread, `/health` and a
//! fixed body everywhere else. It exits when its stdin closes (the bench
//! went away), so it never outlives the run.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::process::ExitCode;
use tokio::io::AsyncReadExt;

/// Set (to a listen address) when this executable runs as the backend.
pub const ENV: &str = "EDGEPLANE_PROXY_BENCH_BACKEND";
/// What the backend answers on every path but `/health`.
pub const BODY: &[u8] = b"edgeplane proxy bench: a small fixed body, 64 bytes long.......\n";

pub fn run(addr: &str) -> ExitCode {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("backend: cannot listen on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        };
        tokio::spawn(async {
            let mut sink = Vec::new();
            let _ = tokio::io::stdin().read_to_end(&mut sink).await;
            std::process::exit(0);
        });
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let body = if req.uri().path() == "/health" {
                        Bytes::from_static(b"ok\n")
                    } else {
                        Bytes::from_static(BODY)
                    };
                    let mut r = Response::new(Full::new(body));
                    r.headers_mut()
                        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
                    Ok::<_, Infallible>(r)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}
