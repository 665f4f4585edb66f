//! The coordinator's front door: HTTP/1 and HTTP/2 on one port, idle and
//! silent connections closed, and the upstream connections a client
//! connection's requests travel on.

mod common;

use common::*;
use edgeplane::coordinator::CoordinatorConfig;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// The next request head on `s` (bodiless requests only), keeping any
/// bytes after it in `buf`; `None` once the peer has gone.
async fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(buf.drain(..i + 4).collect());
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
        }
    }
}

/// A bare HTTP/1 backend: answers every request with the number of the
/// connection it arrived on.
async fn numbering_backend() -> String {
    numbering_backend_closing(None).await
}

/// The same, and with `closer` it closes each connection after its first
/// response once the test asks (receiving on `.0`), without having said so
/// in a header, as a server whose keep-alive timeout expired does; it
/// reports on `.1` when the connection is closed.
async fn numbering_backend_closing(closer: Option<(mpsc::Receiver<()>, mpsc::Sender<()>)>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let conns = Arc::new(AtomicUsize::new(0));
    let closer = closer.map(|(rx, tx)| (Arc::new(tokio::sync::Mutex::new(rx)), tx));
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let n = conns.fetch_add(1, Ordering::SeqCst);
            let closer = closer.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(head) = read_head(&mut s, &mut buf).await else {
                        return;
                    };
                    let probe = head.starts_with(b"GET /health");
                    let body = format!("conn-{n}");
                    let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                    if s.write_all(format!("{head}{body}").as_bytes()).await.is_err() {
                        return;
                    }
                    if let (Some((rx, done)), false) = (&closer, probe) {
                        rx.lock().await.recv().await;
                        drop(s);
                        let _ = done.send(()).await;
                        return;
                    }
                }
            });
        }
    });
    url
}

/// A client that keeps one connection and reuses it.
fn one_connection_client() -> reqwest::Client {
    reqwest::Client::builder().pool_max_idle_per_host(1).build().unwrap()
}

#[tokio::test]
async fn a_client_connection_keeps_its_upstream_connection() {
    let backend = numbering_backend().await;
    let (c, _guard) = notes_routed_to(&backend, fast_config(), "direct").await;
    let client = one_connection_client();
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..20 {
        let r = client
            .get(format!("{}/service/notes/x?i={i}", c.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        seen.insert(r.text().await.unwrap());
    }
    // Twenty requests on one client connection: one upstream connection.
    assert_eq!(seen.len(), 1, "upstream connections used: {seen:?}");
}

#[tokio::test]
async fn an_upstream_that_closed_an_idle_connection_costs_no_request() {
    let (close, close_rx) = mpsc::channel(1);
    let (closed_tx, mut closed) = mpsc::channel(1);
    let backend = numbering_backend_closing(Some((close_rx, closed_tx))).await;
    let (c, _guard) = notes_routed_to(&backend, fast_config(), "direct").await;
    let client = one_connection_client();
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..10 {
        if i > 0 {
            // The upstream connection the last request used is now idle: closed under it.
            close.send(()).await.unwrap();
            within(closed.recv()).await.unwrap();
        }
        // POST too: the request was never written, so it is safe to send again.
        let r = if i % 2 == 0 {
            client.get(format!("{}/service/notes/x", c.url)).send().await
        } else {
            client
                .post(format!("{}/service/notes/x", c.url))
                .body("{}")
                .send()
                .await
        }
        .unwrap();
        assert_eq!(r.status(), 200, "request {i}: {}", r.text().await.unwrap());
        seen.insert(r.text().await.unwrap());
    }
    assert_eq!(seen.len(), 10, "each request needed a fresh upstream connection");
}

/// Reads until the peer closes; `Err` when it stays open past `PATIENCE`.
async fn closed_by_peer(s: &mut TcpStream) -> Result<Vec<u8>, &'static str> {
    let mut got = Vec::new();
    tokio::time::timeout(PATIENCE, s.read_to_end(&mut got))
        .await
        .map_err(|_| "still open")?
        .map_err(|_| "read error")?;
    Ok(got)
}

#[tokio::test]
async fn silent_slow_and_idle_connections_are_closed() {
    let c = TestCoordinator::start(CoordinatorConfig {
        handshake_timeout: Duration::from_millis(200),
        http_idle_timeout: Duration::from_millis(300),
        ..fast_config()
    })
    .await;

    // Connected, sent nothing.
    let started = Instant::now();
    let mut silent = TcpStream::connect(c.addr).await.unwrap();
    assert_eq!(closed_by_peer(&mut silent).await, Ok(Vec::new()));
    assert!(started.elapsed() >= Duration::from_millis(200));

    // Started a request head and never finished it.
    let mut slow = TcpStream::connect(c.addr).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    let got = closed_by_peer(&mut slow).await.unwrap();
    assert!(!got.starts_with(b"HTTP/1.1 200"), "an unfinished head was answered");

    // A finished request is answered; the idle keep-alive connection is then closed.
    let mut idle = TcpStream::connect(c.addr).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let got = String::from_utf8(closed_by_peer(&mut idle).await.unwrap()).unwrap();
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
}

#[tokio::test]
async fn http1_and_http2_clients_get_the_same_proxy_on_one_port() {
    let backend = numbering_backend().await;
    let (c, _guard) = notes_routed_to(&backend, fast_config(), "direct").await;
    let h1 = reqwest::Client::new();
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    for (client, version) in [(&h1, reqwest::Version::HTTP_11), (&h2, reqwest::Version::HTTP_2)] {
        let r = client.get(format!("{}/service/notes/x", c.url)).send().await.unwrap();
        assert_eq!((r.version(), r.status()), (version, reqwest::StatusCode::OK));
        assert!(r.text().await.unwrap().starts_with("conn-"));
        for (path, status, code) in [
            ("/service/nope/x", 404, "unknown_service"),
            ("/service/", 404, "no_service_name"),
        ] {
            let r = client.get(format!("{}{path}", c.url)).send().await.unwrap();
            assert_eq!((r.version(), r.status().as_u16()), (version, status), "{path}");
            let v: serde_json::Value = r.json().await.unwrap();
            assert_eq!(v["error"], code, "{path} over {version:?}");
        }
        // The coordinator's own API is there for both as well.
        let r = client
            .get(format!("{}/api/admin/services", c.url))
            .send()
            .await
            .unwrap();
        assert_eq!((r.version(), r.status().as_u16()), (version, 200));
    }
}

/// A backend that answers `/health` at once and holds every other request
/// until the test releases it, reporting each arrival on `arrived`.
async fn holding_backend(arrived: mpsc::Sender<()>, release: Arc<tokio::sync::Notify>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let (arrived, release) = (arrived.clone(), release.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(head) = read_head(&mut s, &mut buf).await else {
                        return;
                    };
                    if !head.starts_with(b"GET /health") {
                        let _ = arrived.send(()).await;
                        release.notified().await;
                    }
                    if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\ndone")
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    url
}

#[tokio::test]
async fn shutdown_lets_a_request_in_flight_finish_and_cuts_it_after_the_grace() {
    for finish_in_time in [true, false] {
        let (arrived_tx, mut arrived) = mpsc::channel(4);
        let release = Arc::new(tokio::sync::Notify::new());
        let backend = holding_backend(arrived_tx, release.clone()).await;
        let grace = Duration::from_millis(800);
        let config = CoordinatorConfig {
            shutdown_grace: grace,
            ..fast_config()
        };
        let (c, _guard) = notes_routed_to(&backend, config, "direct").await;
        let request = tokio::spawn(reqwest::get(format!("{}/service/notes/slow", c.url)));
        within(arrived.recv()).await.unwrap();

        let started = Instant::now();
        c.shutdown.cancel();
        if finish_in_time {
            release.notify_one();
            let r = within(request)
                .await
                .unwrap()
                .expect("the request in flight is answered");
            assert_eq!((r.status().as_u16(), r.text().await.unwrap()), (200, "done".into()));
            within(c.task).await.unwrap().unwrap();
        } else {
            // Never released: the coordinator stops after the grace, and the
            // client's connection is closed rather than left hanging.
            within(c.task).await.unwrap().unwrap();
            assert!(started.elapsed() >= grace, "stopped before the grace was over");
            assert!(within(request).await.unwrap().is_err(), "the held request was not cut");
        }
    }
}
