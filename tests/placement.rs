//! Placement against the real coordinator: catalog services go to workers
//! that can hold them, and come back to the pool when a worker is lost.

mod common;

use common::*;
use edgeplane::proto::{
    coordinator_message::Msg as In, worker_message::Msg as Out, Capabilities, Gpu, Hello, Keepalive,
};
use std::time::Duration;

const GIB: u64 = 1 << 30;

fn gpu_hello(name: &str, gpu_gib: u64, cores: u32) -> Hello {
    Hello {
        name: name.into(),
        instance_id: format!("inst-{name}"),
        advertise_address: "127.0.0.1".into(),
        capabilities: Some(Capabilities {
            cpu_cores: cores,
            memory_bytes: 64 * GIB,
            gpus: vec![Gpu {
                model: "test-gpu".into(),
                memory_bytes: gpu_gib * GIB,
            }],
            labels: Default::default(),
            runtimes: vec!["process".into()],
        }),
        ..Default::default()
    }
}

/// Keeps a raw worker alive in the background.
fn keep_alive(raw: &RawWorker) -> tokio::task::JoinHandle<()> {
    let tx = raw.tx.clone();
    tokio::spawn(async move {
        let mut seq = 0;
        loop {
            seq += 1;
            let m = edgeplane::proto::WorkerMessage {
                msg: Some(Out::Keepalive(Keepalive {
                    seq,
                    ..Default::default()
                })),
            };
            if tx.send(m).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

/// Reads the stream until an assignment satisfies `f`; returns its service names.
async fn assignment_where(raw: &mut RawWorker, f: impl Fn(&[String]) -> bool) -> Vec<String> {
    loop {
        match raw.recv().await {
            Ok(Some(In::Assignment(a))) => {
                let names: Vec<String> = a.services.iter().map(|s| s.name.clone()).collect();
                if f(&names) {
                    return names;
                }
            }
            Ok(Some(_)) => {}
            other => panic!("stream ended: {other:?}"),
        }
    }
}

async fn providers(c: &TestCoordinator, service: &str) -> Vec<String> {
    let services: serde_json::Value = reqwest::get(format!("{}/api/admin/services", c.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let s = services
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == service)
        .unwrap();
    s["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["worker"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn placement_respects_gpu_memory_and_replaces_a_lost_worker() {
    let cfg = edgeplane::coordinator::CoordinatorConfig {
        placement_grace: Duration::from_millis(300),
        heartbeat_timeout: Duration::from_secs(5),
        worker_timeout: Duration::from_secs(10),
        ..fast_config()
    };
    let c = TestCoordinator::start(cfg).await;

    let mut small = c.raw().await;
    small.hello(gpu_hello("gpu-small", 8, 8)).await;
    let _ka_small = keep_alive(&small);
    // The small GPU gets the 8 GiB OCR model but never the 24 GiB LLM.
    let got = assignment_where(&mut small, |n| n.iter().any(|s| s == "vision-ocr")).await;
    assert!(!got.contains(&"llm-inference".to_string()), "{got:?}");

    let mut big = c.raw().await;
    big.hello(gpu_hello("gpu-big", 80, 16)).await;
    let ka_big = keep_alive(&big);
    assignment_where(&mut big, |n| n.iter().any(|s| s == "llm-inference")).await;
    assert_eq!(providers(&c, "llm-inference").await, ["gpu-big"]);

    // The placement shows in the worker list the old fleet's scripts read.
    let workers: serde_json::Value = reqwest::get(format!("{}/api/admin/workers", c.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let big_json = workers
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "gpu-big")
        .unwrap();
    let assigned: Vec<&str> = big_json["assigned_containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(assigned.contains(&"llm-inference"), "{assigned:?}");

    // Nothing runs it yet (no replica ready): the gap is critical.
    let gaps: serde_json::Value = reqwest::get(format!("{}/api/admin/gaps", c.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let llm = gaps
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["service"] == "llm-inference")
        .unwrap();
    assert_eq!(llm["status"], "critical");
    assert_eq!(llm["reason"], "all_loading");

    // The big worker is lost; after the grace its services are taken back,
    // and the LLM is not squeezed onto the 8 GiB GPU.
    ka_big.abort();
    drop(big);
    let mut watch = c.watch().await;
    watch
        .until(|e| {
            e.worker
                .as_ref()
                .is_some_and(|w| w.name == "gpu-big" && !w.services.iter().any(|s| s.name == "llm-inference"))
        })
        .await;
    assert!(providers(&c, "llm-inference").await.is_empty());
    let gaps: serde_json::Value = reqwest::get(format!("{}/api/admin/gaps", c.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let llm = gaps
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["service"] == "llm-inference")
        .unwrap();
    assert_eq!(llm["reason"], "none_placed");
    assert_eq!(providers(&c, "vision-ocr").await, ["gpu-small"]);
}

#[tokio::test]
async fn workers_without_a_runtime_are_never_given_placements() {
    let c = TestCoordinator::start(fast_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let (agent, _stop) = c.worker("declare-only", dir.path()).await;
    let id = agent.status().borrow().worker_id.clone().unwrap();
    // Give placement every chance to run, then look.
    let mut raw = c.raw().await;
    let mut h = gpu_hello("placeable", 80, 16);
    h.instance_id = "inst-placeable".into();
    raw.hello(h).await;
    let _ka = keep_alive(&raw);
    assignment_where(&mut raw, |n| n.iter().any(|s| s == "llm-inference")).await;
    let mut admin = c.admin().await;
    let w = admin
        .get_worker(edgeplane::proto::GetWorkerRequest { worker: id })
        .await
        .unwrap()
        .into_inner();
    assert!(w.services.is_empty(), "a worker with no runtime got {:?}", w.services);
}
