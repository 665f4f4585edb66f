//! `bench fleet --tls`: the certificates of a mutual-TLS run, made in the
//! bench process before anything starts.
//!
//! A cluster CA and a server certificate for 127.0.0.1 are written to a
//! directory of their own and given to the child coordinator
//! (`--tls-cert/--tls-key --ca-cert/--ca-key --require-client-cert`). Each
//! simulated worker gets what a real worker holds after `Enrollment/Join`:
//! its own key pair and CSR ([`csr::generate`]), signed by that CA for a
//! worker id chosen here ([`ClusterCa::sign_worker`], the call the
//! coordinator's Join makes), so that its certificate names it, and the
//! coordinator binds its stream to that id. Issuing them here, not with
//! 10,000 Joins, keeps the ramp what it measures: connecting with mutual
//! TLS, not enrolling.

use super::error::BenchError;
use crate::tls::{csr, ClusterCa};
use std::path::PathBuf;
use std::time::Duration;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// Lifetime of every certificate of the run: longer than any run, so no
/// renewal falls inside it.
const LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The name the coordinator's certificate is for, and the one dialed.
const HOST: &str = "127.0.0.1";

/// The CA and the files the coordinator is started with; the directory
/// goes when this does.
pub struct Pki {
    dir: PathBuf,
    ca: ClusterCa,
}

/// A simulated worker's certificate, ready to dial with.
pub struct WorkerCert {
    /// The id the certificate names (and the Hello asks for).
    pub worker_id: String,
    /// The bench's endpoint with this worker's TLS: the CA to trust and
    /// the certificate and key to present.
    pub endpoint: Endpoint,
}

fn tls_error(e: crate::tls::TlsError) -> BenchError {
    BenchError::Settings(format!("TLS: {e}"))
}

impl Pki {
    /// A new CA and server certificate, written to a fresh directory.
    pub fn make() -> Result<Self, BenchError> {
        let dir = std::env::temp_dir().join(format!(
            "edgeplane-bench-pki-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir)?;
        let pki = Pki {
            dir,
            ca: ClusterCa::generate("edgeplane bench cluster CA").map_err(tls_error)?,
        };
        let server = pki
            .ca
            .issue_server(&[HOST.into(), "localhost".into()], LIFETIME)
            .map_err(tls_error)?;
        std::fs::write(pki.file("ca.pem"), pki.ca.cert_pem())?;
        std::fs::write(pki.file("ca-key.pem"), pki.ca.key_pem())?;
        std::fs::write(pki.file("server.pem"), &server.cert_pem)?;
        std::fs::write(pki.file("server-key.pem"), &server.key_pem)?;
        Ok(pki)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The coordinator's flags: TLS on its port, this CA, and a client
    /// certificate required on every worker stream.
    pub fn coordinator_args(&self) -> Vec<String> {
        let f = |name: &str| self.file(name).display().to_string();
        vec![
            "--tls-cert".into(),
            f("server.pem"),
            "--tls-key".into(),
            f("server-key.pem"),
            "--ca-cert".into(),
            f("ca.pem"),
            "--ca-key".into(),
            f("ca-key.pem"),
            "--require-client-cert".into(),
        ]
    }

    /// TLS for the bench's own calls (health, the watch): this CA trusted,
    /// no certificate presented (the admin API has no token here).
    pub fn client(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .domain_name(HOST)
            .ca_certificate(Certificate::from_pem(self.ca.cert_pem()))
    }

    /// A key pair, a CSR and a certificate for a new worker id, as Join
    /// would give it; `base` with that worker's TLS.
    pub fn issue(&self, name: &str, base: &Endpoint) -> Result<WorkerCert, BenchError> {
        let (worker_id, cert_pem, key_pem) = self.sign(name)?;
        let tls = self.client().identity(Identity::from_pem(cert_pem, key_pem));
        let endpoint = base
            .clone()
            .tls_config(tls)
            .map_err(|e| BenchError::Settings(format!("TLS: {}", crate::errors::chain(&e))))?;
        Ok(WorkerCert { worker_id, endpoint })
    }

    /// (worker id, certificate PEM, key PEM) for a new worker id.
    fn sign(&self, name: &str) -> Result<(String, String, String), BenchError> {
        let worker_id = crate::registry::new_worker_id();
        let req = csr::generate(name).map_err(tls_error)?;
        let (cert_pem, _) = self
            .ca
            .sign_worker(&req.csr_pem, &worker_id, name, LIFETIME)
            .map_err(tls_error)?;
        Ok((worker_id, cert_pem, req.key_pem))
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_certificate_names_the_id_it_is_issued_for() {
        let pki = Pki::make().unwrap();
        let args = pki.coordinator_args();
        assert!(args.contains(&"--require-client-cert".to_string()));
        for name in ["server.pem", "server-key.pem", "ca.pem", "ca-key.pem"] {
            assert!(pki.file(name).is_file(), "{name}");
        }
        let (id, cert, _) = pki.sign("bench-0").unwrap();
        assert!(crate::registry::is_worker_id(&id));
        let der = crate::tls::files::certs_from_pem(cert.as_bytes()).remove(0);
        let named = crate::tls::identity::from_der(&der).unwrap();
        assert_eq!(named.worker_id(), Some(id.as_str()));
        let base = Endpoint::from_static("https://127.0.0.1:1");
        let a = pki.issue("bench-1", &base).unwrap();
        assert!(crate::registry::is_worker_id(&a.worker_id));
        assert_ne!(a.worker_id, id);
        let dir = pki.dir.clone();
        drop(pki);
        assert!(!dir.exists());
    }
}
