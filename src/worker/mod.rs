//! The worker agent: dials the coordinator, adopts the id it is given,
//! keeps alive, and reconnects with jittered exponential backoff, resuming
//! its id with the secret resume token (kept in memory only). After a
//! coordinator restart the token is unknown there, and the persistent
//! instance id keeps the fleet free of duplicates.

mod backoff;
mod capabilities;
mod config;
mod credentials;
mod dial;
mod flags;
mod identity;
mod metrics;
mod probe;
pub mod runtime;
mod session;
mod targets;
pub mod tunnel;

pub use backoff::Backoff;
pub use config::{defaults, docker_answers, DataPath, RuntimeChoice, WorkerConfig, WorkerConfigError};
pub use identity::{default_state_dir, load_or_create_instance_id, IdentityError};
pub use probe::grpc_health;

use crate::proto::{Assignment, Capabilities, ServiceState};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// What the agent knows about its own session, for embedding and tests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentStatus {
    /// The id the coordinator assigned (kept across reconnects).
    pub worker_id: Option<String>,
    pub connected: bool,
    /// The coordinator (as configured) that welcomed the latest session.
    pub coordinator: Option<String>,
    /// Sessions that reached Welcome.
    pub sessions: u64,
    /// Whether the latest session resumed an existing record.
    pub resumed: bool,
    pub draining: bool,
    /// Round trip of the latest keepalive.
    pub last_rtt: Option<Duration>,
    pub keepalives_acked: u64,
    pub last_error: Option<String>,
}

/// One service's readiness as the worker reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceReport {
    pub state: ServiceState,
    pub message: String,
}

/// Shared by every session of one agent.
struct AgentCtx {
    /// Shared with the tunnel's redials ([`dial::Dialer`]).
    config: Arc<WorkerConfig>,
    name: String,
    instance_id: String,
    capabilities: Capabilities,
    status: watch::Sender<AgentStatus>,
    services: watch::Receiver<BTreeMap<String, ServiceReport>>,
    /// Where probes write readiness (the same board `services` reads).
    board: watch::Sender<BTreeMap<String, ServiceReport>>,
    probes: std::sync::Mutex<probe::Probes>,
    /// Services placed on this worker, for the runtime task to run (`None`
    /// until the first assignment, so that a runtime adopting what an
    /// earlier run left does not stop it before it knows what is wanted).
    wanted: watch::Sender<Option<Vec<runtime::RunSpec>>>,
    /// Where each service is reached, for probes and for requests arriving
    /// through the tunnel (the assignment's URL, or the runtime's).
    local: crate::worker::tunnel::LocalServices,
    epoch: tokio::time::Instant,
    max_message_bytes: usize,
    /// The worker's certificate and key (TLS coordinators that issue them).
    credentials: Arc<credentials::Credentials>,
    /// PEM of `--ca-cert`, the CA the coordinator's certificate must chain to.
    ca_pem: Option<String>,
    /// How `https://` services are verified (`--service-ca`, else the system roots).
    service_tls: crate::upstream::ServiceTls,
}

impl AgentCtx {
    /// Starts, keeps or stops readiness probes to match an assignment.
    fn apply_assignment(&self, a: &Assignment) {
        let wanted = a
            .services
            .iter()
            .filter(|s| !s.url.is_empty())
            .map(|s| (s.name.clone(), probe::ProbeSpec::new(&s.url, s.readiness.as_ref())))
            .collect();
        let specs: Vec<runtime::RunSpec> = a
            .services
            .iter()
            .filter(|s| !s.declared)
            .map(runtime::RunSpec::from_assigned)
            .collect();
        self.wanted.send_if_modified(|w| {
            if w.as_ref() == Some(&specs) {
                return false;
            }
            *w = Some(specs);
            true
        });
        let urls = a
            .services
            .iter()
            .filter(|s| !s.url.is_empty())
            .map(|s| (s.name.clone(), s.url.clone()))
            .collect();
        self.local.set_assigned(urls);
        self.drop_renamed_placeholders(a);
        let mut probes = self.probes.lock().unwrap_or_else(|e| e.into_inner());
        probes.apply(
            wanted,
            &self.board,
            &self.local,
            &self.service_tls,
            self.config.probe_interval,
        );
    }

    /// A service declared by an alias (`--service notes=URL`) comes back in
    /// the assignment under its catalog name (`notes-coa`), and is probed and
    /// reported under that name from then on. The "declared, so ready"
    /// placeholder the board holds under the declared name goes: kept, it
    /// would be sent again at every session start, after or before the
    /// probe's state depending on how the names sort, and could report a
    /// failing service ready.
    fn drop_renamed_placeholders(&self, a: &Assignment) {
        let assigned: std::collections::BTreeSet<&str> = a.services.iter().map(|s| s.name.as_str()).collect();
        let renamed: Vec<&str> = self
            .config
            .services
            .iter()
            .map(|(name, _)| name.as_str())
            .filter(|name| !assigned.contains(name))
            .collect();
        if renamed.is_empty() {
            return;
        }
        self.board.send_if_modified(|board| {
            let before = board.len();
            board.retain(|name, _| !renamed.contains(&name.as_str()));
            board.len() != before
        });
    }
}

/// A running agent.
pub struct AgentHandle {
    status: watch::Receiver<AgentStatus>,
    services: watch::Sender<BTreeMap<String, ServiceReport>>,
    name: String,
    task: JoinHandle<()>,
}

impl AgentHandle {
    pub fn status(&self) -> watch::Receiver<AgentStatus> {
        self.status.clone()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reports a service's readiness (sent now if connected, and at every
    /// new session).
    pub fn set_service(&self, name: &str, state: ServiceState, message: &str) {
        let report = ServiceReport {
            state,
            message: message.to_string(),
        };
        self.services.send_modify(|m| {
            m.insert(name.to_string(), report);
        });
    }

    /// Waits until the status satisfies `f`.
    pub async fn wait_for(&self, f: impl FnMut(&AgentStatus) -> bool) -> AgentStatus {
        let mut rx = self.status.clone();
        let s = rx
            .wait_for(f)
            .await
            .expect("agent status sender lives as long as the handle");
        s.clone()
    }

    /// Waits for the agent task to end (after its shutdown token fires).
    pub async fn join(self) {
        let _ = self.task.await;
    }

    /// Stops the agent at once, as a crash would: no goodbye.
    pub fn abort(&self) {
        self.task.abort();
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("invalid configuration: {0}")]
    Config(#[from] WorkerConfigError),
}

/// Starts an agent; it runs until `shutdown` is cancelled. A configuration
/// the coordinator would refuse is refused here, before anything is dialled.
pub fn spawn(config: WorkerConfig, shutdown: CancellationToken) -> Result<AgentHandle, AgentError> {
    config.validate()?;
    let name = config
        .name
        .clone()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned());
    let state_dir = config.state_dir.clone().unwrap_or_else(|| default_state_dir(&name));
    let instance_id = load_or_create_instance_id(&state_dir)?;
    let credentials = Arc::new(credentials::Credentials::load(&state_dir));
    let ca_pem = match &config.ca_cert {
        Some(p) => {
            Some(std::fs::read_to_string(p).map_err(|e| WorkerConfigError::CaCert(format!("{}: {e}", p.display())))?)
        }
        None => None,
    };
    let service_tls = crate::upstream::ServiceTls::from_file(config.service_ca.as_deref())
        .map_err(|e| WorkerConfigError::ServiceCa(e.to_string()))?;
    let initial: BTreeMap<String, ServiceReport> = config
        .services
        .iter()
        .map(|(n, _)| {
            // Declared services are taken as running; readiness probes refine this.
            (
                n.clone(),
                ServiceReport {
                    state: ServiceState::Ready,
                    message: "declared by the worker".into(),
                },
            )
        })
        .collect();
    let (services_tx, services_rx) = watch::channel(initial);
    let (status_tx, status_rx) = watch::channel(AgentStatus::default());
    let local = crate::worker::tunnel::LocalServices::default();
    let (wanted_tx, wanted_rx) = watch::channel(None);
    let board = services_tx.clone();
    let handle_name = name.clone();
    let restarts = crate::metrics::agent::Restarts::default();
    if let Some(at) = config.metrics_listen {
        let sources = metrics::Sources {
            status: status_rx.clone(),
            board: services_rx.clone(),
            restarts: restarts.clone(),
        };
        tokio::spawn(metrics::serve(at, sources, shutdown.clone()));
    }
    let task = tokio::spawn(async move {
        // Resolving `auto` pings the Docker engine: done here, in the
        // agent's task and asynchronously, so that starting an agent never
        // holds a runtime thread while a slow engine makes up its mind.
        let rt = build_runtime(&config, &name, &instance_id, &state_dir, &board, &local, restarts).await;
        let ctx = AgentCtx {
            capabilities: capabilities::detect(&config, rt.kind().advertised()),
            max_message_bytes: config.max_message_bytes,
            credentials,
            ca_pem,
            service_tls,
            config: Arc::new(config),
            name,
            instance_id,
            status: status_tx,
            services: services_rx,
            board,
            probes: Default::default(),
            wanted: wanted_tx,
            local,
            epoch: tokio::time::Instant::now(),
        };
        let runtime = tokio::spawn(run_services(rt, wanted_rx, shutdown.clone()));
        run(ctx, shutdown).await;
        let _ = runtime.await;
    });
    Ok(AgentHandle {
        status: status_rx,
        services: services_tx,
        name: handle_name,
        task,
    })
}

/// The runtime `config` asks for, `auto` resolved.
async fn build_runtime(
    config: &WorkerConfig,
    name: &str,
    instance_id: &str,
    state_dir: &std::path::Path,
    board: &watch::Sender<BTreeMap<String, ServiceReport>>,
    local: &crate::worker::tunnel::LocalServices,
    restarts: crate::metrics::agent::Restarts,
) -> runtime::Runtime {
    let kind = config.runtime_kind().await;
    info!(worker = %name, runtime = %kind, requested = ?config.runtime, "runtime chosen");
    match kind {
        runtime::RuntimeKind::Docker => runtime::Runtime::docker(runtime::docker::DockerContext {
            board: board.clone(),
            local: local.clone(),
            worker_name: name.to_string(),
            owner: instance_id.to_string(),
            stop_grace: config.stop_grace,
            gpus: !config.gpus.is_empty(),
            network: config.docker_network.clone().filter(|n| !n.trim().is_empty()),
            publish_all: !config.uses_tunnel(),
        }),
        runtime::RuntimeKind::Process => runtime::Runtime::process(runtime::process::ProcessContext {
            board: board.clone(),
            self_exe: runtime::self_exe(config.self_exe.clone()),
            run_dir: state_dir.join("run"),
            stop_grace: config.stop_grace,
            worker_name: name.to_string(),
            restarts,
        }),
        runtime::RuntimeKind::None => runtime::Runtime::None,
    }
}

/// Keeps the runtime in step with the latest assignment, across sessions:
/// a reconnect does not restart anything. Stops everything on shutdown.
async fn run_services(
    rt: runtime::Runtime,
    mut wanted: watch::Receiver<Option<Vec<runtime::RunSpec>>>,
    shutdown: CancellationToken,
) {
    loop {
        let specs = wanted.borrow_and_update().clone();
        if let Some(specs) = specs {
            rt.reconcile(specs).await;
        }
        tokio::select! {
            r = wanted.changed() => if r.is_err() { break },
            _ = shutdown.cancelled() => break,
        }
    }
    rt.shutdown().await;
}

async fn run(ctx: AgentCtx, shutdown: CancellationToken) {
    let mut backoff = Backoff::new(ctx.config.reconnect_min, ctx.config.reconnect_max);
    let mut token: Option<String> = None;
    let urls = ctx.config.coordinator_urls();
    info!(worker = %ctx.name, coordinators = %urls.join(","), "worker agent starting");
    // Which target the next attempt dials; it moves on after every loss, so
    // a worker whose coordinator died tries the others.
    let mut cursor = 0usize;
    loop {
        // Resolved on every attempt: a name's addresses may change.
        let targets = targets::resolve(&urls).await;
        let target = &targets[cursor % targets.len()];
        match session::run(&ctx, target, &mut token, &shutdown).await {
            session::Ended::Shutdown => break,
            session::Ended::Lost { reason, welcomed } => {
                cursor = cursor.wrapping_add(1);
                if welcomed {
                    backoff.reset();
                }
                ctx.status.send_modify(|s| {
                    s.connected = false;
                    s.last_error = Some(reason.clone());
                });
                let delay = backoff.next_delay();
                warn!(worker = %ctx.name, %reason, retry_in = ?delay, "not connected to the coordinator");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => break,
                }
            }
        }
    }
    ctx.status.send_modify(|s| s.connected = false);
    info!(worker = %ctx.name, "worker agent stopped");
}
