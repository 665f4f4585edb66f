//! An accepted connection, plain TCP or TLS over it, as one type for both
//! servers behind the front door (tokio-util's `Either` does the reading
//! and writing); its [`PeerInfo`] is read here.
//!
//! Also the answer a plaintext client gets on a TLS-only port: a clear
//! error in the protocol it spoke, not a dropped connection.

use super::sniff::Prefixed;
use crate::tls::{identity, PeerInfo, ServerTlsRef};
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::either::Either;
use tonic::transport::server::Connected;

/// Plain TCP (`Left`), or TLS over it (`Right`).
pub type Conn = Either<TcpStream, Box<tokio_rustls::server::TlsStream<TcpStream>>>;

/// Why a TLS connection was not served.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error("did not finish the TLS handshake within {0:?}")]
    Idle(Duration),
    #[error("spoke plaintext to the TLS port")]
    Plaintext,
    #[error("TLS handshake: {0}")]
    Handshake(io::Error),
}

/// The first byte of every TLS connection (a handshake record).
const TLS_HANDSHAKE: u8 = 0x16;

/// The message a plaintext client is given.
pub const PLAINTEXT_REFUSED: &str = "this port speaks TLS only: use https:// (grpcurl without -plaintext)";

/// Completes the TLS handshake within `timeout`; a peer that speaks
/// plaintext is answered with [`PLAINTEXT_REFUSED`] first.
pub async fn accept_tls(stream: TcpStream, tls: &ServerTlsRef, timeout: Duration) -> Result<Conn, AcceptError> {
    let work = async {
        let mut first = [0u8; 1];
        let n = stream.peek(&mut first).await.map_err(AcceptError::Handshake)?;
        if n == 1 && first[0] != TLS_HANDSHAKE {
            refuse_plaintext(stream).await;
            return Err(AcceptError::Plaintext);
        }
        let s = tls.acceptor().accept(stream).await.map_err(AcceptError::Handshake)?;
        Ok(Either::Right(Box::new(s)))
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| AcceptError::Idle(timeout))?
}

/// Who is on the other end: the address, and the client certificate the
/// handshake verified.
pub fn peer(conn: &Conn) -> PeerInfo {
    match conn {
        Either::Left(s) => PeerInfo::plain(s.peer_addr().ok()),
        Either::Right(s) => {
            let (tcp, session) = s.get_ref();
            let cert = session
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|der| identity::from_der(der))
                .map(Arc::new);
            PeerInfo {
                addr: tcp.peer_addr().ok(),
                tls: true,
                cert,
            }
        }
    }
}

/// Answers a plaintext HTTP/1 request with 400 and the JSON error, or an
/// HTTP/2 one with a GOAWAY carrying the message, then closes.
async fn refuse_plaintext(mut stream: TcpStream) {
    let mut buf = [0u8; 4];
    let n = stream.peek(&mut buf).await.unwrap_or(0);
    let out = if buf[..n] == b"PRI "[..n] {
        goaway(PLAINTEXT_REFUSED)
    } else {
        let body = crate::errors::envelope("tls_required", PLAINTEXT_REFUSED).to_string();
        format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    if let Ok(Ok(())) = tokio::time::timeout(LINGER, stream.write_all(&out)).await {
        linger(&mut stream).await;
    }
}

/// How long, and how many bytes, a connection closed on an error is still
/// read from before it is dropped.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 1024 * 1024;

/// After an error answer (431 for a head too large, 400 for a malformed
/// one) the client may still be sending: closing with its bytes unread
/// makes the kernel reset the connection, and a reset can discard the
/// answer before the client reads it. So the write side is shut and what
/// still comes is read and dropped, within a bound (as nginx's lingering
/// close does).
pub async fn linger<T: AsyncRead + AsyncWrite + Unpin>(io: &mut T) {
    use tokio::io::AsyncReadExt;
    let _ = io.shutdown().await;
    let mut sink = vec![0u8; 16 * 1024];
    let mut total = 0;
    let drain = async {
        while total < LINGER_BYTES {
            match io.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// An empty SETTINGS frame then GOAWAY (last stream 0, PROTOCOL_ERROR)
/// with `message` as its debug data (RFC 9113 6.5, 6.8).
fn goaway(message: &str) -> Vec<u8> {
    let mut f = vec![0, 0, 0, 0x4, 0, 0, 0, 0, 0];
    let len = 8 + message.len();
    f.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, 0x7, 0, 0, 0, 0, 0]);
    f.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0x1]);
    f.extend_from_slice(message.as_bytes());
    f
}

impl Connected for Prefixed<Conn> {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        peer(self.get_ref())
    }
}
