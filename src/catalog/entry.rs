//! One catalog entry, as written in TOML and as validated.

use serde::Deserialize;
use std::time::Duration;

/// The kind of machine a service needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Requirement {
    Gpu,
    Cpu,
    Storage,
    Edge,
}

impl Requirement {
    pub fn as_str(self) -> &'static str {
        match self {
            Requirement::Gpu => "gpu",
            Requirement::Cpu => "cpu",
            Requirement::Storage => "storage",
            Requirement::Edge => "edge",
        }
    }
}

/// How a worker tells that a service is ready.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Readiness {
    /// GET this path; any 2xx is ready.
    Http(String),
    /// grpc.health.v1 Check for this service name ("" = the whole server).
    Grpc(String),
    /// A TCP connect succeeds. Only `tcp = true` is accepted: `false`
    /// would read as "no check", which is not what a TCP check does, so it
    /// is refused at load rather than quietly treated as `true`.
    Tcp(bool),
}

/// Why an entry was refused, and where: `at` is the byte offset of the
/// offending value when it is known more precisely than the entry.
#[derive(Debug)]
pub(super) struct Invalid {
    pub at: Option<usize>,
    pub reason: String,
}

impl From<String> for Invalid {
    fn from(reason: String) -> Self {
        Invalid { at: None, reason }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEntry {
    name: String,
    #[serde(default)]
    aliases: Vec<String>,
    #[serde(default = "default_requires")]
    requires: Requirement,
    #[serde(default = "default_priority")]
    priority: u32,
    port: u16,
    image: Option<String>,
    command: Option<Vec<String>>,
    #[serde(default)]
    env: std::collections::BTreeMap<String, String>,
    readiness: Option<toml::Spanned<Readiness>>,
    #[serde(default)]
    grpc_services: Vec<String>,
    #[serde(default = "one")]
    min_replicas: u32,
    #[serde(default = "one")]
    max_replicas: u32,
    gpu_memory: Option<String>,
    memory: Option<String>,
    cpu: Option<f64>,
    timeout: Option<String>,
}

fn default_requires() -> Requirement {
    Requirement::Cpu
}
fn default_priority() -> u32 {
    5
}
fn one() -> u32 {
    1
}

/// A validated catalog entry.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogEntry {
    pub name: String,
    /// Short names users may type (`notes` for `notes-coa`).
    pub aliases: Vec<String>,
    pub requires: Requirement,
    /// 1 is most important; placed first when gaps are equal.
    pub priority: u32,
    /// The port the service listens on, on its worker.
    pub port: u16,
    pub image: Option<String>,
    /// Argv; `{port}` is replaced by the port.
    pub command: Option<Vec<String>>,
    pub env: std::collections::BTreeMap<String, String>,
    pub readiness: Readiness,
    /// Fully qualified gRPC services this service serves, for routing gRPC by name.
    pub grpc_services: Vec<String>,
    pub min_replicas: u32,
    pub max_replicas: u32,
    pub gpu_memory_bytes: u64,
    pub memory_bytes: u64,
    /// CPU cores reserved.
    pub cpu: f64,
    /// Per-request timeout through the proxy; None means the proxy default.
    pub timeout: Option<Duration>,
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl RawEntry {
    pub(super) fn validate(self) -> Result<CatalogEntry, Invalid> {
        let at = self.readiness.as_ref().map(|r| r.span().start);
        let refuse = |reason: String| Invalid { at, reason };
        match self.readiness.as_ref().map(|r| r.get_ref()) {
            Some(Readiness::Http(p)) if !p.starts_with('/') => {
                return Err(refuse(format!(
                    "`{}`: readiness http path must start with /",
                    self.name
                )));
            }
            Some(Readiness::Tcp(false)) => {
                return Err(refuse(format!(
                    "`{}`: readiness `tcp = false` is not a check; write `tcp = true`, or leave readiness out (TCP is the default)",
                    self.name
                )));
            }
            _ => {}
        }
        Ok(self.validate_fields()?)
    }

    /// Everything but the readiness check, refused at the entry's line.
    fn validate_fields(self) -> Result<CatalogEntry, String> {
        for n in std::iter::once(&self.name).chain(&self.aliases) {
            if !valid_name(n) {
                return Err(format!("`{n}`: names and aliases are 1-63 of a-z, 0-9 and -"));
            }
        }
        if self.port == 0 {
            return Err(format!("`{}`: port must be 1-65535", self.name));
        }
        if self.min_replicas > self.max_replicas {
            return Err(format!(
                "`{}`: min_replicas ({}) exceeds max_replicas ({})",
                self.name, self.min_replicas, self.max_replicas
            ));
        }
        if self.command.as_ref().is_some_and(|c| c.is_empty()) {
            return Err(format!("`{}`: command must not be empty", self.name));
        }
        let size = |what: &str, v: &Option<String>| -> Result<u64, String> {
            v.as_deref()
                .map(crate::parse::parse_bytes)
                .transpose()
                .map(|b| b.unwrap_or(0))
                .map_err(|e| format!("`{}`: {what}: {e}", self.name))
        };
        let gpu_memory_bytes = size("gpu_memory", &self.gpu_memory)?;
        let memory_bytes = size("memory", &self.memory)?;
        let cpu = self.cpu.unwrap_or(0.0);
        if !cpu.is_finite() || cpu < 0.0 {
            return Err(format!("`{}`: cpu must be a non-negative number of cores", self.name));
        }
        let timeout = self
            .timeout
            .as_deref()
            .map(crate::duration::parse_duration)
            .transpose()
            .map_err(|e| format!("`{}`: timeout: {e}", self.name))?;
        Ok(CatalogEntry {
            readiness: self.readiness.map_or(Readiness::Tcp(true), toml::Spanned::into_inner),
            name: self.name,
            aliases: self.aliases,
            requires: self.requires,
            priority: self.priority,
            port: self.port,
            image: self.image,
            command: self.command,
            env: self.env,
            grpc_services: self.grpc_services,
            min_replicas: self.min_replicas,
            max_replicas: self.max_replicas,
            gpu_memory_bytes,
            memory_bytes,
            cpu,
            timeout,
        })
    }
}
