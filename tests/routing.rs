//! Service routing through the coordinator: by name and alias, query and
//! body kept, streaming both ways, load shared, failures retried, loading
//! replicas skipped, per-service health, and gRPC by service name.

mod common;

use common::backend::{self, Backend};
use common::*;
use edgeplane::proto::notes::{notes_client::NotesClient, ConvertRequest};
use edgeplane::worker::AgentHandle;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest};

/// How the coordinator reaches the replicas: every test runs both ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Direct,
    Tunnel,
}

macro_rules! both_paths {
    ($($name:ident),* $(,)?) => {
        mod direct {
            $( #[tokio::test] async fn $name() { super::$name(super::Path::Direct).await } )*
        }
        mod tunnel {
            $( #[tokio::test] async fn $name() { super::$name(super::Path::Tunnel).await } )*
        }
    };
}

both_paths!(
    routes_by_name_and_alias_keeping_method_query_and_body,
    streams_responses_and_large_bodies_without_buffering,
    replicas_share_load_and_a_dead_one_loses_no_idempotent_request,
    a_loading_service_gets_no_traffic_and_health_follows_readiness,
    grpc_calls_are_routed_by_service_name_with_trailers,
    services_and_gaps_show_providers_and_shortfalls,
    a_service_declared_by_its_alias_is_one_catalog_service,
);

/// A worker declaring `notes-coa` at `b`, probing every 20 ms.
async fn notes_worker(
    path: Path,
    c: &TestCoordinator,
    name: &str,
    b: &Backend,
    dir: &std::path::Path,
) -> (AgentHandle, CancellationToken) {
    let mut cfg = c.worker_config(name, dir);
    cfg.data_path = match path {
        Path::Direct => edgeplane::worker::DataPath::Direct,
        Path::Tunnel => edgeplane::worker::DataPath::Tunnel,
    };
    cfg.services = vec![("notes".into(), b.url.clone())];
    cfg.probe_interval = Duration::from_millis(20);
    start_agent(cfg).await
}

/// Follows gRPC health of `service` until it reports `want`.
async fn health_becomes(c: &TestCoordinator, service: &str, want: ServingStatus) {
    let mut h = HealthClient::new(c.channel().await);
    let mut stream = h
        .watch(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner();
    within(async {
        loop {
            let m = stream.message().await.unwrap().expect("health watch open");
            if m.status() == want {
                return;
            }
        }
    })
    .await
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap()
}

async fn routes_by_name_and_alias_keeping_method_query_and_body(path: Path) {
    let c = TestCoordinator::start(fast_config()).await;
    let b = backend::start("replica-a").await;
    let dir = tempfile::tempdir().unwrap();
    let (_w, _s) = notes_worker(path, &c, "cpu-1", &b, dir.path()).await;
    health_becomes(&c, "notes-coa", ServingStatus::Serving).await;

    // The seed's check, through the alias.
    let r = http()
        .post(format!("{}/service/notes/convert", c.url))
        .header("content-type", "application/json")
        .body(r#"{"notes":"test","client_name":"test"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-request-id"));
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["full_text"], "test");
    assert_eq!(v["client_name"], "test");
    assert_eq!(v["served_by"], "replica-a");

    // By full name: method, path, query string and body arrive as sent.
    let r = http()
        .put(format!("{}/service/notes-coa/echo/a/b?x=1&y=two%20words", c.url))
        .header("x-request-id", "req-42")
        .header("host", "edge.example")
        .body("payload-bytes")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["method"], "PUT");
    assert_eq!(v["path"], "/echo/a/b");
    assert_eq!(v["query"], "x=1&y=two%20words");
    assert_eq!(v["body"], "payload-bytes");
    assert_eq!(v["x_request_id"], "req-42");
    assert_eq!(v["x_forwarded_for"], "127.0.0.1");
    assert_eq!(v["x_forwarded_host"], "edge.example");
    assert_eq!(v["x_forwarded_proto"], "http");

    // Unknown service: 404 with a stable code.
    let r = http().get(format!("{}/service/nope/x", c.url)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"], "unknown_service");

    // A catalog service nobody runs: 503 naming the reason.
    let r = http()
        .get(format!("{}/service/llm/generate", c.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"], "no_ready_endpoint");
    assert_eq!(v["reason"], "none_placed");
}

async fn streams_responses_and_large_bodies_without_buffering(path: Path) {
    let c = TestCoordinator::start(fast_config()).await;
    let b = backend::start("replica-a").await;
    let dir = tempfile::tempdir().unwrap();
    let (_w, _s) = notes_worker(path, &c, "cpu-1", &b, dir.path()).await;
    health_becomes(&c, "notes-coa", ServingStatus::Serving).await;

    // The first chunk arrives while the backend is still holding the second.
    let mut r = http()
        .get(format!("{}/service/notes/stream", c.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let first = within(r.chunk()).await.unwrap().unwrap();
    assert_eq!(&first[..], b"first\n");
    b.state.release.notify_one();
    let second = within(r.chunk()).await.unwrap().unwrap();
    assert_eq!(&second[..], b"second\n");

    // A 16 MiB upload, sent as a stream of unknown length, arrives whole.
    let chunk = bytes::Bytes::from(vec![7u8; 1 << 20]);
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = (0..16).map(|_| Ok(chunk.clone())).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let r = http()
        .post(format!("{}/service/notes/upload", c.url))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["bytes"], 16 << 20);
}

async fn replicas_share_load_and_a_dead_one_loses_no_idempotent_request(path: Path) {
    let c = TestCoordinator::start(fast_config()).await;
    let (a, b) = (backend::start("replica-a").await, backend::start("replica-b").await);
    let dir = tempfile::tempdir().unwrap();
    let (_wa, _sa) = notes_worker(path, &c, "cpu-a", &a, dir.path()).await;
    let (wb, _sb) = notes_worker(path, &c, "cpu-b", &b, dir.path()).await;
    let mut watch = c.watch().await;
    watch
        .until_service(Some("cpu-b"), None, edgeplane::proto::ServiceState::Ready)
        .await;
    let client = reqwest::Client::new();
    let get = |client: reqwest::Client, url: String| async move { client.get(url).send().await.map(|r| r.status()) };
    let url = format!("{}/service/notes/echo", c.url);
    health_becomes(&c, "notes-coa", ServingStatus::Serving).await;
    within(async {
        while a.hits() == 0 || b.hits() == 0 {
            assert_eq!(get(client.clone(), url.clone()).await.unwrap(), 200);
        }
    })
    .await;

    // Concurrent load lands on both replicas.
    let before = (a.hits(), b.hits());
    let tasks: Vec<_> = (0..200)
        .map(|_| tokio::spawn(get(client.clone(), url.clone())))
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 200);
    }
    let (da, db) = (a.hits() - before.0, b.hits() - before.1);
    assert_eq!(da + db, 200);
    assert!(da >= 40 && db >= 40, "load not shared: a={da} b={db}");

    // Replica b's process dies mid-run (its worker still reports it ready):
    // every idempotent request still succeeds, retried on a.
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let (client, url) = (client.clone(), url.clone());
            let stop = b.stop.clone();
            tokio::spawn(async move {
                if i == 50 {
                    stop.cancel();
                }
                get(client, url).await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 200, "a request was lost when a replica died");
    }

    // The worker running b goes away: from that event on, nothing is routed to it.
    let b2 = backend::start_on(tokio::net::TcpListener::bind(b.addr).await.unwrap(), "replica-b-again");
    let id_b = wb.status().borrow().worker_id.clone().unwrap();
    wb.abort();
    watch
        .until_status(&id_b, edgeplane::proto::WorkerStatus::Disconnected)
        .await;
    for _ in 0..50 {
        assert_eq!(get(client.clone(), url.clone()).await.unwrap(), 200);
    }
    assert_eq!(b2.hits(), 0, "traffic reached a disconnected worker's replica");
}

async fn a_loading_service_gets_no_traffic_and_health_follows_readiness(path: Path) {
    let c = TestCoordinator::start(fast_config()).await;
    let b = backend::start("slow-loader").await;
    b.set_ready(false);
    let dir = tempfile::tempdir().unwrap();
    let (_w, _s) = notes_worker(path, &c, "gpu-1", &b, dir.path()).await;

    let mut h = HealthClient::new(c.channel().await);
    let mut health = h
        .watch(HealthCheckRequest {
            service: "notes-coa".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = within(health.message()).await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::NotServing);

    // Wait until the worker has reported the service as loading.
    let mut watch = c.watch().await;
    watch
        .until_service(None, None, edgeplane::proto::ServiceState::Loading)
        .await;
    let r = http()
        .get(format!("{}/service/notes/echo", c.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"], "no_ready_endpoint");
    assert_eq!(v["reason"], "all_loading");
    assert!(v["message"].as_str().unwrap().contains("loading"), "{v}");
    assert_eq!(b.hits(), 0);

    // Loaded: SERVING, and traffic flows.
    b.set_ready(true);
    let next = within(health.message()).await.unwrap().unwrap();
    assert_eq!(next.status(), ServingStatus::Serving);
    let r = http()
        .get(format!("{}/service/notes/echo", c.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Its check starts failing: NOT_SERVING again, and 503 `all_failed`.
    b.set_ready(false);
    let next = within(health.message()).await.unwrap().unwrap();
    assert_eq!(next.status(), ServingStatus::NotServing);
    let r = http()
        .get(format!("{}/service/notes/echo", c.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["reason"], "all_failed");
}

async fn grpc_calls_are_routed_by_service_name_with_trailers(path: Path) {
    let c = TestCoordinator::start(fast_config()).await;
    let b = backend::start("grpc-replica").await;
    let dir = tempfile::tempdir().unwrap();
    let (_w, _s) = notes_worker(path, &c, "cpu-1", &b, dir.path()).await;
    health_becomes(&c, "notes.v1.Notes", ServingStatus::Serving).await;

    let mut notes = NotesClient::new(c.channel().await);
    let reply = notes
        .convert(ConvertRequest {
            notes: "call the supplier".into(),
            client_name: "acme".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.full_text, "call the supplier");
    assert_eq!(reply.served_by, "grpc-replica");

    // Server streaming, ending with the backend's own status in the trailers.
    let mut stream = notes
        .convert_stream(ConvertRequest {
            notes: "one\ntwo\nthree".into(),
            client_name: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut lines = Vec::new();
    let end = loop {
        match stream.message().await {
            Ok(Some(chunk)) => lines.push(chunk.line),
            Ok(None) => panic!("stream ended without the backend's status"),
            Err(status) => break status,
        }
    };
    assert_eq!(lines, ["one", "two", "three"]);
    assert_eq!(end.code(), tonic::Code::DataLoss);
    assert_eq!(end.message(), "trailer from the backend");

    // gRPC for a service nothing serves: UNIMPLEMENTED, as from any gRPC server.
    let mut raw = tonic::client::Grpc::new(c.channel().await);
    raw.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/nope.v1.Nope/Call");
    let codec = tonic_prost::ProstCodec::<ConvertRequest, ConvertRequest>::default();
    let err = raw
        .unary(tonic::Request::new(ConvertRequest::default()), path, codec)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented, "{err:?}");

    // The only replica stops being ready: UNAVAILABLE, not a hang.
    b.set_ready(false);
    health_becomes(&c, "notes.v1.Notes", ServingStatus::NotServing).await;
    let err = notes.convert(ConvertRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(err.message().contains("failed its readiness check"), "{err:?}");
}

async fn services_and_gaps_show_providers_and_shortfalls(path: Path) {
    let c = TestCoordinator::start(fast_config()).await;
    let b = backend::start("replica-a").await;
    let dir = tempfile::tempdir().unwrap();
    let (_w, _s) = notes_worker(path, &c, "cpu-1", &b, dir.path()).await;
    health_becomes(&c, "notes-coa", ServingStatus::Serving).await;

    let services: serde_json::Value = http()
        .get(format!("{}/api/admin/services", c.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let notes = services
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "notes-coa")
        .unwrap();
    assert_eq!(notes["aliases"][0], "notes");
    assert_eq!(notes["ready"], 1);
    assert_eq!(notes["providers"][0]["worker"], "cpu-1");
    assert_eq!(notes["providers"][0]["state"], "ready");
    assert_eq!(notes["providers"][0]["routable"], true);

    let gaps: serde_json::Value = http()
        .get(format!("{}/api/admin/gaps", c.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let gaps = gaps.as_array().unwrap();
    let of = |n: &str| gaps.iter().find(|g| g["service"] == n).unwrap().clone();
    assert_eq!(of("notes-coa")["status"], "warning", "one ready provider");
    assert_eq!(of("llm-inference")["status"], "critical");
    assert_eq!(of("llm-inference")["reason"], "none_placed");
    assert_eq!(gaps[0]["status"], "critical", "most urgent first");

    // The same over gRPC, for grpcurl and the CLI.
    let mut admin = c.admin().await;
    let list = admin
        .list_services(edgeplane::proto::ListServicesRequest {})
        .await
        .unwrap()
        .into_inner()
        .services;
    let notes = list.iter().find(|s| s.name == "notes-coa").unwrap();
    assert_eq!((notes.ready, notes.gap.as_str()), (1, "warning"));
    assert_eq!(notes.providers[0].worker, "cpu-1");
    assert!(notes.providers[0].routable);
    assert_eq!(notes.providers[0].state, edgeplane::proto::ServiceState::Ready as i32);
    let llm = list.iter().find(|s| s.name == "llm-inference").unwrap();
    assert_eq!(
        (llm.ready, llm.gap.as_str(), llm.requires.as_str()),
        (0, "critical", "gpu")
    );
}

/// A service name that sorts after every other: a worker sends the
/// reports of one snapshot in name order, so once this one is shown, every
/// report the worker sent before it has been applied.
const BARRIER: &str = "zz-barrier";

/// Reports [`BARRIER`] and waits until the coordinator shows it.
async fn reports_applied(agent: &AgentHandle, watch: &mut Watcher) {
    agent.set_service(BARRIER, edgeplane::proto::ServiceState::Ready, "barrier");
    watch
        .until_service(Some(agent.name()), Some(BARRIER), edgeplane::proto::ServiceState::Ready)
        .await;
}

/// `GET /api/admin/services`, without the barrier.
async fn admin_services(c: &TestCoordinator) -> Vec<serde_json::Value> {
    let services: serde_json::Value = http()
        .get(format!("{}/api/admin/services", c.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut services = services.as_array().unwrap().clone();
    services.retain(|s| s["name"] != BARRIER);
    services
}

/// `--service notes=URL` declares the catalog's `notes-coa`: the admin
/// views show that one service, served by the worker, and no `notes` of
/// its own beside it.
async fn a_service_declared_by_its_alias_is_one_catalog_service(path: Path) {
    let c = TestCoordinator::start(fast_config()).await;
    let b = backend::start("replica-a").await;
    let dir = tempfile::tempdir().unwrap();
    let mut watch = c.watch().await;
    let (w, _s) = notes_worker(path, &c, "cpu-1", &b, dir.path()).await;
    watch
        .until_service(Some("cpu-1"), Some("notes-coa"), edgeplane::proto::ServiceState::Ready)
        .await;
    reports_applied(&w, &mut watch).await;

    let services = admin_services(&c).await;
    let names: Vec<&str> = services.iter().filter_map(|s| s["name"].as_str()).collect();
    assert!(
        !names.contains(&"notes"),
        "the alias became a service of its own: {names:?}"
    );
    let notes = services.iter().find(|s| s["name"] == "notes-coa").unwrap();
    assert_eq!(notes["in_catalog"], true);
    assert_eq!(notes["ready"], 1, "{notes}");
    let providers = notes["providers"].as_array().unwrap();
    assert_eq!(providers.len(), 1, "{notes}");
    assert_eq!(
        (
            &providers[0]["worker"],
            &providers[0]["state"],
            &providers[0]["routable"]
        ),
        (&"cpu-1".into(), &"ready".into(), &true.into())
    );

    // The worker's own record names it the same way.
    let workers: serde_json::Value = http()
        .get(format!("{}/api/admin/workers", c.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let declared: Vec<&str> = workers[0]["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .filter(|n| *n != BARRIER)
        .collect();
    assert_eq!(declared, ["notes-coa"], "{workers}");
}

/// A service declared by its alias keeps the state its probe found when the
/// worker reconnects: the worker's placeholder under the alias ("declared,
/// so ready") must not come back and overwrite it.
#[tokio::test]
async fn an_alias_declared_service_keeps_its_probed_state_across_a_reconnect() {
    let c = TestCoordinator::start(fast_config()).await;
    let b = backend::start("uploads").await;
    b.set_ready(false);
    let dir = tempfile::tempdir().unwrap();
    let mut watch = c.watch().await;
    let mut cfg = c.worker_config("cpu-1", dir.path());
    cfg.data_path = edgeplane::worker::DataPath::Direct;
    // `upload` sorts after `document-processing`: a placeholder sent under
    // it at session start would land last.
    cfg.services = vec![("upload".into(), b.url.clone())];
    cfg.probe_interval = Duration::from_millis(20);
    let (w, _s) = start_agent(cfg).await;
    watch
        .until_service(
            Some("cpu-1"),
            Some("document-processing"),
            edgeplane::proto::ServiceState::Loading,
        )
        .await;

    c.registry.close_all("test: make the worker reconnect");
    within(w.wait_for(|s| s.connected && s.sessions == 2)).await;
    reports_applied(&w, &mut watch).await;

    let services = admin_services(&c).await;
    let names: Vec<&str> = services.iter().filter_map(|s| s["name"].as_str()).collect();
    assert!(!names.contains(&"upload"), "{names:?}");
    let docs = services.iter().find(|s| s["name"] == "document-processing").unwrap();
    assert_eq!(
        docs["ready"], 0,
        "a service that never passed its check is routed: {docs}"
    );
    assert_eq!(docs["providers"][0]["state"], "loading", "{docs}");
    let r = http().get(format!("{}/service/upload/x", c.url)).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(b.hits(), 0);
}

#[tokio::test]
async fn a_stalled_download_blocks_neither_other_requests_nor_keepalives_in_the_tunnel() {
    let c = TestCoordinator::start(fast_config()).await;
    let b = backend::start("replica-a").await;
    let dir = tempfile::tempdir().unwrap();
    let (w, _s) = notes_worker(Path::Tunnel, &c, "nat-1", &b, dir.path()).await;
    health_becomes(&c, "notes-coa", ServingStatus::Serving).await;

    // A client starts a 32 MiB download through the tunnel and stops reading.
    let mut stalled = http().get(format!("{}/service/notes/big", c.url)).send().await.unwrap();
    assert_eq!(stalled.status(), 200);
    within(stalled.chunk()).await.unwrap().unwrap();

    // Meanwhile 100 concurrent requests share the same tunnel and all complete.
    let client = reqwest::Client::new();
    let acked_before = w.status().borrow().keepalives_acked;
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let (client, url) = (client.clone(), format!("{}/service/notes/echo?i={i}", c.url));
            tokio::spawn(async move { client.get(url).send().await.unwrap().status() })
        })
        .collect();
    for t in tasks {
        assert_eq!(within(t).await.unwrap(), 200);
    }
    // And the control stream kept its keepalives going throughout.
    w.wait_for(|s| s.keepalives_acked >= acked_before + 5 && s.connected)
        .await;

    // The stalled download still completes when its reader comes back.
    let mut total = 0usize;
    while let Some(chunk) = within(stalled.chunk()).await.unwrap() {
        total += chunk.len();
    }
    assert!(total >= (32 << 20) - (64 << 10), "got {total} bytes");
}
