//! The registry's state machine: a plain value, no locks, no I/O, no
//! tokio. Every transition takes the time (`now_ms`, on the registry's
//! clock) and returns the [`Changes`] it made; [`super::Registry`] wraps it
//! in a mutex and carries those changes out. Tests drive it with plain
//! numbers for time.
//!
//! The transitions live by concept in sibling files: the session lifecycle
//! (`lifecycle.rs`), placement hand-off (`placement.rs`), tunnel admission
//! (`tunnels.rs`) and queries (`queries.rs`). This file holds the state and
//! the few steps they all share: re-deriving a status, and emitting a
//! change (which updates the routing index too).

use super::changes::{ChangeKind, Changes, Log, RegistryEvent};
use super::fleet::{FleetChange, FleetStore, Held, MemoryFleet};
use super::local::Local;
use super::record::FleetRecord;
use super::routing::RoutingIndex;
use super::state::WorkerState;
use super::view::WorkerView;
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

/// Timeouts and bounds the registry enforces.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Silent this long on an open stream: degraded (unroutable).
    pub heartbeat_timeout: Duration,
    /// Nothing heard for this long: the record is removed.
    pub worker_timeout: Duration,
    /// Records (connected or waiting to resume) the registry holds at most;
    /// in a cluster, those this coordinator holds or last held.
    pub max_workers: usize,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            heartbeat_timeout: Duration::from_secs(300),
            worker_timeout: Duration::from_secs(600),
            max_workers: 20_000,
        }
    }
}

/// Every worker: its fleet record (in the store) and, beside it, what this
/// coordinator alone knows of its session.
pub struct State {
    pub(super) config: RegistryConfig,
    /// Wall-clock time of the registry clock's zero, for views.
    wall: SystemTime,
    /// Fleet state: written only through [`FleetStore::apply`].
    pub(super) fleet: Box<dyn FleetStore>,
    /// Local state, one entry per fleet record (the two are created and
    /// removed together).
    pub(super) local: HashMap<String, Local>,
    /// The last session generation handed out.
    pub(super) next_generation: u64,
    pub(super) routing: RoutingIndex,
    /// This coordinator's id in its cluster; `None` alone.
    pub(super) me: Option<String>,
    /// The other coordinators' peer addresses (origin only), for routes to
    /// tunnel replicas they hold; empty without a cluster secret.
    pub(super) peers: HashMap<String, http::Uri>,
}

impl State {
    /// A state machine over the in-memory fleet store.
    pub fn new(config: RegistryConfig, wall: SystemTime) -> Self {
        Self::with_store(config, wall, Box::new(MemoryFleet::default()))
    }

    pub fn with_store(config: RegistryConfig, wall: SystemTime, fleet: Box<dyn FleetStore>) -> Self {
        State {
            config,
            wall,
            fleet,
            local: HashMap::new(),
            next_generation: 0,
            routing: RoutingIndex::default(),
            me: None,
            peers: HashMap::new(),
        }
    }

    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// Names this coordinator in views (the `coordinator` holding a worker).
    pub fn set_coordinator_id(&mut self, id: String) {
        self.me = Some(id);
    }

    /// The other coordinators' peer addresses (`id -> http://host:port`);
    /// routes to the tunnel replicas each holds are rebuilt.
    pub fn set_peers(&mut self, peers: &std::collections::BTreeMap<String, String>) -> Changes {
        self.peers = peers
            .iter()
            .filter(|(id, _)| self.me.as_deref() != Some(id.as_str()))
            .filter_map(|(id, url)| Some((id.clone(), crate::routes::Endpoint::parse_url(url)?.0)))
            .collect();
        let remote_tunnels: Vec<String> = self
            .fleet
            .records()
            .filter(|r| r.tunnel_wanted && self.local.get(&r.worker_id).is_some_and(|l| l.held_elsewhere()))
            .map(|r| r.worker_id.clone())
            .collect();
        for id in remote_tunnels {
            let (Some(rec), Some(local)) = (self.fleet.get(&id), self.local.get(&id)) else {
                continue;
            };
            let peer = local
                .elsewhere
                .as_ref()
                .and_then(|e| e.coordinator.as_ref())
                .and_then(|c| self.peers.get(c));
            self.routing.update(rec, local, peer);
        }
        self.done(Changes::default())
    }

    /// Fleet state, read-only.
    pub fn fleet(&self) -> &dyn FleetStore {
        &*self.fleet
    }

    pub(super) fn heartbeat_ms(&self) -> u64 {
        self.config.heartbeat_timeout.as_millis() as u64
    }

    pub(super) fn record(&self, id: &str) -> &FleetRecord {
        self.fleet.get(id).expect("a worker id the caller looked up")
    }

    /// Whether a session holds `id`, here or on another coordinator.
    pub(super) fn session_live(&self, id: &str) -> bool {
        let l = self.session(id);
        l.is_connected() || l.held_elsewhere()
    }

    pub(super) fn session(&self, id: &str) -> &Local {
        self.local.get(id).expect("every fleet record has its local entry")
    }

    pub(super) fn session_mut(&mut self, id: &str) -> &mut Local {
        self.local.get_mut(id).expect("every fleet record has its local entry")
    }

    /// Writes a record to the fleet store.
    pub(super) fn put(&mut self, rec: FleetRecord) {
        self.fleet.apply(FleetChange::Put(Box::new(rec)));
    }

    pub(super) fn view(&self, id: &str, now_ms: u64) -> WorkerView {
        WorkerView::of(self.record(id), self.session(id), self.me.as_deref(), now_ms, self.wall)
    }

    /// Re-derives the worker's status from its session and clock; logs a
    /// move. Returns whether the status moved.
    pub(super) fn rederive(&mut self, id: &str, now_ms: u64, reason: &str, out: &mut Changes) -> bool {
        let hb = self.heartbeat_ms();
        let Some(rec) = self.fleet.get(id) else { return false };
        let local = self.local.get_mut(id).expect("every fleet record has its local entry");
        let new = local.derive_status(rec.draining, now_ms, hb);
        if let Some(l) = &local.link {
            l.set_degraded(new == WorkerState::Degraded);
        }
        let old = std::mem::replace(&mut local.status, new);
        let held = local.link.is_some().then_some(rec.generation);
        if new != old {
            out.logs.push(Log::Status {
                worker: rec.name.clone(),
                worker_id: id.to_string(),
                from: old,
                to: new,
                reason: reason.to_string(),
            });
            // The rest of the fleet sees a held worker's status move.
            if let Some(generation) = held {
                self.fleet.hold(
                    id,
                    Some(Held {
                        generation,
                        status: new,
                    }),
                );
            }
        }
        new != old
    }

    /// The record changed in a way that cannot move its status: routes and
    /// one event.
    pub(super) fn emit(&mut self, id: &str, kind: ChangeKind, reason: &str, now_ms: u64, out: &mut Changes) {
        let (Some(rec), Some(local)) = (self.fleet.get(id), self.local.get(id)) else {
            return;
        };
        let peer = local
            .elsewhere
            .as_ref()
            .and_then(|e| e.coordinator.as_ref())
            .and_then(|c| self.peers.get(c));
        self.routing.update(rec, local, peer);
        out.events.push(RegistryEvent {
            kind,
            worker: WorkerView::of(rec, local, self.me.as_deref(), now_ms, self.wall),
            reason: reason.to_string(),
        });
    }

    /// The record or its session changed: status re-derived, routes, one event.
    pub(super) fn changed(&mut self, id: &str, reason: &str, now_ms: u64, out: &mut Changes) {
        self.rederive(id, now_ms, reason, out);
        self.emit(id, ChangeKind::Updated, reason, now_ms, out);
    }

    /// Only the clock moved: an event if, and only if, the status did.
    pub(super) fn recheck(&mut self, id: &str, reason: &str, now_ms: u64, out: &mut Changes) {
        if self.rederive(id, now_ms, reason, out) {
            self.emit(id, ChangeKind::Updated, reason, now_ms, out);
        }
    }

    /// Ends a transition: the route table, if any replica changed.
    pub(super) fn done(&mut self, mut out: Changes) -> Changes {
        out.routes = self.routing.publish();
        out
    }
}
