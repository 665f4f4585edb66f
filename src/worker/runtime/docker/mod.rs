//! The docker runtime: runs each placed service as a container from the
//! catalog entry's `image` (its `command`, when given, replaces the image's
//! default command), through the Docker Engine API (bollard).
//!
//! - **Ownership.** Every container carries `edgeplane.owner=<instance id>`
//!   and `edgeplane.service=<name>` (and `edgeplane.worker=<name>` for
//!   people), and is named `edgeplane-<worker>-<service>`.
//! - **Where it runs.** When the worker itself runs in a container, service
//!   containers join the worker's network (or `--docker-network`) and are
//!   reached by container name: the runtime records that address in
//!   [`LocalServices`], which probes and the tunnel consult. On a host, the
//!   service's port is published on `127.0.0.1` (all interfaces on the
//!   direct data path), where the assignment's URL already points.
//! - **Failures.** A missing image (pulled first, when a registry is
//!   reachable) or any Docker error is reported `failed` with the message and
//!   retried with backoff; a container that exits is reported `failed` with
//!   its status and started again.
//! - **Earlier runs.** On the first assignment, a running container of this
//!   owner with the same spec is adopted as it is (a model stays loaded
//!   across a worker crash); any other container of this owner is removed.
//! - **Stop.** Unassigned (or the worker stopping): `docker stop` with the
//!   stop grace, then removed.
//!
//! Environment values are never logged; GPUs are requested (`--gpus all`)
//! only on a worker that declares GPUs. Nothing is mounted into a service
//! container, the Docker socket least of all.

mod logs;
mod network;
mod spec;

use super::supervised::{by_name, Supervisors};
use super::RunSpec;
use crate::errors::chain;
use crate::proto::ServiceState;
use crate::worker::tunnel::LocalServices;
use crate::worker::{Backoff, ServiceReport};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use bollard::Docker;
use logs::{follow_logs, unix_now};
use network::own_network;
pub use spec::container_name;
use spec::{create_body, spec_digest, split_image};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Mutex};
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Marks a container as this worker's: its persistent instance id.
pub const OWNER_LABEL: &str = "edgeplane.owner";
/// The catalog service a container runs.
pub const SERVICE_LABEL: &str = "edgeplane.service";
/// The worker's name, for people reading `docker ps`.
pub const WORKER_LABEL: &str = "edgeplane.worker";
/// A digest of what the container was created from, to know whether an
/// existing container can be adopted.
pub const SPEC_LABEL: &str = "edgeplane.spec";

/// What the runtime needs from its agent.
#[derive(Clone)]
pub struct DockerContext {
    /// Where failures go (the agent's board).
    pub board: watch::Sender<BTreeMap<String, ServiceReport>>,
    /// Where the runtime records a service's address when it is not the assignment's.
    pub local: LocalServices,
    /// Shown in logs and container names.
    pub worker_name: String,
    /// The owner label's value (the worker's persistent instance id).
    pub owner: String,
    /// `docker stop` timeout before the engine kills the container.
    pub stop_grace: Duration,
    /// Request the machine's GPUs for each container (the worker declares GPUs).
    pub gpus: bool,
    /// Network for service containers; `None`: the worker's own, if it runs in a container.
    pub network: Option<String>,
    /// Publish ports on all host interfaces (direct data path) rather than loopback.
    pub publish_all: bool,
}

/// Where service containers go, decided once the engine answers.
#[derive(Debug, Clone, PartialEq)]
enum Placement {
    /// The worker runs on the host: ports are published there.
    Host,
    /// On this Docker network, reached by container name (by address on
    /// the default `bridge`, which has no name resolution).
    Network(String),
}

#[derive(Clone)]
struct Engine {
    docker: Docker,
    placement: Placement,
}

struct Shared {
    ctx: DockerContext,
    engine: Mutex<Option<Engine>>,
}

#[derive(Default)]
struct State {
    running: Supervisors,
    /// Whether containers of this owner that no service wants were removed.
    swept: bool,
}

pub struct DockerRuntime {
    shared: Arc<Shared>,
    state: Mutex<State>,
}

impl DockerRuntime {
    pub fn new(ctx: DockerContext) -> Self {
        DockerRuntime {
            shared: Arc::new(Shared {
                ctx,
                engine: Mutex::new(None),
            }),
            state: Mutex::new(State::default()),
        }
    }

    /// Starts the new, stops and removes the gone, replaces the changed.
    pub async fn reconcile(&self, wanted: Vec<RunSpec>) {
        let wanted = by_name(wanted);
        let mut state = self.state.lock().await;
        if !state.swept {
            state.swept = self.shared.sweep(&wanted).await;
        }
        let shared = &self.shared;
        state
            .running
            .reconcile(wanted, &shared.ctx.board, |spec, stop| {
                tokio::spawn(supervise(spec, stop, shared.clone()))
            })
            .await;
    }
}

impl Shared {
    /// The engine, connected (and the placement decided) on first success.
    async fn engine(&self) -> Result<Engine, String> {
        let mut slot = self.engine.lock().await;
        if let Some(e) = slot.as_ref() {
            return Ok(e.clone());
        }
        let unreachable = |e: bollard::errors::Error| format!("cannot reach the Docker engine: {}", chain(&e));
        let docker = Docker::connect_with_defaults()
            .map_err(unreachable)?
            .negotiate_version()
            .await
            .map_err(unreachable)?;
        let placement = match &self.ctx.network {
            Some(n) => Placement::Network(n.clone()),
            None => own_network(&docker).await,
        };
        let where_ = match &placement {
            Placement::Host => "host (ports published)".to_string(),
            Placement::Network(n) => format!("network {n}"),
        };
        info!(worker = %self.ctx.worker_name, placement = %where_, "docker runtime connected to the engine");
        let e = Engine { docker, placement };
        *slot = Some(e.clone());
        Ok(e)
    }

    /// Removes this owner's containers for services not wanted. Returns
    /// whether it could ask the engine (else it is tried again next time).
    async fn sweep(&self, wanted: &BTreeMap<String, RunSpec>) -> bool {
        let Ok(engine) = self.engine().await else {
            return false;
        };
        let filters: HashMap<&str, Vec<String>> = [("label", vec![format!("{OWNER_LABEL}={}", self.ctx.owner)])].into();
        let opts = ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
        let list = match engine.docker.list_containers(Some(opts)).await {
            Ok(l) => l,
            Err(e) => {
                warn!(worker = %self.ctx.worker_name, error = %chain(&e), "cannot list this worker's containers");
                return false;
            }
        };
        for c in list {
            let labels = c.labels.unwrap_or_default();
            let service = labels.get(SERVICE_LABEL).cloned().unwrap_or_default();
            if wanted.contains_key(&service) {
                continue; // its supervisor adopts or replaces it
            }
            let name = c
                .names
                .and_then(|n| n.into_iter().next())
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_string();
            warn!(worker = %self.ctx.worker_name, %service, container = %name, "removing a container an earlier run left");
            if let Some(id) = c.id {
                let _ = remove(&engine.docker, &id, &self.ctx).await;
            }
        }
        true
    }

    fn report(&self, name: &str, state: ServiceState, message: String) {
        self.ctx.board.send_modify(|m| {
            m.insert(name.to_string(), ServiceReport { state, message });
        });
    }
}

/// Runs one service until told to stop.
async fn supervise(spec: RunSpec, stop: CancellationToken, shared: Arc<Shared>) {
    let ctx = &shared.ctx;
    let name = spec.name.clone();
    let cname = container_name(&ctx.worker_name, &name);
    if spec.image.is_empty() {
        let why = "cannot run: the catalog gives no image; this worker runs containers".to_string();
        shared.report(&name, ServiceState::Failed, why);
        stop.cancelled().await;
        return;
    }
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    let mut engine = None;
    loop {
        let started = async {
            let e = shared.engine().await?;
            engine = Some(e.clone());
            ensure_running(&e, &spec, &cname, ctx).await.map(|r| (e, r))
        };
        let started = tokio::select! {
            r = started => r,
            _ = stop.cancelled() => break,
        };
        let (e, (id, adopted)) = match started {
            Ok(ok) => ok,
            Err(why) => {
                let delay = backoff.next_delay();
                warn!(worker = %ctx.worker_name, service = %name, error = %why, retry_in = ?delay, "cannot run the container");
                shared.report(&name, ServiceState::Failed, why);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => continue,
                    _ = stop.cancelled() => break,
                }
            }
        };
        if let Some(url) = service_url(&e, &cname, &id, spec.port).await {
            ctx.local.set_runtime(&name, Some(url));
        }
        if adopted {
            info!(worker = %ctx.worker_name, service = %name, container = %cname, "adopted the running container of an earlier run");
        } else {
            info!(worker = %ctx.worker_name, service = %name, container = %cname, image = %spec.image, "container started");
            shared.report(&name, ServiceState::Loading, "container started".into());
        }
        // A new container's output from its start; an adopted one's from now.
        let since = if adopted { unix_now() } else { 0 };
        let logs = tokio::spawn(follow_logs(
            e.docker.clone(),
            id.clone(),
            since,
            ctx.worker_name.clone(),
            name.clone(),
        ));
        let since = tokio::time::Instant::now();
        let mut waiting = e.docker.wait_container(
            &id,
            Some(WaitContainerOptionsBuilder::new().condition("not-running").build()),
        );
        tokio::select! {
            r = waiting.next() => {
                logs.abort();
                let status = match r {
                    Some(Ok(w)) => format!("status {}", w.status_code),
                    Some(Err(bollard::errors::Error::DockerContainerWaitError { code, error })) if error.is_empty() => format!("status {code}"),
                    Some(Err(e)) => chain(&e),
                    None => "the engine stopped answering".into(),
                };
                if since.elapsed() > Duration::from_secs(30) {
                    backoff.reset();
                }
                let delay = backoff.next_delay();
                warn!(worker = %ctx.worker_name, service = %name, container = %cname, %status, retry_in = ?delay, "container exited; starting it again");
                shared.report(&name, ServiceState::Failed, format!(
                    "container exited ({status}); starting it again in {}", crate::duration::format_short(delay)));
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.cancelled() => break,
                }
            }
            _ = stop.cancelled() => {
                logs.abort();
                break;
            }
        }
    }
    ctx.local.set_runtime(&name, None);
    if let Some(e) = engine {
        match remove(&e.docker, &cname, ctx).await {
            Ok(true) => {
                info!(worker = %ctx.worker_name, service = %name, container = %cname, "container stopped and removed")
            }
            Ok(false) => {}
            Err(why) => {
                warn!(worker = %ctx.worker_name, service = %name, container = %cname, error = %why, "cannot remove the container")
            }
        }
    }
}

/// Makes the service's container run: adopts a running one of this owner
/// with the same spec, else (re)creates it. Returns its id and whether it
/// was adopted.
async fn ensure_running(
    e: &Engine,
    spec: &RunSpec,
    cname: &str,
    ctx: &DockerContext,
) -> Result<(String, bool), String> {
    let digest = spec_digest(spec, ctx, &e.placement);
    match e.docker.inspect_container(cname, None).await {
        Ok(c) => {
            let labels = c.config.as_ref().and_then(|c| c.labels.clone()).unwrap_or_default();
            if labels.get(OWNER_LABEL) != Some(&ctx.owner) {
                return Err(format!(
                    "a container named {cname} exists and is not this worker's; remove or rename it"
                ));
            }
            let running = c.state.as_ref().and_then(|s| s.running).unwrap_or(false);
            if running && labels.get(SPEC_LABEL) == Some(&digest) {
                return Ok((c.id.unwrap_or_else(|| cname.to_string()), true));
            }
            remove(&e.docker, cname, ctx).await?;
        }
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {}
        Err(err) => return Err(format!("docker: {}", chain(&err))),
    }
    let body = create_body(spec, ctx, &e.placement, &digest);
    let opts = CreateContainerOptionsBuilder::new().name(cname).build();
    let created = match e.docker.create_container(Some(opts.clone()), body.clone()).await {
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {
            pull(&e.docker, &spec.image).await?;
            e.docker.create_container(Some(opts), body).await
        }
        other => other,
    }
    .map_err(|err| format!("docker: cannot create {cname} from {}: {}", spec.image, chain(&err)))?;
    if let Err(err) = e.docker.start_container(&created.id, None).await {
        let _ = remove(&e.docker, &created.id, ctx).await;
        return Err(format!("docker: cannot start {cname}: {}", chain(&err)));
    }
    Ok((created.id, false))
}

/// Pulls a missing image; the error says the image is missing, and why the pull failed.
async fn pull(docker: &Docker, image: &str) -> Result<(), String> {
    let (repo, tag) = split_image(image);
    let opts = CreateImageOptionsBuilder::new().from_image(repo).tag(tag).build();
    let mut progress = docker.create_image(Some(opts), None, None);
    while let Some(step) = progress.next().await {
        if let Err(e) = step {
            return Err(format!(
                "image {image} is not on this machine and cannot be pulled: {e}"
            ));
        }
    }
    Ok(())
}

/// The URL the worker uses for a service on a network: the container's
/// name (or, on the default bridge, its address). `None` on the host: the
/// assignment's `127.0.0.1:{port}` is right there.
async fn service_url(e: &Engine, cname: &str, id: &str, port: u16) -> Option<String> {
    match &e.placement {
        Placement::Host => None,
        Placement::Network(n) if n == "bridge" => {
            let info = e.docker.inspect_container(id, None).await.ok()?;
            let ip = info.network_settings?.networks?.get("bridge")?.ip_address.clone()?;
            Some(format!("http://{ip}:{port}"))
        }
        Placement::Network(_) => Some(format!("http://{cname}:{port}")),
    }
}

/// Stops (with the grace) and removes a container. `Ok(false)`: there was none.
async fn remove(docker: &Docker, container: &str, ctx: &DockerContext) -> Result<bool, String> {
    let t = ctx.stop_grace.as_secs_f64().ceil().max(1.0) as i32;
    match docker
        .stop_container(container, Some(StopContainerOptionsBuilder::new().t(t).build()))
        .await
    {
        Ok(()) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 304, .. }) => {}
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => return Ok(false),
        Err(e) => {
            warn!(worker = %ctx.worker_name, %container, error = %chain(&e), "docker stop failed; removing by force")
        }
    }
    match docker
        .remove_container(
            container,
            Some(RemoveContainerOptionsBuilder::new().force(true).v(true).build()),
        )
        .await
    {
        Ok(()) => Ok(true),
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(false),
        Err(e) => Err(format!("docker: cannot remove {container}: {}", chain(&e))),
    }
}

#[cfg(test)]
mod tests {
    use super::logs::strip_ansi;
    use super::network::container_id_from_mounts;
    use super::spec::{container_name, split_image};

    #[test]
    fn own_container_from_mountinfo() {
        let id = "a".repeat(64);
        let other = "b".repeat(64);
        let inside = format!(
            "1 0 0:1 / / rw - overlay overlay rw\n\
             2 1 254:0 /var/lib/docker/containers/{other}/mounts/shm /dev/shm rw - ext4 /dev/vda rw\n\
             3 1 254:0 /var/lib/docker/containers/{id}/hostname /etc/hostname rw - ext4 /dev/vda rw\n"
        );
        assert_eq!(container_id_from_mounts(&inside), Some(id));
        // On the host, other containers' mounts are no sign of being in one.
        let host = format!("2 1 254:0 /var/lib/docker/containers/{other}/mounts/shm /var/lib/docker/containers/{other}/mounts/shm rw - ext4 /dev/vda rw\n");
        assert_eq!(container_id_from_mounts(&host), None);
    }

    #[test]
    fn names_and_images() {
        assert_eq!(
            container_name("gpu box/1", "notes-coa"),
            "edgeplane-gpu-box-1-notes-coa"
        );
        assert_eq!(split_image("edgeplane:local"), ("edgeplane", "local"));
        assert_eq!(split_image("reg:5000/team/img"), ("reg:5000/team/img", "latest"));
        assert_eq!(split_image("reg:5000/img:2"), ("reg:5000/img", "2"));
        assert_eq!(split_image("img@sha256:abc"), ("img", "sha256:abc"));
        assert_eq!(
            strip_ansi("\u{1b}[2mts\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m ready"),
            "ts  INFO ready"
        );
    }
}
