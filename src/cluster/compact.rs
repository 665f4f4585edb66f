//! Old revisions compacted, so that etcd does not grow without bound: the
//! placement leader, every interval, compacts up to the revision it saw
//! one interval before. A watch that reconnects within an interval still
//! finds its history; one that does not lists again (it would anyway).

use super::member::Member;
use etcd_client::GetOptions;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

pub async fn run(member: Arc<Member>, every: Duration, shutdown: CancellationToken) {
    let mut previous: Option<i64> = None;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !member.role().borrow().is_leader() {
            previous = None;
            continue;
        }
        let mut client = member.client();
        let now = match client
            .get(
                member.keys().root(),
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await
        {
            Ok(r) => r.header().map_or(0, |h| h.revision()),
            Err(e) => {
                warn!(error = %e, "cannot read etcd's revision; compaction waits");
                continue;
            }
        };
        if let Some(rev) = previous.filter(|r| *r > 0) {
            match client.compact(rev, None).await {
                Ok(_) => debug!(revision = rev, "etcd compacted"),
                // Already compacted past it (another leader, or an operator).
                Err(e) => debug!(revision = rev, error = %e, "compaction skipped"),
            }
        }
        previous = Some(now);
    }
}
