//! Telling HTTP/2 (gRPC, prior knowledge) from HTTP/1 by a connection's
//! first bytes, and handing the connection on with those bytes put back.
//!
//! The coordinator serves both on one port. HTTP/2 goes to the tonic server
//! (gRPC, health, reflection, and HTTP/2 clients of the proxy); HTTP/1 is
//! served by [`super::front`], so `/service/` requests skip the gRPC router.

use bytes::{Bytes, BytesMut};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;

/// What every HTTP/2 connection starts with (RFC 9113 3.4); no HTTP/1
/// request line starts with its first four bytes.
const H2_START: &[u8; 4] = b"PRI ";
/// The whole HTTP/2 client preface, which a SETTINGS frame must follow.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An HTTP/2 frame header: length (3), type, flags, stream id (4).
const FRAME_HEADER: usize = 9;
/// The SETTINGS frame type, and its ACK flag.
const SETTINGS: u8 = 0x4;
const ACK: u8 = 0x1;
/// Largest first SETTINGS payload accepted: the default maximum frame size
/// (RFC 9113 4.2), far more than the six-byte settings a client sends.
const MAX_SETTINGS_PAYLOAD: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
}

/// Why a connection was not handed on.
#[derive(Debug, thiserror::Error)]
pub enum SniffError {
    #[error("did not finish its HTTP/2 preface or first HTTP/1 request head within {0:?}")]
    Idle(Duration),
    #[error("closed before sending a request")]
    Closed,
    #[error("not an HTTP/2 preface followed by SETTINGS")]
    BadPreface,
    #[error("read: {0}")]
    Io(#[from] io::Error),
}

/// Reads until the peer has said what it is, within `timeout`: the whole
/// HTTP/2 preface and the SETTINGS frame that must follow it, or the first
/// HTTP/1 request head (or `max_head` bytes of one, which the HTTP/1 server
/// then refuses as too large). Every byte read is put back.
///
/// Why wait for all of it: a connection holds a slot under the connection
/// limit from the moment it is accepted, and the servers behind this only
/// bound what comes after (the HTTP/2 server waits for a preface for ever;
/// HTTP/1 heads have the longer idle timeout). A peer that has not finished
/// saying what it is gets the handshake deadline and no more.
pub async fn sniff<T: AsyncRead + Unpin>(
    mut io: T,
    timeout: Duration,
    max_head: usize,
) -> Result<(Protocol, Prefixed<T>), SniffError> {
    let mut buf = BytesMut::with_capacity(1024);
    let read = async {
        let protocol = loop {
            if io.read_buf(&mut buf).await? == 0 {
                return Err(SniffError::Closed);
            }
            let n = buf.len().min(H2_START.len());
            if buf[..n] != H2_START[..n] {
                break Protocol::Http1;
            }
            if n == H2_START.len() {
                break Protocol::Http2;
            }
        };
        match protocol {
            Protocol::Http2 => read_preface(&mut io, &mut buf).await?,
            Protocol::Http1 => read_head(&mut io, &mut buf, max_head).await?,
        }
        Ok(protocol)
    };
    let protocol = tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| SniffError::Idle(timeout))??;
    Ok((
        protocol,
        Prefixed {
            head: buf.freeze(),
            inner: io,
            _slot: None,
            _open: None,
        },
    ))
}

/// Reads more of `io` into `buf` until it holds `n` bytes.
async fn fill<T: AsyncRead + Unpin>(io: &mut T, buf: &mut BytesMut, n: usize) -> Result<(), SniffError> {
    while buf.len() < n {
        buf.reserve(n - buf.len());
        if io.read_buf(buf).await? == 0 {
            return Err(SniffError::Closed);
        }
    }
    Ok(())
}

/// The rest of the preface, then a complete SETTINGS frame (not an ACK, on
/// stream 0, of a sane length).
async fn read_preface<T: AsyncRead + Unpin>(io: &mut T, buf: &mut BytesMut) -> Result<(), SniffError> {
    fill(io, buf, H2_PREFACE.len()).await?;
    if buf[..H2_PREFACE.len()] != H2_PREFACE[..] {
        return Err(SniffError::BadPreface);
    }
    let at = H2_PREFACE.len();
    fill(io, buf, at + FRAME_HEADER).await?;
    let h = &buf[at..at + FRAME_HEADER];
    let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
    let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
    if h[3] != SETTINGS || h[4] & ACK != 0 || stream != 0 || len % 6 != 0 || len > MAX_SETTINGS_PAYLOAD {
        return Err(SniffError::BadPreface);
    }
    fill(io, buf, at + FRAME_HEADER + len).await
}

/// Reads until `buf` holds a whole request head (a blank line ends it;
/// HTTP/1 parsers accept a bare LF as a line end, so this does too), or
/// `max_head` bytes.
async fn read_head<T: AsyncRead + Unpin>(io: &mut T, buf: &mut BytesMut, max_head: usize) -> Result<(), SniffError> {
    let mut from = 0;
    loop {
        if buf[from..].windows(2).any(|w| w == b"\n\n") || buf[from..].windows(3).any(|w| w == b"\n\r\n") {
            return Ok(());
        }
        if buf.len() >= max_head {
            return Ok(());
        }
        // A blank line may straddle two reads.
        from = buf.len().saturating_sub(2);
        buf.reserve(4096);
        if io.read_buf(buf).await? == 0 {
            return Err(SniffError::Closed);
        }
    }
}

/// A connection whose first few bytes were already read: they are read
/// again first. It may hold its slot under the connection limit, which is
/// given back when the connection is dropped.
pub struct Prefixed<T> {
    /// Read again before anything from `inner`.
    head: Bytes,
    inner: T,
    _slot: Option<OwnedSemaphorePermit>,
    /// Counts the connection as open (in `edgeplane_connections`) while it lives.
    _open: Option<crate::metrics::fleet::Open>,
}

impl<T> Prefixed<T> {
    /// Counted as open for as long as the connection lives.
    pub fn counted(mut self, open: crate::metrics::fleet::Open) -> Self {
        self._open = Some(open);
        self
    }

    /// Keeps `slot` for as long as the connection lives.
    pub fn holding(mut self, slot: OwnedSemaphorePermit) -> Self {
        self._slot = Some(slot);
        self
    }

    /// Puts `bytes` back in front of what is still to be read, for whoever
    /// reads the connection next (the full HTTP/1 server after the fast path).
    /// The connection under the put-back bytes.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    pub fn unread(&mut self, bytes: Bytes) {
        if self.head.is_empty() {
            self.head = bytes;
        } else {
            let mut both = BytesMut::with_capacity(bytes.len() + self.head.len());
            both.extend_from_slice(&bytes);
            both.extend_from_slice(&self.head);
            self.head = both.freeze();
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.head.is_empty() {
            let k = self.head.len().min(buf.remaining());
            buf.put_slice(&self.head.split_to(k));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    const T: Duration = Duration::from_secs(5);
    /// An empty SETTINGS frame, as the first frame after the preface.
    const SETTINGS_FRAME: &[u8] = &[0, 0, 0, SETTINGS, 0, 0, 0, 0, 0];

    fn h2_start() -> Vec<u8> {
        [&H2_PREFACE[..], SETTINGS_FRAME].concat()
    }

    async fn sniffed(first: &[u8]) -> Result<(Protocol, Vec<u8>), SniffError> {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        client.write_all(first).await.unwrap();
        drop(client);
        let (p, mut io) = sniff(server, T, 64 * 1024).await?;
        let mut all = Vec::new();
        io.read_to_end(&mut all).await.unwrap();
        Ok((p, all))
    }

    #[tokio::test]
    async fn tells_the_protocols_apart_and_loses_no_byte() {
        let h2 = [h2_start(), b"more frames".to_vec()].concat();
        assert_eq!(sniffed(&h2).await.unwrap(), (Protocol::Http2, h2.clone()));
        let get = b"GET /service/notes/x HTTP/1.1\r\n\r\nnext";
        assert_eq!(sniffed(get).await.unwrap(), (Protocol::Http1, get.to_vec()));
        let lf = b"GET / HTTP/1.1\nhost: x\n\n";
        assert_eq!(sniffed(lf).await.unwrap(), (Protocol::Http1, lf.to_vec()));
    }

    /// The defect: `PRI * HTTP/2.0\r\n` and then silence held a slot for ever.
    #[tokio::test(start_paused = true)]
    async fn a_peer_that_stops_before_it_has_said_what_it_is_is_dropped_at_the_deadline() {
        let preface_and_settings = h2_start();
        let cut = [
            &b""[..],
            b"PRI * HTTP/2.0\r\n",
            &H2_PREFACE[..],
            &preface_and_settings[..preface_and_settings.len() - 1],
            b"G",
            b"GET /service/notes/x HTTP/1.1\r\nHost: x\r\n",
        ];
        for first in cut {
            let (mut client, server) = tokio::io::duplex(1024);
            client.write_all(first).await.unwrap();
            // The client stays open and silent.
            let err = sniff(server, T, 64 * 1024).await.err().unwrap();
            assert!(matches!(err, SniffError::Idle(_)), "{first:?}: {err}");
            drop(client);
        }
    }

    #[tokio::test]
    async fn a_preface_not_followed_by_settings_is_refused() {
        let ping = [&H2_PREFACE[..], &[0, 0, 8, 0x6, 0, 0, 0, 0, 0], &[0; 8]].concat();
        let ack = [&H2_PREFACE[..], &[0, 0, 0, SETTINGS, ACK, 0, 0, 0, 0]].concat();
        let odd = [&H2_PREFACE[..], &[0, 0, 5, SETTINGS, 0, 0, 0, 0, 0], &[0; 5]].concat();
        let huge = [&H2_PREFACE[..], &[0x10, 0, 2, SETTINGS, 0, 0, 0, 0, 0]].concat();
        let bad = b"PRI * HTTP/1.1\r\n\r\nSM\r\n\r\n".to_vec();
        for first in [ping, ack, odd, huge, bad] {
            assert!(
                matches!(sniffed(&first).await, Err(SniffError::BadPreface)),
                "{first:?}"
            );
        }
    }

    #[tokio::test]
    async fn an_overlong_http1_head_is_handed_on_at_the_bound() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let long = [&b"GET / HTTP/1.1\r\nX-Big: "[..], &[b'a'; 9000]].concat();
        client.write_all(&long).await.unwrap();
        // Still open: the bound, not the end of the head, lets it through.
        let (p, _) = sniff(server, T, 8192).await.unwrap();
        assert_eq!(p, Protocol::Http1);
        drop(client);
    }

    #[tokio::test]
    async fn the_preface_may_arrive_a_byte_at_a_time() {
        let (mut client, server) = tokio::io::duplex(64);
        let task = tokio::spawn(sniff(server, T, 1024));
        for b in h2_start() {
            client.write_all(&[b]).await.unwrap();
            tokio::task::yield_now().await;
        }
        let (p, _) = task.await.unwrap().unwrap();
        assert_eq!(p, Protocol::Http2);
        drop(client);
    }

    #[tokio::test]
    async fn unread_bytes_come_first() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b"GET /a HTTP/1.1\r\n\r\nrest").await.unwrap();
        drop(client);
        let (_, mut io) = sniff(server, T, 1024).await.unwrap();
        let mut first = [0u8; 6];
        io.read_exact(&mut first).await.unwrap();
        io.unread(Bytes::from_static(b"PUT /a"));
        io.unread(Bytes::from_static(b"<>"));
        let mut all = Vec::new();
        io.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"<>PUT /a HTTP/1.1\r\n\r\nrest");
    }
}
