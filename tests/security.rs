//! What the coordinator refuses, and that refusing never stops it serving:
//! join and admin tokens, the handshake deadline and pool, message size,
//! Hello validation and the worker cap.

mod common;

use common::*;
use edgeplane::coordinator::CoordinatorConfig;
use edgeplane::proto::{worker_message::Msg as Out, Capabilities, Keepalive, ListWorkersRequest, WorkerStatus};
use std::time::Duration;
use tonic::transport::Channel;
use tonic::Code;

/// Opens a Connect stream, sends `first` (if the stream was accepted), and
/// returns the status the coordinator refused it with, wherever it came
/// from: the Connect call itself or the end of the response stream.
async fn refusal(channel: Channel, token: Option<&str>, first: Option<Out>) -> tonic::Status {
    match within(RawWorker::try_open(channel, token)).await {
        Err(status) => status,
        Ok(mut raw) => {
            if let Some(m) = first {
                // The coordinator may already have closed the stream; the
                // status below says why.
                let _ = raw.tx.send(edgeplane::proto::WorkerMessage { msg: Some(m) }).await;
            }
            match raw.end().await {
                Err(status) => status,
                Ok(()) => panic!("the stream ended cleanly; expected a refusal"),
            }
        }
    }
}

fn assert_code(status: &tonic::Status, code: Code) {
    assert_eq!(status.code(), code, "unexpected status: {status:?}");
}

/// Id, name and status of each worker the Admin API lists.
async fn listed(c: &TestCoordinator) -> Vec<(String, String, i32)> {
    let mut admin = c.admin().await;
    let list = admin
        .list_workers(ListWorkersRequest::default())
        .await
        .expect("ListWorkers")
        .into_inner();
    list.workers
        .into_iter()
        .map(|w| (w.worker_id, w.name, w.status))
        .collect()
}

#[tokio::test]
async fn join_token_is_required_to_connect() {
    let c = TestCoordinator::start(CoordinatorConfig {
        join_token: Some("s3cret-join".into()),
        ..fast_config()
    })
    .await;

    let missing = refusal(c.channel().await, None, Some(Out::Hello(hello("intruder", "i-1", "")))).await;
    assert_code(&missing, Code::Unauthenticated);
    assert!(
        missing.message().contains("join token"),
        "message should say what is missing: {missing:?}"
    );

    let wrong = refusal(
        c.channel().await,
        Some("not-the-token"),
        Some(Out::Hello(hello("intruder", "i-2", ""))),
    )
    .await;
    assert_code(&wrong, Code::Unauthenticated);
    assert!(
        !wrong.message().contains("s3cret-join"),
        "the real token must not be echoed: {wrong:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let mut config = c.worker_config("member", dir.path());
    config.join_token = Some("s3cret-join".into());
    let (agent, stop) = start_agent(config).await;
    let id = agent.status().borrow().worker_id.clone().expect("welcomed with an id");
    let workers = listed(&c).await;
    assert_eq!(
        workers.len(),
        1,
        "only the worker with the token is registered: {workers:?}"
    );
    assert_eq!((workers[0].0.as_str(), workers[0].1.as_str()), (id.as_str(), "member"));

    stop.cancel();
    c.stop().await;
}

#[tokio::test]
async fn admin_token_guards_grpc_and_http_but_not_health() {
    let c = TestCoordinator::start(CoordinatorConfig {
        admin_token: Some("adm1n-t0ken".into()),
        ..fast_config()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (agent, stop) = c.worker("guarded", dir.path()).await;
    let id = agent.status().borrow().worker_id.clone().unwrap();

    // gRPC Admin.
    let mut admin = c.admin().await;
    let denied = admin
        .list_workers(ListWorkersRequest::default())
        .await
        .expect_err("no token, no list");
    assert_code(&denied, Code::Unauthenticated);
    let mut req = tonic::Request::new(ListWorkersRequest::default());
    req.metadata_mut()
        .insert("authorization", "Bearer wrong".parse().unwrap());
    assert_code(
        &admin.list_workers(req).await.expect_err("wrong token"),
        Code::Unauthenticated,
    );
    let mut req = tonic::Request::new(ListWorkersRequest::default());
    req.metadata_mut()
        .insert("authorization", "Bearer adm1n-t0ken".parse().unwrap());
    let list = admin
        .list_workers(req)
        .await
        .expect("the right token lists")
        .into_inner();
    assert_eq!(
        list.workers.iter().map(|w| w.worker_id.as_str()).collect::<Vec<_>>(),
        [id.as_str()]
    );

    // HTTP admin views.
    let http = reqwest::Client::new();
    let url = format!("{}/api/admin/workers", c.url);
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::UNAUTHORIZED);
    let body: serde_json::Value = r.json().await.expect("a JSON error body");
    assert_eq!(body["error"], "unauthenticated", "{body}");
    assert!(body["message"].is_string(), "{body}");
    let r = http.get(&url).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::UNAUTHORIZED);
    let r = http.get(&url).bearer_auth("adm1n-t0ken").send().await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body[0]["worker_id"], id.as_str(), "{body}");

    // The load balancer's health check needs no token.
    let r = http.get(format!("{}/health", c.url)).send().await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);

    stop.cancel();
    c.stop().await;
}

/// Opens a Connect stream sending `authorization` exactly as given.
async fn connect_with_authorization(channel: Channel, authorization: &str) -> Result<RawWorker, tonic::Status> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    req.metadata_mut()
        .insert("authorization", authorization.parse().unwrap());
    let rx = edgeplane::proto::worker_control_client::WorkerControlClient::new(channel)
        .connect(req)
        .await?
        .into_inner();
    Ok(RawWorker { tx, rx })
}

/// The authentication scheme is case-insensitive (RFC 9110 §11.1), so
/// `bearer` works as `Bearer` does, for the join and the admin token alike;
/// the token alone decides, in any spelling of the scheme.
#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive_and_the_token_still_decides() {
    let c = TestCoordinator::start(CoordinatorConfig {
        join_token: Some("s3cret-join".into()),
        admin_token: Some("adm1n-t0ken".into()),
        ..fast_config()
    })
    .await;

    // Join token, on Connect.
    for (i, scheme) in ["bearer", "BEARER", "bEaReR"].into_iter().enumerate() {
        let mut raw = within(connect_with_authorization(
            c.channel().await,
            &format!("{scheme} s3cret-join"),
        ))
        .await
        .unwrap_or_else(|s| panic!("`{scheme}` with the right join token was refused: {s:?}"));
        let welcome = raw
            .hello(hello(&format!("lower-{i}"), &format!("i-lower-{i}"), ""))
            .await;
        assert!(!welcome.worker_id.is_empty());
    }
    for wrong in [
        "bearer not-the-token",
        "bearer S3CRET-JOIN",
        "bearer",
        "bearers3cret-join",
    ] {
        let status = match within(connect_with_authorization(c.channel().await, wrong)).await {
            Err(status) => status,
            Ok(_) => panic!("`{wrong}` was admitted"),
        };
        assert_code(&status, Code::Unauthenticated);
    }
    let names = listed_with(&c, "bearer adm1n-t0ken")
        .await
        .expect("`bearer` with the right admin token lists");
    assert_eq!(names, ["lower-0", "lower-1", "lower-2"]);

    // Admin token, on the gRPC Admin API...
    for wrong in ["bearer wrong", "bearer ADM1N-T0KEN", "bearer s3cret-join"] {
        let status = listed_with(&c, wrong).await.expect_err(wrong);
        assert_code(&status, Code::Unauthenticated);
    }
    // ...and on the HTTP admin API.
    let http = reqwest::Client::new();
    let url = format!("{}/api/admin/workers", c.url);
    for (authorization, want) in [
        ("bearer adm1n-t0ken", reqwest::StatusCode::OK),
        ("BEARER adm1n-t0ken", reqwest::StatusCode::OK),
        ("bearer wrong", reqwest::StatusCode::UNAUTHORIZED),
        ("bearer ADM1N-T0KEN", reqwest::StatusCode::UNAUTHORIZED),
        ("bearer s3cret-join", reqwest::StatusCode::UNAUTHORIZED),
    ] {
        let r = http
            .get(&url)
            .header("authorization", authorization)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want, "{authorization}");
    }
    c.stop().await;
}

/// Names of the workers the gRPC Admin API lists, asked with `authorization`.
async fn listed_with(c: &TestCoordinator, authorization: &str) -> Result<Vec<String>, tonic::Status> {
    let mut req = tonic::Request::new(ListWorkersRequest::default());
    req.metadata_mut()
        .insert("authorization", authorization.parse().unwrap());
    let list = c.admin().await.list_workers(req).await?.into_inner();
    Ok(list.workers.into_iter().map(|w| w.name).collect())
}

#[tokio::test]
async fn a_client_that_never_says_hello_is_dropped() {
    let c = TestCoordinator::start(fast_config()).await;
    let mut silent = c.raw().await;
    let status = silent.end().await.expect_err("the coordinator ends a silent stream");
    assert_code(&status, Code::DeadlineExceeded);
    assert!(status.message().contains("Hello"), "{status:?}");
    assert!(listed(&c).await.is_empty());

    // Still serving.
    let mut raw = c.raw().await;
    let welcome = raw.hello(hello("after-silence", "i-after", "")).await;
    assert!(!welcome.worker_id.is_empty());

    c.stop().await;
}

#[tokio::test]
async fn first_message_must_be_hello() {
    let c = TestCoordinator::start(fast_config()).await;
    let status = refusal(
        c.channel().await,
        None,
        Some(Out::Keepalive(Keepalive {
            seq: 1,
            ..Default::default()
        })),
    )
    .await;
    assert_code(&status, Code::FailedPrecondition);
    assert!(status.message().contains("Hello"), "{status:?}");
    assert!(listed(&c).await.is_empty());
    c.stop().await;
}

#[tokio::test]
async fn pending_handshakes_are_bounded() {
    let c = TestCoordinator::start(CoordinatorConfig {
        max_pending_handshakes: 2,
        handshake_timeout: Duration::from_secs(30),
        ..fast_config()
    })
    .await;
    let silent_a = c.raw().await;
    let silent_b = c.raw().await;

    let third = refusal(c.channel().await, None, Some(Out::Hello(hello("third", "i-3", "")))).await;
    assert_code(&third, Code::ResourceExhausted);

    // Once the silent streams go away, their permits come back.
    drop(silent_a);
    drop(silent_b);
    let dir = tempfile::tempdir().unwrap();
    let (agent, stop) = c.worker("after-the-crowd", dir.path()).await;
    let id = agent.status().borrow().worker_id.clone().unwrap();
    assert_eq!(listed(&c).await.into_iter().map(|w| w.0).collect::<Vec<_>>(), [id]);

    stop.cancel();
    c.stop().await;
}

/// A channel to the coordinator from `source` (a loopback address other
/// than 127.0.0.1 stands for another host).
async fn channel_from(c: &TestCoordinator, source: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(c.url.clone())
        .unwrap()
        .local_address(Some(source.parse().unwrap()))
        .connect()
        .await
        .expect("connect from another loopback address")
}

#[tokio::test]
async fn pending_handshakes_are_bounded_per_address() {
    let c = TestCoordinator::start(CoordinatorConfig {
        max_pending_handshakes_per_address: 3,
        handshake_timeout: Duration::from_secs(30),
        ..fast_config()
    })
    .await;
    // One peer holds its address's share with streams that never say Hello
    // (no join token is set, so anyone may open them).
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(c.raw().await);
    }

    // Its next stream is refused at once: by the Connect call itself, not
    // after a handshake window.
    let refused = match within(RawWorker::try_open(c.channel().await, None)).await {
        Err(status) => status,
        Ok(_) => panic!("a fourth idle stream from one address was admitted"),
    };
    assert_code(&refused, Code::ResourceExhausted);
    assert!(
        refused.message().contains("127.0.0.1") && refused.message().contains("per address"),
        "the message says which bound was hit: {refused:?}"
    );

    // A worker from another address still gets in, while the silent
    // streams are all still open.
    let mut other = RawWorker::open(channel_from(&c, "127.0.0.2").await, None).await;
    let welcome = other.hello(hello("elsewhere", "i-elsewhere", "")).await;
    assert!(!welcome.worker_id.is_empty());
    assert_eq!(
        listed(&c).await.into_iter().map(|w| w.0).collect::<Vec<_>>(),
        [welcome.worker_id]
    );

    // Once the peer's streams go away, its address may connect again.
    drop(silent);
    let mut back = within(async {
        loop {
            if let Ok(raw) = RawWorker::try_open(c.channel().await, None).await {
                return raw;
            }
        }
    })
    .await;
    back.hello(hello("back-home", "i-back", "")).await;
    c.stop().await;
}

#[tokio::test]
async fn oversized_messages_are_refused() {
    let c = TestCoordinator::start(CoordinatorConfig {
        max_message_bytes: 4096,
        ..fast_config()
    })
    .await;
    let big = "x".repeat(10 * 1024);
    let status = refusal(c.channel().await, None, Some(Out::Hello(hello(&big, "i-big", "")))).await;
    // tonic reports a length prefix over the limit as OUT_OF_RANGE.
    assert_code(&status, Code::OutOfRange);
    assert!(
        status.message().contains("4096"),
        "the limit should be named: {status:?}"
    );
    assert!(listed(&c).await.is_empty());

    let dir = tempfile::tempdir().unwrap();
    let (agent, stop) = c.worker("normal-size", dir.path()).await;
    let id = agent.status().borrow().worker_id.clone().unwrap();
    assert_eq!(listed(&c).await.into_iter().map(|w| w.0).collect::<Vec<_>>(), [id]);

    stop.cancel();
    c.stop().await;
}

#[tokio::test]
async fn invalid_hello_is_refused_with_the_reason() {
    let c = TestCoordinator::start(fast_config()).await;

    let status = refusal(c.channel().await, None, Some(Out::Hello(hello("", "i-empty", "")))).await;
    assert_code(&status, Code::InvalidArgument);
    assert!(status.message().contains("name"), "{status:?}");

    let mut h = hello("labelled", "i-labels", "");
    let mut caps = Capabilities::default();
    for i in 0..65 {
        caps.labels.insert(format!("k{i}"), "v".into());
    }
    h.capabilities = Some(caps);
    let status = refusal(c.channel().await, None, Some(Out::Hello(h))).await;
    assert_code(&status, Code::InvalidArgument);
    assert!(status.message().contains("labels"), "{status:?}");

    assert!(listed(&c).await.is_empty());
    c.stop().await;
}

/// A service URL nothing can dial (not `http://` or `https://`) is refused,
/// by the coordinator and by the worker; an `https://` one is accepted
/// (dialed with TLS: tests/tls_services.rs).
#[tokio::test]
async fn service_urls_of_other_schemes_are_refused_with_the_reason() {
    let c = TestCoordinator::start(fast_config()).await;
    for url in ["ftp://127.0.0.1:21", "grpc://vault.internal:9000"] {
        let mut h = hello("odd-worker", "i-odd", "");
        h.services = vec![edgeplane::proto::DeclaredService {
            name: "vault".into(),
            url: url.into(),
        }];
        let status = refusal(c.channel().await, None, Some(Out::Hello(h))).await;
        assert_code(&status, Code::InvalidArgument);
        assert!(status.message().contains("service `vault`"), "{url}: {status:?}");
        assert!(status.message().contains("is not supported"), "{url}: {status:?}");
    }
    assert!(listed(&c).await.is_empty());

    // The worker agent refuses to start with one, saying why.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = c.worker_config("odd-agent", dir.path());
    cfg.services = vec![("vault".into(), "ftp://127.0.0.1:21".into())];
    let err = match edgeplane::worker::spawn(cfg, tokio_util::sync::CancellationToken::new()) {
        Ok(_) => panic!("an agent started with an ftp:// service"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("scheme `ftp` is not supported"), "{err}");
    assert!(listed(&c).await.is_empty());

    // An https:// one is taken.
    let mut h = hello("tls-worker", "i-tls", "");
    h.services = vec![edgeplane::proto::DeclaredService {
        name: "vault".into(),
        url: "https://vault.internal/api".into(),
    }];
    let mut raw = RawWorker::open(c.channel().await, None).await;
    raw.hello(h).await;
    assert_eq!(listed(&c).await.len(), 1);
    c.stop().await;
}

#[tokio::test]
async fn worker_cap_refuses_the_next_worker_and_keeps_the_others() {
    let c = TestCoordinator::start(CoordinatorConfig {
        max_workers: 2,
        ..fast_config()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (a, stop_a) = c.worker("first", dir.path()).await;
    let (b, stop_b) = c.worker("second", dir.path()).await;

    let status = refusal(c.channel().await, None, Some(Out::Hello(hello("third", "i-third", "")))).await;
    assert_code(&status, Code::ResourceExhausted);
    assert!(status.message().contains('2'), "the cap should be named: {status:?}");

    // The first two still hold their sessions: keepalives keep being acked.
    for agent in [&a, &b] {
        let acked = agent.status().borrow().keepalives_acked;
        let s = within(agent.wait_for(|s| s.keepalives_acked > acked + 2)).await;
        assert!(s.connected && s.sessions == 1, "{s:?}");
    }
    let mut workers = listed(&c).await;
    workers.sort_by(|x, y| x.1.cmp(&y.1));
    let healthy = WorkerStatus::Healthy as i32;
    assert_eq!(
        workers,
        [
            (
                a.status().borrow().worker_id.clone().unwrap(),
                "first".to_string(),
                healthy
            ),
            (
                b.status().borrow().worker_id.clone().unwrap(),
                "second".to_string(),
                healthy
            ),
        ]
    );
    stop_a.cancel();
    stop_b.cancel();
    c.stop().await;
}

#[tokio::test]
async fn connection_limit_closes_the_extra_connection_and_keeps_serving() {
    let c = TestCoordinator::start(CoordinatorConfig {
        max_connections: 2,
        ..fast_config()
    })
    .await;
    let mut a = c.raw().await;
    a.hello(hello("conn-a", "inst-a", "")).await;
    let mut b = c.raw().await;
    b.hello(hello("conn-b", "inst-b", "")).await;

    // A third connection is closed at once: the call fails fast, not hangs.
    let third = async {
        let ch = tonic::transport::Endpoint::from_shared(c.url.clone())
            .unwrap()
            .connect()
            .await?;
        let mut admin = edgeplane::proto::admin_client::AdminClient::new(ch);
        admin
            .list_workers(ListWorkersRequest::default())
            .await
            .map_err(|s| s.into())
    };
    let res: Result<_, Box<dyn std::error::Error>> = within(third).await;
    assert!(res.is_err(), "a third connection was served past the limit");

    // The two within the limit are unaffected.
    a.send(Out::Keepalive(Keepalive {
        seq: 1,
        ..Default::default()
    }))
    .await;
    assert!(matches!(
        a.recv().await,
        Ok(Some(edgeplane::proto::coordinator_message::Msg::KeepaliveAck(_)))
    ));

    // Closing one frees its slot (retry until the coordinator has seen it close).
    drop(b);
    let names = within(async {
        loop {
            let Ok(ch) = tonic::transport::Endpoint::from_shared(c.url.clone())
                .unwrap()
                .connect()
                .await
            else {
                continue;
            };
            let mut admin = edgeplane::proto::admin_client::AdminClient::new(ch);
            if let Ok(r) = admin.list_workers(ListWorkersRequest::default()).await {
                return r.into_inner().workers.into_iter().map(|w| w.name).collect::<Vec<_>>();
            }
        }
    })
    .await;
    assert!(names.contains(&"conn-a".to_string()), "{names:?}");
}

#[tokio::test]
async fn a_tunnel_needs_the_live_session_secret() {
    use edgeplane::proto::worker_control_client::WorkerControlClient;
    let c = TestCoordinator::start(CoordinatorConfig {
        join_token: Some("join-secret".into()),
        ..fast_config()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = c.worker_config("victim", dir.path());
    cfg.join_token = Some("join-secret".into());
    let (agent, _stop) = start_agent(cfg).await;
    let id = agent.status().borrow().worker_id.clone().unwrap();

    let open = |token: Option<&'static str>, resume: &'static str| {
        let (id, url) = (id.clone(), c.url.clone());
        async move {
            let ch = tonic::transport::Endpoint::from_shared(url)
                .unwrap()
                .connect()
                .await
                .unwrap();
            let (_tx, rx) = tokio::sync::mpsc::channel::<edgeplane::proto::TunnelChunk>(1);
            let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
            req.metadata_mut().insert("x-edgeplane-worker-id", id.parse().unwrap());
            req.metadata_mut()
                .insert("x-edgeplane-resume-token", resume.parse().unwrap());
            if let Some(t) = token {
                req.metadata_mut()
                    .insert("authorization", format!("Bearer {t}").parse().unwrap());
            }
            WorkerControlClient::new(ch).tunnel(req).await.map(|_| ()).unwrap_err()
        }
    };
    // Without the join token: refused before anything else is looked at.
    assert_code(&within(open(None, "whatever")).await, Code::Unauthenticated);
    // With it, but a guessed session secret: nobody's traffic is hijacked.
    assert_code(
        &within(open(Some("join-secret"), "guessed-token")).await,
        Code::PermissionDenied,
    );
}

/// Every `/api/admin/` route is behind the admin token (one layer guards
/// them all, so a route added later cannot forget it), and answers with
/// it; a wrong token changes nothing, a drain included.
#[tokio::test]
async fn every_http_admin_route_needs_the_admin_token() {
    let c = TestCoordinator::start(CoordinatorConfig {
        admin_token: Some("adm1n-t0ken".into()),
        ..fast_config()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (agent, stop) = c.worker("guarded", dir.path()).await;
    let id = agent.status().borrow().worker_id.clone().expect("welcomed with an id");
    let http = reqwest::Client::new();
    let routes = [
        ("GET", "/api/admin/workers".to_string()),
        ("GET", format!("/api/admin/workers/{id}")),
        ("GET", "/api/admin/services".to_string()),
        ("GET", "/api/admin/gaps".to_string()),
        ("POST", format!("/api/admin/workers/{id}/drain")),
    ];
    for (method, path) in &routes {
        let req = |token: Option<&str>| {
            let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let r = http.request(m, format!("{}{path}", c.url));
            match token {
                Some(t) => r.bearer_auth(t),
                None => r,
            }
        };
        for token in [None, Some("wrong")] {
            let r = req(token).send().await.unwrap();
            assert_eq!(
                r.status(),
                reqwest::StatusCode::UNAUTHORIZED,
                "{method} {path} {token:?}"
            );
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body["error"], "unauthenticated", "{method} {path}: {body}");
        }
        let worker = c.registry.get(&id).unwrap().to_proto();
        assert_eq!(
            worker.status,
            edgeplane::proto::WorkerStatus::Healthy as i32,
            "a refused drain did nothing"
        );
        let r = req(Some("adm1n-t0ken")).send().await.unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::OK, "{method} {path}");
    }
    stop.cancel();
    c.stop().await;
}
