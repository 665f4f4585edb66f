//! The service proxy: `ANY /service/{name-or-alias}/{rest}` and gRPC calls
//! whose `/{package.Service}/{Method}` belongs to a catalog service, sent to
//! a ready replica.
//!
//! The request path, in stages (outermost first). They are plain functions
//! and types rather than tower layers: both faces of the proxy and the HTTP/1
//! fast path call the same ones, and a layer per stage would box and clone
//! per request on the hottest path.
//! 1. **resolve**: name or alias -> catalog service (404 `unknown_service`);
//!    dot segments are resolved first (`forward::remove_dot_segments`);
//! 2. **routes**: the current route-table snapshot (a `watch` read, never the
//!    registry lock) -> ready replicas (503 `no_ready_endpoint` with the reason);
//! 3. **attempts** (`attempts`, one loop for every path): a replica picked
//!    by `balance` (power of two choices, ejected replicas last), a
//!    per-service timeout (504), and a connect failure or a reset before any
//!    response byte retried on another replica while the body can be
//!    replayed and the retry budget allows;
//! 4. **forward**: hop-by-hop headers out, `x-forwarded-*` and `x-request-id`
//!    in, the body streamed both ways (`forward`), to the replica directly
//!    or down its worker's tunnel ([`crate::upstream`] reaches it).
//!
//! Plain HTTP/1.1 requests from the front door meet [`h1`] first: the same
//! stages (and the same attempt loop, limits and error codes) applied to the
//! bytes, without building `http` types; whatever it does not take comes
//! here.

mod attempts;
mod balance;
mod error;
mod forward;
pub mod h1;
mod send;
mod service;

pub use error::ProxyError;
pub(crate) use forward::has_dot_segment;
pub use forward::{request_id, ClientAddr};
pub use service::{BoxFuture, ProxyService};

/// Largest HTTP request head (request line and headers) the coordinator
/// accepts, on every path: the HTTP/1 fast path, the HTTP/1 server it hands
/// over to, and the HTTP/2 server's header list. One number, so that what
/// one path refuses with 431 no other path forwards; and well inside what
/// the tunnel's HTTP/2 settings allow ([`crate::tunnel::MAX_HEADER_LIST`]).
pub const MAX_REQUEST_HEAD: usize = 64 * 1024;
const _: () = assert!(2 * MAX_REQUEST_HEAD <= crate::tunnel::MAX_HEADER_LIST as usize);
use crate::upstream::{HttpsConnector, InlineUpstreams, ServiceTls, MAX_RESPONSE_HEAD};

/// What a client connection served by the front door gives each of its
/// proxied requests (one request extension): its address, formatted once,
/// and its own upstream connections.
#[derive(Clone)]
pub struct ClientConn {
    pub addr: Option<ClientAddr>,
    pub upstreams: Arc<InlineUpstreams>,
}

use crate::catalog::Catalog;
use crate::routes::{RouteTable, Unavailable};
use attempts::{Attempts, RetryPolicy, ViaCode};
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{header, Request};
use http_body_util::BodyExt;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use send::HyperAttempt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Where the HTTP face is mounted: `/service/{name-or-alias}/{rest}`.
pub use crate::routes::SERVICE_PREFIX;

/// Whether `path` is for the HTTP face.
pub fn is_service_path(path: &str) -> bool {
    path.strip_prefix(SERVICE_PREFIX)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Proxy limits and timeouts.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Per-request timeout (to the response head) unless the catalog sets one.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Extra attempts per request, on other replicas.
    pub retries: u32,
    /// How long a replica that refused a connection gets no traffic.
    pub eject_for: Duration,
    /// Bodies up to this size are buffered so the request can be retried;
    /// larger ones stream through and are not retried.
    pub max_replay_bytes: usize,
    /// The cluster secret: presented on requests forwarded to another
    /// coordinator, required on requests forwarded by one.
    pub peer_secret: crate::auth::SharedSecret,
    /// How `https://` replicas on the direct path are verified
    /// (`--service-ca`, else the system roots).
    pub service_tls: ServiceTls,
    /// How other coordinators at `https://` peer addresses are verified
    /// (the cluster CA when the coordinator has one).
    pub peer_tls: ServiceTls,
    /// Where requests, retries and upstream errors are counted.
    pub metrics: Option<Arc<crate::metrics::ProxyMetrics>>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(2),
            retries: 2,
            eject_for: Duration::from_secs(5),
            max_replay_bytes: 64 * 1024,
            peer_secret: crate::auth::SharedSecret::default(),
            service_tls: ServiceTls::default(),
            peer_tls: ServiceTls::default(),
            metrics: None,
        }
    }
}

/// One request's id, and where its attempt loop says how it went.
#[derive(Clone, Copy)]
struct Call<'a> {
    rid: &'a str,
    via: &'a ViaCode,
}

/// Which wire protocol the upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    Http1,
    /// HTTP/2 with prior knowledge (gRPC).
    H2,
}

pub struct Proxy {
    routes: watch::Receiver<Arc<RouteTable>>,
    catalog: Arc<Catalog>,
    /// Replicas on the direct path that the inline upstreams do not take
    /// (HTTP/2, and HTTP/1 without a client connection of our own).
    http1: Client<HttpsConnector, Body>,
    h2: Client<HttpsConnector, Body>,
    /// Other coordinators (`Via::Peer`): kept apart from the replicas'
    /// clients, since peers are verified against the cluster's CA.
    peer_http1: Client<HttpsConnector, Body>,
    peer_h2: Client<HttpsConnector, Body>,
    config: ProxyConfig,
    /// Retry limits and budget, and the clock replica ejections use.
    retry: RetryPolicy,
    /// Idle upstream connections of the HTTP/1 fast path that outlived
    /// their client connection.
    kept: h1::Shared,
}

impl Proxy {
    pub fn new(routes: watch::Receiver<Arc<RouteTable>>, catalog: Arc<Catalog>, config: ProxyConfig) -> Arc<Self> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.connect_timeout));
        let http1 = |tls: &ServiceTls| {
            Client::builder(TokioExecutor::new())
                .http1_max_buf_size(MAX_RESPONSE_HEAD)
                .pool_idle_timeout(Duration::from_secs(90))
                .pool_max_idle_per_host(1024)
                .build(tls.connector(connector.clone(), false))
        };
        let h2 = |tls: &ServiceTls| {
            Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build(tls.connector(connector.clone(), true))
        };
        Arc::new(Proxy {
            routes,
            catalog,
            http1: http1(&config.service_tls),
            h2: h2(&config.service_tls),
            peer_http1: http1(&config.peer_tls),
            peer_h2: h2(&config.peer_tls),
            retry: RetryPolicy::new(config.retries, config.eject_for),
            config,
            kept: h1::Shared::default(),
        })
    }

    /// Canonical service name for what the user typed.
    fn resolve(&self, name: &str, table: &RouteTable) -> Result<String, ProxyError> {
        if let Some(e) = self.catalog.resolve(name) {
            return Ok(e.name.clone());
        }
        if table.get(name).is_some() {
            return Ok(name.to_string());
        }
        Err(ProxyError::UnknownService(name.to_string()))
    }

    /// Counts one request: its service (`None`: it named none known), how
    /// it went (`via`), the status answered and the time to it.
    fn count(&self, service: Option<&str>, via: &ViaCode, status: http::StatusCode, started: std::time::Instant) {
        if let Some(m) = &self.config.metrics {
            m.request(service, via.label(), status.as_u16(), started.elapsed());
        }
    }

    /// `/service/{name}/{rest}`.
    async fn http(self: Arc<Self>, req: Request<Body>) -> Response {
        let started = std::time::Instant::now();
        let via = ViaCode::default();
        let rid = forward::request_id(req.headers());
        let normalized = forward::remove_dot_segments(req.uri().path());
        let path = normalized.as_ref();
        let path = path
            .strip_prefix(SERVICE_PREFIX)
            .unwrap_or(path)
            .trim_start_matches('/');
        let (name, rest) = match path.find('/') {
            Some(i) => (&path[..i], &path[i..]),
            None => (path, ""),
        };
        if name.is_empty() {
            self.count(None, &via, ProxyError::NoServiceName.status(), started);
            return ProxyError::NoServiceName.into_response(&rid);
        }
        let table = self.routes.borrow().clone();
        let service = match self.resolve(name, &table) {
            Ok(s) => s,
            Err(e) => {
                self.count(None, &via, e.status(), started);
                return e.into_response(&rid);
            }
        };
        let rest = rest.to_string();
        let r = match self
            .forward(req, &table, &service, &rest, Wire::Http1, Call { rid: &rid, via: &via })
            .await
        {
            Ok(r) => r,
            Err(e) => e.into_response(&rid),
        };
        self.count(Some(&service), &via, r.status(), started);
        r
    }

    /// A gRPC call not served by the coordinator itself; anything else no
    /// route claims (`GET /nonexistent`, `OPTIONS *`) is a plain 404.
    async fn grpc(self: Arc<Self>, req: Request<Body>) -> Response {
        let started = std::time::Instant::now();
        let via = ViaCode::default();
        let rid = forward::request_id(req.headers());
        let is_grpc = req
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        if !is_grpc {
            return ProxyError::NotFound(req.uri().path().to_string()).into_response(&rid);
        }
        let path = req.uri().path().to_string();
        let grpc_service = path.trim_start_matches('/').split('/').next().unwrap_or("");
        let Some(entry) = self.catalog.by_grpc_service(grpc_service) else {
            let msg = format!("no service serves `{grpc_service}`");
            let r = tonic::Status::unimplemented(msg).into_http();
            self.count(None, &via, r.status(), started);
            return r;
        };
        let table = self.routes.borrow().clone();
        let service = entry.name.clone();
        let r = match self
            .forward(req, &table, &service, &path, Wire::H2, Call { rid: &rid, via: &via })
            .await
        {
            Ok(r) => r,
            Err(e) => tonic::Status::new(e.grpc_code(), e.to_string()).into_http(),
        };
        self.count(Some(&service), &via, r.status(), started);
        r
    }

    async fn forward(
        &self,
        req: Request<Body>,
        table: &RouteTable,
        service: &str,
        rest: &str,
        wire: Wire,
        call: Call<'_>,
    ) -> Result<Response, ProxyError> {
        let Call { rid, via } = call;
        let unavailable = |reason| ProxyError::NoReadyEndpoint {
            service: service.to_string(),
            reason,
        };
        let routes = table
            .get(service)
            .ok_or_else(|| unavailable(Unavailable::NonePlaced))?
            .clone();
        if let Some(reason) = routes.unavailable() {
            return Err(unavailable(reason));
        }

        let (parts, body) = req.into_parts();
        // Formatted once per connection by the front door; per request otherwise.
        let conn = parts.extensions.get::<ClientConn>();
        let client = conn.and_then(|c| c.addr.clone()).or_else(|| {
            parts
                .extensions
                .get::<crate::tls::PeerInfo>()
                .and_then(|c| c.addr)
                .and_then(|a| forward::ClientAddr::new(a.ip()))
        });
        let mut headers = parts.headers;
        // A request another coordinator forwarded goes down the named
        // worker's tunnel only; the two headers never reach a replica.
        let routes = match forward::take_peer_headers(&mut headers) {
            None => routes,
            Some((presented, worker)) => {
                if self
                    .config
                    .peer_secret
                    .verify(presented.as_ref().map(|v| v.as_bytes()))
                    .is_err()
                {
                    return Err(ProxyError::PeerRefused);
                }
                let ready: Vec<_> = routes
                    .ready
                    .iter()
                    .filter(|e| e.worker_id == worker && matches!(e.via, crate::routes::Via::Tunnel(_)))
                    .cloned()
                    .collect();
                if ready.is_empty() {
                    return Err(unavailable(Unavailable::AllWorkersUnhealthy));
                }
                Arc::new(crate::routes::ServiceRoutes {
                    ready,
                    total: routes.total,
                    loading: routes.loading,
                    failed: routes.failed,
                    unhealthy: routes.unhealthy,
                    unreachable: routes.unreachable,
                })
            }
        };
        // Room for what is added below (x-forwarded-*, x-request-id, host),
        // so the map grows at most once.
        headers.reserve(6);
        let original_host = headers.remove(header::HOST);
        forward::strip_hop_by_hop(&mut headers);
        forward::add_forwarded(&mut headers, client.as_ref(), original_host);
        let rid_value = forward::request_id_value(rid);
        if let Some(v) = &rid_value {
            headers.insert(forward::X_REQUEST_ID.clone(), v.clone());
        }
        let query = parts.uri.query().map(str::to_string);
        let inline = conn.map(|c| c.upstreams.clone());

        // Small bodies are kept so a failed attempt can be replayed.
        // A streamed body that breaks (malformed chunked framing, a client
        // that leaves mid-body) is the client's fault: `client_body` says
        // so when the attempt fails because of it.
        let mut client_body: Option<Arc<std::sync::OnceLock<String>>> = None;
        let (replay, streaming): (Option<Bytes>, Option<Body>) = match http_body::Body::size_hint(&body).exact() {
            Some(0) => (Some(Bytes::new()), None),
            Some(n) if n as usize <= self.config.max_replay_bytes => {
                let collected = body.collect().await.map_err(|e| ProxyError::Body(e.to_string()))?;
                (Some(collected.to_bytes()), None)
            }
            _ => {
                let broke = client_body.insert(Arc::default()).clone();
                let watched = body.map_err(move |e| {
                    let _ = broke.set(crate::errors::chain(&e));
                    e
                });
                (None, Some(Body::new(watched)))
            }
        };
        let attempts = Attempts {
            policy: &self.retry,
            service,
            routes: &routes,
            timeout: self.catalog.timeout(service, self.config.timeout),
            replayable: replay.is_some(),
            request_id: rid,
            metrics: self.config.metrics.as_deref(),
            via,
        };
        let mut attempt = HyperAttempt {
            proxy: self,
            service,
            method: parts.method,
            headers,
            // Only a request that may be retried needs its headers kept for
            // the next attempt; the others give theirs to the one attempt.
            keep_headers: attempts.may_retry(),
            replay,
            streaming,
            client_body,
            rest,
            query,
            wire,
            inline,
            rid_value,
        };
        attempts.run(&mut attempt).await?
    }
}
