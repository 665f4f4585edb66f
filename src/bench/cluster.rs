//! `edgeplane bench cluster`: a simulated fleet spread over several
//! coordinator processes sharing one etcd.
//!
//! 1. start etcd and the coordinators (children of the bench), each with
//!    `--etcd`; ramp the fleet up, worker `i` on coordinator `i mod N`, each
//!    with the whole list (as an agent with several `--coordinator` URLs);
//! 2. keepalive window: etcd's revision before and after (writes per
//!    second: a steady fleet should write nothing), etcd's CPU, and each
//!    coordinator's CPU and memory per worker it holds;
//! 3. SIGKILL the first coordinator: for each of its workers, the time
//!    until it is welcomed by a survivor; every other worker must keep its
//!    session (false positives); the survivors must list the fleet once
//!    (duplicates).

use super::args::{given_or_this_binary, LoadArgs};
use super::child::{free_port, ChildServer};
use super::connector::source_address;
use super::error::BenchError;
use super::histogram::{Histogram, Summary};
use super::procfs::Window;
use super::ramp::Ramp;
use super::reach::health_ok;
use super::report::progress;
use super::sim_worker::{self, SimShared, SimWorker};
use crate::duration::parse_duration;
use serde::Serialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// `edgeplane bench cluster`.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// Coordinator processes (each holds a share of the fleet; a process
    /// opens at most the machine's open-file limit).
    #[arg(long, default_value_t = 3)]
    pub coordinators: usize,
    /// The etcd server binary (Debian: `apt-get install etcd-server`).
    #[arg(long, default_value = "etcd")]
    pub etcd_bin: PathBuf,
    /// The coordinators' etcd lease TTL.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub lease_ttl: Duration,
    /// The coordinators' heartbeat timeout.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub heartbeat_timeout: Duration,
    /// Skip the kill of the first coordinator.
    #[arg(long)]
    pub no_kill: bool,
    /// Processes the simulated fleet runs in (`bench load` children). One
    /// process may open only so many sockets (20,000 files here): a larger
    /// fleet needs several. With more than one, the kill is skipped (its
    /// per-worker figures live in the children).
    #[arg(long, default_value_t = 1)]
    pub load_processes: usize,
    /// The `edgeplane` binary to start the coordinators from (default: this one).
    #[arg(long)]
    pub coordinator_bin: Option<PathBuf>,
    #[command(flatten)]
    pub load: LoadArgs,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterReport {
    pub workers: usize,
    pub coordinators: usize,
    pub keepalive_ms: u64,
    pub connected: usize,
    pub connect_all_s: Option<f64>,
    /// From all connected until etcd's revision stood still (the
    /// registrations' writes landed).
    pub writes_settled_s: f64,
    /// etcd revisions over the keepalive window, and per second.
    pub etcd_writes: i64,
    pub etcd_writes_per_s: f64,
    pub etcd_cores: Option<f64>,
    pub etcd_rss_kib: Option<u64>,
    /// Per coordinator: cores, RSS, workers held.
    pub coordinator_cores: Vec<f64>,
    pub coordinator_rss_kib: Vec<u64>,
    pub held: Vec<usize>,
    pub bench_cores: f64,
    /// The kill: its workers, time until each was welcomed by a survivor.
    pub killed_workers: usize,
    pub moved: Option<Summary>,
    pub moved_all_s: Option<f64>,
    pub not_moved: usize,
    pub false_positives: u64,
    pub listed_after: Option<usize>,
    pub duplicates: Option<usize>,
    pub notes: Vec<String>,
}

impl ClusterReport {
    pub fn table(&self) -> String {
        let mut t = String::new();
        let mut line = |k: &str, v: String| t.push_str(&format!("  {k:<38} {v}\n"));
        line(
            "workers / coordinators",
            format!("{} / {}", self.workers, self.coordinators),
        );
        line("keepalive", format!("{} ms", self.keepalive_ms));
        line(
            "connected",
            format!("{} ({:?} s to connect all)", self.connected, self.connect_all_s),
        );
        line(
            "etcd writes in the keepalive window",
            format!("{} ({:.2}/s)", self.etcd_writes, self.etcd_writes_per_s),
        );
        line(
            "etcd cores, RSS",
            format!("{:?}, {:?} KiB", self.etcd_cores, self.etcd_rss_kib),
        );
        for (i, ((c, r), h)) in self
            .coordinator_cores
            .iter()
            .zip(&self.coordinator_rss_kib)
            .zip(&self.held)
            .enumerate()
        {
            let per = if *h > 0 { *r as f64 / *h as f64 } else { 0.0 };
            line(
                &format!("coordinator {i}"),
                format!("{c:.3} cores, {r} KiB RSS, {h} workers ({per:.1} KiB each)"),
            );
        }
        line("bench cores", format!("{:.3}", self.bench_cores));
        if let Some(m) = &self.moved {
            line(
                "kill: moved to a survivor p50/p99/max",
                format!(
                    "{:.0} / {:.0} / {:.0} ms (n={} of {})",
                    m.p50_ms, m.p99_ms, m.max_ms, m.count, self.killed_workers
                ),
            );
        }
        line(
            "kill: all moved after",
            format!("{:?} s ({} not moved)", self.moved_all_s, self.not_moved),
        );
        line(
            "false positives (other sessions lost)",
            self.false_positives.to_string(),
        );
        line(
            "survivors list / duplicates",
            format!("{:?} / {:?}", self.listed_after, self.duplicates),
        );
        let mut out = format!(
            "edgeplane bench cluster: {} workers over {} coordinators and one etcd\n",
            self.workers, self.coordinators
        );
        out.push_str(&t);
        for n in &self.notes {
            out.push_str(&format!("  note: {n}\n"));
        }
        out
    }
}

/// The run's directory.
struct Dir(PathBuf);

impl Dir {
    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

fn spawn_coordinator(
    args: &ClusterArgs,
    etcd: &str,
    i: usize,
    port: u16,
    dir: &std::path::Path,
) -> Result<ChildServer, BenchError> {
    let bin = given_or_this_binary(args.coordinator_bin.as_ref())?;
    let ms = |d: Duration| format!("{}ms", d.as_millis());
    let a: Vec<String> = [
        "coordinator",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--etcd",
        etcd,
        "--cluster",
        "bench",
        "--coordinator-id",
        &format!("c{i}"),
        "--etcd-lease-ttl",
        &ms(args.lease_ttl),
        "--keepalive-interval",
        &ms(args.load.keepalive),
        "--heartbeat-timeout",
        &ms(args.heartbeat_timeout),
        "--worker-timeout",
        "600000ms",
        "--max-workers",
        &(args.load.workers + 1000).to_string(),
        "--catalog",
        &dir.join("catalog.toml").display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    ChildServer::spawn("a coordinator", &bin, a, Vec::new(), &dir.join(format!("c{i}.log")))
}

async fn revision(client: &mut etcd_client::Client) -> Result<i64, BenchError> {
    let r = client
        .get(
            "/bench/",
            Some(etcd_client::GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .map_err(|e| BenchError::Settings(format!("etcd: {e}")))?;
    Ok(r.header().map_or(0, |h| h.revision()))
}

/// (records, distinct names) a coordinator lists.
async fn listed(url: &str) -> Option<(usize, usize)> {
    let v: serde_json::Value = reqwest_like_get(&format!("{url}/api/admin/workers")).await?;
    let a = v.as_array()?;
    let names: std::collections::HashSet<&str> = a.iter().filter_map(|w| w["name"].as_str()).collect();
    Some((a.len(), names.len()))
}

/// A GET returning JSON, over a plain hyper client (the bench has no reqwest).
async fn reqwest_like_get(url: &str) -> Option<serde_json::Value> {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let resp = tokio::time::timeout(Duration::from_secs(30), client.get(url.parse().ok()?))
        .await
        .ok()?
        .ok()?;
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    serde_json::from_slice(&body).ok()
}

pub async fn run(args: &ClusterArgs) -> Result<ClusterReport, BenchError> {
    let n = args.load.workers;
    let k = args.coordinators.max(1);
    if n == 0 || args.load.keepalive.is_zero() || args.load.sources == 0 || args.load.sources > 250 {
        return Err(BenchError::Settings(
            "--workers, --keepalive must be positive, --sources 1..=250".into(),
        ));
    }
    super::fdlimit::raise_to_hard()?;
    let patience = args.load.patience;
    let stop = CancellationToken::new();
    let _stop_on_return = stop.clone().drop_guard();
    // Logs and etcd's data, kept after the run for a look.
    let dir = std::env::temp_dir().join(format!("edgeplane-bench-cluster-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("catalog.toml"), "")?;
    let dir = Dir(dir);
    let mut notes = Vec::new();

    let etcd_port = free_port()?;
    let etcd_url = format!("http://127.0.0.1:{etcd_port}");
    progress(format_args!("starting etcd at {etcd_url}"));
    let mut etcd = super::etcd::spawn_etcd_at(
        &args.etcd_bin,
        &dir.path().join("etcd.log"),
        etcd_port,
        &dir.path().join("etcd"),
    )?;
    let mut client = None;
    let started = Instant::now();
    while client.is_none() {
        etcd.check_running()?;
        if let Ok(mut c) = etcd_client::Client::connect([&etcd_url], None).await {
            if c.status().await.is_ok() {
                client = Some(c);
            }
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err(BenchError::Settings("etcd did not start within 30 s".into()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut client = client.expect("set above");

    let mut coordinators = Vec::new();
    let mut targets: Vec<SocketAddr> = Vec::new();
    let mut urls = Vec::new();
    for i in 0..k {
        let port = free_port()?;
        let url = format!("http://127.0.0.1:{port}");
        progress(format_args!("starting coordinator c{i} at {url}"));
        let mut c = spawn_coordinator(args, &etcd_url, i, port, dir.path())?;
        let u = url.clone();
        c.wait_ready(Duration::from_secs(30), || health_ok(&u)).await?;
        coordinators.push(c);
        targets.push(SocketAddr::from(([127, 0, 0, 1], port)));
        urls.push(url);
    }

    let endpoint = sim_worker::endpoint(&urls[0])?;
    let run_tag = format!("cluster-{}-{}", std::process::id(), rand::random::<u32>());
    let shared = Arc::new(SimShared::new(
        targets,
        endpoint,
        args.load.keepalive,
        (Duration::from_millis(100), Duration::from_secs(2)),
        stop.clone(),
        run_tag.clone(),
    ));
    // With several load processes, the fleet runs in them, not here.
    let multi = args.load_processes > 1;
    let here = if multi { 0 } else { n };
    let workers: Vec<Arc<SimWorker>> = (0..here)
        .map(|i| {
            Arc::new(SimWorker::starting_at(
                i,
                &run_tag,
                source_address(i, args.load.sources),
                i % k,
            ))
        })
        .collect();
    progress(format_args!(
        "ramp: {n} workers over {k} coordinators at {}/s",
        args.load.ramp_rate
    ));
    let ramp = Ramp {
        rate: args.load.ramp_rate,
        in_flight: args.load.ramp_in_flight,
    };
    let t0 = Instant::now();
    let mut loaders = Vec::new();
    let (all, connected) = if multi {
        let p = args.load_processes;
        let targets: Vec<String> = shared.targets.iter().map(|t| t.to_string()).collect();
        let bin = given_or_this_binary(args.coordinator_bin.as_ref())?;
        for j in 0..p {
            let (from, to) = (n * j / p, n * (j + 1) / p);
            let a: Vec<String> = vec![
                "bench".into(),
                "load".into(),
                "--targets".into(),
                targets.join(","),
                "--workers".into(),
                (to - from).to_string(),
                "--offset".into(),
                from.to_string(),
                "--keepalive".into(),
                format!("{}ms", args.load.keepalive.as_millis()),
                "--sources".into(),
                args.load.sources.to_string(),
                "--ramp-rate".into(),
                (args.load.ramp_rate / p as f64).to_string(),
                "--run-tag".into(),
                run_tag.clone(),
            ];
            let log = dir.path().join(format!("load-{j}.log"));
            loaders.push(ChildServer::spawn("a load process", &bin, a, Vec::new(), &log)?);
        }
        // Counted by the coordinators: the whole fleet, healthy, on c0.
        let mut healthy = 0;
        while healthy < n && t0.elapsed() < patience {
            tokio::time::sleep(Duration::from_millis(500)).await;
            for l in &mut loaders {
                l.check_running()?;
            }
            healthy = reqwest_like_get(&format!("{}/health", urls[0]))
                .await
                .and_then(|h| h["workers"]["healthy"].as_u64())
                .unwrap_or(0) as usize;
        }
        notes.push(format!(
            "the fleet ran in {p} load processes: the kill and the false-positive count are not measured in this mode"
        ));
        (healthy >= n, healthy)
    } else {
        let ramped = ramp.run(n, &stop, |i, permit| {
            tokio::spawn(sim_worker::run(workers[i].clone(), shared.clone(), permit));
        });
        let _ = tokio::time::timeout(ramp.bound(n, patience), ramped).await;
        let mut rx = shared.connected.subscribe();
        let all = tokio::time::timeout(patience, rx.wait_for(|c| *c >= n)).await.is_ok();
        (all, *shared.connected.borrow())
    };
    let connect_all_s = all.then(|| t0.elapsed().as_secs_f64());
    if !all {
        notes.push(format!("only {connected} of {n} connected within {patience:?}"));
    }
    // The registrations' writes land first: the window starts once etcd's
    // revision has stood still for two seconds.
    progress(format_args!("waiting for the registrations' etcd writes to land"));
    let settle = Instant::now();
    let mut last = revision(&mut client).await?;
    let mut still = 0;
    while still < 4 && settle.elapsed() < patience {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = revision(&mut client).await?;
        still = if now == last { still + 1 } else { 0 };
        last = now;
    }
    let settled_s = settle.elapsed().as_secs_f64();

    progress(format_args!("keepalive window: {:?}", args.load.duration));
    let ends_before = shared.unexpected_ends.load(Ordering::Relaxed);
    let rev_before = revision(&mut client).await?;
    let etcd_window = Window::start(etcd.pid());
    let windows: Vec<Window> = coordinators.iter().map(|c| Window::start(c.pid())).collect();
    tokio::time::sleep(args.load.duration).await;
    let etcd_usage = etcd_window.finish();
    let usages: Vec<_> = windows.into_iter().map(Window::finish).collect();
    let rev_after = revision(&mut client).await?;
    let etcd_writes = rev_after - rev_before;
    // Worker `i` starts on coordinator `i mod k`.
    let held: Vec<usize> = (0..k).map(|i| (n + k - 1 - i) / k).collect();

    let mut report = ClusterReport {
        workers: n,
        coordinators: k,
        keepalive_ms: args.load.keepalive.as_millis() as u64,
        connected,
        connect_all_s,
        writes_settled_s: settled_s,
        etcd_writes,
        etcd_writes_per_s: etcd_writes as f64 / args.load.duration.as_secs_f64(),
        etcd_cores: etcd_usage.target.map(|u| u.cores),
        etcd_rss_kib: etcd_usage.target.map(|u| u.rss_kib),
        coordinator_cores: usages.iter().map(|u| u.target.map_or(0.0, |t| t.cores)).collect(),
        coordinator_rss_kib: usages.iter().map(|u| u.target.map_or(0, |t| t.rss_kib)).collect(),
        held,
        bench_cores: etcd_usage.bench_cores,
        killed_workers: 0,
        moved: None,
        moved_all_s: None,
        not_moved: 0,
        false_positives: shared.unexpected_ends.load(Ordering::Relaxed) - ends_before,
        listed_after: None,
        duplicates: None,
        notes,
    };

    if !args.no_kill && !multi && k > 1 {
        progress(format_args!(
            "kill: SIGKILL coordinator c0, until its workers are on a survivor"
        ));
        let theirs: Vec<Arc<SimWorker>> = workers.iter().filter(|w| w.index % k == 0).cloned().collect();
        let before: Vec<u64> = theirs.iter().map(|w| w.sessions.load(Ordering::Relaxed)).collect();
        let others_before: u64 = workers
            .iter()
            .filter(|w| w.index % k != 0)
            .map(|w| w.sessions.load(Ordering::Relaxed))
            .sum();
        let moved = Histogram::new();
        let mut pending: Vec<usize> = (0..theirs.len()).collect();
        coordinators[0].kill().await?;
        let killed = Instant::now();
        while !pending.is_empty() && killed.elapsed() < patience {
            pending.retain(|&j| {
                if theirs[j].sessions.load(Ordering::Relaxed) > before[j] {
                    moved.record(killed.elapsed());
                    false
                } else {
                    true
                }
            });
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        report.killed_workers = theirs.len();
        report.moved = Some(moved.summary());
        report.not_moved = pending.len();
        report.moved_all_s = pending.is_empty().then(|| killed.elapsed().as_secs_f64());
        let others_after: u64 = workers
            .iter()
            .filter(|w| w.index % k != 0)
            .map(|w| w.sessions.load(Ordering::Relaxed))
            .sum();
        report.false_positives += others_after - others_before;
        // The survivors converge on one record per worker.
        let started = Instant::now();
        loop {
            let l = listed(&urls[1]).await;
            if let Some((records, names)) = l {
                report.listed_after = Some(records);
                report.duplicates = Some(records - names);
                if records == n || started.elapsed() > Duration::from_secs(30) {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    stop.cancel();
    Ok(report)
}
