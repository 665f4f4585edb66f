//! `edgeplane demo`: a fleet in one command. A coordinator and a local
//! worker (process runtime) that runs the embedded catalog's CPU services
//! (the sample service), so a newcomer sees services go `loading` ->
//! `ready` and a real route, without Docker or any configuration.

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
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Coordinator(#[from] CoordinatorError),
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error(transparent)]
    Agent(#[from] worker::AgentError),
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
    wc.probe_interval = Duration::from_millis(500);
    wc.reconnect_min = Duration::from_millis(100);
    let stop_worker = CancellationToken::new();
    let agent = worker::spawn(wc, stop_worker.clone())?;

    println!("{}", instructions(args.port));
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
