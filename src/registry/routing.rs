//! The routing index (service -> worker -> replica) and the route table
//! built from it.
//!
//! Every transition that touches a worker brings its replicas up to date
//! here; the services it touched are rebuilt once, when the transition is
//! done, into a new immutable [`RouteTable`] that the registry publishes.
//! The proxy only ever reads those snapshots.

use super::local::Local;
use super::record::FleetRecord;
use super::state::WorkerState;
use crate::proto::ServiceState;
use crate::routes::{Endpoint, EndpointLoad, RouteTable, ServiceRoutes, Via};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// One replica in the routing index.
struct RouteEntry {
    /// Where to send; `None` when the service has no address the proxy can use.
    endpoint: Option<Arc<Endpoint>>,
    state: ServiceState,
    /// The worker is healthy (not degraded, draining or disconnected).
    worker_ok: bool,
}

#[derive(Default)]
pub struct RoutingIndex {
    /// service -> worker id -> replica.
    routes: BTreeMap<String, BTreeMap<String, RouteEntry>>,
    /// The services each worker has entries for, so an update knows what to drop.
    routed: HashMap<String, Vec<String>>,
    /// Services changed since the last [`RoutingIndex::publish`].
    touched: BTreeSet<String>,
    /// The last table built.
    table: Arc<RouteTable>,
}

impl RoutingIndex {
    /// Brings the worker's replicas up to date with its record and session.
    /// Each replica's load figures survive the update.
    /// `peer`: the peer address of the coordinator holding the worker, when
    /// another one does (a tunnel replica is reached through it).
    pub fn update(&mut self, rec: &FleetRecord, local: &Local, peer: Option<&http::Uri>) {
        let id = rec.worker_id.as_str();
        let worker_ok = local.status == WorkerState::Healthy;
        let old = self
            .routed
            .insert(id.to_string(), rec.services.keys().cloned().collect())
            .unwrap_or_default();
        let mut loads: HashMap<String, Arc<EndpointLoad>> = HashMap::new();
        for svc in old {
            if let Some(entry) = self.routes.get_mut(&svc).and_then(|m| m.remove(id)) {
                if let Some(ep) = entry.endpoint {
                    loads.insert(svc.clone(), ep.load.clone());
                }
            }
            self.touched.insert(svc);
        }
        for (svc, s) in &rec.services {
            let target = if rec.tunnel_wanted {
                match (&local.tunnel, peer) {
                    // Through the tunnel the worker knows the service's URL;
                    // the origin here only names the service.
                    (Some((_, t)), _) => Some((tunnel_origin(), String::new(), Via::Tunnel(t.clone()))),
                    // Its tunnel ends at another coordinator: through that one,
                    // which serves the same `/service/{name}` path.
                    (None, Some(origin)) if local.link.is_none() => Some((
                        origin.clone(),
                        format!("{}/{svc}", crate::routes::SERVICE_PREFIX),
                        Via::Peer,
                    )),
                    _ => None,
                }
            } else {
                s.target.clone().map(|(o, p)| (o, p, Via::Direct))
            };
            let endpoint = target.map(|(origin, prefix, via)| {
                Arc::new(Endpoint {
                    worker_id: id.to_string(),
                    worker_name: rec.name.clone(),
                    origin,
                    prefix,
                    via,
                    load: loads.remove(svc).unwrap_or_default(),
                })
            });
            self.routes.entry(svc.clone()).or_default().insert(
                id.to_string(),
                RouteEntry {
                    endpoint,
                    state: s.state,
                    worker_ok,
                },
            );
            self.touched.insert(svc.clone());
        }
    }

    /// Drops a removed worker's replicas.
    pub fn remove(&mut self, worker_id: &str) {
        for svc in self.routed.remove(worker_id).unwrap_or_default() {
            if let Some(m) = self.routes.get_mut(&svc) {
                m.remove(worker_id);
            }
            self.touched.insert(svc);
        }
    }

    /// A new table with every service touched since the last call, or
    /// `None` when nothing was.
    pub fn publish(&mut self) -> Option<Arc<RouteTable>> {
        if self.touched.is_empty() {
            return None;
        }
        let mut table = (*self.table).clone();
        for svc in std::mem::take(&mut self.touched) {
            match self.routes.get(&svc).filter(|m| !m.is_empty()) {
                None => {
                    self.routes.remove(&svc);
                    table.services.remove(&svc);
                }
                Some(replicas) => {
                    table.services.insert(svc, Arc::new(build_routes(replicas)));
                }
            }
        }
        self.table = Arc::new(table);
        Some(self.table.clone())
    }
}

fn tunnel_origin() -> http::Uri {
    http::Uri::from_static("http://tunnel/")
}

fn build_routes(replicas: &BTreeMap<String, RouteEntry>) -> ServiceRoutes {
    let mut r = ServiceRoutes::default();
    for e in replicas.values() {
        match e.state {
            ServiceState::Stopped => continue,
            ServiceState::Ready => match (&e.endpoint, e.worker_ok) {
                (Some(ep), true) => r.ready.push(ep.clone()),
                (_, false) => r.unhealthy += 1,
                // Ready but nowhere to send to (yet): not a failed check.
                (None, true) => r.unreachable += 1,
            },
            ServiceState::Failed => r.failed += 1,
            ServiceState::Loading | ServiceState::Unspecified => r.loading += 1,
        }
        r.total += 1;
    }
    r
}
