//! Tunnel admission: a worker's tunnel is accepted only for its live
//! session, by that session's secret, and routes its services while the
//! session lasts.

use super::changes::{ChangeKind, Changes, Log};
use super::identity::token_digest;
use super::machine::State;
use crate::routes::TunnelSender;

impl State {
    /// The session generation whose resume token this is, if the worker is
    /// connected. The digests are compared in constant time.
    pub fn verify_tunnel(&self, worker_id: &str, token: &str) -> Option<u64> {
        use subtle::ConstantTimeEq;
        let rec = self.fleet.get(worker_id)?;
        let ok: bool = token_digest(token).ct_eq(&rec.token_digest).into();
        (ok && self.session(worker_id).is_connected()).then_some(rec.generation)
    }

    /// Session `generation`'s tunnel is up: the worker's services are routed
    /// through it. `None` when that session has ended.
    pub fn attach_tunnel(
        &mut self,
        now_ms: u64,
        worker_id: &str,
        generation: u64,
        sender: TunnelSender,
    ) -> Option<Changes> {
        let rec = self.fleet.get(worker_id).filter(|r| r.generation == generation)?;
        let mut out = Changes::default();
        out.logs.push(Log::Tunnel {
            worker: rec.name.clone(),
            worker_id: worker_id.to_string(),
            open: true,
        });
        self.session_mut(worker_id).tunnel = Some((generation, sender));
        self.emit(worker_id, ChangeKind::Updated, "tunnel open", now_ms, &mut out);
        Some(self.done(out))
    }

    /// The tunnel of session `generation` closed (a later session's tunnel stays).
    pub fn detach_tunnel(&mut self, now_ms: u64, worker_id: &str, generation: u64) -> Changes {
        let mut out = Changes::default();
        let Some(local) = self.local.get_mut(worker_id) else {
            return out;
        };
        if local.tunnel.as_ref().is_some_and(|(g, _)| *g == generation) {
            local.tunnel = None;
            out.logs.push(Log::Tunnel {
                worker: self.record(worker_id).name.clone(),
                worker_id: worker_id.to_string(),
                open: false,
            });
            self.emit(worker_id, ChangeKind::Updated, "tunnel closed", now_ms, &mut out);
        }
        self.done(out)
    }
}
