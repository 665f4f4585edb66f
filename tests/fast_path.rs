//! The HTTP/1 fast path (`proxy::h1`): byte-level proxying of `/service/`
//! requests, checked against the full hyper path (`--no-http1-fast-path`)
//! and with raw sockets on both sides, so that framing, pipelining, the
//! hand-over to hyper mid-connection and broken upstreams are all visible.

mod common;

use common::http1::*;
use common::*;
use edgeplane::coordinator::CoordinatorConfig;
use edgeplane::proto::ServiceState;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn headers_are_rewritten_exactly_as_the_full_server_does() {
    for data_path in ["direct", "tunnel"] {
        same_rewrite_as_the_full_server(data_path).await;
    }
}

async fn same_rewrite_as_the_full_server(data_path: &str) {
    // Under a path prefix, which a tunnel's worker tells the fast path.
    let backend = format!("{}/p", raw_backend(Default::default()).await);
    let (fast, _g1) = notes_routed_to(&backend, fast_config(), data_path).await;
    let full_config = CoordinatorConfig {
        http1_fast_path: false,
        ..fast_config()
    };
    let (full, _g2) = notes_routed_to(&backend, full_config, data_path).await;
    let request = "POST /service/notes/head?q=1&r=%20 HTTP/1.1\r\nHost: example.test\r\n\
                   Connection: keep-alive, x-secret\r\nX-Secret: s\r\nKeep-Alive: timeout=9\r\n\
                   Proxy-Authorization: Basic eA==\r\nTE: gzip\r\nX-Forwarded-For: 10.0.0.1\r\n\
                   X-Forwarded-Proto: https\r\nX-Request-Id: rid-42\r\nContent-Type: application/json\r\n\
                   Content-Length: 2\r\n\r\n{}";
    let (a, b) = (ask(&fast, request).await, ask(&full, request).await);
    // What the backend received: the same request line and the same headers.
    let (up_a, up_b) = (
        Message {
            head: String::from_utf8(a.body.clone()).unwrap(),
            body: vec![],
        },
        Message {
            head: String::from_utf8(b.body.clone()).unwrap(),
            body: vec![],
        },
    );
    assert_eq!(
        up_a.head.lines().next(),
        Some("POST /p/head?q=1&r=%20 HTTP/1.1"),
        "{data_path}"
    );
    assert_eq!(up_a.head.lines().next(), up_b.head.lines().next());
    assert_eq!(up_a.headers(&[]), up_b.headers(&[]), "{data_path}");
    // Bytes cross untouched on the fast path, the tunnel's pipes included:
    // header names keep the client's case (hyper's path lowercases them).
    assert!(
        up_a.head.contains("\r\nContent-Type: application/json\r\n"),
        "{data_path}: {}",
        up_a.head
    );
    assert!(
        up_b.head.contains("\r\ncontent-type: application/json\r\n"),
        "{data_path}: {}",
        up_b.head
    );
    let host = backend.trim_start_matches("http://").trim_end_matches("/p");
    assert_eq!(up_a.header("host").as_deref(), Some(host), "{data_path}");
    let sent = up_a.headers(&[]);
    for expected in [
        "x-forwarded-for: 10.0.0.1, 127.0.0.1",
        "x-forwarded-host: example.test",
        "x-forwarded-proto: http",
        "x-request-id: rid-42",
        "content-type: application/json",
        "content-length: 2",
    ] {
        assert!(sent.contains(expected), "{expected} not in {sent:?}");
    }
    for gone in ["connection", "keep-alive", "x-secret", "proxy-authorization", "te"] {
        assert!(up_a.header(gone).is_none(), "{gone} was forwarded: {sent:?}");
    }
    // What the client received: the same status and headers (the date aside).
    assert_eq!(a.head.lines().next(), Some("HTTP/1.1 200 OK"));
    assert_eq!(a.headers(&["date"]), b.headers(&["date"]));
    assert_eq!(a.header("x-request-id").as_deref(), Some("rid-42"));
    assert!(a.header("x-hop").is_none() && a.header("keep-alive").is_none());
    assert!(a.header("date").is_some_and(|d| httpdate::parse_http_date(&d).is_ok()));
}

#[tokio::test]
async fn pipelined_requests_and_a_hand_over_mid_connection_are_answered_in_order() {
    let backend = raw_backend(Default::default()).await;
    let (c, _guard) = notes_routed_to(&backend, fast_config(), "direct").await;
    let mut s = TcpStream::connect(c.addr).await.unwrap();
    // All in one write: two fast-path requests, one the fast path hands to
    // hyper (not a service path), and one hyper then serves.
    s.write_all(
        b"GET /service/notes/a HTTP/1.1\r\nhost: x\r\n\r\n\
          POST /service/notes/b?x=1 HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello\
          GET /health HTTP/1.1\r\nhost: x\r\n\r\n\
          PUT /service/notes-coa/d HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nbye",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    let mut bodies = Vec::new();
    for _ in 0..4 {
        let m = within(read_message(&mut s, &mut buf, false)).await.expect("a response");
        assert!(m.head.starts_with("HTTP/1.1 200"), "{}", m.head);
        bodies.push(String::from_utf8(m.body).unwrap());
    }
    let conn = bodies[0].split(' ').next().unwrap().to_string();
    assert_eq!(bodies[0], format!("{conn} GET /a "));
    assert_eq!(
        bodies[1],
        format!("{conn} POST /b?x=1 hello"),
        "same upstream connection"
    );
    assert!(
        bodies[2].contains("\"status\""),
        "the coordinator's own /health: {}",
        bodies[2]
    );
    assert!(bodies[3].ends_with(" PUT /d bye"), "{}", bodies[3]);
}

#[tokio::test]
async fn a_chunked_response_streams_through_and_both_connections_are_kept() {
    for data_path in ["direct", "tunnel"] {
        chunked_streams_through(data_path).await;
    }
}

async fn chunked_streams_through(data_path: &str) {
    let signals = Arc::new(Signals::default());
    let backend = raw_backend(signals.clone()).await;
    let (c, _guard) = notes_routed_to(&backend, fast_config(), data_path).await;
    let mut s = TcpStream::connect(c.addr).await.unwrap();
    s.write_all(b"GET /service/notes/first HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let m = within(read_message(&mut s, &mut Vec::new(), false)).await.unwrap();
    let first = String::from_utf8(m.body).unwrap();
    let conn = first.split(' ').next().unwrap();
    s.write_all(b"GET /service/notes/chunked HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    // The first chunk arrives while the backend still holds the rest.
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while !got.ends_with(b"5\r\nfirst\r\n") {
        let k = within(s.read(&mut chunk)).await.unwrap();
        assert!(k > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..k]);
    }
    let head = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");
    signals.release.notify_one();
    // The rest, byte for byte: extensions and trailers included.
    let rest = b"4;ext=1\r\nlast\r\n0\r\nx-t: 1\r\n\r\n";
    let mut tail = vec![0u8; rest.len()];
    within(s.read_exact(&mut tail)).await.unwrap();
    assert_eq!(tail, rest);
    // Same client connection, same upstream connection (or tunnel pipe).
    s.write_all(b"GET /service/notes/again HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let m = within(read_message(&mut s, &mut Vec::new(), false)).await.unwrap();
    assert_eq!(
        String::from_utf8(m.body).unwrap(),
        format!("{conn} GET /again "),
        "{data_path}"
    );
}

#[tokio::test]
async fn an_upstream_connection_closed_after_its_answer_costs_no_request() {
    for data_path in ["direct", "tunnel"] {
        let backend = raw_backend(Default::default()).await;
        let (c, _guard) = notes_routed_to(&backend, fast_config(), data_path).await;
        let mut s = TcpStream::connect(c.addr).await.unwrap();
        let mut buf = Vec::new();
        let mut conns = BTreeSet::new();
        for i in 0..5 {
            // The close may be seen before the next request goes out, or
            // only when it meets a dead connection: a GET is safe to send
            // again either way.
            let path = if i % 2 == 0 { "close-after" } else { "x" };
            let req = format!("GET /service/notes/{path} HTTP/1.1\r\nhost: x\r\n\r\n");
            s.write_all(req.as_bytes()).await.unwrap();
            let m = within(read_message(&mut s, &mut buf, false)).await.expect("a response");
            assert!(
                m.head.starts_with("HTTP/1.1 200"),
                "{data_path} request {i}: {}",
                m.head
            );
            let body = String::from_utf8(m.body).unwrap();
            if path == "x" {
                conns.insert(body.split(' ').next().unwrap().to_string());
            } else {
                assert_eq!(body, "done");
            }
        }
        assert_eq!(
            conns.len(),
            2,
            "{data_path}: each request after a close needed a fresh connection"
        );
    }
}

#[tokio::test]
async fn a_body_ended_by_close_and_a_broken_upstream_are_handled() {
    let backend = raw_backend(Default::default()).await;
    let (c, _guard) = notes_routed_to(&backend, fast_config(), "direct").await;

    // No length: the client gets all of it, told the connection will close.
    let m = ask(&c, "GET /service/notes/until-close HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert_eq!(m.body, b"all of it");
    assert_eq!(m.header("connection").as_deref(), Some("close"));

    // Not HTTP: a 502 the client can act on, and the connection goes on.
    let mut s = TcpStream::connect(c.addr).await.unwrap();
    s.write_all(b"GET /service/notes/garbage HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let m = within(read_message(&mut s, &mut buf, false)).await.unwrap();
    assert!(m.head.starts_with("HTTP/1.1 502"), "{}", m.head);
    let v: serde_json::Value = serde_json::from_slice(&m.body).unwrap();
    assert_eq!(v["error"], "upstream_failed");
    assert_eq!(v["worker"], NOTES_WORKER);
    assert!(m.header("x-request-id").is_some_and(|r| r == v["request_id"]));
    s.write_all(b"HEAD /service/notes/x HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let m = within(read_message(&mut s, &mut buf, true)).await.unwrap();
    assert!(m.head.starts_with("HTTP/1.1 200"), "{}", m.head);
    assert!(
        m.header("content-length").is_some(),
        "HEAD keeps the length: {}",
        m.head
    );
}

#[tokio::test]
async fn slow_and_idle_service_connections_are_closed() {
    let backend = raw_backend(Default::default()).await;
    let config = CoordinatorConfig {
        http_idle_timeout: Duration::from_millis(300),
        ..fast_config()
    };
    let (c, _guard) = notes_routed_to(&backend, config, "direct").await;

    // A head that never ends, and a body that never comes: closed unanswered.
    for partial in [
        "GET /service/notes/x HTTP/1.1\r\nhost: x\r\n",
        "POST /service/notes/x HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc",
    ] {
        let mut s = TcpStream::connect(c.addr).await.unwrap();
        s.write_all(partial.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        within(s.read_to_end(&mut got)).await.unwrap();
        assert!(got.is_empty(), "answered: {}", String::from_utf8_lossy(&got));
    }

    // Answered, then idle: closed.
    let mut s = TcpStream::connect(c.addr).await.unwrap();
    s.write_all(b"GET /service/notes/x HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    within(s.read_to_end(&mut got)).await.unwrap();
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn a_client_that_goes_away_takes_its_upstream_request_with_it() {
    let signals = Arc::new(Signals::default());
    let backend = raw_backend(signals.clone()).await;
    // The proxy timeout is far away: only the client's leaving can end it.
    let config = CoordinatorConfig {
        proxy_timeout: Duration::from_secs(600),
        ..fast_config()
    };
    let (c, _guard) = notes_routed_to(&backend, config, "direct").await;
    let mut s = TcpStream::connect(c.addr).await.unwrap();
    s.write_all(b"GET /service/notes/hold HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    within(signals.held.notified()).await;
    drop(s);
    within(signals.abandoned.notified()).await;
}

#[tokio::test]
async fn one_request_per_client_connection_still_reuses_upstream_connections() {
    for data_path in ["direct", "tunnel"] {
        let backend = raw_backend(Default::default()).await;
        let (c, _guard) = notes_routed_to(&backend, fast_config(), data_path).await;
        let mut conns = BTreeSet::new();
        for i in 0..4 {
            let req = format!("GET /service/notes/one?i={i} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
            let mut s = TcpStream::connect(c.addr).await.unwrap();
            s.write_all(req.as_bytes()).await.unwrap();
            let mut buf = Vec::new();
            let m = within(read_message(&mut s, &mut buf, false)).await.expect("a response");
            assert_eq!(m.header("connection").as_deref(), Some("close"), "{data_path}");
            // Closed by the coordinator (after it kept the upstream connection).
            within(s.read_to_end(&mut buf)).await.unwrap();
            conns.insert(
                String::from_utf8(m.body)
                    .unwrap()
                    .split(' ')
                    .next()
                    .unwrap()
                    .to_string(),
            );
        }
        // Four client connections, one after another: one upstream connection
        // (or tunnel pipe) carried all four requests.
        assert_eq!(conns.len(), 1, "{data_path}: {conns:?}");
    }
}

#[tokio::test]
async fn services_sharing_an_address_keep_their_own_path_prefixes_on_one_connection() {
    let backend = raw_backend(Default::default()).await;
    let c = TestCoordinator::start(fast_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = c.worker_config("fast-1", dir.path());
    cfg.services = vec![
        ("notes".into(), format!("{backend}/p")),
        ("other".into(), format!("{backend}/q")),
    ];
    cfg.data_path = edgeplane::worker::DataPath::Direct;
    cfg.probe_interval = Duration::from_millis(50);
    let (_agent, stop) = start_agent(cfg).await;
    let _stop = stop.drop_guard();
    let mut watch = c.watch().await;
    watch
        .until(|e| {
            let ready = |name: &str| {
                e.worker.as_ref().is_some_and(|w| {
                    w.services
                        .iter()
                        .any(|s| s.name == name && s.state == ServiceState::Ready as i32)
                })
            };
            ready("notes-coa") && ready("other")
        })
        .await;

    let mut s = TcpStream::connect(c.addr).await.unwrap();
    let mut buf = Vec::new();
    let mut seen = Vec::new();
    for (name, path) in [("notes", "x"), ("other", "x"), ("notes", "y")] {
        let req = format!("GET /service/{name}/{path} HTTP/1.1\r\nhost: x\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let m = within(read_message(&mut s, &mut buf, false)).await.expect("a response");
        seen.push(String::from_utf8(m.body).unwrap());
    }
    let conn = seen[0].split(' ').next().unwrap().to_string();
    // One upstream connection (one address), each request under its own prefix.
    assert_eq!(
        seen,
        [
            format!("{conn} GET /p/x "),
            format!("{conn} GET /q/x "),
            format!("{conn} GET /p/y ")
        ]
    );
}
