//! The route table: for each service, the endpoints that may receive
//! traffic now, and why the others may not.
//!
//! The registry publishes it as an immutable snapshot on every change that
//! matters to routing; the proxy and the per-service health reporter only
//! read snapshots, so the request path never takes the registry lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;

/// Live load figures of one endpoint, kept across snapshots (the registry
/// reuses the same `Arc` while the endpoint exists) so the balancer's view
/// survives route changes.
#[derive(Debug, Default)]
pub struct EndpointLoad {
    /// Requests sent and not yet finished.
    pub outstanding: AtomicUsize,
    /// Passive outlier detection: no traffic until this time (ms on the proxy's clock).
    pub ejected_until_ms: AtomicU64,
}

/// The HTTP/2 client end of a worker's tunnel.
pub type TunnelSender = hyper::client::conn::http2::SendRequest<axum::body::Body>;

/// How the proxy reaches a replica.
#[derive(Debug, Clone)]
pub enum Via {
    /// Dial `origin` (the service's URL, or the worker's advertise address).
    Direct,
    /// Send down the worker's own tunnel; the worker forwards to the service.
    Tunnel(TunnelSender),
    /// Through the coordinator that holds the worker's session (its tunnel
    /// ends there): `origin` is that coordinator's peer address, and the
    /// request names the worker in [`PEER_WORKER_HEADER`].
    Peer,
}

/// Where services are served: `/service/{name}/...`.
pub const SERVICE_PREFIX: &str = "/service";

/// A request forwarded by another coordinator of the cluster: the cluster
/// secret (`Bearer`), checked in constant time.
pub const PEER_AUTH_HEADER: &str = "x-edgeplane-peer-authorization";
/// The worker a peer-forwarded request is for: the receiving coordinator
/// sends it down that worker's tunnel, and nowhere else (never to a third
/// coordinator), so a request crosses at most one hop between coordinators.
pub const PEER_WORKER_HEADER: &str = "x-edgeplane-peer-worker";

/// Where one replica of a service can be reached.
#[derive(Debug)]
pub struct Endpoint {
    pub worker_id: String,
    pub worker_name: String,
    /// `scheme://authority` of the service on its worker.
    pub origin: http::Uri,
    /// Path prefix the service is mounted under ("" for none).
    pub prefix: String,
    pub via: Via,
    pub load: Arc<EndpointLoad>,
}

/// Why a service URL cannot be used. Service URLs are `http://`, or
/// `https://` (dialed with TLS and verified: see [`crate::upstream::ServiceTls`]).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ServiceUrlError {
    #[error("scheme `{0}` is not supported; a service URL is http://HOST:PORT[/PREFIX] or https://HOST:PORT[/PREFIX]")]
    Scheme(String),
    #[error("not a URL of the form http(s)://HOST:PORT[/PREFIX]")]
    Malformed,
}

/// Checks that `url` is a service URL the coordinator and workers can
/// dial: `http(s)://HOST[:PORT][/PREFIX]`.
pub fn check_service_url(url: &str) -> Result<http::Uri, ServiceUrlError> {
    let uri: http::Uri = url.parse().map_err(|_| ServiceUrlError::Malformed)?;
    let scheme = uri.scheme_str().ok_or(ServiceUrlError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(ServiceUrlError::Scheme(scheme.to_string()));
    }
    if uri.authority().is_none_or(|a| a.host().is_empty()) {
        return Err(ServiceUrlError::Malformed);
    }
    Ok(uri)
}

impl Endpoint {
    /// Parses a service URL (`http(s)://host:port[/prefix]`); `None` for
    /// anything [`check_service_url`] refuses.
    pub fn parse_url(url: &str) -> Option<(http::Uri, String)> {
        let uri = check_service_url(url).ok()?;
        let scheme = uri.scheme()?.clone();
        let authority = uri.authority()?.clone();
        let origin = http::Uri::builder()
            .scheme(scheme)
            .authority(authority)
            .path_and_query("/")
            .build()
            .ok()?;
        let prefix = uri.path().trim_end_matches('/').to_string();
        Some((origin, prefix))
    }
}

/// Why a service has no endpoint to send to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// No worker runs or declares it.
    NonePlaced,
    /// Every replica is still loading.
    AllLoading,
    /// Every replica failed its readiness check.
    AllFailed,
    /// Replicas are ready but their workers are degraded, draining or disconnected.
    AllWorkersUnhealthy,
    /// Replicas are ready on healthy workers but the proxy has no way to
    /// them yet: a tunnel worker whose tunnel is not open (it opens right
    /// after the session starts), or a URL the proxy cannot use.
    Unreachable,
}

impl Unavailable {
    pub fn code(self) -> &'static str {
        match self {
            Unavailable::NonePlaced => "none_placed",
            Unavailable::AllLoading => "all_loading",
            Unavailable::AllFailed => "all_failed",
            Unavailable::AllWorkersUnhealthy => "all_workers_unhealthy",
            Unavailable::Unreachable => "unreachable",
        }
    }

    pub fn explain(self, service: &str) -> String {
        match self {
            Unavailable::NonePlaced => format!("no worker runs `{service}`"),
            Unavailable::AllLoading => format!("every replica of `{service}` is still loading"),
            Unavailable::AllFailed => format!("every replica of `{service}` failed its readiness check"),
            Unavailable::AllWorkersUnhealthy => {
                format!("the workers running `{service}` are degraded, draining or disconnected")
            }
            Unavailable::Unreachable => format!(
                "the ready replicas of `{service}` cannot be reached yet (their tunnels are not open, or their URLs are unusable)"
            ),
        }
    }
}

/// One service's routes.
#[derive(Debug, Default)]
pub struct ServiceRoutes {
    /// Ready replicas on healthy, non-draining workers.
    pub ready: Vec<Arc<Endpoint>>,
    /// Replicas known in any state.
    pub total: usize,
    pub loading: usize,
    pub failed: usize,
    /// Ready replicas whose worker may not take traffic.
    pub unhealthy: usize,
    /// Ready replicas on healthy workers with nowhere to send to (see
    /// [`Unavailable::Unreachable`]): not failed, and not to be called so.
    pub unreachable: usize,
}

impl ServiceRoutes {
    /// `None` when there is an endpoint to send to.
    pub fn unavailable(&self) -> Option<Unavailable> {
        if !self.ready.is_empty() {
            return None;
        }
        Some(if self.total == 0 {
            Unavailable::NonePlaced
        } else if self.unhealthy > 0 {
            Unavailable::AllWorkersUnhealthy
        } else if self.unreachable > 0 {
            Unavailable::Unreachable
        } else if self.loading > 0 {
            Unavailable::AllLoading
        } else if self.failed > 0 {
            Unavailable::AllFailed
        } else {
            Unavailable::AllLoading
        })
    }
}

/// An immutable snapshot of every service's routes.
#[derive(Debug, Default, Clone)]
pub struct RouteTable {
    pub services: HashMap<String, Arc<ServiceRoutes>>,
}

impl RouteTable {
    pub fn get(&self, service: &str) -> Option<&Arc<ServiceRoutes>> {
        self.services.get(service)
    }

    /// Whether a service has at least one ready endpoint.
    pub fn is_serving(&self, service: &str) -> bool {
        self.get(service).is_some_and(|r| !r.ready.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_origin_and_prefix() {
        let (o, p) = Endpoint::parse_url("http://127.0.0.1:8100").unwrap();
        assert_eq!(o.to_string(), "http://127.0.0.1:8100/");
        assert_eq!(p, "");
        let (_, p) = Endpoint::parse_url("http://h:1/api/v1/").unwrap();
        assert_eq!(p, "/api/v1");
        assert!(Endpoint::parse_url("ftp://h:1").is_none());
        assert!(Endpoint::parse_url("not a url").is_none());
        let (o, p) = Endpoint::parse_url("https://h:8443/v1").unwrap();
        assert_eq!((o.to_string().as_str(), p.as_str()), ("https://h:8443/", "/v1"));
    }

    #[test]
    fn only_http_and_https_service_urls_are_accepted() {
        assert!(check_service_url("http://127.0.0.1:8100/p").is_ok());
        assert!(check_service_url("HTTP://h").is_ok());
        assert!(check_service_url("https://h:8443").is_ok());
        assert!(check_service_url("HTTPS://h").is_ok());
        assert_eq!(
            check_service_url("grpc://h:1"),
            Err(ServiceUrlError::Scheme("grpc".into()))
        );
        assert_eq!(check_service_url("h:1"), Err(ServiceUrlError::Malformed));
        assert_eq!(check_service_url("/just/a/path"), Err(ServiceUrlError::Malformed));
        assert_eq!(check_service_url("https://:1"), Err(ServiceUrlError::Malformed));
    }

    #[test]
    fn reasons_follow_the_replicas_states() {
        let mut r = ServiceRoutes::default();
        assert_eq!(r.unavailable(), Some(Unavailable::NonePlaced));
        r.total = 2;
        r.loading = 2;
        assert_eq!(r.unavailable(), Some(Unavailable::AllLoading));
        r.loading = 0;
        r.failed = 2;
        assert_eq!(r.unavailable(), Some(Unavailable::AllFailed));
        r.unreachable = 1;
        assert_eq!(
            r.unavailable(),
            Some(Unavailable::Unreachable),
            "a replica that is ready but not reachable yet is not called failed"
        );
        r.unhealthy = 1;
        assert_eq!(r.unavailable(), Some(Unavailable::AllWorkersUnhealthy));
    }
}
