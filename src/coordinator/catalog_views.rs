//! `/api/admin/services` and `/api/admin/gaps`: each service with its
//! providers and their states, and which services are short of ready ones.

use crate::catalog::Catalog;
use crate::registry::{service_state_str, WorkerView};
use crate::routes::RouteTable;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Serialize)]
pub struct Provider {
    pub worker_id: String,
    pub worker: String,
    pub worker_status: &'static str,
    pub state: &'static str,
    pub message: String,
    /// Receives traffic now.
    pub routable: bool,
}

#[derive(Debug, Serialize)]
pub struct ServiceInfo {
    pub name: String,
    pub aliases: Vec<String>,
    /// `gpu`, `cpu`, `storage`, `edge`; empty for services only workers declare.
    pub requires: String,
    pub priority: Option<u32>,
    pub port: Option<u16>,
    pub in_catalog: bool,
    pub ready: usize,
    pub providers: Vec<Provider>,
}

#[derive(Debug, Serialize)]
pub struct Gap {
    pub service: String,
    /// `critical` (no ready provider), `warning` (one), `ok`.
    pub status: &'static str,
    pub ready: usize,
    pub providers: usize,
    /// Why nothing is ready, when nothing is.
    pub reason: Option<&'static str>,
    pub priority: Option<u32>,
}

pub fn services(catalog: &Catalog, table: &RouteTable, workers: &[WorkerView]) -> Vec<ServiceInfo> {
    let mut out: BTreeMap<String, ServiceInfo> = BTreeMap::new();
    for e in catalog.entries() {
        out.insert(
            e.name.clone(),
            ServiceInfo {
                name: e.name.clone(),
                aliases: e.aliases.clone(),
                requires: e.requires.as_str().into(),
                priority: Some(e.priority),
                port: Some(e.port),
                in_catalog: true,
                ready: 0,
                providers: Vec::new(),
            },
        );
    }
    for w in workers {
        for s in &w.services {
            let info = out.entry(s.name.clone()).or_insert_with(|| ServiceInfo {
                name: s.name.clone(),
                aliases: Vec::new(),
                requires: String::new(),
                priority: None,
                port: None,
                in_catalog: false,
                ready: 0,
                providers: Vec::new(),
            });
            let routable = table
                .get(&s.name)
                .is_some_and(|r| r.ready.iter().any(|e| e.worker_id == w.worker_id));
            info.providers.push(Provider {
                worker_id: w.worker_id.clone(),
                worker: w.name.clone(),
                worker_status: w.status.as_str(),
                state: service_state_str(s.state),
                message: s.message.clone(),
                routable,
            });
        }
    }
    for info in out.values_mut() {
        info.ready = table.get(&info.name).map_or(0, |r| r.ready.len());
    }
    out.into_values().collect()
}

/// `critical` with no ready replica, `warning` with one, `ok` with more.
pub fn gap_status(ready: usize) -> &'static str {
    match ready {
        0 => "critical",
        1 => "warning",
        _ => "ok",
    }
}

pub fn gaps(catalog: &Catalog, table: &RouteTable, workers: &[WorkerView]) -> Vec<Gap> {
    let mut gaps: Vec<Gap> = services(catalog, table, workers)
        .into_iter()
        .map(|s| Gap {
            status: gap_status(s.ready),
            reason: (s.ready == 0).then(|| {
                table
                    .get(&s.name)
                    .and_then(|r| r.unavailable())
                    .map_or("none_placed", |u| u.code())
            }),
            ready: s.ready,
            providers: s.providers.len(),
            priority: s.priority,
            service: s.name,
        })
        .collect();
    // Most urgent first: critical before warning before ok, then by priority.
    let rank = |g: &Gap| match g.status {
        "critical" => 0,
        "warning" => 1,
        _ => 2,
    };
    gaps.sort_by_key(|g| (rank(g), g.priority.unwrap_or(u32::MAX), g.service.clone()));
    gaps
}
