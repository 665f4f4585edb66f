//! Network faults inside a cluster: two coordinators sharing one etcd, on a
//! switched network of namespaces (tests/common/netns.rs `Lan`), and one
//! coordinator cut off from etcd only, or from its workers only. Judged by
//! what clients saw: each coordinator's WatchWorkers stream, and requests
//! through each coordinator's proxy all along.

mod common;

use common::etcd::Etcd;
use common::faults::{notes_catalog, sample_in, worker_in, Coordinator, Load, Recorder};
use common::netns::{Lan, Netns};
use edgeplane::bench::child::ChildServer;
use edgeplane::proto::WorkerStatus;
use std::time::{Duration, Instant};

const NAMES: [&str; 2] = ["w1", "w2"];

/// etcd and coordinator B in the root namespace, coordinator A in a
/// namespace of its own, the workers (dialing A first, B second) and their
/// sample service in another; every host on one switch.
struct Cluster {
    _dir: tempfile::TempDir,
    etcd: Etcd,
    lan: Lan,
    a_ns: Netns,
    workers_ns: Netns,
    a: Coordinator,
    b: Coordinator,
    watch_a: Recorder,
    watch_b: Recorder,
    ids: std::collections::BTreeMap<&'static str, String>,
    _procs: Vec<ChildServer>,
}

async fn cluster(name: &str) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let etcd = Etcd::start_everywhere().await;
    let mut lan = Lan::new();
    let (a_ns, workers_ns) = (lan.host(), lan.host());
    let catalog = notes_catalog(dir.path());
    let common = |etcd_url: String, id: &str, peer: String| -> Vec<String> {
        [
            "--catalog",
            &catalog,
            "--etcd",
            &etcd_url,
            "--cluster",
            name,
            "--coordinator-id",
            id,
            "--advertise-peer",
            &peer,
            "--cluster-secret",
            "peer-secret",
            "--etcd-lease-ttl",
            "2s",
            "--failover-grace",
            "2s",
            "--heartbeat-timeout",
            "1s",
            "--keepalive-interval",
            "200ms",
            "--worker-timeout",
            "30s",
            "--http2-keepalive-interval",
            "1s",
            "--http2-keepalive-timeout",
            "2s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let args_b = common(etcd.url.clone(), "coord-b", format!("http://{}:{{port}}", lan.root));
    let args_b: Vec<&str> = args_b.iter().map(String::as_str).collect();
    let b = Coordinator::start(dir.path(), "coord-b", &args_b).await;
    let args_a = common(
        format!("http://{}:{}", lan.root, etcd.port()),
        "coord-a",
        format!("http://{}:{{port}}", a_ns.addr),
    );
    let args_a: Vec<&str> = args_a.iter().map(String::as_str).collect();
    let a = Coordinator::start_in(&a_ns, dir.path(), "coord-a", &args_a).await;
    let (watch_a, watch_b) = (Recorder::start(a.url()).await, Recorder::start(b.url()).await);

    let mut procs = vec![sample_in(&workers_ns, dir.path(), "notes-coa", 8100)];
    let dial = format!("{},http://{}:{}", a.url(), lan.root, b.port);
    let mut ids = std::collections::BTreeMap::new();
    for n in NAMES {
        procs.push(worker_in(
            &workers_ns,
            dir.path(),
            n,
            &dial,
            &[
                "--service",
                "notes=http://127.0.0.1:8100",
                "--data-path",
                "tunnel",
                "--runtime",
                "process",
                "--http2-keepalive-interval",
                "1s",
                "--http2-keepalive-timeout",
                "2s",
            ],
        ));
        // Both coordinators see it healthy, serving, held by A.
        for w in [&watch_a, &watch_b] {
            let s = w
                .until(started, Duration::from_secs(30), |s| {
                    s.name == n
                        && s.status == WorkerStatus::Healthy
                        && s.serves("notes-coa")
                        && s.coordinator == "coord-a"
                })
                .await;
            ids.insert(n, s.worker_id);
        }
        // Routed once its tunnel to A is up (through B too, which sends via A).
        watch_a
            .until(started, Duration::from_secs(30), |s| {
                s.name == n && s.reason == "tunnel open"
            })
            .await;
    }
    Cluster {
        _dir: dir,
        etcd,
        lan,
        a_ns,
        workers_ns,
        a,
        b,
        watch_a,
        watch_b,
        ids,
        _procs: procs,
    }
}

fn load(c: &Coordinator) -> Load {
    Load::start(format!("{}/service/notes/health", c.url()), 2, Duration::from_secs(5))
}

/// Waits until `watch` shows every worker healthy, serving, held by
/// `holder`, under its first id; returns when.
async fn settled(c: &Cluster, watch: &Recorder, holder: &str, since: Instant) -> Instant {
    let mut last = since;
    for n in NAMES {
        let s = watch
            .until(since, Duration::from_secs(30), |s| {
                s.name == n && s.status == WorkerStatus::Healthy && s.serves("notes-coa") && s.coordinator == holder
            })
            .await;
        assert_eq!(s.worker_id, c.ids[n], "{n} kept its id");
        last = last.max(s.at);
    }
    last
}

#[tokio::test]
async fn a_coordinator_cut_off_from_etcd_keeps_its_workers_and_routes() {
    let c = cluster("cut-etcd").await;
    let (via_a, via_b) = (load(&c.a), load(&c.b));
    via_a.until_sent(20).await;
    via_b.until_sent(20).await;

    let cut = Instant::now();
    c.a_ns.cut_from(c.lan.root, Some(c.etcd.port()));
    // Four lease TTLs: A's lease is long gone from etcd.
    tokio::time::sleep(Duration::from_secs(8)).await;
    c.a_ns.heal();
    let healed = Instant::now();
    // A rewrites its state: B sees A's workers held by A again, same ids.
    let back = settled(&c, &c.watch_b, "coord-a", healed).await;
    via_a.until_sent(50).await;
    via_b.until_sent(50).await;
    let (sent_a, failed_a, failures_a) = via_a.stop().await;
    let (sent_b, failed_b, failures_b) = via_b.stop().await;

    // A degraded, never dropped: its workers stayed healthy and connected
    // in its own view, and every request through it was served.
    for n in NAMES {
        let seen = c.watch_a.of(n, cut);
        assert!(
            seen.iter()
                .all(|s| s.status == WorkerStatus::Healthy && s.sessions == 1),
            "{n} as coord-a saw it during the etcd cut: {seen:#?}"
        );
    }
    assert_eq!(failed_a, 0, "requests through the cut-off coordinator: {failures_a:?}");
    // Through B, requests may fail while B cannot know who holds them;
    // none after the fleet is whole again.
    let late: Vec<_> = failures_b.iter().filter(|(t, _)| *t > back).collect();
    assert!(
        late.is_empty(),
        "requests through coord-b failed after the heal: {late:?}"
    );
    println!(
        "coord-a cut from etcd for {:?}: through A {failed_a} of {sent_a} failed; through B {failed_b} of {sent_b} failed; B saw the fleet whole {:?} after the heal",
        healed - cut,
        back - healed
    );
    let _ = (&c.workers_ns, &c.watch_b);
}

#[tokio::test]
async fn a_coordinator_cut_off_from_its_workers_loses_them_to_the_other_with_their_ids() {
    let c = cluster("cut-workers").await;
    let (via_a, via_b) = (load(&c.a), load(&c.b));
    via_a.until_sent(20).await;
    via_b.until_sent(20).await;

    let cut = Instant::now();
    c.a_ns.cut_from(c.workers_ns.addr, None);
    // The workers' HTTP/2 pings (1 s, 2 s to answer) find A gone; they dial
    // B, which takes their sessions over with their resume tokens.
    let moved_b = settled(&c, &c.watch_b, "coord-b", cut).await;
    let moved_a = settled(&c, &c.watch_a, "coord-b", cut).await;
    let moved = moved_b.max(moved_a);
    assert!(
        moved - cut < Duration::from_secs(10),
        "moved {:?} after the cut",
        moved - cut
    );
    // Through either coordinator, requests succeed once they have moved
    // (through A, by way of B).
    let mark = Instant::now() + Duration::from_secs(1);
    tokio::time::sleep_until(mark.into()).await;
    via_a.until_sent(50).await;
    via_b.until_sent(50).await;
    c.a_ns.heal();
    let (sent_a, failed_a, failures_a) = via_a.stop().await;
    let (sent_b, failed_b, failures_b) = via_b.stop().await;
    for (via, failures) in [("coord-a", &failures_a), ("coord-b", &failures_b)] {
        let late: Vec<_> = failures.iter().filter(|(t, _)| *t > mark).collect();
        assert!(
            late.is_empty(),
            "through {via}, requests failed after the move: {late:?}"
        );
    }
    // One record per worker in both views, never a second id.
    for w in [&c.watch_a, &c.watch_b] {
        let ids: std::collections::BTreeSet<_> = w.all().into_iter().map(|s| (s.name, s.worker_id)).collect();
        assert_eq!(ids.len(), NAMES.len(), "{ids:?}");
    }
    println!(
        "coord-a cut from its workers: both coordinators saw them on coord-b {:?} after the cut; through A {failed_a} of {sent_a} failed, through B {failed_b} of {sent_b}",
        moved - cut
    );
}
