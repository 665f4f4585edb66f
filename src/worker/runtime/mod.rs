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

pub enum Runtime {
    None,
    Process(process::ProcessRuntime),
    Docker(docker::DockerRuntime),
}

impl Runtime {
    /// Builds the runtime the worker was told to use.
    pub fn new(kind: &str, ctx: process::ProcessContext) -> Self {
        match kind {
            "process" => Runtime::Process(process::ProcessRuntime::new(ctx)),
            _ => Runtime::None,
        }
    }

    /// The docker runtime (it reaches the engine on first use).
    pub fn docker(ctx: docker::DockerContext) -> Self {
        Runtime::Docker(docker::DockerRuntime::new(ctx))
    }

    /// The name advertised in Hello (`None`: takes no placements).
    pub fn kind(&self) -> Option<&'static str> {
        match self {
            Runtime::None => None,
            Runtime::Process(_) => Some("process"),
            Runtime::Docker(_) => Some("docker"),
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
