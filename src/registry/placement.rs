//! Placement hand-off: the fleet as placement sees it, and a plan's result
//! taken back into the records (and sent to the worker).

use super::changes::{ChangeKind, Changes, Log};
use super::machine::State;
use super::record::ServiceEntry;
use super::session::Notice;
use super::state::WorkerState;
use crate::placement::Candidate;
use crate::proto;
use std::collections::{BTreeMap, BTreeSet};

impl State {
    /// Every worker as placement sees it. `grace_ms`: how long a
    /// disconnected worker keeps its placements before they go elsewhere.
    pub fn candidates(&self, now_ms: u64, grace_ms: u64) -> Vec<Candidate> {
        // Only workers that can take placements, hold some, or declare
        // services (which count as providers) matter to placement; skipping
        // the rest keeps a fleet of plain workers from costing a clone of
        // every record per plan.
        let mut out: Vec<Candidate> = self
            .fleet
            .records()
            .filter(|r| !r.capabilities.runtimes.is_empty() || !r.placed.is_empty() || !r.services.is_empty())
            .map(|r| {
                let local = self.session(&r.worker_id);
                Candidate {
                    worker_id: r.worker_id.clone(),
                    name: r.name.clone(),
                    eligible: local.status == WorkerState::Healthy && !r.capabilities.runtimes.is_empty(),
                    // Held here or elsewhere; or let go within the grace (a
                    // holder that died says nothing: the grace runs from
                    // when its session key vanished).
                    keep: local.is_connected()
                        || local.held_elsewhere()
                        || r.disconnected_ms.is_some_and(|t| now_ms.saturating_sub(t) < grace_ms)
                        || local
                            .elsewhere
                            .as_ref()
                            .and_then(|e| e.unheld_since_ms)
                            .is_some_and(|t| now_ms.saturating_sub(t) < grace_ms),
                    declared: r
                        .services
                        .iter()
                        .filter(|(_, s)| s.declared)
                        .map(|(n, _)| n.clone())
                        .collect(),
                    placed: r.placed.clone(),
                    capabilities: r.capabilities.clone(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
        out
    }

    /// Sets the services placed on a worker and sends it the assignment that
    /// `build` makes from the new version, the placed set and the declared
    /// services (name, URL). `urls` says where each placed service will
    /// listen, as the proxy dials it. Nothing happens if the set is unchanged.
    pub fn assign(
        &mut self,
        now_ms: u64,
        worker_id: &str,
        placed: BTreeSet<String>,
        urls: &BTreeMap<String, String>,
        build: impl FnOnce(u64, &BTreeSet<String>, &[(String, String)]) -> proto::Assignment,
    ) -> Changes {
        let mut out = Changes::default();
        let Some(rec) = self.fleet.get(worker_id) else {
            return out;
        };
        if rec.placed == placed {
            return out;
        }
        let mut rec = rec.clone();
        let added: Vec<String> = placed.difference(&rec.placed).cloned().collect();
        let removed: Vec<String> = rec.placed.difference(&placed).cloned().collect();
        for name in &removed {
            if rec.services.get(name).is_some_and(|s| !s.declared) {
                rec.services.remove(name);
            }
        }
        for name in &added {
            let url = urls.get(name).cloned().unwrap_or_default();
            rec.services
                .entry(name.clone())
                .or_insert_with(|| ServiceEntry::placed(url, "placed; waiting for the worker to start it"));
        }
        rec.placed = placed;
        rec.assignment_version += 1;
        let assignment = build(rec.assignment_version, &rec.placed, &rec.declared());
        if let Some(link) = &self.session(worker_id).link {
            out.notices.push((link.clone(), Notice::Assign(assignment)));
        }
        let reason = format!("placement: +{added:?} -{removed:?}");
        out.logs.push(Log::Placement {
            worker: rec.name.clone(),
            worker_id: worker_id.to_string(),
            added,
            removed,
        });
        self.put(rec);
        self.emit(worker_id, ChangeKind::Updated, &reason, now_ms, &mut out);
        self.done(out)
    }

    /// A worker's advertise address, for building placed services' URLs.
    pub fn advertise_address(&self, worker_id: &str) -> Option<String> {
        self.fleet.get(worker_id).map(|r| r.advertise_address.clone())
    }
}
