//! The process runtime and the demo, with real processes: an assigned
//! service is started, reported loading then ready, routed; killed, it is
//! reported failed and restarted; stopped, nothing is left behind.

mod common;

use common::*;
use edgeplane::proto::{ServiceState, WorkerEvent};
use std::time::Duration;

/// Whether any live process carries `KEY=VALUE` in its environment.
fn process_with_env(marker: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if env.split(|b| *b == 0).any(|kv| kv == marker.as_bytes()) {
            found.push(pid);
        }
    }
    found
}

fn service_state(e: &WorkerEvent, name: &str) -> Option<(ServiceState, String)> {
    let w = e.worker.as_ref()?;
    let s = w.services.iter().find(|s| s.name == name)?;
    Some((ServiceState::try_from(s.state).ok()?, s.message.clone()))
}

#[tokio::test]
async fn process_runtime_starts_restarts_and_stops_what_it_is_assigned() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = catalog_config(
        dir.path(),
        &format!(
            r#"
[[service]]
name = "echo-model"
aliases = ["echo"]
requires = "cpu"
port = {port}
command = ["edgeplane", "sample-service", "--port", "{{port}}", "--name", "echo-model", "--load-time", "300ms", "--bind", "127.0.0.1"]
readiness = {{ http = "/health" }}
"#
        ),
    );
    let c = TestCoordinator::start(config).await;
    let mut watch = c.watch().await;
    let mut cfg = c.worker_config("runner", dir.path());
    cfg.runtime = edgeplane::worker::RuntimeChoice::Process;
    cfg.self_exe = Some(env!("CARGO_BIN_EXE_edgeplane").into());
    cfg.probe_interval = Duration::from_millis(50);
    cfg.stop_grace = Duration::from_secs(2);
    let state_dir = cfg.state_dir.clone().unwrap();
    let (agent, stop) = start_agent(cfg).await;

    // Assigned -> started -> loading (the 300 ms "model load") -> ready -> routed.
    watch
        .until(|e| service_state(e, "echo-model").is_some_and(|(s, _)| s == ServiceState::Loading))
        .await;
    watch
        .until(|e| service_state(e, "echo-model").is_some_and(|(s, _)| s == ServiceState::Ready))
        .await;
    let r = reqwest::Client::new()
        .post(format!("{}/service/echo/convert", c.url))
        .json(&serde_json::json!({ "notes": "hello", "client_name": "t" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["served_by"], "echo-model");
    assert_eq!(v["full_text"], "hello");

    // Killed: failed with its exit status, restarted, ready again.
    let pidfile = state_dir.join("run").join("echo-model.pid");
    let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    let (_, why) = watch
        .until(|e| service_state(e, "echo-model").is_some_and(|(s, _)| s == ServiceState::Failed))
        .await
        .worker
        .map(|w| {
            let s = w.services.into_iter().find(|s| s.name == "echo-model").unwrap();
            (s.state, s.message)
        })
        .unwrap();
    assert!(why.contains("exited") || why.contains("failing"), "{why}");
    watch
        .until(|e| service_state(e, "echo-model").is_some_and(|(s, _)| s == ServiceState::Ready))
        .await;
    let new_pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    assert_ne!(new_pid, pid, "the service was restarted as a new process");

    // Stopped with the worker: no process of it is left.
    assert!(!process_with_env("EDGEPLANE_WORKER=runner").is_empty());
    stop.cancel();
    within(agent.join()).await;
    let left = process_with_env("EDGEPLANE_WORKER=runner");
    assert!(left.is_empty(), "processes left behind: {left:?}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the service still listens"
    );
}

#[tokio::test]
async fn process_runtime_reconcile_stops_an_unassigned_service() {
    use edgeplane::worker::runtime::{process::ProcessContext, RunSpec, Runtime};
    let dir = tempfile::tempdir().unwrap();
    let (board, mut reports) = tokio::sync::watch::channel(std::collections::BTreeMap::new());
    let rt = Runtime::process(ProcessContext {
        board,
        self_exe: env!("CARGO_BIN_EXE_edgeplane").into(),
        run_dir: dir.path().join("run"),
        stop_grace: Duration::from_secs(2),
        worker_name: "reconciler".into(),
        restarts: Default::default(),
    });
    let port = free_port();
    let spec = RunSpec {
        name: "svc".into(),
        port,
        command: vec![
            "edgeplane".into(),
            "sample-service".into(),
            "--port".into(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
        ],
        image: String::new(),
        env: Default::default(),
    };
    rt.reconcile(vec![spec]).await;
    within(async {
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(process_with_env("EDGEPLANE_WORKER=reconciler").len(), 1);

    // Unassigned: SIGTERM, gone, and its report withdrawn.
    rt.reconcile(Vec::new()).await;
    assert!(process_with_env("EDGEPLANE_WORKER=reconciler").is_empty());
    assert!(reports.borrow_and_update().get("svc").is_none());

    // A service the process runtime cannot run says why.
    let image_only = RunSpec {
        name: "gpu-thing".into(),
        port,
        command: vec![],
        image: "repo/img:1".into(),
        env: Default::default(),
    };
    rt.reconcile(vec![image_only]).await;
    let r = within(reports.wait_for(|m| m.contains_key("gpu-thing"))).await.unwrap()["gpu-thing"].clone();
    assert_eq!(r.state, ServiceState::Failed);
    assert!(r.message.contains("image"), "{}", r.message);
    rt.shutdown().await;
}

/// A service that exits is started again, and each restart is counted (the
/// agent's `edgeplane_agent_service_restarts_total`).
#[tokio::test]
async fn process_runtime_restarts_a_service_that_exits_and_counts_it() {
    use edgeplane::worker::runtime::{process::ProcessContext, RunSpec, Runtime};
    let dir = tempfile::tempdir().unwrap();
    let (board, mut reports) = tokio::sync::watch::channel(std::collections::BTreeMap::new());
    let restarts = edgeplane::metrics::agent::Restarts::default();
    let rt = Runtime::process(ProcessContext {
        board,
        self_exe: env!("CARGO_BIN_EXE_edgeplane").into(),
        run_dir: dir.path().join("run"),
        stop_grace: Duration::from_secs(2),
        worker_name: "restarter".into(),
        restarts: restarts.clone(),
    });
    let spec = RunSpec {
        name: "crashy".into(),
        port: free_port(),
        command: vec!["sh".into(), "-c".into(), "exit 3".into()],
        image: String::new(),
        env: Default::default(),
    };
    rt.reconcile(vec![spec]).await;
    let r = within(reports.wait_for(|m| m.get("crashy").is_some_and(|r| r.message.contains("restarting"))))
        .await
        .unwrap()["crashy"]
        .clone();
    assert_eq!(r.state, ServiceState::Failed);
    assert!(r.message.contains("exited"), "{}", r.message);
    assert!(restarts.get() >= 1);
    rt.shutdown().await;
}

/// The demos place the embedded catalog's services on their fixed ports:
/// one demo at a time.
static DEMO: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn demo_runs_a_fleet_that_answers_and_leaves_nothing_behind() {
    let _one = DEMO.lock().await;
    let port = free_port();
    let name = format!("demo-test-{}", std::process::id());
    let mut demo = tokio::process::Command::new(env!("CARGO_BIN_EXE_edgeplane"))
        .args(["demo", "--port", &port.to_string(), "--name", &name])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    // The seed's check, once the sample service has loaded.
    let v: serde_json::Value = within(async {
        loop {
            if let Ok(r) = client
                .post(format!("{url}/service/notes/convert"))
                .json(&serde_json::json!({ "notes": "test", "client_name": "test" }))
                .send()
                .await
            {
                if r.status() == 200 {
                    return r.json().await.unwrap();
                }
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(v["full_text"], "test");
    assert!(v["matters_discussed"].is_array() && v["our_actions"].is_array());

    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_edgeplane"))
        .args(["workers", "--coordinator", &url])
        .output()
        .await
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    let row = table
        .lines()
        .find(|l| l.contains(&name))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains("healthy") && row.contains("notes-coa(ready)"), "{table}");

    // SIGTERM: the demo stops its services, its worker and its coordinator.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(demo.id().unwrap() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = within(demo.wait()).await.unwrap();
    assert!(status.success(), "{status}");
    let mut printed = String::new();
    tokio::io::AsyncReadExt::read_to_string(demo.stdout.as_mut().unwrap(), &mut printed)
        .await
        .unwrap();
    assert!(printed.contains("notes-coa") && printed.contains("ready"), "{printed}");
    let left = process_with_env(&format!("EDGEPLANE_WORKER={name}"));
    assert!(left.is_empty(), "processes left behind: {left:?}");
}

/// `demo --tls` prints the commands to try; each works as printed (TLS
/// with `-cacert`, the admin certificate), and plaintext is refused.
#[tokio::test]
async fn demo_tls_prints_grpcurl_and_curl_commands_that_work() {
    use tokio::io::AsyncBufReadExt;
    let _one = DEMO.lock().await;
    let port = free_port();
    let name = format!("demo-tls-{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let mut demo = tokio::process::Command::new(env!("CARGO_BIN_EXE_edgeplane"))
        .args(["demo", "--tls", "--port", &port.to_string(), "--name", &name, "--dir"])
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(demo.stdout.take().unwrap()).lines();
    let mut commands = Vec::new();
    within(async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let line = line.trim();
            if line.starts_with("curl ") || line.starts_with("grpcurl ") {
                commands.push(line.to_string());
            }
            if line.contains("Ctrl-C stops everything") {
                return;
            }
        }
        panic!("the demo ended before printing its instructions");
    })
    .await;
    // Keep reading what it narrates, so that it never blocks on stdout.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    assert_eq!(commands.len(), 5, "{commands:?}");
    assert!(
        commands.iter().all(|c| c.contains("-cacert") || c.contains("--cacert")),
        "{commands:?}"
    );
    let expect = [
        ("/api/admin/workers", name.as_str()),
        ("/service/notes/convert", "\"full_text\":\"test\""),
        (" list", "edgeplane.v1.Admin"),
        ("Admin/ListWorkers", name.as_str()),
        ("Health/Check", "SERVING"),
    ];
    for (what, wanted) in expect {
        let command = commands
            .iter()
            .find(|c| c.contains(what))
            .unwrap_or_else(|| panic!("{what}: {commands:?}"));
        // Until the sample service has loaded and become ready.
        let out = within(async {
            loop {
                let out = tokio::process::Command::new("sh")
                    .args(["-c", command])
                    .output()
                    .await
                    .unwrap();
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                if text.contains(wanted) {
                    return text;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        assert!(out.contains(wanted), "{command}: {out}");
    }
    let plain = reqwest::get(format!("http://127.0.0.1:{port}/health")).await.unwrap();
    assert_eq!(plain.status(), 400);
    assert!(plain.text().await.unwrap().contains("tls_required"));
    // The worker got its own certificate, its key kept private.
    use std::os::unix::fs::PermissionsExt;
    let key = dir.path().join("worker").join(&name).join("worker-key.pem");
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(demo.id().unwrap() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = within(demo.wait()).await.unwrap();
    assert!(status.success(), "{status}");
    let left = process_with_env(&format!("EDGEPLANE_WORKER={name}"));
    assert!(left.is_empty(), "processes left behind: {left:?}");
}

#[tokio::test]
async fn a_coordinator_restart_does_not_restart_placed_services() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = catalog_config(
        dir.path(),
        &format!(
            r#"
[[service]]
name = "steady-model"
requires = "cpu"
port = {port}
command = ["edgeplane", "sample-service", "--port", "{{port}}", "--name", "steady-model", "--bind", "127.0.0.1"]
readiness = {{ http = "/health" }}
"#
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let c = TestCoordinator::start_on(listener, config.clone());
    let mut watch = c.watch().await;
    let mut cfg = c.worker_config("keeper", dir.path());
    cfg.runtime = edgeplane::worker::RuntimeChoice::Process;
    cfg.self_exe = Some(env!("CARGO_BIN_EXE_edgeplane").into());
    cfg.probe_interval = Duration::from_millis(50);
    let pidfile = cfg.state_dir.clone().unwrap().join("run").join("steady-model.pid");
    let (agent, _stop) = start_agent(cfg).await;
    watch
        .until(|e| service_state(e, "steady-model").is_some_and(|(s, _)| s == ServiceState::Ready))
        .await;
    let pid = std::fs::read_to_string(&pidfile).unwrap();

    c.stop().await;
    let listener = within(async {
        loop {
            if let Ok(l) = tokio::net::TcpListener::bind(addr).await {
                return l;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    let c = TestCoordinator::start_on(listener, config);
    let mut watch = c.watch().await;
    agent.wait_for(|s| s.connected && s.sessions == 2).await;
    // The new coordinator adopts what the worker still runs: ready again, same process.
    let e = watch
        .until(|e| service_state(e, "steady-model").is_some_and(|(s, _)| s == ServiceState::Ready))
        .await;
    assert_eq!(e.worker.unwrap().name, "keeper");
    assert_eq!(
        std::fs::read_to_string(&pidfile).unwrap(),
        pid,
        "the service was restarted"
    );
    let r = reqwest::Client::new()
        .post(format!("{}/service/steady-model/convert", c.url))
        .json(&serde_json::json!({ "notes": "still here" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
