//! What other coordinators of the cluster did, as the shared fleet store
//! reports it: a record written, a record removed, a session taken or
//! given up. These transitions never write back (the store already holds
//! them); they update this coordinator's view, routes and events, and
//! close a session of its own that another coordinator has taken over.

use super::changes::{ChangeKind, Changes, RegistryEvent};
use super::fleet::{FleetChange, Held};
use super::local::{Elsewhere, Local};
use super::machine::State;
use super::record::FleetRecord;
use super::session::Notice;
use super::state::WorkerState;

/// Another coordinator's hold on a session, as its session key says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteHold {
    pub coordinator: String,
    pub generation: u64,
    pub status: WorkerState,
}

impl State {
    /// Another coordinator wrote a worker's record. A worker whose session
    /// is held here keeps this coordinator's copy (only the holder writes a
    /// held record), unless the record is of a newer session: then another
    /// coordinator has taken the worker over, and its session key, which
    /// follows, closes this one's stream.
    pub fn learn_record(&mut self, now_ms: u64, rec: FleetRecord) -> Changes {
        let mut out = Changes::default();
        let id = rec.worker_id.clone();
        let held_here = self.local.get(&id).is_some_and(|l| l.link.is_some());
        let ours = self.fleet.get(&id).map_or(0, |r| r.generation);
        if held_here && rec.generation <= ours {
            // Drain is never undone, so an operator's drain sent to another
            // coordinator is taken up by the holder, which tells the worker.
            if rec.draining && !self.fleet.get(&id).is_some_and(|r| r.draining) {
                if let Ok((_, changes)) = self.drain(now_ms, &id, "drained through another coordinator") {
                    return changes;
                }
            }
            return out;
        }
        let added = self.fleet.get(&id).is_none();
        self.fleet.learn(FleetChange::Put(Box::new(rec)));
        self.local
            .entry(id.clone())
            .or_insert_with(|| Local::elsewhere(Elsewhere::nobody(now_ms)));
        if added {
            self.changed_as(
                &id,
                ChangeKind::Added,
                "registered on another coordinator",
                now_ms,
                &mut out,
            );
        } else {
            self.changed(&id, "changed on another coordinator", now_ms, &mut out);
        }
        self.done(out)
    }

    /// Another coordinator removed a worker's record (nothing heard for
    /// the worker timeout). Ignored while this coordinator holds it.
    pub fn learn_removed(&mut self, now_ms: u64, worker_id: &str) -> Changes {
        let mut out = Changes::default();
        let Some(local) = self.local.get(worker_id) else {
            return out;
        };
        if local.link.is_some() {
            return out;
        }
        let worker = self.view(worker_id, now_ms);
        self.fleet.learn(FleetChange::Remove(worker_id.to_string()));
        self.local.remove(worker_id);
        self.routing.remove(worker_id);
        out.events.push(RegistryEvent {
            kind: ChangeKind::Removed,
            worker,
            reason: "removed on another coordinator".into(),
        });
        self.done(out)
    }

    /// A session key changed: `Some`, another coordinator holds the
    /// worker's session; `None`, no coordinator does. When another
    /// coordinator holds a newer session of a worker this one holds too,
    /// this one's stream is closed: the newest session wins, everywhere
    /// the same way (generation, then coordinator id).
    pub fn learn_session(&mut self, now_ms: u64, worker_id: &str, hold: Option<RemoteHold>) -> Changes {
        let mut out = Changes::default();
        if let Some(h) = &hold {
            if self.me.as_deref() == Some(h.coordinator.as_str()) {
                return out;
            }
        }
        let Some(generation_here) = self.fleet.get(worker_id).map(|r| r.generation) else {
            return out;
        };
        let me = self.me.clone().unwrap_or_default();
        let local = self.session_mut(worker_id);
        if local.link.is_some() {
            let Some(h) = &hold else { return out };
            let newer = (h.generation, h.coordinator.as_str()) > (generation_here, me.as_str());
            if !newer {
                // An older claim landed after this one (two coordinators
                // claimed at once): this one is the session, so its key is
                // written again, and the store ends with the winner's.
                let status = local.status;
                self.fleet.hold(
                    worker_id,
                    Some(Held {
                        generation: generation_here,
                        status,
                    }),
                );
                return out;
            }
            let link = local.link.take().expect("checked above");
            local.last_heard_ms = link.heard_ms();
            local.tunnel = None;
            out.notices.push((
                link,
                Notice::Close(format!(
                    "this worker's session moved to coordinator `{}`",
                    h.coordinator
                )),
            ));
        }
        local.elsewhere = Some(match hold {
            Some(h) => Elsewhere {
                coordinator: Some(h.coordinator),
                generation: h.generation,
                status: h.status,
                unheld_since_ms: None,
            },
            // This coordinator held it last (its own key, deleted): its
            // clock goes on running here, towards the worker timeout.
            None if local.elsewhere.is_none() => return out,
            None => Elsewhere::nobody(now_ms),
        });
        self.changed(worker_id, "held by another coordinator", now_ms, &mut out);
        self.done(out)
    }

    /// [`State::changed`], with the event's kind given.
    fn changed_as(&mut self, id: &str, kind: ChangeKind, reason: &str, now_ms: u64, out: &mut Changes) {
        self.rederive(id, now_ms, reason, out);
        self.emit(id, kind, reason, now_ms, out);
    }
}
