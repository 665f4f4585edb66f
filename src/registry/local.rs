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
}

impl Local {
    /// A freshly opened session.
    pub fn connected(link: Arc<SessionLink>, now_ms: u64) -> Self {
        Local {
            link: Some(link),
            last_heard_ms: now_ms,
            tunnel: None,
            status: WorkerState::Healthy,
        }
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
            None => WorkerState::Disconnected,
            Some(_) if draining => WorkerState::Draining,
            Some(l) if now_ms.saturating_sub(l.heard_ms()) > heartbeat_timeout_ms => WorkerState::Degraded,
            Some(_) => WorkerState::Healthy,
        }
    }
}
