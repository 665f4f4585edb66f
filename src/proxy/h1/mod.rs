//! The HTTP/1 fast path: `/service/` requests from an HTTP/1 client,
//! proxied by one loop that reads the head with `httparse`, writes the
//! rewritten request to a kept upstream connection (a TCP connection to a
//! direct replica, or a raw pipe down a worker's tunnel) in one write, and
//! copies the response back as it arrives.
//!
//! Why a second HTTP/1 implementation beside hyper: on this path hyper's
//! server and client each build a full `http::Request`/`Response` (header
//! maps, URIs, boxed bodies) only for the proxy to take them apart again,
//! and that costs more than the forwarding itself (BENCHMARKS.md: the
//! coordinator spent about twice nginx's CPU per request). This loop works
//! on the bytes, as nginx does.
//!
//! It takes only what it can vouch for: HTTP/1.1, origin-form `/service/`
//! targets, no body or a `Content-Length` one small enough to replay, no
//! `Expect`/`Upgrade`, a service with ready replicas it can reach. On
//! anything else it hands the connection, with every byte it has read, to
//! the full hyper server (which then serves it to the end), so errors,
//! chunked uploads, large bodies, HTTP/2 and the API behave exactly as before.

mod attempt;
// Public, with pure functions only, for the fuzz targets (`fuzz/`,
// docs/fuzzing.md): what a peer's bytes go through, testable without a
// socket.
pub mod chunked;
mod headers;
mod relay;
pub mod request;
pub mod response;
mod upstream;

use super::attempts::{Attempts, ViaCode};
use super::{ClientAddr, Proxy, ProxyError};
use crate::routes::{Endpoint, ServiceRoutes, Via};
use attempt::{FastAttempt, Final};
use bytes::{Buf, Bytes, BytesMut};
use headers::{header, request_id};
use request::Parsed;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
pub(crate) use upstream::Shared;
use upstream::Upstream;

/// Largest request head read before the full server is asked to refuse it
/// (with 431, at the same bound: [`crate::proxy::MAX_REQUEST_HEAD`]).
const MAX_HEAD: usize = crate::proxy::MAX_REQUEST_HEAD;
/// Largest upstream response head accepted.
const MAX_RESPONSE_HEAD: usize = crate::upstream::MAX_RESPONSE_HEAD;
/// Upstream connections one client connection keeps.
const MAX_UPSTREAMS: usize = 4;
/// Response bytes copied in one piece.
const READ_CHUNK: usize = 16 * 1024;

/// How a client connection left the fast path.
pub enum Ended {
    /// Closed (by either side, by timeout or by shutdown).
    Closed,
    /// The full server takes over; these bytes were read and not used.
    HandOff(Bytes),
    /// Refused with an error answer while the client may still be sending:
    /// the caller reads what comes for a while before closing, so that a
    /// reset does not destroy the answer.
    Refused,
}

/// What the fast path needs to know about one client connection.
pub struct Settings<'a> {
    pub client: Option<&'a ClientAddr>,
    /// The next request head must arrive within this, counted from the end
    /// of the previous response.
    pub header_timeout: Duration,
    /// Stop between requests.
    pub drain: &'a CancellationToken,
}

/// Serves `io` until it closes or needs the full server.
pub async fn serve<IO>(proxy: &Proxy, io: &mut IO, s: Settings<'_>) -> Ended
where
    IO: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut inbuf = BytesMut::with_capacity(8 * 1024);
    let mut out = Vec::with_capacity(4 * 1024);
    let mut own = upstream::Own {
        list: Vec::new(),
        shared: &proxy.kept,
    };
    let upstreams = &mut own.list;
    let mut early = BytesMut::new();
    let idle = tokio::time::sleep(s.header_timeout);
    tokio::pin!(idle);
    loop {
        idle.as_mut().reset(Instant::now() + s.header_timeout);
        // Read until the whole request (head and body) is in `inbuf`.
        let total = loop {
            if !inbuf.is_empty() {
                let mut h = [httparse::EMPTY_HEADER; request::MAX_HEADERS];
                match request::parse(&inbuf, &mut h, proxy.config.max_replay_bytes) {
                    Parsed::Other => return Ended::HandOff(inbuf.freeze()),
                    // The same bound, and the same answer, as the full server's.
                    Parsed::Fast(head) if head.len > MAX_HEAD => return refuse_head(io, &mut out).await,
                    Parsed::Partial if inbuf.len() > MAX_HEAD => return refuse_head(io, &mut out).await,
                    Parsed::Fast(head) if inbuf.len() >= head.len + head.content_length => {
                        break head.len + head.content_length;
                    }
                    Parsed::Fast(_) | Parsed::Partial => {}
                }
            }
            inbuf.reserve(4096);
            tokio::select! {
                biased;
                _ = s.drain.cancelled(), if inbuf.is_empty() => return Ended::Closed,
                r = io.read_buf(&mut inbuf) => match r {
                    Ok(0) | Err(_) => return Ended::Closed,
                    Ok(_) => {}
                },
                _ = idle.as_mut() => {
                    debug!("HTTP/1 connection idle past the header timeout; closing");
                    return Ended::Closed;
                }
            }
        };
        // Parsed again: the borrow of `inbuf` a head holds cannot leave the
        // read loop above, which goes on writing to `inbuf`.
        let mut h = [httparse::EMPTY_HEADER; request::MAX_HEADERS];
        let Parsed::Fast(head) = request::parse(&inbuf[..total], &mut h, proxy.config.max_replay_bytes) else {
            return Ended::HandOff(inbuf.freeze());
        };
        let Some((service, routes)) = fast_routes(proxy, head.name) else {
            // Unknown names and services with no ready replica (the full
            // server answers with the error), or replicas it cannot reach.
            return Ended::HandOff(inbuf.freeze());
        };
        let body = &inbuf[head.len..total];
        let rid = request_id(head.headers);
        let ctx = Exchange {
            proxy,
            head: &head,
            body,
            rid: rid.as_bytes(),
            service: &service,
            routes: &routes,
            client: s.client,
        };
        let keep = ctx.run(io, upstreams, &mut out, &mut early).await;
        let close = head.close;
        inbuf.advance(total);
        // Bytes of the next request that came while this one was waiting.
        if !early.is_empty() {
            inbuf.extend_from_slice(&early);
            early.clear();
        }
        if !keep || close {
            // Kept for other client connections before this one is seen to close.
            proxy.kept.give(upstreams.drain(..));
            let _ = io.shutdown().await;
            return Ended::Closed;
        }
    }
}

/// The canonical name and routes of a service whose ready replicas the fast
/// path can all reach (HTTP or HTTPS when direct, or a tunnel); `None` for
/// anything else.
fn fast_routes(proxy: &Proxy, name: &str) -> Option<(String, Arc<ServiceRoutes>)> {
    let table = proxy.routes.borrow().clone();
    let service = proxy.resolve(name, &table).ok()?;
    let routes = table.get(&service)?.clone();
    if routes.unavailable().is_some() {
        return None;
    }
    let reachable = |e: &Arc<Endpoint>| match e.via {
        Via::Direct => matches!(e.origin.scheme_str(), Some("http" | "https")) && e.origin.authority().is_some(),
        Via::Tunnel(_) => true,
        // Through another coordinator: the full path, which adds the peer
        // headers.
        Via::Peer => false,
    };
    routes.ready.iter().all(reachable).then_some((service, routes))
}

/// One request and its response.
struct Exchange<'a> {
    proxy: &'a Proxy,
    head: &'a request::Head<'a>,
    body: &'a [u8],
    rid: &'a [u8],
    service: &'a str,
    routes: &'a ServiceRoutes,
    client: Option<&'a ClientAddr>,
}

impl Exchange<'_> {
    /// Proxies the request; whether the client connection can be kept.
    async fn run<IO>(&self, io: &mut IO, upstreams: &mut Vec<Upstream>, out: &mut Vec<u8>, early: &mut BytesMut) -> bool
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let p = self.proxy;
        let started = std::time::Instant::now();
        let via = ViaCode::default();
        let attempts = Attempts {
            policy: &p.retry,
            service: self.service,
            routes: self.routes,
            timeout: p.catalog.timeout(self.service, p.config.timeout),
            // The body is in the buffer, whole: any request can be replayed.
            replayable: true,
            request_id: std::str::from_utf8(self.rid).unwrap_or(""),
            metrics: p.config.metrics.as_deref(),
            via: &via,
        };
        // Counted as the hyper path counts: the status answered, and the
        // time to the response head (or to the proxy's own answer).
        let count = |status: u16| {
            if let Some(m) = &p.config.metrics {
                m.request(Some(self.service), via.label(), status, started.elapsed());
            }
        };
        let mut attempt = FastAttempt {
            ex: self,
            io: &mut *io,
            upstreams: &mut *upstreams,
            out: &mut *out,
            early,
        };
        match attempts.run(&mut attempt).await {
            Ok(Ok(sent)) => {
                count(sent.head.status);
                self.relay(
                    io,
                    sent.up,
                    sent.head,
                    out,
                    upstreams,
                    sent.in_flight,
                    &sent.ep.worker_name,
                )
                .await
            }
            // The client gave up: so did the upstream request (its
            // connection was dropped, as nginx does by default).
            Ok(Err(Final::ClientGone(ep))) => {
                // nginx's 499: the client closed before the answer.
                count(499);
                debug!(service = self.service, worker = %ep.worker_name, request_id = %self.rid_str(), "client closed before the response; upstream request abandoned");
                false
            }
            Ok(Err(Final::BadHead { ep, detail })) => {
                warn!(service = self.service, worker = %ep.worker_name, error = %detail, request_id = %self.rid_str(), "upstream sent a response that cannot be forwarded");
                let e = ProxyError::Upstream {
                    service: self.service.to_string(),
                    worker: ep.worker_name.clone(),
                    detail,
                };
                count(e.status().as_u16());
                self.error(io, e, out).await
            }
            Ok(Err(Final::Refused(e))) | Err(e) => {
                count(e.status().as_u16());
                self.error(io, e, out).await
            }
        }
    }

    fn rid_str(&self) -> String {
        String::from_utf8_lossy(self.rid).into_owned()
    }

    /// Answers with a proxy error; whether the client connection can be kept.
    async fn error<IO: AsyncWrite + Unpin>(&self, io: &mut IO, e: ProxyError, out: &mut Vec<u8>) -> bool {
        write_error(out, &e, self.rid, self.head.close, self.head.method == "HEAD");
        io.write_all(out).await.is_ok()
    }
}

/// A proxy error as an HTTP/1.1 answer in `out`: the JSON the hyper path
/// gives too.
fn write_error(out: &mut Vec<u8>, e: &ProxyError, rid: &[u8], close: bool, head_request: bool) {
    let body = e.body(&String::from_utf8_lossy(rid)).to_string();
    let status = e.status();
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\ncontent-type: application/json\r\ncontent-length: ");
    out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    header(out, b"date", &response::http_date());
    header(out, b"x-request-id", rid);
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_request {
        out.extend_from_slice(body.as_bytes());
    }
}

/// A request head past [`MAX_HEAD`]: 431, and the connection is closed
/// (nothing of it crossed to a replica).
async fn refuse_head<IO: AsyncWrite + Unpin>(io: &mut IO, out: &mut Vec<u8>) -> Ended {
    debug!(limit = MAX_HEAD, "request head too large; 431");
    let rid = super::forward::request_id_from(None);
    let e = ProxyError::HeadersTooLarge { limit: MAX_HEAD };
    write_error(out, &e, rid.as_bytes(), true, false);
    let _ = io.write_all(out).await;
    Ended::Refused
}

/// Resolves when the client closes its connection. What it sends in the
/// meantime (a pipelined request) is kept in `early`, up to a bound past
/// which the client is no longer watched.
async fn client_gone<IO: AsyncRead + Unpin>(io: &mut IO, early: &mut BytesMut) {
    while early.len() < MAX_HEAD {
        early.reserve(4096);
        match io.read_buf(early).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
    std::future::pending().await
}
