//! Runs placement whenever the fleet changes (batched, so a thousand
//! workers arriving together cost a few plans, not a thousand), and once a
//! second so that a disconnected worker's grace can run out.

use super::assignment;
use crate::catalog::Catalog;
use crate::registry::Registry;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Changes arriving within this window are planned together.
const BATCH: Duration = Duration::from_millis(50);

pub async fn run(registry: Arc<Registry>, catalog: Arc<Catalog>, grace: Duration, closing: CancellationToken) {
    let (_, mut events) = registry.subscribe();
    let mut tick = tokio::time::interval(Duration::from_secs(1).min(grace.max(Duration::from_millis(50))));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            ev = events.recv() => {
                if matches!(ev, Err(RecvError::Closed)) {
                    return;
                }
                tokio::time::sleep(BATCH).await;
                while events.try_recv().is_ok() {}
            }
            _ = tick.tick() => {}
            _ = closing.cancelled() => return,
        }
        place_once(&registry, &catalog, grace);
    }
}

/// One placement run, counted with its duration.
fn timed_plan(
    registry: &Registry,
    catalog: &Catalog,
    candidates: &[crate::placement::Candidate],
) -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let started = std::time::Instant::now();
    let plan = crate::placement::plan(catalog, candidates);
    if let Some(m) = registry.metrics() {
        m.placement_run(started.elapsed());
    }
    plan
}

/// Plans once and sends every worker whose placement changed its new assignment.
pub fn place_once(registry: &Registry, catalog: &Catalog, grace: Duration) {
    let candidates = registry.candidates(grace);
    let plan = timed_plan(registry, catalog, &candidates);
    for c in &candidates {
        let Some(wanted) = plan.get(&c.worker_id) else { continue };
        if *wanted == c.placed {
            continue;
        }
        apply(registry, catalog, &c.worker_id, wanted.clone());
    }
}

/// Puts `wanted` on a worker this coordinator holds: its record, and the
/// assignment sent down its stream.
pub fn apply(registry: &Registry, catalog: &Catalog, worker_id: &str, wanted: BTreeSet<String>) {
    let advertise = registry.advertise_address(worker_id).unwrap_or_default();
    let urls = assignment::placed_urls(catalog, &wanted, &advertise);
    registry.assign(worker_id, wanted, &urls, |version, placed, declared| {
        assignment::build(catalog, version, placed, declared)
    });
}

/// Placement in a cluster: only the elected leader plans, over the whole
/// fleet; each worker's new set goes to `placements/{id}` in etcd, once per
/// change, and the coordinator holding the worker applies it ([`apply`],
/// from its watch). For the failover grace after its election the leader
/// takes nothing away: the workers of a coordinator that died are probably
/// reconnecting to a survivor, with their services still running.
pub async fn run_clustered(
    registry: Arc<Registry>,
    catalog: Arc<Catalog>,
    grace: Duration,
    failover: Duration,
    member: Arc<crate::cluster::Member>,
    closing: CancellationToken,
) {
    let (_, mut events) = registry.subscribe();
    let mut role = member.role();
    let mut tick = tokio::time::interval(Duration::from_secs(1).min(grace.max(Duration::from_millis(50))));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // What this leader last wrote for each worker, so a plan that has not
    // been applied yet is not written again.
    let mut written: HashMap<String, BTreeSet<String>> = HashMap::new();
    loop {
        tokio::select! {
            ev = events.recv() => {
                if matches!(ev, Err(RecvError::Closed)) {
                    return;
                }
                tokio::time::sleep(BATCH).await;
                while events.try_recv().is_ok() {}
            }
            r = role.changed() => if r.is_err() { return },
            _ = tick.tick() => {}
            _ = closing.cancelled() => return,
        }
        let crate::cluster::Role::Leader { since } = *role.borrow() else {
            written.clear();
            continue;
        };
        let mut candidates = registry.candidates(grace);
        if since.elapsed() < failover {
            for c in &mut candidates {
                c.keep = true;
            }
        }
        let mut client = member.client();
        // Records whose coordinator died and whose worker never came back:
        // the worker timeout, counted from when their session key vanished.
        for id in registry.orphans(registry.config().worker_timeout) {
            let keys = member.keys();
            let txn = etcd_client::Txn::new().and_then([
                etcd_client::TxnOp::delete(keys.worker(&id), None),
                etcd_client::TxnOp::delete(keys.placement(&id), None),
            ]);
            if let Err(e) = client.txn(txn).await {
                warn!(worker_id = %id, error = %e, "could not remove an orphaned record; the next tick retries");
                break;
            }
            tracing::info!(worker_id = %id, "removed: no coordinator held it for the worker timeout");
        }
        let plan = timed_plan(&registry, &catalog, &candidates);
        for c in &candidates {
            let Some(wanted) = plan.get(&c.worker_id) else { continue };
            if *wanted == c.placed {
                written.remove(&c.worker_id);
                continue;
            }
            if written.get(&c.worker_id) == Some(wanted) {
                continue;
            }
            let key = member.keys().placement(&c.worker_id);
            let value = crate::cluster::record_codec::encode_placement(wanted, member.id());
            match client.put(key, value, None).await {
                Ok(_) => {
                    written.insert(c.worker_id.clone(), wanted.clone());
                }
                Err(e) => {
                    warn!(worker = %c.name, error = %e, "placement not written to etcd; the next plan retries");
                    break;
                }
            }
        }
    }
}
