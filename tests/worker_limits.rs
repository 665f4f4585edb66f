//! The worker's decode limit on the control stream follows its
//! configuration (`--max-message-bytes`), as the coordinator's does: a
//! coordinator allowed to send large assignments has workers that can take
//! them, instead of workers whose stream breaks on every assignment.

mod common;

use common::*;
use edgeplane::coordinator::CoordinatorConfig;
use edgeplane::proto::ServiceState;
use edgeplane::worker::RuntimeChoice;

/// A service whose assignment is about 1.5 MiB (its environment), past the
/// 1 MiB default on both ends.
fn big_catalog() -> String {
    let big = "x".repeat(64 * 1024);
    let env: Vec<String> = (0..24).map(|i| format!("VAR_{i} = \"{big}\"")).collect();
    format!(
        "[[service]]\nname = \"big-env\"\nrequires = \"cpu\"\nport = {}\ncommand = [\"sleep\", \"60\"]\n\n[service.env]\n{}\n",
        free_port(),
        env.join("\n")
    )
}

#[tokio::test]
async fn a_worker_configured_for_large_messages_takes_a_large_assignment() {
    let dir = tempfile::tempdir().unwrap();
    let c = TestCoordinator::start(CoordinatorConfig {
        max_message_bytes: 8 << 20,
        ..catalog_config(dir.path(), &big_catalog())
    })
    .await;
    let mut watch = c.watch().await;
    let mut cfg = c.worker_config("roomy", dir.path());
    cfg.runtime = RuntimeChoice::Process;
    cfg.max_message_bytes = 8 << 20;
    let (agent, _stop) = start_agent(cfg).await;

    // The worker reports the placed service: it decoded the assignment.
    // Its command may well fail with such an environment; any report will do.
    // One bound on the whole wait: a worker that keeps reconnecting keeps
    // the event stream busy, so no single event wait would time out.
    within(watch.until(|e| {
        e.worker.as_ref().is_some_and(|w| {
            w.name == "roomy"
                && w.services.iter().any(|s| {
                    s.name == "big-env"
                        && [ServiceState::Loading, ServiceState::Ready, ServiceState::Failed]
                            .iter()
                            .any(|st| s.state == *st as i32)
                })
        })
    }))
    .await;
    let status = agent.status().borrow().clone();
    assert!(status.connected, "{status:?}");
    assert_eq!(status.sessions, 1, "the stream broke and was reopened: {status:?}");
}
