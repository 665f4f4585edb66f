//! A real etcd server for tests: Debian's `etcd-server` (3.4), on
//! 127.0.0.1 with free ports and a temporary data dir. `scripts/test`
//! installs it; a test that needs it fails, never skips, when it is missing.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Etcd {
    pub url: String,
    client_port: u16,
    peer_port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    tls: Option<EtcdTls>,
    /// Listening on every address (for hosts in network namespaces),
    /// not only loopback.
    everywhere: bool,
}

/// PEM files for an etcd that serves TLS only and requires a client
/// certificate from `ca` (`--client-cert-auth`).
#[derive(Clone)]
pub struct EtcdTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl EtcdTls {
    fn options(&self) -> etcd_client::ConnectOptions {
        let read = |p: &PathBuf| std::fs::read_to_string(p).unwrap();
        etcd_client::ConnectOptions::new().with_tls(
            etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(read(&self.ca)))
                .identity(etcd_client::Identity::from_pem(
                    read(&self.client_cert),
                    read(&self.client_key),
                )),
        )
    }
}

/// The etcd binary: `EDGEPLANE_TEST_ETCD`, else `etcd` on PATH.
fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("EDGEPLANE_TEST_ETCD") {
        return p.into();
    }
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("etcd"))
        .find(|p| p.is_file());
    found.expect("etcd is not installed: scripts/test installs it (apt-get install etcd-server)")
}

impl Etcd {
    /// Starts etcd and waits until it answers.
    pub async fn start() -> Etcd {
        Self::start_with(None).await
    }

    /// Serving TLS only, with client certificates required.
    pub async fn start_tls(tls: EtcdTls) -> Etcd {
        Self::start_with(Some(tls)).await
    }

    /// Listening on every address: for coordinators in network namespaces,
    /// which reach it at the root namespace's address and [`Etcd::port`].
    pub async fn start_everywhere() -> Etcd {
        Self::start_on(None, true).await
    }

    async fn start_with(tls: Option<EtcdTls>) -> Etcd {
        Self::start_on(tls, false).await
    }

    async fn start_on(tls: Option<EtcdTls>, everywhere: bool) -> Etcd {
        let mut e = Etcd {
            url: String::new(),
            client_port: super::free_port(),
            peer_port: super::free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
            tls,
            everywhere,
        };
        let scheme = if e.tls.is_some() { "https" } else { "http" };
        e.url = format!("{scheme}://127.0.0.1:{}", e.client_port);
        e.resume().await;
        e
    }

    /// Starts it again after [`Etcd::stop`], on the same ports and data.
    pub async fn resume(&mut self) {
        assert!(self.child.is_none(), "etcd is already running");
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let listen = if self.everywhere {
            self.url.replace("127.0.0.1", "0.0.0.0")
        } else {
            self.url.clone()
        };
        let log = std::fs::File::create(self.dir.path().join("etcd.log")).unwrap();
        let mut cmd = Command::new(binary());
        if let Some(t) = &self.tls {
            cmd.arg("--cert-file").arg(&t.cert);
            cmd.arg("--key-file").arg(&t.key);
            cmd.arg("--trusted-ca-file").arg(&t.ca);
            cmd.arg("--client-cert-auth");
        }
        let child = cmd
            .args(["--name", "test", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &listen, "--advertise-client-urls", &self.url])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("test={peer}")])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
        self.wait_ready().await;
    }

    async fn wait_ready(&self) {
        let started = Instant::now();
        let addr = format!("127.0.0.1:{}", self.client_port);
        loop {
            if let Ok(mut c) = etcd_client::Client::connect([&self.url], self.options()).await {
                if c.status().await.is_ok() {
                    return;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "etcd at {addr} did not start; its log: {}",
                std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn port(&self) -> u16 {
        self.client_port
    }

    /// `kill -9`, keeping the data dir for [`Etcd::resume`].
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn options(&self) -> Option<etcd_client::ConnectOptions> {
        self.tls.as_ref().map(EtcdTls::options)
    }

    pub async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect([&self.url], self.options())
            .await
            .expect("etcd client")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}
