//! The fleet's changes, numbered and remembered for `GET /api/admin/events`
//! ([`super::event_stream`] serves them).
//!
//! One task follows the registry's change events, gives each a sequence
//! number (monotonic for this coordinator run), keeps the last [`RING`] of
//! them so that a browser that lost its connection can resume where it
//! was (`Last-Event-ID`), and hands each on to every open stream. Streams
//! subscribe here rather than to the registry so that all of them, and the
//! ring, agree on what number a change has.
//!
//! A change's JSON is written once, the first time a stream sends it, and
//! then shared: with no dashboard open, a change costs a clone of its view.

use super::event_frames::{self, StreamWorker};
use super::event_notes::{Note, Notes};
use crate::registry::{ChangeKind, Registry, RegistryEvent, WorkerView};
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Changes kept for resumption: a browser away for a moment (a network
/// blip, a laptop lid) resumes; one away longer gets a fresh snapshot,
/// which is always correct, just larger.
pub const RING: usize = 1024;

/// Frames buffered per open stream; a stream further behind starts over
/// from a snapshot rather than hold the coordinator's memory hostage.
pub const SUBSCRIBER_BUFFER: usize = 1024;

/// One numbered change.
#[derive(Debug)]
pub struct Change {
    pub seq: u64,
    pub kind: ChangeKind,
    /// What the registry said changed.
    pub reason: String,
    pub view: WorkerView,
    /// What the stream says beside the record, as of this change.
    note: Note,
    json: OnceLock<String>,
}

impl Change {
    /// The `change` event's data, written on first use.
    pub fn data(&self) -> &str {
        self.json.get_or_init(|| {
            let mut worker = StreamWorker::new(&self.view, self.note.clone());
            if self.kind == ChangeKind::Removed {
                // As `WatchWorkers` says it: the record is gone.
                worker.worker.status = "removed".into();
            }
            event_frames::change(self.kind, &self.reason, &worker)
        })
    }
}

/// What an open stream receives from the hub.
#[derive(Debug, Clone)]
pub enum Frame {
    Change(Arc<Change>),
    /// The hub fell behind the registry and lost changes: every stream
    /// starts over from a snapshot.
    Resync,
}

/// The fleet as of one sequence number.
pub struct Snapshot {
    pub seq: u64,
    pub workers: Vec<StreamWorker>,
}

#[derive(Clone)]
pub struct EventHub {
    shared: Arc<Shared>,
}

struct Shared {
    /// Tags this run's event ids (see [`event_frames::event_id`]).
    run: String,
    registry: Arc<Registry>,
    inner: Mutex<Inner>,
}

struct Inner {
    /// The last sequence number given out.
    last: u64,
    ring: VecDeque<Arc<Change>>,
    notes: Notes,
    tx: broadcast::Sender<Frame>,
}

impl Inner {
    /// The changes after `seq`, if every one of them is still in the ring.
    fn since(&self, seq: u64) -> Option<Vec<Arc<Change>>> {
        if seq > self.last {
            return None;
        }
        let first = self.ring.front().map_or(self.last + 1, |c| c.seq);
        if seq + 1 < first {
            return None;
        }
        Some(self.ring.iter().filter(|c| c.seq > seq).cloned().collect())
    }
}

impl EventHub {
    /// Starts following `registry` until `closing`.
    pub fn start(registry: Arc<Registry>, closing: CancellationToken) -> Self {
        let hub = Self::new(registry);
        let (now, rx) = hub.shared.registry.subscribe();
        {
            let mut inner = hub.lock();
            let t = Instant::now();
            now.iter().for_each(|v| inner.notes.observe(v, t));
        }
        tokio::spawn(hub.clone().follow(rx, closing));
        hub
    }

    fn new(registry: Arc<Registry>) -> Self {
        let (tx, _) = broadcast::channel(SUBSCRIBER_BUFFER);
        let run = format!("{:08x}", rand::random::<u32>());
        EventHub {
            shared: Arc::new(Shared {
                run,
                registry,
                inner: Mutex::new(Inner {
                    last: 0,
                    ring: VecDeque::with_capacity(RING),
                    notes: Notes::default(),
                    tx,
                }),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing under this lock can leave the ring half-updated; keep
        // serving rather than poison every stream.
        self.shared.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The `id:` of the event numbered `seq`.
    pub fn event_id(&self, seq: u64) -> String {
        event_frames::event_id(&self.shared.run, seq)
    }

    async fn follow(self, mut rx: broadcast::Receiver<RegistryEvent>, closing: CancellationToken) {
        loop {
            let ev = tokio::select! {
                ev = rx.recv() => ev,
                () = closing.cancelled() => return,
            };
            match ev {
                Ok(ev) => self.publish(ev),
                Err(broadcast::error::RecvError::Lagged(lost)) => self.lost(lost),
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Numbers one change, keeps it, and hands it on.
    fn publish(&self, ev: RegistryEvent) {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.notes.learn(&ev, now);
        inner.last += 1;
        let id = &ev.worker.worker_id;
        let change = Arc::new(Change {
            seq: inner.last,
            note: inner.notes.note(id, now),
            kind: ev.kind,
            reason: ev.reason,
            view: ev.worker,
            json: OnceLock::new(),
        });
        if inner.ring.len() >= RING {
            inner.ring.pop_front();
        }
        inner.ring.push_back(change.clone());
        // No stream open is fine: nobody is watching.
        let _ = inner.tx.send(Frame::Change(change));
    }

    /// The registry dropped changes before this hub read them: no stream
    /// can be told what it missed, so every one starts over.
    fn lost(&self, lost: u64) {
        warn!(
            lost,
            "the dashboard's event stream fell behind the registry; every stream resyncs"
        );
        let views = self.shared.registry.snapshot(None);
        let now = Instant::now();
        let mut inner = self.lock();
        // A number no resumption can span: the ring restarts after it.
        inner.last += 1;
        inner.ring.clear();
        let keep: HashSet<&str> = views.iter().map(|v| v.worker_id.as_str()).collect();
        inner.notes.retain(&keep);
        views.iter().for_each(|v| inner.notes.observe(v, now));
        let _ = inner.tx.send(Frame::Resync);
    }

    /// A stream resuming after the event `last_event_id`: the changes it
    /// missed and a receiver for every later one, or `None` when it cannot
    /// resume (no id, another run's id, or changes gone from the ring).
    pub fn resume(&self, last_event_id: Option<&str>) -> Option<(Vec<Arc<Change>>, broadcast::Receiver<Frame>)> {
        let seq = event_frames::parse_event_id(&self.shared.run, last_event_id?)?;
        let inner = self.lock();
        let missed = inner.since(seq)?;
        Some((missed, inner.tx.subscribe()))
    }

    /// The fleet now, and a receiver for every change after it.
    ///
    /// The receiver is taken first and the registry read after, so no
    /// change falls between them; a change the hub had not numbered yet
    /// may then arrive although the snapshot already shows it. Each change
    /// carries a worker's whole view, so applying it again, in order, ends
    /// at the same fleet.
    pub fn snapshot(&self) -> (Snapshot, broadcast::Receiver<Frame>) {
        let (seq, rx) = {
            let inner = self.lock();
            (inner.last, inner.tx.subscribe())
        };
        let views = self.shared.registry.snapshot(None);
        let now = Instant::now();
        let notes: Vec<Note> = {
            let inner = self.lock();
            views.iter().map(|v| inner.notes.note(&v.worker_id, now)).collect()
        };
        let workers = views
            .iter()
            .zip(notes)
            .map(|(v, note)| StreamWorker::new(v, note))
            .collect();
        (Snapshot { seq, workers }, rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{RegistryConfig, WorkerState};

    fn hub() -> EventHub {
        EventHub::new(Arc::new(Registry::new(RegistryConfig::default())))
    }

    fn event(id: &str) -> RegistryEvent {
        RegistryEvent {
            kind: ChangeKind::Added,
            worker: WorkerView {
                worker_id: id.into(),
                name: id.into(),
                status: WorkerState::Healthy,
                capabilities: Default::default(),
                services: vec![],
                advertise_address: String::new(),
                version: String::new(),
                last_heartbeat: std::time::SystemTime::UNIX_EPOCH,
                registered_at: std::time::SystemTime::UNIX_EPOCH,
                age: Default::default(),
                silent_for: Default::default(),
                sessions: 1,
                coordinator: String::new(),
            },
            reason: "registered".into(),
        }
    }

    fn seqs(c: &[Arc<Change>]) -> Vec<u64> {
        c.iter().map(|c| c.seq).collect()
    }

    #[test]
    fn a_stream_resumes_from_the_ring_or_not_at_all() {
        let h = hub();
        for i in 0..3 {
            h.publish(event(&format!("w{i}")));
        }
        let (missed, _) = h.resume(Some(&h.event_id(1))).expect("in the ring");
        assert_eq!(seqs(&missed), [2, 3]);
        let (missed, _) = h.resume(Some(&h.event_id(3))).expect("up to date");
        assert!(missed.is_empty());
        assert!(h.resume(Some(&h.event_id(4))).is_none(), "a number not given out yet");
        assert!(h.resume(Some("0badc0de-1")).is_none(), "another run's id");
        assert!(h.resume(None).is_none());
        assert!(h.resume(Some("garbage")).is_none());
    }

    #[test]
    fn the_ring_is_bounded_and_forgets_the_oldest() {
        let h = hub();
        for i in 0..RING + 10 {
            h.publish(event(&format!("w{i}")));
        }
        assert_eq!(h.lock().ring.len(), RING);
        assert!(h.resume(Some(&h.event_id(5))).is_none(), "fell out of the ring");
        let first = (RING + 10 - RING) as u64 + 1;
        let (missed, _) = h.resume(Some(&h.event_id(first - 1))).expect("the oldest kept");
        assert_eq!(missed.len(), RING);
    }

    #[test]
    fn lost_changes_end_every_resumption_and_resync_every_stream() {
        let h = hub();
        h.publish(event("w1"));
        let (_, mut rx) = h.resume(Some(&h.event_id(1))).unwrap();
        h.lost(3);
        assert!(matches!(rx.try_recv(), Ok(Frame::Resync)));
        assert!(h.resume(Some(&h.event_id(1))).is_none());
        let (snap, _) = h.snapshot();
        assert_eq!(snap.seq, 2);
        assert!(
            h.resume(Some(&h.event_id(snap.seq))).is_some(),
            "resumes after the new snapshot"
        );
    }

    #[test]
    fn a_change_is_one_line_of_json_with_the_worker_shape() {
        let h = hub();
        h.publish(event("w1"));
        let c = h.lock().ring[0].clone();
        let v: serde_json::Value = serde_json::from_str(c.data()).unwrap();
        assert_eq!(v["kind"], "added");
        assert_eq!(v["change"], "registered");
        assert_eq!(v["reason"], "registered");
        assert_eq!(v["worker"]["worker_id"], "w1");
        assert_eq!(v["worker"]["status"], "healthy");
    }
}
