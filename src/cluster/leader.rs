//! The placement leader: exactly one coordinator of the cluster places
//! services, elected with etcd's election API on its member lease (so the
//! leadership dies with the coordinator, within one lease TTL).
//!
//! A coordinator campaigns until elected, holds the leadership while its
//! election key exists, and campaigns again when it vanishes (its lease
//! expired while etcd was out of reach, or was replaced). A graceful stop
//! resigns at once.

use super::member::Member;
use super::role::Role;
use etcd_client::{EventType, LeaderKey, ResignOptions, WatchOptions};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Campaigns for leadership until `shutdown`; [`Member::role`] says where
/// it stands.
pub async fn run(member: Arc<Member>, shutdown: CancellationToken) {
    let name = member.keys().election();
    let role = member.role_sender();
    loop {
        let leader = tokio::select! {
            () = shutdown.cancelled() => return,
            r = campaign(&member, &name) => r,
        };
        match leader {
            Ok(key) => {
                info!(coordinator = %member.id(), "elected placement leader");
                role.send_replace(Role::Leader {
                    since: tokio::time::Instant::now(),
                });
                member.metrics().leader_change();
                let lost = tokio::select! {
                    () = shutdown.cancelled() => None,
                    r = held(&member, &key) => Some(r),
                };
                role.send_replace(Role::Follower);
                member.metrics().leader_change();
                match lost {
                    None => {
                        let mut client = member.client();
                        let _ = tokio::time::timeout(
                            Duration::from_secs(2),
                            client.resign(Some(ResignOptions::new().with_leader(key))),
                        )
                        .await;
                        return;
                    }
                    Some(why) => warn!(coordinator = %member.id(), reason = %why, "no longer the placement leader"),
                }
            }
            Err(e) => warn!(coordinator = %member.id(), error = %e, "campaign for placement leader failed; retrying"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// Blocks until elected, on the member's current lease.
async fn campaign(member: &Member, name: &str) -> Result<LeaderKey, etcd_client::Error> {
    let mut client = member.patient_client();
    let r = client.campaign(name, member.id(), member.lease()).await?;
    r.leader()
        .cloned()
        .ok_or_else(|| etcd_client::Error::ElectError("campaign answered without a leader key".into()))
}

/// Returns (with why) once this coordinator's election key is gone.
async fn held(member: &Member, key: &LeaderKey) -> String {
    let mut client = member.client();
    let k = key.key().to_vec();
    let mut stream = match client.watch(k.clone(), Some(WatchOptions::new())).await {
        Ok(s) => s,
        Err(e) => return format!("cannot watch the election key: {e}"),
    };
    // It may have gone before the watch started.
    match client.get(k, None).await {
        Ok(r) if r.kvs().is_empty() => return "the election key is gone".into(),
        Ok(_) => {}
        Err(e) => return format!("cannot read the election key: {e}"),
    }
    loop {
        match stream.message().await {
            Ok(Some(resp)) => {
                if resp.canceled() || resp.events().iter().any(|e| e.event_type() == EventType::Delete) {
                    return "the election key is gone (lease expired or replaced)".into();
                }
            }
            Ok(None) => return "the watch on the election key ended".into(),
            Err(e) => return format!("the watch on the election key failed: {e}"),
        }
    }
}
