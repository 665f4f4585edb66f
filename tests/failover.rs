//! A worker given several coordinators: it dials the next one when it
//! cannot reach one, or loses it.

mod common;

use common::*;
use edgeplane::proto::WorkerStatus;

#[tokio::test]
async fn a_worker_skips_a_coordinator_it_cannot_reach_and_moves_on_when_it_loses_one() {
    let a = TestCoordinator::start(fast_config()).await;
    let b = TestCoordinator::start(fast_config()).await;
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = a.worker_config("mover", dir.path());
    cfg.coordinator = format!("{nobody}, {}, {}", a.url, b.url);
    let mut watch_a = a.watch().await;
    let mut watch_b = b.watch().await;
    let (agent, _stop) = start_agent(cfg).await;

    watch_a.until_fleet(1, WorkerStatus::Healthy).await;
    let s = within(agent.wait_for(|s| s.connected && s.coordinator.as_deref() == Some(a.url.as_str()))).await;
    // The first in the list could not be reached: A took the first session.
    assert_eq!(s.sessions, 1);

    // A goes away (Goodbye to its workers): the worker is taken in by B.
    a.stop().await;
    watch_b.until_fleet(1, WorkerStatus::Healthy).await;
    within(agent.wait_for(|s| s.connected && s.coordinator.as_deref() == Some(b.url.as_str()))).await;
    assert_eq!(b.registry.snapshot(None).len(), 1);
}
