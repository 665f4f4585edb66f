//! HTTP/1 upstream connections owned by one client connection and driven
//! inline, in that client connection's own task.
//!
//! Why: the pooled client (hyper-util's) runs each upstream connection as a
//! task of its own and hands every request to it through channels, with a
//! shared pool behind a lock. At proxy rates those hand-offs and the
//! cross-task wake-ups cost more than the HTTP work itself (BENCHMARKS.md).
//! A client's HTTP/1 connection carries one request at a time, so it can
//! keep its own upstream connections and poll them itself, as nginx's event
//! loop does: no spawned task, no shared pool, no wake-up of another task.
//!
//! The price: up to [`MAX_PER_CLIENT`] upstream connections per client
//! connection, closed with it. An idle upstream connection is not polled, so
//! a peer that closed it is noticed on the next use, and the request (not yet
//! written) goes out on a fresh connection instead.

use axum::body::Body;
use bytes::Bytes;
use http::uri::Authority;
use http::{Request, Response};
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper_util::rt::TokioIo;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use super::dial::ServiceStream;
use super::failure::SendFailure;
use super::tls::ServiceTls;

/// Upstream connections one client connection keeps (one per endpoint it
/// used most recently).
pub const MAX_PER_CLIENT: usize = 4;

type Conn = Connection<TokioIo<ServiceStream>, Body>;

/// One upstream connection: the request handle and the connection future,
/// which whoever is waiting on it polls.
struct Upstream {
    https: bool,
    authority: Authority,
    sender: SendRequest<Body>,
    /// `None` once the connection has ended.
    conn: Option<Pin<Box<Conn>>>,
}

/// Moves a connection along (reads, writes, EOF) without blocking.
fn poll_conn(conn: &mut Option<Pin<Box<Conn>>>, cx: &mut Context<'_>) {
    if let Some(c) = conn.as_mut() {
        if c.as_mut().poll(cx).is_ready() {
            *conn = None;
        }
    }
}

impl Upstream {
    fn reusable(&self) -> bool {
        self.conn.is_some() && !self.sender.is_closed()
    }
}

/// Idle upstream connections: those of one client connection, or a small
/// shared pool whose connections are driven by whichever request holds them.
pub struct InlineUpstreams {
    idle: Mutex<Vec<Upstream>>,
    max_idle: usize,
}

impl Default for InlineUpstreams {
    fn default() -> Self {
        Self::with_max_idle(MAX_PER_CLIENT)
    }
}

impl InlineUpstreams {
    /// Keeps at most `max_idle` idle connections (the oldest goes first).
    pub fn with_max_idle(max_idle: usize) -> Self {
        InlineUpstreams {
            idle: Mutex::new(Vec::new()),
            max_idle: max_idle.max(1),
        }
    }

    fn take(&self, https: bool, authority: &Authority) -> Option<Upstream> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let i = idle
            .iter()
            .position(|u| u.https == https && &u.authority == authority)?;
        Some(idle.swap_remove(i))
    }

    fn put_back(&self, up: Upstream) {
        if !up.reusable() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() >= self.max_idle {
            idle.remove(0);
        }
        idle.push(up);
    }

    /// Sends `req` (with `Host` set) to `origin` (`http://` or `https://`
    /// and an authority), on an idle connection if there is one. The
    /// response body keeps the connection (and `guard`) until it has been
    /// read to the end.
    pub async fn send<G: Send + Unpin + 'static>(
        self: &Arc<Self>,
        origin: &http::Uri,
        tls: &ServiceTls,
        mut req: Request<Body>,
        connect_timeout: Duration,
        guard: G,
    ) -> Result<Response<Body>, SendFailure> {
        let Some(authority) = origin.authority() else {
            return Err(SendFailure::connect(origin, "the URL has no address"));
        };
        let https = super::tls::is_https(origin);
        // HTTP/1 to an origin server: the request line carries the path only.
        if req.uri().authority().is_some() {
            let pq = req.uri().path_and_query().cloned();
            *req.uri_mut() = pq.map_or_else(|| http::Uri::from_static("/"), http::Uri::from);
        }
        loop {
            let (mut up, fresh) = match self.take(https, authority) {
                Some(up) => (up, false),
                None => (dial(https, authority, tls, connect_timeout).await?, true),
            };
            let ready = drive(&mut up.conn, up_ready(&mut up.sender)).await;
            if ready.is_err() {
                if fresh {
                    return Err(SendFailure::reset("the connection closed before the request was sent"));
                }
                continue;
            }
            let sent = up.sender.try_send_request(req);
            match drive(&mut up.conn, sent).await {
                Ok(resp) => {
                    let home = self.clone();
                    return Ok(resp.map(|inner| {
                        Body::new(Driven {
                            inner,
                            up: Some(up),
                            home,
                            _guard: guard,
                        })
                    }));
                }
                Err(mut e) => match e.take_message() {
                    // Not written: an idle connection the peer had closed.
                    Some(r) if !fresh => req = r,
                    _ => return Err(SendFailure::reset(e.into_error())),
                },
            }
        }
    }
}

/// Awaits `f` while driving `conn`: the connection makes progress only
/// when someone polls it, and here that is whoever waits on it.
async fn drive<F: Future>(conn: &mut Option<Pin<Box<Conn>>>, f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    poll_fn(|cx| {
        poll_conn(conn, cx);
        f.as_mut().poll(cx)
    })
    .await
}

/// `SendRequest::ready` as a future that borrows only the sender, so the
/// connection can be driven beside it.
fn up_ready(sender: &mut SendRequest<Body>) -> impl Future<Output = hyper::Result<()>> + '_ {
    poll_fn(move |cx| sender.poll_ready(cx))
}

async fn dial(
    https: bool,
    authority: &Authority,
    tls: &ServiceTls,
    timeout: Duration,
) -> Result<Upstream, SendFailure> {
    let stream = super::dial::connect(https, authority, tls, timeout).await?;
    let (sender, conn) = http1::Builder::new()
        // The fast path's bound on response heads: longer ones are a 502
        // on every path.
        .max_buf_size(super::MAX_RESPONSE_HEAD)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| SendFailure::connect(authority, e))?;
    Ok(Upstream {
        https,
        authority: authority.clone(),
        sender,
        conn: Some(Box::pin(conn)),
    })
}

/// A response body that drives its upstream connection while it is read,
/// and hands the connection back once the body has ended.
struct Driven<G> {
    inner: Incoming,
    up: Option<Upstream>,
    home: Arc<InlineUpstreams>,
    _guard: G,
}

impl<G> Driven<G> {
    fn finish(&mut self) {
        if let Some(up) = self.up.take() {
            self.home.put_back(up);
        }
    }
}

impl<G: Unpin> hyper::body::Body for Driven<G> {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Some(up) = this.up.as_mut() {
            poll_conn(&mut up.conn, cx);
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.finish(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.finish(),
            // A broken body leaves the connection in an unknown state.
            Poll::Ready(Some(Err(_))) => this.up = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<G> Drop for Driven<G> {
    fn drop(&mut self) {
        // A body the server never had to read (empty) still ended cleanly;
        // one dropped half-read did not, and its connection is closed.
        if self.inner.is_end_stream() {
            self.finish();
        }
    }
}
