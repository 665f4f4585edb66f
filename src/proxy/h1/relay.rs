//! Relaying a response: its head (already rewritten) and the body copied
//! as it arrives, its end found from the framing the head gave it, and the
//! upstream connection kept when it can carry another request.

use super::chunked::ChunkedEnd;
use super::response::{self, Framing};
use super::upstream::Upstream;
use super::{Exchange, MAX_UPSTREAMS, READ_CHUNK};
use crate::proxy::balance::InFlight;
use crate::proxy::ProxyError;
use bytes::Buf;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::warn;

impl Exchange<'_> {
    /// Writes the response head (in `out`) and copies the body as it
    /// arrives; keeps the upstream connection when it can carry another
    /// request. Whether the client connection can be kept.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn relay<IO>(
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
