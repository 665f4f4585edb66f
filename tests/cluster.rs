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
    let (rec, steady) = stored_until(&etcd, &key, |r| r.name == "w1" && r.disconnected_ms.is_none()).await;
    assert_eq!(rec.sessions, 1);

    // Keepalives flow (every 50 ms here); etcd's revision stays where it is.
    let acked = agent.status().borrow().keepalives_acked;
    within(agent.wait_for(|s| s.keepalives_acked >= acked + 20)).await;
    let mut client = etcd.client().await;
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
}
