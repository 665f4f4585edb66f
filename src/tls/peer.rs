//! What the front door knows of a connection's peer, handed to every
//! request on it (tonic puts it in each request's extensions): its address,
//! whether it came over TLS, and who its verified client certificate names.
//!
//! Read once per connection, so a request pays one `Arc` clone for it.

use super::CertIdentity;
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Debug, Clone, Default)]
pub struct PeerInfo {
    pub addr: Option<SocketAddr>,
    /// The connection is TLS.
    pub tls: bool,
    /// The client certificate, verified against the cluster CA during the
    /// handshake, when one was presented.
    pub cert: Option<Arc<CertIdentity>>,
}

impl PeerInfo {
    pub fn plain(addr: Option<SocketAddr>) -> Self {
        PeerInfo {
            addr,
            tls: false,
            cert: None,
        }
    }

    /// The worker id the client certificate names.
    pub fn certified_worker(&self) -> Option<&str> {
        self.cert.as_ref().and_then(|c| c.worker_id())
    }

    pub fn is_admin_cert(&self) -> bool {
        self.cert.as_ref().is_some_and(|c| c.is_admin())
    }

    /// From a request's extensions (gRPC or HTTP).
    pub fn of(ext: &http::Extensions) -> Option<&PeerInfo> {
        ext.get::<PeerInfo>()
    }
}
