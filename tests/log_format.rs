//! `--log-format json` (`EDGEPLANE_LOG_FORMAT`): the real coordinator and
//! worker processes write one JSON object a line on stderr, with the
//! fields the code logs (worker, worker_id, from, to, reason) at the top
//! level; an operator's command keeps stderr JSON even when it fails; any
//! other format is refused by name.

mod common;

use common::{free_port, PATIENCE};
use serde_json::Value;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, Command};

fn edgeplane(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgeplane"));
    cmd.args(args)
        // The subcommand's own default filter (info for the daemons).
        .env_remove("RUST_LOG")
        .env_remove("EDGEPLANE_LOG_FORMAT")
        .env_remove("COORDINATOR_URL")
        .env_remove("WORKER_NAME")
        .env_remove("EDGEPLANE_JOIN_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// A process whose stderr must be JSON lines, every one of them.
struct JsonLog {
    child: Child,
    lines: Lines<BufReader<ChildStderr>>,
    what: &'static str,
}

impl JsonLog {
    fn spawn(what: &'static str, mut cmd: Command) -> JsonLog {
        let mut child = cmd.spawn().expect("start edgeplane");
        let lines = BufReader::new(child.stderr.take().unwrap()).lines();
        JsonLog { child, lines, what }
    }

    /// The next line, parsed; `None` at the end of stderr.
    async fn next(&mut self) -> Option<Value> {
        let line = tokio::time::timeout(PATIENCE, self.lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("{}: no log line in {PATIENCE:?}", self.what))
            .expect("read stderr")?;
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("{}: a log line that is not JSON ({e}): {line}", self.what));
        assert!(v.is_object(), "{}: not an object: {line}", self.what);
        for key in ["timestamp", "level", "message", "target"] {
            assert!(v.get(key).is_some(), "{}: no `{key}` in {line}", self.what);
        }
        Some(v)
    }

    /// Lines until one says `message` and satisfies `f`.
    async fn until(&mut self, message: &str, f: impl Fn(&Value) -> bool) -> Value {
        loop {
            match self.next().await {
                Some(v) if v["message"] == message && f(&v) => return v,
                Some(_) => continue,
                None => panic!("{}: stderr ended before `{message}`", self.what),
            }
        }
    }

    /// SIGTERM; reads the rest of stderr (each line must be JSON) and expects a clean exit.
    async fn terminate(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id().expect("still running") as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("send SIGTERM");
        while self.next().await.is_some() {}
        let status = tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .expect("exits")
            .expect("wait");
        assert!(status.success(), "{} exited with {status}", self.what);
    }
}

#[tokio::test]
async fn coordinator_and_worker_log_json_lines_with_the_worker_field() {
    let port = free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let mut coordinator = JsonLog::spawn(
        "coordinator",
        edgeplane(&["coordinator", "--listen", &listen, "--log-format", "json"]),
    );
    coordinator.until("coordinator serving gRPC and HTTP", |_| true).await;

    // The worker takes the format from the environment twin.
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().display().to_string();
    let url = format!("http://{listen}");
    let mut cmd = edgeplane(&[
        "worker",
        "--coordinator",
        &url,
        "--name",
        "json-log-box",
        "--runtime",
        "none",
        "--state-dir",
        &state_dir,
    ]);
    cmd.env("EDGEPLANE_LOG_FORMAT", "json");
    let mut worker = JsonLog::spawn("worker", cmd);

    let registered = coordinator.until("worker registered", |_| true).await;
    assert_eq!(registered["worker"], "json-log-box", "{registered}");
    assert_eq!(registered["level"], "INFO", "{registered}");
    let id = registered["worker_id"].as_str().expect("a worker_id field").to_string();
    assert!(id.starts_with("w-"), "{registered}");
    assert!(
        registered.get("fields").is_none(),
        "fields at the top level: {registered}"
    );

    let welcomed = worker.until("registered with the coordinator", |_| true).await;
    assert_eq!(welcomed["worker"], "json-log-box", "{welcomed}");
    assert_eq!(welcomed["worker_id"], id.as_str(), "{welcomed}");

    // The worker leaves: the status change carries from, to and reason.
    worker.terminate().await;
    let status = coordinator
        .until("worker status", |v| {
            v["worker_id"] == id.as_str() && v["to"] == "disconnected"
        })
        .await;
    assert_eq!(status["worker"], "json-log-box", "{status}");
    assert_eq!(status["from"], "healthy", "{status}");
    assert!(status["reason"].as_str().is_some_and(|r| !r.is_empty()), "{status}");
    coordinator.terminate().await;
}

#[tokio::test]
async fn an_operator_command_that_fails_says_why_in_json() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let out = tokio::time::timeout(
        PATIENCE,
        edgeplane(&["gaps", "--coordinator", &url, "--log-format", "json"]).output(),
    )
    .await
    .expect("gaps gives up")
    .expect("run gaps");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let last = lines.last().unwrap_or_else(|| panic!("nothing on stderr"));
    assert_eq!(last["level"], "ERROR", "{last}");
    let error = last["error"].as_str().expect("an error field");
    assert!(error.contains("cannot reach the coordinator"), "{last}");
}

#[tokio::test]
async fn an_unknown_log_format_is_refused_by_name() {
    let refused = |out: std::process::Output| {
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(stderr.contains("invalid value 'xml' for '--log-format"), "{stderr}");
        assert!(stderr.contains("[possible values: text, json]"), "{stderr}");
    };
    let output = |mut cmd: Command| async move {
        tokio::time::timeout(PATIENCE, cmd.output())
            .await
            .expect("refused at once")
            .expect("run edgeplane")
    };
    refused(output(edgeplane(&["--log-format", "xml", "workers"])).await);
    let mut cmd = edgeplane(&["coordinator", "--listen", "127.0.0.1:0"]);
    cmd.env("EDGEPLANE_LOG_FORMAT", "xml");
    refused(output(cmd).await);
}
