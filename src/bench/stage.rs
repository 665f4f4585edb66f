//! What `bench overload` and `bench soak` set up alike: a coordinator as a
//! child process (pinned with `taskset -c` when asked), the fast backend
//! every simulated replica points at (in the bench process, or pinned in a
//! child of its own), a `WatchWorkers` stream, and a ramped fleet of
//! simulated workers declaring services.

use super::args::ChildCoordinatorArgs;
use super::child::{free_port, ChildServer};
use super::connector::{resolve, source_address};
use super::error::BenchError;
use super::ramp::Ramp;
use super::reach::health_ok;
use super::report::progress;
use super::sim_worker::{self, SimShared, SimWorker};
use super::watch::FleetWatch;
use crate::duration::format_short;
use crate::duration::parse_duration;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Flags `bench overload` and `bench soak` share.
#[derive(Debug, Clone, clap::Args)]
pub struct StageArgs {
    /// Simulated workers, each on its own HTTP/2 connection.
    #[arg(long, default_value_t = 1000)]
    pub workers: usize,
    /// Keepalive interval of every simulated worker.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub keepalive: Duration,
    /// Heartbeat timeout given to the coordinator.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub heartbeat_timeout: Duration,
    /// Worker timeout given to the coordinator (a record with no session is
    /// removed after it).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub worker_timeout: Duration,
    /// Pin the coordinator to these CPUs (`taskset -c LIST`, e.g. `0`).
    #[arg(long)]
    pub coordinator_cpus: Option<String>,
    /// Serve the backend from a child process pinned to these CPUs
    /// (`taskset -c LIST`); without it, the bench process serves it.
    #[arg(long)]
    pub backend_cpus: Option<String>,
    #[command(flatten)]
    pub child: ChildCoordinatorArgs,
    /// Loopback source addresses the workers dial from (127.0.0.2 upwards).
    #[arg(long, default_value_t = 32)]
    pub sources: usize,
    /// Workers started per second while ramping up.
    #[arg(long, default_value_t = 1000.0)]
    pub ramp_rate: f64,
    /// Bound on any single wait (all connected, ...).
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub patience: Duration,
    /// Also write the report as JSON to this file (`-` for stdout).
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// A running stage.
pub struct Stage {
    pub url: String,
    /// The coordinator's one port.
    pub target: SocketAddr,
    pub coordinator: ChildServer,
    pub pid: Option<u32>,
    /// The backend's address (what the replicas' URLs name).
    pub backend: SocketAddr,
    pub backend_child: Option<ChildServer>,
    pub watch: FleetWatch,
    pub shared: Arc<SimShared>,
    pub run_tag: String,
    pub stop: CancellationToken,
    pub fd_limit: (u64, u64),
}

/// `program args` under `taskset -c cpus` when `cpus` is given.
fn pinned(cpus: Option<&str>, program: PathBuf, args: Vec<String>) -> (PathBuf, Vec<String>) {
    match cpus {
        Some(list) => {
            let mut a = vec!["-c".to_string(), list.to_string(), program.display().to_string()];
            a.extend(args);
            (PathBuf::from("taskset"), a)
        }
        None => (program, args),
    }
}

fn ms(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

impl Stage {
    /// Starts the coordinator and the backend and opens the watch.
    pub async fn start(args: &StageArgs, what: &str) -> Result<Stage, BenchError> {
        if args.workers == 0 || args.sources == 0 || args.sources > 250 || args.keepalive.is_zero() {
            return Err(BenchError::Settings(
                "--workers and --keepalive must be positive, --sources 1..=250".into(),
            ));
        }
        let fd_limit = super::fdlimit::raise_to_hard()?;
        let stop = CancellationToken::new();
        let bin = args.child.bin()?;
        // The backend: every replica's URL points here.
        let (backend, backend_child) = match &args.backend_cpus {
            Some(cpus) => {
                let port = free_port()?;
                let addr: SocketAddr = ([127, 0, 0, 1], port).into();
                let log = std::env::temp_dir().join(format!("edgeplane-bench-backend-{port}.log"));
                let (p, a) = pinned(
                    Some(cpus.as_str()),
                    bin.clone(),
                    vec!["bench".into(), "backend".into(), "--listen".into(), addr.to_string()],
                );
                let mut c = ChildServer::spawn("the backend", &p, a, Vec::new(), &log)?;
                c.wait_ready(Duration::from_secs(30), || async move {
                    tokio::net::TcpStream::connect(addr).await.is_ok()
                })
                .await?;
                (addr, Some(c))
            }
            None => {
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                let addr = l.local_addr()?;
                tokio::spawn(super::http_load::backend(l, stop.clone()));
                (addr, None)
            }
        };
        let port = free_port()?;
        let url = format!("http://127.0.0.1:{port}");
        let log = args
            .child
            .log_or(&format!("edgeplane-bench-{what}-coordinator-{port}.log"));
        let mut a: Vec<String> = [
            "coordinator",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--keepalive-interval",
            &ms(args.keepalive),
            "--heartbeat-timeout",
            &ms(args.heartbeat_timeout),
            "--worker-timeout",
            &ms(args.worker_timeout),
            "--max-workers",
            &(args.workers + 1000).max(20_000).to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(args.child.coordinator_args.iter().cloned());
        let (p, a) = pinned(args.coordinator_cpus.as_deref(), bin, a);
        progress(format_args!(
            "starting a coordinator at {url}{} (log {})",
            args.coordinator_cpus
                .as_deref()
                .map_or(String::new(), |c| format!(" on CPUs {c}")),
            log.display()
        ));
        let mut coordinator = ChildServer::spawn("the coordinator", &p, a, Vec::new(), &log)?;
        let u = url.clone();
        coordinator
            .wait_ready(Duration::from_secs(30), || health_ok(&u))
            .await?;
        let pid = coordinator.pid();
        let target = resolve(&url).await.map_err(|reason| BenchError::Url {
            url: url.clone(),
            reason,
        })?;
        let watch = FleetWatch::start(url.clone(), stop.clone());
        if !watch.wait(Duration::from_secs(30), |s| s.synced).await {
            return Err(BenchError::Watch(format!(
                "no WatchWorkers snapshot from {url} within 30s"
            )));
        }
        let run_tag = format!("{what}-{}-{}", std::process::id(), rand::random::<u32>());
        let shared = Arc::new(SimShared::new(
            vec![target],
            sim_worker::endpoint(&url)?,
            args.keepalive,
            (Duration::from_millis(500), Duration::from_secs(30)),
            stop.clone(),
            run_tag.clone(),
        ));
        Ok(Stage {
            url,
            target,
            coordinator,
            pid,
            backend,
            backend_child,
            watch,
            shared,
            run_tag,
            stop,
            fd_limit,
        })
    }

    /// A simulated worker of this stage: index `i`, declaring `services`
    /// (name only: each points at the backend), all reported ready.
    pub fn worker(&self, i: usize, sources: usize, services: &[&str]) -> Arc<SimWorker> {
        let url = format!("http://{}", self.backend);
        let s: Vec<(String, String)> = services.iter().map(|n| (n.to_string(), url.clone())).collect();
        Arc::new(SimWorker::new(i, &self.run_tag, source_address(i, sources)).with_services(&s))
    }

    /// Starts `w`'s life (sessions and reconnects until the run stops).
    pub fn launch(&self, w: &Arc<SimWorker>) {
        let permit = Arc::new(tokio::sync::Semaphore::new(1))
            .try_acquire_owned()
            .expect("a fresh semaphore has a permit");
        tokio::spawn(sim_worker::run(w.clone(), self.shared.clone(), permit));
    }

    /// Ramps `workers` up; returns whether all connected and the watch saw
    /// them healthy within the patience.
    pub async fn ramp(&self, workers: &[Arc<SimWorker>], rate: f64, patience: Duration) -> bool {
        let n = workers.len();
        progress(format_args!("ramp: {n} workers at {rate}/s"));
        let ramp = Ramp { rate, in_flight: 256 };
        let ramped = ramp.run(n, &self.stop, |i, permit| {
            tokio::spawn(sim_worker::run(workers[i].clone(), self.shared.clone(), permit));
        });
        let _ = tokio::time::timeout(ramp.bound(n, patience), ramped).await;
        let mut rx = self.shared.connected.subscribe();
        let all = tokio::time::timeout(patience, rx.wait_for(|c| *c >= n)).await.is_ok();
        let seen = self.watch.wait(patience, |s| s.synced && s.healthy >= n).await;
        progress(format_args!(
            "ramp: {} connected, {} healthy on the watch{}",
            *self.shared.connected.borrow(),
            self.watch.with(|s| s.healthy),
            if all && seen {
                String::new()
            } else {
                format!(" (not all within {})", format_short(patience))
            }
        ));
        all && seen
    }

    /// Waits until `/service/{service}/` answers 2xx through the proxy.
    pub async fn routed(&self, service: &str, patience: Duration) -> bool {
        let path = format!("/service/{service}/");
        let deadline = tokio::time::Instant::now() + patience;
        while tokio::time::Instant::now() < deadline {
            if super::http_load::fetch(self.target, &path).await.is_ok() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// Stops everything the stage started.
    pub async fn finish(self) -> String {
        self.stop.cancel();
        let log = self.coordinator.log().display().to_string();
        self.coordinator.stop().await;
        if let Some(b) = self.backend_child {
            b.stop().await;
        }
        log
    }
}

/// The 1-, 5- and 15-minute load averages (`/proc/loadavg`).
pub fn loadavg() -> Option<[f64; 3]> {
    super::procfs::parse_loadavg(&std::fs::read_to_string("/proc/loadavg").ok()?)
}
