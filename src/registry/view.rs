//! Read-only snapshots of worker records, as the admin API, the HTTP JSON
//! views and `WatchWorkers` show them. Cloned out of the registry so that
//! readers never hold its lock.

use super::local::Local;
use super::record::FleetRecord;
use super::state::WorkerState;
use crate::proto;
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, PartialEq)]
pub struct ServiceView {
    pub name: String,
    pub state: proto::ServiceState,
    pub message: String,
    pub url: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WorkerView {
    pub worker_id: String,
    pub name: String,
    pub status: WorkerState,
    pub capabilities: proto::Capabilities,
    pub services: Vec<ServiceView>,
    pub advertise_address: String,
    pub version: String,
    pub last_heartbeat: SystemTime,
    pub registered_at: SystemTime,
    /// Time since the worker first registered (like `kubectl get` AGE).
    pub age: Duration,
    /// Time since anything was heard from the worker.
    pub silent_for: Duration,
    /// Streams this worker id has had (1 + resumptions).
    pub sessions: u64,
    /// The coordinator holding its session, in a cluster (empty alone, or
    /// while no coordinator holds it).
    pub coordinator: String,
}

impl WorkerView {
    /// The view of a record and its session at `now_ms`; `wall` is the
    /// wall-clock time of the registry clock's zero.
    pub(super) fn of(rec: &FleetRecord, local: &Local, me: Option<&str>, now_ms: u64, wall: SystemTime) -> Self {
        let coordinator = match (&local.link, &local.elsewhere) {
            (Some(_), _) => me.unwrap_or_default().to_string(),
            (None, Some(e)) => e.coordinator.clone().unwrap_or_default(),
            (None, None) => String::new(),
        };
        let heard = local.heard_ms();
        WorkerView {
            worker_id: rec.worker_id.clone(),
            name: rec.name.clone(),
            status: local.status,
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
            last_heartbeat: wall + Duration::from_millis(heard),
            registered_at: wall + Duration::from_millis(rec.registered_ms),
            age: Duration::from_millis(now_ms.saturating_sub(rec.registered_ms)),
            silent_for: Duration::from_millis(now_ms.saturating_sub(heard)),
            sessions: rec.sessions,
            coordinator,
        }
    }

    pub fn to_proto(&self) -> proto::Worker {
        proto::Worker {
            worker_id: self.worker_id.clone(),
            name: self.name.clone(),
            status: self.status.to_proto() as i32,
            capabilities: Some(self.capabilities.clone()),
            services: self
                .services
                .iter()
                .map(|s| proto::ServiceView {
                    name: s.name.clone(),
                    state: s.state as i32,
                    message: s.message.clone(),
                    url: s.url.clone(),
                })
                .collect(),
            advertise_address: self.advertise_address.clone(),
            last_heartbeat: Some(self.last_heartbeat.into()),
            registered_at: Some(self.registered_at.into()),
            age_seconds: self.age.as_secs_f64(),
            silent_seconds: self.silent_for.as_secs_f64(),
            sessions: self.sessions,
            version: self.version.clone(),
            coordinator: self.coordinator.clone(),
        }
    }
}
