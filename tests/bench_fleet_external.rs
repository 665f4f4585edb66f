//! `edgeplane bench fleet --coordinator URL`, as an operator runs it
//! against a coordinator it did not start: it fails within seconds, saying
//! why, when nothing answers there; it says what it is doing, phase by
//! phase; and it skips the silence phase, saying why, when the
//! coordinator's heartbeat timeout (the default 300 s, read from its
//! Welcome) is longer than the bench's patience. Small and fast: five
//! workers, windows of a fraction of a second.

mod common;

use common::*;
use edgeplane::coordinator::CoordinatorConfig;
use std::process::Output;
use std::time::{Duration, Instant};

async fn bench(args: &[&str], limit: Duration) -> (Output, Duration) {
    let started = Instant::now();
    let out = tokio::time::timeout(
        limit,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_edgeplane"))
            .args(["bench", "fleet"])
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("the bench was still running after {limit:?}"))
    .unwrap();
    (out, started.elapsed())
}

#[tokio::test]
async fn an_unreachable_coordinator_fails_within_seconds_saying_so() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let (out, took) = bench(
        &[
            "--coordinator",
            &url,
            "--workers",
            "5",
            "--kill",
            "1",
            "--silence",
            "1",
            "--patience",
            "120s",
        ],
        Duration::from_secs(20),
    )
    .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(took < Duration::from_secs(10), "took {took:?}: {err}");
    assert!(err.contains(&format!("cannot reach the coordinator at {url}")), "{err}");
    assert!(err.contains("Connection refused"), "the cause is given: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_heartbeat_timeout_skips_the_silence_phase_and_every_phase_is_announced() {
    // The coordinator's own defaults: heartbeat timeout 300 s.
    let c = TestCoordinator::start(CoordinatorConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..CoordinatorConfig::default()
    })
    .await;
    let (out, _) = bench(
        &[
            "--coordinator",
            &c.url,
            "--workers",
            "5",
            "--keepalive",
            "100ms",
            "--idle",
            "0",
            "--duration",
            "200ms",
            "--kill",
            "1",
            "--silence",
            "1",
            "--spread",
            "10ms",
            "--settle",
            "100ms",
            "--reconnect-min",
            "20ms",
            "--reconnect-max",
            "100ms",
            "--sources",
            "2",
            "--patience",
            "10s",
        ],
        Duration::from_secs(60),
    )
    .await;
    let err = String::from_utf8_lossy(&out.stderr);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{err}\n{table}");
    let progress: Vec<&str> = err.lines().filter(|l| l.starts_with("bench fleet: ")).collect();
    for phase in [
        "reaching the coordinator",
        "ramp: 5 workers",
        "ramp: 5 connected",
        "keepalive window",
        "kill: 1 workers",
        "kill: 1 of 1 detected",
        "silence phase skipped: the coordinator's heartbeat timeout (5m00s, from its Welcome) exceeds --patience (10s)",
        "settle",
    ] {
        assert!(
            progress.iter().any(|l| l.contains(phase)),
            "no `{phase}` line in:\n{err}"
        );
    }
    assert!(table.contains("heartbeat timeout 300000 ms"), "{table}");
    assert!(table.contains("silence phase"), "{table}");
    assert!(table.contains("note: silence phase skipped"), "{table}");
}
