//! The JSON shape of a worker, shared by `GET /api/admin/workers` and
//! `edgeplane workers --json`, so scripts see one format. Field names follow
//! the older fleet's API (`assigned_containers`, `last_heartbeat`,
//! `age_seconds`) so existing `jq` lines keep working.

use crate::proto;
use crate::registry::{service_state_str, WorkerState};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::SystemTime;

#[derive(Debug, Serialize)]
pub struct JsonWorker {
    pub worker_id: String,
    pub name: String,
    /// `healthy`, `degraded`, `disconnected`, `draining`.
    pub status: String,
    /// Names of the services this worker runs.
    pub assigned_containers: Vec<String>,
    pub services: Vec<JsonService>,
    /// RFC 3339, UTC.
    pub last_heartbeat: String,
    pub registered_at: String,
    /// Seconds since the worker first registered.
    pub age_seconds: f64,
    /// Seconds since anything was heard from the worker.
    pub silent_seconds: f64,
    pub sessions: u64,
    pub version: String,
    pub advertise_address: String,
    pub capabilities: JsonCapabilities,
    /// In a cluster: the coordinator holding the worker's session.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub coordinator: String,
}

#[derive(Debug, Serialize)]
pub struct JsonService {
    pub name: String,
    pub state: &'static str,
    pub message: String,
    pub url: String,
}

#[derive(Debug, Serialize)]
pub struct JsonCapabilities {
    pub cpu_cores: u32,
    pub memory_bytes: u64,
    pub gpus: Vec<JsonGpu>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
pub struct JsonGpu {
    pub model: String,
    pub memory_bytes: u64,
}

fn rfc3339(ts: Option<prost_types::Timestamp>) -> String {
    ts.and_then(|t| SystemTime::try_from(t).ok())
        .map(|t| humantime::format_rfc3339_millis(t).to_string())
        .unwrap_or_default()
}

/// Lowercase state name of a wire status (`removed` only appears in watches).
pub fn status_str(raw: i32) -> &'static str {
    match proto::WorkerStatus::try_from(raw) {
        Ok(proto::WorkerStatus::Removed) => "removed",
        Ok(p) => WorkerState::from_proto(p).map_or("unknown", WorkerState::as_str),
        Err(_) => "unknown",
    }
}

impl From<&proto::Worker> for JsonWorker {
    fn from(w: &proto::Worker) -> Self {
        let caps = w.capabilities.clone().unwrap_or_default();
        let round = |x: f64| (x * 1000.0).round() / 1000.0;
        JsonWorker {
            worker_id: w.worker_id.clone(),
            name: w.name.clone(),
            status: status_str(w.status).to_string(),
            assigned_containers: w.services.iter().map(|s| s.name.clone()).collect(),
            services: w
                .services
                .iter()
                .map(|s| JsonService {
                    name: s.name.clone(),
                    state: service_state_str(
                        proto::ServiceState::try_from(s.state).unwrap_or(proto::ServiceState::Unspecified),
                    ),
                    message: s.message.clone(),
                    url: s.url.clone(),
                })
                .collect(),
            last_heartbeat: rfc3339(w.last_heartbeat),
            registered_at: rfc3339(w.registered_at),
            age_seconds: round(w.age_seconds),
            silent_seconds: round(w.silent_seconds),
            sessions: w.sessions,
            version: w.version.clone(),
            advertise_address: w.advertise_address.clone(),
            coordinator: w.coordinator.clone(),
            capabilities: JsonCapabilities {
                cpu_cores: caps.cpu_cores,
                memory_bytes: caps.memory_bytes,
                gpus: caps
                    .gpus
                    .iter()
                    .map(|g| JsonGpu {
                        model: g.model.clone(),
                        memory_bytes: g.memory_bytes,
                    })
                    .collect(),
                labels: caps.labels.into_iter().collect(),
            },
        }
    }
}
