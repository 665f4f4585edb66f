//! The dashboard in a real browser: headless Chromium, driven by Selenium
//! from `tests/dashboard.py`, opens `/` on an in-process coordinator, sees
//! its workers, sees a killed one turn `disconnected` within 2 s without a
//! reload, and logs no console errors; with an admin token set, the page
//! asks for it and then shows the fleet. A screenshot of each is saved
//! under `<target>/test-artifacts/` (`EDGEPLANE_UPDATE_SCREENSHOT=1` also
//! writes `docs/dashboard.png`, the README's).
//!
//! Chromium, chromium-driver and Selenium are installed by `scripts/test`;
//! missing, these tests fail rather than skip.

mod common;

use common::backend::Backend;
use common::*;
use edgeplane::coordinator::CoordinatorConfig;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The browser script's whole run, kill included, stays within this.
const BROWSER_PATIENCE: Duration = Duration::from_secs(90);

fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("create the artifacts folder");
    dir
}

/// A Python that has Selenium: `EDGEPLANE_TEST_PYTHON`, `python3`, or
/// Debian's own (where `python3-selenium` installs).
fn python() -> String {
    let candidates = std::env::var("EDGEPLANE_TEST_PYTHON")
        .into_iter()
        .chain(["python3".to_string(), "/usr/bin/python3".to_string()]);
    for py in candidates {
        let ok = std::process::Command::new(&py)
            .args(["-c", "import selenium"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return py;
        }
    }
    panic!("no Python with Selenium: run scripts/test, which installs python3-selenium");
}

fn browser_present() {
    for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
        assert!(
            Path::new(path).exists(),
            "{path} is missing: run scripts/test, which installs Debian's {package}"
        );
    }
}

/// Starts `tests/dashboard.py` with `args`; its stdout is read line by line.
fn drive(args: &[&str]) -> (Child, tokio::io::Lines<BufReader<tokio::process::ChildStdout>>) {
    browser_present();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard.py");
    let mut child = Command::new(python())
        .arg(script)
        .args(["--chromium", CHROMIUM, "--chromedriver", CHROMEDRIVER])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start the browser script");
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    (child, lines)
}

/// The script's next line on stdout (it must say `want`).
async fn expect_line(lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>, want: &str) {
    let line = tokio::time::timeout(BROWSER_PATIENCE, lines.next_line())
        .await
        .unwrap_or_else(|_| panic!("the browser script said nothing for {BROWSER_PATIENCE:?} (waiting for {want})"))
        .expect("read the script's output");
    assert_eq!(
        line.as_deref(),
        Some(want),
        "the browser script failed (its stderr is above)"
    );
}

async fn finish(mut child: Child) {
    let status = tokio::time::timeout(BROWSER_PATIENCE, child.wait())
        .await
        .expect("the browser script ends")
        .expect("wait for the browser script");
    assert!(status.success(), "the browser script failed: {status}");
}

/// A coordinator that keeps disconnected workers on screen (the worker
/// timeout is a minute), and `/service/` traffic through it.
fn config() -> CoordinatorConfig {
    CoordinatorConfig {
        worker_timeout: Duration::from_secs(60),
        ..fast_config()
    }
}

/// Two workers as an operator would meet them: a GPU box with `notes`
/// ready and `rag` still loading, and a CPU box with `notes` ready.
async fn fleet(
    c: &TestCoordinator,
    dir: &Path,
) -> (
    Vec<Backend>,
    Vec<(edgeplane::worker::AgentHandle, tokio_util::sync::CancellationToken)>,
) {
    let backends = vec![
        common::backend::start("gpu-notes").await,
        common::backend::start("gpu-rag").await,
        common::backend::start("cpu-notes").await,
    ];
    backends[1].set_ready(false);
    let mut gpu = c.worker_config("gpu-a100-01", dir);
    gpu.gpus = vec![("NVIDIA A100".into(), 80 << 30)];
    gpu.labels = vec![("zone".into(), "rack-3".into())];
    gpu.services = vec![
        ("notes".into(), backends[0].url.clone()),
        ("rag".into(), backends[1].url.clone()),
    ];
    gpu.probe_interval = Duration::from_millis(50);
    let mut cpu = c.worker_config("cpu-edge-02", dir);
    cpu.services = vec![("notes".into(), backends[2].url.clone())];
    cpu.probe_interval = Duration::from_millis(50);
    let agents = vec![start_agent(gpu).await, start_agent(cpu).await];
    notes_ready_on(c, &["gpu-a100-01", "cpu-edge-02"]).await;
    (backends, agents)
}

/// Waits, on the registry's own events (no admin credential needed), for
/// `notes-coa` to be ready on each of `names`.
async fn notes_ready_on(c: &TestCoordinator, names: &[&str]) {
    use edgeplane::proto::ServiceState;
    let (now, mut events) = c.registry.subscribe();
    let ready = |w: &edgeplane::registry::WorkerView| {
        w.services
            .iter()
            .any(|s| s.name == "notes-coa" && s.state == ServiceState::Ready)
    };
    let mut done: std::collections::BTreeSet<String> =
        now.iter().filter(|w| ready(w)).map(|w| w.name.clone()).collect();
    while !names.iter().all(|n| done.contains(*n)) {
        let ev = within(events.recv()).await.expect("the registry's events");
        if ready(&ev.worker) {
            done.insert(ev.worker.name.clone());
        }
    }
}

/// Requests through the proxy until dropped: some answered, some not
/// (`llm` has no replica), so rates and errors have something to show.
fn traffic(c: &TestCoordinator) -> tokio_util::sync::DropGuard {
    let stop = tokio_util::sync::CancellationToken::new();
    let (url, s) = (c.url.clone(), stop.clone());
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut tick = tokio::time::interval(Duration::from_millis(40));
        for i in 0u64.. {
            tokio::select! {
                _ = tick.tick() => {}
                () = s.cancelled() => return,
            }
            let path = if i % 10 == 9 {
                "llm/v1/models"
            } else {
                "notes/echo/hello"
            };
            let _ = client.get(format!("{url}/service/{path}")).send().await;
        }
    });
    stop.drop_guard()
}

fn keep_screenshot(path: &Path) {
    let png = std::fs::read(path).expect("the screenshot was written");
    assert!(png.starts_with(b"\x89PNG"), "the screenshot is a PNG");
    if std::env::var_os("EDGEPLANE_UPDATE_SCREENSHOT").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/dashboard.png");
        std::fs::write(docs, png).expect("write docs/dashboard.png");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_sees_the_fleet_and_a_killed_worker_turn_disconnected_without_a_reload() {
    let c = TestCoordinator::start(config()).await;
    let dir = tempfile::tempdir().unwrap();
    let (_backends, mut agents) = fleet(&c, dir.path()).await;
    let _traffic = traffic(&c);
    let shot = artifacts().join("dashboard.png");
    let url = format!("{}/", c.url);
    let (mut child, mut lines) = drive(&[
        "--url",
        &url,
        "--expect",
        "gpu-a100-01,cpu-edge-02",
        "--kill",
        "cpu-edge-02",
        "--traffic",
        "notes-coa",
        "--gap",
        "llm-inference",
        "--screenshot",
        shot.to_str().unwrap(),
    ]);
    expect_line(&mut lines, "SEEN").await;
    // Kill the CPU box: its agent stops, its stream closes.
    let (_agent, stop) = agents.pop().unwrap();
    stop.cancel();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"KILLED cpu-edge-02\n").await.unwrap();
    stdin.flush().await.unwrap();
    expect_line(&mut lines, "OK").await;
    finish(child).await;
    keep_screenshot(&shot);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_admin_token_set_the_page_asks_for_it_then_shows_the_fleet() {
    let c = TestCoordinator::start(CoordinatorConfig {
        admin_token: Some("dashboard-admin-token".into()),
        ..config()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (_backends, _agents) = fleet(&c, dir.path()).await;
    let shot = artifacts().join("dashboard-token.png");
    let url = format!("{}/ui", c.url);
    let (child, mut lines) = drive(&[
        "--url",
        &url,
        "--expect",
        "gpu-a100-01,cpu-edge-02",
        "--token",
        "dashboard-admin-token",
        "--screenshot",
        shot.to_str().unwrap(),
    ]);
    expect_line(&mut lines, "SEEN").await;
    expect_line(&mut lines, "OK").await;
    finish(child).await;
    let png = std::fs::read(&shot).expect("the screenshot was written");
    assert!(png.starts_with(b"\x89PNG"));
    c.stop().await;
}

/// Registers `n` workers straight into the registry (no streams: a fleet
/// this size of real agents would measure the machine, not the page);
/// returns their ids and session generations by name.
fn register_fleet(c: &TestCoordinator, n: usize) -> std::collections::BTreeMap<String, (String, u64)> {
    use edgeplane::proto::{Capabilities, Gpu, Hello};
    use edgeplane::registry::SessionLink;
    let mut out = std::collections::BTreeMap::new();
    for i in 0..n {
        let name = format!("edge-{i:05}");
        let hello = Hello {
            name: name.clone(),
            instance_id: format!("instance-{i}"),
            capabilities: Some(Capabilities {
                cpu_cores: 8,
                memory_bytes: 32 << 30,
                gpus: (i % 4 == 0)
                    .then(|| Gpu {
                        model: "NVIDIA L4".into(),
                        memory_bytes: 24 << 30,
                    })
                    .into_iter()
                    .collect(),
                ..Default::default()
            }),
            version: "0.1.0".into(),
            ..Default::default()
        };
        let (link, _notices) = SessionLink::new(c.registry.clock().now_ms());
        let r = c
            .registry
            .register(&hello, std::sync::Arc::new(link), &Default::default(), None)
            .expect("registered");
        out.insert(name, (r.worker_id, r.generation));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_ten_thousand_workers_the_page_shows_a_page_of_rows_filters_and_follows_changes() {
    const N: usize = 10_000;
    let c = TestCoordinator::start(CoordinatorConfig {
        // Nothing keeps these sessions alive: keep them healthy for the test.
        heartbeat_timeout: Duration::from_secs(300),
        worker_timeout: Duration::from_secs(600),
        ..fast_config()
    })
    .await;
    let fleet = register_fleet(&c, N);
    let shot = artifacts().join("dashboard-10k.png");
    let url = format!("{}/", c.url);
    let count = N.to_string();
    let (mut child, mut lines) = drive(&[
        "--url",
        &url,
        "--count",
        &count,
        "--filter",
        "edge-0424",
        "--filtered",
        "10",
        "--kill",
        "edge-04242",
        "--screenshot",
        shot.to_str().unwrap(),
    ]);
    expect_line(&mut lines, "SEEN").await;
    let (id, generation) = &fleet["edge-04242"];
    c.registry.disconnect(id, *generation, "stream closed by worker");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"KILLED edge-04242\n").await.unwrap();
    stdin.flush().await.unwrap();
    expect_line(&mut lines, "OK").await;
    finish(child).await;
    c.stop().await;
}
