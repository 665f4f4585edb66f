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
    pub fn new(gauges: Gauges) -> Self {
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

/// `edgeplane_build_info{version} 1`.
pub fn build_info(registry: &mut Registry) {
    let info = prometheus_client::metrics::info::Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]);
    registry.register("build", "The edgeplane build serving these metrics", info);
}
