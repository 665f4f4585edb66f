//! Runs placement whenever the fleet changes (batched, so a thousand
//! workers arriving together cost a few plans, not a thousand), and once a
//! second so that a disconnected worker's grace can run out.

use super::assignment;
use crate::catalog::Catalog;
use crate::registry::Registry;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

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

/// Plans once and sends every worker whose placement changed its new assignment.
pub fn place_once(registry: &Registry, catalog: &Catalog, grace: Duration) {
    let candidates = registry.candidates(grace);
    let plan = crate::placement::plan(catalog, &candidates);
    for c in &candidates {
        let Some(wanted) = plan.get(&c.worker_id) else { continue };
        if *wanted == c.placed {
            continue;
        }
        let advertise = registry.advertise_address(&c.worker_id).unwrap_or_default();
        let urls = assignment::placed_urls(catalog, wanted, &advertise);
        registry.assign(&c.worker_id, wanted.clone(), &urls, |version, placed, declared| {
            assignment::build(catalog, version, placed, declared)
        });
    }
}
