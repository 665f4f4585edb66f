//! The worker's end of the tunnel, on its own: what it answers when the
//! local service it is asked for cannot be reached. The message must carry
//! the cause ("Connection refused"), not only "client error (Connect)".

mod common;

use common::free_port;
use edgeplane::worker::tunnel::{Forwarder, LocalServices};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// Serves a forwarder over HTTP/2 on a loopback socket (as the tunnel's
/// pipe would) and returns a client connected to it.
async fn forwarder_client(local: LocalServices) -> hyper::client::conn::http2::SendRequest<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let forwarder = Forwarder::new(local, edgeplane::upstream::ServiceTls::default());
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let svc = hyper::service::service_fn(move |req| {
            let f = forwarder.clone();
            async move { Ok::<_, std::convert::Infallible>(f.forward(req).await) }
        });
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(tcp), svc)
            .await;
    });
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

#[tokio::test]
async fn a_refused_grpc_service_is_reported_with_the_cause() {
    let local = LocalServices::default();
    // Nothing listens there.
    let url = format!("http://127.0.0.1:{}", free_port());
    local.set_assigned([("notes-coa".to_string(), url)].into());
    let mut client = forwarder_client(local).await;
    let req = http::Request::post("http://tunnel/notes.v1.Notes/Convert")
        .header(edgeplane::tunnel::SERVICE_HEADER, "notes-coa")
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .body(String::new())
        .unwrap();
    let resp = client.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(
        resp.headers()
            .get(edgeplane::tunnel::FORWARD_ERROR_HEADER)
            .map(|v| v.to_str().unwrap()),
        Some("connect")
    );
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"], "upstream_failed");
    let message = v["message"].as_str().unwrap();
    assert!(message.starts_with("notes-coa: "), "{message}");
    assert!(message.contains("Connection refused"), "the cause is kept: {message}");
}
