//! A worker session's life: register (or resume), readiness reports,
//! disconnect, drain, and the health clock's sweep (healthy <-> degraded,
//! then removal).

use super::changes::{ChangeKind, Changes, Log, RegistryEvent};
use super::fleet::{FleetChange, Held};
use super::identity::{self, new_resume_token, new_worker_id, token_digest};
use super::limits;
use super::local::Local;
use super::machine::State;
use super::queries::LookupError;
use super::record::{FleetRecord, ServiceEntry};
use super::session::{Notice, SessionLink};
use super::state::{service_state_str, WorkerState};
use super::view::WorkerView;
use crate::proto::{Hello, ServiceState, ServiceStatus};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegisterError {
    #[error("the coordinator holds its maximum of {0} workers")]
    Full(usize),
    #[error("instance id is in use by a connected session of worker `{0}`; resume with its token, or retry once that session has ended")]
    InstanceLive(String),
    #[error("the client certificate names worker {certified}; this Hello claims worker {claimed}")]
    NotYours { certified: String, claimed: String },
}

/// What a successful Hello gets.
#[derive(Debug)]
pub struct Registered {
    pub worker_id: String,
    pub name: String,
    pub resume_token: String,
    pub resumed: bool,
    /// Identifies this session of the worker; stale sessions' calls are ignored.
    pub generation: u64,
    /// Services placed on this worker (kept across a resumption).
    pub placed: BTreeSet<String>,
    pub assignment_version: u64,
}

/// How a Hello found the record it resumes.
#[derive(Debug, Clone, Copy)]
enum ResumeBy {
    Token,
    InstanceId,
    Certificate,
}

impl State {
    /// Binds a new stream to a worker record: resumes the record its token
    /// names, else the disconnected record of the same instance id (a live
    /// one is refused: only the token may take over a live session), else a
    /// new record, with the previous id the worker asks for when it is free.
    /// `adopt`: for a new record only, services the worker still runs from an
    /// earlier coordinator's placement (name -> URL the proxy dials).
    pub fn register(
        &mut self,
        now_ms: u64,
        hello: &Hello,
        link: Arc<SessionLink>,
        adopt: &BTreeMap<String, String>,
        certified: Option<&str>,
    ) -> (Result<Registered, RegisterError>, Changes) {
        let mut out = Changes::default();
        let result = match certified {
            Some(id) => self.bind_certified(now_ms, id, hello, link, adopt, &mut out),
            None => self.bind(now_ms, hello, link, adopt, None, &mut out),
        };
        (result, self.done(out))
    }

    /// A session whose client certificate names `id`: that id and no
    /// other. A resume token or previous id for another worker is refused
    /// (one machine's certificate cannot take over another's record); the
    /// certificate takes over a live session as the token would.
    fn bind_certified(
        &mut self,
        now_ms: u64,
        id: &str,
        hello: &Hello,
        link: Arc<SessionLink>,
        adopt: &BTreeMap<String, String>,
        out: &mut Changes,
    ) -> Result<Registered, RegisterError> {
        let not_yours = |claimed: &str| RegisterError::NotYours {
            certified: id.to_string(),
            claimed: claimed.to_string(),
        };
        if !hello.resume_token.is_empty() {
            if let Some(rec) = self.fleet.by_token(&token_digest(&hello.resume_token)) {
                if rec.worker_id != id {
                    return Err(not_yours(&rec.worker_id));
                }
            }
        }
        if !hello.previous_worker_id.is_empty() && hello.previous_worker_id != id {
            return Err(not_yours(&hello.previous_worker_id));
        }
        self.bind(now_ms, hello, link, adopt, Some(id), out)
    }

    fn bind(
        &mut self,
        now_ms: u64,
        hello: &Hello,
        link: Arc<SessionLink>,
        adopt: &BTreeMap<String, String>,
        // The id the client certificate names: its record is resumed, or a
        // new one gets that id; the token and instance id are not looked at.
        certified: Option<&str>,
        out: &mut Changes,
    ) -> Result<Registered, RegisterError> {
        let mut target: Option<(String, ResumeBy)> =
            certified.and_then(|id| self.fleet.get(id).map(|_| (id.to_string(), ResumeBy::Certificate)));
        if certified.is_none() && !hello.resume_token.is_empty() {
            match self.fleet.by_token(&token_digest(&hello.resume_token)) {
                Some(rec) => target = Some((rec.worker_id.clone(), ResumeBy::Token)),
                None => out.logs.push(Log::UnknownToken {
                    worker: hello.name.clone(),
                }),
            }
        }
        if certified.is_none() && target.is_none() && !hello.instance_id.is_empty() {
            if let Some(rec) = self.fleet.by_instance(&hello.instance_id) {
                let local = self.session(&rec.worker_id);
                // Live here or on another coordinator: only the token may
                // take over a live session.
                if local.is_connected() || local.held_elsewhere() {
                    out.logs.push(Log::SecondLiveSession {
                        worker: hello.name.clone(),
                        worker_id: rec.worker_id.clone(),
                    });
                    return Err(RegisterError::InstanceLive(rec.name.clone()));
                }
                target = Some((rec.worker_id.clone(), ResumeBy::InstanceId));
            }
        }
        // Above the record's own: a record resumed from another coordinator
        // carries that coordinator's generation, and the newer session
        // must compare newer everywhere.
        if let Some((id, _)) = &target {
            self.next_generation = self.next_generation.max(self.record(id).generation);
        }
        self.next_generation += 1;
        let generation = self.next_generation;
        let (token, digest) = new_resume_token();
        if let Some((id, how)) = target {
            return Ok(self.resume(now_ms, id, how, hello, link, generation, (token, digest), out));
        }

        let max = self.config.max_workers;
        // The records this coordinator is responsible for (held, or last
        // held and waiting to resume): in a cluster, the others' are theirs
        // to bound, so that a fleet can outgrow one process.
        let mine = if self.me.is_some() {
            self.local.values().filter(|l| l.elsewhere.is_none()).count()
        } else {
            self.fleet.len()
        };
        if mine >= max {
            out.logs.push(Log::Full {
                worker: hello.name.clone(),
                max,
            });
            return Err(RegisterError::Full(max));
        }
        let taken = |id: &str| self.fleet.get(id).is_some();
        let mut id = match (certified, &hello.previous_worker_id) {
            (Some(certified), _) => certified.to_string(),
            (None, prev) if identity::is_worker_id(prev) && !taken(prev) => prev.clone(),
            _ => new_worker_id(),
        };
        while taken(&id) {
            id = new_worker_id();
        }
        if self
            .fleet
            .records()
            .any(|r| r.name == hello.name && self.session(&r.worker_id).is_connected())
        {
            out.logs.push(Log::SameName {
                worker: hello.name.clone(),
                worker_id: id.clone(),
            });
        }
        let mut rec = FleetRecord::new(id.clone(), hello, generation, digest, now_ms);
        rec.adopt(adopt);
        let (name, placed) = (rec.name.clone(), rec.placed.clone());
        self.put(rec);
        self.local.insert(id.clone(), Local::connected(link, now_ms));
        self.fleet.hold(
            &id,
            Some(Held {
                generation,
                status: WorkerState::Healthy,
            }),
        );
        out.logs.push(Log::Registered {
            worker: name.clone(),
            worker_id: id.clone(),
            reused_previous_id: id == hello.previous_worker_id,
        });
        self.emit(&id, ChangeKind::Added, "registered", now_ms, out);
        Ok(Registered {
            worker_id: id,
            name,
            resume_token: token,
            resumed: false,
            generation,
            placed,
            assignment_version: 1,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn resume(
        &mut self,
        now_ms: u64,
        id: String,
        how: ResumeBy,
        hello: &Hello,
        link: Arc<SessionLink>,
        generation: u64,
        (token, digest): (String, [u8; 32]),
        out: &mut Changes,
    ) -> Registered {
        let local = self.session_mut(&id);
        if let Some(old) = local.link.replace(link) {
            out.notices
                .push((old, Notice::Close("replaced by a newer session of this worker".into())));
        }
        local.tunnel = None;
        local.elsewhere = None;
        let mut rec = self.record(&id).clone();
        rec.instance_id = hello.instance_id.clone();
        rec.apply_hello(hello);
        rec.token_digest = digest;
        rec.generation = generation;
        rec.sessions += 1;
        rec.disconnected_ms = None;
        rec.tunnel_wanted = hello.tunnel;
        rec.assignment_version += 1;
        let registered = Registered {
            worker_id: id.clone(),
            name: rec.name.clone(),
            resume_token: token,
            resumed: true,
            generation,
            placed: rec.placed.clone(),
            assignment_version: rec.assignment_version,
        };
        self.put(rec);
        let how = match how {
            ResumeBy::Token => "resume token",
            ResumeBy::InstanceId => "instance id",
            ResumeBy::Certificate => "certificate",
        };
        self.changed(&id, &format!("resumed by {how}"), now_ms, out);
        let status = self.session(&id).status;
        self.fleet.hold(&id, Some(Held { generation, status }));
        registered
    }

    /// A readiness report from the worker's session `generation`.
    /// `managed`: the service is the catalog's, so placement owns where it
    /// runs; a report of one neither declared nor placed on this worker is
    /// not recorded (see below). Other names (an embedding program's own
    /// reports) are recorded as reported.
    pub fn service_status(
        &mut self,
        now_ms: u64,
        worker_id: &str,
        generation: u64,
        status: ServiceStatus,
        managed: bool,
    ) -> Changes {
        let mut out = Changes::default();
        let Some(status) = limits::clean_status(status) else {
            return out;
        };
        let Some(rec) = self.fleet.get(worker_id).filter(|r| r.generation == generation) else {
            return out;
        };
        let state = ServiceState::try_from(status.state).unwrap_or(ServiceState::Unspecified);
        // A catalog service goes where placement puts it (or where the worker
        // declares it). A copy the worker still runs from before a partition
        // (re-placed elsewhere meanwhile), or one it is stopping after
        // placement took it away, is reported but never recorded: recorded,
        // a tunnel worker's would be routed, a replica the fleet did not
        // place beside the one it did.
        if managed && !rec.services.contains_key(&status.service) {
            out.logs.push(Log::UnplacedService {
                worker: rec.name.clone(),
                service: status.service,
            });
            return out;
        }
        if !rec.services.contains_key(&status.service) && rec.services.len() >= limits::MAX_SERVICES {
            out.logs.push(Log::TooManyServices {
                worker: rec.name.clone(),
                service: status.service,
            });
            return out;
        }
        let first = !rec.services.contains_key(&status.service);
        let mut rec = rec.clone();
        let entry = rec
            .services
            .entry(status.service.clone())
            .or_insert_with(ServiceEntry::reported);
        if entry.state == state && entry.message == status.message {
            // Nothing new, though a first report (pending, no message) still
            // records the service, silently.
            if first {
                self.put(rec);
            }
            return out;
        }
        if entry.state == state && state == ServiceState::Ready {
            // Ready, and still ready in other words ("declared by the
            // worker", then the probe's first passing check): recorded, but
            // no change a watcher or a route needs. Sent, every worker start
            // gave every watcher a "ready -> ready".
            entry.message = status.message;
            self.put(rec);
            return out;
        }
        let reason = format!(
            "service {} {} -> {}",
            status.service,
            service_state_str(entry.state),
            service_state_str(state)
        );
        entry.state = state;
        entry.message = status.message;
        out.logs.push(Log::ServiceState {
            worker: rec.name.clone(),
            worker_id: worker_id.to_string(),
            service: status.service,
            state,
        });
        self.put(rec);
        self.emit(worker_id, ChangeKind::Updated, &reason, now_ms, &mut out);
        self.done(out)
    }

    /// Session `generation`'s stream ended: the worker is unroutable from now on.
    pub fn disconnect(&mut self, now_ms: u64, worker_id: &str, generation: u64, reason: &str) -> Changes {
        let mut out = Changes::default();
        if self.fleet.get(worker_id).is_none_or(|r| r.generation != generation) {
            return out;
        }
        let local = self.session_mut(worker_id);
        let Some(link) = local.link.take() else { return out };
        local.last_heard_ms = link.heard_ms();
        local.tunnel = None;
        self.fleet.hold(worker_id, None);
        let mut rec = self.record(worker_id).clone();
        rec.disconnected_ms = Some(now_ms);
        self.put(rec);
        self.changed(worker_id, reason, now_ms, &mut out);
        self.done(out)
    }

    /// A message arrived from a worker the clock had marked degraded.
    pub fn refresh(&mut self, now_ms: u64, worker_id: &str) -> Changes {
        let mut out = Changes::default();
        if self.fleet.get(worker_id).is_some() {
            self.recheck(worker_id, "heard again", now_ms, &mut out);
        }
        self.done(out)
    }

    /// Marks a worker draining and tells it so.
    pub fn drain(&mut self, now_ms: u64, worker: &str, reason: &str) -> Result<(WorkerView, Changes), LookupError> {
        let id = self.find(worker)?;
        let mut out = Changes::default();
        if !self.record(&id).draining {
            let mut rec = self.record(&id).clone();
            rec.draining = true;
            self.put(rec);
            if let Some(link) = &self.session(&id).link {
                out.notices.push((link.clone(), Notice::Drain(reason.to_string())));
            }
            let why = if reason.is_empty() {
                "drained by operator".to_string()
            } else {
                format!("drained: {reason}")
            };
            self.changed(&id, &why, now_ms, &mut out);
        }
        Ok((self.view(&id, now_ms), self.done(out)))
    }

    /// Runs the health clock once: healthy <-> degraded, and removal of
    /// records silent for the worker timeout.
    pub fn sweep(&mut self, now_ms: u64) -> Changes {
        let mut out = Changes::default();
        let timeout = self.config.worker_timeout;
        let timeout_ms = timeout.as_millis() as u64;
        let hb = self.heartbeat_ms();
        let mut expired = Vec::new();
        let mut moved = Vec::new();
        for (id, local) in &self.local {
            // Another coordinator's (or, unheld, the one it last had): its
            // clock is not this coordinator's to run.
            if local.elsewhere.is_some() {
                continue;
            }
            let silent = now_ms.saturating_sub(local.heard_ms());
            if silent > timeout_ms {
                expired.push((id.clone(), silent));
                continue;
            }
            // Drain is fleet state, but every change of it re-derives the
            // status (`changed`), so the status already says it: no store
            // lookup per worker per pass (the pass holds the lock, and at
            // 10,000 workers the lookups made it 3x longer).
            let draining = local.status == WorkerState::Draining;
            if local.derive_status(draining, now_ms, hb) != local.status {
                moved.push((id.clone(), silent));
            }
        }
        for (id, silent) in moved {
            let reason = format!(
                "silent for {}",
                crate::duration::format_short(Duration::from_millis(silent))
            );
            self.recheck(&id, &reason, now_ms, &mut out);
        }
        for (id, silent) in expired {
            let reason = format!(
                "removed: nothing heard for {} (worker timeout {})",
                crate::duration::format_short(Duration::from_millis(silent)),
                crate::duration::format_short(timeout)
            );
            self.remove(&id, &reason, now_ms, &mut out);
        }
        self.done(out)
    }

    /// Removes a worker's record now, closing its live session with a
    /// goodbye (`edgeplane revoke`). Returns its id and whether a session
    /// was open.
    pub fn revoke(&mut self, now_ms: u64, worker: &str, reason: &str) -> Result<(String, bool, Changes), LookupError> {
        let id = self.find(worker)?;
        let mut out = Changes::default();
        let live = self.session(&id).link.is_some();
        self.remove(&id, reason, now_ms, &mut out);
        Ok((id, live, self.done(out)))
    }

    fn remove(&mut self, id: &str, reason: &str, now_ms: u64, out: &mut Changes) {
        let worker = self.view(id, now_ms);
        if let Some(link) = &self.session(id).link {
            out.notices.push((link.clone(), Notice::Close(reason.to_string())));
            self.fleet.hold(id, None);
        }
        self.fleet.apply(FleetChange::Remove(id.to_string()));
        self.local.remove(id);
        self.routing.remove(id);
        out.logs.push(Log::Removed {
            worker: worker.name.clone(),
            worker_id: id.to_string(),
            reason: reason.to_string(),
        });
        out.events.push(RegistryEvent {
            kind: ChangeKind::Removed,
            worker,
            reason: reason.to_string(),
        });
    }

    /// Ends every open session with a goodbye (coordinator shutdown).
    pub fn close_all(&self, reason: &str) -> Changes {
        let mut out = Changes::default();
        for local in self.local.values() {
            if let Some(l) = &local.link {
                out.notices.push((l.clone(), Notice::Close(reason.to_string())));
            }
        }
        out
    }
}
