//! A byte pipe over a gRPC bidirectional stream of `TunnelChunk`s, as
//! `AsyncRead + AsyncWrite`, so that HTTP/2 can run inside it.

use crate::proto::TunnelChunk;
use bytes::Bytes;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::AsyncWrite;
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt};
use tokio_util::io::StreamReader;
use tokio_util::sync::PollSender;

/// Largest chunk written as one message: well under the gRPC message limit.
pub const MAX_CHUNK: usize = 64 * 1024;

/// The write half: each write becomes one `TunnelChunk` on `tx`.
pub struct ChunkWriter {
    tx: PollSender<TunnelChunk>,
}

impl AsyncWrite for ChunkWriter {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let closed = || io::Error::new(io::ErrorKind::BrokenPipe, "tunnel closed");
        ready!(self.tx.poll_reserve(cx)).map_err(|_| closed())?;
        let n = buf.len().min(MAX_CHUNK);
        self.tx
            .send_item(TunnelChunk {
                data: buf[..n].to_vec(),
            })
            .map_err(|_| closed())?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tx.close();
        Poll::Ready(Ok(()))
    }
}

type ChunkStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// Both halves joined.
pub type Pipe = tokio::io::Join<StreamReader<ChunkStream, Bytes>, ChunkWriter>;

/// Joins an inbound chunk stream and an outbound sender into one pipe.
pub fn pipe<S, E>(inbound: S, outbound: mpsc::Sender<TunnelChunk>) -> Pipe
where
    S: Stream<Item = Result<TunnelChunk, E>> + Send + 'static,
    E: std::fmt::Display,
{
    let reader: ChunkStream = Box::pin(inbound.map(|r| {
        r.map(|c| Bytes::from(c.data))
            .map_err(|e| io::Error::new(io::ErrorKind::BrokenPipe, e.to_string()))
    }));
    tokio::io::join(
        StreamReader::new(reader),
        ChunkWriter {
            tx: PollSender::new(outbound),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_stream::wrappers::ReceiverStream;

    #[tokio::test]
    async fn bytes_cross_in_both_directions() {
        let (a_tx, a_rx) = mpsc::channel::<TunnelChunk>(4);
        let (b_tx, b_rx) = mpsc::channel::<TunnelChunk>(4);
        let ok = |s: ReceiverStream<TunnelChunk>| s.map(Ok::<_, std::convert::Infallible>);
        let mut a = pipe(ok(ReceiverStream::new(b_rx)), a_tx);
        let mut b = pipe(ok(ReceiverStream::new(a_rx)), b_tx);
        let big = vec![9u8; 3 * MAX_CHUNK + 17];
        let writer = {
            let big = big.clone();
            tokio::spawn(async move {
                a.write_all(&big).await.unwrap();
                a.shutdown().await.unwrap();
                a
            })
        };
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, big);
        let mut a = writer.await.unwrap();
        b.write_all(b"pong").await.unwrap();
        let mut buf = [0u8; 4];
        a.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
    }
}
