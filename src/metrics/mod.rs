//! Prometheus metrics, built with `prometheus-client` and served as the
//! Prometheus text format at `/metrics` (the coordinator's, and a worker
//! agent's on `--metrics-listen`).
//!
//! A leaf: the parts that count (the registry's transitions, the proxy's
//! requests, the sessions) hold the counters they move; what is a reading of
//! current state (workers by state, replicas, gaps, leadership) is read at
//! scrape time through [`gauges::Gauges`], so nothing has to be kept in step.
//!
//! Label sets stay bounded: no worker id on any series by default, and
//! service names, which workers declare, are capped ([`labels::Services`]).

pub mod agent;
pub mod cluster;
pub mod fleet;
pub mod gauges;
pub mod labels;
pub mod proxy;
pub mod serve;

use prometheus_client::registry::Registry;
use std::sync::Arc;

pub use agent::AgentMetrics;
pub use cluster::ClusterMetrics;
pub use fleet::FleetMetrics;
pub use gauges::{GaugeReading, Gauges};
pub use proxy::ProxyMetrics;

/// The `Content-Type` of what [`CoordinatorMetrics::encode`] gives.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Every metric of one coordinator.
pub struct CoordinatorMetrics {
    registry: Registry,
    pub fleet: Arc<FleetMetrics>,
    pub proxy: Arc<ProxyMetrics>,
    pub cluster: Arc<ClusterMetrics>,
}

impl std::fmt::Debug for CoordinatorMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoordinatorMetrics").finish_non_exhaustive()
    }
}

impl CoordinatorMetrics {
    /// The counters, and `gauges` read at each scrape.
    pub fn new(mut gauges: Gauges) -> Self {
        tokio_tasks(&mut gauges);
        let mut registry = Registry::with_prefix("edgeplane");
        let fleet = Arc::new(FleetMetrics::register(&mut registry));
        let proxy = Arc::new(ProxyMetrics::register(&mut registry));
        let cluster = Arc::new(ClusterMetrics::register(&mut registry));
        build_info(&mut registry);
        registry.register_collector(Box::new(gauges));
        CoordinatorMetrics {
            registry,
            fleet,
            proxy,
            cluster,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        encode(&self.registry)
    }
}

/// `registry`'s Prometheus text exposition.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::with_capacity(8 * 1024);
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, registry);
    out
}

/// `edgeplane_tokio_tasks`: the tasks alive in the runtime that serves the
/// scrape, read at scrape time (the soak watches it for leaks). No sample
/// when a scrape is encoded outside a runtime.
pub fn tokio_tasks(gauges: &mut Gauges) {
    gauges.add("tokio_tasks", "Tasks alive now in this process's tokio runtime", || {
        match tokio::runtime::Handle::try_current() {
            Ok(h) => vec![(Vec::new(), h.metrics().num_alive_tasks() as i64)],
            Err(_) => Vec::new(),
        }
    });
}

/// `edgeplane_build_info{version} 1`.
pub fn build_info(registry: &mut Registry) {
    let info = prometheus_client::metrics::info::Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]);
    registry.register("build", "The edgeplane build serving these metrics", info);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the one sample of `name` in an exposition.
    fn value(text: &str, name: &str) -> Option<i64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_tokio_tasks_gauge_counts_live_tasks() {
        let m = CoordinatorMetrics::new(Gauges::default());
        let before = value(&m.encode(), "edgeplane_tokio_tasks").expect("a tokio_tasks sample");
        let stop = tokio_util::sync::CancellationToken::new();
        let held: Vec<_> = (0..50).map(|_| tokio::spawn(stop.clone().cancelled_owned())).collect();
        let during = value(&m.encode(), "edgeplane_tokio_tasks").unwrap();
        assert!(during >= before + 50, "before {before}, with 50 more tasks {during}");
        stop.cancel();
        for h in held {
            h.await.unwrap();
        }
        let after = value(&m.encode(), "edgeplane_tokio_tasks").unwrap();
        assert!(
            after < during,
            "tasks ended, the gauge did not fall: {after} >= {during}"
        );
        // Outside a runtime there is nothing to read, and no sample.
        let text = std::thread::spawn(move || m.encode()).join().unwrap();
        assert!(value(&text, "edgeplane_tokio_tasks").is_none());
        assert!(text.contains("# TYPE edgeplane_tokio_tasks gauge"));
    }
}
