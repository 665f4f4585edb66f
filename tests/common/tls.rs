//! A cluster CA and a TLS coordinator for tests: the CA and a server
//! certificate for 127.0.0.1 written into a temporary directory, which is
//! also the coordinator's state dir.

use super::{fast_config, TestCoordinator};
use edgeplane::coordinator::CoordinatorConfig;
use edgeplane::tls::client::ClientTls;
use edgeplane::tls::ClusterCa;
use std::path::PathBuf;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: ClusterCa,
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::generate("test cluster CA").unwrap();
        let w = |name: &str, body: &str| std::fs::write(dir.path().join(name), body).unwrap();
        w("ca.pem", ca.cert_pem());
        w("ca-key.pem", &ca.key_pem());
        let server = ca
            .issue_server(&["127.0.0.1".into(), "localhost".into()], Duration::from_secs(3600))
            .unwrap();
        w("server.pem", &server.cert_pem);
        w("server-key.pem", &server.key_pem);
        let admin = ca.issue_admin("ops", Duration::from_secs(3600)).unwrap();
        w("admin.pem", &admin.cert_pem);
        w("admin-key.pem", &admin.key_pem);
        Pki { dir, ca }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `fast_config()` serving TLS with this PKI, its state in the PKI's dir.
    pub fn config(&self) -> CoordinatorConfig {
        let mut c = fast_config();
        c.tls.tls_cert = Some(self.path("server.pem"));
        c.tls.tls_key = Some(self.path("server-key.pem"));
        c.tls.ca_cert = Some(self.path("ca.pem"));
        c.tls.ca_key = Some(self.path("ca-key.pem"));
        c.cluster.state_dir = Some(self.path("state"));
        c
    }

    pub fn client(&self, identity: Option<(&str, &str)>) -> ClientTls {
        ClientTls {
            ca_pem: Some(self.ca.cert_pem().to_string()),
            identity: identity.map(|(c, k)| {
                (
                    std::fs::read_to_string(self.path(c)).unwrap(),
                    std::fs::read_to_string(self.path(k)).unwrap(),
                )
            }),
        }
    }
}

pub fn https(c: &TestCoordinator) -> String {
    format!("https://127.0.0.1:{}", c.addr.port())
}

/// A TLS channel to `c` trusting `tls`'s CA, presenting its identity.
pub async fn channel(c: &TestCoordinator, tls: &ClientTls) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(https(c))
        .unwrap()
        .tls_config(tls.tonic("127.0.0.1"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

/// A fleet watch over TLS (the coordinator has no admin token set).
pub async fn admin_watch(c: &TestCoordinator, pki: &Pki) -> super::Watcher {
    let ch = channel(c, &pki.client(None)).await.expect("TLS channel");
    super::Watcher::over(ch).await
}
