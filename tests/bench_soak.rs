//! `edgeplane bench soak` shrunk to a few seconds, against the real binary as
//! a child process: a correctness check of the soak and of the coordinator
//! under its churn. Every kind of churn happens (drops and resumes,
//! newcomers joining and leaving, readiness flips), the samples carry the
//! coordinator's own figures, the never-stopped workers are never reported
//! anything but healthy, and no request to a healthy replica fails. No
//! timing and no memory figure is asserted: CI machines are noisy, and the
//! flatness verdict needs minutes (that is the bench's job).

use clap::Parser;
use edgeplane::bench::soak::{self, SoakArgs};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    soak: SoakArgs,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_soak_churns_samples_and_sees_no_false_positive() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("soak.svg");
    let args = Cli::parse_from([
        "soak",
        "--coordinator-bin",
        env!("CARGO_BIN_EXE_edgeplane"),
        "--workers",
        "150",
        "--stable",
        "50",
        "--flappers",
        "30",
        "--flap-every",
        "1s",
        "--churn-per-min",
        "300",
        "--down-for",
        "1s",
        "--newcomers-per-min",
        "120",
        "--newcomer-life",
        "2s",
        "--worker-timeout",
        "3s",
        "--heartbeat-timeout",
        "3s",
        "--keepalive",
        "500ms",
        "--clients",
        "2",
        "--request-every",
        "50ms",
        "--duration",
        "12s",
        "--sample-every",
        "3s",
        "--warmup",
        "3s",
        "--sources",
        "4",
        "--patience",
        "30s",
        "--svg",
        svg.to_str().unwrap(),
    ])
    .soak;
    let r = soak::run(&args).await.expect("the soak runs");
    let table = r.table();
    assert!(r.samples.len() >= 4, "a sample every 3s over 12s\n{table}");
    for s in &r.samples {
        assert!(s.rss_kib > 0 && s.fds > 0 && s.threads > 0, "{table}");
        assert!(s.rss_anon_kib > 0 && s.rss_anon_kib <= s.rss_kib, "{table}");
        assert!(s.tokio_tasks.is_some(), "the tasks gauge was not read\n{table}");
    }
    assert_eq!(r.false_positives.reports, 0, "{table}");
    assert!(r.steady_total.requests > 0, "{table}");
    assert_eq!(
        r.steady_total.failures, 0,
        "requests to healthy replicas failed\n{table}"
    );
    assert!(r.churn.disconnects > 0, "no drop\n{table}");
    assert!(r.churn.newcomers_joined > 0, "no newcomer\n{table}");
    assert!(r.churn.flips > 0, "no readiness flip\n{table}");
    assert_eq!(r.churn.id_changes, 0, "a resumed worker got a new id\n{table}");
    let plot = std::fs::read_to_string(&svg).expect("the plot was written");
    assert!(plot.starts_with("<svg") && plot.contains("RSS"), "{plot}");
}
