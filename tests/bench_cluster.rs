//! `edgeplane bench cluster` at a small size against real coordinator
//! processes and a real etcd: everyone connects, the steady fleet writes
//! nothing to etcd, and a coordinator's SIGKILL moves each of its workers
//! to a survivor, with no other session lost and no duplicate record. No
//! timing is asserted: CI machines are noisy.

use clap::Parser;
use edgeplane::bench::cluster::{self, ClusterArgs};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    cluster: ClusterArgs,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_fleet_over_three_coordinators_writes_nothing_steady_and_survives_a_kill() {
    let etcd = std::env::var("EDGEPLANE_TEST_ETCD").unwrap_or_else(|_| "etcd".into());
    let args = Cli::parse_from([
        "bench",
        "--coordinator-bin",
        env!("CARGO_BIN_EXE_edgeplane"),
        "--etcd-bin",
        &etcd,
        "--coordinators",
        "3",
        "--workers",
        "150",
        "--keepalive",
        "200ms",
        "--duration",
        "2s",
        "--lease-ttl",
        "2s",
        "--ramp-rate",
        "1000",
        "--sources",
        "4",
        "--patience",
        "30s",
    ])
    .cluster;
    let r = cluster::run(&args).await.expect("the bench runs");
    let table = r.table();
    assert_eq!(r.connected, 150, "{table}");
    assert_eq!(r.etcd_writes, 0, "keepalives wrote to etcd\n{table}");
    assert_eq!(r.killed_workers, 50, "{table}");
    assert_eq!(r.not_moved, 0, "{table}");
    assert_eq!(r.false_positives, 0, "{table}");
    assert_eq!((r.listed_after, r.duplicates), (Some(150), Some(0)), "{table}");
}
