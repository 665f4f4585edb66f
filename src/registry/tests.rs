//! The state machine on its own: time is a number the test passes, so
//! every timeout is checked to the millisecond with no sockets, no sleeps
//! and no runtime.

use super::{
    ChangeKind, Changes, Log, LookupError, Notice, RegisterError, Registered, RegistryConfig, SessionLink, State,
    WorkerState,
};
use crate::proto::{Capabilities, DeclaredService, Hello, ServiceState, ServiceStatus};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

const HEARTBEAT_MS: u64 = 1_000;
pub(super) const WORKER_MS: u64 = 3_000;

pub(super) fn state() -> State {
    State::new(
        RegistryConfig {
            heartbeat_timeout: Duration::from_millis(HEARTBEAT_MS),
            worker_timeout: Duration::from_millis(WORKER_MS),
            max_workers: 3,
        },
        SystemTime::UNIX_EPOCH,
    )
}

pub(super) fn hello(name: &str, instance: &str) -> Hello {
    Hello {
        name: name.into(),
        instance_id: instance.into(),
        ..Default::default()
    }
}

/// Opens a session at `now`; returns its outcome, changes and link.
pub(super) fn open(
    st: &mut State,
    now: u64,
    h: &Hello,
) -> (Result<Registered, RegisterError>, Changes, Arc<SessionLink>) {
    let (link, _notices) = SessionLink::new(now);
    let link = Arc::new(link);
    let (r, changes) = st.register(now, h, link.clone(), &BTreeMap::new(), None);
    (r, changes, link)
}

pub(super) fn connect(st: &mut State, now: u64, h: &Hello) -> (Registered, Arc<SessionLink>) {
    let (r, _, link) = open(st, now, h);
    (r.expect("registered"), link)
}

pub(super) fn status_of(st: &State, now: u64, id: &str) -> WorkerState {
    st.get(now, id).expect("worker exists").status
}

fn reasons(c: &Changes) -> Vec<(ChangeKind, &str)> {
    c.events.iter().map(|e| (e.kind, e.reason.as_str())).collect()
}

fn ready(service: &str) -> ServiceStatus {
    ServiceStatus {
        service: service.into(),
        state: ServiceState::Ready as i32,
        message: String::new(),
    }
}

#[test]
fn healthy_then_degraded_then_removed_at_the_configured_timeouts() {
    let mut st = state();
    let (w, link) = connect(&mut st, 0, &hello("gpu-1", "i-1"));
    assert_eq!(status_of(&st, 0, &w.worker_id), WorkerState::Healthy);

    // Silent exactly the heartbeat timeout is not yet past it.
    assert!(st.sweep(HEARTBEAT_MS).is_empty());
    let c = st.sweep(HEARTBEAT_MS + 1);
    assert_eq!(c.events.len(), 1);
    assert_eq!(c.events[0].worker.status, WorkerState::Degraded);
    assert!(c.events[0].reason.starts_with("silent for"), "{}", c.events[0].reason);
    assert!(matches!(
        &c.logs[..],
        [Log::Status {
            from: WorkerState::Healthy,
            to: WorkerState::Degraded,
            ..
        }]
    ));

    // A message flips it back at once, not at the next sweep.
    assert!(link.heard(1_500), "the session is told it was marked degraded");
    let c = st.refresh(1_500, &w.worker_id);
    assert_eq!(reasons(&c), [(ChangeKind::Updated, "heard again")]);
    assert_eq!(status_of(&st, 1_500, &w.worker_id), WorkerState::Healthy);
    assert!(!link.heard(1_600));
    assert!(
        st.refresh(1_600, &w.worker_id).is_empty(),
        "healthy already: nothing to say"
    );

    assert!(st.sweep(1_600 + HEARTBEAT_MS).is_empty());
    assert_eq!(st.sweep(1_600 + HEARTBEAT_MS + 1).events.len(), 1);
    assert!(
        st.sweep(1_600 + WORKER_MS).is_empty(),
        "silent exactly the worker timeout stays"
    );
    let c = st.sweep(1_600 + WORKER_MS + 1);
    assert_eq!(c.events.len(), 1);
    assert_eq!(c.events[0].kind, ChangeKind::Removed);
    assert!(matches!(c.notices()[..], [Notice::Close(ref why)] if why.starts_with("removed: nothing heard")));
    assert!(st.fleet().is_empty());
    assert_eq!(
        st.get(9_999, &w.worker_id),
        Err(LookupError::NotFound(w.worker_id.clone()))
    );
}

#[test]
fn a_closed_stream_is_unroutable_at_once_and_removed_after_the_worker_timeout() {
    let mut st = state();
    let (w, link) = connect(&mut st, 0, &hello("cpu-1", "i-1"));
    link.heard(400);
    let c = st.disconnect(500, &w.worker_id, w.generation, "stream closed by worker");
    assert_eq!(reasons(&c), [(ChangeKind::Updated, "stream closed by worker")]);
    assert_eq!(status_of(&st, 500, &w.worker_id), WorkerState::Disconnected);
    // The timeout counts from the last message, not from the close.
    assert!(st.sweep(400 + WORKER_MS).is_empty());
    assert_eq!(st.sweep(400 + WORKER_MS + 1).events[0].kind, ChangeKind::Removed);
}

#[test]
fn resume_by_token_keeps_the_id_and_retires_the_old_token() {
    let mut st = state();
    let (w, _) = connect(&mut st, 0, &hello("gpu-1", "i-1"));
    st.disconnect(10, &w.worker_id, w.generation, "gone");
    let mut h = hello("gpu-1", "i-changed");
    h.resume_token = w.resume_token.clone();
    let (r, c, _) = open(&mut st, 20, &h);
    let r = r.unwrap();
    assert_eq!((r.worker_id.as_str(), r.resumed), (w.worker_id.as_str(), true));
    assert_ne!(r.resume_token, w.resume_token);
    assert_eq!(reasons(&c), [(ChangeKind::Updated, "resumed by resume token")]);
    assert_eq!(st.get(20, &w.worker_id).unwrap().sessions, 2);
    assert_eq!(status_of(&st, 20, &w.worker_id), WorkerState::Healthy);

    // The first token is spent: it matches nothing, and says so.
    let mut h = hello("gpu-1", "");
    h.resume_token = w.resume_token.clone();
    let (r, c, _) = open(&mut st, 30, &h);
    assert!(!r.unwrap().resumed);
    assert!(matches!(c.logs[0], Log::UnknownToken { .. }));
}

#[test]
fn resume_by_instance_id_takes_a_disconnected_record() {
    let mut st = state();
    let (w, _) = connect(&mut st, 0, &hello("gpu-1", "i-1"));
    st.disconnect(10, &w.worker_id, w.generation, "gone");
    let (r, c, _) = open(&mut st, 20, &hello("gpu-1-renamed", "i-1"));
    let r = r.unwrap();
    assert_eq!((r.worker_id.as_str(), r.resumed), (w.worker_id.as_str(), true));
    assert_eq!(reasons(&c), [(ChangeKind::Updated, "resumed by instance id")]);
    assert_eq!(st.get(20, &w.worker_id).unwrap().name, "gpu-1-renamed");
}

#[test]
fn a_previous_id_is_reused_only_when_free_and_well_formed() {
    let mut st = state();
    let (w, _) = connect(&mut st, 0, &hello("gpu-1", "i-1"));
    st.disconnect(0, &w.worker_id, w.generation, "gone");
    st.sweep(WORKER_MS + 1);
    assert!(st.fleet().is_empty(), "the coordinator forgot it");

    let mut h = hello("gpu-1", "i-2");
    h.previous_worker_id = w.worker_id.clone();
    let (r, c, _) = open(&mut st, WORKER_MS + 2, &h);
    let r = r.unwrap();
    assert_eq!((r.worker_id.as_str(), r.resumed), (w.worker_id.as_str(), false));
    assert_eq!(reasons(&c), [(ChangeKind::Added, "registered")]);
    assert!(c.logs.iter().any(|l| matches!(
        l,
        Log::Registered {
            reused_previous_id: true,
            ..
        }
    )));

    // Taken (by the record just made), or not an id we hand out: a fresh id.
    let mut h = hello("gpu-2", "i-3");
    h.previous_worker_id = w.worker_id.clone();
    let other = connect(&mut st, WORKER_MS + 3, &h).0;
    assert_ne!(other.worker_id, w.worker_id);
    let mut h = hello("gpu-3", "i-4");
    h.previous_worker_id = "../etc/passwd".into();
    assert!(super::identity::is_worker_id(
        &connect(&mut st, WORKER_MS + 4, &h).0.worker_id
    ));
}

#[test]
fn the_token_comes_before_the_instance_id_which_comes_before_the_previous_id() {
    let mut st = state();
    let (a, _) = connect(&mut st, 0, &hello("a", "i-a"));
    let (b, _) = connect(&mut st, 0, &hello("b", "i-b"));
    let (c, _) = connect(&mut st, 0, &hello("c", "i-c"));
    for w in [&a, &b, &c] {
        st.disconnect(1, &w.worker_id, w.generation, "gone");
    }

    // Token names a, instance id names b: a.
    let mut h = hello("a", "i-b");
    h.resume_token = a.resume_token.clone();
    h.previous_worker_id = b.worker_id.clone();
    let (r, _) = connect(&mut st, 2, &h);
    assert_eq!(r.worker_id, a.worker_id);
    st.disconnect(3, &r.worker_id, r.generation, "gone");

    // An unknown token falls back to the instance id, which beats a free previous id.
    let mut h = hello("c", "i-c");
    h.resume_token = "not-a-token".into();
    h.previous_worker_id = "w-0123456789ab".into();
    let (r, changes, _) = open(&mut st, 4, &h);
    assert_eq!(r.unwrap().worker_id, c.worker_id);
    assert!(matches!(changes.logs[0], Log::UnknownToken { .. }));
}

#[test]
fn two_live_sessions_for_one_instance_id_are_refused() {
    let mut st = state();
    let (w, first) = connect(&mut st, 0, &hello("gpu-1", "i-1"));
    let (r, c, _) = open(&mut st, 5, &hello("gpu-1-twin", "i-1"));
    assert_eq!(r.unwrap_err(), RegisterError::InstanceLive("gpu-1".into()));
    assert!(c.events.is_empty() && c.notices.is_empty() && c.routes.is_none());
    assert!(matches!(&c.logs[..], [Log::SecondLiveSession { worker_id, .. }] if *worker_id == w.worker_id));
    assert_eq!(st.fleet().len(), 1);
    assert_eq!(st.get(5, &w.worker_id).unwrap().sessions, 1);

    // The token, and only the token, takes over a live session.
    let mut h = hello("gpu-1", "i-1");
    h.resume_token = w.resume_token.clone();
    let (r, c, second) = open(&mut st, 6, &h);
    assert!(r.unwrap().resumed);
    assert!(Arc::ptr_eq(&c.notices[0].0, &first));
    assert_eq!(
        c.notices(),
        [&Notice::Close("replaced by a newer session of this worker".into())]
    );
    assert!(!Arc::ptr_eq(&first, &second));
}

#[test]
fn a_stale_generations_calls_are_ignored() {
    let mut st = state();
    let mut h = hello("notes-box", "i-1");
    h.services = vec![DeclaredService {
        name: "notes".into(),
        url: "http://10.0.0.5:8100".into(),
    }];
    let (old, _) = connect(&mut st, 0, &h);
    h.resume_token = old.resume_token.clone();
    let (new, _) = connect(&mut st, 10, &h);
    assert_eq!(new.worker_id, old.worker_id);
    assert!(new.generation > old.generation);
    let id = &new.worker_id;

    assert!(st
        .service_status(20, id, old.generation, ready("notes"), true)
        .is_empty());
    assert!(st.disconnect(20, id, old.generation, "old stream ended").is_empty());
    assert!(st.detach_tunnel(20, id, old.generation).is_empty());
    assert_eq!(status_of(&st, 20, id), WorkerState::Healthy);
    assert_eq!(st.get(20, id).unwrap().services[0].state, ServiceState::Unspecified);
    assert_eq!(st.verify_tunnel(id, &old.resume_token), None);
    assert_eq!(st.verify_tunnel(id, &new.resume_token), Some(new.generation));

    // The current session's calls land.
    let c = st.service_status(30, id, new.generation, ready("notes"), true);
    assert_eq!(reasons(&c), [(ChangeKind::Updated, "service notes pending -> ready")]);
    assert!(!st.disconnect(40, id, new.generation, "closed").is_empty());
    assert_eq!(
        st.verify_tunnel(id, &new.resume_token),
        None,
        "no tunnel for a closed session"
    );
}

#[test]
fn drain_is_told_once_and_outlives_a_resumption() {
    let mut st = state();
    let mut h = hello("gpu-1", "i-1");
    h.capabilities = Some(Capabilities {
        runtimes: vec!["process".into()],
        ..Default::default()
    });
    let (w, _) = connect(&mut st, 0, &h);
    let (view, c) = st.drain(5, "gpu-1", "maintenance").unwrap();
    assert_eq!(view.status, WorkerState::Draining);
    assert_eq!(c.notices(), [&Notice::Drain("maintenance".into())]);
    assert_eq!(reasons(&c), [(ChangeKind::Updated, "drained: maintenance")]);
    let (_, again) = st.drain(6, &w.worker_id, "").unwrap();
    assert!(again.is_empty(), "drained already");
    assert!(!st.candidates(6, 1_000)[0].eligible);
    assert!(matches!(st.drain(6, "nobody", ""), Err(LookupError::NotFound(_))));

    // Silence does not hide it, and neither does a new session.
    assert!(st.sweep(HEARTBEAT_MS + 10).is_empty());
    st.disconnect(20, &w.worker_id, w.generation, "gone");
    assert_eq!(status_of(&st, 20, &w.worker_id), WorkerState::Disconnected);
    h.resume_token = w.resume_token.clone();
    connect(&mut st, 30, &h);
    assert_eq!(status_of(&st, 30, &w.worker_id), WorkerState::Draining);
}

#[test]
fn placements_outlive_a_disconnect_for_the_grace_only() {
    const GRACE: u64 = 2_000;
    let mut st = state();
    let mut h = hello("gpu-1", "i-1");
    h.capabilities = Some(Capabilities {
        runtimes: vec!["process".into()],
        ..Default::default()
    });
    let (w, _) = connect(&mut st, 0, &h);
    let placed: BTreeSet<String> = ["notes-coa".to_string()].into();
    let urls = BTreeMap::from([("notes-coa".to_string(), "http://10.0.0.5:8100".to_string())]);
    let c = st.assign(10, &w.worker_id, placed.clone(), &urls, |version, placed, _| {
        crate::proto::Assignment {
            version,
            services: placed
                .iter()
                .map(|n| crate::proto::AssignedService {
                    name: n.clone(),
                    ..Default::default()
                })
                .collect(),
        }
    });
    assert!(matches!(c.notices()[..], [Notice::Assign(ref a)] if a.version == 2));
    assert!(st
        .assign(11, &w.worker_id, placed.clone(), &urls, |_, _, _| unreachable!())
        .is_empty());

    st.disconnect(1_000, &w.worker_id, w.generation, "gone");
    let at = |st: &State, now: u64| st.candidates(now, GRACE).remove(0);
    let kept = at(&st, 1_000 + GRACE - 1);
    assert!(kept.keep && !kept.eligible);
    assert_eq!(kept.placed, placed);
    assert!(!at(&st, 1_000 + GRACE).keep, "the grace ran out");

    // A resumption within the worker timeout gets its placement back.
    h.resume_token = w.resume_token.clone();
    let (r, _) = connect(&mut st, 1_000 + GRACE, &h);
    assert_eq!((r.placed, r.assignment_version), (placed, 3));
}

#[test]
fn routes_follow_readiness_and_health_and_keep_their_load() {
    let mut st = state();
    let mut h = hello("notes-box", "i-1");
    h.services = vec![DeclaredService {
        name: "notes-coa".into(),
        url: "http://10.0.0.5:8100/notes".into(),
    }];
    let (w, link) = connect(&mut st, 0, &h);
    let table = |c: &Changes| c.routes.clone().expect("a new table").services["notes-coa"].clone();
    let routes = table(&st.service_status(1, &w.worker_id, w.generation, ready("notes-coa"), true));
    assert_eq!((routes.ready.len(), routes.total), (1, 1));
    assert_eq!(routes.ready[0].prefix, "/notes");
    let load = routes.ready[0].load.clone();

    let degraded = table(&st.sweep(HEARTBEAT_MS + 2));
    assert_eq!((degraded.ready.len(), degraded.unhealthy), (0, 1));
    link.heard(HEARTBEAT_MS + 3);
    let back = table(&st.refresh(HEARTBEAT_MS + 3, &w.worker_id));
    assert!(
        Arc::ptr_eq(&back.ready[0].load, &load),
        "load figures survive a rebuild"
    );

    st.disconnect(HEARTBEAT_MS + 4, &w.worker_id, w.generation, "gone");
    let removed = st.sweep(HEARTBEAT_MS + 3 + WORKER_MS + 1);
    assert!(removed.routes.expect("a new table").get("notes-coa").is_none());
}

#[test]
fn a_ready_tunnel_replica_before_its_tunnel_opens_is_unreachable_not_failed() {
    let mut st = state();
    let mut h = hello("nat-box", "i-1");
    h.tunnel = true;
    h.services = vec![DeclaredService {
        name: "notes-coa".into(),
        url: "http://127.0.0.1:8100".into(),
    }];
    let (w, _link) = connect(&mut st, 0, &h);
    let c = st.service_status(1, &w.worker_id, w.generation, ready("notes-coa"), true);
    let routes = c.routes.expect("a new table").services["notes-coa"].clone();
    assert_eq!((routes.ready.len(), routes.unreachable, routes.failed), (0, 1, 0));
    assert_eq!(routes.unavailable(), Some(crate::routes::Unavailable::Unreachable));
}

#[test]
fn a_full_registry_refuses_new_workers_but_not_resumptions() {
    let mut st = state();
    let ws: Vec<Registered> = (0..3)
        .map(|i| connect(&mut st, 0, &hello(&format!("w{i}"), "")).0)
        .collect();
    let (r, c, _) = open(&mut st, 1, &hello("w3", ""));
    assert_eq!(r.unwrap_err(), RegisterError::Full(3));
    assert!(matches!(c.logs[..], [Log::Full { max: 3, .. }]));
    st.disconnect(2, &ws[0].worker_id, ws[0].generation, "gone");
    let mut h = hello("w0", "");
    h.resume_token = ws[0].resume_token.clone();
    assert!(connect(&mut st, 3, &h).0.resumed);
}

#[test]
fn an_instance_id_changed_on_resume_is_forgotten_with_the_record() {
    let mut st = state();
    let (w, _) = connect(&mut st, 0, &hello("gpu-1", "i-old"));
    let mut h = hello("gpu-1", "i-new");
    h.resume_token = w.resume_token.clone();
    let (r, _) = connect(&mut st, 1, &h);
    st.disconnect(1, &r.worker_id, r.generation, "gone");
    st.sweep(1 + WORKER_MS + 1);
    assert!(st.fleet().is_empty());
    // Neither instance id points at the removed record.
    assert!(!connect(&mut st, WORKER_MS + 5, &hello("gpu-1", "i-new")).0.resumed);
    assert!(!connect(&mut st, WORKER_MS + 6, &hello("gpu-1", "i-old")).0.resumed);
}

#[test]
fn a_ready_service_whose_message_alone_changes_sends_no_event() {
    let mut st = state();
    let (w, _) = connect(&mut st, 0, &hello("w", "i-1"));
    let said = |message: &str, state: ServiceState| ServiceStatus {
        service: "own-thing".into(),
        state: state as i32,
        message: message.into(),
    };
    let c = st.service_status(
        10,
        &w.worker_id,
        w.generation,
        said("declared by the worker", ServiceState::Ready),
        false,
    );
    assert_eq!(c.events.len(), 1, "first ready is news");
    let c = st.service_status(11, &w.worker_id, w.generation, said("", ServiceState::Ready), false);
    assert!(c.events.is_empty() && c.routes.is_none(), "ready -> ready is not");
    // Recorded all the same: a reader of the worker sees the latest words.
    assert_eq!(st.get(11, &w.worker_id).unwrap().services[0].message, "");
    // A loading service's progress is still news.
    st.service_status(
        12,
        &w.worker_id,
        w.generation,
        said("pulling", ServiceState::Loading),
        false,
    );
    let c = st.service_status(
        13,
        &w.worker_id,
        w.generation,
        said("starting", ServiceState::Loading),
        false,
    );
    assert_eq!(c.events.len(), 1);
}

#[test]
fn a_status_for_a_catalog_service_neither_declared_nor_placed_is_not_recorded() {
    // A worker back from a partition reports the copy it still runs of a
    // service re-placed elsewhere meanwhile: recorded, it would be routed.
    let mut st = state();
    let (w, _) = connect(&mut st, 0, &hello("w", "i-1"));
    let c = st.service_status(10, &w.worker_id, w.generation, ready("pinned"), true);
    assert!(c.events.is_empty() && c.routes.is_none(), "no change anyone sees");
    assert!(st.get(10, &w.worker_id).unwrap().services.is_empty());
    // A name the catalog does not manage (an embedding program's own
    // report) is recorded as reported.
    let c = st.service_status(11, &w.worker_id, w.generation, ready("own-thing"), false);
    assert!(!c.events.is_empty());
    assert_eq!(st.get(11, &w.worker_id).unwrap().services.len(), 1);
}
