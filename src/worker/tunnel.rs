//! The worker's end of the tunnel ([`crate::tunnel`] holds the wire format): an HTTP/2 server on the pipe that
//! forwards each request to the local service it names, streaming both ways.

use crate::proto::{worker_control_client::WorkerControlClient, TunnelChunk};
use crate::tunnel::pipe::pipe;
use crate::tunnel::{RESUME_TOKEN_HEADER, SERVICE_HEADER, WORKER_ID_HEADER};
use crate::upstream::{HttpsConnector, InlineUpstreams, SendFailure, ServiceTls};
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::uri::PathAndQuery;
use http::{HeaderValue, Request, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tracing::debug;

/// Where this worker reaches each of its services, by name: the URL the
/// latest assignment gives, unless the runtime put the service somewhere
/// else (a container on the worker's Docker network is reached by its
/// container name, not at `127.0.0.1`). Probes and the tunnel both ask here.
#[derive(Clone, Default)]
pub struct LocalServices {
    /// From the assignment: declared URLs, and `127.0.0.1:{port}` for placed services.
    assigned: Arc<RwLock<BTreeMap<String, String>>>,
    /// Set by the runtime for services it made reachable elsewhere.
    runtime: Arc<RwLock<BTreeMap<String, String>>>,
}

impl LocalServices {
    /// The URL to use for `service`: the runtime's, else the assignment's.
    pub fn url(&self, service: &str) -> Option<String> {
        let read =
            |m: &RwLock<BTreeMap<String, String>>| m.read().unwrap_or_else(|e| e.into_inner()).get(service).cloned();
        read(&self.runtime).or_else(|| read(&self.assigned))
    }

    /// Replaces the assignment's URLs.
    pub fn set_assigned(&self, urls: BTreeMap<String, String>) {
        *self.assigned.write().unwrap_or_else(|e| e.into_inner()) = urls;
    }

    /// Records (or with `None` withdraws) where the runtime made `service` reachable.
    pub fn set_runtime(&self, service: &str, url: Option<String>) {
        let mut m = self.runtime.write().unwrap_or_else(|e| e.into_inner());
        match url {
            Some(u) => m.insert(service.to_string(), u),
            None => m.remove(service),
        };
    }
}

/// Idle HTTP/1 connections the worker keeps to its local services.
const MAX_IDLE_HTTP1: usize = 256;
/// How long reaching a local service may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Forwards tunnelled requests to local services.
#[derive(Clone)]
pub struct Forwarder {
    services: LocalServices,
    /// HTTP/1 connections driven by the request that holds them (no task
    /// per connection; see [`InlineUpstreams`]).
    http1: Arc<InlineUpstreams>,
    h2: Client<HttpsConnector, Body>,
    /// How `https://` services are verified (`--service-ca`).
    tls: ServiceTls,
}

impl Forwarder {
    pub fn new(services: LocalServices, tls: ServiceTls) -> Self {
        let mut c = HttpConnector::new();
        c.set_nodelay(true);
        c.set_connect_timeout(Some(CONNECT_TIMEOUT));
        Forwarder {
            services,
            http1: Arc::new(InlineUpstreams::with_max_idle(MAX_IDLE_HTTP1)),
            h2: Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build(tls.connector(c, true)),
            tls,
        }
    }

    fn fail(status: StatusCode, code: &str, message: String) -> Response {
        crate::errors::response(status, code, message)
    }

    /// The service a request names (in [`SERVICE_HEADER`]) and where this
    /// worker reaches it: origin and path prefix; or the answer to give.
    fn target(&self, service: Option<String>) -> Result<(String, http::Uri, String), Box<Response>> {
        let Some(service) = service else {
            return Err(Box::new(Self::fail(
                StatusCode::BAD_REQUEST,
                "no_service_name",
                format!("missing {SERVICE_HEADER}"),
            )));
        };
        let url = self.services.url(&service);
        match url.as_deref().and_then(crate::routes::Endpoint::parse_url) {
            Some((origin, prefix)) => Ok((service, origin, prefix)),
            None => Err(Box::new(Self::fail(
                StatusCode::BAD_GATEWAY,
                "upstream_failed",
                format!("this worker has no local address for `{service}`"),
            ))),
        }
    }

    /// A `CONNECT` from the coordinator: a raw byte pipe to the local
    /// service named by [`SERVICE_HEADER`], for the coordinator's HTTP/1
    /// fast path to use as an upstream connection. The answer tells it the
    /// `Host` and path prefix the service expects, since nothing on this
    /// side rewrites the bytes.
    pub async fn connect(&self, mut req: Request<Incoming>) -> Response {
        let service = req
            .headers()
            .get(SERVICE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let (service, origin, prefix) = match self.target(service) {
            Ok(t) => t,
            Err(r) => return *r,
        };
        let (Some(host), Some(authority)) = (crate::upstream::host_for(&origin), origin.authority()) else {
            return Self::fail(
                StatusCode::BAD_GATEWAY,
                "upstream_failed",
                format!("bad address for `{service}`"),
            );
        };
        // An `https://` service: the pipe carries plaintext HTTP/1 inside the
        // tunnel (itself TLS when the coordinator is), and TLS from here on.
        let https = crate::upstream::is_https(&origin);
        let mut conn = match crate::upstream::connect(https, authority, &self.tls, CONNECT_TIMEOUT).await {
            Ok(conn) => conn,
            Err(failure) => {
                let mut r = Self::fail(
                    StatusCode::BAD_GATEWAY,
                    "upstream_failed",
                    format!("{service}: {}", failure.detail()),
                );
                r.headers_mut()
                    .insert(crate::tunnel::FORWARD_ERROR_HEADER, HeaderValue::from_static("connect"));
                return r;
            }
        };
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            match upgrade.await {
                Ok(up) => {
                    let mut up = TokioIo::new(up);
                    if let Err(e) = tokio::io::copy_bidirectional(&mut up, &mut conn).await {
                        debug!(%service, error = %e, "tunnel pipe ended");
                    }
                }
                Err(e) => debug!(%service, error = %e, "tunnel pipe was not opened"),
            }
        });
        let mut r = StatusCode::OK.into_response();
        r.headers_mut().insert(crate::tunnel::PIPE_HOST_HEADER, host);
        if let Ok(p) = HeaderValue::from_str(&prefix) {
            r.headers_mut().insert(crate::tunnel::PIPE_PREFIX_HEADER, p);
        }
        r
    }

    /// One request from the coordinator.
    pub async fn forward(&self, req: Request<Incoming>) -> Response {
        let (mut parts, body) = req.into_parts();
        let service = parts
            .headers
            .remove(SERVICE_HEADER)
            .and_then(|v| v.to_str().ok().map(str::to_string));
        let (service, origin, prefix) = match self.target(service) {
            Ok(t) => t,
            Err(r) => return *r,
        };
        let grpc = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        // `origin` + `prefix` + the request's path and query, built from parts
        // (no URL string to format and parse again on every request).
        let pq = match (prefix.as_str(), parts.uri.path_and_query()) {
            ("", Some(pq)) => Ok(pq.clone()),
            (prefix, pq) => PathAndQuery::try_from(format!("{prefix}{}", pq.map_or("/", |p| p.as_str()))),
        };
        // A path the prefix makes too long is refused, never sent as `/`
        // (which is what a URI without its path and query would ask for).
        let pq = match pq {
            Ok(pq) => pq,
            Err(_) => {
                let limit = crate::upstream::MAX_TARGET;
                return Self::fail(
                    StatusCode::URI_TOO_LONG,
                    "uri_too_long",
                    format!("request target too long: the replica's path and query would be more than {limit} bytes"),
                );
            }
        };
        let mut uri = origin.clone().into_parts();
        uri.path_and_query = Some(pq);
        let Ok(uri) = http::Uri::from_parts(uri) else {
            return Self::fail(
                StatusCode::BAD_REQUEST,
                "bad_path",
                format!("cannot forward {} to `{service}`", parts.uri),
            );
        };
        parts.uri = uri;
        parts.version = if grpc { Version::HTTP_2 } else { Version::HTTP_11 };
        if let Some(a) = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            parts.headers.insert(http::header::HOST, a);
        }
        let req = Request::from_parts(parts, Body::new(body));
        let sent = if grpc {
            self.h2.request(req).await.map(|r| r.map(Body::new)).map_err(|e| {
                if e.is_connect() {
                    SendFailure::connect(&service, e)
                } else {
                    SendFailure::reset(e)
                }
            })
        } else {
            self.http1.send(&origin, &self.tls, req, CONNECT_TIMEOUT, ()).await
        };
        match sent {
            // A head past what the coordinator's side of the tunnel decodes
            // would be a connection error there, failing every request on
            // this worker: the one response becomes a 502 instead.
            Ok(resp)
                if crate::upstream::header_list_size(resp.headers()) > crate::tunnel::MAX_HEADER_LIST as usize / 2 =>
            {
                Self::fail(
                    StatusCode::BAD_GATEWAY,
                    "upstream_failed",
                    format!("{service}: response headers larger than the tunnel carries"),
                )
            }
            Ok(resp) => resp,
            Err(e) => {
                let mut r = Self::fail(
                    StatusCode::BAD_GATEWAY,
                    "upstream_failed",
                    format!("{service}: {}", e.detail()),
                );
                let kind = if e.is_connect() { "connect" } else { "reset" };
                r.headers_mut()
                    .insert(crate::tunnel::FORWARD_ERROR_HEADER, HeaderValue::from_static(kind));
                r
            }
        }
    }
}

/// Opens the tunnel on `channel` and serves it until it closes.
pub async fn serve(
    channel: Channel,
    worker_id: &str,
    token: &str,
    join_token: Option<&str>,
    forwarder: Forwarder,
) -> Result<(), String> {
    let (tx, rx) = mpsc::channel::<TunnelChunk>(64);
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    let md = req.metadata_mut();
    let value = |s: &str| {
        s.parse()
            .map_err(|_| "a tunnel credential is not a valid header value".to_string())
    };
    md.insert(WORKER_ID_HEADER, value(worker_id)?);
    md.insert(RESUME_TOKEN_HEADER, value(token)?);
    if let Some(t) = join_token.filter(|t| !t.is_empty()) {
        md.insert("authorization", value(&crate::auth::bearer(t))?);
    }
    let mut client = WorkerControlClient::new(channel).max_decoding_message_size(crate::tunnel::pipe::MAX_CHUNK * 4);
    let inbound = client
        .tunnel(req)
        .await
        .map_err(|s| format!("coordinator refused the tunnel: {:?}: {}", s.code(), s.message()))?
        .into_inner();
    let io = TokioIo::new(pipe(inbound, tx));
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let f = forwarder.clone();
        async move {
            Ok::<_, std::convert::Infallible>(if req.method() == http::Method::CONNECT {
                f.connect(req).await
            } else {
                f.forward(req).await
            })
        }
    });
    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(crate::tunnel::STREAM_WINDOW)
        .initial_connection_window_size(crate::tunnel::CONNECTION_WINDOW)
        // Requests and raw pipes (one per client connection that used this
        // worker over the fast path, held while that connection lives).
        .max_concurrent_streams(crate::tunnel::MAX_STREAMS)
        .max_header_list_size(crate::tunnel::MAX_HEADER_LIST)
        .serve_connection(io, svc)
        .await
        .map_err(|e| format!("tunnel closed: {}", crate::errors::chain(&e)))
}

#[cfg(test)]
mod tests {
    use super::LocalServices;

    #[test]
    fn the_runtimes_address_wins_over_the_assignments() {
        let local = LocalServices::default();
        local.set_assigned([("notes-coa".to_string(), "http://127.0.0.1:8100".to_string())].into());
        assert_eq!(local.url("notes-coa").as_deref(), Some("http://127.0.0.1:8100"));
        local.set_runtime("notes-coa", Some("http://edgeplane-w1-notes-coa:8100".into()));
        assert_eq!(
            local.url("notes-coa").as_deref(),
            Some("http://edgeplane-w1-notes-coa:8100")
        );
        // A new assignment keeps the runtime's address; withdrawing it falls back.
        local.set_assigned([("notes-coa".to_string(), "http://127.0.0.1:8100".to_string())].into());
        assert_eq!(
            local.url("notes-coa").as_deref(),
            Some("http://edgeplane-w1-notes-coa:8100")
        );
        local.set_runtime("notes-coa", None);
        assert_eq!(local.url("notes-coa").as_deref(), Some("http://127.0.0.1:8100"));
        assert_eq!(local.url("other"), None);
    }
}
