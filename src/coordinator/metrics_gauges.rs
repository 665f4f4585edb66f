//! The coordinator's scrape-time gauges: workers by state, each service's
//! replicas by state and its gap, and whether this coordinator leads
//! placement. Read from the registry, the route table and the catalog at
//! each scrape (one snapshot of the fleet: fine at scrape intervals).

use crate::catalog::Catalog;
use crate::metrics::labels::MAX_SERVICES;
use crate::metrics::Gauges;
use crate::registry::{Registry, WorkerState};
use std::collections::BTreeMap;
use std::sync::Arc;

const STATES: [WorkerState; 4] = [
    WorkerState::Healthy,
    WorkerState::Degraded,
    WorkerState::Disconnected,
    WorkerState::Draining,
];

/// `per_worker`: also a series per worker (`--metrics-per-worker`).
pub fn gauges(
    registry: Arc<Registry>,
    catalog: Arc<Catalog>,
    security: Arc<super::security::Security>,
    per_worker: bool,
) -> Gauges {
    let mut g = Gauges::default();
    if per_worker {
        let reg = registry.clone();
        g.add(
            "worker_info",
            "1 per worker known now, with its name and state",
            move || {
                reg.snapshot(None)
                    .into_iter()
                    .map(|w| {
                        let labels = vec![
                            ("worker_id", w.worker_id),
                            ("name", w.name),
                            ("state", w.status.as_str().to_string()),
                        ];
                        (labels, 1)
                    })
                    .collect()
            },
        );
        let reg = registry.clone();
        g.add(
            "worker_last_heard_seconds",
            "Seconds since each worker's last message",
            move || {
                reg.snapshot(None)
                    .into_iter()
                    .map(|w| (vec![("worker_id", w.worker_id)], w.silent_for.as_secs() as i64))
                    .collect()
            },
        );
    }
    let reg = registry.clone();
    g.add("workers", "Workers known now, by state", move || {
        let counts = reg.counts();
        STATES
            .iter()
            .map(|s| {
                let n = counts.get(s).copied().unwrap_or(0) as i64;
                (vec![("state", s.as_str().to_string())], n)
            })
            .collect()
    });
    let (reg, cat) = (registry.clone(), catalog.clone());
    g.add(
        "service_replicas",
        "Replicas of each service, by readiness state (at most 512 services)",
        move || {
            let table = reg.routes().borrow().clone();
            let infos = super::catalog_views::services(&cat, &table, &reg.snapshot(None));
            let mut out = Vec::new();
            for info in infos.into_iter().take(MAX_SERVICES) {
                let mut by_state: BTreeMap<&'static str, i64> = BTreeMap::new();
                for p in &info.providers {
                    *by_state.entry(p.state).or_default() += 1;
                }
                for (state, n) in by_state {
                    out.push((vec![("service", info.name.clone()), ("state", state.to_string())], n));
                }
            }
            out
        },
    );
    let (reg, cat) = (registry, catalog);
    g.add(
        "service_gap",
        "Each service's gap: 0 ok (two or more ready), 1 warning (one), 2 critical (none)",
        move || {
            let table = reg.routes().borrow().clone();
            super::catalog_views::gaps(&cat, &table, &reg.snapshot(None))
                .into_iter()
                .take(MAX_SERVICES)
                .map(|gap| {
                    let level = match gap.status {
                        "critical" => 2,
                        "warning" => 1,
                        _ => 0,
                    };
                    (vec![("service", gap.service)], level)
                })
                .collect()
        },
    );
    g.add(
        "is_leader",
        "1 while this coordinator is its cluster's placement leader (alone, always 1)",
        move || {
            let leading = match security.cluster.get() {
                Some(m) => m.role().borrow().is_leader(),
                None => true,
            };
            vec![(Vec::new(), i64::from(leading))]
        },
    );
    g
}
