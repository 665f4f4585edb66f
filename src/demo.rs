//! `edgeplane demo`: a fleet in one command. A coordinator and a local
//! worker (process runtime) that runs the embedded catalog's CPU services
//! (the sample service), so a newcomer sees services go `loading` ->
//! `ready` and a real route, without Docker or any configuration.
//!
//! `demo --tls` runs the same fleet the way it would run on the internet: a
//! generated cluster CA and server certificate, a join token, a worker that
//! joins with it and gets its own certificate (mutual TLS from then on), and
//! an admin token or admin certificate for operator calls.

use crate::coordinator::{Coordinator, CoordinatorConfig, CoordinatorError};
use crate::registry::{service_state_str, ChangeKind};
use crate::worker::{self, WorkerConfig};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Port for the coordinator (gRPC and HTTP).
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,
    /// Name of the local worker.
    #[arg(long, default_value = "demo-worker")]
    pub name: String,
    /// TLS everywhere: a generated CA, mutual TLS for the worker, and the
    /// grpcurl and curl commands printed with `-cacert`.
    #[arg(long)]
    pub tls: bool,
    /// Where `--tls` keeps its CA, certificates and state (default: a
    /// directory under the system's temporary directory).
    #[arg(long, requires = "tls")]
    pub dir: Option<std::path::PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Coordinator(#[from] CoordinatorError),
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error(transparent)]
    Agent(#[from] worker::AgentError),
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// The files `demo --tls` made, and the secrets it set (never printed:
/// the admin certificate is what the printed commands use).
struct DemoTls {
    dir: std::path::PathBuf,
    join_token: String,
    admin_token: String,
}

impl DemoTls {
    /// The CA (kept across runs), a server certificate for 127.0.0.1 and
    /// localhost, and an admin certificate.
    fn create(dir: &std::path::Path) -> Result<Self, crate::tls::TlsError> {
        use crate::tls::files;
        std::fs::create_dir_all(dir).map_err(|source| crate::tls::TlsError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        let ca = crate::tls::ClusterCa::load_or_create(dir)?;
        let year = Duration::from_secs(365 * 24 * 3600);
        let server = ca.issue_server(&["127.0.0.1".into(), "localhost".into()], year)?;
        files::write_public(&dir.join("server.pem"), server.cert_pem.as_bytes())?;
        files::write_private(&dir.join("server-key.pem"), server.key_pem.as_bytes())?;
        let admin = ca.issue_admin("demo-admin", year)?;
        files::write_public(&dir.join("admin.pem"), admin.cert_pem.as_bytes())?;
        files::write_private(&dir.join("admin-key.pem"), admin.key_pem.as_bytes())?;
        let secret = || uuid::Uuid::new_v4().simple().to_string();
        Ok(DemoTls {
            dir: dir.to_path_buf(),
            join_token: format!("join-{}", secret()),
            admin_token: format!("admin-{}", secret()),
        })
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.join(name)
    }

    fn configure(&self, c: &mut CoordinatorConfig) {
        c.tls.tls_cert = Some(self.path("server.pem"));
        c.tls.tls_key = Some(self.path("server-key.pem"));
        c.tls.ca_cert = Some(self.path(crate::tls::ca::CA_CERT_FILE));
        c.tls.ca_key = Some(self.path(crate::tls::ca::CA_KEY_FILE));
        c.tls.require_client_cert = true;
        c.cluster.state_dir = Some(self.path("state"));
        c.join_token = Some(self.join_token.clone());
        c.admin_token = Some(self.admin_token.clone());
    }
}

/// What to try against `demo --tls`.
fn tls_instructions(port: u16, t: &DemoTls) -> String {
    let ca = t.path(crate::tls::ca::CA_CERT_FILE).display().to_string();
    let cert = t.path("admin.pem").display().to_string();
    let key = t.path("admin-key.pem").display().to_string();
    format!(
        "\nedgeplane demo --tls: a coordinator on https://localhost:{port} (TLS only), and a local worker that\n\
         joined with a join token and got its own certificate (mutual TLS). Files in {dir}.\n\n\
         Try, in another terminal:\n  \
         curl -s --cacert {ca} --cert {cert} --key {key} https://localhost:{port}/api/admin/workers\n  \
         curl -s --cacert {ca} -X POST https://localhost:{port}/service/notes/convert -H 'Content-Type: application/json' -d '{{\"notes\":\"test\",\"client_name\":\"test\"}}'\n  \
         grpcurl -cacert {ca} localhost:{port} list\n  \
         grpcurl -cacert {ca} -cert {cert} -key {key} -d '{{}}' localhost:{port} edgeplane.v1.Admin/ListWorkers\n  \
         grpcurl -cacert {ca} -d '{{\"service\":\"notes-coa\"}}' localhost:{port} grpc.health.v1.Health/Check\n  \
         cargo run --release -- workers --coordinator https://localhost:{port} --ca-cert {ca} --cert {cert} --key {key}\n\n\
         Plaintext is refused: curl -s localhost:{port}/health says so. Ctrl-C stops everything.\n",
        dir = t.dir.display(),
    )
}

/// What to try, printed once the fleet is up.
pub fn instructions(port: u16) -> String {
    format!(
        "\nedgeplane demo: a coordinator on :{port} and a local worker running sample services.\n\n\
         Try, in another terminal:\n  \
         cargo run --release -- workers\n  \
         curl -s localhost:{port}/api/admin/workers | jq '.[].status'\n  \
         curl -s localhost:{port}/api/admin/gaps | jq\n  \
         curl -X POST localhost:{port}/service/notes/convert -H 'Content-Type: application/json' -d '{{\"notes\":\"test\",\"client_name\":\"test\"}}'\n  \
         grpcurl -plaintext localhost:{port} list\n  \
         grpcurl -plaintext -d '{{}}' localhost:{port} edgeplane.v1.Admin/ListWorkers\n  \
         grpcurl -plaintext -d '{{\"service\":\"notes-coa\"}}' localhost:{port} grpc.health.v1.Health/Check\n\n\
         (GPU services stay unplaced: this machine declares no GPU.) Ctrl-C stops everything.\n"
    )
}

pub async fn run(args: DemoArgs, shutdown: CancellationToken) -> Result<(), DemoError> {
    let listen = SocketAddr::from(([127, 0, 0, 1], args.port));
    let config = CoordinatorConfig {
        listen,
        keepalive_interval: Duration::from_secs(2),
        heartbeat_timeout: Duration::from_secs(10),
        worker_timeout: Duration::from_secs(60),
        placement_grace: Duration::from_secs(10),
        ..CoordinatorConfig::default()
    };
    let mut config = config;
    let tls = match args.tls {
        true => {
            let dir = args
                .dir
                .clone()
                .unwrap_or_else(|| std::env::temp_dir().join("edgeplane-demo-tls"));
            let t = DemoTls::create(&dir)?;
            t.configure(&mut config);
            Some(t)
        }
        false => None,
    };
    let coordinator = Coordinator::new(config)?;
    let registry = coordinator.registry();
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| DemoError::Listen(listen, e))?;
    let stop_coordinator = CancellationToken::new();
    let server = tokio::spawn(coordinator.serve(listener, stop_coordinator.clone()));

    let mut wc = WorkerConfig::new(format!("http://{listen}"));
    wc.name = Some(args.name.clone());
    wc.runtime = worker::RuntimeChoice::Process;
    wc.state_dir = Some(std::env::temp_dir().join("edgeplane-demo").join(&args.name));
    if let Some(t) = &tls {
        wc.coordinator = format!("https://{listen}");
        wc.ca_cert = Some(t.path(crate::tls::ca::CA_CERT_FILE));
        wc.join_token = Some(t.join_token.clone());
        wc.state_dir = Some(t.path("worker").join(&args.name));
    }
    wc.probe_interval = Duration::from_millis(500);
    wc.reconnect_min = Duration::from_millis(100);
    let stop_worker = CancellationToken::new();
    let agent = worker::spawn(wc, stop_worker.clone())?;

    match &tls {
        Some(t) => println!("{}", tls_instructions(args.port, t)),
        None => println!("{}", instructions(args.port)),
    }
    // Narrate service states as they change.
    let (_, mut events) = registry.subscribe();
    let mut seen: BTreeMap<(String, String), String> = BTreeMap::new();
    loop {
        tokio::select! {
            ev = events.recv() => {
                let Ok(ev) = ev else { continue };
                if ev.kind == ChangeKind::Removed {
                    continue;
                }
                for s in &ev.worker.services {
                    let state = service_state_str(s.state).to_string();
                    let key = (ev.worker.name.clone(), s.name.clone());
                    if seen.get(&key) != Some(&state) {
                        let note = if s.message.is_empty() { String::new() } else { format!("  ({})", s.message) };
                        println!("  {:<20} on {:<12} {state}{note}", s.name, ev.worker.name);
                        seen.insert(key, state);
                    }
                }
            }
            _ = shutdown.cancelled() => break,
        }
    }
    println!("stopping: services, then the worker, then the coordinator");
    stop_worker.cancel();
    agent.join().await;
    stop_coordinator.cancel();
    let _ = server.await;
    Ok(())
}
