//! Per-service gRPC health: a catalog service (and each gRPC service name
//! it serves) is SERVING exactly while it has at least one ready endpoint.
//! Follows route-table snapshots, so `Watch` on `notes-coa` flips as
//! readiness changes.

use crate::catalog::Catalog;
use crate::routes::RouteTable;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

pub async fn run(
    mut routes: watch::Receiver<Arc<RouteTable>>,
    catalog: Arc<Catalog>,
    health: HealthReporter,
    closing: CancellationToken,
) {
    let mut last: BTreeMap<String, bool> = BTreeMap::new();
    loop {
        let table = routes.borrow_and_update().clone();
        let mut now: BTreeMap<String, bool> = BTreeMap::new();
        for entry in catalog.entries() {
            let serving = table.is_serving(&entry.name);
            now.insert(entry.name.clone(), serving);
            for g in &entry.grpc_services {
                now.insert(g.clone(), serving);
            }
        }
        // Services that workers declare without a catalog entry.
        for (name, r) in &table.services {
            now.entry(name.clone()).or_insert(!r.ready.is_empty());
        }
        for (name, serving) in &now {
            if last.get(name) != Some(serving) {
                let st = if *serving {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                };
                health.set_service_status(name, st).await;
            }
        }
        for gone in last.keys().filter(|k| !now.contains_key(*k)) {
            health.set_service_status(gone, ServingStatus::NotServing).await;
        }
        last = now;
        tokio::select! {
            r = routes.changed() => if r.is_err() { return },
            _ = closing.cancelled() => {
                for name in last.keys() {
                    health.set_service_status(name, ServingStatus::NotServing).await;
                }
                return;
            }
        }
    }
}
