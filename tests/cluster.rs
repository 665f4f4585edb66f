//! Several coordinators in one cluster, against a real etcd: membership
//! (a lease and a key each), what `/health` says of it, and what happens
//! when a coordinator leaves, crashes, or loses etcd.

mod common;

use common::etcd::Etcd;
use common::*;
use edgeplane::cluster::ClusterConfig;
use edgeplane::coordinator::CoordinatorConfig;
use serde_json::Value;
use std::time::Duration;

/// A coordinator of `cluster` on `etcd`, with a lease of `ttl`.
fn member(etcd: &Etcd, cluster: &str, id: &str, ttl: Duration) -> CoordinatorConfig {
    CoordinatorConfig {
        cluster: ClusterConfig {
            etcd: vec![etcd.url.clone()],
            cluster: cluster.into(),
            coordinator_id: Some(id.into()),
            etcd_lease_ttl: ttl,
            ..ClusterConfig::default()
        },
        ..fast_config()
    }
}

async fn health(c: &TestCoordinator) -> Value {
    reqwest::get(format!("{}/health", c.url))
        .await
        .expect("/health answers")
        .json()
        .await
        .expect("/health is JSON")
}

/// Polls `/health` (nothing else announces a peer's arrival) until `f`
/// holds, for at most `limit`; returns what it said last.
async fn health_until(c: &TestCoordinator, limit: Duration, f: impl Fn(&Value) -> bool) -> Value {
    let started = std::time::Instant::now();
    loop {
        let h = health(c).await;
        if f(&h) {
            return h;
        }
        assert!(started.elapsed() < limit, "after {limit:?}, /health says {h}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn coordinators(h: &Value) -> Vec<String> {
    h["cluster"]["coordinators"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// Starts a coordinator and waits until it serves (it joins etcd first).
async fn started(config: CoordinatorConfig) -> TestCoordinator {
    let c = TestCoordinator::start(config).await;
    health_until(&c, PATIENCE, |h| h["status"] == "serving").await;
    c
}

#[tokio::test]
async fn coordinators_see_each_other_and_a_graceful_one_leaves_at_once() {
    let etcd = Etcd::start().await;
    // A lease far longer than the test waits: only a revoke can be that fast.
    let ttl = Duration::from_secs(30);
    let a = started(member(&etcd, "see", "coord-a", ttl)).await;
    let b = started(member(&etcd, "see", "coord-b", ttl)).await;
    let h = health_until(&a, PATIENCE, |h| coordinators(h).len() == 2).await;
    assert_eq!(coordinators(&h), ["coord-a", "coord-b"]);
    assert_eq!(h["cluster"]["coordinator_id"], "coord-a");
    assert_eq!(h["cluster"]["etcd"], "up");
    assert_eq!(h["cluster"]["peer"], a.url.as_str());
    let hb = health(&b).await;
    assert_eq!(coordinators(&hb), ["coord-a", "coord-b"]);
    // Another cluster on the same etcd is not this one.
    let other = started(member(&etcd, "see-other", "coord-a", ttl)).await;
    assert_eq!(coordinators(&health(&other).await), ["coord-a"]);

    b.stop().await;
    let h = health_until(&a, Duration::from_secs(5), |h| coordinators(h).len() == 1).await;
    assert_eq!(coordinators(&h), ["coord-a"]);
    let mut client = etcd.client().await;
    let left = client.get("/see/coordinators/coord-b", None).await.unwrap();
    assert!(left.kvs().is_empty(), "the leaver's key is gone");
}

#[tokio::test]
async fn an_id_a_live_coordinator_holds_is_refused() {
    let etcd = Etcd::start().await;
    let ttl = Duration::from_secs(2);
    let _a = started(member(&etcd, "dup", "same", ttl)).await;
    let b = TestCoordinator::start(member(&etcd, "dup", "same", ttl)).await;
    let err = within(b.task)
        .await
        .unwrap()
        .expect_err("the second coordinator does not start");
    assert!(err.to_string().contains("`same`"), "{err}");
}

#[tokio::test]
async fn a_coordinator_that_cannot_reach_etcd_says_so_and_stops() {
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let config = CoordinatorConfig {
        cluster: ClusterConfig {
            etcd: vec![nobody.clone()],
            ..ClusterConfig::default()
        },
        ..fast_config()
    };
    let c = TestCoordinator::start(config).await;
    let err = within(c.task).await.unwrap().expect_err("no etcd, no coordinator");
    let msg = edgeplane::errors::chain(&err);
    assert!(msg.contains(&nobody), "{msg}");
}

#[tokio::test]
async fn without_etcd_a_coordinator_serves_on_and_rejoins_when_it_returns() {
    let mut etcd = Etcd::start().await;
    // Longer than the outage: the lease survives it and is renewed.
    let c = started(member(&etcd, "outage", "coord-a", Duration::from_secs(30))).await;
    let dir = tempfile::tempdir().unwrap();
    let (_agent, _stop) = c.worker("w1", dir.path()).await;
    let mut watch = c.watch().await;
    watch.until_fleet(1, edgeplane::proto::WorkerStatus::Healthy).await;

    etcd.stop();
    let h = health_until(&c, PATIENCE, |h| h["cluster"]["etcd"] == "down").await;
    assert_eq!(h["status"], "serving", "{h}");
    assert_eq!(h["workers"]["healthy"], 1, "{h}");
    assert!(
        h["cluster"]["etcd_error"].as_str().is_some_and(|e| !e.is_empty()),
        "{h}"
    );

    etcd.resume().await;
    let h = health_until(&c, PATIENCE, |h| h["cluster"]["etcd"] == "up").await;
    assert_eq!(h["workers"]["healthy"], 1, "{h}");
    let mut client = etcd.client().await;
    let key = client.get("/outage/coordinators/coord-a", None).await.unwrap();
    assert_eq!(key.kvs().len(), 1, "its key is still there, on the lease it kept");
}

#[tokio::test]
async fn a_lease_that_expired_during_an_outage_is_replaced_and_the_key_written_again() {
    let mut etcd = Etcd::start().await;
    let ttl = Duration::from_secs(2);
    let c = started(member(&etcd, "expire", "coord-a", ttl)).await;
    let mut client = etcd.client().await;
    let before = client.get("/expire/coordinators/coord-a", None).await.unwrap().kvs()[0].lease();
    // etcd keeps leases across a restart and expires them after; a revoke
    // while the coordinator cannot see it stands for that.
    client.lease_revoke(before).await.unwrap();
    assert!(client
        .get("/expire/coordinators/coord-a", None)
        .await
        .unwrap()
        .kvs()
        .is_empty());
    let started_at = std::time::Instant::now();
    let key = loop {
        let r = client.get("/expire/coordinators/coord-a", None).await.unwrap();
        if let Some(kv) = r.kvs().first() {
            break kv.clone();
        }
        assert!(started_at.elapsed() < PATIENCE, "the key was never written again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_ne!(key.lease(), before, "on a new lease");
    assert_eq!(health(&c).await["cluster"]["etcd"], "up");
    let _ = &mut etcd;
}

/// The worker's record in etcd, decoded, once `f` holds for it.
async fn stored_until(
    etcd: &Etcd,
    key: &str,
    f: impl Fn(&edgeplane::registry::FleetRecord) -> bool,
) -> (edgeplane::registry::FleetRecord, i64) {
    let mut client = etcd.client().await;
    let times = edgeplane::cluster::record_codec::Times { zero_unix_ms: 0 };
    let started = std::time::Instant::now();
    loop {
        let r = client.get(key, None).await.unwrap();
        if let Some(kv) = r.kvs().first() {
            let rec = edgeplane::cluster::record_codec::decode(kv.value(), times).expect("a record that decodes");
            if f(&rec) {
                return (rec, r.header().unwrap().revision());
            }
        }
        assert!(started.elapsed() < PATIENCE, "{key} never matched");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn transitions_write_the_record_and_a_steady_fleet_writes_nothing() {
    let etcd = Etcd::start().await;
    let dir = tempfile::tempdir().unwrap();
    // No catalog services, so that nothing is placed: the fleet is steady
    // as soon as the worker is in.
    let config = CoordinatorConfig {
        cluster: member(&etcd, "writes", "coord-a", Duration::from_secs(30)).cluster,
        ..catalog_config(dir.path(), "")
    };
    let c = started(config).await;
    let (agent, stop) = c.worker("w1", dir.path()).await;
    let s = within(agent.wait_for(|s| s.connected)).await;
    let id = s.worker_id.unwrap();
    let key = format!("/writes/workers/{id}");
    let (rec, _) = stored_until(&etcd, &key, |r| r.name == "w1" && r.disconnected_ms.is_none()).await;
    assert_eq!(rec.sessions, 1);
    // Its session key follows the record: who holds it, and how it is.
    let mut client = etcd.client().await;
    let session = format!("/writes/sessions/{id}");
    let steady = loop {
        let r = client.get(session.as_str(), None).await.unwrap();
        if let Some(kv) = r.kvs().first() {
            let hold = edgeplane::cluster::record_codec::decode_session(kv.value()).unwrap();
            assert_eq!(hold.coordinator, "coord-a");
            assert_eq!(hold.status, edgeplane::registry::WorkerState::Healthy);
            assert_ne!(kv.lease(), 0, "on the coordinator's lease");
            break r.header().unwrap().revision();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    // Keepalives flow (every 50 ms here); etcd's revision stays where it is.
    let acked = agent.status().borrow().keepalives_acked;
    within(agent.wait_for(|s| s.keepalives_acked >= acked + 20)).await;
    let now = client.get("/writes/", None).await.unwrap().header().unwrap().revision();
    assert_eq!(now, steady, "20 keepalives wrote nothing to etcd");

    // A drain is a transition: the record says so.
    let mut admin = c.admin().await;
    admin
        .drain_worker(edgeplane::proto::DrainWorkerRequest {
            worker: "w1".into(),
            reason: "test".into(),
        })
        .await
        .unwrap();
    stored_until(&etcd, &key, |r| r.draining).await;
    // So is a disconnect.
    stop.cancel();
    stored_until(&etcd, &key, |r| r.disconnected_ms.is_some()).await;
    let gone = std::time::Instant::now();
    while !client.get(session.as_str(), None).await.unwrap().kvs().is_empty() {
        assert!(gone.elapsed() < PATIENCE, "the session key outlived the session");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Three coordinators of one cluster on `etcd`, ids `coord-a` to `coord-c`.
async fn three(etcd: &Etcd, cluster: &str) -> Vec<TestCoordinator> {
    let mut cs = Vec::new();
    for id in ["coord-a", "coord-b", "coord-c"] {
        cs.push(started(member(etcd, cluster, id, Duration::from_secs(30))).await);
    }
    cs
}

/// Waits until `c` lists exactly `want` (name -> coordinator), all healthy.
async fn lists(c: &TestCoordinator, want: &std::collections::BTreeMap<String, String>) {
    let started = std::time::Instant::now();
    loop {
        let got: std::collections::BTreeMap<String, String> = c
            .registry
            .snapshot(None)
            .into_iter()
            .filter(|w| w.status == edgeplane::registry::WorkerState::Healthy)
            .map(|w| (w.name, w.coordinator))
            .collect();
        let all = c.registry.snapshot(None).len();
        if &got == want && all == want.len() {
            return;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "{} lists {got:?} ({all} records), not {want:?}",
            c.url
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn every_coordinator_lists_the_whole_fleet_each_worker_with_its_coordinator() {
    let etcd = Etcd::start().await;
    let cs = three(&etcd, "fleet").await;
    let dir = tempfile::tempdir().unwrap();
    let mut agents = Vec::new();
    let mut want = std::collections::BTreeMap::new();
    for (c, id) in cs.iter().zip(["coord-a", "coord-b", "coord-c"]) {
        for n in 0..2 {
            let name = format!("{id}-w{n}");
            agents.push(c.worker(&name, dir.path()).await);
            want.insert(name, id.to_string());
        }
    }
    for c in &cs {
        lists(c, &want).await;
    }
    // The operator's view says the same: `coordinator` in the JSON.
    let json: Value = reqwest::get(format!("{}/api/admin/workers", cs[2].url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed: std::collections::BTreeMap<String, String> = json
        .as_array()
        .expect("a list of workers")
        .iter()
        .map(|w| {
            (
                w["name"].as_str().unwrap().to_string(),
                w["coordinator"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(listed, want);
    let h = health(&cs[1]).await;
    assert_eq!(
        h["workers"]["healthy"], 6,
        "the fleet counts are the whole fleet's: {h}"
    );
}

#[tokio::test]
async fn a_worker_resumes_its_id_on_another_coordinator_and_a_forged_token_resumes_nowhere() {
    let etcd = Etcd::start().await;
    let cs = three(&etcd, "resume").await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = cs[0].worker_config("mover", dir.path());
    cfg.coordinator = format!("{},{}", cs[0].url, cs[1].url);
    let (agent, _stop) = start_agent(cfg).await;
    let first = within(agent.wait_for(|s| s.connected)).await;
    let id = first.worker_id.clone().unwrap();
    let want = std::collections::BTreeMap::from([("mover".to_string(), "coord-a".to_string())]);
    for c in &cs {
        lists(c, &want).await;
    }

    // coord-a goes away: the worker is taken in by coord-b, with its id.
    let mut cs = cs.into_iter();
    let a = cs.next().unwrap();
    let (b, c) = (cs.next().unwrap(), cs.next().unwrap());
    a.stop().await;
    let moved = within(agent.wait_for(|s| s.connected && s.coordinator.as_deref() == Some(b.url.as_str()))).await;
    assert_eq!(moved.worker_id.as_deref(), Some(id.as_str()), "the same id");
    assert!(moved.resumed, "resumed with the token coord-a issued");
    let want = std::collections::BTreeMap::from([("mover".to_string(), "coord-b".to_string())]);
    lists(&b, &want).await;
    lists(&c, &want).await;

    // A token nobody issued resumes nothing, on either survivor.
    for (n, coordinator) in [&b, &c].into_iter().enumerate() {
        let mut raw = coordinator.raw().await;
        let w = raw
            .hello(hello("forger", &format!("forged-instance-{n}"), "ep1.forged-token"))
            .await;
        assert!(!w.resumed, "a forged token resumes nothing");
        assert_ne!(w.worker_id, id);
    }
}

#[tokio::test]
async fn a_worker_on_two_coordinators_at_once_keeps_one_live_session() {
    let etcd = Etcd::start().await;
    let cs = three(&etcd, "twice").await;
    let mut on_a = cs[0].raw().await;
    let w = on_a.hello(hello("twice", "inst-twice", "")).await;
    let want = std::collections::BTreeMap::from([("twice".to_string(), "coord-a".to_string())]);
    lists(&cs[1], &want).await;
    // The same worker, with its token, at coord-b while its stream to
    // coord-a is still open: the newer session wins, everywhere.
    let mut on_b = cs[1].raw().await;
    let w2 = on_b.hello(hello("twice", "inst-twice", &w.resume_token)).await;
    assert_eq!(w2.worker_id, w.worker_id);
    assert!(w2.resumed);
    let ended = within(on_a.end()).await;
    assert!(ended.is_ok(), "coord-a closed its stream cleanly: {ended:?}");
    let want = std::collections::BTreeMap::from([("twice".to_string(), "coord-b".to_string())]);
    for c in &cs {
        lists(c, &want).await;
    }
}

/// A worker named `name` on `c`, declaring `notes` at `backend`, reached
/// directly (the coordinator dials it).
async fn notes_worker(
    c: &TestCoordinator,
    name: &str,
    backend: &common::backend::Backend,
    dir: &std::path::Path,
) -> (edgeplane::worker::AgentHandle, tokio_util::sync::CancellationToken) {
    let mut cfg = c.worker_config(name, dir);
    cfg.services = vec![("notes".into(), backend.url.clone())];
    cfg.data_path = "direct".parse().unwrap();
    cfg.probe_interval = Duration::from_millis(50);
    start_agent(cfg).await
}

/// `POST /service/notes/convert` through `c`: the replica that answered.
async fn convert(c: &TestCoordinator) -> Result<String, String> {
    let r = reqwest::Client::new()
        .post(format!("{}/service/notes/convert", c.url))
        .header("content-type", "application/json")
        .body(r#"{"notes":"test","client_name":"test"}"#)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if r.status() != 200 {
        return Err(format!("{}: {}", r.status(), r.text().await.unwrap_or_default()));
    }
    let v: Value = r.json().await.map_err(|e| e.to_string())?;
    Ok(v["served_by"].as_str().unwrap_or_default().to_string())
}

/// Waits until `/service/notes/convert` through `c` is served by `replica`.
async fn served_by(c: &TestCoordinator, replica: &str) {
    let started = std::time::Instant::now();
    loop {
        let r = convert(c).await;
        if r.as_deref() == Ok(replica) {
            return;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "{}: {r:?}; it lists {:?}",
            c.url,
            c.registry
                .snapshot(None)
                .iter()
                .map(|w| (w.name.clone(), w.status, w.coordinator.clone(), w.services.clone()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn any_coordinator_routes_to_a_replica_whichever_holds_its_worker_direct_or_tunnel() {
    let etcd = Etcd::start().await;
    let mut cs = Vec::new();
    for id in ["coord-a", "coord-b", "coord-c"] {
        let mut config = member(&etcd, "route", id, Duration::from_secs(30));
        config.cluster.cluster_secret = Some("the-cluster-secret".into());
        cs.push(started(config).await);
    }
    let dir = tempfile::tempdir().unwrap();
    let direct = common::backend::start("direct-on-a").await;
    let tunnel = common::backend::start("tunnel-on-b").await;
    let _a = notes_worker(&cs[0], "notes-a", &direct, dir.path()).await;
    for c in &cs {
        served_by(c, "direct-on-a").await;
    }
    // The direct replica's worker leaves; every coordinator sees it go.
    _a.1.cancel();
    for c in &cs {
        let started = std::time::Instant::now();
        while c
            .registry
            .snapshot(None)
            .iter()
            .any(|w| w.name == "notes-a" && w.status == edgeplane::registry::WorkerState::Healthy)
        {
            assert!(started.elapsed() < PATIENCE, "{} still routes to notes-a", c.url);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // A tunnel replica's tunnel ends at coord-b: the others go through it.
    let mut cfg = cs[1].worker_config("notes-b", dir.path());
    cfg.services = vec![("notes".into(), tunnel.url.clone())];
    cfg.data_path = "tunnel".parse().unwrap();
    cfg.probe_interval = Duration::from_millis(50);
    let _b = start_agent(cfg).await;
    for c in &cs {
        served_by(c, "tunnel-on-b").await;
    }
    // Per-service gRPC health says the same on every coordinator.
    for c in &cs {
        let mut h = tonic_health::pb::health_client::HealthClient::new(c.channel().await);
        let mut stream = h
            .watch(tonic_health::pb::HealthCheckRequest {
                service: "notes-coa".into(),
            })
            .await
            .unwrap()
            .into_inner();
        within(async {
            while stream.message().await.unwrap().expect("health watch open").status()
                != tonic_health::pb::health_check_response::ServingStatus::Serving
            {}
        })
        .await;
    }
    let before = tunnel.hits();
    for c in [&cs[0], &cs[2]] {
        for _ in 0..20 {
            assert_eq!(convert(c).await, Ok("tunnel-on-b".to_string()), "{}", c.url);
        }
    }
    assert!(tunnel.hits() >= before + 40);
    // The hop's headers stay between coordinators.
    let v: Value = reqwest::get(format!("{}/service/notes/echo/x", cs[2].url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["backend"], "tunnel-on-b");
    assert_eq!(v["peer_headers"], serde_json::json!([]), "{v}");
}

#[tokio::test]
async fn a_client_posing_as_a_peer_is_refused_on_every_path() {
    let etcd = Etcd::start().await;
    let backend = common::backend::start("replica").await;
    let dir = tempfile::tempdir().unwrap();
    for fast in [true, false] {
        let mut config = member(&etcd, &format!("pose-{fast}"), "coord-a", Duration::from_secs(30));
        config.cluster.cluster_secret = Some("the-cluster-secret".into());
        config.http1_fast_path = fast;
        let c = started(config).await;
        let _w = notes_worker(&c, "notes-a", &backend, dir.path()).await;
        served_by(&c, "replica").await;
        for auth in [None, Some("Bearer wrong"), Some("the-cluster-secret")] {
            let mut req = reqwest::Client::new()
                .get(format!("{}/service/notes/echo/x", c.url))
                .header("x-edgeplane-peer-worker", "w-anything");
            if let Some(a) = auth {
                req = req.header("x-edgeplane-peer-authorization", a);
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 403, "fast path {fast}, {auth:?}");
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["error"], "peer_refused");
        }
        // An authorization header alone is taken out, never passed on.
        let v: Value = reqwest::Client::new()
            .get(format!("{}/service/notes/echo/x", c.url))
            .header("x-edgeplane-peer-authorization", "Bearer the-cluster-secret")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["peer_headers"], serde_json::json!([]), "fast path {fast}: {v}");
        c.stop().await;
    }
}

#[tokio::test]
async fn with_etcd_stopped_for_10s_nothing_leaves_healthy_routes_keep_working_and_state_converges() {
    let mut etcd = Etcd::start().await;
    let cs = three(&etcd, "outage3").await;
    let dir = tempfile::tempdir().unwrap();
    let backend = common::backend::start("replica").await;
    let mut agents = Vec::new();
    let mut want = std::collections::BTreeMap::new();
    for (c, id) in cs.iter().zip(["coord-a", "coord-b", "coord-c"]) {
        let name = format!("{id}-notes");
        agents.push(notes_worker(c, &name, &backend, dir.path()).await);
        want.insert(name, id.to_string());
    }
    for c in &cs {
        lists(c, &want).await;
        served_by(c, "replica").await;
    }
    let mut watches = Vec::new();
    for c in &cs {
        watches.push(c.watch().await);
    }

    etcd.stop();
    let until = std::time::Instant::now() + Duration::from_secs(10);
    let mut calls = 0;
    while std::time::Instant::now() < until {
        for c in &cs {
            assert_eq!(
                convert(c).await,
                Ok("replica".to_string()),
                "{} while etcd is down",
                c.url
            );
            calls += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for c in &cs {
        assert_eq!(health(c).await["cluster"]["etcd"], "down");
    }
    etcd.resume().await;
    for c in &cs {
        health_until(c, PATIENCE, |h| h["cluster"]["etcd"] == "up").await;
        lists(c, &want).await;
    }
    // No worker left `healthy` on any coordinator's watch, in all that time.
    for (w, c) in watches.iter_mut().zip(&cs) {
        while let Some(e) = w.try_next().await {
            if let Some(worker) = e.worker {
                assert_eq!(
                    worker.status,
                    edgeplane::proto::WorkerStatus::Healthy as i32,
                    "{}: {} left healthy",
                    c.url,
                    worker.name
                );
            }
        }
    }
    assert!(calls > 30, "{calls} calls made while etcd was down");
}

/// A worker that can run `process` services, on its own raw stream.
fn placeable(name: &str) -> edgeplane::proto::Hello {
    edgeplane::proto::Hello {
        name: name.into(),
        instance_id: format!("inst-{name}"),
        advertise_address: "127.0.0.1".into(),
        capabilities: Some(edgeplane::proto::Capabilities {
            cpu_cores: 4,
            memory_bytes: 8 << 30,
            runtimes: vec!["process".into()],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Sends keepalives on `raw`'s stream, and collects the services each
/// Assignment names, until the stream ends.
fn drive(mut raw: RawWorker) -> (tokio::sync::watch::Receiver<Vec<String>>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = tokio::sync::watch::channel(Vec::new());
    let task = tokio::spawn(async move {
        let mut seq = 0;
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    seq += 1;
                    let m = edgeplane::proto::WorkerMessage {
                        msg: Some(edgeplane::proto::worker_message::Msg::Keepalive(edgeplane::proto::Keepalive { seq, ..Default::default() })),
                    };
                    if raw.tx.send(m).await.is_err() { return; }
                }
                m = raw.rx.message() => match m {
                    Ok(Some(edgeplane::proto::CoordinatorMessage { msg: Some(edgeplane::proto::coordinator_message::Msg::Assignment(a)) })) => {
                        tx.send_replace(a.services.iter().map(|s| s.name.clone()).collect());
                    }
                    Ok(Some(_)) => {}
                    _ => return,
                },
            }
        }
    });
    (rx, task)
}

/// The coordinators that say they are the placement leader.
async fn leaders(cs: &[TestCoordinator]) -> Vec<String> {
    let mut l = Vec::new();
    for c in cs {
        if health(c).await["cluster"]["role"] == "leader" {
            l.push(c.url.clone());
        }
    }
    l
}

/// Healthy workers `c` lists with `service` placed on them.
fn placed_on(c: &TestCoordinator, service: &str) -> Vec<String> {
    c.registry
        .snapshot(Some(edgeplane::registry::WorkerState::Healthy))
        .into_iter()
        .filter(|w| w.services.iter().any(|s| s.name == service))
        .map(|w| w.name)
        .collect()
}

#[tokio::test]
async fn one_leader_places_for_the_whole_cluster_and_a_new_one_takes_over() {
    let etcd = Etcd::start().await;
    let dir = tempfile::tempdir().unwrap();
    let catalog = r#"
[[service]]
name = "solo"
requires = "cpu"
port = 9100
command = ["true"]
readiness = { tcp = true }
min_replicas = 1
max_replicas = 1
cpu = 1.0
"#;
    let mut cs = Vec::new();
    for id in ["coord-a", "coord-b", "coord-c"] {
        let mut config = catalog_config(dir.path(), catalog);
        config.cluster = member(&etcd, "place", id, Duration::from_secs(2)).cluster;
        config.cluster.failover_grace = Duration::from_millis(300);
        config.placement_grace = Duration::from_millis(300);
        cs.push(started(config).await);
    }
    let started_at = std::time::Instant::now();
    while leaders(&cs).await.len() != 1 {
        assert!(started_at.elapsed() < PATIENCE, "no single leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // One placeable worker on each coordinator: `solo` goes to exactly one.
    let mut drivers = Vec::new();
    for (n, c) in cs.iter().enumerate() {
        let mut raw = c.raw().await;
        raw.hello(placeable(&format!("w{n}"))).await;
        drivers.push(drive(raw));
    }
    let started_at = std::time::Instant::now();
    loop {
        let got: Vec<usize> = drivers
            .iter()
            .enumerate()
            .filter(|(_, (rx, _))| rx.borrow().iter().any(|s| s == "solo"))
            .map(|(i, _)| i)
            .collect();
        let listed: Vec<Vec<String>> = cs.iter().map(|c| placed_on(c, "solo")).collect();
        for l in &listed {
            assert!(l.len() <= 1, "solo on more replicas than allowed: {listed:?}");
        }
        assert!(got.len() <= 1, "two workers were told to run solo: {got:?}");
        if got.len() == 1 && listed.iter().all(|l| l.len() == 1) {
            break;
        }
        assert!(started_at.elapsed() < PATIENCE, "solo never placed: {got:?} {listed:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The leader leaves: another is elected within the lease TTL, and solo
    // is never on two workers meanwhile.
    let old = leaders(&cs).await.remove(0);
    let i = cs.iter().position(|c| c.url == old).unwrap();
    let gone = cs.remove(i);
    gone.stop().await;
    let left = std::time::Instant::now();
    loop {
        for c in &cs {
            assert!(placed_on(c, "solo").len() <= 1, "solo on two workers");
        }
        if leaders(&cs).await.len() == 1 {
            break;
        }
        assert!(
            left.elapsed() < Duration::from_secs(3),
            "no new leader within the lease TTL"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The cluster goes on placing: solo is on one healthy worker again.
    let started_at = std::time::Instant::now();
    while !cs.iter().all(|c| placed_on(c, "solo").len() == 1) {
        for c in &cs {
            assert!(placed_on(c, "solo").len() <= 1, "solo on two workers");
        }
        assert!(started_at.elapsed() < PATIENCE, "solo not placed again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_leader_compacts_old_revisions() {
    let etcd = Etcd::start().await;
    let mut config = member(&etcd, "compact", "coord-a", Duration::from_secs(30));
    config.cluster.etcd_compact_interval = Duration::from_millis(200);
    let c = started(config).await;
    health_until(&c, PATIENCE, |h| h["cluster"]["role"] == "leader").await;
    let dir = tempfile::tempdir().unwrap();
    let _w = c.worker("w1", dir.path()).await;
    let mut client = etcd.client().await;
    let first = client
        .put("/compact/probe", "x", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    // A later write, so that the history has something past `first`.
    client.put("/compact/probe", "y", None).await.unwrap();
    let started_at = std::time::Instant::now();
    // An old revision read fails once it is compacted.
    while client
        .get(
            "/compact/probe",
            Some(etcd_client::GetOptions::new().with_revision(first)),
        )
        .await
        .is_ok()
    {
        assert!(started_at.elapsed() < PATIENCE, "revision {first} never compacted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The fleet is still listed, live, after it.
    health_until(&c, PATIENCE, |h| h["workers"]["healthy"] == 1).await;
}

#[tokio::test]
async fn after_its_lease_expired_a_coordinator_does_not_claim_back_a_worker_another_took() {
    let etcd = Etcd::start().await;
    let c = started(member(&etcd, "expired", "coord-a", Duration::from_secs(3))).await;
    let mut raw = c.raw().await;
    let w = raw.hello(hello("taken", "inst-taken", "")).await;
    let mut client = etcd.client().await;
    let session = format!("/expired/sessions/{}", w.worker_id);
    let started_at = std::time::Instant::now();
    let lease = loop {
        if let Some(kv) = client.get(session.as_str(), None).await.unwrap().kvs().first() {
            break kv.lease();
        }
        assert!(started_at.elapsed() < PATIENCE, "no session key");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // coord-a's lease ends (as when it is cut off from etcd past the TTL),
    // and coord-b takes the worker over meanwhile.
    client.lease_revoke(lease).await.unwrap();
    let b_lease = client.lease_grant(30, None).await.unwrap().id();
    let theirs =
        edgeplane::cluster::record_codec::encode_session("coord-b", 100, edgeplane::registry::WorkerState::Healthy);
    client
        .put(
            session.as_str(),
            theirs.clone(),
            Some(etcd_client::PutOptions::new().with_lease(b_lease)),
        )
        .await
        .unwrap();
    // coord-a takes a new lease and writes its own key again...
    let started_at = std::time::Instant::now();
    while client
        .get("/expired/coordinators/coord-a", None)
        .await
        .unwrap()
        .kvs()
        .is_empty()
    {
        assert!(started_at.elapsed() < PATIENCE, "coord-a never rejoined");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...but not the session coord-b holds, and it lets the worker go.
    let ended = within(raw.end()).await;
    assert!(ended.is_ok(), "{ended:?}");
    let kv = client.get(session.as_str(), None).await.unwrap();
    assert_eq!(kv.kvs()[0].value(), &theirs[..], "coord-b's claim stands");
    assert_eq!(kv.kvs()[0].lease(), b_lease);
}

#[tokio::test]
async fn a_drain_asked_of_any_coordinator_reaches_the_worker() {
    let etcd = Etcd::start().await;
    let cs = three(&etcd, "drain").await;
    let dir = tempfile::tempdir().unwrap();
    let (agent, _stop) = cs[0].worker("held-by-a", dir.path()).await;
    let want = std::collections::BTreeMap::from([("held-by-a".to_string(), "coord-a".to_string())]);
    lists(&cs[2], &want).await;
    // The operator asks coord-c, which does not hold the worker.
    let mut admin = cs[2].admin().await;
    admin
        .drain_worker(edgeplane::proto::DrainWorkerRequest {
            worker: "held-by-a".into(),
            reason: "maintenance".into(),
        })
        .await
        .unwrap();
    within(agent.wait_for(|s| s.draining)).await;
    for c in &cs {
        let started_at = std::time::Instant::now();
        while c
            .registry
            .snapshot(Some(edgeplane::registry::WorkerState::Draining))
            .is_empty()
        {
            assert!(started_at.elapsed() < PATIENCE, "{} never lists it draining", c.url);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A clustered coordinator's `/metrics`: exactly one leader, the leader's
/// change counted, lease renewals timed.
#[tokio::test]
async fn metrics_show_the_leader_and_lease_renewals() {
    let etcd = Etcd::start().await;
    let a = started(member(&etcd, "metrics", "coord-a", Duration::from_secs(3))).await;
    let b = started(member(&etcd, "metrics", "coord-b", Duration::from_secs(3))).await;
    let value = |text: &str, series: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse::<f64>().ok()))
    };
    let scrape = |c: &TestCoordinator| {
        let url = format!("{}/metrics", c.url);
        async move { reqwest::get(url).await.unwrap().text().await.unwrap() }
    };
    let started_at = std::time::Instant::now();
    loop {
        let (ta, tb) = (scrape(&a).await, scrape(&b).await);
        let leaders: Vec<f64> = [&ta, &tb]
            .iter()
            .filter_map(|t| value(t, "edgeplane_is_leader "))
            .collect();
        let renewed = [&ta, &tb]
            .iter()
            .all(|t| value(t, "edgeplane_lease_renew_seconds_count ").is_some_and(|n| n >= 1.0));
        if leaders.iter().sum::<f64>() == 1.0 && leaders.len() == 2 && renewed {
            let leader = if value(&ta, "edgeplane_is_leader ") == Some(1.0) {
                &ta
            } else {
                &tb
            };
            assert!(
                value(leader, "edgeplane_leader_changes_total ").is_some_and(|n| n >= 1.0),
                "{leader}"
            );
            break;
        }
        assert!(started_at.elapsed() < PATIENCE, "a: {ta}\nb: {tb}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.stop().await;
    b.stop().await;
}
