//! Fleet state in etcd: the [`FleetStore`] a clustered coordinator's
//! registry runs on.
//!
//! Reads are answered from memory (a [`MemoryFleet`] mirror), so the
//! registry's state machine stays synchronous and a read never waits on
//! etcd. Each change is applied to the mirror at once and queued for etcd;
//! a writer task sends the queue, one put or delete per worker, keeping
//! only the newest change of each worker when several are waiting (a
//! record is written whole, so the newest one says everything).
//!
//! Records change only on transitions (Hello, service state, drain,
//! placement, disconnect), never on keepalives: a steady fleet writes
//! nothing. While etcd cannot be reached the queue waits, bounded by the
//! number of workers (one entry each), and is sent when it returns.

use super::keys::Keys;
use super::record_codec::{encode, Times};
use crate::registry::{FleetChange, FleetRecord, FleetStore, MemoryFleet};
use etcd_client::Client;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Changes waiting for etcd: per worker, its newest record (or `None`: delete).
#[derive(Default)]
struct Queue {
    pending: Mutex<HashMap<String, Option<Vec<u8>>>>,
    wake: Notify,
    /// Puts and deletes etcd has acknowledged.
    written: AtomicU64,
}

/// The registry's side: the mirror, and the queue it feeds.
pub struct EtcdFleet {
    mirror: MemoryFleet,
    times: Times,
    queue: Arc<Queue>,
}

/// The task's side: sends the queue to etcd.
#[derive(Clone)]
pub struct Writer {
    keys: Keys,
    queue: Arc<Queue>,
}

impl EtcdFleet {
    /// A store writing under `keys`; `times` turns the registry's clock
    /// into Unix time for the records.
    pub fn new(keys: Keys, times: Times) -> (EtcdFleet, Writer) {
        let queue = Arc::new(Queue::default());
        let store = EtcdFleet {
            mirror: MemoryFleet::default(),
            times,
            queue: queue.clone(),
        };
        (store, Writer { keys, queue })
    }
}

impl FleetStore for EtcdFleet {
    fn apply(&mut self, change: FleetChange) {
        let (id, value) = match &change {
            FleetChange::Put(rec) => (rec.worker_id.clone(), Some(encode(rec, self.times))),
            FleetChange::Remove(id) => (id.clone(), None),
        };
        self.mirror.apply(change);
        self.queue
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, value);
        self.queue.wake.notify_one();
    }

    fn get(&self, worker_id: &str) -> Option<&FleetRecord> {
        self.mirror.get(worker_id)
    }

    fn by_token(&self, digest: &[u8; 32]) -> Option<&FleetRecord> {
        self.mirror.by_token(digest)
    }

    fn by_instance(&self, instance_id: &str) -> Option<&FleetRecord> {
        self.mirror.by_instance(instance_id)
    }

    fn records(&self) -> Box<dyn Iterator<Item = &FleetRecord> + '_> {
        self.mirror.records()
    }

    fn len(&self) -> usize {
        self.mirror.len()
    }
}

impl Writer {
    /// Puts and deletes etcd has acknowledged so far.
    pub fn written(&self) -> u64 {
        self.queue.written.load(Ordering::Relaxed)
    }

    /// Changes not yet written.
    pub fn pending(&self) -> usize {
        self.queue.pending.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Sends the queue to etcd until `shutdown`, then once more (bounded by
    /// `flush`) so that a graceful stop leaves nothing unwritten.
    pub async fn run(self, client: Client, shutdown: CancellationToken, flush: Duration) {
        let mut backoff = Duration::from_millis(100);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.queue.wake.notified() => {}
            }
            loop {
                match self.send_all(&client).await {
                    Ok(()) => {
                        backoff = Duration::from_millis(100);
                        break;
                    }
                    Err(e) => {
                        warn!(error = %e, pending = self.pending(), "fleet records not written to etcd yet; retrying");
                        tokio::select! {
                            () = shutdown.cancelled() => break,
                            () = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                }
            }
        }
        let _ = tokio::time::timeout(flush, self.send_all(&client)).await;
    }

    /// Writes every waiting change; a change that fails goes back on the
    /// queue unless a newer one for the same worker arrived meanwhile.
    async fn send_all(&self, client: &Client) -> Result<(), etcd_client::Error> {
        loop {
            let batch: Vec<(String, Option<Vec<u8>>)> = {
                let mut p = self.queue.pending.lock().unwrap_or_else(|e| e.into_inner());
                if p.is_empty() {
                    return Ok(());
                }
                p.drain().collect()
            };
            let mut batch = batch.into_iter();
            while let Some((id, value)) = batch.next() {
                let key = self.keys.worker(&id);
                let res = match &value {
                    Some(v) => client.clone().put(key, v.clone(), None).await.map(|_| ()),
                    None => client.clone().delete(key, None).await.map(|_| ()),
                };
                if let Err(e) = res {
                    let mut p = self.queue.pending.lock().unwrap_or_else(|e| e.into_inner());
                    for (id, value) in std::iter::once((id, value)).chain(batch) {
                        p.entry(id).or_insert(value);
                    }
                    return Err(e);
                }
                self.queue.written.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
