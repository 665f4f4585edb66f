//! What a transition of the registry's state machine returns: the changes
//! it made, for [`super::Registry`] to carry out (log, tell sessions,
//! broadcast, publish routes). The state machine itself does no I/O, so a
//! test can read these instead of watching channels.

use super::session::{Notice, SessionLink};
use super::state::WorkerState;
use super::view::WorkerView;
use crate::proto::ServiceState;
use crate::routes::RouteTable;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Updated,
    Removed,
}

/// One change to one worker record, as every watcher of the fleet sees it.
#[derive(Debug, Clone)]
pub struct RegistryEvent {
    pub kind: ChangeKind,
    pub worker: WorkerView,
    pub reason: String,
}

/// Something an operator should read in the coordinator's log.
#[derive(Debug, Clone, PartialEq)]
pub enum Log {
    /// A Hello's token names no record: the coordinator restarted, or the
    /// token is stale.
    UnknownToken {
        worker: String,
    },
    SecondLiveSession {
        worker: String,
        worker_id: String,
    },
    Full {
        worker: String,
        max: usize,
    },
    SameName {
        worker: String,
        worker_id: String,
    },
    Registered {
        worker: String,
        worker_id: String,
        reused_previous_id: bool,
    },
    TooManyServices {
        worker: String,
        service: String,
    },
    /// A status report for a catalog service neither declared nor placed there.
    UnplacedService {
        worker: String,
        service: String,
    },
    ServiceState {
        worker: String,
        worker_id: String,
        service: String,
        state: ServiceState,
    },
    Status {
        worker: String,
        worker_id: String,
        from: WorkerState,
        to: WorkerState,
        reason: String,
    },
    Removed {
        worker: String,
        worker_id: String,
        reason: String,
    },
    Placement {
        worker: String,
        worker_id: String,
        added: Vec<String>,
        removed: Vec<String>,
    },
    Tunnel {
        worker: String,
        worker_id: String,
        open: bool,
    },
}

/// Everything one transition did, in the order it did it.
#[derive(Debug, Default)]
pub struct Changes {
    pub logs: Vec<Log>,
    /// Messages for open sessions (drain, close, a new assignment).
    pub notices: Vec<(Arc<SessionLink>, Notice)>,
    /// The new route table, when any replica changed.
    pub routes: Option<Arc<RouteTable>>,
    pub events: Vec<RegistryEvent>,
}

impl Changes {
    /// Nothing changed and nothing is to be said.
    pub fn is_empty(&self) -> bool {
        self.logs.is_empty() && self.notices.is_empty() && self.routes.is_none() && self.events.is_empty()
    }

    /// The notices, without their links (for tests and logs).
    pub fn notices(&self) -> Vec<&Notice> {
        self.notices.iter().map(|(_, n)| n).collect()
    }
}
