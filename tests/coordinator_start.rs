//! `edgeplane coordinator` as an operator starts it, with the seed fleet's
//! environment variables: one timeout set alone starts a coordinator (the
//! others follow it), and timings that contradict each other are refused
//! with a message naming both.

use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// The liveness variables, cleared so that the caller's environment cannot
/// change the outcome.
const TIMING_VARS: [&str; 3] = [
    "HEARTBEAT_TIMEOUT_SECONDS",
    "WORKER_TIMEOUT_SECONDS",
    "KEEPALIVE_INTERVAL_SECONDS",
];

fn coordinator(env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_edgeplane"));
    c.args(["coordinator", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for v in TIMING_VARS {
        c.env_remove(v);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

/// Starts the coordinator and reads its log until it serves (`Ok`) or exits
/// (`Err` with what it printed).
async fn serves(env: &[(&str, &str)]) -> Result<(), String> {
    let mut child = coordinator(env).spawn().expect("start the coordinator");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = String::new();
    let outcome = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("coordinator serving") {
                return Ok(());
            }
            seen.push_str(&line);
            seen.push('\n');
        }
        Err(format!("exited ({:?}):\n{seen}", child.wait().await))
    })
    .await
    .expect("the coordinator neither served nor exited");
    let _ = child.kill().await;
    outcome
}

#[tokio::test]
async fn a_heartbeat_timeout_set_alone_starts_the_coordinator() {
    serves(&[("HEARTBEAT_TIMEOUT_SECONDS", "5")]).await.unwrap();
}

#[tokio::test]
async fn a_worker_timeout_set_alone_below_the_heartbeat_default_starts_the_coordinator() {
    serves(&[("WORKER_TIMEOUT_SECONDS", "60")]).await.unwrap();
}

#[tokio::test]
async fn timings_that_contradict_each_other_are_refused_with_both_named() {
    let out = coordinator(&[("HEARTBEAT_TIMEOUT_SECONDS", "5"), ("KEEPALIVE_INTERVAL_SECONDS", "5")])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("keepalive interval (5s) must be shorter than the heartbeat timeout (5s)"),
        "{err}"
    );
}
