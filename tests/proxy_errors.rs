//! What the proxy answers when it cannot deliver: the catalog's per-service
//! timeout (504), an upstream that is gone (502), and a catalog file that is
//! refused at start with its line and reason.

mod common;

use common::backend;
use common::*;
use std::time::{Duration, Instant};

const CATALOG: &str = r#"
[[service]]
name = "slow-model"
aliases = ["slow"]
requires = "cpu"
priority = 1
port = 9100
readiness = { http = "/health" }
timeout = "300ms"
"#;

#[tokio::test]
async fn the_catalog_timeout_gives_504_and_a_dead_upstream_502() {
    let dir = tempfile::tempdir().unwrap();
    let c = TestCoordinator::start(catalog_config(dir.path(), CATALOG)).await;
    let b = backend::start("slow-replica").await;
    let mut cfg = c.worker_config("cpu-1", dir.path());
    cfg.services = vec![("slow".into(), b.url.clone())];
    cfg.data_path = edgeplane::worker::DataPath::Direct;
    // Probing rarely, so the worker keeps reporting ready after the backend dies.
    cfg.probe_interval = Duration::from_secs(60);
    let (_w, _s) = start_agent(cfg).await;
    let mut watch = c.watch().await;
    watch
        .until_service(None, Some("slow-model"), edgeplane::proto::ServiceState::Ready)
        .await;

    let client = reqwest::Client::new();
    let started = Instant::now();
    let r = client.get(format!("{}/service/slow/hang", c.url)).send().await.unwrap();
    assert_eq!(r.status(), 504);
    assert!(started.elapsed() < Duration::from_secs(10), "the timeout did not apply");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"], "upstream_timeout");
    assert_eq!(v["worker"], "cpu-1");

    b.stop.cancel();
    // Once the listener is gone, the only replica refuses: 502, with the worker named.
    let v: serde_json::Value = within(async {
        loop {
            let r = client.get(format!("{}/service/slow/echo", c.url)).send().await.unwrap();
            if r.status() == 502 {
                return r.json().await.unwrap();
            }
        }
    })
    .await;
    assert_eq!(v["error"], "upstream_failed");
    assert_eq!(v["service"], "slow-model");
}

#[tokio::test]
async fn a_malformed_catalog_is_refused_at_start_with_file_line_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("bad.toml");
    std::fs::write(
        &catalog,
        "[[service]]\nname = \"ok\"\nport = 1\n\n[[service]]\nname = \"broken\"\nport = \"eighty\"\n",
    )
    .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_edgeplane"))
        .args(["coordinator", "--listen", "127.0.0.1:0", "--catalog"])
        .arg(&catalog)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:7:"), "{err}");
    assert!(err.contains("invalid type") || err.contains("integer"), "{err}");
}
