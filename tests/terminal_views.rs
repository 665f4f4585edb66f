//! The operator's terminal views, run as the real binary against an
//! in-process coordinator: `edgeplane services` and `edgeplane gaps` (a
//! table, and `--json` equal to the HTTP view), and `edgeplane workers
//! --watch`, a table drawn again as the fleet changes, ended by Ctrl-C or
//! by the coordinator.

mod common;

use common::*;
use edgeplane::coordinator::CoordinatorConfig;
use serde_json::Value;
use std::process::{Output, Stdio};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// The real `edgeplane` binary, its own variables cleared so the caller's
/// environment cannot change what it does.
fn edgeplane(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgeplane"));
    cmd.args(args)
        .env_remove("COORDINATOR_URL")
        .env_remove("EDGEPLANE_ADMIN_TOKEN")
        .env_remove("EDGEPLANE_LOG_FORMAT")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

async fn run(args: &[&str]) -> Output {
    within(edgeplane(args).output())
        .await
        .expect("the edgeplane binary runs")
}

/// Stdout of a run that must succeed.
async fn stdout_of(args: &[&str]) -> String {
    let out = run(args).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "edgeplane {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

async fn http_json(url: &str) -> Value {
    within(async { reqwest::get(url).await.expect("GET").json().await.expect("a JSON body") }).await
}

/// The words of the table row whose first column is `first`.
fn row<'a>(table: &'a str, first: &str) -> Vec<&'a str> {
    table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|w| w.first() == Some(&first))
        .unwrap_or_else(|| panic!("no row for {first}:\n{table}"))
}

#[tokio::test]
async fn services_and_gaps_print_tables_and_the_json_of_the_http_views() {
    let b = backend::start("replica-a").await;
    let (c, _worker) = notes_routed_to(&b.url, fast_config(), "direct").await;

    let table = stdout_of(&["services", "--coordinator", &c.url]).await;
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "SERVICE",
            "ALIASES",
            "REQUIRES",
            "PRIORITY",
            "PORT",
            "READY",
            "GAP",
            "PROVIDERS"
        ]
    );
    assert_eq!(
        row(&table, "notes-coa"),
        [
            "notes-coa",
            "notes",
            "cpu",
            "3",
            "8100",
            "1",
            "warning",
            "notes-worker(ready)"
        ]
    );
    assert_eq!(
        row(&table, "llm-inference"),
        ["llm-inference", "llm", "gpu", "1", "8105", "0", "critical", "-"]
    );

    let json: Value = serde_json::from_str(&stdout_of(&["services", "--coordinator", &c.url, "--json"]).await)
        .expect("services --json prints JSON");
    let notes = json
        .as_array()
        .expect("an array")
        .iter()
        .find(|s| s["name"] == "notes-coa")
        .expect("notes-coa listed");
    assert_eq!(notes["ready"], 1);
    assert_eq!(notes["providers"][0]["worker"], NOTES_WORKER);
    assert_eq!(notes["providers"][0]["state"], "ready");
    assert_eq!(notes["providers"][0]["routable"], true);
    assert_eq!(json, http_json(&format!("{}/api/admin/services", c.url)).await);

    let table = stdout_of(&["gaps", "--coordinator", &c.url]).await;
    let rows: Vec<Vec<&str>> = table.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(
        rows[0],
        ["SERVICE", "STATUS", "READY", "PROVIDERS", "PRIORITY", "REASON"]
    );
    assert_eq!(rows[1][1], "critical", "most urgent first:\n{table}");
    assert_eq!(
        row(&table, "llm-inference"),
        ["llm-inference", "critical", "0", "0", "1", "none_placed"]
    );
    assert_eq!(row(&table, "notes-coa"), ["notes-coa", "warning", "1", "1", "3", "-"]);

    let json: Value = serde_json::from_str(&stdout_of(&["gaps", "--coordinator", &c.url, "--json"]).await)
        .expect("gaps --json prints JSON");
    let notes = json
        .as_array()
        .expect("an array")
        .iter()
        .find(|g| g["service"] == "notes-coa")
        .expect("notes-coa listed");
    assert_eq!(
        (notes["status"].as_str(), notes["ready"].as_u64()),
        (Some("warning"), Some(1))
    );
    assert!(notes["reason"].is_null(), "a ready replica leaves no reason: {notes}");
    assert_eq!(json, http_json(&format!("{}/api/admin/gaps", c.url)).await);
    c.stop().await;
}

#[tokio::test]
async fn services_and_gaps_need_a_read_credential() {
    let c = TestCoordinator::start(CoordinatorConfig {
        admin_token: Some("adm1n-views".into()),
        read_token: Some("r3ad-views".into()),
        ..fast_config()
    })
    .await;
    for view in ["services", "gaps"] {
        let out = run(&[view, "--coordinator", &c.url]).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{view} without a token must fail");
        assert!(stderr.contains("UNAUTHENTICATED"), "{view}: {stderr}");
        let table = stdout_of(&[view, "--coordinator", &c.url, "--admin-token", "r3ad-views"]).await;
        assert!(row(&table, "llm-inference").contains(&"critical"), "{table}");
    }
    c.stop().await;
}

/// `edgeplane workers --watch` as a child process, its frames read from
/// its stdout (a pipe: each frame ends with a blank line).
struct Watch {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Watch {
    fn spawn(c: &TestCoordinator, extra: &[&str]) -> Watch {
        let mut args = vec!["workers", "--watch", "--coordinator", &c.url];
        args.extend_from_slice(extra);
        let mut child = edgeplane(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the watch");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Watch { child, lines }
    }

    async fn line(&mut self) -> String {
        within(self.lines.next_line())
            .await
            .expect("read the watch's output")
            .expect("the watch ended its output early")
    }

    /// The next frame: lines up to a blank one.
    async fn frame(&mut self) -> String {
        let mut frame = String::new();
        loop {
            let line = self.line().await;
            if line.is_empty() {
                return frame;
            }
            frame.push_str(&line);
            frame.push('\n');
        }
    }

    /// Frames until one satisfies `f`.
    async fn frame_where(&mut self, f: impl Fn(&str) -> bool) -> String {
        within(async {
            loop {
                let frame = self.frame().await;
                if f(&frame) {
                    return frame;
                }
            }
        })
        .await
    }

    /// Ctrl-C, as a terminal sends it; the watch must exit cleanly.
    async fn interrupt(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id().expect("still running") as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("send SIGINT");
        self.exits_cleanly().await;
    }

    async fn exits_cleanly(&mut self) {
        let status = within(self.child.wait()).await.expect("wait for the watch");
        let mut stderr = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            use tokio::io::AsyncReadExt;
            let _ = within(e.read_to_string(&mut stderr)).await;
        }
        assert!(status.success(), "the watch exited with {status}: {stderr}");
    }
}

#[tokio::test]
async fn workers_watch_draws_the_table_again_when_a_worker_joins() {
    let c = TestCoordinator::start(fast_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let (_a, stop_a) = c.worker("first-box", dir.path()).await;

    let mut watch = Watch::spawn(&c, &[]);
    let first = watch.frame().await;
    assert!(first.starts_with("1 worker: 1 healthy"), "{first}");
    assert!(first.lines().nth(1).unwrap().starts_with("NAME"), "{first}");
    assert_eq!(row(&first, "first-box")[2], "healthy", "{first}");
    assert!(!first.contains("second-box"), "{first}");

    let (_b, stop_b) = c.worker("second-box", dir.path()).await;
    let redrawn = watch.frame_where(|f| f.contains("second-box")).await;
    assert!(redrawn.starts_with("2 workers: 2 healthy"), "{redrawn}");
    assert!(redrawn.contains("last change: second-box"), "{redrawn}");
    assert_eq!(row(&redrawn, "first-box")[2], "healthy", "{redrawn}");
    assert_eq!(row(&redrawn, "second-box")[2], "healthy", "{redrawn}");

    watch.interrupt().await;
    stop_a.cancel();
    stop_b.cancel();
    c.stop().await;
}

#[tokio::test]
async fn workers_watch_json_prints_a_line_per_change_and_ends_with_the_stream() {
    let c = TestCoordinator::start(fast_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let (_a, stop_a) = c.worker("json-box", dir.path()).await;

    let mut watch = Watch::spawn(&c, &["--json"]);
    let fleet: Value = serde_json::from_str(&watch.line().await).expect("a JSON line");
    assert_eq!(fleet[0]["name"], "json-box");
    assert_eq!(fleet[0]["status"], "healthy");

    // The worker leaves: a line shows it disconnected.
    stop_a.cancel();
    within(async {
        loop {
            let fleet: Value = serde_json::from_str(&watch.line().await).expect("a JSON line");
            if fleet[0]["status"] == "disconnected" {
                return;
            }
        }
    })
    .await;

    // The coordinator stops: the stream ends and so does the watch, cleanly.
    c.stop().await;
    watch.exits_cleanly().await;
}
