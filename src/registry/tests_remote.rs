//! The state machine as one coordinator of a cluster: records and session
//! keys other coordinators wrote, learnt from the store (`remote.rs`), and
//! what this coordinator tells the store of the sessions it holds. Plain
//! numbers for time, as in `tests.rs`, whose helpers these share.

use super::tests::{connect, hello, open, state, status_of, WORKER_MS};
use super::{Notice, RegisterError, State, WorkerState};
use std::sync::Arc;
use std::time::SystemTime;

/// What another coordinator holds: a record learnt from the store, and
/// its session key.
fn remote(st: &mut State, now: u64, name: &str, generation: u64, coordinator: &str) -> String {
    let mut other = state();
    other.next_generation = generation - 1;
    let (w, _) = connect(&mut other, 0, &hello(name, &format!("i-{name}")));
    let rec = other.fleet().get(&w.worker_id).unwrap().clone();
    st.learn_record(now, rec);
    st.learn_session(
        now,
        &w.worker_id,
        Some(super::RemoteHold {
            coordinator: coordinator.into(),
            generation,
            status: WorkerState::Healthy,
        }),
    );
    w.worker_id
}

#[test]
fn a_worker_held_elsewhere_is_listed_with_its_coordinator_and_its_clock_is_not_run_here() {
    let mut st = state();
    st.set_coordinator_id("c-a".into());
    let id = remote(&mut st, 0, "far", 5, "c-b");
    let view = st.get(0, &id).unwrap();
    assert_eq!((view.status, view.coordinator.as_str()), (WorkerState::Healthy, "c-b"));
    // Far past both timeouts, nothing is heard here: still c-b's, healthy.
    st.sweep(10 * WORKER_MS);
    assert_eq!(status_of(&st, 10 * WORKER_MS, &id), WorkerState::Healthy);
    // Its holder gives it up: it waits, disconnected, for a coordinator.
    st.learn_session(10 * WORKER_MS, &id, None);
    let view = st.get(10 * WORKER_MS, &id).unwrap();
    assert_eq!(
        (view.status, view.coordinator.as_str()),
        (WorkerState::Disconnected, "")
    );
    // Only the token takes over a session live elsewhere; the instance id
    // alone does not.
    let id2 = remote(&mut st, 0, "live", 3, "c-b");
    let (r, _, _) = open(&mut st, 1, &hello("live", "i-live"));
    assert!(matches!(r, Err(RegisterError::InstanceLive(_))), "{r:?}");
    assert_eq!(st.get(1, &id2).unwrap().coordinator, "c-b");
}

#[test]
fn the_newest_session_wins_and_the_older_one_is_closed() {
    let mut st = state();
    st.set_coordinator_id("c-a".into());
    let (w, link) = connect(&mut st, 0, &hello("gpu-1", "i-1"));
    let hold = |generation, coordinator: &str| {
        Some(super::RemoteHold {
            coordinator: coordinator.into(),
            generation,
            status: WorkerState::Healthy,
        })
    };
    // An older session elsewhere (its key seen late) changes nothing.
    let c = st.learn_session(1, &w.worker_id, hold(w.generation - 1, "c-b"));
    assert!(c.notices.is_empty());
    // Its own key, echoed, neither.
    let c = st.learn_session(1, &w.worker_id, hold(w.generation + 5, "c-a"));
    assert!(c.notices.is_empty());
    assert_eq!(st.get(1, &w.worker_id).unwrap().coordinator, "c-a");
    // A newer one: this coordinator's stream is told goodbye.
    let c = st.learn_session(2, &w.worker_id, hold(w.generation + 1, "c-b"));
    assert!(
        matches!(&c.notices[..], [(l, Notice::Close(why))] if Arc::ptr_eq(l, &link) && why.contains("c-b")),
        "{:?}",
        c.notices.iter().map(|(_, n)| n).collect::<Vec<_>>()
    );
    assert_eq!(st.get(2, &w.worker_id).unwrap().coordinator, "c-b");
    // Its own key deleted after its own disconnect: the clock stays here.
    let (w2, _) = connect(&mut st, 3, &hello("gpu-2", "i-2"));
    st.disconnect(4, &w2.worker_id, w2.generation, "gone");
    st.learn_session(4, &w2.worker_id, None);
    st.sweep(4 + WORKER_MS + 1);
    assert!(
        st.get(4 + WORKER_MS + 1, &w2.worker_id).is_err(),
        "removed by this coordinator's clock"
    );
}

#[test]
fn a_newer_sessions_record_is_taken_in_even_while_held_here() {
    let mut st = state();
    st.set_coordinator_id("c-a".into());
    let (w, _link) = connect(&mut st, 0, &hello("gpu-1", "i-1"));
    let mut theirs = st.fleet().get(&w.worker_id).unwrap().clone();
    theirs.version = "from c-b".into();
    // An older (or the same) session's record: this coordinator's copy stays.
    theirs.generation = w.generation;
    st.learn_record(1, theirs.clone());
    assert_ne!(st.fleet().get(&w.worker_id).unwrap().version, "from c-b");
    // A newer one: taken in, ahead of the session key that will close ours.
    theirs.generation = w.generation + 1;
    st.learn_record(2, theirs);
    assert_eq!(st.fleet().get(&w.worker_id).unwrap().version, "from c-b");
    // The stream this coordinator held then ends: nothing more is written.
    let c = st.learn_session(
        3,
        &w.worker_id,
        Some(super::RemoteHold {
            coordinator: "c-b".into(),
            generation: w.generation + 1,
            status: WorkerState::Healthy,
        }),
    );
    assert_eq!(c.notices.len(), 1);
    let after = st.disconnect(4, &w.worker_id, w.generation, "closed");
    assert!(after.events.is_empty(), "a stale session's end changes nothing");
}

#[test]
fn in_a_cluster_the_worker_cap_counts_this_coordinators_workers_only() {
    let mut st = state();
    st.set_coordinator_id("c-a".into());
    // Three workers held elsewhere (the cap in `state()` is 3)...
    for n in 0..3 {
        remote(&mut st, 0, &format!("far-{n}"), 2, "c-b");
    }
    // ...leave room for three of this coordinator's own, and no more.
    for n in 0..3 {
        connect(&mut st, 1, &hello(&format!("near-{n}"), &format!("i-near-{n}")));
    }
    let (r, _, _) = open(&mut st, 2, &hello("one-too-many", "i-x"));
    assert_eq!(r.unwrap_err(), RegisterError::Full(3));
}

/// What a store was told of held sessions, in order.
type Told = Arc<std::sync::Mutex<Vec<(String, Option<super::Held>)>>>;

/// A fleet store that remembers what it was told of held sessions.
#[derive(Default)]
struct Holds {
    inner: super::MemoryFleet,
    told: Told,
}

impl super::FleetStore for Holds {
    fn apply(&mut self, change: super::FleetChange) {
        self.inner.apply(change)
    }
    fn hold(&mut self, worker_id: &str, held: Option<super::Held>) {
        self.told.lock().unwrap().push((worker_id.to_string(), held));
    }
    fn get(&self, worker_id: &str) -> Option<&super::FleetRecord> {
        self.inner.get(worker_id)
    }
    fn by_token(&self, digest: &[u8; 32]) -> Option<&super::FleetRecord> {
        self.inner.by_token(digest)
    }
    fn by_instance(&self, instance_id: &str) -> Option<&super::FleetRecord> {
        self.inner.by_instance(instance_id)
    }
    fn records(&self) -> Box<dyn Iterator<Item = &super::FleetRecord> + '_> {
        self.inner.records()
    }
    fn len(&self) -> usize {
        self.inner.len()
    }
}

#[test]
fn when_an_older_claim_lands_last_the_session_holder_writes_its_key_again() {
    let store = Holds::default();
    let told = store.told.clone();
    let mut st = State::with_store(state().config().clone(), SystemTime::UNIX_EPOCH, Box::new(store));
    st.set_coordinator_id("c-b".into());
    let (w, _link) = connect(&mut st, 0, &hello("gpu-1", "i-1"));
    assert_eq!(told.lock().unwrap().len(), 1, "the claim itself");
    // c-a's older claim, written after this one: this session stays, and
    // its key is put again.
    let c = st.learn_session(
        1,
        &w.worker_id,
        Some(super::RemoteHold {
            coordinator: "c-a".into(),
            generation: w.generation - 1,
            status: WorkerState::Healthy,
        }),
    );
    assert!(c.notices.is_empty());
    let last = told.lock().unwrap().last().cloned().unwrap();
    assert_eq!(last.0, w.worker_id);
    assert_eq!(last.1.map(|h| h.generation), Some(w.generation));
}

#[test]
fn a_drain_written_by_another_coordinator_is_carried_out_by_the_holder() {
    let mut st = state();
    st.set_coordinator_id("c-a".into());
    let (w, _link) = connect(&mut st, 0, &hello("gpu-1", "i-1"));
    let mut theirs = st.fleet().get(&w.worker_id).unwrap().clone();
    theirs.draining = true;
    let c = st.learn_record(1, theirs);
    assert!(
        c.notices.iter().any(|(_, n)| matches!(n, Notice::Drain(_))),
        "the worker is told to drain"
    );
    assert_eq!(status_of(&st, 1, &w.worker_id), WorkerState::Draining);
}
