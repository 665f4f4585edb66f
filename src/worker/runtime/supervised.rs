//! The services a runtime runs, one supervising task each, and the
//! reconcile step every runtime shares: stop what is no longer wanted or
//! has changed, then start what is new. Only how a service is run (a
//! process, a container) differs, and that is the `start` a runtime passes.

use super::RunSpec;
use crate::worker::ServiceReport;
use std::collections::BTreeMap;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

struct Supervised {
    spec: RunSpec,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// The running services, by name.
#[derive(Default)]
pub struct Supervisors(BTreeMap<String, Supervised>);

/// An assignment's services, by name.
pub fn by_name(specs: Vec<RunSpec>) -> BTreeMap<String, RunSpec> {
    specs.into_iter().map(|s| (s.name.clone(), s)).collect()
}

impl Supervisors {
    /// Stops (and waits for) every service not in `wanted` or wanted with
    /// another spec, clearing its report on `board`; then starts each wanted
    /// service not running, with `start(spec, stop)`.
    pub async fn reconcile(
        &mut self,
        wanted: BTreeMap<String, RunSpec>,
        board: &watch::Sender<BTreeMap<String, ServiceReport>>,
        mut start: impl FnMut(RunSpec, CancellationToken) -> JoinHandle<()>,
    ) {
        let stale: Vec<String> = self
            .0
            .iter()
            .filter(|(n, s)| wanted.get(*n) != Some(&s.spec))
            .map(|(n, _)| n.clone())
            .collect();
        let mut stopping = Vec::new();
        for name in stale {
            if let Some(s) = self.0.remove(&name) {
                s.stop.cancel();
                stopping.push((name, s.task));
            }
        }
        for (name, task) in stopping {
            let _ = task.await;
            board.send_modify(|m| {
                m.remove(&name);
            });
        }
        for (name, spec) in wanted {
            if self.0.contains_key(&name) {
                continue;
            }
            let stop = CancellationToken::new();
            let task = start(spec.clone(), stop.clone());
            self.0.insert(name, Supervised { spec, stop, task });
        }
    }
}
