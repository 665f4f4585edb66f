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
//!
//! Session keys (`sessions/{id}`: who holds the worker, and its status) go
//! the same way, on this coordinator's lease, so that they vanish with it;
//! a session given up is deleted only if it is still on that lease (another
//! coordinator may have taken it since). When the lease is replaced after
//! an outage, every session held here is written again.

use super::keys::Keys;
use super::member::Member;
use super::record_codec::{encode, encode_session, Times};
use crate::registry::{FleetChange, FleetRecord, FleetStore, Held, MemoryFleet};
use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Changes waiting for etcd: per worker, its newest record (or `None`:
/// delete), and its newest session key.
#[derive(Default)]
struct Queue {
    pending: Mutex<HashMap<String, Option<Vec<u8>>>>,
    sessions: Mutex<HashMap<String, Option<Vec<u8>>>>,
    /// Every session held here, as last written: written again under a new lease.
    held: Mutex<HashMap<String, Vec<u8>>>,
    /// Sessions to write again after a lease was replaced: only where no
    /// other coordinator has claimed the worker meanwhile (its key would
    /// be newer than this coordinator's; this one's stream then closes when
    /// the watch shows it).
    rewrites: Mutex<std::collections::HashSet<String>>,
    wake: Notify,
    /// Puts and deletes etcd has acknowledged.
    written: AtomicU64,
}

/// The registry's side: the mirror, and the queue it feeds.
pub struct EtcdFleet {
    mirror: MemoryFleet,
    times: Times,
    queue: Arc<Queue>,
    /// This coordinator's id, on every record it writes.
    me: String,
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
    pub fn new(keys: Keys, times: Times, me: String) -> (EtcdFleet, Writer) {
        let queue = Arc::new(Queue::default());
        let store = EtcdFleet {
            mirror: MemoryFleet::default(),
            times,
            queue: queue.clone(),
            me,
        };
        (store, Writer { keys, queue })
    }
}

impl FleetStore for EtcdFleet {
    fn apply(&mut self, change: FleetChange) {
        let (id, value) = match &change {
            FleetChange::Put(rec) => (rec.worker_id.clone(), Some(encode(rec, self.times, &self.me))),
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

    fn learn(&mut self, change: FleetChange) {
        self.mirror.apply(change);
    }

    fn hold(&mut self, worker_id: &str, held: Option<Held>) {
        let value = held.map(|h| encode_session(&self.me, h.generation, h.status));
        {
            let mut all = lock(&self.queue.held);
            match &value {
                Some(v) => all.insert(worker_id.to_string(), v.clone()),
                None => all.remove(worker_id),
            };
        }
        lock(&self.queue.rewrites).remove(worker_id);
        lock(&self.queue.sessions).insert(worker_id.to_string(), value);
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Writer {
    /// Puts and deletes etcd has acknowledged so far.
    pub fn written(&self) -> u64 {
        self.queue.written.load(Ordering::Relaxed)
    }

    /// Changes not yet written.
    pub fn pending(&self) -> usize {
        lock(&self.queue.pending).len() + lock(&self.queue.sessions).len()
    }

    /// Sends the queue to etcd until `shutdown`, then once more (bounded by
    /// `flush`) so that a graceful stop leaves nothing unwritten.
    pub async fn run(self, member: Arc<Member>, shutdown: CancellationToken, flush: Duration) {
        let mut backoff = Duration::from_millis(100);
        let mut epoch = member.epoch();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.queue.wake.notified() => {}
                r = epoch.changed() => {
                    if r.is_err() { break }
                    // A new lease: every session held here goes on it.
                    let held = lock(&self.queue.held).clone();
                    let mut s = lock(&self.queue.sessions);
                    let mut r = lock(&self.queue.rewrites);
                    for (id, v) in held {
                        r.insert(id.clone());
                        s.insert(id, Some(v));
                    }
                }
            }
            loop {
                match self.send_all(&member).await {
                    Ok(()) => {
                        backoff = Duration::from_millis(100);
                        break;
                    }
                    Err(e) => {
                        member.metrics().etcd_error("write");
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
        let _ = tokio::time::timeout(flush, self.send_all(&member)).await;
    }

    /// Writes every waiting change, records before session keys (so that a
    /// reader sees a worker's record before who holds it). A change that
    /// fails goes back on its queue unless a newer one for the same worker
    /// arrived meanwhile.
    async fn send_all(&self, member: &Member) -> Result<(), etcd_client::Error> {
        loop {
            let records = take(&self.queue.pending);
            let sessions = take(&self.queue.sessions);
            if records.is_empty() && sessions.is_empty() {
                return Ok(());
            }
            let sent = self
                .send(
                    member,
                    &self.queue.pending,
                    records,
                    |k: &Keys, id: &str| k.worker(id),
                    false,
                )
                .await;
            if let Err(e) = sent {
                let mut p = lock(&self.queue.sessions);
                for (id, value) in sessions {
                    p.entry(id).or_insert(value);
                }
                return Err(e);
            }
            self.send(
                member,
                &self.queue.sessions,
                sessions,
                |k: &Keys, id: &str| k.session(id),
                true,
            )
            .await?;
        }
    }

    /// Sends one queue's changes. Puts (and record deletes) go in
    /// transactions of up to [`OPS_PER_TXN`] operations, so that a fleet
    /// registering at once costs a few round trips, not one per worker; a
    /// session given up is deleted on its own, guarded by its lease.
    async fn send(
        &self,
        member: &Member,
        queue: &Mutex<HashMap<String, Option<Vec<u8>>>>,
        batch: Vec<(String, Option<Vec<u8>>)>,
        key_of: impl Fn(&Keys, &str) -> String,
        on_lease: bool,
    ) -> Result<(), etcd_client::Error> {
        let mut client = member.client();
        let mut rest = batch;
        while !rest.is_empty() {
            let lease = member.lease();
            let rewrite = on_lease
                && rest
                    .last()
                    .is_some_and(|(id, v)| v.is_some() && lock(&self.queue.rewrites).remove(id));
            let res = match rest.last() {
                // Written again under a new lease: only if nobody took it.
                Some((id, Some(v))) if rewrite => {
                    let key = key_of(&self.keys, id);
                    let txn = Txn::new()
                        .when([Compare::version(key.clone(), CompareOp::Equal, 0)])
                        .and_then([TxnOp::put(key, v.clone(), Some(PutOptions::new().with_lease(lease)))]);
                    client.txn(txn).await.map(|_| 1)
                }
                // Given up: deleted only if still this coordinator's.
                Some((id, None)) if on_lease => {
                    let key = key_of(&self.keys, id);
                    let txn = Txn::new()
                        .when([Compare::lease(key.clone(), CompareOp::Equal, lease)])
                        .and_then([TxnOp::delete(key, None)]);
                    client.txn(txn).await.map(|_| 1)
                }
                _ => {
                    let mut ops = Vec::new();
                    let mut n = 0;
                    for (id, value) in rest.iter().rev() {
                        let rewrite = on_lease && lock(&self.queue.rewrites).contains(id);
                        if (value.is_none() && on_lease) || rewrite || ops.len() + 2 > OPS_PER_TXN {
                            break;
                        }
                        let key = key_of(&self.keys, id);
                        match value {
                            Some(v) if on_lease => {
                                ops.push(TxnOp::put(key, v.clone(), Some(PutOptions::new().with_lease(lease))))
                            }
                            Some(v) => ops.push(TxnOp::put(key, v.clone(), None)),
                            // A record goes with the leader's placement for it.
                            None => {
                                ops.push(TxnOp::delete(key, None));
                                ops.push(TxnOp::delete(self.keys.placement(id), None));
                            }
                        }
                        n += 1;
                    }
                    client.txn(Txn::new().and_then(ops)).await.map(|_| n)
                }
            };
            match res {
                Ok(n) => {
                    rest.truncate(rest.len() - n);
                    self.queue.written.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    if let (true, Some((id, _))) = (rewrite, rest.last()) {
                        lock(&self.queue.rewrites).insert(id.clone());
                    }
                    let mut p = lock(queue);
                    for (id, value) in rest {
                        p.entry(id).or_insert(value);
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

/// Operations per etcd transaction: below etcd's default limit (128).
const OPS_PER_TXN: usize = 100;

fn take(q: &Mutex<HashMap<String, Option<Vec<u8>>>>) -> Vec<(String, Option<Vec<u8>>)> {
    lock(q).drain().collect()
}
