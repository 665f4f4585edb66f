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

mod chunked;
mod request;
mod response;
mod upstream;

use super::attempts::{Attempt, Attempts};
use super::balance::InFlight;
use super::{ClientAddr, Proxy, ProxyError};
use crate::routes::{Endpoint, ServiceRoutes, Via};
use crate::upstream::SendFailure;
use bytes::{Buf, Bytes, BytesMut};
use chunked::ChunkedEnd;
use request::Parsed;
use response::Framing;
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
/// path can all reach (plain HTTP when direct, or a tunnel); `None` for
/// anything else.
fn fast_routes(proxy: &Proxy, name: &str) -> Option<(String, Arc<ServiceRoutes>)> {
    let table = proxy.routes.borrow().clone();
    let service = proxy.resolve(name, &table).ok()?;
    let routes = table.get(&service)?.clone();
    if routes.unavailable().is_some() {
        return None;
    }
    let reachable = |e: &Arc<Endpoint>| match e.via {
        Via::Direct => e.origin.scheme_str() == Some("http") && e.origin.authority().is_some(),
        Via::Tunnel(_) => true,
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

/// One request on the fast path, as the attempt loop sends it: the
/// exchange, and the connection state an attempt uses.
struct FastAttempt<'x, 'a, IO> {
    ex: &'x Exchange<'a>,
    io: &'x mut IO,
    upstreams: &'x mut Vec<Upstream>,
    out: &'x mut Vec<u8>,
    early: &'x mut BytesMut,
}

/// An attempt that got a response head: what relaying it needs.
struct Sent {
    up: Upstream,
    head: response::Head,
    in_flight: InFlight,
    ep: Arc<Endpoint>,
}

/// How a request ends without a response to relay, and without a retry.
enum Final {
    /// The client closed its connection while the request waited.
    ClientGone(Arc<Endpoint>),
    /// A response head that cannot be forwarded.
    BadHead { ep: Arc<Endpoint>, detail: String },
}

impl<IO> Attempt for FastAttempt<'_, '_, IO>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send,
{
    type Output = Result<Sent, Final>;

    async fn attempt(&mut self, ep: &Arc<Endpoint>, in_flight: InFlight) -> Result<Self::Output, SendFailure> {
        let FastAttempt {
            ex,
            io,
            upstreams,
            out,
            early,
        } = self;
        {
            tokio::select! {
                a = ex.attempt(ep, upstreams, out) => match a {
                    Ok((up, head)) => Ok(Ok(Sent { up, head, in_flight, ep: ep.clone() })),
                    Err(Failed::Send(f)) => Err(f),
                    Err(Failed::Quiet { detail, .. }) => Err(SendFailure::reset(detail)),
                    Err(Failed::BadHead(detail)) => Ok(Err(Final::BadHead { ep: ep.clone(), detail })),
                },
                () = client_gone(&mut **io, early) => Ok(Err(Final::ClientGone(ep.clone()))),
            }
        }
    }
}

/// How an attempt failed.
enum Failed {
    /// Before any response byte: another replica may be tried.
    Send(SendFailure),
    /// The connection ended before any response byte; `written`: after
    /// the request had gone out.
    Quiet { detail: String, written: bool },
    /// A response head that cannot be forwarded.
    BadHead(String),
}

impl Exchange<'_> {
    /// Proxies the request; whether the client connection can be kept.
    async fn run<IO>(&self, io: &mut IO, upstreams: &mut Vec<Upstream>, out: &mut Vec<u8>, early: &mut BytesMut) -> bool
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let p = self.proxy;
        let attempts = Attempts {
            policy: &p.retry,
            service: self.service,
            routes: self.routes,
            timeout: p.catalog.timeout(self.service, p.config.timeout),
            // The body is in the buffer, whole: any request can be replayed.
            replayable: true,
            request_id: std::str::from_utf8(self.rid).unwrap_or(""),
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
                self.error(io, e, out).await
            }
            Err(e) => self.error(io, e, out).await,
        }
    }

    fn rid_str(&self) -> String {
        String::from_utf8_lossy(self.rid).into_owned()
    }

    /// Sends the request to `ep` and reads the response head; on success the
    /// client's head is in `out` and the connection is returned.
    async fn attempt(
        &self,
        ep: &Endpoint,
        upstreams: &mut Vec<Upstream>,
        out: &mut Vec<u8>,
    ) -> Result<(Upstream, response::Head), Failed> {
        let service = self.service;
        let open = || Upstream::open(ep, service, self.proxy.config.connect_timeout);
        let kept = upstreams
            .iter()
            .position(|u| u.leads_to(ep, service))
            .map(|i| upstreams.swap_remove(i))
            .or_else(|| self.proxy.kept.take(ep, service));
        let kept = kept.and_then(|mut up| up.still_open().then_some(up));
        let mut reused = kept.is_some();
        let mut up = match kept {
            Some(up) => up,
            None => open().await?,
        };
        loop {
            out.clear();
            self.write_request(ep, &up, out);
            match self.exchange_head(&mut up, out).await {
                Ok(head) => return Ok((up, head)),
                // A kept connection the peer closed as the request went out:
                // the request was not processed, so it goes on a fresh one.
                Err(Failed::Quiet { detail, written }) if reused && (!written || idempotent(self.head.method)) => {
                    debug!(error = %detail, "kept upstream connection was closed; redialing");
                    up = open().await?;
                    reused = false;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes the request in `out`, then reads the response head and leaves
    /// the client's version of it in `out`.
    async fn exchange_head(&self, up: &mut Upstream, out: &mut Vec<u8>) -> Result<response::Head, Failed> {
        if let Err(e) = up.io.write_all(out).await {
            return Err(Failed::Quiet {
                detail: format!("write: {e}"),
                written: false,
            });
        }
        let quiet = |detail: String| Failed::Quiet { detail, written: true };
        out.clear();
        up.buf.clear();
        loop {
            let got = up.buf.len();
            if got > 0 {
                match response::rewrite(&up.buf, self.head.method == "HEAD", self.rid, self.head.close, out) {
                    Ok(Some(h)) if h.len > MAX_RESPONSE_HEAD => {
                        return Err(Failed::BadHead("response head too large".into()));
                    }
                    Ok(Some(h)) if h.status < 200 => {
                        up.buf.advance(h.len);
                        continue;
                    }
                    Ok(Some(h)) => return Ok(h),
                    Ok(None) if got > MAX_RESPONSE_HEAD => {
                        return Err(Failed::BadHead("response head too large".into()));
                    }
                    Ok(None) => {}
                    Err(e) => return Err(Failed::BadHead(e.to_string())),
                }
            }
            up.buf.reserve(READ_CHUNK);
            match up.io.read_buf(&mut up.buf).await {
                Ok(0) if got == 0 => return Err(quiet("the connection closed before a response".into())),
                Ok(0) => return Err(Failed::BadHead("the connection closed mid-head".into())),
                Ok(_) => {}
                Err(e) if got == 0 => return Err(quiet(format!("read: {e}"))),
                Err(e) => return Err(Failed::BadHead(format!("read: {e}"))),
            }
        }
    }

    /// The request as the replica gets it: its path under the replica's
    /// prefix, hop-by-hop headers out, `x-forwarded-*` and the request id in.
    fn write_request(&self, ep: &Endpoint, up: &Upstream, out: &mut Vec<u8>) {
        let h = self.head;
        out.extend_from_slice(h.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(up.prefix(ep).as_bytes());
        out.extend_from_slice(if h.rest.is_empty() { b"/" } else { h.rest.as_bytes() });
        if let Some(q) = h.query {
            out.push(b'?');
            out.extend_from_slice(q.as_bytes());
        }
        out.extend_from_slice(b" HTTP/1.1\r\n");
        header(out, b"host", &up.host);
        let mut host = None;
        let mut forwarded_for = None;
        let has_host = h.headers.iter().any(|x| x.name.eq_ignore_ascii_case("host"));
        let listed = has_connection(h.headers);
        for hd in h.headers {
            let n = hd.name;
            if n.eq_ignore_ascii_case("host") {
                host = Some(hd.value);
                continue;
            }
            if n.eq_ignore_ascii_case("x-forwarded-for") && self.client.is_some() {
                forwarded_for.get_or_insert(hd.value);
                continue;
            }
            if is_hop_by_hop(n)
                || (listed && !frames_the_message(n) && named_in_connection(h.headers, n))
                || n.eq_ignore_ascii_case("x-forwarded-proto")
                || n.eq_ignore_ascii_case("x-request-id")
                || (has_host && n.eq_ignore_ascii_case("x-forwarded-host"))
            {
                continue;
            }
            header(out, n.as_bytes(), hd.value);
        }
        if let Some(client) = self.client {
            out.extend_from_slice(b"x-forwarded-for: ");
            if let Some(prev) = forwarded_for {
                out.extend_from_slice(prev);
                out.extend_from_slice(b", ");
            }
            out.extend_from_slice(client.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if let Some(v) = host {
            header(out, b"x-forwarded-host", v);
        }
        out.extend_from_slice(b"x-forwarded-proto: http\r\n");
        header(out, b"x-request-id", self.rid);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(self.body);
    }

    /// Writes the response head (in `out`) and copies the body as it
    /// arrives; keeps the upstream connection when it can carry another
    /// request. Whether the client connection can be kept.
    #[allow(clippy::too_many_arguments)]
    async fn relay<IO>(
        &self,
        io: &mut IO,
        mut up: Upstream,
        head: response::Head,
        out: &mut Vec<u8>,
        upstreams: &mut Vec<Upstream>,
        in_flight: InFlight,
        worker: &str,
    ) -> bool
    where
        IO: AsyncWrite + Unpin,
    {
        up.buf.advance(head.len);
        let mut framing = Body::new(head.framing);
        let mut reusable = head.reusable;
        let mut client_ok = true;
        // What came with the head goes out with it, in one write; if that
        // is already broken, nothing has reached the client and it gets a 502.
        let (n, done) = match framing.take(&up.buf) {
            Ok(t) => t,
            Err(e) => {
                warn!(service = self.service, worker, error = %e, request_id = %self.rid_str(), "upstream response body is malformed");
                let e = ProxyError::Upstream {
                    service: self.service.to_string(),
                    worker: worker.to_string(),
                    detail: format!("malformed response body: {e}"),
                };
                self.error(io, e, out).await;
                return false;
            }
        };
        out.extend_from_slice(&up.buf[..n]);
        if n < up.buf.len() {
            reusable = false;
        }
        up.buf.clear();
        if io.write_all(out).await.is_err() {
            return false;
        }
        let mut finished = done;
        while !finished {
            up.buf.reserve(READ_CHUNK);
            match up.io.read_buf(&mut up.buf).await {
                Ok(0) if framing.until_close() => finished = true,
                Ok(0) => return self.body_failed("the connection closed mid-body"),
                Ok(_) => {
                    let (n, done) = match framing.take(&up.buf) {
                        Ok(t) => t,
                        Err(e) => return self.body_failed(&e),
                    };
                    if n < up.buf.len() {
                        reusable = false;
                    }
                    if io.write_all(&up.buf[..n]).await.is_err() {
                        client_ok = false;
                        reusable = false;
                        finished = true;
                    }
                    up.buf.clear();
                    finished |= done;
                }
                Err(e) => return self.body_failed(&e.to_string()),
            }
        }
        drop(in_flight);
        if reusable {
            if upstreams.len() >= MAX_UPSTREAMS {
                upstreams.remove(0);
            }
            upstreams.push(up);
        }
        client_ok && !framing.until_close() && !head.closes_client
    }

    fn body_failed(&self, detail: &str) -> bool {
        warn!(service = self.service, error = %detail, request_id = %self.rid_str(), "upstream response body broke off; closing the client connection");
        false
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

/// Tracks a response body's framing as its bytes go through.
struct Body {
    framing: Framing,
    left: u64,
    chunked: ChunkedEnd,
}

impl Body {
    fn new(framing: Framing) -> Self {
        let left = match framing {
            Framing::Length(n) => n,
            _ => 0,
        };
        Body {
            framing,
            left,
            chunked: ChunkedEnd::default(),
        }
    }

    fn until_close(&self) -> bool {
        self.framing == Framing::UntilClose
    }

    /// How many of `buf`'s bytes belong to the body, and whether it ended.
    fn take(&mut self, buf: &[u8]) -> Result<(usize, bool), String> {
        Ok(match self.framing {
            Framing::Empty => (0, true),
            Framing::Length(_) => {
                let n = self.left.min(buf.len() as u64);
                self.left -= n;
                (n as usize, self.left == 0)
            }
            Framing::Chunked => match self.chunked.advance(buf).map_err(|e| e.to_string())? {
                Some(n) => (n, true),
                None => (buf.len(), false),
            },
            Framing::UntilClose => (buf.len(), false),
        })
    }
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

fn header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The client's `x-request-id` if it sent a sane one, else a new one.
fn request_id(headers: &[httparse::Header<'_>]) -> String {
    let theirs = headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("x-request-id"))
        .and_then(|h| std::str::from_utf8(h.value).ok());
    super::forward::request_id_from(theirs)
}

/// Hop-by-hop headers (RFC 9110 7.6.1), the hyper path's list. `te` is
/// dropped even as `te: trailers`, which the hyper path keeps for gRPC: no
/// gRPC call comes this way.
fn is_hop_by_hop(name: &str) -> bool {
    super::forward::is_hop_by_hop_name(name)
}

/// Methods that may be sent again on a fresh connection when a reused one
/// turned out to be closed (RFC 9110 9.2.2).
fn idempotent(method: &str) -> bool {
    http::Method::from_bytes(method.as_bytes()).is_ok_and(|m| m.is_idempotent())
}

/// Headers that frame the message (RFC 9112 6): whatever `Connection`
/// names, these are never dropped from a message whose body is forwarded
/// with the framing they gave it. Dropping `Content-Length` while writing
/// the body was request smuggling: the replica read the body as the next
/// request on a connection other clients share.
fn frames_the_message(name: &str) -> bool {
    name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("transfer-encoding")
}

/// Whether `headers` has a `Connection` header (most have none, and then no
/// other header needs checking against it).
fn has_connection(headers: &[httparse::Header<'_>]) -> bool {
    headers.iter().any(|h| h.name.eq_ignore_ascii_case("connection"))
}

/// Whether a `Connection` header among `headers` names `name`.
fn named_in_connection(headers: &[httparse::Header<'_>], name: &str) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .any(|h| is_token_in(h.value, name))
}

/// Whether the comma-separated list `value` holds `token` (any case).
fn is_token_in(value: &[u8], token: &str) -> bool {
    value
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}
