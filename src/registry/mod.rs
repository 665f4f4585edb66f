//! The registry: every worker record, its health clock, and the events
//! that every view of the fleet is built from.
//!
//! This is the one boundary through which worker state changes. Stream
//! handlers call [`Registry::register`], [`Registry::service_status`] and
//! [`Registry::disconnect`]; the health clock calls [`Registry::sweep`];
//! readers take [`Registry::snapshot`] or [`Registry::subscribe`].
//!
//! Inside, three layers, each in its own files:
//! - the state machine ([`State`], `machine.rs` and the files named for
//!   each concept: `lifecycle.rs`, `placement.rs`, `tunnels.rs`,
//!   `queries.rs`, with the record in `record.rs` and the routing index in
//!   `routing.rs`): plain data and methods that take the time and return
//!   the [`Changes`] they made, tested without sockets or sleeps;
//! - the store boundary (`fleet.rs`, [`FleetStore`]): fleet state every
//!   coordinator must see, changed only through [`FleetStore::apply`], with
//!   what is local to this coordinator's streams kept apart (`local.rs`);
//! - [`Registry`] (this file): a mutex around the state, the clock, and the
//!   carrying out of changes (logs, notices to sessions, the event
//!   broadcast, route-table publication). It decides nothing.

mod changes;
pub mod clock;
mod fleet;
mod identity;
mod lifecycle;
pub mod limits;
mod local;
mod machine;
mod placement;
mod queries;
mod record;
mod remote;
mod routing;
mod session;
mod state;
mod tunnels;
mod view;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_remote;

pub use changes::{ChangeKind, Changes, Log, RegistryEvent};
pub use clock::Clock;
pub use fleet::{FleetChange, FleetStore, Held, MemoryFleet};
pub use identity::{is_worker_id, new_worker_id};
pub use lifecycle::{RegisterError, Registered};
pub use machine::{RegistryConfig, State};
pub use queries::LookupError;
pub use record::{FleetRecord, ServiceEntry, Target};
pub use remote::RemoteHold;
pub use session::{Notice, SessionLink};
pub use state::{service_state_str, WorkerState};
pub use view::{ServiceView, WorkerView};

use crate::proto::{self, Hello, ServiceStatus};
use crate::routes::{RouteTable, TunnelSender};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use tracing::{debug, info, warn};

pub struct Registry {
    config: RegistryConfig,
    clock: Clock,
    state: Mutex<State>,
    events: broadcast::Sender<RegistryEvent>,
    routes: watch::Sender<Arc<RouteTable>>,
    /// Where state transitions are counted, once the coordinator sets it.
    metrics: std::sync::OnceLock<Arc<crate::metrics::FleetMetrics>>,
}

/// Buffered events per subscriber; a slower one is told it lagged and resyncs.
const EVENT_BUFFER: usize = 8192;

impl Registry {
    /// A registry over the in-memory fleet store.
    pub fn new(config: RegistryConfig) -> Self {
        Self::with_store(config, Box::new(MemoryFleet::default()))
    }

    /// A registry whose fleet state lives in `store`.
    pub fn with_store(config: RegistryConfig, store: Box<dyn FleetStore>) -> Self {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let (routes, _) = watch::channel(Arc::new(RouteTable::default()));
        let clock = Clock::new();
        Registry {
            state: Mutex::new(State::with_store(config.clone(), clock.wall_at(0), store)),
            config,
            clock,
            events,
            routes,
            metrics: std::sync::OnceLock::new(),
        }
    }

    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Route table snapshots: the current one, then each change.
    pub fn routes(&self) -> watch::Receiver<Arc<RouteTable>> {
        self.routes.subscribe()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would be a bug; keep serving the
        // fleet with the state as it stands rather than poisoning every call.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Carries out what a transition did. Notices, route tables and events
    /// go out with the lock still held, so that they keep the order of the
    /// transitions (and [`Registry::subscribe`] misses none). The log lines
    /// are written after it is released: they carry their own time, and a
    /// write to stderr per Hello under the lock made every Welcome and
    /// every keepalive ack wait behind it (BENCHMARKS.md, the fleet at
    /// 10,000 against `f787214`).
    fn carry_out(&self, held: MutexGuard<'_, State>, changes: Changes) {
        let Changes {
            logs,
            notices,
            routes,
            events,
        } = changes;
        for (link, notice) in notices {
            link.notify(notice);
        }
        if let Some(table) = routes {
            self.routes.send_replace(table);
        }
        for event in events {
            // No subscribers is fine: nobody is watching.
            let _ = self.events.send(event);
        }
        drop(held);
        if let Some(m) = self.metrics.get() {
            for l in &logs {
                if let Log::Status { from, to, .. } = l {
                    m.transition(from.as_str(), to.as_str());
                }
            }
        }
        logs.into_iter().for_each(log);
    }

    /// Where this registry counts (set by the coordinator), for the parts
    /// around it that count fleet events too.
    pub fn metrics(&self) -> Option<&Arc<crate::metrics::FleetMetrics>> {
        self.metrics.get()
    }

    /// Counts state transitions into `metrics` from now on.
    pub fn count_into(&self, metrics: Arc<crate::metrics::FleetMetrics>) {
        let _ = self.metrics.set(metrics);
    }

    /// Binds a new stream to a worker record (see [`State::register`]).
    pub fn register(
        &self,
        hello: &Hello,
        link: Arc<SessionLink>,
        adopt: &BTreeMap<String, String>,
        certified: Option<&str>,
    ) -> Result<Registered, RegisterError> {
        let now = self.clock.now_ms();
        let mut st = self.lock();
        let (result, changes) = st.register(now, hello, link, adopt, certified);
        self.carry_out(st, changes);
        result
    }

    /// A readiness report from the worker's session `generation`.
    /// A worker's report on one service; `managed`: the service is the
    /// catalog's (see [`State::service_status`]).
    pub fn service_status(&self, worker_id: &str, generation: u64, status: ServiceStatus, managed: bool) {
        let now = self.clock.now_ms();
        let mut st = self.lock();
        let changes = st.service_status(now, worker_id, generation, status, managed);
        self.carry_out(st, changes);
    }

    /// The session's stream ended: the worker is unroutable from now on.
    pub fn disconnect(&self, worker_id: &str, generation: u64, reason: &str) {
        let now = self.clock.now_ms();
        let mut st = self.lock();
        let changes = st.disconnect(now, worker_id, generation, reason);
        self.carry_out(st, changes);
    }

    /// A message arrived from a worker the clock had marked degraded.
    pub fn refresh(&self, worker_id: &str) {
        let now = self.clock.now_ms();
        let mut st = self.lock();
        let changes = st.refresh(now, worker_id);
        self.carry_out(st, changes);
    }

    /// Marks a worker draining and tells it so.
    pub fn drain(&self, worker: &str, reason: &str) -> Result<WorkerView, LookupError> {
        let now = self.clock.now_ms();
        let mut st = self.lock();
        let (view, changes) = st.drain(now, worker, reason)?;
        self.carry_out(st, changes);
        Ok(view)
    }

    /// Removes a worker's record and closes its live session at once
    /// (revocation); `(worker id, whether a session was open)`.
    pub fn revoke(&self, worker: &str, reason: &str) -> Result<(String, bool), LookupError> {
        let now = self.clock.now_ms();
        let mut st = self.lock();
        let (id, live, changes) = st.revoke(now, worker, reason)?;
        self.carry_out(st, changes);
        Ok((id, live))
    }

    /// Whether a joining worker may have `worker_id` back: no record has
    /// it, or the record is this instance's and no session holds it.
    pub fn rejoinable(&self, worker_id: &str, instance_id: &str) -> bool {
        let st = self.lock();
        match st.fleet().get(worker_id) {
            None => true,
            Some(rec) => rec.instance_id == instance_id && !instance_id.is_empty() && !st.session_live(worker_id),
        }
    }

    /// Names this coordinator in the views (`coordinator`), in a cluster.
    pub fn set_coordinator_id(&self, id: String) {
        self.lock().set_coordinator_id(id);
    }

    /// Records no coordinator has held for longer than `older_than`.
    pub fn orphans(&self, older_than: Duration) -> Vec<String> {
        let now = self.clock.now_ms();
        self.lock().orphans(now, older_than.as_millis() as u64)
    }

    /// Whether this coordinator holds the worker's session.
    pub fn holds(&self, worker_id: &str) -> bool {
        self.lock().holds(worker_id)
    }

    /// The cluster's coordinators and their peer addresses (`id -> URL`).
    pub fn set_peers(&self, peers: &BTreeMap<String, String>) {
        let mut st = self.lock();
        let changes = st.set_peers(peers);
        self.carry_out(st, changes);
    }

    /// Another coordinator wrote `rec` (from the shared store's watch).
    pub fn learn_record(&self, rec: FleetRecord) {
        let now = self.clock.now_ms();
        let mut st = self.lock();
        let changes = st.learn_record(now, rec);
        self.carry_out(st, changes);
    }

    /// Another coordinator removed a record.
    pub fn learn_removed(&self, worker_id: &str) {
        let now = self.clock.now_ms();
        let mut st = self.lock();
        let changes = st.learn_removed(now, worker_id);
        self.carry_out(st, changes);
    }

    /// A session key changed: another coordinator holds the worker (or none does).
    pub fn learn_session(&self, worker_id: &str, hold: Option<RemoteHold>) {
        let now = self.clock.now_ms();
        let mut st = self.lock();
        let changes = st.learn_session(now, worker_id, hold);
        self.carry_out(st, changes);
    }

    /// Runs the health clock once: healthy <-> degraded, and removal of
    /// records silent for the worker timeout.
    pub fn sweep(&self) {
        let now = self.clock.now_ms();
        let mut st = self.lock();
        let changes = st.sweep(now);
        self.carry_out(st, changes);
    }

    /// Every worker (optionally only those in one state), sorted by name then id.
    pub fn snapshot(&self, filter: Option<WorkerState>) -> Vec<WorkerView> {
        let now = self.clock.now_ms();
        self.lock().snapshot(now, filter)
    }

    /// One worker by id, or by name when the name is unique.
    pub fn get(&self, worker: &str) -> Result<WorkerView, LookupError> {
        let now = self.clock.now_ms();
        self.lock().get(now, worker)
    }

    /// The current set and a receiver for every later change, taken
    /// atomically so that no change falls between the two.
    pub fn subscribe(&self) -> (Vec<WorkerView>, broadcast::Receiver<RegistryEvent>) {
        let now = self.clock.now_ms();
        let st = self.lock();
        let rx = self.events.subscribe();
        (st.snapshot(now, None), rx)
    }

    /// Worker counts by state.
    pub fn counts(&self) -> BTreeMap<WorkerState, usize> {
        self.lock().counts()
    }

    /// Every worker as placement sees it. `grace`: how long a disconnected
    /// worker keeps its placements before they go elsewhere.
    pub fn candidates(&self, grace: Duration) -> Vec<crate::placement::Candidate> {
        let now = self.clock.now_ms();
        self.lock().candidates(now, grace.as_millis() as u64)
    }

    /// Sets the services placed on a worker and sends it its new assignment
    /// (see [`State::assign`]).
    pub fn assign(
        &self,
        worker_id: &str,
        placed: BTreeSet<String>,
        urls: &BTreeMap<String, String>,
        build: impl FnOnce(u64, &BTreeSet<String>, &[(String, String)]) -> proto::Assignment,
    ) {
        let now = self.clock.now_ms();
        let mut st = self.lock();
        let changes = st.assign(now, worker_id, placed, urls, build);
        self.carry_out(st, changes);
    }

    /// The session generation whose resume token this is, if the worker is
    /// connected: a tunnel is admitted only for a live session, by its secret.
    pub fn verify_tunnel(&self, worker_id: &str, token: &str) -> Option<u64> {
        self.lock().verify_tunnel(worker_id, token)
    }

    /// The worker's tunnel is up: its services are routed through it.
    /// False when its session has ended.
    pub fn attach_tunnel(&self, worker_id: &str, generation: u64, sender: TunnelSender) -> bool {
        let now = self.clock.now_ms();
        let mut st = self.lock();
        match st.attach_tunnel(now, worker_id, generation, sender) {
            Some(changes) => {
                self.carry_out(st, changes);
                true
            }
            None => false,
        }
    }

    /// The tunnel of session `generation` closed.
    pub fn detach_tunnel(&self, worker_id: &str, generation: u64) {
        let now = self.clock.now_ms();
        let mut st = self.lock();
        let changes = st.detach_tunnel(now, worker_id, generation);
        self.carry_out(st, changes);
    }

    /// A worker's advertise address, for building placed services' URLs.
    pub fn advertise_address(&self, worker_id: &str) -> Option<String> {
        self.lock().advertise_address(worker_id)
    }

    /// Ends every open session with a goodbye (coordinator shutdown).
    pub fn close_all(&self, reason: &str) {
        let st = self.lock();
        let changes = st.close_all(reason);
        self.carry_out(st, changes);
    }
}

/// Writes one of the state machine's log lines.
fn log(line: Log) {
    match line {
        Log::UnknownToken { worker } => {
            info!(%worker, "resume token not recognised (coordinator restarted, or the token is stale); matching by instance id")
        }
        Log::SecondLiveSession { worker, worker_id } => {
            warn!(%worker, %worker_id, "refused a second live session for one instance id")
        }
        Log::Full { worker, max } => warn!(%worker, max, "refused a worker: registry full"),
        Log::SameName { worker, worker_id } => {
            warn!(%worker, %worker_id, "another live worker has the same name; they get distinct ids")
        }
        Log::Registered {
            worker,
            worker_id,
            reused_previous_id,
        } => info!(%worker, %worker_id, reused_previous_id, "worker registered"),
        Log::TooManyServices { worker, service } => warn!(%worker, %service, "ignored status: too many services"),
        Log::UnplacedService { worker, service } => {
            debug!(%worker, %service, "ignored status: a service neither declared by nor placed on this worker")
        }
        Log::ServiceState {
            worker,
            worker_id,
            service,
            state,
        } => info!(%worker, %worker_id, %service, state = service_state_str(state), "service state"),
        Log::Status {
            worker,
            worker_id,
            from,
            to,
            reason,
        } => match to {
            WorkerState::Healthy | WorkerState::Draining => {
                info!(%worker, %worker_id, %from, %to, %reason, "worker status")
            }
            _ => warn!(%worker, %worker_id, %from, %to, %reason, "worker status"),
        },
        Log::Removed {
            worker,
            worker_id,
            reason,
        } => warn!(%worker, %worker_id, %reason, "worker removed"),
        Log::Placement {
            worker,
            worker_id,
            added,
            removed,
        } => info!(%worker, %worker_id, ?added, ?removed, "placement changed"),
        Log::Tunnel {
            worker,
            worker_id,
            open: true,
        } => info!(%worker, %worker_id, "tunnel open"),
        Log::Tunnel { worker, worker_id, .. } => info!(%worker, %worker_id, "tunnel closed"),
    }
}
