//! Coordinators as real processes, killed with SIGKILL while a load
//! generator sends requests through the survivors: what a crash costs the
//! fleet, measured.

mod common;

use common::etcd::Etcd;
use common::*;
use edgeplane::bench::child::ChildServer;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Process {
    url: String,
    child: ChildServer,
}

async fn coordinator(etcd: &Etcd, cluster: &str, id: &str, dir: &std::path::Path) -> Process {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let args: Vec<String> = [
        "coordinator",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--etcd",
        &etcd.url,
        "--cluster",
        cluster,
        "--coordinator-id",
        id,
        "--etcd-lease-ttl",
        "2s",
        "--heartbeat-timeout",
        "1s",
        "--keepalive-interval",
        "100ms",
        "--worker-timeout",
        "30s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let log = dir.join(format!("{id}.log"));
    let mut child = ChildServer::spawn(
        "a coordinator",
        env!("CARGO_BIN_EXE_edgeplane").as_ref(),
        args,
        Vec::new(),
        &log,
    )
    .expect("start the coordinator");
    let health = format!("{url}/health");
    child
        .wait_ready(PATIENCE, || {
            let health = health.clone();
            async move { reqwest::get(&health).await.is_ok_and(|r| r.status() == 200) }
        })
        .await
        .expect("the coordinator serves");
    Process { url, child }
}

/// name -> (id, status, coordinator), as `url` lists them.
async fn listed(url: &str) -> BTreeMap<String, (String, String, String)> {
    let v: Value = reqwest::get(format!("{url}/api/admin/workers"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|w| {
            let s = |k: &str| w[k].as_str().unwrap_or_default().to_string();
            (s("name"), (s("worker_id"), s("status"), s("coordinator")))
        })
        .collect()
}

async fn until_listed(url: &str, f: impl Fn(&BTreeMap<String, (String, String, String)>) -> bool) -> Duration {
    let started = Instant::now();
    loop {
        let l = listed(url).await;
        if f(&l) {
            return started.elapsed();
        }
        assert!(started.elapsed() < PATIENCE, "{url} lists {l:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn kill_9_of_a_coordinator_moves_its_workers_to_the_survivors_with_their_ids() {
    let etcd = Etcd::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut a = coordinator(&etcd, "kill", "coord-a", dir.path()).await;
    let b = coordinator(&etcd, "kill", "coord-b", dir.path()).await;
    let c = coordinator(&etcd, "kill", "coord-c", dir.path()).await;

    // Two workers on coord-a serve `moving`; one each on b and c, `steady`.
    let mut agents = Vec::new();
    let mut backends = Vec::new();
    for (name, service, first) in [
        ("a-1", "moving", &a.url),
        ("a-2", "moving", &a.url),
        ("b-1", "steady", &b.url),
        ("c-1", "steady", &c.url),
    ] {
        let backend = common::backend::start(name).await;
        let mut cfg = edgeplane::worker::WorkerConfig::new(first.clone());
        let others: Vec<&String> = [&a.url, &b.url, &c.url].into_iter().filter(|u| *u != first).collect();
        cfg.coordinator = format!("{first},{},{}", others[0], others[1]);
        cfg.name = Some(name.into());
        cfg.state_dir = Some(dir.path().join(name));
        cfg.reconnect_min = Duration::from_millis(20);
        cfg.reconnect_max = Duration::from_millis(200);
        cfg.connect_timeout = Duration::from_secs(2);
        cfg.services = vec![(service.into(), backend.url.clone())];
        cfg.data_path = "direct".parse().unwrap();
        cfg.probe_interval = Duration::from_millis(50);
        agents.push(start_agent(cfg).await);
        backends.push(backend);
    }
    for url in [&a.url, &b.url, &c.url] {
        until_listed(url, |l| l.len() == 4 && l.values().all(|(_, s, _)| s == "healthy")).await;
    }
    let before = listed(&b.url).await;
    assert_eq!(before["a-1"].2, "coord-a");

    // Idempotent requests through the two survivors, all along.
    let stop = tokio_util::sync::CancellationToken::new();
    let failed: Arc<[AtomicUsize; 2]> = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let sent: Arc<[AtomicUsize; 2]> = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let mut load = Vec::new();
    for url in [b.url.clone(), c.url.clone()] {
        for (i, service) in ["steady", "moving"].into_iter().enumerate() {
            let (stop, failed, sent, url) = (stop.clone(), failed.clone(), sent.clone(), url.clone());
            load.push(tokio::spawn(async move {
                let client = reqwest::Client::new();
                while !stop.is_cancelled() {
                    let r = client.get(format!("{url}/service/{service}/echo/x")).send().await;
                    sent[i].fetch_add(1, Ordering::Relaxed);
                    if !r.is_ok_and(|r| r.status() == 200) {
                        failed[i].fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
    }
    while sent[1].load(Ordering::Relaxed) < 100 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    a.child.kill().await.unwrap();
    let killed = Instant::now();
    // Both of coord-a's workers are healthy under a survivor, with their ids.
    for url in [&b.url, &c.url] {
        until_listed(url, |l| {
            l.len() == 4
                && l.values().all(|(_, s, holder)| s == "healthy" && holder != "coord-a")
                && ["a-1", "a-2"].iter().all(|n| l[*n].0 == before[*n].0)
        })
        .await;
    }
    let moved_after = killed.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    for l in load {
        l.await.unwrap();
    }
    for (_, agent) in ["a-1", "a-2"].iter().zip(&agents) {
        assert_eq!(agent.0.status().borrow().sessions, 2, "one resumption each, no more");
    }
    let (steady, moving) = (failed[0].load(Ordering::Relaxed), failed[1].load(Ordering::Relaxed));
    println!(
        "kill -9: workers moved in {moved_after:?}; failed requests: steady {steady} of {}, moving {moving} of {}",
        sent[0].load(Ordering::Relaxed),
        sent[1].load(Ordering::Relaxed)
    );
    assert_eq!(steady, 0, "no request to a worker that did not move failed");
    assert!(moved_after < Duration::from_secs(10), "{moved_after:?}");
}
