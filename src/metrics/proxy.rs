//! The proxy's series: requests by service, path and status, how long to
//! the response head, retries, and why attempts failed.

use super::labels::{self, Request, Service, ServiceKind, ServiceVia, Services};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::time::Duration;

/// How a request reached its replica, as a label value.
pub mod via {
    pub const DIRECT: &str = "direct";
    pub const TUNNEL: &str = "tunnel";
    pub const PEER: &str = "peer";
    /// Answered by the proxy itself (no replica: unknown, none ready, ...).
    pub const NONE: &str = "none";
}

type Durations = Family<ServiceVia, Histogram, fn() -> Histogram>;

fn durations() -> Histogram {
    // 0.5 ms to about 16 s, doubling.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

#[derive(Debug)]
pub struct ProxyMetrics {
    services: Services,
    requests: Family<Request, Counter>,
    duration: Durations,
    retries: Family<Service, Counter>,
    upstream_errors: Family<ServiceKind, Counter>,
    tunnel_streams: Gauge,
}

impl ProxyMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = ProxyMetrics {
            services: Services::default(),
            requests: Family::default(),
            duration: Family::new_with_constructor(durations as fn() -> Histogram),
            retries: Family::default(),
            upstream_errors: Family::default(),
            tunnel_streams: Gauge::default(),
        };
        registry.register(
            "proxy_requests",
            "Requests proxied to services (/service/{name}/... and gRPC), by the status answered",
            m.requests.clone(),
        );
        registry.register(
            "proxy_request_duration_seconds",
            "Time from the request to the response head (or the proxy's own answer)",
            m.duration.clone(),
        );
        registry.register(
            "proxy_retries",
            "Attempts sent to another replica after one failed",
            m.retries.clone(),
        );
        registry.register(
            "proxy_upstream_errors",
            "Attempts that got no response head, by kind (connect, timeout, reset)",
            m.upstream_errors.clone(),
        );
        registry.register(
            "tunnel_streams",
            "Streams open now on workers' tunnels: requests in progress and the fast path's raw pipes",
            m.tunnel_streams.clone(),
        );
        m
    }

    /// A stream opened on a worker's tunnel, counted until the guard drops.
    pub fn tunnel_stream(&self) -> super::fleet::Open {
        super::fleet::Open::new(self.tunnel_streams.clone())
    }

    /// A request answered with `code` after `elapsed`, through `via`.
    /// `service` is `None` when the request named no known service.
    pub fn request(&self, service: Option<&str>, via: &'static str, code: u16, elapsed: Duration) {
        let service = match service {
            Some(s) => self.services.label(s),
            None => labels::Name(labels::UNKNOWN.into()),
        };
        self.duration
            .get_or_create(&ServiceVia {
                service: service.clone(),
                via,
            })
            .observe(elapsed.as_secs_f64());
        self.requests.get_or_create(&Request { service, via, code }).inc();
    }

    pub fn retry(&self, service: &str) {
        self.retries
            .get_or_create(&Service {
                service: self.services.label(service),
            })
            .inc();
    }

    /// `kind`: `connect`, `timeout` or `reset`.
    pub fn upstream_error(&self, service: &str, kind: &'static str) {
        self.upstream_errors
            .get_or_create(&ServiceKind {
                service: self.services.label(service),
                kind,
            })
            .inc();
    }
}
