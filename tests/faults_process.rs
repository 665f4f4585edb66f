//! Process faults, with real processes: the coordinator frozen with
//! `SIGSTOP` past the heartbeat and worker timeouts, a worker frozen, and
//! the coordinator killed under proxy load and started again. Judged by
//! what clients saw: a WatchWorkers stream and requests through the proxy.

mod common;

use common::faults::{exited, notes_catalog, worker, Coordinator, Load, Recorder};
use edgeplane::proto::WorkerStatus;
use nix::sys::signal::Signal;
use std::time::{Duration, Instant};

/// A coordinator (with `args`) and `names` worker processes, each declaring
/// `notes` at its own in-process backend (reached directly), all healthy
/// and serving. Returns the worker ids by name.
struct Fleet {
    dir: tempfile::TempDir,
    coordinator: Coordinator,
    watch: Recorder,
    workers: Vec<edgeplane::bench::child::ChildServer>,
    ids: std::collections::BTreeMap<&'static str, String>,
    _backends: Vec<common::backend::Backend>,
    started: Instant,
}

async fn fleet(args: &[&str], names: &[&'static str]) -> Fleet {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let catalog = notes_catalog(dir.path());
    let mut all = vec!["--catalog", catalog.as_str()];
    all.extend_from_slice(args);
    let coordinator = Coordinator::start(dir.path(), "coordinator", &all).await;
    let watch = Recorder::start(coordinator.url()).await;
    let (mut workers, mut backends, mut ids) = (Vec::new(), Vec::new(), std::collections::BTreeMap::new());
    for name in names {
        let backend = common::backend::start(name).await;
        let service = format!("notes={}", backend.url);
        let mut w = worker(
            dir.path(),
            name,
            &coordinator.url(),
            &["--service", &service, "--data-path", "direct", "--runtime", "process"],
        );
        let ready = tokio::select! {
            s = watch.until(started, Duration::from_secs(20), |s| {
                s.name == *name && s.status == WorkerStatus::Healthy && s.serves("notes-coa")
            }) => s,
            log = exited(&mut w) => panic!("{name} exited:\n{log}"),
        };
        ids.insert(*name, ready.worker_id);
        workers.push(w);
        backends.push(backend);
    }
    Fleet {
        dir,
        coordinator,
        watch,
        workers,
        ids,
        _backends: backends,
        started,
    }
}

impl Fleet {
    fn load(&self) -> Load {
        Load::start(
            format!("{}/service/notes/echo/x", self.coordinator.url()),
            4,
            Duration::from_secs(5),
        )
    }
}

#[tokio::test]
async fn a_coordinator_stopped_past_its_timeouts_reaps_no_worker_when_it_resumes() {
    // Stopped for more than the worker timeout: every worker's last
    // keepalive is older than that when the coordinator runs again, but the
    // silence was the coordinator's own.
    let f = fleet(
        &[
            "--heartbeat-timeout",
            "1s",
            "--worker-timeout",
            "3s",
            "--keepalive-interval",
            "200ms",
        ],
        &["w1", "w2", "w3"],
    )
    .await;
    let stopped = Instant::now();
    f.coordinator.signal(Signal::SIGSTOP);
    tokio::time::sleep(Duration::from_secs(5)).await;
    f.coordinator.signal(Signal::SIGCONT);
    let resumed = Instant::now();

    // Requests through it succeed again at once.
    let load = f.load();
    load.until_sent(100).await;
    let (sent, failed, failures) = load.stop().await;
    assert_eq!(failed, 0, "requests after the resume: {failures:?}");

    let seen: Vec<_> = f.watch.all().into_iter().filter(|s| s.at >= stopped).collect();
    assert!(
        seen.is_empty(),
        "no worker was degraded, disconnected or removed for the coordinator's own stall: {seen:#?}"
    );
    for (name, id) in &f.ids {
        let last = f.watch.last(name).unwrap();
        assert_eq!(
            (&last.worker_id, last.status, last.sessions),
            (id, WorkerStatus::Healthy, 1)
        );
    }
    let log = std::fs::read_to_string(f.dir.path().join("coordinator.log")).unwrap();
    assert!(log.contains("did not run for a while"), "the stall is logged");
    println!(
        "coordinator stopped {:?}: {sent} requests after the resume, none failed; no worker state changed",
        resumed - stopped
    );
}

#[tokio::test]
async fn a_worker_stopped_past_the_heartbeat_timeout_is_degraded_then_healthy_again() {
    let hb = Duration::from_secs(1);
    let f = fleet(
        &[
            "--heartbeat-timeout",
            "1s",
            "--worker-timeout",
            "30s",
            "--keepalive-interval",
            "200ms",
        ],
        &["frozen", "steady"],
    )
    .await;
    let load = f.load();
    load.until_sent(20).await;
    let stopped = Instant::now();
    common::faults::signal(&f.workers[0], Signal::SIGSTOP);
    let degraded = f
        .watch
        .until_status("frozen", WorkerStatus::Degraded, stopped, hb * 4)
        .await;
    tokio::time::sleep_until((stopped + hb * 3).into()).await;
    common::faults::signal(&f.workers[0], Signal::SIGCONT);
    let resumed = Instant::now();
    let back = f
        .watch
        .until_status("frozen", WorkerStatus::Healthy, resumed, Duration::from_secs(10))
        .await;
    load.until_sent(100).await;
    let (sent, failed, failures) = load.stop().await;

    assert_eq!(back.worker_id, f.ids["frozen"]);
    let frozen = f.watch.of("frozen", stopped);
    assert!(
        frozen
            .iter()
            .all(|s| s.sessions == 1 && matches!(s.status, WorkerStatus::Healthy | WorkerStatus::Degraded)),
        "degraded, never disconnected: the stream stayed open: {frozen:#?}"
    );
    assert!(
        f.watch.of("steady", stopped).is_empty(),
        "the other worker never changed"
    );
    // Clients: a request already sent to the frozen worker waits for it
    // (its backend is in this process and answers; the worker's proxy path
    // is direct, so only the routing decision involves the worker). None
    // fails: once degraded, the frozen worker gets no traffic.
    assert_eq!(failed, 0, "{failures:?}");
    println!(
        "worker stopped: degraded {:?} after SIGSTOP, healthy {:?} after SIGCONT; {sent} requests, none failed",
        degraded.at - stopped,
        back.at - resumed
    );
}

#[tokio::test]
async fn a_coordinator_killed_under_proxy_load_gets_its_fleet_back_with_the_same_ids() {
    let mut f = fleet(
        &[
            "--heartbeat-timeout",
            "2s",
            "--worker-timeout",
            "30s",
            "--keepalive-interval",
            "200ms",
        ],
        &["k1", "k2", "k3"],
    )
    .await;
    let load = f.load();
    load.until_sent(200).await;
    let killed = Instant::now();
    f.coordinator.child.kill().await.unwrap();
    f.coordinator.child.respawn().unwrap();
    let serving = f.coordinator.wait_serving().await;
    // Back: every worker healthy and serving again, under its old id, as a
    // watcher of the new process sees it.
    for (name, id) in f.ids.clone() {
        let s = f
            .watch
            .until(killed, Duration::from_secs(20), |s| {
                s.name == name && s.status == WorkerStatus::Healthy && s.serves("notes-coa")
            })
            .await;
        assert_eq!(s.worker_id, id, "{name} kept its id across the restart");
    }
    let fleet_back = killed.elapsed();
    // And requests succeed from then on.
    let mark = Instant::now();
    load.until_sent(200).await;
    let (sent, failed, failures) = load.stop().await;
    let late: Vec<_> = failures.iter().filter(|(t, _)| *t > mark).collect();
    assert!(late.is_empty(), "requests failed after the fleet was back: {late:?}");
    println!(
        "coordinator killed under load: serving again after {serving:?}, fleet back after {fleet_back:?}; {failed} of {sent} requests failed",
    );
    assert!(fleet_back < Duration::from_secs(10), "{fleet_back:?}");
    let _ = f.started;
}
