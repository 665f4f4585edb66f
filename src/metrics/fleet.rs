//! The fleet's counters: state transitions, sessions begun and refused,
//! heartbeats and their round trip, placement runs, and the open
//! connections.

use super::labels::{Kind, Reason, Transition};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::time::Duration;

#[derive(Debug)]
pub struct FleetMetrics {
    transitions: Family<Transition, Counter>,
    sessions: Family<Kind, Counter>,
    refused: Family<Reason, Counter>,
    heartbeats: Counter,
    keepalive_rtt: Histogram,
    placement_runs: Counter,
    placement_duration: Histogram,
    connections: Family<Kind, Gauge>,
}

impl FleetMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = FleetMetrics {
            transitions: Family::default(),
            sessions: Family::default(),
            refused: Family::default(),
            heartbeats: Counter::default(),
            // 100 µs to about 3 s.
            keepalive_rtt: Histogram::new(exponential_buckets(0.0001, 2.0, 15)),
            placement_runs: Counter::default(),
            placement_duration: Histogram::new(exponential_buckets(0.00001, 4.0, 10)),
            connections: Family::default(),
        };
        registry.register(
            "worker_state_transitions",
            "Workers moving from one state to another",
            m.transitions.clone(),
        );
        registry.register(
            "worker_sessions",
            "Worker sessions begun: new records, or resumed ones",
            m.sessions.clone(),
        );
        registry.register(
            "worker_sessions_refused",
            "Worker streams refused, by reason",
            m.refused.clone(),
        );
        registry.register(
            "heartbeats_received",
            "Messages received on worker streams (each counts as a heartbeat)",
            m.heartbeats.clone(),
        );
        registry.register(
            "keepalive_round_trip_seconds",
            "Keepalive round trips as the workers measured them",
            m.keepalive_rtt.clone(),
        );
        registry.register("placement_runs", "Placement runs", m.placement_runs.clone());
        registry.register(
            "placement_run_duration_seconds",
            "How long each placement run took",
            m.placement_duration.clone(),
        );
        registry.register(
            "connections",
            "Connections open now on the coordinator's port, by kind (http1, h2)",
            m.connections.clone(),
        );
        m
    }

    pub fn transition(&self, from: &'static str, to: &'static str) {
        self.transitions.get_or_create(&Transition { from, to }).inc();
    }

    /// `resumed`: the session took back an existing record.
    pub fn session(&self, resumed: bool) {
        let kind = if resumed { "resumed" } else { "new" };
        self.sessions.get_or_create(&Kind { kind }).inc();
    }

    /// `reason`: a short fixed code (never a peer-chosen string).
    pub fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&Reason { reason }).inc();
    }

    pub fn heartbeat(&self) {
        self.heartbeats.inc();
    }

    pub fn keepalive_rtt(&self, rtt: Duration) {
        self.keepalive_rtt.observe(rtt.as_secs_f64());
    }

    pub fn placement_run(&self, took: Duration) {
        self.placement_runs.inc();
        self.placement_duration.observe(took.as_secs_f64());
    }

    /// Counts a connection of `kind` (`http1`, `h2`) as open until the
    /// guard is dropped.
    pub fn open(&self, kind: &'static str) -> Open {
        Open::new(self.connections.get_or_create_owned(&Kind { kind }))
    }
}

/// Something open (a connection, a tunnel stream), counted until dropped.
#[derive(Debug)]
pub struct Open(Gauge);

impl Open {
    pub fn new(gauge: Gauge) -> Self {
        gauge.inc();
        Open(gauge)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}
