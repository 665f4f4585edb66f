//! The docker runtime against this machine's Docker Engine, with no
//! registry: a missing image is reported `failed` with the engine's
//! message; a container from an image built here (`deploy/offline-image.sh`
//! around the test binary) runs with its owner labels and published port,
//! is stopped and removed when unassigned; one a crashed worker left is
//! adopted as it is, replaced when its spec changed, and removed when no
//! longer wanted.
//!
//! These tests need a reachable Docker Engine: without one they fail and
//! say so (they are not skipped). The whole stack in Docker is
//! `tests/e2e_docker.sh`.

mod common;

use bollard::query_parameters::ListContainersOptionsBuilder;
use common::free_port;
use edgeplane::proto::ServiceState;
use edgeplane::worker::runtime::docker::{DockerContext, DockerRuntime, OWNER_LABEL, SERVICE_LABEL, WORKER_LABEL};
use edgeplane::worker::runtime::RunSpec;
use edgeplane::worker::tunnel::LocalServices;
use edgeplane::worker::ServiceReport;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;

const IMAGE: &str = "edgeplane-test:runtime";

async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("timed out waiting")
}

async fn require_docker() {
    assert!(
        edgeplane::worker::docker_answers().await,
        "tests/docker_runtime.rs needs a Docker Engine: none answered at DOCKER_HOST or /var/run/docker.sock. \
         Start Docker (or point DOCKER_HOST at one) to run these tests."
    );
}

/// The test image: the test build's binary and its libraries, imported offline (once).
fn test_image() {
    static BUILT: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if *built {
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/offline-image.sh");
    let out = std::process::Command::new("bash")
        .args([script, env!("CARGO_BIN_EXE_edgeplane"), IMAGE])
        .output()
        .expect("run deploy/offline-image.sh");
    assert!(
        out.status.success(),
        "deploy/offline-image.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    *built = true;
}

fn owner(test: &str) -> String {
    format!("test-{test}-{}", std::process::id())
}

fn context(owner: &str, worker: &str) -> (DockerContext, watch::Receiver<BTreeMap<String, ServiceReport>>) {
    let (board, reports) = watch::channel(BTreeMap::new());
    let ctx = DockerContext {
        board,
        local: LocalServices::default(),
        worker_name: worker.to_string(),
        owner: owner.to_string(),
        stop_grace: Duration::from_secs(2),
        gpus: false,
        network: None,
        publish_all: false,
    };
    (ctx, reports)
}

fn sample(port: u16, env: &[(&str, &str)]) -> RunSpec {
    RunSpec {
        name: "echo-model".into(),
        port,
        image: IMAGE.into(),
        command: [
            "edgeplane",
            "sample-service",
            "--port",
            &port.to_string(),
            "--name",
            "echo-model",
        ]
        .map(String::from)
        .to_vec(),
        env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    }
}

/// Containers labelled with `owner`: (id, labels).
async fn owned(owner: &str) -> Vec<(String, HashMap<String, String>)> {
    let docker = bollard::Docker::connect_with_defaults()
        .unwrap()
        .negotiate_version()
        .await
        .unwrap();
    let filters: HashMap<&str, Vec<String>> = [("label", vec![format!("{OWNER_LABEL}={owner}")])].into();
    docker
        .list_containers(Some(
            ListContainersOptionsBuilder::new().all(true).filters(&filters).build(),
        ))
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.id.unwrap_or_default(), c.labels.unwrap_or_default()))
        .collect()
}

/// Waits until the sample service answers on the published port.
async fn answers(port: u16) {
    let url = format!("http://127.0.0.1:{port}/health");
    within(async {
        loop {
            if let Ok(r) = reqwest::get(&url).await {
                if r.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

/// Runs `f` on a runtime of its own, then drops that runtime without
/// stopping anything, as a worker killed with SIGKILL would.
fn then_crash<T: Send + 'static>(
    f: impl FnOnce() -> std::pin::Pin<Box<dyn Future<Output = T> + Send>> + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let out = rt.block_on(f());
        drop(rt);
        out
    })
    .join()
    .expect("crashing worker thread")
}

#[tokio::test]
async fn a_missing_image_is_failed_with_the_engines_message() {
    require_docker().await;
    let owner = owner("missing");
    let (ctx, mut reports) = context(&owner, "imageless");
    let rt = DockerRuntime::new(ctx);
    let spec = RunSpec {
        image: "edgeplane-test/no-such-image:never".into(),
        ..sample(free_port(), &[])
    };
    rt.reconcile(vec![spec]).await;
    let r = within(reports.wait_for(|m| m.get("echo-model").is_some_and(|r| r.state == ServiceState::Failed)))
        .await
        .unwrap()["echo-model"]
        .clone();
    assert!(
        r.message.contains("edgeplane-test/no-such-image:never"),
        "{}",
        r.message
    );
    assert!(
        r.message.to_lowercase().contains("no such image") || r.message.contains("cannot be pulled"),
        "{}",
        r.message
    );

    // Unassigned: the report is withdrawn and nothing is left.
    rt.reconcile(Vec::new()).await;
    assert!(reports.borrow_and_update().get("echo-model").is_none());
    assert!(owned(&owner).await.is_empty());
}

#[tokio::test]
async fn containers_run_with_labels_are_adopted_after_a_crash_and_removed_when_unwanted() {
    require_docker().await;
    test_image();
    let owner = owner("adopt");
    let port = free_port();

    // A worker starts the service, then dies without stopping it.
    let (ctx, _) = context(&owner, "runner");
    let spec = sample(port, &[("MODEL", "tiny")]);
    let first = then_crash({
        let (spec, owner) = (spec.clone(), owner.clone());
        move || {
            Box::pin(async move {
                let rt = DockerRuntime::new(ctx);
                rt.reconcile(vec![spec]).await;
                answers(port).await;
                owned(&owner).await
            })
        }
    });
    assert_eq!(first.len(), 1, "{first:?}");
    let (id, labels) = &first[0];
    assert_eq!(labels[SERVICE_LABEL], "echo-model");
    assert_eq!(labels[WORKER_LABEL], "runner");
    answers(port).await; // it outlived its worker

    // The next run adopts it as it is, then replaces it when the spec
    // changes: again a crash, leaving the new one behind.
    let (ctx, _) = context(&owner, "runner");
    let changed = sample(port, &[("MODEL", "bigger")]);
    let (adopted, replaced) = then_crash({
        let (spec, owner) = (spec.clone(), owner.clone());
        move || {
            Box::pin(async move {
                let rt = DockerRuntime::new(ctx);
                rt.reconcile(vec![spec]).await;
                answers(port).await;
                let adopted = owned(&owner).await;
                rt.reconcile(vec![changed]).await;
                answers(port).await;
                (adopted, owned(&owner).await)
            })
        }
    });
    assert_eq!(adopted.len(), 1);
    assert_eq!(&adopted[0].0, id, "the running container was adopted, not replaced");
    assert_eq!(replaced.len(), 1);
    assert_ne!(&replaced[0].0, id, "a changed spec gets a new container");

    // A run that no longer wants it removes it on its first assignment.
    let (ctx, mut reports) = context(&owner, "runner");
    let rt = DockerRuntime::new(ctx);
    rt.reconcile(Vec::new()).await;
    assert!(owned(&owner).await.is_empty(), "the unwanted leftover was removed");

    // Assigned, then unassigned: stopped, removed, report withdrawn.
    rt.reconcile(vec![spec]).await;
    answers(port).await;
    within(reports.wait_for(|m| m.contains_key("echo-model")))
        .await
        .unwrap();
    rt.reconcile(Vec::new()).await;
    assert!(owned(&owner).await.is_empty(), "unassigned, the container is gone");
    assert!(reports.borrow_and_update().get("echo-model").is_none());
    assert!(reqwest::get(format!("http://127.0.0.1:{port}/health")).await.is_err());
}
