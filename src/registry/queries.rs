//! Reading the fleet: snapshots, one worker by id or name, counts by state.

use super::machine::State;
use super::state::WorkerState;
use super::view::WorkerView;
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LookupError {
    #[error("no worker with id or name `{0}`")]
    NotFound(String),
    #[error("name `{0}` is shared by several workers; use a worker id")]
    Ambiguous(String),
}

impl State {
    /// Every worker (optionally only those in one state), sorted by name then id.
    pub fn snapshot(&self, now_ms: u64, filter: Option<WorkerState>) -> Vec<WorkerView> {
        let mut out: Vec<WorkerView> = self
            .local
            .iter()
            .filter(|(_, l)| filter.is_none_or(|f| l.status == f))
            .map(|(id, _)| self.view(id, now_ms))
            .collect();
        out.sort_by(|a, b| (&a.name, &a.worker_id).cmp(&(&b.name, &b.worker_id)));
        out
    }

    /// One worker by id, or by name when the name is unique.
    pub fn get(&self, now_ms: u64, worker: &str) -> Result<WorkerView, LookupError> {
        let id = self.find(worker)?;
        Ok(self.view(&id, now_ms))
    }

    /// The id of a worker given by id, or by name when the name is unique.
    pub fn find(&self, worker: &str) -> Result<String, LookupError> {
        if self.fleet.get(worker).is_some() {
            return Ok(worker.to_string());
        }
        let mut matches = self.fleet.records().filter(|r| r.name == worker);
        match (matches.next(), matches.next()) {
            (Some(r), None) => Ok(r.worker_id.clone()),
            (Some(_), Some(_)) => Err(LookupError::Ambiguous(worker.to_string())),
            _ => Err(LookupError::NotFound(worker.to_string())),
        }
    }

    /// Records no coordinator has held for longer than `older_than_ms` (as
    /// this coordinator learnt it): their holder died and the worker never
    /// came back. The placement leader removes them for the whole cluster.
    pub fn orphans(&self, now_ms: u64, older_than_ms: u64) -> Vec<String> {
        self.local
            .iter()
            .filter(|(_, l)| {
                l.link.is_none()
                    && l.elsewhere
                        .as_ref()
                        .and_then(|e| e.unheld_since_ms)
                        .is_some_and(|t| now_ms.saturating_sub(t) > older_than_ms)
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Whether this coordinator holds the worker's session.
    pub fn holds(&self, worker_id: &str) -> bool {
        self.local.get(worker_id).is_some_and(|l| l.link.is_some())
    }

    /// Worker counts by state.
    pub fn counts(&self) -> BTreeMap<WorkerState, usize> {
        let mut m = BTreeMap::new();
        for l in self.local.values() {
            *m.entry(l.status).or_insert(0) += 1;
        }
        m
    }
}
