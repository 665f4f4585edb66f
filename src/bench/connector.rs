//! How a simulated client dials: from its own loopback source address and
//! with a kill switch.
//!
//! One source address has about 28,000 ephemeral ports, so a fleet of
//! 20,000 connections (plus the TIME_WAITs of a restart) is spread over
//! 127.0.0.2, 127.0.0.3, ... The kill switch drops the TCP connection
//! without a word, as a crashed process or a pulled cable would: no HTTP/2
//! RST_STREAM or GOAWAY, just the kernel closing the socket. That is what
//! failure detection must notice.

use hyper_util::rt::TokioIo;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// The `i`-th of `count` loopback source addresses: 127.0.0.2 upwards
/// (127.0.0.1 is left to the coordinator and the watcher).
pub fn source_address(i: usize, count: usize) -> IpAddr {
    let n = (i % count.max(1)) as u32 + 2;
    IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 0, 0)) + n))
}

/// A connector for `Endpoint::connect_with_connector`.
#[derive(Clone)]
pub struct KillableConnector {
    target: SocketAddr,
    source: Option<IpAddr>,
    kill: CancellationToken,
}

impl KillableConnector {
    /// Dials `target` from `source` (port chosen by the kernel); cancelling
    /// `kill` drops the connection.
    pub fn new(target: SocketAddr, source: Option<IpAddr>, kill: CancellationToken) -> Self {
        KillableConnector { target, source, kill }
    }
}

impl tower::Service<http::Uri> for KillableConnector {
    type Response = KillableIo;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<KillableIo>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        let (target, source, kill) = (self.target, self.source, self.kill.clone());
        Box::pin(async move {
            let socket = if target.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            if let Some(ip) = source.filter(|ip| ip.is_ipv4() == target.is_ipv4()) {
                socket.bind(SocketAddr::new(ip, 0))?;
            }
            let stream = socket.connect(target).await?;
            stream.set_nodelay(true)?;
            Ok(KillableIo::new(stream, kill))
        })
    }
}

/// A TCP stream that fails every read and write once its token is
/// cancelled, so that hyper drops it (and the kernel closes the socket) at
/// once, even while the connection is idle: the pending read is woken by
/// the token.
pub struct KillableIo {
    io: TokioIo<TcpStream>,
    killed: Pin<Box<WaitForCancellationFutureOwned>>,
    dead: bool,
}

impl KillableIo {
    fn new(stream: TcpStream, kill: CancellationToken) -> Self {
        KillableIo {
            io: TokioIo::new(stream),
            killed: Box::pin(kill.cancelled_owned()),
            dead: false,
        }
    }

    /// True once killed; registers the waker otherwise.
    fn is_killed(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.dead && self.killed.as_mut().poll(cx).is_ready() {
            self.dead = true;
        }
        self.dead
    }
}

fn killed() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "killed by the bench")
}

impl hyper::rt::Read for KillableIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        if self.is_killed(cx) {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for KillableIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.is_killed(cx) {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.is_killed(cx) {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.is_killed(cx) {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Resolves a `http://host:port` URL to one socket address.
pub async fn resolve(url: &str) -> Result<SocketAddr, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{e}"))?;
    let host = uri
        .host()
        .ok_or("no host")?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(80);
    let mut addrs = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| e.to_string())?;
    let first = addrs.next();
    first.ok_or_else(|| "host resolves to no address".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_cycle_from_127_0_0_2() {
        assert_eq!(source_address(0, 4).to_string(), "127.0.0.2");
        assert_eq!(source_address(3, 4).to_string(), "127.0.0.5");
        assert_eq!(source_address(4, 4).to_string(), "127.0.0.2");
        assert_eq!(source_address(300, 1000).to_string(), "127.0.1.46");
    }
}
