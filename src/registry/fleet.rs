//! The store boundary: where fleet state lives.
//!
//! A worker's state is of two kinds, and the line between them is the one
//! several coordinators sharing a fleet (through etcd) will need:
//!
//! - **Local to the coordinator holding the worker's stream**
//!   ([`super::local::Local`]): the session link (the outbox its notices go
//!   down), the heartbeat clock (an atomic stamped on every message; never
//!   written anywhere else, so a keepalive costs no store write), the status
//!   derived from that clock, and the tunnel sender. None of it means
//!   anything to another coordinator, and none of it may cost a round trip.
//! - **Fleet state** ([`FleetRecord`]): identity (id, name, instance id),
//!   the resume-token digest and the current session's generation,
//!   capabilities, services and their readiness, placement, drain, and
//!   when the stream closed. Every coordinator must see it to route, place,
//!   resume and answer admin calls. (Its times are on this registry's
//!   clock; a shared store would write them as wall-clock times.)
//!
//! Every change to fleet state goes through [`FleetStore::apply`], as a
//! [`FleetChange`]; the registry's state machine reads the store and never
//! writes a record any other way. [`MemoryFleet`] is the embedded default.
//! An etcd-backed store implements the same trait (apply: one put or
//! delete of the worker's key; reads: a cache kept by a watch on the
//! prefix), so the proxy, the admin views and the stream handlers, which
//! only see `Registry`, do not change.
//!
//! Why whole records rather than field-level events: a worker's fleet
//! state is small and is one key in etcd, so a transition writes it once,
//! whole, and a reader (or a watch) never sees half a transition. Records
//! change only on transitions (Hello, status, drain, placement, close), not
//! on keepalives, so the copy costs nothing at fleet scale.

use super::record::FleetRecord;
use super::state::WorkerState;
use std::collections::HashMap;

/// This coordinator's hold on a worker's session, as the rest of the
/// fleet is told of it: the session's generation and the worker's status
/// (both change only on transitions, never on a keepalive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub generation: u64,
    pub status: WorkerState,
}

/// One write of fleet state.
#[derive(Debug, Clone)]
pub enum FleetChange {
    /// The worker's record as it now stands (registered, resumed, or changed).
    Put(Box<FleetRecord>),
    /// The worker is gone: nothing was heard for the worker timeout.
    Remove(String),
}

/// Where fleet state is kept. Reads are synchronous: a distributed store
/// answers them from its own watched cache.
pub trait FleetStore: Send {
    /// Writes one change. The only way this coordinator changes fleet state.
    fn apply(&mut self, change: FleetChange);
    /// Takes in a change another coordinator made (learnt from a shared
    /// store's watch): the same as [`FleetStore::apply`], but not written
    /// back.
    fn learn(&mut self, change: FleetChange) {
        self.apply(change);
    }
    /// This coordinator now holds the worker's session (`Some`), or no
    /// longer does (`None`). A shared store publishes it, so that the other
    /// coordinators can tell who holds each worker and how it is; alone,
    /// there is nobody to tell.
    fn hold(&mut self, _worker_id: &str, _held: Option<Held>) {}
    fn get(&self, worker_id: &str) -> Option<&FleetRecord>;
    /// The record whose current resume token has this digest.
    fn by_token(&self, digest: &[u8; 32]) -> Option<&FleetRecord>;
    /// The record that last claimed this instance id.
    fn by_instance(&self, instance_id: &str) -> Option<&FleetRecord>;
    fn records(&self) -> Box<dyn Iterator<Item = &FleetRecord> + '_>;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Fleet state in this process's memory: the single-coordinator default.
#[derive(Debug, Default)]
pub struct MemoryFleet {
    workers: HashMap<String, FleetRecord>,
    by_instance: HashMap<String, String>,
    by_token: HashMap<[u8; 32], String>,
}

impl MemoryFleet {
    /// Drops `prev`'s index entries that still point at it (another record
    /// may since have claimed its instance id).
    fn unindex(&mut self, prev: &FleetRecord) {
        if self.by_instance.get(&prev.instance_id) == Some(&prev.worker_id) {
            self.by_instance.remove(&prev.instance_id);
        }
        self.by_token.remove(&prev.token_digest);
    }
}

impl FleetStore for MemoryFleet {
    fn apply(&mut self, change: FleetChange) {
        match change {
            FleetChange::Put(rec) => {
                let id = rec.worker_id.clone();
                let claim = match self.workers.get(&id) {
                    None => true,
                    Some(prev) => {
                        let (prev_instance, prev_token) = (prev.instance_id.clone(), prev.token_digest);
                        if prev_token != rec.token_digest {
                            self.by_token.remove(&prev_token);
                        }
                        let moved = prev_instance != rec.instance_id;
                        if moved && self.by_instance.get(&prev_instance) == Some(&id) {
                            self.by_instance.remove(&prev_instance);
                        }
                        moved
                    }
                };
                // An unchanged instance id keeps its index entry as it is.
                if claim && !rec.instance_id.is_empty() {
                    self.by_instance.insert(rec.instance_id.clone(), id.clone());
                }
                self.by_token.insert(rec.token_digest, id.clone());
                self.workers.insert(id, *rec);
            }
            FleetChange::Remove(id) => {
                if let Some(prev) = self.workers.remove(&id) {
                    self.unindex(&prev);
                }
            }
        }
    }

    fn get(&self, worker_id: &str) -> Option<&FleetRecord> {
        self.workers.get(worker_id)
    }

    fn by_token(&self, digest: &[u8; 32]) -> Option<&FleetRecord> {
        self.by_token.get(digest).and_then(|id| self.workers.get(id))
    }

    fn by_instance(&self, instance_id: &str) -> Option<&FleetRecord> {
        self.by_instance.get(instance_id).and_then(|id| self.workers.get(id))
    }

    fn records(&self) -> Box<dyn Iterator<Item = &FleetRecord> + '_> {
        Box::new(self.workers.values())
    }

    fn len(&self) -> usize {
        self.workers.len()
    }
}
