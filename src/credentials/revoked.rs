//! Revoked workers: a worker id on this list has its certificates refused,
//! whichever was issued to it, and cannot resume. Kept in the state dir
//! (`revoked.json`).

use super::{load, save, StoreError};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::RwLock;

pub const FILE: &str = "revoked.json";

#[derive(Debug, Default)]
pub struct Revocations {
    path: Option<PathBuf>,
    /// Worker id -> when it was revoked (Unix seconds).
    ids: RwLock<BTreeMap<String, i64>>,
}

impl Revocations {
    pub fn load(path: Option<PathBuf>) -> Result<Self, StoreError> {
        let ids = load(path.as_deref())?;
        Ok(Revocations {
            path,
            ids: RwLock::new(ids),
        })
    }

    pub fn is_revoked(&self, worker_id: &str) -> bool {
        self.ids
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(worker_id)
    }

    /// Adds `worker_id`, and writes the list down before returning.
    pub fn revoke(&self, worker_id: &str, now_unix: i64) -> Result<(), StoreError> {
        let mut ids = self.ids.write().unwrap_or_else(|e| e.into_inner());
        ids.entry(worker_id.to_string()).or_insert(now_unix);
        save(self.path.as_deref(), &*ids)
    }

    /// Learns a revocation made elsewhere (another coordinator, via etcd).
    pub fn learn(&self, worker_id: &str, at_unix: i64) {
        let mut ids = self.ids.write().unwrap_or_else(|e| e.into_inner());
        if ids.insert(worker_id.to_string(), at_unix).is_none() {
            let _ = save(self.path.as_deref(), &*ids);
        }
    }

    pub fn len(&self) -> usize {
        self.ids.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revocation_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let r = Revocations::load(Some(path.clone())).unwrap();
        assert!(!r.is_revoked("w-1"));
        r.revoke("w-1", 100).unwrap();
        assert!(r.is_revoked("w-1"));
        let again = Revocations::load(Some(path)).unwrap();
        assert!(again.is_revoked("w-1") && !again.is_revoked("w-2"));
    }
}
