//! The registry: every worker record, its health clock, and the events
//! that every view of the fleet is built from.
//!
//! This is the one boundary through which worker state changes. Stream
//! handlers call [`Registry::register`], [`Registry::service_status`] and
//! [`Registry::disconnect`]; the health clock calls [`Registry::sweep`];
//! readers take [`Registry::snapshot`] or [`Registry::subscribe`]. An
//! etcd-backed store can replace this in-memory one behind the same calls.

mod clock;
mod identity;
pub mod limits;
mod session;
mod state;
mod view;

pub use clock::Clock;
pub use session::{Notice, SessionLink};
pub use state::{service_state_str, WorkerState};
pub use view::{ServiceView, WorkerView};

use crate::proto::{self, Hello, ServiceState, ServiceStatus};
use crate::routes::{Endpoint, EndpointLoad, RouteTable, ServiceRoutes, TunnelSender, Via};
use identity::{new_resume_token, new_worker_id, token_digest};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use tracing::{info, warn};

/// Timeouts and bounds the registry enforces.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    pub heartbeat_timeout: Duration,
    pub worker_timeout: Duration,
    /// Records (connected or waiting to resume) the registry holds at most.
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Updated,
    Removed,
}

/// One change to one worker record.
#[derive(Debug, Clone)]
pub struct RegistryEvent {
    pub kind: ChangeKind,
    pub worker: WorkerView,
    pub reason: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegisterError {
    #[error("the coordinator holds its maximum of {0} workers")]
    Full(usize),
    #[error("instance id is in use by a connected session of worker `{0}`; resume with its token, or retry once that session has ended")]
    InstanceLive(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LookupError {
    #[error("no worker with id or name `{0}`")]
    NotFound(String),
    #[error("name `{0}` is shared by several workers; use a worker id")]
    Ambiguous(String),
}

/// What a successful Hello gets.
#[derive(Debug)]
pub struct Registered {
    pub worker_id: String,
    pub name: String,
    pub resume_token: String,
    pub resumed: bool,
    /// Identifies this session of the worker; stale sessions' calls are ignored.
    pub generation: u64,
    /// Services placed on this worker (kept across a resumption).
    pub placed: BTreeSet<String>,
    pub assignment_version: u64,
}

struct ServiceEntry {
    state: ServiceState,
    message: String,
    url: String,
    /// Parsed `url`: where the proxy sends this service's traffic.
    target: Option<Target>,
    /// The worker runs it by itself (not placed by the coordinator).
    declared: bool,
}

/// A service's origin and path prefix, parsed from its URL.
type Target = (http::Uri, String);

/// Origin, path prefix and path of one replica, as the route table wants it.
type Route = (http::Uri, String, Via);

/// One replica in the routing index.
struct RouteEntry {
    endpoint: Option<Arc<Endpoint>>,
    state: ServiceState,
    /// The worker is healthy (not degraded, draining or disconnected).
    worker_ok: bool,
}

struct Record {
    worker_id: String,
    name: String,
    instance_id: String,
    capabilities: proto::Capabilities,
    services: BTreeMap<String, ServiceEntry>,
    advertise_address: String,
    version: String,
    registered_ms: u64,
    /// Last heard, as of the moment the link was dropped.
    last_heard_ms: u64,
    link: Option<Arc<SessionLink>>,
    generation: u64,
    token_digest: [u8; 32],
    draining: bool,
    sessions: u64,
    /// Last published status, to log and emit each transition once.
    status: WorkerState,
    /// Services this record has entries for in the routing index.
    routed: Vec<String>,
    /// Catalog services placed on this worker, and the assignment's version.
    placed: BTreeSet<String>,
    assignment_version: u64,
    /// When the stream closed (for the placement grace).
    disconnected_ms: Option<u64>,
    /// The worker routes its traffic through a tunnel it opens...
    tunnel_wanted: bool,
    /// ...and this is it, with the session generation it belongs to.
    tunnel: Option<(u64, TunnelSender)>,
}

impl Record {
    fn heard_ms(&self) -> u64 {
        self.link.as_ref().map_or(self.last_heard_ms, |l| l.heard_ms())
    }

    fn compute_status(&self, now_ms: u64, heartbeat_timeout_ms: u64) -> WorkerState {
        match &self.link {
            None => WorkerState::Disconnected,
            Some(_) if self.draining => WorkerState::Draining,
            Some(l) if now_ms.saturating_sub(l.heard_ms()) > heartbeat_timeout_ms => WorkerState::Degraded,
            Some(_) => WorkerState::Healthy,
        }
    }
}

#[derive(Default)]
struct State {
    workers: HashMap<String, Record>,
    by_instance: HashMap<String, String>,
    by_token: HashMap<[u8; 32], String>,
    next_generation: u64,
    /// service -> worker id -> replica: the index the route table is built from.
    routes: BTreeMap<String, BTreeMap<String, RouteEntry>>,
    table: Arc<RouteTable>,
}

pub struct Registry {
    config: RegistryConfig,
    clock: Clock,
    state: Mutex<State>,
    events: broadcast::Sender<RegistryEvent>,
    routes: watch::Sender<Arc<RouteTable>>,
}

/// Buffered events per subscriber; a slower one is told it lagged and resyncs.
const EVENT_BUFFER: usize = 8192;

impl Registry {
    pub fn new(config: RegistryConfig) -> Self {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let (routes, _) = watch::channel(Arc::new(RouteTable::default()));
        Registry {
            config,
            clock: Clock::new(),
            state: Mutex::new(State::default()),
            events,
            routes,
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

    fn hb_ms(&self) -> u64 {
        self.config.heartbeat_timeout.as_millis() as u64
    }

    /// Binds a new stream to a worker record: resumes the record its token
    /// names, else the disconnected record of the same instance id, else a
    /// new record with a new id.
    /// `adopt`: for a new record only, services the worker still runs from an
    /// earlier coordinator's placement (name -> URL the proxy dials), kept as placed.
    pub fn register(
        &self,
        hello: &Hello,
        link: Arc<SessionLink>,
        adopt: &BTreeMap<String, String>,
    ) -> Result<Registered, RegisterError> {
        let now = self.clock.now_ms();
        let mut guard = self.lock();
        let st = &mut *guard;
        let mut target: Option<(String, &'static str)> = None;
        if !hello.resume_token.is_empty() {
            match st.by_token.get(&token_digest(&hello.resume_token)) {
                Some(id) => target = Some((id.clone(), "resume token")),
                None => {
                    info!(worker = %hello.name, "resume token not recognised (coordinator restarted, or the token is stale); matching by instance id")
                }
            }
        }
        if target.is_none() && !hello.instance_id.is_empty() {
            if let Some(id) = st.by_instance.get(&hello.instance_id) {
                let rec = &st.workers[id];
                if rec.link.is_some() {
                    warn!(worker = %hello.name, worker_id = %id, "refused a second live session for one instance id");
                    return Err(RegisterError::InstanceLive(rec.name.clone()));
                }
                target = Some((id.clone(), "instance id"));
            }
        }
        st.next_generation += 1;
        let generation = st.next_generation;
        let (token, digest) = new_resume_token();

        if let Some((id, how)) = target {
            let rec = st.workers.get_mut(&id).expect("index points at a record");
            if let Some(old) = rec.link.take() {
                old.notify(Notice::Close("replaced by a newer session of this worker".into()));
            }
            st.by_token.remove(&rec.token_digest);
            st.by_token.insert(digest, id.clone());
            if rec.instance_id != hello.instance_id {
                st.by_instance.remove(&rec.instance_id);
                if !hello.instance_id.is_empty() {
                    st.by_instance.insert(hello.instance_id.clone(), id.clone());
                }
            }
            apply_hello(rec, hello);
            rec.token_digest = digest;
            rec.link = Some(link);
            rec.generation = generation;
            rec.sessions += 1;
            rec.disconnected_ms = None;
            rec.tunnel_wanted = hello.tunnel;
            rec.tunnel = None;
            rec.assignment_version += 1;
            let (placed, assignment_version) = (rec.placed.clone(), rec.assignment_version);
            let reason = format!("resumed by {how}");
            let name = rec.name.clone();
            self.publish(st, &id, ChangeKind::Updated, &reason, now, true);
            return Ok(Registered {
                worker_id: id,
                name,
                resume_token: token,
                resumed: true,
                generation,
                placed,
                assignment_version,
            });
        }

        if st.workers.len() >= self.config.max_workers {
            warn!(worker = %hello.name, max = self.config.max_workers, "refused a worker: registry full");
            return Err(RegisterError::Full(self.config.max_workers));
        }
        let mut id = match &hello.previous_worker_id {
            prev if identity::is_worker_id(prev) && !st.workers.contains_key(prev) => prev.clone(),
            _ => new_worker_id(),
        };
        while st.workers.contains_key(&id) {
            id = new_worker_id();
        }
        if st.workers.values().any(|r| r.link.is_some() && r.name == hello.name) {
            warn!(worker = %hello.name, worker_id = %id, "another live worker has the same name; they get distinct ids");
        }
        let mut rec = Record {
            worker_id: id.clone(),
            name: String::new(),
            instance_id: hello.instance_id.clone(),
            capabilities: Default::default(),
            services: BTreeMap::new(),
            advertise_address: String::new(),
            version: String::new(),
            registered_ms: now,
            last_heard_ms: now,
            link: Some(link),
            generation,
            token_digest: digest,
            draining: false,
            sessions: 1,
            status: WorkerState::Healthy,
            routed: Vec::new(),
            placed: BTreeSet::new(),
            assignment_version: 1,
            disconnected_ms: None,
            tunnel_wanted: hello.tunnel,
            tunnel: None,
        };
        apply_hello(&mut rec, hello);
        for (svc, url) in adopt {
            if rec.placed.len() >= limits::MAX_SERVICES || rec.services.contains_key(svc) {
                continue;
            }
            rec.placed.insert(svc.clone());
            rec.services.insert(
                svc.clone(),
                ServiceEntry {
                    state: ServiceState::Unspecified,
                    message: "adopted: still running from an earlier placement".into(),
                    target: Endpoint::parse_url(url),
                    url: url.clone(),
                    declared: false,
                },
            );
        }
        let placed = rec.placed.clone();
        let name = rec.name.clone();
        if !hello.instance_id.is_empty() {
            st.by_instance.insert(hello.instance_id.clone(), id.clone());
        }
        st.by_token.insert(digest, id.clone());
        st.workers.insert(id.clone(), rec);
        let reused = id == hello.previous_worker_id;
        info!(worker = %name, worker_id = %id, reused_previous_id = reused, "worker registered");
        self.emit(st, &id, ChangeKind::Added, "registered", now);
        Ok(Registered {
            worker_id: id,
            name,
            resume_token: token,
            resumed: false,
            generation,
            placed,
            assignment_version: 1,
        })
    }

    /// A readiness report from the worker's current session.
    pub fn service_status(&self, worker_id: &str, generation: u64, status: ServiceStatus) {
        let Some(status) = limits::clean_status(status) else {
            return;
        };
        let now = self.clock.now_ms();
        let mut guard = self.lock();
        let st = &mut *guard;
        let Some(rec) = st.workers.get_mut(worker_id).filter(|r| r.generation == generation) else {
            return;
        };
        let state = ServiceState::try_from(status.state).unwrap_or(ServiceState::Unspecified);
        if !rec.services.contains_key(&status.service) && rec.services.len() >= limits::MAX_SERVICES {
            warn!(worker = %rec.name, service = %status.service, "ignored status: too many services");
            return;
        }
        let entry = rec.services.entry(status.service.clone()).or_insert(ServiceEntry {
            state: ServiceState::Unspecified,
            message: String::new(),
            url: String::new(),
            target: None,
            declared: false,
        });
        if entry.state == state && entry.message == status.message {
            return;
        }
        let reason = format!(
            "service {} {} -> {}",
            status.service,
            service_state_str(entry.state),
            service_state_str(state)
        );
        entry.state = state;
        entry.message = status.message;
        info!(worker = %rec.name, worker_id = %worker_id, service = %status.service, state = service_state_str(state), "service state");
        self.emit(st, worker_id, ChangeKind::Updated, &reason, now);
    }

    /// The session's stream ended: the worker is unroutable from now on.
    pub fn disconnect(&self, worker_id: &str, generation: u64, reason: &str) {
        let now = self.clock.now_ms();
        let mut guard = self.lock();
        let st = &mut *guard;
        let Some(rec) = st.workers.get_mut(worker_id) else {
            return;
        };
        if rec.generation != generation {
            return;
        }
        if let Some(link) = rec.link.take() {
            rec.last_heard_ms = link.heard_ms();
            rec.disconnected_ms = Some(now);
            rec.tunnel = None;
            self.publish(st, worker_id, ChangeKind::Updated, reason, now, true);
        }
    }

    /// A message arrived from a worker the clock had marked degraded.
    pub fn refresh(&self, worker_id: &str) {
        let now = self.clock.now_ms();
        let mut guard = self.lock();
        if guard.workers.contains_key(worker_id) {
            self.publish(&mut guard, worker_id, ChangeKind::Updated, "heard again", now, false);
        }
    }

    /// Marks a worker draining and tells it so.
    pub fn drain(&self, worker: &str, reason: &str) -> Result<WorkerView, LookupError> {
        let now = self.clock.now_ms();
        let mut guard = self.lock();
        let id = find(&guard, worker)?;
        let rec = guard.workers.get_mut(&id).expect("found");
        if !rec.draining {
            rec.draining = true;
            if let Some(link) = &rec.link {
                link.notify(Notice::Drain(reason.to_string()));
            }
            let why = if reason.is_empty() {
                "drained by operator".to_string()
            } else {
                format!("drained: {reason}")
            };
            self.publish(&mut guard, &id, ChangeKind::Updated, &why, now, true);
        }
        Ok(self.view(&guard.workers[&id], now))
    }

    /// Runs the health clock once: healthy <-> degraded, and removal of
    /// records silent for the worker timeout.
    pub fn sweep(&self) {
        let now = self.clock.now_ms();
        let timeout_ms = self.config.worker_timeout.as_millis() as u64;
        let mut guard = self.lock();
        let st = &mut *guard;
        let hb = self.hb_ms();
        let mut expired = Vec::new();
        let mut changed = Vec::new();
        for (id, rec) in &st.workers {
            let silent = now.saturating_sub(rec.heard_ms());
            if silent > timeout_ms {
                expired.push((id.clone(), silent));
            } else if rec.compute_status(now, hb) != rec.status {
                changed.push(id.clone());
            }
        }
        for id in changed {
            let silent = now.saturating_sub(st.workers[&id].heard_ms());
            let reason = format!(
                "silent for {}",
                crate::duration::format_short(Duration::from_millis(silent))
            );
            self.publish(st, &id, ChangeKind::Updated, &reason, now, false);
        }
        for (id, silent) in expired {
            let rec = st.workers.remove(&id).expect("listed above");
            let reason = format!(
                "removed: nothing heard for {} (worker timeout {})",
                crate::duration::format_short(Duration::from_millis(silent)),
                crate::duration::format_short(self.config.worker_timeout)
            );
            if let Some(link) = &rec.link {
                link.notify(Notice::Close(reason.clone()));
            }
            if st.by_instance.get(&rec.instance_id) == Some(&id) {
                st.by_instance.remove(&rec.instance_id);
            }
            st.by_token.remove(&rec.token_digest);
            self.unroute(st, &id, &rec.routed);
            warn!(worker = %rec.name, worker_id = %id, %reason, "worker removed");
            let view = self.view(&rec, now);
            let _ = self.events.send(RegistryEvent {
                kind: ChangeKind::Removed,
                worker: view,
                reason,
            });
        }
    }

    /// Recomputes a record's status; logs and emits if it changed.
    /// With `force`, the event is emitted even when the status is unchanged
    /// (something else about the record changed).
    fn publish(&self, st: &mut State, id: &str, kind: ChangeKind, reason: &str, now: u64, force: bool) {
        let hb = self.hb_ms();
        let rec = st.workers.get_mut(id).expect("caller checked");
        let new = rec.compute_status(now, hb);
        if let Some(l) = &rec.link {
            l.set_degraded(new == WorkerState::Degraded);
        }
        let old = rec.status;
        if new == old && !force {
            return;
        }
        rec.status = new;
        if new != old {
            match new {
                WorkerState::Healthy | WorkerState::Draining => {
                    info!(worker = %rec.name, worker_id = %id, from = %old, to = %new, %reason, "worker status")
                }
                _ => warn!(worker = %rec.name, worker_id = %id, from = %old, to = %new, %reason, "worker status"),
            }
        }
        self.emit(st, id, kind, reason, now);
    }

    fn emit(&self, st: &mut State, id: &str, kind: ChangeKind, reason: &str, now: u64) {
        self.reroute(st, id);
        let view = self.view(&st.workers[id], now);
        // No subscribers is fine: nobody is watching.
        let _ = self.events.send(RegistryEvent {
            kind,
            worker: view,
            reason: reason.to_string(),
        });
    }

    /// Brings worker `id`'s replicas in the routing index up to date and
    /// publishes a new route table if anything changed.
    fn reroute(&self, st: &mut State, id: &str) {
        let Some(rec) = st.workers.get_mut(id) else { return };
        let worker_ok = rec.status == WorkerState::Healthy;
        let old = std::mem::replace(&mut rec.routed, rec.services.keys().cloned().collect());
        let tunnel = rec.tunnel.as_ref().map(|(_, t)| t.clone());
        let wanted: Vec<(String, ServiceState, Option<Route>)> = rec
            .services
            .iter()
            .map(|(n, s)| {
                let target = if rec.tunnel_wanted {
                    // Through the tunnel the worker knows the service's URL; the
                    // origin here only names the service.
                    tunnel.clone().map(|t| (tunnel_origin(), String::new(), Via::Tunnel(t)))
                } else {
                    s.target.clone().map(|(o, p)| (o, p, Via::Direct))
                };
                (n.clone(), s.state, target)
            })
            .collect();
        let name = rec.name.clone();
        let mut touched: BTreeSet<String> = BTreeSet::new();
        let mut loads: HashMap<String, Arc<EndpointLoad>> = HashMap::new();
        for svc in old {
            if let Some(entry) = st.routes.get_mut(&svc).and_then(|m| m.remove(id)) {
                if let Some(ep) = entry.endpoint {
                    loads.insert(svc.clone(), ep.load.clone());
                }
            }
            touched.insert(svc);
        }
        for (svc, state, target) in wanted {
            let endpoint = target.map(|(origin, prefix, via)| {
                Arc::new(Endpoint {
                    worker_id: id.to_string(),
                    worker_name: name.clone(),
                    origin,
                    prefix,
                    via,
                    load: loads.remove(&svc).unwrap_or_default(),
                })
            });
            st.routes.entry(svc.clone()).or_default().insert(
                id.to_string(),
                RouteEntry {
                    endpoint,
                    state,
                    worker_ok,
                },
            );
            touched.insert(svc);
        }
        self.publish_routes(st, touched);
    }

    /// Drops a removed worker's replicas from the routing index.
    fn unroute(&self, st: &mut State, id: &str, routed: &[String]) {
        for svc in routed {
            if let Some(m) = st.routes.get_mut(svc) {
                m.remove(id);
            }
        }
        self.publish_routes(st, routed.iter().cloned().collect());
    }

    fn publish_routes(&self, st: &mut State, touched: BTreeSet<String>) {
        if touched.is_empty() {
            return;
        }
        let mut table = (*st.table).clone();
        for svc in touched {
            match st.routes.get(&svc).filter(|m| !m.is_empty()) {
                None => {
                    st.routes.remove(&svc);
                    table.services.remove(&svc);
                }
                Some(replicas) => {
                    table.services.insert(svc, Arc::new(build_routes(replicas)));
                }
            }
        }
        st.table = Arc::new(table);
        self.routes.send_replace(st.table.clone());
    }

    fn view(&self, rec: &Record, now: u64) -> WorkerView {
        let heard = rec.heard_ms();
        WorkerView {
            worker_id: rec.worker_id.clone(),
            name: rec.name.clone(),
            status: rec.status,
            capabilities: rec.capabilities.clone(),
            services: rec
                .services
                .iter()
                .map(|(name, s)| ServiceView {
                    name: name.clone(),
                    state: s.state,
                    message: s.message.clone(),
                    url: s.url.clone(),
                })
                .collect(),
            advertise_address: rec.advertise_address.clone(),
            version: rec.version.clone(),
            last_heartbeat: self.clock.wall_at(heard),
            registered_at: self.clock.wall_at(rec.registered_ms),
            age: Duration::from_millis(now.saturating_sub(rec.registered_ms)),
            silent_for: Duration::from_millis(now.saturating_sub(heard)),
            sessions: rec.sessions,
        }
    }

    /// Every worker (optionally only those in one state), sorted by name then id.
    pub fn snapshot(&self, filter: Option<WorkerState>) -> Vec<WorkerView> {
        let now = self.clock.now_ms();
        let guard = self.lock();
        let mut out: Vec<WorkerView> = guard
            .workers
            .values()
            .filter(|r| filter.is_none_or(|f| r.status == f))
            .map(|r| self.view(r, now))
            .collect();
        out.sort_by(|a, b| (&a.name, &a.worker_id).cmp(&(&b.name, &b.worker_id)));
        out
    }

    /// One worker by id, or by name when the name is unique.
    pub fn get(&self, worker: &str) -> Result<WorkerView, LookupError> {
        let now = self.clock.now_ms();
        let guard = self.lock();
        let id = find(&guard, worker)?;
        Ok(self.view(&guard.workers[&id], now))
    }

    /// The current set and a receiver for every later change, taken
    /// atomically so that no change falls between the two.
    pub fn subscribe(&self) -> (Vec<WorkerView>, broadcast::Receiver<RegistryEvent>) {
        let now = self.clock.now_ms();
        let guard = self.lock();
        let rx = self.events.subscribe();
        let mut all: Vec<WorkerView> = guard.workers.values().map(|r| self.view(r, now)).collect();
        all.sort_by(|a, b| (&a.name, &a.worker_id).cmp(&(&b.name, &b.worker_id)));
        (all, rx)
    }

    /// Worker counts by state.
    pub fn counts(&self) -> BTreeMap<WorkerState, usize> {
        let guard = self.lock();
        let mut m = BTreeMap::new();
        for r in guard.workers.values() {
            *m.entry(r.status).or_insert(0) += 1;
        }
        m
    }

    /// Every worker as placement sees it. `grace`: how long a disconnected
    /// worker keeps its placements before they go elsewhere.
    pub fn candidates(&self, grace: Duration) -> Vec<crate::placement::Candidate> {
        let now = self.clock.now_ms();
        let grace = grace.as_millis() as u64;
        let guard = self.lock();
        // Only workers that can take placements, hold some, or declare
        // services (which count as providers) matter to placement; skipping
        // the rest keeps a fleet of plain workers from costing a clone of
        // every record per plan.
        let mut out: Vec<crate::placement::Candidate> = guard
            .workers
            .values()
            .filter(|r| !r.capabilities.runtimes.is_empty() || !r.placed.is_empty() || !r.services.is_empty())
            .map(|r| crate::placement::Candidate {
                worker_id: r.worker_id.clone(),
                name: r.name.clone(),
                eligible: r.status == WorkerState::Healthy && !r.capabilities.runtimes.is_empty(),
                keep: r.link.is_some() || r.disconnected_ms.is_some_and(|t| now.saturating_sub(t) < grace),
                declared: r
                    .services
                    .iter()
                    .filter(|(_, s)| s.declared)
                    .map(|(n, _)| n.clone())
                    .collect(),
                placed: r.placed.clone(),
                capabilities: r.capabilities.clone(),
            })
            .collect();
        out.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
        out
    }

    /// Sets the services placed on a worker and sends it the assignment that
    /// `build` makes from the new version, the placed set and the declared
    /// services (name, URL). `urls` says where
    /// each placed service will listen, as the proxy dials it.
    pub fn assign(
        &self,
        worker_id: &str,
        placed: BTreeSet<String>,
        urls: &BTreeMap<String, String>,
        build: impl FnOnce(u64, &BTreeSet<String>, &[(String, String)]) -> proto::Assignment,
    ) {
        let now = self.clock.now_ms();
        let mut guard = self.lock();
        let st = &mut *guard;
        let Some(rec) = st.workers.get_mut(worker_id) else {
            return;
        };
        if rec.placed == placed {
            return;
        }
        let added: Vec<String> = placed.difference(&rec.placed).cloned().collect();
        let removed: Vec<String> = rec.placed.difference(&placed).cloned().collect();
        for name in &removed {
            if rec.services.get(name).is_some_and(|s| !s.declared) {
                rec.services.remove(name);
            }
        }
        for name in &added {
            let url = urls.get(name).cloned().unwrap_or_default();
            rec.services.entry(name.clone()).or_insert(ServiceEntry {
                state: ServiceState::Unspecified,
                message: "placed; waiting for the worker to start it".into(),
                target: Endpoint::parse_url(&url),
                url,
                declared: false,
            });
        }
        rec.placed = placed;
        rec.assignment_version += 1;
        let declared: Vec<(String, String)> = rec
            .services
            .iter()
            .filter(|(_, s)| s.declared)
            .map(|(n, s)| (n.clone(), s.url.clone()))
            .collect();
        let assignment = build(rec.assignment_version, &rec.placed, &declared);
        if let Some(link) = &rec.link {
            link.notify(Notice::Assign(assignment));
        }
        info!(worker = %rec.name, worker_id = %worker_id, ?added, ?removed, "placement changed");
        let reason = format!("placement: +{added:?} -{removed:?}");
        self.emit(st, worker_id, ChangeKind::Updated, &reason, now);
    }

    /// The session generation whose resume token this is, if the worker is
    /// connected: a tunnel is admitted only for a live session, by its secret.
    pub fn verify_tunnel(&self, worker_id: &str, token: &str) -> Option<u64> {
        use subtle::ConstantTimeEq;
        let guard = self.lock();
        let rec = guard.workers.get(worker_id)?;
        let ok: bool = token_digest(token).ct_eq(&rec.token_digest).into();
        (ok && rec.link.is_some()).then_some(rec.generation)
    }

    /// The worker's tunnel is up: its services are routed through it.
    pub fn attach_tunnel(&self, worker_id: &str, generation: u64, sender: TunnelSender) -> bool {
        let now = self.clock.now_ms();
        let mut guard = self.lock();
        let st = &mut *guard;
        let Some(rec) = st.workers.get_mut(worker_id).filter(|r| r.generation == generation) else {
            return false;
        };
        rec.tunnel = Some((generation, sender));
        info!(worker = %rec.name, worker_id = %worker_id, "tunnel open");
        self.emit(st, worker_id, ChangeKind::Updated, "tunnel open", now);
        true
    }

    /// The tunnel of session `generation` closed.
    pub fn detach_tunnel(&self, worker_id: &str, generation: u64) {
        let now = self.clock.now_ms();
        let mut guard = self.lock();
        let st = &mut *guard;
        let Some(rec) = st.workers.get_mut(worker_id) else {
            return;
        };
        if rec.tunnel.as_ref().is_some_and(|(g, _)| *g == generation) {
            rec.tunnel = None;
            info!(worker = %rec.name, worker_id = %worker_id, "tunnel closed");
            self.emit(st, worker_id, ChangeKind::Updated, "tunnel closed", now);
        }
    }

    /// A worker's advertise address, for building placed services' URLs.
    pub fn advertise_address(&self, worker_id: &str) -> Option<String> {
        self.lock().workers.get(worker_id).map(|r| r.advertise_address.clone())
    }

    /// Ends every open session with a goodbye (coordinator shutdown).
    pub fn close_all(&self, reason: &str) {
        let guard = self.lock();
        for rec in guard.workers.values() {
            if let Some(l) = &rec.link {
                l.notify(Notice::Close(reason.to_string()));
            }
        }
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
                // Ready but nowhere to send to: as good as not there.
                (None, true) => r.failed += 1,
            },
            ServiceState::Failed => r.failed += 1,
            ServiceState::Loading | ServiceState::Unspecified => r.loading += 1,
        }
        r.total += 1;
    }
    r
}

fn apply_hello(rec: &mut Record, hello: &Hello) {
    rec.name = hello.name.clone();
    rec.capabilities = hello.capabilities.clone().unwrap_or_default();
    rec.advertise_address = hello.advertise_address.clone();
    rec.version = hello.version.clone();
    // Placed services stay placed across a resumption; their state is the
    // worker's to report again.
    let placed: Vec<(String, ServiceEntry)> = std::mem::take(&mut rec.services)
        .into_iter()
        .filter(|(name, _)| rec.placed.contains(name))
        .map(|(name, mut e)| {
            e.state = ServiceState::Unspecified;
            e.message = "waiting for the worker's report".into();
            (name, e)
        })
        .collect();
    rec.services = hello
        .services
        .iter()
        .map(|s| {
            let entry = ServiceEntry {
                state: ServiceState::Unspecified,
                message: "no status reported yet".into(),
                url: s.url.clone(),
                target: Endpoint::parse_url(&s.url),
                declared: true,
            };
            (s.name.clone(), entry)
        })
        .collect();
    for (name, e) in placed {
        rec.services.entry(name).or_insert(e);
    }
}

fn find(st: &State, worker: &str) -> Result<String, LookupError> {
    if st.workers.contains_key(worker) {
        return Ok(worker.to_string());
    }
    let mut matches = st.workers.values().filter(|r| r.name == worker);
    match (matches.next(), matches.next()) {
        (Some(r), None) => Ok(r.worker_id.clone()),
        (Some(_), Some(_)) => Err(LookupError::Ambiguous(worker.to_string())),
        _ => Err(LookupError::NotFound(worker.to_string())),
    }
}
