//! The fleet as `edgeplane.v1.Admin/WatchWorkers` reports it: the bench's
//! only source for "the coordinator noticed". Detection times are measured
//! to the moment a report arrives here, the way an operator's dashboard or
//! a router fed by the same stream would see it.
//!
//! Counts are kept incrementally so that waiting on a 20,000-worker fleet
//! costs O(1) per event, and every non-healthy report is logged with its
//! arrival time for the detection and false-positive figures.

use crate::proto::{admin_client::AdminClient, EventKind, WatchWorkersRequest, WorkerStatus};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::ClientTlsConfig;

/// A report that a worker is not healthy (or gone).
#[derive(Debug, Clone)]
pub struct Observation {
    pub at: Instant,
    pub worker_id: String,
    pub status: WorkerStatus,
}

#[derive(Default)]
pub struct WatchState {
    /// Worker id -> status, as of the latest event.
    pub fleet: HashMap<String, WorkerStatus>,
    pub healthy: usize,
    /// The current stream has delivered its snapshot.
    pub synced: bool,
    /// A snapshot being received (a new stream, or a resync after lagging).
    staging: Option<HashMap<String, WorkerStatus>>,
    /// Every non-healthy report, in arrival order.
    pub log: Vec<Observation>,
    pub events: u64,
    /// Snapshots received; more than one means the watcher fell behind or reconnected.
    pub snapshots: u64,
}

impl WatchState {
    fn set(&mut self, id: String, status: WorkerStatus) {
        if status == WorkerStatus::Healthy {
            self.healthy += 1;
        }
        if let Some(old) = self.fleet.insert(id, status) {
            if old == WorkerStatus::Healthy {
                self.healthy -= 1;
            }
        }
    }

    fn remove(&mut self, id: &str) {
        if self.fleet.remove(id) == Some(WorkerStatus::Healthy) {
            self.healthy -= 1;
        }
    }

    fn apply(&mut self, kind: EventKind, id: String, status: WorkerStatus, at: Instant) {
        self.events += 1;
        if status != WorkerStatus::Healthy {
            self.log.push(Observation {
                at,
                worker_id: id.clone(),
                status,
            });
        }
        match kind {
            EventKind::Existing => {
                if self.synced {
                    // Lagged: a fresh snapshot follows.
                    self.synced = false;
                    self.staging = Some(HashMap::new());
                }
                self.staging.get_or_insert_with(HashMap::new).insert(id, status);
            }
            EventKind::Removed => self.remove(&id),
            _ => self.set(id, status),
        }
    }

    fn synced_now(&mut self) {
        if let Some(snapshot) = self.staging.take() {
            self.healthy = snapshot.values().filter(|s| **s == WorkerStatus::Healthy).count();
            self.fleet = snapshot;
        } else {
            self.fleet.clear();
            self.healthy = 0;
        }
        self.snapshots += 1;
        self.synced = true;
    }
}

pub struct FleetWatch {
    state: Arc<Mutex<WatchState>>,
    version: watch::Receiver<u64>,
    task: JoinHandle<()>,
}

impl FleetWatch {
    /// Watches `url` until `stop`, reconnecting whenever the stream ends
    /// (a coordinator restart).
    pub fn start(url: String, stop: CancellationToken) -> Self {
        Self::start_with(url, None, stop)
    }

    /// [`FleetWatch::start`], over `tls` for an `https://` URL.
    pub fn start_with(url: String, tls: Option<ClientTlsConfig>, stop: CancellationToken) -> Self {
        let state = Arc::new(Mutex::new(WatchState::default()));
        let (tx, version) = watch::channel(0u64);
        let task = tokio::spawn(follow(url, tls, state.clone(), tx, stop));
        FleetWatch { state, version, task }
    }

    pub fn with<R>(&self, f: impl FnOnce(&WatchState) -> R) -> R {
        f(&self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Waits until `pred` holds (checked after every batch of events), at
    /// most `limit`. Returns whether it held.
    pub async fn wait(&self, limit: Duration, mut pred: impl FnMut(&WatchState) -> bool) -> bool {
        let mut v = self.version.clone();
        let check = tokio::time::timeout(limit, async {
            loop {
                if self.with(&mut pred) {
                    return true;
                }
                if v.changed().await.is_err() {
                    return self.with(&mut pred);
                }
            }
        });
        check.await.unwrap_or(false)
    }
}

impl Drop for FleetWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn follow(
    url: String,
    tls: Option<ClientTlsConfig>,
    state: Arc<Mutex<WatchState>>,
    version: watch::Sender<u64>,
    stop: CancellationToken,
) {
    let lock = || state.lock().unwrap_or_else(|e| e.into_inner());
    while !stop.is_cancelled() {
        let stream = async {
            let ch = super::reach::endpoint(&url, tls.as_ref())?
                .connect_timeout(Duration::from_secs(2))
                .connect()
                .await
                .map_err(|e| e.to_string())?;
            let mut admin = AdminClient::new(ch).max_decoding_message_size(64 << 20);
            admin
                .watch_workers(WatchWorkersRequest {})
                .await
                .map(|r| r.into_inner())
                .map_err(|e| e.to_string())
        };
        let mut stream = tokio::select! {
            s = stream => match s {
                Ok(s) => s,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        {
            let mut st = lock();
            st.synced = false;
            st.staging = Some(HashMap::new());
        }
        loop {
            let msg = tokio::select! {
                m = stream.message() => m,
                _ = stop.cancelled() => return,
            };
            let Ok(Some(e)) = msg else { break };
            let at = Instant::now();
            {
                let mut st = lock();
                let kind = EventKind::try_from(e.kind).unwrap_or(EventKind::Unspecified);
                if kind == EventKind::Synced {
                    st.synced_now();
                } else if let Some(w) = e.worker {
                    let status = WorkerStatus::try_from(w.status).unwrap_or(WorkerStatus::Unspecified);
                    st.apply(kind, w.worker_id, status, at);
                }
            }
            version.send_modify(|v| *v += 1);
        }
        {
            let mut st = lock();
            st.synced = false;
        }
        version.send_modify(|v| *v += 1);
    }
}
