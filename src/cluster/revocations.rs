//! Revocations shared by the cluster: `edgeplane revoke` on any coordinator
//! writes `revoked/{worker_id}`, and every coordinator's [`super::Watcher`]
//! learns it, so the worker's certificate is refused wherever it dials and
//! its live session is cut by whichever coordinator holds it.

use super::member::Member;
use std::time::Duration;

/// How long the write may take before the operator is told it failed.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("etcd did not answer within {}", crate::duration::format_short(WRITE_TIMEOUT))]
    Timeout,
}

/// Records that `worker_id` was revoked at `at_unix`, for every coordinator.
pub async fn publish(member: &Member, worker_id: &str, at_unix: i64) -> Result<(), PublishError> {
    let key = member.keys().revoked(worker_id);
    let mut client = member.client();
    tokio::time::timeout(WRITE_TIMEOUT, client.put(key, at_unix.to_string(), None))
        .await
        .map_err(|_| PublishError::Timeout)??;
    Ok(())
}
