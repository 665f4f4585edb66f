//! The control stream: identity, liveness, the health clock, resumption and
//! restarts, against the real coordinator and real worker agents.

mod common;

use common::*;
use edgeplane::proto::{
    coordinator_message::Msg as In, worker_message::Msg as Out, EventKind, GetWorkerRequest, Keepalive,
    ListWorkersRequest, ServiceState, ServiceStatus, WorkerStatus,
};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

#[tokio::test]
async fn assigned_id_arrives_first_and_binds_the_stream() {
    let c = TestCoordinator::start(fast_config()).await;
    let mut raw = c.raw().await;
    // The very first message on the stream is the Welcome with the id.
    let mut h = hello("gpu-a", "inst-a", "");
    h.services = vec![edgeplane::proto::DeclaredService {
        name: "llm-inference".into(),
        url: "http://127.0.0.1:9".into(),
    }];
    let welcome = raw.hello(h).await;
    assert!(welcome.worker_id.starts_with("w-"), "{welcome:?}");
    assert!(!welcome.resume_token.is_empty());
    assert_eq!(welcome.keepalive_interval_ms, 50);
    assert_eq!(welcome.heartbeat_timeout_ms, 400);

    // A later message names no worker, yet lands on this one: the stream is the identity.
    raw.send(Out::ServiceStatus(ServiceStatus {
        service: "llm-inference".into(),
        state: ServiceState::Loading as i32,
        message: "loading weights".into(),
    }))
    .await;
    let mut watch = c.watch().await;
    let e = watch
        .until(|e| {
            e.worker.as_ref().is_some_and(|w| {
                w.worker_id == welcome.worker_id && w.services.iter().any(|s| s.state == ServiceState::Loading as i32)
            })
        })
        .await;
    let w = e.worker.unwrap();
    assert_eq!(w.name, "gpu-a");
    assert_eq!(w.services[0].name, "llm-inference");
    assert_eq!(w.services[0].state, ServiceState::Loading as i32);

    // The agent adopts the id it is given.
    let dir = tempfile::tempdir().unwrap();
    let (agent, _stop) = c.worker("cpu-b", dir.path()).await;
    let id = agent.status().borrow().worker_id.clone().unwrap();
    let mut admin = c.admin().await;
    let listed = admin
        .list_workers(ListWorkersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .workers;
    assert!(listed.iter().any(|w| w.worker_id == id && w.name == "cpu-b"));
    // Keepalives flow on that id and are acknowledged.
    agent.wait_for(|s| s.keepalives_acked >= 3).await;
}

#[tokio::test]
async fn keepalives_keep_a_loading_worker_healthy() {
    let c = TestCoordinator::start(fast_config()).await;
    let mut watch = c.watch().await;
    let dir = tempfile::tempdir().unwrap();
    let (agent, _stop) = c.worker("gpu-loader", dir.path()).await;
    // Not a catalog service (one of those is reported only where it is
    // declared or placed): the embedding program's own.
    agent.set_service("llama-70b", ServiceState::Loading, "loading a 70B model");
    let id = agent.status().borrow().worker_id.clone().unwrap();

    // The "model load" lasts five heartbeat timeouts (the old system's
    // 10-minute load against a 5-minute timeout, scaled down). A blocking
    // thread stands in for the loader hogging a core meanwhile.
    let load = fast_config().heartbeat_timeout * 5;
    let loader = tokio::task::spawn_blocking(move || {
        let until = Instant::now() + load;
        let mut x = 0u64;
        while Instant::now() < until {
            x = x.wrapping_add(1);
        }
        x
    });
    let unhealthy = tokio::time::timeout(
        load,
        watch.until(|e| {
            e.worker
                .as_ref()
                .is_some_and(|w| w.worker_id == id && w.status != WorkerStatus::Healthy as i32)
        }),
    )
    .await;
    assert!(unhealthy.is_err(), "worker left healthy during the load: {unhealthy:?}");
    loader.await.unwrap();

    let mut admin = c.admin().await;
    let w = admin
        .get_worker(GetWorkerRequest { worker: id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(w.status, WorkerStatus::Healthy as i32);
    assert_eq!(
        w.services[0].state,
        ServiceState::Loading as i32,
        "liveness is not readiness"
    );

    agent.set_service("llama-70b", ServiceState::Ready, "");
    let e = watch
        .until(|e| {
            e.worker
                .as_ref()
                .is_some_and(|w| w.worker_id == id && w.services.iter().any(|s| s.state == ServiceState::Ready as i32))
        })
        .await;
    assert_eq!(e.worker.unwrap().status, WorkerStatus::Healthy as i32);
}

#[tokio::test]
async fn silence_degrades_then_removes_at_the_configured_timeouts() {
    let cfg = fast_config();
    let c = TestCoordinator::start(cfg.clone()).await;
    let mut watch = c.watch().await;
    let mut raw = c.raw().await;
    let welcome = raw.hello(hello("quiet", "inst-q", "")).await;
    let heard = Instant::now();
    let id = welcome.worker_id;

    // Stream open, nothing sent: degraded after the heartbeat timeout, not before.
    let e = watch.until_status(&id, WorkerStatus::Degraded).await;
    let degraded_after = heard.elapsed();
    assert!(
        degraded_after >= cfg.heartbeat_timeout - Duration::from_millis(20),
        "{degraded_after:?}"
    );
    assert!(degraded_after < cfg.worker_timeout, "{degraded_after:?}");
    assert!(e.reason.contains("silent"), "{}", e.reason);

    // One keepalive brings it back at once.
    raw.send(Out::Keepalive(Keepalive {
        seq: 1,
        ..Default::default()
    }))
    .await;
    watch.until_status(&id, WorkerStatus::Healthy).await;
    let heard = Instant::now();
    watch.until_status(&id, WorkerStatus::Degraded).await;

    // Still silent: removed after the worker timeout, and told so.
    let e = watch.until(|e| e.kind == EventKind::Removed as i32).await;
    let removed_after = heard.elapsed();
    assert_eq!(e.worker.unwrap().worker_id, id);
    assert!(
        removed_after >= cfg.worker_timeout - Duration::from_millis(20),
        "{removed_after:?}"
    );
    loop {
        match raw.recv().await {
            Ok(Some(In::Goodbye(g))) => {
                assert!(g.reason.contains("removed"), "{}", g.reason);
                break;
            }
            Ok(Some(In::KeepaliveAck(_))) => continue,
            other => panic!("expected a goodbye, got {other:?}"),
        }
    }
    let mut admin = c.admin().await;
    let err = admin.get_worker(GetWorkerRequest { worker: id }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn killed_worker_process_is_disconnected_at_once() {
    // Timeouts far longer than the test: only the closed stream can explain the change.
    let mut cfg = fast_config();
    cfg.heartbeat_timeout = Duration::from_secs(60);
    cfg.worker_timeout = Duration::from_secs(120);
    let c = TestCoordinator::start(cfg).await;
    let mut watch = c.watch().await;
    let dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_edgeplane"))
        .args(["worker", "--coordinator", &c.url, "--name", "doomed", "--state-dir"])
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("spawn worker process");
    let added = watch.until(|e| e.kind == EventKind::Added as i32).await.worker.unwrap();
    assert_eq!(added.name, "doomed");

    child.start_kill().unwrap();
    let killed = Instant::now();
    child.wait().await.unwrap();
    let e = watch.until_status(&added.worker_id, WorkerStatus::Disconnected).await;
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(5), "disconnect noticed only after {took:?}");
    assert!(!e.reason.is_empty());
    // The record is kept for resumption.
    let mut admin = c.admin().await;
    let w = admin
        .get_worker(GetWorkerRequest {
            worker: added.worker_id,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(w.status, WorkerStatus::Disconnected as i32);
}

#[tokio::test]
async fn resume_with_token_gets_the_same_id() {
    let c = TestCoordinator::start(fast_config()).await;
    let mut first = c.raw().await;
    let w1 = first.hello(hello("edge-1", "inst-1", "")).await;
    drop(first);
    let mut watch = c.watch().await;
    watch.until_status(&w1.worker_id, WorkerStatus::Disconnected).await;

    let mut again = c.raw().await;
    let w2 = again.hello(hello("edge-1", "inst-1", &w1.resume_token)).await;
    assert_eq!(w2.worker_id, w1.worker_id);
    assert!(w2.resumed);
    assert_ne!(w2.resume_token, w1.resume_token, "tokens rotate per session");
    let e = watch.until_status(&w1.worker_id, WorkerStatus::Healthy).await;
    assert_eq!(e.worker.unwrap().sessions, 2);

    // An agent whose stream is cut resumes by itself, same id.
    let dir = tempfile::tempdir().unwrap();
    let (agent, _stop) = c.worker("edge-2", dir.path()).await;
    let id = agent.status().borrow().worker_id.clone().unwrap();
    c.registry.close_all("test cut the stream");
    let s = agent.wait_for(|s| s.sessions >= 2 && s.connected).await;
    assert_eq!(s.worker_id.as_deref(), Some(id.as_str()));
    assert!(s.resumed);
}

#[tokio::test]
async fn forged_token_does_not_take_over_a_worker() {
    let c = TestCoordinator::start(fast_config()).await;
    let mut victim = c.raw().await;
    let v = victim.hello(hello("bank", "inst-victim", "")).await;

    // Same name, a made-up token: a new worker, not the victim's session.
    let mut thief = c.raw().await;
    let t = thief
        .hello(hello(
            "bank",
            "inst-thief",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ))
        .await;
    assert_ne!(t.worker_id, v.worker_id);
    assert!(!t.resumed);

    // Claiming the victim's instance id while it is connected is refused.
    let mut thief2 = c.raw().await;
    thief2.send(Out::Hello(hello("bank", "inst-victim", "forged"))).await;
    let err = thief2.end().await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists, "{err:?}");

    // Claiming the victim's id as "previous" only works for an id nobody holds.
    let mut thief3 = c.raw().await;
    let mut h = hello("bank", "inst-thief3", "");
    h.previous_worker_id = v.worker_id.clone();
    let t3 = thief3.hello(h).await;
    assert_ne!(t3.worker_id, v.worker_id);

    // The victim's stream is untouched: its keepalives are still acknowledged.
    victim
        .send(Out::Keepalive(Keepalive {
            seq: 7,
            ..Default::default()
        }))
        .await;
    match victim.recv().await {
        Ok(Some(In::KeepaliveAck(a))) => assert_eq!(a.seq, 7),
        other => panic!("victim lost its stream: {other:?}"),
    }
}

#[tokio::test]
async fn restarted_worker_process_keeps_its_id_by_instance_id() {
    let c = TestCoordinator::start(fast_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let (agent, stop) = c.worker("storage-1", dir.path()).await;
    let id = agent.status().borrow().worker_id.clone().unwrap();
    stop.cancel();
    agent.join().await;
    let mut watch = c.watch().await;
    watch.until_status(&id, WorkerStatus::Disconnected).await;

    // A new process: no resume token in memory, the same state dir.
    let (agent, _stop) = c.worker("storage-1", dir.path()).await;
    assert_eq!(agent.status().borrow().worker_id.as_deref(), Some(id.as_str()));
    let mut admin = c.admin().await;
    let all = admin
        .list_workers(ListWorkersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .workers;
    assert_eq!(all.len(), 1, "no duplicate: {all:?}");
}

#[tokio::test]
async fn coordinator_restart_brings_every_worker_back_without_duplicates() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let c = TestCoordinator::start_on(listener, fast_config());
    let dir = tempfile::tempdir().unwrap();
    let mut agents = Vec::new();
    for i in 0..5 {
        agents.push(c.worker(&format!("fleet-{i}"), dir.path()).await);
    }
    let before = c.watch().await.until_fleet(5, WorkerStatus::Healthy).await;
    c.stop().await;
    for (a, _) in &agents {
        a.wait_for(|s| !s.connected).await;
    }

    let listener = within(async {
        loop {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => return l,
                Err(_) => tokio::task::yield_now().await,
            }
        }
    })
    .await;
    let c = TestCoordinator::start_on(listener, fast_config());
    let after = c.watch().await.until_fleet(5, WorkerStatus::Healthy).await;
    assert_eq!(before, after, "every worker came back under its old id");
    for (a, _) in &agents {
        let s = a.wait_for(|s| s.connected).await;
        assert_eq!(s.sessions, 2);
    }
}

#[tokio::test]
async fn crashed_coordinator_process_is_rejoined_by_the_fleet() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let listen = format!("127.0.0.1:{port}");
    let spawn = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_edgeplane"))
            .args(["coordinator", "--listen", &listen, "--keepalive-interval", "100ms"])
            .args(["--heartbeat-timeout", "2s", "--worker-timeout", "5s"])
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .spawn()
            .expect("spawn coordinator")
    };
    let mut coord = spawn();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://{listen}");
    let mut agents = Vec::new();
    for i in 0..3 {
        let mut cfg = edgeplane::worker::WorkerConfig::new(url.clone());
        cfg.name = Some(format!("edge-{i}"));
        cfg.state_dir = Some(dir.path().join(i.to_string()));
        cfg.reconnect_min = Duration::from_millis(20);
        cfg.reconnect_max = Duration::from_millis(200);
        agents.push(start_agent(cfg).await);
    }
    let before: BTreeSet<String> = agents
        .iter()
        .map(|(a, _)| a.status().borrow().worker_id.clone().unwrap())
        .collect();

    coord.start_kill().unwrap();
    coord.wait().await.unwrap();
    for (a, _) in &agents {
        a.wait_for(|s| !s.connected).await;
    }
    let _coord = spawn();
    for (a, _) in &agents {
        a.wait_for(|s| s.connected && s.sessions == 2).await;
    }
    let after: BTreeSet<String> = agents
        .iter()
        .map(|(a, _)| a.status().borrow().worker_id.clone().unwrap())
        .collect();
    assert_eq!(before, after);
    let channel = tonic::transport::Endpoint::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut admin = edgeplane::proto::admin_client::AdminClient::new(channel);
    let all = admin
        .list_workers(ListWorkersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .workers;
    assert_eq!(all.len(), 3, "{all:?}");
}
