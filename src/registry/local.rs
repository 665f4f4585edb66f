//! What only the coordinator holding a worker's stream knows about it (the
//! other half of the store boundary described in [`super::fleet`]): the
//! session link, the heartbeat clock, the status derived from it, and the
//! tunnel sender. Never written to a fleet store: liveness stays local.

use super::session::SessionLink;
use super::state::WorkerState;
use crate::routes::TunnelSender;
use std::sync::Arc;

#[derive(Debug)]
pub struct Local {
    /// The open stream: its outbox and its heartbeat clock. `None` once the
    /// stream closed (the record waits for the worker to resume).
    pub link: Option<Arc<SessionLink>>,
    /// Last heard, as of the moment the link was dropped.
    pub last_heard_ms: u64,
    /// The worker's tunnel, with the session generation it belongs to.
    pub tunnel: Option<(u64, TunnelSender)>,
    /// Last published status, to log and emit each transition once.
    pub status: WorkerState,
    /// Set when the session is not held here but by another coordinator of
    /// the cluster (or by none), as the fleet store says.
    pub elsewhere: Option<Elsewhere>,
}

/// A worker whose session this coordinator does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elsewhere {
    /// The coordinator holding it, if any does.
    pub coordinator: Option<String>,
    /// Its generation there, and the status that coordinator reports.
    pub generation: u64,
    pub status: WorkerState,
    /// When this coordinator learnt that no coordinator holds it (for the
    /// failover grace: its holder may have died, and it may be moving).
    pub unheld_since_ms: Option<u64>,
}

impl Elsewhere {
    /// Held by no coordinator (as learnt at `now_ms`): waiting to resume
    /// somewhere.
    pub fn nobody(now_ms: u64) -> Self {
        Elsewhere {
            coordinator: None,
            generation: 0,
            status: WorkerState::Disconnected,
            unheld_since_ms: Some(now_ms),
        }
    }
}

impl Local {
    /// A freshly opened session.
    pub fn connected(link: Arc<SessionLink>, now_ms: u64) -> Self {
        Local {
            link: Some(link),
            last_heard_ms: now_ms,
            tunnel: None,
            status: WorkerState::Healthy,
            elsewhere: None,
        }
    }

    /// A worker learnt of from the fleet store, held elsewhere (or nowhere).
    pub fn elsewhere(e: Elsewhere) -> Self {
        Local {
            link: None,
            last_heard_ms: 0,
            tunnel: None,
            status: e.status,
            elsewhere: Some(e),
        }
    }

    /// Whether another coordinator holds a live session of the worker.
    pub fn held_elsewhere(&self) -> bool {
        self.elsewhere.as_ref().is_some_and(|e| e.coordinator.is_some())
    }

    pub fn heard_ms(&self) -> u64 {
        self.link.as_ref().map_or(self.last_heard_ms, |l| l.heard_ms())
    }

    pub fn is_connected(&self) -> bool {
        self.link.is_some()
    }

    /// The status the clock says now. `draining` is fleet state.
    pub fn derive_status(&self, draining: bool, now_ms: u64, heartbeat_timeout_ms: u64) -> WorkerState {
        match &self.link {
            None => self.elsewhere.as_ref().map_or(WorkerState::Disconnected, |e| e.status),
            Some(_) if draining => WorkerState::Draining,
            Some(l) if now_ms.saturating_sub(l.heard_ms()) > heartbeat_timeout_ms => WorkerState::Degraded,
            Some(_) => WorkerState::Healthy,
        }
    }
}
