//! Runtimes: how a worker runs the services placed on it.
//!
//! - `process`: the catalog entry's `command`, supervised ([`process`]).
//! - `docker`: a container from the catalog entry's `image`, through the
//!   Docker Engine API ([`docker`]).
//! - `none`: the worker only serves what it declares; it advertises no
//!   runtime, so the coordinator never places anything on it.
//!
//! Readiness stays the probes' business: a runtime reports only what it
//! alone knows (could not start, exited with a status, stopped).

pub mod docker;
pub mod process;
mod supervised;

use std::collections::BTreeMap;
use std::path::PathBuf;

/// One service to run, from the assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSpec {
    pub name: String,
    pub port: u16,
    pub command: Vec<String>,
    pub image: String,
    pub env: BTreeMap<String, String>,
}

impl RunSpec {
    pub fn from_assigned(s: &crate::proto::AssignedService) -> Self {
        RunSpec {
            name: s.name.clone(),
            port: s.port as u16,
            command: s.command.clone(),
            image: s.image.clone(),
            env: s.env.clone().into_iter().collect(),
        }
    }
}

/// Which runtime a worker uses, once `--runtime auto` is resolved. A closed
/// set: a name the worker does not know is refused when the flag is parsed,
/// never turned into "no runtime" here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeKind {
    None,
    Process,
    Docker,
}

impl RuntimeKind {
    /// The name advertised in Hello (`None`: takes no placements).
    pub fn advertised(self) -> Option<&'static str> {
        match self {
            RuntimeKind::None => None,
            RuntimeKind::Process => Some("process"),
            RuntimeKind::Docker => Some("docker"),
        }
    }

    pub fn as_str(self) -> &'static str {
        self.advertised().unwrap_or("none")
    }
}

impl std::fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

pub enum Runtime {
    None,
    Process(process::ProcessRuntime),
    Docker(docker::DockerRuntime),
}

impl Runtime {
    /// The process runtime.
    pub fn process(ctx: process::ProcessContext) -> Self {
        Runtime::Process(process::ProcessRuntime::new(ctx))
    }

    /// The docker runtime (it reaches the engine on first use).
    pub fn docker(ctx: docker::DockerContext) -> Self {
        Runtime::Docker(docker::DockerRuntime::new(ctx))
    }

    pub fn kind(&self) -> RuntimeKind {
        match self {
            Runtime::None => RuntimeKind::None,
            Runtime::Process(_) => RuntimeKind::Process,
            Runtime::Docker(_) => RuntimeKind::Docker,
        }
    }

    /// Makes what runs match `wanted`: starts the new, stops the gone,
    /// restarts the changed, leaves the rest alone.
    pub async fn reconcile(&self, wanted: Vec<RunSpec>) {
        match self {
            Runtime::None => {}
            Runtime::Process(p) => p.reconcile(wanted).await,
            Runtime::Docker(d) => d.reconcile(wanted).await,
        }
    }

    /// Stops everything (worker shutdown).
    pub async fn shutdown(&self) {
        match self {
            Runtime::None => {}
            Runtime::Process(p) => p.reconcile(Vec::new()).await,
            Runtime::Docker(d) => d.reconcile(Vec::new()).await,
        }
    }
}

/// The binary to run when a command names `edgeplane` (the worker's own
/// executable, unless `EDGEPLANE_BIN` says otherwise).
pub fn self_exe(configured: Option<PathBuf>) -> PathBuf {
    configured
        .or_else(|| std::env::current_exe().ok())
        .unwrap_or_else(|| PathBuf::from("edgeplane"))
}
