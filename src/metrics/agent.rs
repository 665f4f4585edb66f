//! A worker agent's own series, served on its `--metrics-listen`: how often
//! and why it lost its coordinator, keepalive round trips, and each
//! service's readiness state and time spent loading.

use super::labels::Cause;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::time::Duration;

/// Why the agent had to dial again, as a label value.
pub mod cause {
    /// A session that had been welcomed ended (coordinator gone, stream cut).
    pub const SESSION_LOST: &str = "session_lost";
    /// The coordinator answered and refused (token, certificate, revoked).
    pub const REFUSED: &str = "refused";
    /// No session was reached (connect failed, TLS failed, timed out).
    pub const UNREACHABLE: &str = "unreachable";
}

/// Services the agent's runtime restarted after they exited: shared by the
/// runtime that counts and the metrics that show it.
#[derive(Debug, Clone, Default)]
pub struct Restarts(Counter);

impl Restarts {
    pub fn inc(&self) {
        self.0.inc();
    }

    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

pub struct AgentMetrics {
    registry: Registry,
    reconnects: Family<Cause, Counter>,
    keepalive_rtt: Histogram,
}

impl std::fmt::Debug for AgentMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentMetrics").finish_non_exhaustive()
    }
}

impl AgentMetrics {
    /// The series, `restarts` as the runtime counts them, and `gauges`
    /// (service states, loading times) read at scrape.
    pub fn new(gauges: super::Gauges, restarts: Restarts) -> Self {
        let mut registry = Registry::with_prefix("edgeplane_agent");
        let reconnects = Family::<Cause, Counter>::default();
        registry.register(
            "reconnects",
            "Times the agent dialed again, by cause (session_lost, refused, unreachable)",
            reconnects.clone(),
        );
        let keepalive_rtt = Histogram::new(exponential_buckets(0.0001, 2.0, 15));
        registry.register(
            "keepalive_round_trip_seconds",
            "Keepalive round trips to the coordinator",
            keepalive_rtt.clone(),
        );
        registry.register(
            "service_restarts",
            "Services the runtime started again after they exited",
            restarts.0,
        );
        super::build_info(&mut registry);
        registry.register_collector(Box::new(gauges));
        AgentMetrics {
            registry,
            reconnects,
            keepalive_rtt,
        }
    }

    pub fn reconnect(&self, cause: &'static str) {
        self.reconnects.get_or_create(&Cause { cause }).inc();
    }

    pub fn keepalive_rtt(&self, rtt: Duration) {
        self.keepalive_rtt.observe(rtt.as_secs_f64());
    }

    pub fn encode(&self) -> String {
        super::encode(&self.registry)
    }
}
