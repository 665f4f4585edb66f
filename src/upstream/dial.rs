//! Dialing a replica: TCP with Nagle off, and TLS over it for an
//! `https://` one ([`super::ServiceTls`] says how it is verified).

use super::failure::SendFailure;
use super::tls::ServiceTls;
use http::uri::Authority;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;

/// A connection to a service: plain TCP, or TLS over it.
pub type ServiceStream = Either<TcpStream, Box<TlsStream<TcpStream>>>;

/// A connection to `authority`: TLS when `https` (port 443 unless it says
/// otherwise), plain TCP (port 80) when not. `timeout` bounds each step.
pub async fn connect(
    https: bool,
    authority: &Authority,
    tls: &ServiceTls,
    timeout: Duration,
) -> Result<ServiceStream, SendFailure> {
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = connect_port(authority, port, timeout).await?;
    if !https {
        return Ok(Either::Left(tcp));
    }
    tls.handshake(tcp, authority, timeout).await.map(Either::Right)
}

/// A TCP connection to `authority` (port 80 unless it says otherwise), with
/// Nagle off: proxied requests are written whole and must go at once.
pub async fn connect_tcp(authority: &Authority, timeout: Duration) -> Result<TcpStream, SendFailure> {
    connect_port(authority, authority.port_u16().unwrap_or(80), timeout).await
}

async fn connect_port(authority: &Authority, port: u16, timeout: Duration) -> Result<TcpStream, SendFailure> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect((authority.host(), port)))
        .await
        .map_err(|_| SendFailure::ConnectTimeout {
            target: authority.to_string(),
            after: timeout,
        })?
        .map_err(|e| SendFailure::connect(authority, e))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}
