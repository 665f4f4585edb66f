//! Follows the cluster's keys in etcd and tells the registry what other
//! coordinators did: records written or removed, sessions taken or given
//! up. A list at one revision, then a watch from the next; after any
//! failure (etcd away, the watch compacted), a fresh list, with what
//! vanished meanwhile reported as removed.

use super::keys::Keys;
use super::member::Member;
use super::record_codec::{decode_session, decode_with_writer, Times};
use crate::registry::Registry;
use etcd_client::{EventType, GetOptions, WatchOptions};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// What the watcher has told the registry of, to find what vanished
/// while it was not watching.
#[derive(Default)]
struct Known {
    records: HashSet<String>,
    sessions: HashSet<String>,
}

/// Applies the leader's placement for a worker (`worker_id`, services).
pub type ApplyPlacement = Arc<dyn Fn(&str, std::collections::BTreeSet<String>) + Send + Sync>;

/// Learns a revocation made by any coordinator (`worker_id`, when in Unix
/// seconds): refuse its certificates, close its session if held here.
pub type LearnRevocation = Arc<dyn Fn(&str, i64) + Send + Sync>;

pub struct Watcher {
    member: Arc<Member>,
    registry: Arc<Registry>,
    times: Times,
    keys: Keys,
    known: Known,
    placement: ApplyPlacement,
    revocation: Option<LearnRevocation>,
}

impl Watcher {
    pub fn new(member: Arc<Member>, registry: Arc<Registry>, times: Times, placement: ApplyPlacement) -> Self {
        Watcher {
            keys: member.keys().clone(),
            member,
            registry,
            times,
            known: Known::default(),
            placement,
            revocation: None,
        }
    }

    /// Also follows `revoked/`, telling `learn` of each revocation (those
    /// made before this coordinator started too).
    pub fn with_revocations(mut self, learn: LearnRevocation) -> Self {
        self.revocation = Some(learn);
        self
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                r = self.follow() => if let Err(e) = r {
                    self.member.metrics().etcd_error("watch");
                    warn!(error = %e, "watch on the cluster's keys ended; listing them again");
                },
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    async fn follow(&mut self) -> Result<(), etcd_client::Error> {
        let mut client = self.member.client();
        let root = self.keys.root().to_string();
        let listed = client.get(root.clone(), Some(GetOptions::new().with_prefix())).await?;
        let revision = listed.header().map_or(0, |h| h.revision());
        let (workers, sessions, placements) = (self.keys.workers(), self.keys.sessions(), self.keys.placements());
        let mut records = HashSet::new();
        let mut held = HashSet::new();
        // Records first: a session key names a record the registry must know.
        for kv in listed.kvs() {
            if let Some(id) = self.keys.id_in(&workers, kv.key()) {
                records.insert(id.to_string());
                self.record(id, kv.value());
            }
        }
        for kv in listed.kvs() {
            if let Some(id) = self.keys.id_in(&sessions, kv.key()) {
                held.insert(id.to_string());
                self.session(id, Some(kv.value()));
            }
        }
        let revoked = self.keys.revocations();
        for kv in listed.kvs() {
            if let Some(id) = self.keys.id_in(&placements, kv.key()) {
                self.placement(id, kv.value());
            } else if let Some(id) = self.keys.id_in(&revoked, kv.key()) {
                self.revoked(id, kv.value());
            }
        }
        for gone in self.known.sessions.difference(&held) {
            self.registry.learn_session(gone, None);
        }
        for gone in self.known.records.difference(&records) {
            self.registry.learn_removed(gone);
        }
        self.known = Known {
            records,
            sessions: held,
        };

        let options = WatchOptions::new().with_prefix().with_start_revision(revision + 1);
        let mut stream = client.watch(root, Some(options)).await?;
        while let Some(resp) = stream.message().await? {
            if resp.canceled() {
                debug!(reason = resp.cancel_reason(), "watch cancelled");
                return Ok(());
            }
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                let put = ev.event_type() == EventType::Put;
                if let Some(id) = self.keys.id_in(&workers, kv.key()) {
                    if put {
                        self.known.records.insert(id.to_string());
                        self.record(id, kv.value());
                    } else {
                        self.known.records.remove(id);
                        self.registry.learn_removed(id);
                    }
                } else if let Some(id) = self.keys.id_in(&placements, kv.key()) {
                    if put {
                        self.placement(id, kv.value());
                    }
                } else if let Some(id) = self.keys.id_in(&revoked, kv.key()) {
                    // A revocation is never taken back by deleting its key.
                    if put {
                        self.revoked(id, kv.value());
                    }
                } else if let Some(id) = self.keys.id_in(&sessions, kv.key()) {
                    if put {
                        self.known.sessions.insert(id.to_string());
                        self.session(id, Some(kv.value()));
                    } else {
                        self.known.sessions.remove(id);
                        self.session(id, None);
                    }
                }
            }
        }
        Ok(())
    }

    fn record(&self, id: &str, value: &[u8]) {
        match decode_with_writer(value, self.times) {
            // This coordinator's own write, back through the watch.
            Ok((_, writer)) if writer == self.member.id() => {}
            Ok((rec, _)) if rec.worker_id == id => self.registry.learn_record(rec),
            Ok(_) => warn!(worker_id = %id, "a stored record names another worker id; ignored"),
            Err(e) => warn!(worker_id = %id, error = %e, "a stored record does not decode; ignored"),
        }
    }

    fn revoked(&self, id: &str, value: &[u8]) {
        if let Some(learn) = &self.revocation {
            if !crate::registry::is_worker_id(id) {
                warn!(key = %id, "a revocation key names no worker id; ignored");
                return;
            }
            let at = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            learn(id, at);
        }
    }

    fn placement(&self, id: &str, value: &[u8]) {
        match super::record_codec::decode_placement(value) {
            Ok(placed) => (self.placement)(id, placed),
            Err(e) => warn!(worker_id = %id, error = %e, "a placement key does not decode; ignored"),
        }
    }

    fn session(&self, id: &str, value: Option<&[u8]>) {
        match value.map(decode_session) {
            None => self.registry.learn_session(id, None),
            Some(Ok(hold)) => self.registry.learn_session(id, Some(hold)),
            Some(Err(e)) => warn!(worker_id = %id, error = %e, "a session key does not decode; ignored"),
        }
    }
}
