//! Starting a worker agent with `--runtime auto` asks the Docker Engine
//! whether it is there. That question must not hold a runtime thread: on a
//! single-threaded runtime (`--threads 1`, or a test's) an engine that
//! answers through the same runtime would otherwise never get to answer,
//! and the worker would run processes on a machine whose engine is fine.
//!
//! Alone in its file: it points `DOCKER_HOST` (process-wide) at a stand-in
//! engine.

mod common;

use common::*;
use edgeplane::proto::GetWorkerRequest;
use edgeplane::worker::RuntimeChoice;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Answers `GET /_ping` with 200 and everything else with 404, on the
/// runtime the test runs on.
fn engine(path: &std::path::Path) {
    let listener = tokio::net::UnixListener::bind(path).unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let reply: &[u8] = if buf[..n].starts_with(b"GET /_ping") {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK"
                } else {
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
                };
                let _ = s.write_all(reply).await;
            });
        }
    });
}

// One runtime thread for the coordinator, the agent and the engine.
#[tokio::test(flavor = "current_thread")]
async fn auto_finds_an_engine_that_answers_on_the_agents_own_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    engine(&socket);
    std::env::set_var("DOCKER_HOST", format!("unix://{}", socket.display()));

    // No services to place: the test is about what the worker says it can run.
    let c = TestCoordinator::start(catalog_config(dir.path(), "")).await;
    let mut cfg = c.worker_config("docker-host", dir.path());
    cfg.runtime = RuntimeChoice::Auto;
    let (_agent, _stop) = start_agent(cfg).await;

    let w = c
        .admin()
        .await
        .get_worker(GetWorkerRequest {
            worker: "docker-host".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(w.capabilities.unwrap().runtimes, vec!["docker".to_string()]);
}
