//! Where the cluster keeps what in etcd. Everything lives under
//! `/{cluster}/`, so that several clusters can share one etcd:
//!
//! - `coordinators/{id}`: one per live coordinator, on its lease (it
//!   vanishes when the coordinator dies or shuts down); the value says
//!   where its peers reach it.
//! - `workers/{worker_id}`: the worker's fleet record (not on a lease: a
//!   record outlives the coordinator that wrote it).
//! - `sessions/{worker_id}`: which coordinator holds the worker's stream,
//!   on that coordinator's lease.
//! - `placements/{worker_id}`: the services the placement leader wants on
//!   the worker, applied by the coordinator that holds it.
//! - `revoked/{worker_id}`: a revoked worker (not on a lease: every
//!   coordinator refuses its certificates for good); the value is when, in
//!   Unix seconds.
//! - `election`: the placement leader's election.

/// The keys of one cluster.
#[derive(Debug, Clone)]
pub struct Keys {
    root: String,
}

impl Keys {
    /// `cluster` is a checked name ([`super::config::ClusterConfig`]).
    pub fn new(cluster: &str) -> Self {
        Keys {
            root: format!("/{cluster}/"),
        }
    }

    /// Every key of the cluster.
    pub fn root(&self) -> &str {
        &self.root
    }

    pub fn coordinators(&self) -> String {
        format!("{}coordinators/", self.root)
    }

    pub fn coordinator(&self, id: &str) -> String {
        format!("{}coordinators/{id}", self.root)
    }

    pub fn workers(&self) -> String {
        format!("{}workers/", self.root)
    }

    pub fn worker(&self, worker_id: &str) -> String {
        format!("{}workers/{worker_id}", self.root)
    }

    pub fn sessions(&self) -> String {
        format!("{}sessions/", self.root)
    }

    pub fn session(&self, worker_id: &str) -> String {
        format!("{}sessions/{worker_id}", self.root)
    }

    pub fn placements(&self) -> String {
        format!("{}placements/", self.root)
    }

    pub fn placement(&self, worker_id: &str) -> String {
        format!("{}placements/{worker_id}", self.root)
    }

    pub fn revocations(&self) -> String {
        format!("{}revoked/", self.root)
    }

    pub fn revoked(&self, worker_id: &str) -> String {
        format!("{}revoked/{worker_id}", self.root)
    }

    pub fn election(&self) -> String {
        format!("{}election", self.root)
    }

    /// The id at the end of a key under `prefix`, if it is one.
    pub fn id_in<'k>(&self, prefix: &str, key: &'k [u8]) -> Option<&'k str> {
        let rest = key.strip_prefix(prefix.as_bytes())?;
        let id = std::str::from_utf8(rest).ok()?;
        (!id.is_empty() && !id.contains('/')).then_some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clusters_do_not_overlap() {
        let a = Keys::new("a");
        let ab = Keys::new("ab");
        assert!(!ab.worker("w").starts_with(a.root()));
        assert_eq!(a.id_in(&a.workers(), a.worker("w-1").as_bytes()), Some("w-1"));
        assert_eq!(a.id_in(&a.workers(), b"/a/workers/"), None);
        assert_eq!(a.id_in(&a.workers(), b"/a/workers/x/y"), None);
        assert_eq!(a.id_in(&a.workers(), ab.worker("w").as_bytes()), None);
    }
}
