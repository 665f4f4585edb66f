//! Worker and service states as operators see them.

use serde::Serialize;

/// The health of one worker (README, "Worker states"): liveness from the
/// stream, apart from each service's readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    /// Stream open, heard from within the heartbeat timeout.
    Healthy,
    /// Stream open, silent past the heartbeat timeout.
    Degraded,
    /// Stream closed; the record waits for the worker to resume.
    Disconnected,
    /// Drained by an operator; connected but takes no new work.
    Draining,
}

impl WorkerState {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Healthy => "healthy",
            WorkerState::Degraded => "degraded",
            WorkerState::Disconnected => "disconnected",
            WorkerState::Draining => "draining",
        }
    }

    pub fn to_proto(self) -> crate::proto::WorkerStatus {
        use crate::proto::WorkerStatus as P;
        match self {
            WorkerState::Healthy => P::Healthy,
            WorkerState::Degraded => P::Degraded,
            WorkerState::Disconnected => P::Disconnected,
            WorkerState::Draining => P::Draining,
        }
    }

    pub fn from_proto(p: crate::proto::WorkerStatus) -> Option<Self> {
        use crate::proto::WorkerStatus as P;
        match p {
            P::Healthy => Some(WorkerState::Healthy),
            P::Degraded => Some(WorkerState::Degraded),
            P::Disconnected => Some(WorkerState::Disconnected),
            P::Draining => Some(WorkerState::Draining),
            P::Unspecified | P::Removed => None,
        }
    }

    /// Parses the lowercase name an operator types (`--status healthy`).
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Healthy, Self::Degraded, Self::Disconnected, Self::Draining]
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
    }
}

impl std::fmt::Display for WorkerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Lowercase name of a service state (`loading`, `ready`, ...).
pub fn service_state_str(s: crate::proto::ServiceState) -> &'static str {
    use crate::proto::ServiceState as S;
    match s {
        S::Unspecified => "pending",
        S::Loading => "loading",
        S::Ready => "ready",
        S::Failed => "failed",
        S::Stopped => "stopped",
    }
}
