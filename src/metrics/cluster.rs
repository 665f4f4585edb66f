//! A clustered coordinator's series: leadership changes, etcd requests
//! that failed (by what they were for), and how long lease renewals take.

use super::labels::Kind;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::time::Duration;

#[derive(Debug)]
pub struct ClusterMetrics {
    leader_changes: Counter,
    etcd_errors: Family<Kind, Counter>,
    lease_renew: Histogram,
}

impl ClusterMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = ClusterMetrics {
            leader_changes: Counter::default(),
            etcd_errors: Family::default(),
            // 0.5 ms to about 8 s.
            lease_renew: Histogram::new(exponential_buckets(0.0005, 2.0, 15)),
        };
        registry.register(
            "leader_changes",
            "Times this coordinator became or stopped being the placement leader",
            m.leader_changes.clone(),
        );
        registry.register(
            "etcd_request_errors",
            "etcd requests that failed, by what for (lease, write, watch)",
            m.etcd_errors.clone(),
        );
        registry.register(
            "lease_renew_seconds",
            "Time for etcd to answer a lease keepalive",
            m.lease_renew.clone(),
        );
        m
    }

    pub fn leader_change(&self) {
        self.leader_changes.inc();
    }

    /// `kind`: `lease`, `write` or `watch`.
    pub fn etcd_error(&self, kind: &'static str) {
        self.etcd_errors.get_or_create(&Kind { kind }).inc();
    }

    pub fn lease_renewed(&self, took: Duration) {
        self.lease_renew.observe(took.as_secs_f64());
    }
}
