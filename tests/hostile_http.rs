//! Hostile HTTP clients, as an attacker tried them against the coordinator
//! (issue 10): each probe that harmed another client, kept as a regression
//! test over every way an HTTP/1 `/service/` request can be served (direct
//! or through the worker's tunnel, with the byte-level fast path or the
//! hyper path), with raw sockets on both sides so nothing is tidied away.

mod common;

use common::http1::*;
use common::*;
use edgeplane::coordinator::CoordinatorConfig;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Every way an HTTP/1 `/service/` request is served: data path, fast path.
const PATHS: [(&str, bool); 4] = [("direct", true), ("direct", false), ("tunnel", true), ("tunnel", false)];

/// Liveness is not under test here: a heartbeat timeout long enough that
/// a loaded CI machine starving the in-process worker for 400 ms (the
/// `fast_config` timeout) does not degrade it and turn an answer into a 503.
fn config(fast_path: bool) -> CoordinatorConfig {
    CoordinatorConfig {
        http1_fast_path: fast_path,
        heartbeat_timeout: std::time::Duration::from_secs(10),
        worker_timeout: std::time::Duration::from_secs(30),
        ..fast_config()
    }
}

/// A raw backend (recording what it reads) under the path prefix `/p`,
/// and a coordinator routing `notes` to it over `data_path`.
async fn routed(data_path: &str, fast_path: bool) -> (Arc<Signals>, TestCoordinator, impl Sized) {
    let signals = Arc::new(Signals::default());
    let backend = format!("{}/p", raw_backend(signals.clone()).await);
    let (c, guard) = notes_routed_to(&backend, config(fast_path), data_path).await;
    (signals, c, guard)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Sends `raw` on a new connection, writing from another task (so a
/// coordinator that answers before reading it all cannot block the test),
/// and reads the first response.
async fn send_big(c: &TestCoordinator, raw: String) -> Message {
    let s = TcpStream::connect(c.addr).await.unwrap();
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        let _ = w.write_all(raw.as_bytes()).await;
        w
    });
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let m = within(async {
        loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = text(&buf[..i + 4]);
                return Message {
                    head,
                    body: buf[i + 4..].to_vec(),
                };
            }
            let n = r.read(&mut chunk).await.expect("the answer arrives before any reset");
            assert!(n > 0, "closed without an answer: {}", text(&buf));
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    drop(writer);
    m
}

/// Another client's request in flight on the same worker: a chunked
/// response that waits half sent until `release`. A tunnel that failed
/// meanwhile would cut it.
struct Busy {
    s: TcpStream,
    got: Vec<u8>,
}

impl Busy {
    async fn start(c: &TestCoordinator, ctx: &str) -> Busy {
        let mut s = TcpStream::connect(c.addr).await.unwrap();
        s.write_all(b"GET /service/notes/chunked HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        while !text(&got).contains("first\r\n") {
            assert!(within(fill(&mut s, &mut got)).await > 0, "{ctx}");
        }
        Busy { s, got }
    }

    /// Lets the response finish and checks it arrived whole (hyper's path
    /// drops the chunk extension and the trailer, which the client did not
    /// ask for, so only the end of the body is looked for).
    async fn finish(&mut self, signals: &Signals, ctx: &str) {
        signals.release.notify_one();
        let body_at = self.got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        while chunked_end(&self.got[body_at..]).is_none() {
            assert!(
                within(fill(&mut self.s, &mut self.got)).await > 0,
                "{ctx}: the request in flight was cut: {}",
                text(&self.got)
            );
        }
        assert!(text(&self.got).contains("\r\nlast\r\n"), "{ctx}");
    }
}

/// The probe: `Connection: content-length` took the length off a request
/// whose body was still written upstream, where it became a request of its
/// own on a connection the next client's request then shared. For every
/// name a client can list in `Connection`, the replica sees exactly one
/// request with its whole body, and the next client only its own answer.
#[tokio::test]
async fn a_header_named_in_connection_never_turns_a_body_into_a_request() {
    let names = [
        "content-length",
        "Content-Length, keep-alive",
        "transfer-encoding",
        "host",
        "te",
        "upgrade",
        "x-unknown",
    ];
    for (data_path, fast) in PATHS {
        let (signals, c, _guard) = routed(data_path, fast).await;
        for name in names {
            let ctx = format!("{data_path}, fast path {fast}, Connection: {name}");
            let smuggled = "POST /capture HTTP/1.1\r\nHost: x\r\nContent-Length: 120\r\n\r\n";
            let attack = format!(
                "POST /service/notes/innocent HTTP/1.1\r\nHost: x\r\nConnection: {name}\r\n\
                 Content-Length: {}\r\n\r\n{smuggled}",
                smuggled.len()
            );
            let a = ask(&c, &attack).await;
            assert!(a.head.starts_with("HTTP/1.1 200"), "{ctx}: {}", a.head);
            assert!(
                text(&a.body).ends_with(&format!(" POST /p/innocent {smuggled}")),
                "{ctx}: the body went upstream as a body: {}",
                text(&a.body)
            );
            let victim = ask(
                &c,
                "GET /service/notes/victim HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer victim-secret\r\n\r\n",
            )
            .await;
            assert!(victim.head.starts_with("HTTP/1.1 200"), "{ctx}: {}", victim.head);
            assert!(
                text(&victim.body).ends_with(" GET /p/victim "),
                "{ctx}: the next client got another's answer: {}",
                text(&victim.body)
            );
        }
        let seen = signals.seen();
        assert!(
            !seen.iter().any(|r| r.starts_with("POST /capture")),
            "{data_path}, fast path {fast}: a body was read as a request: {seen:?}"
        );
        let innocent = seen.iter().filter(|r| r.starts_with("POST /p/innocent ")).count();
        assert_eq!(innocent, names.len(), "{data_path}, fast path {fast}: {seen:?}");
    }
}

/// The probe: one header of 200 KB or more, through the tunnel, failed the
/// worker's whole tunnel connection, and every request in flight on it.
/// Now a head past the one bound gets 431 at the coordinator on every path,
/// before anything crosses; a head just under it is served, tunnel included;
/// and another client's request in flight is untouched.
#[tokio::test]
async fn a_head_too_large_gets_431_and_nothing_else_on_the_worker_notices() {
    for (data_path, fast) in PATHS {
        let ctx = format!("{data_path}, fast path {fast}");
        let (signals, c, _guard) = routed(data_path, fast).await;
        let mut busy = Busy::start(&c, &ctx).await;
        for size in [70_000, 100_000, 200_000, 300_000] {
            let big = "a".repeat(size);
            let raw = format!("GET /service/notes/big HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
            let m = send_big(&c, raw).await;
            assert!(m.head.starts_with("HTTP/1.1 431"), "{ctx}, {size} bytes: {}", m.head);
        }
        let fits = "a".repeat(60_000);
        let m = send_big(
            &c,
            format!("GET /service/notes/fits HTTP/1.1\r\nHost: x\r\nX-Big: {fits}\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert!(m.head.starts_with("HTTP/1.1 200"), "{ctx}: {}", m.head);
        busy.finish(&signals, &ctx).await;
        let seen = signals.seen();
        assert!(!seen.iter().any(|r| r.contains("/big")), "{ctx}: {seen:?}");
        assert_eq!(seen.iter().filter(|r| r.contains("/fits")).count(), 1, "{ctx}");
    }
}

/// The same mistake the other way: a replica's response head too large for
/// the tunnel would have failed the worker's tunnel. On every path a head
/// past the bound is a 502 for that one request.
#[tokio::test]
async fn a_response_head_too_large_is_a_502_and_nothing_else_on_the_worker_notices() {
    for (data_path, fast) in PATHS {
        let ctx = format!("{data_path}, fast path {fast}");
        let (signals, c, _guard) = routed(data_path, fast).await;
        let mut busy = Busy::start(&c, &ctx).await;
        let m = ask(&c, "GET /service/notes/huge-head HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(
            m.head.starts_with("HTTP/1.1 502"),
            "{ctx}: {}",
            &m.head[..m.head.len().min(200)]
        );
        assert!(text(&m.body).contains("upstream_failed"), "{ctx}");
        busy.finish(&signals, &ctx).await;
        let again = ask(&c, "GET /service/notes/after HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(again.head.starts_with("HTTP/1.1 200"), "{ctx}: {}", again.head);
    }
}

/// HTTP/2 clients meet the same bound on their header list.
#[tokio::test]
async fn an_http2_header_list_too_large_is_refused_and_the_connection_serves_on() {
    let (signals, c, _guard) = routed("tunnel", true).await;
    let client = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let url = format!("{}/service/notes/h2", c.url);
    let big = client.get(&url).header("x-big", "a".repeat(70_000)).send().await;
    match big {
        Ok(r) => assert_eq!(r.status(), 431),
        // h2 may refuse the stream instead of answering it: either way,
        // nothing crossed (below) and the next request is served.
        Err(e) => assert!(!e.is_connect(), "{e}"),
    }
    let ok = client.get(&url).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let seen = signals.seen();
    assert_eq!(seen.iter().filter(|r| r.contains("/h2")).count(), 1, "{seen:?}");
}

/// The probe: `PRI * HTTP/2.0\r\n` and nothing more held a connection slot
/// for ever (and 200 of them, the whole `--max-connections`, kept `/health`
/// down). Every state before a peer has said what it is ends at the
/// handshake deadline, and its slot comes back.
#[tokio::test]
async fn a_connection_that_stops_before_its_first_request_gives_its_slot_back() {
    let config = CoordinatorConfig {
        max_connections: 4,
        ..fast_config()
    };
    let c = TestCoordinator::start(config).await;
    let cut: [&[u8]; 4] = [
        b"PRI * HTTP/2.0\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: x\r\n",
        b"G",
    ];
    let mut held = Vec::new();
    for first in cut {
        let mut s = TcpStream::connect(c.addr).await.unwrap();
        s.write_all(first).await.unwrap();
        held.push((first, s));
    }
    for (first, mut s) in held {
        let mut got = Vec::new();
        // Closed by the coordinator (an error is a reset: closed too).
        let _ = within(s.read_to_end(&mut got)).await;
        assert!(got.is_empty(), "{:?} was answered: {}", text(first), text(&got));
    }
    let health = reqwest::get(format!("{}/health", c.url)).await.unwrap();
    assert_eq!(health.status(), 200);
}

/// The probe: malformed chunked request bodies were answered 502
/// `upstream_failed` (or 504 after 30 s): the client's fault blamed on the
/// replica. They are the client's: 400 `bad_request_body`, at once (the
/// proxy timeout here is 30 s, past the test's patience).
#[tokio::test]
async fn a_malformed_chunked_body_is_the_clients_fault() {
    let bodies: [(&str, &str, bool); 5] = [
        ("bad hex", "zz\r\nhello\r\n0\r\n\r\n", false),
        (
            "a size past 16 hex digits",
            "11111111111111111\r\nhello\r\n0\r\n\r\n",
            false,
        ),
        ("bare LF chunk line", "5\nhello\r\n0\r\n\r\n", false),
        ("data without CRLF", "5\r\nhelloXX0\r\n\r\n", false),
        (
            "no final CRLF, then the client stops sending",
            "5\r\nhello\r\n0\r\n",
            true,
        ),
    ];
    for (data_path, fast) in PATHS {
        let (signals, c, _guard) = routed(data_path, fast).await;
        for (what, body, half_close) in bodies {
            let ctx = format!("{data_path}, fast path {fast}, {what}");
            let mut s = TcpStream::connect(c.addr).await.unwrap();
            let raw = format!("POST /service/notes/up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{body}");
            s.write_all(raw.as_bytes()).await.unwrap();
            if half_close {
                s.shutdown().await.unwrap();
            }
            let m = within(read_message(&mut s, &mut Vec::new(), false))
                .await
                .unwrap_or_else(|| panic!("{ctx}: no answer"));
            assert!(m.head.starts_with("HTTP/1.1 400"), "{ctx}: {}{}", m.head, text(&m.body));
            assert!(
                text(&m.body).contains("\"bad_request_body\""),
                "{ctx}: {}",
                text(&m.body)
            );
        }
        // A well-formed one still goes through.
        let m = ask(
            &c,
            "POST /service/notes/up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        )
        .await;
        assert!(m.head.starts_with("HTTP/1.1 200"), "{}", m.head);
        // The replica gets the body chunked (its framing is echoed raw).
        let echo = text(&m.body);
        assert!(echo.contains(" POST /p/up ") && echo.contains("hello"), "{echo}");
        drop(signals);
    }
}

/// RFC 9112 3.2: an HTTP/1.1 request with no `Host`, or two, gets 400 and
/// goes nowhere; HTTP/1.0 needs none.
#[tokio::test]
async fn a_request_without_exactly_one_host_is_refused() {
    for (data_path, fast) in PATHS {
        let (signals, c, _guard) = routed(data_path, fast).await;
        for raw in [
            "GET /service/notes/nohost HTTP/1.1\r\n\r\n",
            "GET /service/notes/twohosts HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET /health HTTP/1.1\r\n\r\n",
        ] {
            let m = ask(&c, raw).await;
            let ctx = format!("{data_path}, fast path {fast}, {raw:?}");
            assert!(m.head.starts_with("HTTP/1.1 400"), "{ctx}: {}", m.head);
            assert!(text(&m.body).contains("\"bad_request\""), "{ctx}: {}", text(&m.body));
        }
        let m = ask(&c, "GET /service/notes/old HTTP/1.0\r\n\r\n").await;
        assert!(m.head.starts_with("HTTP/1.0 200"), "HTTP/1.0 needs no Host: {}", m.head);
        let seen = signals.seen();
        assert!(!seen.iter().any(|r| r.contains("host")), "{seen:?}");
    }
}

/// The probe: `GET /nonexistent` and `OPTIONS *` answered `200 OK` with
/// `content-type: application/grpc` (the gRPC fallback). An HTTP client
/// gets a plain 404 JSON error.
#[tokio::test]
async fn a_path_nothing_serves_is_a_plain_404() {
    let c = TestCoordinator::start(fast_config()).await;
    for raw in [
        "GET /nonexistent HTTP/1.1\r\nHost: x\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
        "POST /some.Service/Method HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    ] {
        let m = ask(&c, raw).await;
        assert!(m.head.starts_with("HTTP/1.1 404"), "{raw:?}: {}", m.head);
        assert_eq!(m.header("content-type").as_deref(), Some("application/json"), "{raw:?}");
        assert!(m.header("grpc-status").is_none(), "{raw:?}: {}", m.head);
        assert!(text(&m.body).contains("\"not_found\""), "{raw:?}: {}", text(&m.body));
    }
}

/// The probe: a bare CR in an upstream's trailer reached the client, which
/// may take it for a line end. It never does: the body is cut instead.
#[tokio::test]
async fn a_bare_cr_in_an_upstream_trailer_never_reaches_the_client() {
    for (data_path, fast) in PATHS {
        let (_signals, c, _guard) = routed(data_path, fast).await;
        let mut s = TcpStream::connect(c.addr).await.unwrap();
        s.write_all(
            b"GET /service/notes/bare-cr-trailer HTTP/1.1\r\nHost: x\r\nTE: trailers\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
        let mut got = Vec::new();
        let _ = within(s.read_to_end(&mut got)).await;
        let ctx = format!("{data_path}, fast path {fast}");
        // Cut before the head went out (a 502, or the connection closed
        // unanswered), or after it (a truncated body).
        let answer = text(&got);
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.1 502"),
            "{ctx}: {answer}"
        );
        assert!(
            !got.windows(2).any(|w| w[0] == b'\r' && w[1] != b'\n'),
            "{ctx}: a bare CR was forwarded: {:?}",
            text(&got)
        );
    }
}

/// The probe: `/service/notes/../outside` and its `%2e%2e` spellings
/// reached the replica unresolved, escaping the service's path prefix
/// there. Dot segments are resolved before routing, as a browser would.
#[tokio::test]
async fn dot_segments_never_climb_out_of_the_service() {
    for (data_path, fast) in PATHS {
        let (signals, c, _guard) = routed(data_path, fast).await;
        let ctx = format!("{data_path}, fast path {fast}");
        for outside in [
            "/service/notes/../outside",
            "/service/notes/%2e%2e/outside",
            "/service/notes/%2E./outside",
            "/service/notes/a/../../outside/x",
        ] {
            let m = ask(&c, &format!("GET {outside} HTTP/1.1\r\nHost: x\r\n\r\n")).await;
            assert!(m.head.starts_with("HTTP/1.1 404"), "{ctx}, {outside}: {}", m.head);
            assert!(
                text(&m.body).contains("\"service\":\"outside\""),
                "{ctx}, {outside}: {}",
                text(&m.body)
            );
        }
        for (inside, upstream) in [
            ("/service/notes/a/%2E%2E/b?q=1", "/p/b?q=1"),
            ("/service/notes/./a/../c", "/p/c"),
            ("/service/notes/x/..", "/p/"),
        ] {
            let m = ask(&c, &format!("GET {inside} HTTP/1.1\r\nHost: x\r\n\r\n")).await;
            assert!(m.head.starts_with("HTTP/1.1 200"), "{ctx}, {inside}: {}", m.head);
            assert!(
                text(&m.body).ends_with(&format!(" GET {upstream} ")),
                "{ctx}, {inside}: {}",
                text(&m.body)
            );
        }
        let seen = signals.seen();
        assert!(
            !seen
                .iter()
                .any(|r| r.contains("/.") || r.to_ascii_lowercase().contains("%2e")),
            "{ctx}: {seen:?}"
        );
    }
}

/// A path the replica's prefix makes longer than any request target can
/// be: 414 `uri_too_long` on every path, and the replica sees nothing (the
/// hyper path called it a bad request body, the fast path sent it, and the
/// worker's end of the tunnel sent it as `/`). One that fits is served whole.
#[tokio::test]
async fn a_target_the_prefix_makes_too_long_is_a_414_on_every_path() {
    let prefix = format!("/{}", "p".repeat(900));
    for (data_path, fast) in PATHS {
        let ctx = format!("{data_path}, fast path {fast}");
        let signals = Arc::new(Signals::default());
        let backend = format!("{}{prefix}", raw_backend(signals.clone()).await);
        let (c, _guard) = notes_routed_to(&backend, config(fast), data_path).await;
        let long = format!("/long{}", "a".repeat(edgeplane::upstream::MAX_TARGET - prefix.len()));
        let m = send_big(&c, format!("GET /service/notes{long}?q=1 HTTP/1.1\r\nHost: x\r\n\r\n")).await;
        assert!(m.head.starts_with("HTTP/1.1 414"), "{ctx}: {}", m.head);
        assert!(
            text(&m.body).contains("\"error\":\"uri_too_long\""),
            "{ctx}: {}",
            text(&m.body)
        );
        let fits = format!(
            "/fits{}",
            "a".repeat(edgeplane::upstream::MAX_TARGET - prefix.len() - 20)
        );
        let m = send_big(
            &c,
            format!("GET /service/notes{fits} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert!(m.head.starts_with("HTTP/1.1 200"), "{ctx}: {}", m.head);
        // Besides the readiness probe's `/health`, only the request that fits.
        let served: Vec<String> = signals
            .seen()
            .into_iter()
            .filter(|r| !r.starts_with(&format!("GET {prefix}/health ")))
            .collect();
        assert_eq!(
            served.len(),
            1,
            "{ctx}: {:?}",
            served.iter().map(|r| r.len()).collect::<Vec<_>>()
        );
        assert!(served[0].starts_with(&format!("GET {prefix}{fits} ")), "{ctx}");
    }
}
