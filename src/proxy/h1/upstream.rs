//! The fast path's upstream connections: a TCP connection to a direct
//! replica (TLS over it for an `https://` one), or a raw pipe down a worker's tunnel (an HTTP/2 `CONNECT`
//! stream that the worker copies to a TCP connection of its own). Either
//! way the request and response cross as HTTP/1 bytes, and the connection
//! is kept for the client connection's next request.

use super::READ_CHUNK;
use crate::routes::{Endpoint, TunnelSender, Via};
use crate::tunnel::{FORWARD_ERROR_HEADER, PIPE_HOST_HEADER, PIPE_PREFIX_HEADER, SERVICE_HEADER};
use crate::upstream::{Cause, SendFailure, ServiceTls};
use bytes::BytesMut;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;

/// How an attempt failed.
pub(super) enum Failed {
    /// Before any response byte: another replica may be tried.
    Send(SendFailure),
    /// The connection ended before any response byte; `written`: after
    /// the request had gone out.
    Quiet { detail: String, written: bool },
    /// A response head that cannot be forwarded.
    BadHead(String),
    /// The request's target under this replica's prefix would be past
    /// [`crate::proxy::forward::MAX_TARGET`]; nothing was sent.
    TargetTooLong,
}

/// Which replica a kept connection leads to.
enum Key {
    /// Any service at this address: each request takes its path prefix
    /// from its own endpoint (two services may share an address).
    Direct {
        https: bool,
        authority: http::uri::Authority,
    },
    /// One service on one worker: a pipe is bound to the service it was
    /// opened for, and the worker told the prefix that service wants.
    Tunnel {
        worker: String,
        service: String,
        prefix: String,
    },
}

/// A kept upstream connection and what was read from it but not yet used.
pub(crate) struct Upstream {
    key: Key,
    pub(super) io: Io,
    pub(super) buf: BytesMut,
    /// What the service expects in `Host` (the same for every service at
    /// one address).
    pub(super) host: Vec<u8>,
    /// A pipe counts as an open tunnel stream while it lives.
    _stream: Option<crate::metrics::fleet::Open>,
}

impl Upstream {
    /// Whether this connection leads to `service` on `ep`.
    pub(super) fn leads_to(&self, ep: &Endpoint, service: &str) -> bool {
        match (&self.key, &ep.via) {
            (Key::Direct { https, authority }, Via::Direct) => {
                ep.origin.authority() == Some(authority) && *https == crate::upstream::is_https(&ep.origin)
            }
            (Key::Tunnel { worker, service: s, .. }, Via::Tunnel(_)) => *worker == ep.worker_id && s == service,
            _ => false,
        }
    }

    /// The path prefix a request to `ep` carries on this connection.
    pub(super) fn prefix<'a>(&'a self, ep: &'a Endpoint) -> &'a str {
        match &self.key {
            Key::Direct { .. } => &ep.prefix,
            Key::Tunnel { prefix, .. } => prefix,
        }
    }

    /// Whether the peer has not closed it meanwhile (nothing to read is
    /// what an open, idle connection looks like).
    pub(super) fn still_open(&mut self) -> bool {
        let mut probe = [0u8; 1];
        match &mut self.io {
            Io::Tcp(s) => matches!(s.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock),
            Io::Pipe(p) => pending_read(p, &mut probe),
            // A TLS record that arrives unasked (a close_notify, a session
            // ticket) is read here; anything the service sends as data
            // before a request makes the connection unusable anyway.
            Io::Tls(t) => pending_read(t, &mut probe),
        }
    }

    /// Opens a connection to `service` on `ep`.
    pub(super) async fn open(
        ep: &Endpoint,
        service: &str,
        tls: &ServiceTls,
        timeout: Duration,
        metrics: Option<&crate::metrics::ProxyMetrics>,
    ) -> Result<Upstream, Failed> {
        match &ep.via {
            Via::Direct => dial(ep, tls, timeout).await,
            Via::Tunnel(sender) => {
                let mut up = pipe(ep, sender, service, timeout).await?;
                up._stream = metrics.map(|m| m.tunnel_stream());
                Ok(up)
            }
            // Never on the fast path (`fast_routes`); refused, not dialed.
            Via::Peer => Err(Failed::Send(SendFailure::connect(
                &ep.origin,
                "a peer replica is reached through the full path",
            ))),
        }
    }
}

async fn dial(ep: &Endpoint, tls: &ServiceTls, timeout: Duration) -> Result<Upstream, Failed> {
    let Some(authority) = ep.origin.authority() else {
        return Err(Failed::Send(SendFailure::connect(&ep.origin, "the URL has no address")));
    };
    let https = crate::upstream::is_https(&ep.origin);
    let io = match crate::upstream::connect(https, authority, tls, timeout).await {
        Ok(Either::Left(tcp)) => Io::Tcp(tcp),
        Ok(Either::Right(tls)) => Io::Tls(tls),
        Err(f) => return Err(Failed::Send(f)),
    };
    let host = crate::upstream::host_for(&ep.origin).map_or_else(Vec::new, |h| h.as_bytes().to_vec());
    Ok(Upstream {
        key: Key::Direct {
            https,
            authority: authority.clone(),
        },
        io,
        buf: BytesMut::with_capacity(READ_CHUNK),
        host,
        _stream: None,
    })
}

/// Asks the worker for a raw pipe to `service` (see `worker::tunnel`).
async fn pipe(ep: &Endpoint, sender: &TunnelSender, service: &str, timeout: Duration) -> Result<Upstream, Failed> {
    // Every way of not getting a pipe is a failed connect: nothing was sent.
    let target = format!("`{service}` through the tunnel of worker `{}`", ep.worker_name);
    let failed = |cause: Cause| Failed::Send(SendFailure::connect(&target, cause));
    let open = async {
        let mut sender = sender.clone();
        sender.ready().await?;
        let req = http::Request::connect("service.tunnel:80")
            .header(SERVICE_HEADER, service)
            .body(axum::body::Body::empty())?;
        let resp = sender.send_request(req).await?;
        if !resp.status().is_success() {
            let kind = resp.headers().get(FORWARD_ERROR_HEADER).cloned();
            return Err(Cause::from(format!(
                "the worker could not reach the service ({}; {})",
                resp.status(),
                kind.as_ref().and_then(|k| k.to_str().ok()).unwrap_or("?")
            )));
        }
        let header = |n: &str| resp.headers().get(n).map(|v| v.as_bytes().to_vec());
        let host = header(PIPE_HOST_HEADER).unwrap_or_default();
        let prefix = header(PIPE_PREFIX_HEADER)
            .and_then(|p| String::from_utf8(p).ok())
            .unwrap_or_default();
        let up = hyper::upgrade::on(resp).await?;
        Ok::<_, Cause>((up, host, prefix))
    };
    let (up, host, prefix) = match tokio::time::timeout(timeout, open).await {
        Ok(Ok(opened)) => opened,
        Ok(Err(cause)) => return Err(failed(cause)),
        Err(_) => return Err(Failed::Send(SendFailure::ConnectTimeout { target, after: timeout })),
    };
    Ok(Upstream {
        key: Key::Tunnel {
            worker: ep.worker_id.clone(),
            service: service.to_string(),
            prefix,
        },
        io: Io::Pipe(TokioIo::new(up)),
        buf: BytesMut::with_capacity(READ_CHUNK),
        host,
        _stream: None,
    })
}

/// Idle upstream connections left by client connections that closed, for
/// the next client connection to the same replica: without it a client that
/// sends one request per connection would cost a connect (and, through a
/// tunnel, a pipe opened by the worker) per request. Touched only when a
/// client connection ends or misses in its own list, not per request.
#[derive(Default)]
pub(crate) struct Shared {
    idle: std::sync::Mutex<std::collections::VecDeque<Upstream>>,
}

/// Idle connections kept for all client connections together.
const MAX_SHARED: usize = 256;

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<Upstream>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A kept connection to `service` on `ep`, if any (the newest first).
    pub(super) fn take(&self, ep: &Endpoint, service: &str) -> Option<Upstream> {
        let mut idle = self.lock();
        let i = idle.iter().rposition(|u| u.leads_to(ep, service))?;
        idle.remove(i)
    }

    /// Keeps `ups` (the oldest kept ones go first past the bound).
    pub(super) fn give(&self, ups: impl IntoIterator<Item = Upstream>) {
        let mut idle = self.lock();
        for up in ups {
            if idle.len() >= MAX_SHARED {
                idle.pop_front();
            }
            idle.push_back(up);
        }
    }
}

/// A client connection's own idle upstream connections, handed to the
/// shared ones when the client connection ends (however it ends).
pub(super) struct Own<'a> {
    pub(super) list: Vec<Upstream>,
    pub(super) shared: &'a Shared,
}

impl Drop for Own<'_> {
    fn drop(&mut self) {
        if !self.list.is_empty() {
            self.shared.give(self.list.drain(..));
        }
    }
}

/// The byte stream under an [`Upstream`].
pub(super) enum Io {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Pipe(TokioIo<Upgraded>),
}

/// Whether nothing is there to read now (what an open, idle connection
/// looks like), without registering for a wake-up.
fn pending_read<T: AsyncRead + Unpin>(io: &mut T, probe: &mut [u8]) -> bool {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut buf = ReadBuf::new(probe);
    Pin::new(io).poll_read(&mut cx, &mut buf).is_pending()
}

impl AsyncRead for Io {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(t) => Pin::new(t).poll_read(cx, buf),
            Io::Pipe(p) => Pin::new(p).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(t) => Pin::new(t).poll_write(cx, buf),
            Io::Pipe(p) => Pin::new(p).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(t) => Pin::new(t).poll_flush(cx),
            Io::Pipe(p) => Pin::new(p).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(t) => Pin::new(t).poll_shutdown(cx),
            Io::Pipe(p) => Pin::new(p).poll_shutdown(cx),
        }
    }
}
