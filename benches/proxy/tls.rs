//! The TLS rows' certificate, and an HTTPS GET for the readiness probes.
//!
//! One ECDSA P-256 server certificate for 127.0.0.1, made with the crate's
//! own cluster CA ([`ClusterCa::issue_server`]) and written once: nginx and
//! the coordinator serve the same certificate and key files, so the two TLS
//! rows sign with the same key type and send the same chain.
//!
//! The probes need their own HTTPS client because the bench's reqwest is
//! built without TLS: a rustls connection trusting the bench's CA and one
//! HTTP/1.1 request over it (hyper).

use anyhow::{Context, Result};
use edgeplane::tls::ClusterCa;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Lifetime of the bench's certificates: longer than any run.
const LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The files the TLS rows are started with.
pub struct BenchCert {
    /// The server certificate (for 127.0.0.1 and localhost) and its key.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA that signed it: the coordinator's cluster CA, the worker's
    /// and the probes' trust root.
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    connector: tokio_rustls::TlsConnector,
}

impl BenchCert {
    /// Makes the CA and the server certificate in `dir`.
    pub fn make(dir: &Path) -> Result<Self> {
        let ca = ClusterCa::generate("edgeplane proxy bench CA")?;
        let server = ca.issue_server(&["127.0.0.1".into(), "localhost".into()], LIFETIME)?;
        let write = |name: &str, body: &str| -> Result<PathBuf> {
            let p = dir.join(name);
            std::fs::write(&p, body).with_context(|| format!("writing {}", p.display()))?;
            Ok(p)
        };
        let config =
            edgeplane::tls::client::Trust::from_pem(ca.cert_pem().as_bytes(), "bench CA")?.rustls(&[b"http/1.1"])?;
        Ok(BenchCert {
            cert: write("server.pem", &server.cert_pem)?,
            key: write("server-key.pem", &server.key_pem)?,
            ca_cert: write("ca.pem", ca.cert_pem())?,
            ca_key: write("ca-key.pem", &ca.key_pem())?,
            connector: tokio_rustls::TlsConnector::from(config),
        })
    }

    /// `GET url` over TLS (`https://127.0.0.1:PORT/...`): status and body.
    pub async fn get(&self, url: &str) -> Result<(u16, String), String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
        let host = uri.host().ok_or("no host")?.to_string();
        let port = uri.port_u16().unwrap_or(443);
        let name = ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| e.to_string())?;
        let tls = self.connector.connect(name, tcp).await.map_err(|e| e.to_string())?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = http::Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
            .header(http::header::HOST, format!("{host}:{port}"))
            .body(Empty::<bytes::Bytes>::new())
            .map_err(|e| e.to_string())?;
        let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}
