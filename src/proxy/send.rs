//! Sending one attempt on the hyper path: the request rebuilt for the
//! replica it goes to (path under the replica's prefix, `Host`), sent
//! directly or down the worker's tunnel, and the response checked before it
//! is handed back. The attempt loop ([`super::attempts`]) decides which
//! replica and whether to try again.

use super::attempts::Attempt;
use super::{balance, forward, Proxy, ProxyError, Wire};
use crate::routes::{Endpoint, Via};
use crate::upstream::{InlineUpstreams, SendFailure, MAX_RESPONSE_HEAD};
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Version};
use http_body_util::BodyExt;
use std::sync::Arc;
use tracing::{debug, warn};

/// One request on the hyper path, as the attempt loop sends it.
pub(super) struct HyperAttempt<'a> {
    pub(super) proxy: &'a Proxy,
    pub(super) service: &'a str,
    pub(super) method: Method,
    /// Already rewritten for the upstream (hop-by-hop out, forwarded in).
    pub(super) headers: HeaderMap,
    pub(super) keep_headers: bool,
    /// A body kept whole, for every attempt; or one streamed to the only one.
    pub(super) replay: Option<Bytes>,
    pub(super) streaming: Option<Body>,
    /// Set when the client's streamed body broke.
    pub(super) client_body: Option<Arc<std::sync::OnceLock<String>>>,
    pub(super) rest: &'a str,
    pub(super) query: Option<String>,
    pub(super) wire: Wire,
    pub(super) inline: Option<Arc<InlineUpstreams>>,
    pub(super) rid_value: Option<HeaderValue>,
}

impl Attempt for HyperAttempt<'_> {
    /// The response, or a final answer (no retry) for the client.
    type Output = Result<Response, ProxyError>;

    async fn attempt(&mut self, ep: &Arc<Endpoint>, in_flight: balance::InFlight) -> Result<Self::Output, SendFailure> {
        {
            let body = match (&self.replay, self.streaming.take()) {
                (Some(b), _) => Body::from(b.clone()),
                (None, Some(b)) => b,
                (None, None) => unreachable!("streamed bodies are not retried"),
            };
            // A peer serves `/service/{name}/...` for HTTP, and gRPC by its
            // own path, as this coordinator does.
            let prefix = match (&ep.via, self.wire) {
                (Via::Peer, Wire::H2) => "",
                _ => ep.prefix.as_str(),
            };
            let pq = match forward::upstream_path(prefix, self.rest, self.query.as_deref()) {
                Ok(pq) => pq,
                Err(e) => return Ok(Err(e)),
            };
            let mut uri = ep.origin.clone().into_parts();
            uri.path_and_query = Some(pq);
            let uri = match http::Uri::from_parts(uri) {
                Ok(u) => u,
                Err(e) => return Ok(Err(ProxyError::BadPath(e.to_string()))),
            };
            // HTTP/1 upstreams get `Host` from us rather than from the client
            // (same value, less work); HTTP/2 ones carry `:authority` instead.
            match (&ep.via, self.wire, crate::upstream::host_for(&uri)) {
                (Via::Direct | Via::Peer, Wire::Http1, Some(host)) => {
                    self.headers.insert(header::HOST, host);
                }
                _ => {
                    self.headers.remove(header::HOST);
                }
            }
            let headers = if self.keep_headers {
                self.headers.clone()
            } else {
                std::mem::take(&mut self.headers)
            };
            let mut upstream = build_request(&self.method, uri, headers, body, self.wire);
            if matches!(ep.via, Via::Peer) {
                let h = upstream.headers_mut();
                if let Some(secret) = self.proxy.config.peer_secret.header() {
                    h.insert(crate::routes::PEER_AUTH_HEADER, secret.clone());
                }
                if let Ok(v) = HeaderValue::from_str(&ep.worker_id) {
                    h.insert(crate::routes::PEER_WORKER_HEADER, v);
                }
            }
            if matches!(ep.via, Via::Tunnel(_)) {
                // Down the tunnel every request is an HTTP/2 stream naming
                // its service; its header list is checked as it will be sent.
                *upstream.version_mut() = Version::HTTP_2;
                if let Ok(v) = HeaderValue::from_str(self.service) {
                    upstream.headers_mut().insert(crate::tunnel::SERVICE_HEADER, v);
                }
                if let Err(e) = tunnel_headers_fit(&upstream) {
                    return Ok(Err(e));
                }
            }
            let p = self.proxy;
            let service = self.service;
            let sent = p
                .send(ep, service, upstream, self.wire, self.inline.as_ref(), in_flight)
                .await;
            match sent {
                // The HTTP/1 client bounds its buffer, not the head exactly.
                Ok(resp) if crate::upstream::head_bytes(resp.headers()) > MAX_RESPONSE_HEAD => {
                    warn!(%service, worker = %ep.worker_name, "upstream response head too large");
                    Ok(Err(ProxyError::Upstream {
                        service: service.to_string(),
                        worker: ep.worker_name.clone(),
                        detail: format!("response head larger than {MAX_RESPONSE_HEAD} bytes"),
                    }))
                }
                Ok(mut resp) => {
                    forward::strip_hop_by_hop(resp.headers_mut());
                    if let Some(v) = self.rid_value.take() {
                        resp.headers_mut().insert(forward::X_REQUEST_ID.clone(), v);
                    }
                    Ok(Ok(resp))
                }
                // The client's body broke, and the attempt with it: the
                // client's fault, not the replica's, and not retried.
                Err(failure) => match self.client_body.as_ref().and_then(|b| b.get()) {
                    Some(e) => {
                        debug!(%service, error = %e, "request body broke off");
                        Ok(Err(ProxyError::Body(e.clone())))
                    }
                    None => Err(failure),
                },
            }
        }
    }
}

impl Proxy {
    /// Sends one attempt to one replica, directly or down its worker's
    /// tunnel. `in_flight` lives as long as the response body.
    async fn send(
        &self,
        ep: &Endpoint,
        service: &str,
        req: Request<Body>,
        wire: Wire,
        inline: Option<&Arc<InlineUpstreams>>,
        in_flight: balance::InFlight,
    ) -> Result<Response, SendFailure> {
        match &ep.via {
            // Another coordinator: the shared pools (its connections are
            // kept for every client, not one per request).
            Via::Peer => {
                let client = match wire {
                    Wire::Http1 => &self.peer_http1,
                    Wire::H2 => &self.peer_h2,
                };
                client.request(req).await.map(|r| guarded(r, in_flight)).map_err(|e| {
                    if e.is_connect() {
                        SendFailure::connect(&ep.origin, e)
                    } else {
                        SendFailure::reset(e)
                    }
                })
            }
            Via::Direct => {
                // An HTTP/1 client connection of our own: its own upstream
                // connections, driven in its task (see [`inline`]).
                if let (Wire::Http1, Some(inline)) = (wire, inline) {
                    return inline
                        .send(
                            &ep.origin,
                            &self.config.service_tls,
                            req,
                            self.config.connect_timeout,
                            in_flight,
                        )
                        .await;
                }
                let client = match wire {
                    Wire::Http1 => &self.http1,
                    Wire::H2 => &self.h2,
                };
                client.request(req).await.map(|r| guarded(r, in_flight)).map_err(|e| {
                    if e.is_connect() {
                        SendFailure::connect(&ep.origin, e)
                    } else {
                        SendFailure::reset(e)
                    }
                })
            }
            Via::Tunnel(sender) => {
                let mut sender = sender.clone();
                let tunnel = || format!("the tunnel of worker `{}`", ep.worker_name);
                if let Err(e) = sender.ready().await {
                    return Err(SendFailure::connect(tunnel(), e));
                }
                let stream = self.config.metrics.as_ref().map(|m| m.tunnel_stream());
                let resp = sender.send_request(req).await.map_err(SendFailure::reset)?;
                // The worker could not reach its local service: as good as a
                // failed connect, and just as safe to retry elsewhere.
                match resp.headers().get(crate::tunnel::FORWARD_ERROR_HEADER) {
                    None => Ok(guarded(resp, (in_flight, stream))),
                    Some(kind) if kind == "connect" => Err(SendFailure::connect(
                        format!("`{service}` on worker `{}`", ep.worker_name),
                        "the worker could not reach it",
                    )),
                    Some(kind) => Err(SendFailure::reset(format!(
                        "the worker's request to the service failed ({})",
                        kind.to_str().unwrap_or("?")
                    ))),
                }
            }
        }
    }
}

/// The header list a request would put in the tunnel's HTTP/2 HEADERS
/// block (RFC 9113 6.5.2: name, value and 32 bytes a field, pseudo-headers
/// included) must stay within half of what the worker's side decodes:
/// HPACK's encoding of a field can exceed its plain size by a few bytes,
/// never by a factor of two.
fn tunnel_headers_fit(req: &Request<Body>) -> Result<(), ProxyError> {
    let limit = crate::tunnel::MAX_HEADER_LIST as usize / 2;
    let pseudo = req.method().as_str().len()
        + req.uri().path_and_query().map_or(1, |p| p.as_str().len())
        + req.uri().authority().map_or(0, |a| a.as_str().len())
        + 4 * 32
        + 8;
    let size = pseudo + crate::upstream::header_list_size(req.headers());
    if size > limit {
        return Err(ProxyError::HeadersTooLarge { limit });
    }
    Ok(())
}

/// A response whose body holds `in_flight` (and whatever else counts the
/// request as open) until it has been sent on.
fn guarded<G: Send + 'static>(resp: http::Response<hyper::body::Incoming>, in_flight: G) -> Response {
    resp.map(|b| {
        Body::new(b.map_frame(move |f| {
            let _ = &in_flight;
            f
        }))
    })
}

fn build_request(method: &Method, uri: http::Uri, headers: HeaderMap, body: Body, wire: Wire) -> Request<Body> {
    let mut r = Request::new(body);
    *r.method_mut() = method.clone();
    *r.uri_mut() = uri;
    *r.headers_mut() = headers;
    *r.version_mut() = match wire {
        Wire::Http1 => Version::HTTP_11,
        Wire::H2 => Version::HTTP_2,
    };
    r
}
