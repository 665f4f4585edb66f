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
use tonic::transport::server::Connected;

/// What every HTTP/2 connection starts with (RFC 9113 3.4); no HTTP/1
/// request line starts with its first four bytes.
const H2_START: &[u8; 4] = b"PRI ";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
}

/// Why a connection was not handed on.
#[derive(Debug, thiserror::Error)]
pub enum SniffError {
    #[error("sent nothing within {0:?}")]
    Idle(Duration),
    #[error("closed before sending a request")]
    Closed,
    #[error("read: {0}")]
    Io(#[from] io::Error),
}

/// Reads just enough to tell the protocol; a peer that sends nothing within
/// `timeout` is dropped, so idle connections cannot pile up.
pub async fn sniff<T: AsyncRead + Unpin>(mut io: T, timeout: Duration) -> Result<(Protocol, Prefixed<T>), SniffError> {
    let mut buf = [0u8; 4];
    let mut n = 0;
    let read = async {
        while n < buf.len() {
            match io.read(&mut buf[n..]).await? {
                0 => return Err(SniffError::Closed),
                k => n += k,
            }
            if buf[..n] != H2_START[..n] {
                break;
            }
        }
        Ok(())
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| SniffError::Idle(timeout))??;
    let protocol = if buf[..n] == H2_START[..] {
        Protocol::Http2
    } else {
        Protocol::Http1
    };
    Ok((
        protocol,
        Prefixed {
            head: Bytes::copy_from_slice(&buf[..n]),
            inner: io,
            _slot: None,
        },
    ))
}

/// A connection whose first few bytes were already read: they are read
/// again first. It may hold its slot under the connection limit, which is
/// given back when the connection is dropped.
pub struct Prefixed<T> {
    /// Read again before anything from `inner`.
    head: Bytes,
    inner: T,
    _slot: Option<OwnedSemaphorePermit>,
}

impl<T> Prefixed<T> {
    /// Keeps `slot` for as long as the connection lives.
    pub fn holding(mut self, slot: OwnedSemaphorePermit) -> Self {
        self._slot = Some(slot);
        self
    }

    /// Puts `bytes` back in front of what is still to be read, for whoever
    /// reads the connection next (the full HTTP/1 server after the fast path).
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

impl<T: Connected> Connected for Prefixed<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
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

    async fn sniffed(first: &[u8]) -> (Protocol, Vec<u8>) {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(first).await.unwrap();
        drop(client);
        let (p, mut io) = sniff(server, Duration::from_secs(5)).await.unwrap();
        let mut all = Vec::new();
        io.read_to_end(&mut all).await.unwrap();
        (p, all)
    }

    #[tokio::test]
    async fn tells_the_protocols_apart_and_loses_no_byte() {
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        assert_eq!(sniffed(preface).await, (Protocol::Http2, preface.to_vec()));
        let get = b"GET /service/notes/x HTTP/1.1\r\n\r\n";
        assert_eq!(sniffed(get).await, (Protocol::Http1, get.to_vec()));
    }

    #[tokio::test]
    async fn a_short_first_segment_that_is_not_the_preface_is_decided_at_once() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b"G").await.unwrap();
        // The client stays open and silent: nothing more is waited for.
        let (p, _) = sniff(server, Duration::from_secs(5)).await.unwrap();
        assert_eq!(p, Protocol::Http1);
        drop(client);
    }

    #[tokio::test]
    async fn the_preface_may_arrive_a_byte_at_a_time() {
        let (mut client, server) = tokio::io::duplex(64);
        let task = tokio::spawn(sniff(server, Duration::from_secs(5)));
        for b in b"PRI * HTTP/2.0" {
            client.write_all(&[*b]).await.unwrap();
            tokio::task::yield_now().await;
        }
        let (p, _) = task.await.unwrap().unwrap();
        assert_eq!(p, Protocol::Http2);
    }

    #[tokio::test]
    async fn unread_bytes_come_first() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b"GET /a HTTP/1.1\r\n\r\nrest").await.unwrap();
        drop(client);
        let (_, mut io) = sniff(server, Duration::from_secs(5)).await.unwrap();
        let mut first = [0u8; 6];
        io.read_exact(&mut first).await.unwrap();
        io.unread(Bytes::from_static(b"PUT /a"));
        io.unread(Bytes::from_static(b"<>"));
        let mut all = Vec::new();
        io.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"<>PUT /a HTTP/1.1\r\n\r\nrest");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_is_dropped_after_the_timeout() {
        let (_client, server) = tokio::io::duplex(64);
        let err = sniff(server, Duration::from_secs(5)).await.err().unwrap();
        assert!(matches!(err, SniffError::Idle(_)), "{err}");
    }
}
