//! `edgeplane bench overload`: do keepalives still get through when the
//! same coordinator is busy with other work?
//!
//! A fleet of simulated workers (1,000) on one coordinator, their keepalive
//! round trips measured in three phases of `--phase` each:
//! 1. no load;
//! 2. a saturating HTTP load through the coordinator's proxy
//!    (`/service/overload/...`, `--clients` keep-alive clients sending back
//!    to back) to a fast backend;
//! 3. a connection flood: `--flood` TCP connections to the coordinator's
//!    port, held and dripping garbage.
//!
//! The target: keepalive p99 under 50 ms while the proxy is saturated.

use super::error::BenchError;
use super::flood::{self, FloodFigures};
use super::histogram::Summary;
use super::http_load::{self, LoadFigures, LoadSpec, LoadStats};
use super::procfs::{Window, WindowUsage};
use super::report::progress;
use super::stage::{loadavg, Stage, StageArgs};
use crate::duration::{format_short, parse_duration};
use serde::Serialize;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The target for the keepalive p99 with the proxy saturated.
pub const TARGET_P99_MS: f64 = 50.0;

/// The service every simulated worker declares.
const SERVICE: &str = "overload";

/// `edgeplane bench overload`.
#[derive(Debug, Clone, clap::Args)]
pub struct OverloadArgs {
    /// Length of each phase.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub phase: Duration,
    /// Concurrent keep-alive clients of the proxy load (phase 2).
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// TCP connections of the flood (phase 3).
    #[arg(long, default_value_t = 2000)]
    pub flood: usize,
    /// Source addresses the flood dials from (127.0.3.1 upwards).
    #[arg(long, default_value_t = 40)]
    pub flood_sources: usize,
    /// Workers that declare the proxied service (replicas).
    #[arg(long, default_value_t = 8)]
    pub replicas: usize,
    #[command(flatten)]
    pub stage: StageArgs,
}

#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    pub name: String,
    pub seconds: f64,
    /// Keepalive sent to its ack received, every worker.
    pub keepalive_rtt: Summary,
    pub proxy: Option<LoadFigures>,
    pub flood: Option<FloodFigures>,
    pub usage: WindowUsage,
    /// Load averages (1, 5, 15 min) at the phase's start and end.
    pub loadavg_start: Option<[f64; 3]>,
    pub loadavg_end: Option<[f64; 3]>,
    /// Non-healthy reports of workers on the watch during the phase.
    pub unhealthy_reports: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct OverloadReport {
    pub coordinator: String,
    pub coordinator_log: String,
    pub workers: usize,
    pub connected: usize,
    pub keepalive_ms: u64,
    pub heartbeat_timeout_ms: u64,
    pub coordinator_cpus: Option<String>,
    pub backend_cpus: Option<String>,
    pub cpus: usize,
    pub fd_limit: (u64, u64),
    pub phases: Vec<PhaseReport>,
    pub target_p99_ms: f64,
    /// Whether the keepalive p99 with the proxy saturated met the target.
    pub target_met: bool,
    pub unexpected_session_ends: u64,
    pub notes: Vec<String>,
}

pub async fn run(args: &OverloadArgs) -> Result<OverloadReport, BenchError> {
    let st = &args.stage;
    let stage = Stage::start(st, "overload").await?;
    let mut notes = Vec::new();
    let n = st.workers;
    let replicas = args.replicas.min(n);
    let workers: Vec<_> = (0..n)
        .map(|i| {
            let services: &[&str] = if i < replicas { &[SERVICE] } else { &[] };
            stage.worker(i, st.sources, services)
        })
        .collect();
    if !stage.ramp(&workers, st.ramp_rate, st.patience).await {
        notes.push("not every worker connected within the patience".into());
    }
    if !stage.routed(SERVICE, st.patience).await {
        notes.push(format!("/service/{SERVICE}/ never answered 2xx through the proxy"));
    }
    // Two intervals with keepalives flowing: the ramp's tail is over.
    tokio::time::sleep(st.keepalive * 2).await;
    let mut phases = Vec::new();

    phases.push(phase(&stage, args, "no load", |_| Load::None).await);

    let stats = Arc::new(LoadStats::default());
    let spec = LoadSpec {
        target: stage.target,
        path: format!("/service/{SERVICE}/bench?q=1"),
        clients: args.clients,
        interval: None,
    };
    phases.push(
        phase(&stage, args, "proxy saturated", |stop| {
            http_load::start(&spec, stats.clone(), stop);
            Load::Proxy(stats.clone(), spec.clone())
        })
        .await,
    );

    phases.push(
        phase(&stage, args, "connection flood", |stop| {
            Load::Flood(flood::start(stage.target, args.flood, args.flood_sources, stop))
        })
        .await,
    );

    let saturated = phases[1].keepalive_rtt;
    let target_met = saturated.count > 0 && saturated.p99_ms < TARGET_P99_MS;
    for (cause, count) in stage.shared.failure_causes().into_iter().take(5) {
        notes.push(format!("failed worker attempts: {count} x {cause}"));
    }
    let connected = *stage.shared.connected.borrow();
    let unexpected = stage.shared.unexpected_ends.load(Ordering::Relaxed);
    let hb = stage.shared.welcome_heartbeat_timeout_ms.load(Ordering::Relaxed);
    let url = stage.url.clone();
    let fd_limit = stage.fd_limit;
    let log = stage.finish().await;
    Ok(OverloadReport {
        coordinator: url,
        coordinator_log: log,
        workers: n,
        connected,
        keepalive_ms: st.keepalive.as_millis() as u64,
        heartbeat_timeout_ms: hb,
        coordinator_cpus: st.coordinator_cpus.clone(),
        backend_cpus: st.backend_cpus.clone(),
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        fd_limit,
        phases,
        target_p99_ms: TARGET_P99_MS,
        target_met,
        unexpected_session_ends: unexpected,
        notes,
    })
}

/// What runs beside the fleet in a phase.
enum Load {
    None,
    Proxy(Arc<LoadStats>, LoadSpec),
    Flood(Arc<flood::FloodStats>),
}

async fn phase(
    stage: &Stage,
    args: &OverloadArgs,
    name: &str,
    start: impl FnOnce(CancellationToken) -> Load,
) -> PhaseReport {
    progress(format_args!("phase `{name}`: {}", format_short(args.phase)));
    let stop = stage.stop.child_token();
    let load = start(stop.clone());
    // The load's first second (connects, the flood's opens) is not measured.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mark = match &load {
        Load::Proxy(s, _) => Some(s.mark()),
        _ => None,
    };
    let log_start = stage.watch.with(|s| s.log.len());
    let loadavg_start = loadavg();
    stage.shared.rtt.reset();
    stage.shared.recording.store(true, Ordering::Relaxed);
    let w = Window::start(stage.pid);
    tokio::time::sleep(args.phase).await;
    let usage = w.finish();
    stage.shared.recording.store(false, Ordering::Relaxed);
    let keepalive_rtt = stage.shared.rtt.summary();
    let (proxy, flood) = match &load {
        Load::None => (None, None),
        Load::Proxy(s, spec) => (mark.map(|m| s.figures(&m, spec.clients, &spec.path)), None),
        Load::Flood(f) => (None, Some(f.figures(args.flood))),
    };
    stop.cancel();
    let unhealthy_reports = stage.watch.with(|s| s.log.len() - log_start);
    // Let the load drain before the next phase.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let p = PhaseReport {
        name: name.to_string(),
        seconds: args.phase.as_secs_f64(),
        keepalive_rtt,
        proxy,
        flood,
        usage,
        loadavg_start,
        loadavg_end: loadavg(),
        unhealthy_reports,
    };
    progress(format_args!(
        "phase `{name}`: keepalive p50/p99/max {:.2}/{:.2}/{:.2} ms",
        p.keepalive_rtt.p50_ms, p.keepalive_rtt.p99_ms, p.keepalive_rtt.max_ms
    ));
    p
}

fn lat(s: &Summary) -> String {
    if s.count == 0 {
        return "-".into();
    }
    format!("{:.2} / {:.2} / {:.2} ms (n={})", s.p50_ms, s.p99_ms, s.max_ms, s.count)
}

fn load3(l: Option<[f64; 3]>) -> String {
    l.map_or("-".into(), |l| format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2]))
}

impl OverloadReport {
    pub fn table(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "edgeplane bench overload: {} workers ({} connected), keepalive {} ms, {} CPUs{}{}",
            self.workers,
            self.connected,
            self.keepalive_ms,
            self.cpus,
            self.coordinator_cpus
                .as_deref()
                .map_or(String::new(), |c| format!(", coordinator on CPUs {c}")),
            self.backend_cpus
                .as_deref()
                .map_or(String::new(), |c| format!(", backend on CPUs {c}")),
        );
        for p in &self.phases {
            let _ = writeln!(o, "  phase: {} ({:.0} s)", p.name, p.seconds);
            let _ = writeln!(o, "    {:<30} {}", "keepalive RTT p50/p99/max", lat(&p.keepalive_rtt));
            if let Some(x) = &p.proxy {
                let _ = writeln!(
                    o,
                    "    {:<30} {:.0} req/s, {} requests, {} failed ({} clients)",
                    "proxy", x.req_per_s, x.requests, x.failures, x.clients
                );
                let _ = writeln!(o, "    {:<30} {}", "proxy p50/p99/max", lat(&x.latency));
                for (c, k) in &x.causes {
                    let _ = writeln!(o, "    {:<30} {k} x {c}", "  failure");
                }
            }
            if let Some(f) = &p.flood {
                let _ = writeln!(
                    o,
                    "    {:<30} {} wanted, {} held at the end, {} opened, {} closed by the coordinator, {} failed connects",
                    "flood", f.connections, f.held_at_end, f.opened, f.closed_by_coordinator, f.failed_connects
                );
            }
            let u = &p.usage;
            let _ = writeln!(
                o,
                "    {:<30} coordinator {}, bench {:.2} cores, machine {:.2} cores",
                "CPU",
                u.target.map_or("-".into(), |t| format!(
                    "{:.2} cores, RSS {:.1} MiB",
                    t.cores,
                    t.rss_kib as f64 / 1024.0
                )),
                u.bench_cores,
                u.machine_cores
            );
            let _ = writeln!(
                o,
                "    {:<30} {} -> {}",
                "load average",
                load3(p.loadavg_start),
                load3(p.loadavg_end)
            );
            let _ = writeln!(o, "    {:<30} {}", "unhealthy reports", p.unhealthy_reports);
        }
        let _ = writeln!(
            o,
            "  target: keepalive p99 < {} ms with the proxy saturated: {}",
            self.target_p99_ms,
            if self.target_met { "met" } else { "MISSED" }
        );
        let _ = writeln!(o, "  unexpected session ends: {}", self.unexpected_session_ends);
        let _ = writeln!(o, "  coordinator log: {}", self.coordinator_log);
        for n in &self.notes {
            let _ = writeln!(o, "  note: {n}");
        }
        o
    }
}
