//! What the event stream remembers about each worker beyond its record:
//! why it is in its current status, and since when each of its services has
//! been loading. The registry's records hold neither (a record is the
//! worker's state, not its history), yet an operator looking at a
//! `disconnected` row or a service stuck `loading` wants both.
//!
//! Learned from the registry's change events, so it covers what this
//! coordinator has seen since it started; bounded by the fleet, since a
//! removed worker is forgotten.

use crate::proto::ServiceState;
use crate::registry::{ChangeKind, RegistryEvent, WorkerState, WorkerView};
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

/// What the event stream says of one worker beside its record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Note {
    /// Why it is in its current status (empty if this coordinator did
    /// not see it get there).
    pub reason: String,
    /// Seconds it has been in that status, as far as this coordinator knows.
    pub status_seconds: Option<f64>,
    /// Seconds each loading service has been loading.
    pub loading_seconds: BTreeMap<String, f64>,
}

#[derive(Debug, Default)]
pub struct Notes {
    /// Worker id -> the status last seen, the reason it changed to it,
    /// and when.
    status: HashMap<String, (WorkerState, String, Instant)>,
    /// Worker id -> service -> when it was first seen loading (only
    /// services loading now).
    loading: HashMap<String, BTreeMap<String, Instant>>,
}

impl Notes {
    /// Takes in one change.
    pub fn learn(&mut self, ev: &RegistryEvent, now: Instant) {
        let id = &ev.worker.worker_id;
        if ev.kind == ChangeKind::Removed {
            self.status.remove(id);
            self.loading.remove(id);
            return;
        }
        let status = ev.worker.status;
        let moved = ev.kind == ChangeKind::Added || self.status.get(id).is_none_or(|(s, ..)| *s != status);
        if moved {
            self.status.insert(id.clone(), (status, ev.reason.clone(), now));
        }
        self.services(&ev.worker, now);
    }

    /// Takes in a worker seen in a snapshot rather than through an event
    /// (after the event stream lost some): a status it was not seen to
    /// reach gets no reason rather than a wrong one.
    pub fn observe(&mut self, view: &WorkerView, now: Instant) {
        let id = &view.worker_id;
        if self.status.get(id).is_none_or(|(s, ..)| *s != view.status) {
            self.status.insert(id.clone(), (view.status, String::new(), now));
        }
        self.services(view, now);
    }

    /// Forgets every worker but those in `keep` (after a snapshot).
    pub fn retain(&mut self, keep: &std::collections::HashSet<&str>) {
        self.status.retain(|id, _| keep.contains(id.as_str()));
        self.loading.retain(|id, _| keep.contains(id.as_str()));
    }

    fn services(&mut self, view: &WorkerView, now: Instant) {
        let loading: Vec<&str> = view
            .services
            .iter()
            .filter(|s| s.state == ServiceState::Loading)
            .map(|s| s.name.as_str())
            .collect();
        if loading.is_empty() {
            self.loading.remove(&view.worker_id);
            return;
        }
        let since = self.loading.entry(view.worker_id.clone()).or_default();
        since.retain(|name, _| loading.contains(&name.as_str()));
        for name in loading {
            since.entry(name.to_string()).or_insert(now);
        }
    }

    /// What is remembered of the worker, as of `now`.
    pub fn note(&self, worker_id: &str, now: Instant) -> Note {
        let secs = |since: &Instant| (now.saturating_duration_since(*since).as_secs_f64() * 10.0).round() / 10.0;
        let (reason, status_seconds) = match self.status.get(worker_id) {
            Some((_, reason, since)) => (reason.clone(), Some(secs(since))),
            None => (String::new(), None),
        };
        let loading_seconds = self
            .loading
            .get(worker_id)
            .map(|m| m.iter().map(|(name, since)| (name.clone(), secs(since))).collect())
            .unwrap_or_default();
        Note {
            reason,
            status_seconds,
            loading_seconds,
        }
    }

    /// Workers with anything remembered (for tests and bounds).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.status.len().max(self.loading.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::ServiceView;
    use std::time::{Duration, SystemTime};

    fn view(status: WorkerState, services: &[(&str, ServiceState)]) -> WorkerView {
        WorkerView {
            worker_id: "w1".into(),
            name: "gpu-1".into(),
            status,
            capabilities: Default::default(),
            services: services
                .iter()
                .map(|(n, s)| ServiceView {
                    name: n.to_string(),
                    state: *s,
                    message: String::new(),
                    url: String::new(),
                })
                .collect(),
            advertise_address: String::new(),
            version: String::new(),
            last_heartbeat: SystemTime::UNIX_EPOCH,
            registered_at: SystemTime::UNIX_EPOCH,
            age: Duration::ZERO,
            silent_for: Duration::ZERO,
            sessions: 1,
            coordinator: String::new(),
        }
    }

    fn ev(kind: ChangeKind, worker: WorkerView, reason: &str) -> RegistryEvent {
        RegistryEvent {
            kind,
            worker,
            reason: reason.into(),
        }
    }

    #[test]
    fn the_reason_is_the_one_that_changed_the_status() {
        let mut n = Notes::default();
        let t = Instant::now();
        n.learn(&ev(ChangeKind::Added, view(WorkerState::Healthy, &[]), "registered"), t);
        n.learn(
            &ev(ChangeKind::Updated, view(WorkerState::Healthy, &[]), "tunnel open"),
            t,
        );
        assert_eq!(
            n.note("w1", t).reason,
            "registered",
            "a change that kept the status keeps its reason"
        );
        n.learn(
            &ev(
                ChangeKind::Updated,
                view(WorkerState::Disconnected, &[]),
                "stream closed by worker",
            ),
            t,
        );
        assert_eq!(n.note("w1", t).reason, "stream closed by worker");
        n.learn(
            &ev(ChangeKind::Removed, view(WorkerState::Disconnected, &[]), "gone"),
            t,
        );
        assert_eq!(n.note("w1", t).reason, "");
        assert_eq!(n.len(), 0, "a removed worker is forgotten");
    }

    #[test]
    fn loading_counts_from_when_it_was_first_seen() {
        let mut n = Notes::default();
        let t0 = Instant::now();
        let loading = view(WorkerState::Healthy, &[("llm", ServiceState::Loading)]);
        n.learn(&ev(ChangeKind::Added, loading.clone(), "registered"), t0);
        n.learn(
            &ev(ChangeKind::Updated, loading, "message"),
            t0 + Duration::from_secs(5),
        );
        let at = t0 + Duration::from_secs(12);
        assert_eq!(n.note("w1", at).loading_seconds.get("llm"), Some(&12.0));
        let ready = view(WorkerState::Healthy, &[("llm", ServiceState::Ready)]);
        n.learn(&ev(ChangeKind::Updated, ready, "ready"), at);
        assert!(n.note("w1", at).loading_seconds.is_empty());
    }

    #[test]
    fn a_snapshot_gives_an_unseen_status_no_reason() {
        let mut n = Notes::default();
        let t = Instant::now();
        n.learn(&ev(ChangeKind::Added, view(WorkerState::Healthy, &[]), "registered"), t);
        n.observe(&view(WorkerState::Healthy, &[]), t);
        assert_eq!(n.note("w1", t).reason, "registered");
        n.observe(&view(WorkerState::Degraded, &[]), t);
        assert_eq!(n.note("w1", t).reason, "");
        n.retain(&Default::default());
        assert_eq!(n.len(), 0);
    }
}
