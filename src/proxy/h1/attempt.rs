//! One attempt of the fast path: the request written to a kept upstream
//! connection (or a fresh one, or a tunnel pipe) in one write, and the
//! response head read back. The loop around attempts is the proxy's one
//! ([`crate::proxy::attempts`]); this is the fast path's half of it.

use super::headers::idempotent;
use super::upstream::{Failed, Upstream};
use super::{client_gone, request, response, Exchange, MAX_RESPONSE_HEAD, READ_CHUNK};
use crate::proxy::attempts::Attempt;
use crate::proxy::balance::InFlight;
use crate::proxy::forward::{self, MAX_TARGET};
use crate::proxy::ProxyError;
use crate::routes::Endpoint;
use crate::upstream::SendFailure;
use bytes::{Buf, BytesMut};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::debug;

/// One request on the fast path, as the attempt loop sends it: the
/// exchange, and the connection state an attempt uses.
pub(super) struct FastAttempt<'x, 'a, IO> {
    pub(super) ex: &'x Exchange<'a>,
    pub(super) io: &'x mut IO,
    pub(super) upstreams: &'x mut Vec<Upstream>,
    pub(super) out: &'x mut Vec<u8>,
    pub(super) early: &'x mut BytesMut,
}

/// An attempt that got a response head: what relaying it needs.
pub(super) struct Sent {
    pub(super) up: Upstream,
    pub(super) head: response::Head,
    pub(super) in_flight: InFlight,
    pub(super) ep: Arc<Endpoint>,
}

/// How a request ends without a response to relay, and without a retry.
pub(super) enum Final {
    /// The client closed its connection while the request waited.
    ClientGone(Arc<Endpoint>),
    /// A response head that cannot be forwarded.
    BadHead { ep: Arc<Endpoint>, detail: String },
    /// The request cannot be sent to any replica, as the hyper path
    /// would refuse it too.
    Refused(ProxyError),
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
                    Err(Failed::TargetTooLong) => Ok(Err(Final::Refused(ProxyError::TargetTooLong { limit: MAX_TARGET }))),
                },
                () = client_gone(&mut **io, early) => Ok(Err(Final::ClientGone(ep.clone()))),
            }
        }
    }
}

impl Exchange<'_> {
    /// Sends the request to `ep` and reads the response head; on success the
    /// client's head is in `out` and the connection is returned.
    pub(super) async fn attempt(
        &self,
        ep: &Endpoint,
        upstreams: &mut Vec<Upstream>,
        out: &mut Vec<u8>,
    ) -> Result<(Upstream, response::Head), Failed> {
        let service = self.service;
        let open = || {
            Upstream::open(
                ep,
                service,
                &self.proxy.config.service_tls,
                self.proxy.config.connect_timeout,
                self.proxy.config.metrics.as_deref(),
            )
        };
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
        // The same bound as the hyper path's (the prefix of a tunnel pipe is
        // known only once it is open); the connection is kept, unused.
        if forward::target_len(up.prefix(ep), self.head.rest, self.head.query) > MAX_TARGET {
            upstreams.push(up);
            return Err(Failed::TargetTooLong);
        }
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

    /// The request as the replica gets it ([`request::write_request`]).
    fn write_request(&self, ep: &Endpoint, up: &Upstream, out: &mut Vec<u8>) {
        request::write_request(
            self.head,
            &request::Forward {
                prefix: up.prefix(ep),
                host: &up.host,
                client: self.client.map(|c| c.as_bytes()),
                rid: self.rid,
            },
            self.body,
            out,
        );
    }
}
