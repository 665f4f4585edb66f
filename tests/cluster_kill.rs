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
    coordinator_with(etcd, cluster, id, dir, "30s").await
}

async fn coordinator_with(
    etcd: &Etcd,
    cluster: &str,
    id: &str,
    dir: &std::path::Path,
    worker_timeout: &str,
) -> Process {
    coordinator_args(etcd, cluster, id, dir, &["--worker-timeout", worker_timeout]).await
}

/// A coordinator process of `cluster`, with `extra` arguments last.
async fn coordinator_args(etcd: &Etcd, cluster: &str, id: &str, dir: &std::path::Path, extra: &[&str]) -> Process {
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
    ]
    .iter()
    .chain(extra)
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

#[tokio::test]
async fn a_record_whose_coordinator_died_and_whose_worker_never_came_back_is_removed() {
    let etcd = Etcd::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut a = coordinator_with(&etcd, "orphan", "coord-a", dir.path(), "2s").await;
    let b = coordinator_with(&etcd, "orphan", "coord-b", dir.path(), "2s").await;
    let channel = channel(&a.url).await;
    let mut raw = RawWorker::open(channel, None).await;
    let w = raw.hello(hello("gone-for-good", "inst-gone", "")).await;
    until_listed(&b.url, |l| {
        l.get("gone-for-good")
            .is_some_and(|(id, _, c)| *id == w.worker_id && c == "coord-a")
    })
    .await;

    // coord-a dies with the worker's session; the worker never returns.
    a.child.kill().await.unwrap();
    drop(raw);
    let killed = Instant::now();
    until_listed(&b.url, |l| l.is_empty()).await;
    let took = killed.elapsed();
    let mut client = etcd.client().await;
    let left = client
        .get("/orphan/workers/", Some(etcd_client::GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert!(left.kvs().is_empty(), "the record is gone from etcd too");
    println!("orphan removed {took:?} after the kill (lease 2 s + worker timeout 2 s)");
    assert!(
        took >= Duration::from_secs(2),
        "not before the worker timeout: {took:?}"
    );
}

async fn channel(url: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// Polls every coordinator until each lists `solo` on exactly one healthy
/// worker; fails at once if any lists it on more.
async fn until_solo_on_one_worker(cs: &[Process], what: &str) {
    let started = Instant::now();
    loop {
        let mut counts = Vec::new();
        for c in cs {
            counts.push(placed_on(&c.url, "solo").await);
        }
        assert!(counts.iter().all(|n| *n <= 1), "solo over-placed: {counts:?}");
        if counts.iter().all(|n| *n == 1) {
            return;
        }
        assert!(started.elapsed() < PATIENCE, "{what}: {counts:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Healthy workers `url` lists with `service` on them.
async fn placed_on(url: &str, service: &str) -> usize {
    let v: Value = reqwest::get(format!("{url}/api/admin/workers"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter(|w| w["status"] == "healthy")
        .filter(|w| {
            w["assigned_containers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s == service)
        })
        .count()
}

async fn role(url: &str) -> String {
    let v: Value = reqwest::get(format!("{url}/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["cluster"]["role"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn kill_9_of_the_placement_leader_elects_another_and_never_overplaces() {
    let etcd = Etcd::start().await;
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("catalog.toml");
    std::fs::write(
        &catalog,
        "[[service]]\nname = \"solo\"\nrequires = \"cpu\"\nport = 9100\ncommand = [\"true\"]\nreadiness = { tcp = true }\nmin_replicas = 1\nmax_replicas = 1\ncpu = 1.0\n",
    )
    .unwrap();
    let catalog = catalog.to_str().unwrap();
    let extra = [
        "--catalog",
        catalog,
        "--failover-grace",
        "500ms",
        "--placement-grace",
        "500ms",
    ];
    let mut cs = Vec::new();
    for id in ["coord-a", "coord-b", "coord-c"] {
        cs.push(coordinator_args(&etcd, "leader", id, dir.path(), &extra).await);
    }
    // A watch on every coordinator, over the whole run: at no event does any
    // of them list `solo` on more than one healthy worker.
    let most = Arc::new(AtomicUsize::new(0));
    for c in &cs {
        let channel = channel(&c.url).await;
        let mut stream = edgeplane::proto::admin_client::AdminClient::new(channel)
            .watch_workers(edgeplane::proto::WatchWorkersRequest {})
            .await
            .unwrap()
            .into_inner();
        let most = most.clone();
        tokio::spawn(async move {
            let mut on: BTreeMap<String, bool> = BTreeMap::new();
            while let Ok(Some(e)) = stream.message().await {
                let Some(w) = e.worker else { continue };
                let healthy = w.status == edgeplane::proto::WorkerStatus::Healthy as i32;
                let has = w.services.iter().any(|s| s.name == "solo");
                on.insert(w.worker_id, healthy && has);
                most.fetch_max(on.values().filter(|v| **v).count(), Ordering::Relaxed);
            }
        });
    }
    // One placeable worker on each, with keepalives from the test.
    let mut streams = Vec::new();
    for (n, c) in cs.iter().enumerate() {
        let channel = channel(&c.url).await;
        let mut raw = RawWorker::open(channel, None).await;
        let mut h = hello(&format!("w{n}"), &format!("inst-w{n}"), "");
        h.advertise_address = "127.0.0.1".into();
        h.capabilities = Some(edgeplane::proto::Capabilities {
            cpu_cores: 4,
            memory_bytes: 8 << 30,
            runtimes: vec!["process".into()],
            ..Default::default()
        });
        raw.hello(h).await;
        let tx = raw.tx.clone();
        streams.push((
            raw,
            tokio::spawn(async move {
                let mut seq = 0;
                loop {
                    seq += 1;
                    let m = edgeplane::proto::WorkerMessage {
                        msg: Some(edgeplane::proto::worker_message::Msg::Keepalive(
                            edgeplane::proto::Keepalive {
                                seq,
                                ..Default::default()
                            },
                        )),
                    };
                    if tx.send(m).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }),
        ));
    }
    until_solo_on_one_worker(&cs, "solo never placed").await;
    let mut leader = None;
    for (i, c) in cs.iter().enumerate() {
        if role(&c.url).await == "leader" {
            assert!(leader.replace(i).is_none(), "two leaders");
        }
    }
    let i = leader.expect("a leader");
    let mut dead = cs.remove(i);
    dead.child.kill().await.unwrap();
    let killed = Instant::now();
    let elected = loop {
        let mut leaders = 0;
        for c in &cs {
            assert!(placed_on(&c.url, "solo").await <= 1, "solo over-placed after the kill");
            if role(&c.url).await == "leader" {
                leaders += 1;
            }
        }
        assert!(leaders <= 1, "two leaders");
        if leaders == 1 {
            break killed.elapsed();
        }
        assert!(killed.elapsed() < Duration::from_secs(6), "no new leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Placement goes on, still one replica, on a live worker.
    until_solo_on_one_worker(&cs, "solo not placed again").await;
    assert!(
        most.load(Ordering::Relaxed) <= 1,
        "a watch saw solo on {} workers",
        most.load(Ordering::Relaxed)
    );
    assert_eq!(most.load(Ordering::Relaxed), 1, "the watches saw solo placed");
    println!("kill -9 of the leader: a new one elected {elected:?} after (lease TTL 2 s)");
    assert!(
        elected <= Duration::from_secs(4),
        "within the lease TTL, plus a renewal: {elected:?}"
    );
}
