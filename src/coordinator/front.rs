//! The front door: accepts connections within the connection limit, sends
//! HTTP/2 ones to the tonic server, and serves HTTP/1 ones here.
//!
//! Why not let tonic serve HTTP/1 as well (it can): every proxied request
//! would then pass the gRPC server's layers and the router before reaching
//! the proxy, and its upstream request would go through the pooled client's
//! tasks and channels. Here a `/service/` request goes straight to the proxy
//! tower service, which drives its upstream connection in this connection's
//! own task ([`crate::upstream::InlineUpstreams`]). Every other HTTP/1 request
//! goes to the same router tonic serves, so both protocols see one API.
//!
//! Before hyper, an HTTP/1 connection meets the proxy's byte-level fast
//! path ([`crate::proxy::h1`]), which serves plain `/service/` requests
//! itself and hands the connection to hyper, with the bytes it has read, at
//! the first request it does not take.

use super::conn::{self, linger, Conn};
use super::listener::{self, Limited};
use super::sniff::{sniff, Prefixed, Protocol};
use crate::proxy::{h1, is_service_path, BoxFuture, ClientAddr, ClientConn, ProxyService, MAX_REQUEST_HEAD};
use crate::tls::{PeerInfo, ServerTlsRef};
use crate::upstream::InlineUpstreams;
use axum::body::Body;
use axum::response::Response;
use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::{Service as _, ServiceExt};
use tracing::{debug, info};

/// What the front door serves HTTP/1 with.
pub struct Front {
    /// The proxy's `/service/` face.
    pub proxy: ProxyService,
    /// Everything else (`/health`, `/api/admin/*`, ...).
    pub router: axum::Router,
    /// A new connection that sends nothing for this long is closed.
    pub first_byte_timeout: Duration,
    /// An HTTP/1 connection is closed when a request head takes longer than
    /// this to arrive, counted from the end of the previous response; this
    /// bounds idle keep-alive connections and slow senders alike.
    pub header_timeout: Duration,
    /// `/service/` requests go through [`crate::proxy::h1`] first.
    pub fast_path: bool,
    /// With `--tls-cert`: every connection is TLS (the handshake within
    /// `first_byte_timeout`), then told apart as a plain one is.
    pub tls: Option<ServerTlsRef>,
    /// Counts open connections by protocol.
    pub metrics: Option<Arc<crate::metrics::FleetMetrics>>,
}

/// An accepted connection whose protocol is known, its first bytes put back.
pub type Sniffed = Prefixed<Conn>;

/// When the front door stops, and what it is still serving.
#[derive(Clone)]
pub struct Stop {
    /// Stop accepting; HTTP/1 connections finish the request in flight and close.
    pub drain: CancellationToken,
    /// Close the HTTP/1 connections still open (the shutdown grace is over).
    pub cut: CancellationToken,
    /// Every connection task, so shutdown can wait for them.
    pub tasks: TaskTracker,
}

/// Accepts on `listener` until `stop.drain`; returns the HTTP/2 connections,
/// for the tonic server.
pub fn spawn(
    listener: TcpListener,
    max_connections: usize,
    front: Arc<Front>,
    stop: Stop,
) -> ReceiverStream<io::Result<Sniffed>> {
    let (h2_tx, h2_rx) = mpsc::channel(64);
    let mut accepted = listener::accept_limited(listener, max_connections);
    tokio::spawn(async move {
        loop {
            let conn = tokio::select! {
                c = accepted.next() => c,
                _ = stop.drain.cancelled() => return,
            };
            let Some(Ok(conn)) = conn else { return };
            stop.tasks
                .spawn(route(conn, front.clone(), h2_tx.clone(), stop.clone()));
        }
    });
    ReceiverStream::new(h2_rx)
}

async fn route(conn: Limited, front: Arc<Front>, h2: mpsc::Sender<io::Result<Sniffed>>, stop: Stop) {
    let Limited { stream, slot } = conn;
    let stream = match &front.tls {
        None => tokio_util::either::Either::Left(stream),
        Some(tls) => {
            let accepted = tokio::select! {
                a = conn::accept_tls(stream, tls, front.first_byte_timeout) => a,
                _ = stop.drain.cancelled() => return,
            };
            match accepted {
                Ok(c) => c,
                Err(e) => {
                    // No address: logs name workers, and this is not one yet.
                    info!(error = %e, "refused a connection at TLS");
                    return;
                }
            }
        }
    };
    let info = conn::peer(&stream);
    let sniffed = tokio::select! {
        s = sniff(stream, front.first_byte_timeout, MAX_REQUEST_HEAD) => s,
        // Shutting down: a connection that has not spoken yet is not waited for.
        _ = stop.drain.cancelled() => return,
    };
    let (protocol, io) = match sniffed {
        Ok((p, io)) => (p, io.holding(slot)),
        Err(e) => {
            debug!(error = %e, "connection closed before a protocol was seen");
            return;
        }
    };
    let kind = match protocol {
        Protocol::Http2 => "h2",
        Protocol::Http1 => "http1",
    };
    let io = match &front.metrics {
        Some(m) => io.counted(m.open(kind)),
        None => io,
    };
    match protocol {
        Protocol::Http2 => {
            let _ = h2.send(Ok(io)).await;
        }
        Protocol::Http1 => {
            drop(h2);
            serve_http1(io, info, front, stop).await;
        }
    }
}

async fn serve_http1(mut io: Sniffed, info: PeerInfo, front: Arc<Front>, stop: Stop) {
    let header_timeout = front.header_timeout;
    let addr = info.addr.and_then(|a| ClientAddr::new(a.ip()));
    if front.fast_path {
        let settings = h1::Settings {
            client: addr.as_ref(),
            header_timeout,
            drain: &stop.drain,
        };
        let ended = tokio::select! {
            e = h1::serve(front.proxy.proxy(), &mut io, settings) => e,
            _ = stop.cut.cancelled() => return,
        };
        match ended {
            h1::Ended::Closed => return,
            h1::Ended::Refused => return linger(&mut io).await,
            // What the fast path read goes to hyper first.
            h1::Ended::HandOff(read) => io.unread(read),
        }
    }
    let conn = ClientConn {
        addr,
        upstreams: Arc::new(InlineUpstreams::default()),
    };
    let service = Http1Service { front, info, conn };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        // A longer head is answered 431, as the fast path's bound says.
        .max_buf_size(MAX_REQUEST_HEAD)
        .serve_connection(TokioIo::new(&mut io), service);
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        biased;
        r = conn.as_mut() => r,
        _ = stop.drain.cancelled() => {
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                r = conn => r,
                _ = stop.cut.cancelled() => return,
            }
        }
    };
    if let Err(e) = result {
        debug!(error = %e, "HTTP/1 connection ended");
        linger(&mut io).await;
    }
}

/// One HTTP/1 connection's service: the connection's address and its own
/// upstream connections go with each request.
struct Http1Service {
    front: Arc<Front>,
    /// For the API router (handlers may ask who the peer is).
    info: PeerInfo,
    /// For the proxy.
    conn: ClientConn,
}

impl hyper::service::Service<Request<Incoming>> for Http1Service {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture;

    fn call(&self, req: Request<Incoming>) -> BoxFuture {
        if let Some(refusal) = host_refusal(&req).or_else(|| head_refusal(&req)) {
            return Box::pin(std::future::ready(Ok(refusal)));
        }
        let mut req = req.map(Body::new);
        if is_service_path(req.uri().path()) {
            req.extensions_mut().insert(self.conn.clone());
            // Always ready, and already boxed: no `oneshot` and no second box.
            self.front.proxy.clone().call(req)
        } else {
            req.extensions_mut().insert(self.info.clone());
            Box::pin(self.front.router.clone().oneshot(req))
        }
    }
}

/// RFC 9112 3.2: an HTTP/1.1 request with no `Host`, or more than one, gets
/// 400. (HTTP/1.0 needs none.) Checked here, where every HTTP/1 request
/// passes: the fast path hands such requests over rather than answer them.
fn host_refusal<B>(req: &Request<B>) -> Option<Response> {
    if req.version() != http::Version::HTTP_11 {
        return None;
    }
    let hosts = req.headers().get_all(http::header::HOST).iter().count();
    (hosts != 1).then(|| {
        super::http::error(
            http::StatusCode::BAD_REQUEST,
            "bad_request",
            format!("an HTTP/1.1 request needs exactly one Host header; this one has {hosts}"),
        )
    })
}

/// A head past [`MAX_REQUEST_HEAD`] that the HTTP/1 server's buffer bound
/// let through (it bounds its buffer, not the head exactly): 431, with the
/// same JSON the fast path gives.
fn head_refusal<B>(req: &Request<B>) -> Option<Response> {
    // Request line and header lines as they were on the wire, about.
    let target = req.uri().path_and_query().map_or(1, |p| p.as_str().len())
        + req.uri().authority().map_or(0, |a| a.as_str().len() + 7);
    let size = req.method().as_str().len() + target + 12 + crate::upstream::head_bytes(req.headers());
    (size > MAX_REQUEST_HEAD).then(|| {
        let rid = crate::proxy::request_id(req.headers());
        let mut r = crate::proxy::ProxyError::HeadersTooLarge {
            limit: MAX_REQUEST_HEAD,
        }
        .into_response(&rid);
        r.headers_mut()
            .insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
        r
    })
}
