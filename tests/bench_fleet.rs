//! `edgeplane bench fleet` at N = 200 for a few seconds, against the real
//! binary as a child process: a correctness check of the bench and of the
//! coordinator under it (everyone connects, nobody is falsely degraded,
//! kills and silences are detected, a restart brings every worker back
//! under its old id). No timing is asserted: CI machines are noisy.

use clap::Parser;
use edgeplane::bench::{fleet, FleetArgs};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    fleet: FleetArgs,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_fleet_connects_is_watched_and_comes_back_after_a_restart() {
    let args = Cli::parse_from([
        "bench",
        "--coordinator-bin",
        env!("CARGO_BIN_EXE_edgeplane"),
        "--workers",
        "200",
        "--keepalive",
        "200ms",
        "--heartbeat-timeout",
        "2s",
        "--idle",
        "300ms",
        "--duration",
        "1s",
        "--kill",
        "20",
        "--silence",
        "20",
        "--spread",
        "200ms",
        "--settle",
        "500ms",
        "--reconnect-min",
        "50ms",
        "--reconnect-max",
        "500ms",
        "--ramp-rate",
        "1000",
        "--sources",
        "4",
        "--patience",
        "30s",
    ])
    .fleet;
    let r = fleet::run(&args).await.expect("the bench runs");
    let table = r.table();
    assert_eq!(r.connected, 200, "{table}");
    assert!(r.connect_all_s.is_some(), "{table}");
    assert!(r.rtt.count > 0, "no keepalive was acked\n{table}");
    assert_eq!((r.kill.sample, r.kill.detected), (20, 20), "{table}");
    assert_eq!((r.degraded.sample, r.degraded.detected), (20, 20), "{table}");
    let restart = r.restart.as_ref().expect("the restart ran");
    assert!(restart.reconverge_s.is_some(), "{table}");
    assert_eq!(restart.registered, 200, "{table}");
    assert_eq!(
        (restart.new_ids, restart.missing, restart.id_changes),
        (0, 0, 0),
        "{table}"
    );
    assert_eq!(r.false_positives.reports, 0, "{table}");
    let json = serde_json::to_value(&r).expect("the report serialises");
    assert_eq!(json["workers"], 200);
}
