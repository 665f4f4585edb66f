//! What a coordinator is told about the cluster it belongs to. Without
//! `--etcd` there is no cluster: the coordinator keeps its fleet in memory,
//! alone (the embedded default).

use crate::duration::parse_duration;
use std::path::PathBuf;
use std::time::Duration;

/// The cluster's defaults, written once (clap parses them as typed).
pub mod defaults {
    pub const CLUSTER: &str = "edgeplane";
    /// Nomad and Kubernetes use 10-15 s: long enough for an etcd leader
    /// election, short enough that a dead coordinator's workers move soon.
    pub const LEASE_TTL: &str = "15s";
    /// After a leader change, or a coordinator's death, placements stay
    /// where they are this long: the workers are probably reconnecting to
    /// a survivor, services and all.
    pub const FAILOVER_GRACE: &str = "15s";
    pub const COMPACT_INTERVAL: &str = "5m";
}

#[derive(Debug, Clone, clap::Args)]
pub struct ClusterConfig {
    /// etcd endpoints (`http://host:2379`, or `https://` for TLS,
    /// comma-separated). Given, the
    /// coordinator shares its fleet with every coordinator of `--cluster`.
    #[arg(long = "etcd", env = "EDGEPLANE_ETCD_ENDPOINTS", value_delimiter = ',')]
    pub etcd: Vec<String>,

    /// PEM CA to verify etcd's certificate against (`https://` endpoints);
    /// the system roots otherwise.
    #[arg(long = "etcd-ca", env = "EDGEPLANE_ETCD_CA")]
    pub etcd_ca: Option<PathBuf>,

    /// PEM client certificate to present to etcd (`--client-cert-auth`).
    #[arg(long = "etcd-cert", env = "EDGEPLANE_ETCD_CERT", requires = "etcd_key")]
    pub etcd_cert: Option<PathBuf>,

    /// PEM private key of --etcd-cert.
    #[arg(long = "etcd-key", env = "EDGEPLANE_ETCD_KEY", requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,

    /// The cluster's name: every key lives under `/{cluster}/`.
    #[arg(long = "cluster", env = "EDGEPLANE_CLUSTER", default_value = defaults::CLUSTER, value_parser = parse_cluster_name)]
    pub cluster: String,

    /// This coordinator's id in the cluster. Default: the hostname and a
    /// random suffix, kept in `--state-dir` so that a restart keeps it.
    #[arg(long, env = "EDGEPLANE_COORDINATOR_ID", value_parser = parse_coordinator_id)]
    pub coordinator_id: Option<String>,

    /// Where other coordinators reach this one (`http://host:port`).
    /// Default: `http://` and the listen address (when it is not 0.0.0.0).
    #[arg(long, env = "EDGEPLANE_ADVERTISE_PEER")]
    pub advertise_peer: Option<String>,

    /// TTL of this coordinator's etcd lease (renewed at a third of it).
    /// Its keys outlive a crash by at most this long.
    #[arg(long, env = "EDGEPLANE_ETCD_LEASE_TTL", default_value = defaults::LEASE_TTL, value_parser = parse_duration)]
    pub etcd_lease_ttl: Duration,

    /// The secret coordinators of the cluster present to one another when
    /// one forwards a request to a tunnel replica another holds. Without
    /// it, such replicas are reachable only through their own coordinator.
    #[arg(long, env = "EDGEPLANE_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,

    /// How long a newly elected placement leader, and every coordinator
    /// after another one died, leaves placements as they are before
    /// re-placing the services of workers no coordinator holds.
    #[arg(long, env = "EDGEPLANE_FAILOVER_GRACE", default_value = defaults::FAILOVER_GRACE, value_parser = parse_duration)]
    pub failover_grace: Duration,

    /// How often the placement leader compacts etcd's history (up to the
    /// revision of one interval before).
    #[arg(long, env = "EDGEPLANE_ETCD_COMPACT_INTERVAL", default_value = defaults::COMPACT_INTERVAL, value_parser = parse_duration)]
    pub etcd_compact_interval: Duration,

    /// Where the coordinator keeps what must survive a restart (its id).
    #[arg(long = "state-dir", env = "EDGEPLANE_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            etcd: Vec::new(),
            etcd_ca: None,
            etcd_cert: None,
            etcd_key: None,
            cluster: defaults::CLUSTER.into(),
            coordinator_id: None,
            advertise_peer: None,
            etcd_lease_ttl: parse_duration(defaults::LEASE_TTL).expect("the default lease TTL parses"),
            cluster_secret: None,
            failover_grace: parse_duration(defaults::FAILOVER_GRACE).expect("the default failover grace parses"),
            etcd_compact_interval: parse_duration(defaults::COMPACT_INTERVAL)
                .expect("the default compaction interval parses"),
            state_dir: None,
        }
    }
}

impl ClusterConfig {
    /// Whether the fleet is shared through etcd.
    pub fn enabled(&self) -> bool {
        !self.etcd.is_empty()
    }
}

/// A name that is one path segment of an etcd key: letters, digits, `-`,
/// `_`, `.`, 1 to 63 of them.
fn is_segment(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && s != "."
        && s != ".."
}

fn parse_cluster_name(s: &str) -> Result<String, String> {
    if is_segment(s) {
        Ok(s.to_string())
    } else {
        Err("a cluster name is 1 to 63 letters, digits, `-`, `_` or `.`".into())
    }
}

pub fn parse_coordinator_id(s: &str) -> Result<String, String> {
    if is_segment(s) {
        Ok(s.to_string())
    } else {
        Err("a coordinator id is 1 to 63 letters, digits, `-`, `_` or `.`".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_one_key_segment() {
        for good in ["edgeplane", "site-a.eu_1", "0"] {
            assert!(parse_cluster_name(good).is_ok(), "{good}");
        }
        for bad in ["", "a/b", "..", "a b", &"x".repeat(64), "é"] {
            assert!(parse_cluster_name(bad).is_err(), "{bad}");
            assert!(parse_coordinator_id(bad).is_err(), "{bad}");
        }
    }
}
