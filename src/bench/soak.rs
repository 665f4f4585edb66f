//! `edgeplane bench soak`: a bounded run (`--duration`, it ends by itself)
//! of a churning fleet on one coordinator, sampled every `--sample-every`
//! for what a leak would show: resident memory, open files, threads,
//! tokio tasks (the coordinator's `edgeplane_tokio_tasks` gauge), and the
//! keepalive and proxy round trips.
//!
//! The fleet (`--workers`, 1,000) is split in three:
//! - `--stable` workers that are never stopped and declare `soak-steady`:
//!   their watch state must never leave `healthy` (each report otherwise is
//!   a false positive), and requests to `soak-steady` must never fail;
//! - `--flappers` that declare `soak-flap` and flip it between `loading`
//!   and `ready` every `--flap-every`;
//! - the rest, churners (declaring `soak-churn`): `--churn-per-min` of them
//!   a minute drop their connection abruptly and come back `--down-for`
//!   later, resuming their id with their token;
//!
//! plus newcomers (`--newcomers-per-min`) that join under a new name and
//! leave abruptly after `--newcomer-life`. Steady paced proxy load goes to
//! `soak-steady` and, apart, to `soak-flap`.
//!
//! The churn itself is driven from `churn.rs`; the report's table and plot
//! are drawn in `soak_report.rs`.

use super::churn::{churner, flapper, newcomers, Churn, ChurnCounters, Newcomers};
use super::error::BenchError;
use super::flatness::{flatness, Flatness, Verdict};
use super::histogram::Summary;
use super::http_load::{self, gauge_value, LoadFigures, LoadSpec, LoadStats};
use super::procfs::{self, Window};
use super::report::{progress, FalsePositives};
use super::sim_worker::SimWorker;
use super::stage::{loadavg, Stage, StageArgs};
use crate::duration::{format_short, parse_duration};
use crate::proto::WorkerStatus;
use serde::Serialize;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

const STEADY: &str = "soak-steady";
const FLAP: &str = "soak-flap";
const CHURN: &str = "soak-churn";

/// `edgeplane bench soak`.
#[derive(Debug, Clone, clap::Args)]
pub struct SoakArgs {
    /// How long the soak runs (after the ramp).
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    pub duration: Duration,
    /// Time between two samples.
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    pub sample_every: Duration,
    /// Samples before this are the warm-up: growth is judged after it.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Workers never stopped (their watch state must stay healthy).
    #[arg(long, default_value_t = 200)]
    pub stable: usize,
    /// Workers whose service flaps between loading and ready.
    #[arg(long, default_value_t = 100)]
    pub flappers: usize,
    /// Each flapper's time in one state before it flips.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub flap_every: Duration,
    /// Churners dropped abruptly a minute (each comes back and resumes).
    #[arg(long, default_value_t = 120.0)]
    pub churn_per_min: f64,
    /// How long a dropped churner stays away.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub down_for: Duration,
    /// Newcomers (new names) joining a minute; each leaves abruptly later.
    #[arg(long, default_value_t = 30.0)]
    pub newcomers_per_min: f64,
    /// How long a newcomer stays (each a random time up to twice this).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub newcomer_life: Duration,
    /// Paced clients of `soak-steady`; `soak-flap` gets half as many.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Each client's gap between two requests.
    #[arg(long, default_value = "20ms", value_parser = parse_duration)]
    pub request_every: Duration,
    /// Also write the plot (RSS, round-trip p99s, files and tasks over time) here.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    #[command(flatten)]
    pub stage: StageArgs,
}

#[derive(Debug, Clone, Serialize)]
pub struct SoakSample {
    /// Seconds since the soak started (after the ramp).
    pub t_s: f64,
    pub rss_kib: u64,
    /// Anonymous resident memory (`RssAnon`): the heap, without the binary's
    /// file-backed pages.
    pub rss_anon_kib: u64,
    pub fds: u64,
    pub threads: u64,
    pub tokio_tasks: Option<u64>,
    /// Coordinator cores since the previous sample.
    pub coordinator_cores: f64,
    /// Keepalive round trips since the previous sample.
    pub keepalive: Summary,
    /// Requests to `soak-steady` and `soak-flap` since the previous sample.
    pub steady: LoadFigures,
    pub flap: LoadFigures,
    /// Simulated sessions open, and workers the watch shows healthy.
    pub connected: usize,
    pub healthy: usize,
    pub loadavg: Option<[f64; 3]>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    pub coordinator: String,
    pub coordinator_log: String,
    pub workers: usize,
    pub stable: usize,
    pub flappers: usize,
    pub duration_s: f64,
    pub sample_every_s: f64,
    pub warmup_s: f64,
    pub keepalive_ms: u64,
    pub heartbeat_timeout_ms: u64,
    pub worker_timeout_ms: u64,
    pub cpus: usize,
    pub samples: Vec<SoakSample>,
    pub rss_mib: Flatness,
    pub anon_mib: Flatness,
    pub fds: Flatness,
    pub threads: Flatness,
    pub tokio_tasks: Option<Flatness>,
    /// Flat: RSS, open files and tasks all flat after the warm-up.
    pub flat: bool,
    pub false_positives: FalsePositives,
    pub steady_total: LoadFigures,
    pub flap_total: LoadFigures,
    pub churn: Churn,
    pub worst_keepalive_p99_ms: f64,
    pub worst_steady_p99_ms: f64,
    pub notes: Vec<String>,
}

fn validate(a: &SoakArgs) -> Result<(), BenchError> {
    let bad = |m: &str| Err(BenchError::Settings(m.to_string()));
    if a.sample_every.is_zero() || a.duration < a.sample_every {
        return bad("--sample-every must be positive and at most --duration");
    }
    if a.stable + a.flappers > a.stage.workers {
        return bad("--stable plus --flappers must not exceed --workers");
    }
    if a.stable == 0 || a.flappers == 0 || a.clients == 0 {
        return bad("--stable, --flappers and --clients must be at least 1");
    }
    Ok(())
}

pub async fn run(args: &SoakArgs) -> Result<SoakReport, BenchError> {
    validate(args)?;
    let st = &args.stage;
    let stage = Arc::new(Stage::start(st, "soak").await?);
    let mut notes = Vec::new();
    let n = st.workers;
    let workers: Vec<Arc<SimWorker>> = (0..n)
        .map(|i| {
            let service = if i < args.stable {
                STEADY
            } else if i < args.stable + args.flappers {
                FLAP
            } else {
                CHURN
            };
            stage.worker(i, st.sources, &[service])
        })
        .collect();
    if !stage.ramp(&workers, st.ramp_rate, st.patience).await {
        notes.push("not every worker connected within the patience".into());
    }
    for s in [STEADY, FLAP] {
        if !stage.routed(s, st.patience).await {
            notes.push(format!("/service/{s}/ never answered 2xx before the soak"));
        }
    }
    let stable_ids: HashSet<String> = workers[..args.stable].iter().filter_map(|w| w.id()).collect();
    let log_start = stage.watch.with(|s| s.log.len());
    let churn = Arc::new(ChurnCounters::default());

    // Proxy load: paced, to healthy replicas and to the flapping service.
    let steady = Arc::new(LoadStats::default());
    let flap = Arc::new(LoadStats::default());
    let steady_spec = LoadSpec {
        target: stage.target,
        path: format!("/service/{STEADY}/item?id=1"),
        clients: args.clients,
        interval: Some(args.request_every),
    };
    let flap_spec = LoadSpec {
        target: stage.target,
        path: format!("/service/{FLAP}/item?id=2"),
        clients: args.clients.div_ceil(2),
        interval: Some(args.request_every),
    };
    http_load::start(&steady_spec, steady.clone(), stage.stop.clone());
    http_load::start(&flap_spec, flap.clone(), stage.stop.clone());

    // Flapping services.
    for w in &workers[args.stable..args.stable + args.flappers] {
        tokio::spawn(flapper(w.clone(), FLAP, args.flap_every, churn.clone(), stage.clone()));
    }
    // Churners: dropped and back.
    let churners: Arc<Vec<Arc<SimWorker>>> = Arc::new(workers[args.stable + args.flappers..].to_vec());
    if !churners.is_empty() && args.churn_per_min > 0.0 {
        let pace = (args.churn_per_min, args.down_for);
        tokio::spawn(churner(churners, pace, churn.clone(), stage.clone()));
    }
    if args.newcomers_per_min > 0.0 {
        let newcomer = Newcomers {
            per_min: args.newcomers_per_min,
            life: args.newcomer_life,
            first_index: args.stage.workers,
            sources: args.stage.sources,
            service: CHURN,
        };
        tokio::spawn(newcomers(newcomer, churn.clone(), stage.clone()));
    }

    progress(format_args!(
        "soak: {} (a sample every {}, warm-up {})",
        format_short(args.duration),
        format_short(args.sample_every),
        format_short(args.warmup)
    ));
    let start = Instant::now();
    let total_steady = steady.mark();
    let total_flap = flap.mark();
    let mut samples = Vec::new();
    let mut window = Window::start(stage.pid);
    let mut marks = (steady.mark(), flap.mark());
    stage.shared.rtt.reset();
    stage.shared.recording.store(true, Ordering::Relaxed);
    let mut next = tokio::time::Instant::now();
    let end = tokio::time::Instant::now() + args.duration;
    let mut worst_ka = 0.0f64;
    let mut worst_steady = 0.0f64;
    loop {
        tokio::time::sleep_until(next).await;
        let usage = std::mem::replace(&mut window, Window::start(stage.pid)).finish();
        let keepalive = stage.shared.rtt.summary();
        stage.shared.rtt.reset();
        let s_fig = steady.figures(&marks.0, steady_spec.clients, &steady_spec.path);
        let f_fig = flap.figures(&marks.1, flap_spec.clients, &flap_spec.path);
        marks = (steady.mark(), flap.mark());
        let p = stage.pid.and_then(|p| procfs::sample(p).ok());
        let fds = stage.pid.and_then(|p| procfs::fd_count(p).ok()).unwrap_or(0);
        let tasks = http_load::fetch(stage.target, "/metrics")
            .await
            .ok()
            .and_then(|t| gauge_value(&t, "edgeplane_tokio_tasks"))
            .map(|v| v as u64);
        let sample = SoakSample {
            t_s: start.elapsed().as_secs_f64(),
            rss_kib: p.map_or(0, |p| p.rss_kib),
            rss_anon_kib: p.map_or(0, |p| p.rss_anon_kib),
            fds,
            threads: p.map_or(0, |p| p.threads),
            tokio_tasks: tasks,
            coordinator_cores: usage.target.map_or(0.0, |t| t.cores),
            keepalive,
            steady: s_fig,
            flap: f_fig,
            connected: *stage.shared.connected.borrow(),
            healthy: stage.watch.with(|s| s.healthy),
            loadavg: loadavg(),
        };
        if !samples.is_empty() {
            worst_ka = worst_ka.max(sample.keepalive.p99_ms);
            worst_steady = worst_steady.max(sample.steady.latency.p99_ms);
        }
        progress(format_args!(
            "soak t={:.0}s RSS {:.1} MiB (anon {:.1}), {} fds, {} threads, {} tasks, keepalive p99 {:.2} ms, steady {} req ({} failed) p99 {:.2} ms, flap {} req ({} failed), {} connected",
            sample.t_s,
            sample.rss_kib as f64 / 1024.0,
            sample.rss_anon_kib as f64 / 1024.0,
            sample.fds,
            sample.threads,
            sample.tokio_tasks.map_or("-".into(), |t| t.to_string()),
            sample.keepalive.p99_ms,
            sample.steady.requests,
            sample.steady.failures,
            sample.steady.latency.p99_ms,
            sample.flap.requests,
            sample.flap.failures,
            sample.connected
        ));
        samples.push(sample);
        if tokio::time::Instant::now() >= end {
            break;
        }
        next = (next + args.sample_every).min(end);
    }
    stage.shared.recording.store(false, Ordering::Relaxed);
    let mut steady_total = steady.figures(&total_steady, steady_spec.clients, &steady_spec.path);
    steady_total.latency = steady.all.summary();
    let mut flap_total = flap.figures(&total_flap, flap_spec.clients, &flap_spec.path);
    flap_total.latency = flap.all.summary();

    let false_positives = stage.watch.with(|s| {
        let bad: Vec<_> = s.log[log_start..]
            .iter()
            .filter(|o| stable_ids.contains(&o.worker_id) && o.status != WorkerStatus::Healthy)
            .collect();
        let workers: HashSet<&str> = bad.iter().map(|o| o.worker_id.as_str()).collect();
        FalsePositives {
            reports: bad.len(),
            workers: workers.len(),
            examples: bad
                .iter()
                .take(5)
                .map(|o| {
                    format!(
                        "{} {:?} at t={:.1}s",
                        o.worker_id,
                        o.status,
                        o.at.saturating_duration_since(start).as_secs_f64()
                    )
                })
                .collect(),
        }
    });
    let stable_lost = workers[..args.stable]
        .iter()
        .filter(|w| w.sessions.load(Ordering::Relaxed) != 1)
        .count();
    if stable_lost > 0 {
        notes.push(format!(
            "{stable_lost} never-stopped workers had more than one session (their stream was lost)"
        ));
    }
    for (cause, count) in stage.shared.failure_causes().into_iter().take(5) {
        notes.push(format!("failed worker attempts: {count} x {cause}"));
    }
    let series = |f: &dyn Fn(&SoakSample) -> Option<f64>| -> Vec<(f64, f64)> {
        samples.iter().filter_map(|s| Some((s.t_s, f(s)?))).collect()
    };
    let warm = args.warmup.as_secs_f64();
    let rss_mib = flatness(&series(&|s| Some(s.rss_kib as f64 / 1024.0)), warm, 5.0, 2.0);
    let anon_mib = flatness(&series(&|s| Some(s.rss_anon_kib as f64 / 1024.0)), warm, 5.0, 2.0);
    let fds = flatness(&series(&|s| Some(s.fds as f64)), warm, 5.0, 16.0);
    let threads = flatness(&series(&|s| Some(s.threads as f64)), warm, 5.0, 2.0);
    let task_points = series(&|s| s.tokio_tasks.map(|t| t as f64));
    let tokio_tasks = (!task_points.is_empty()).then(|| flatness(&task_points, warm, 5.0, 50.0));
    let flat = [Some(&rss_mib), Some(&fds), tokio_tasks.as_ref()]
        .into_iter()
        .flatten()
        .all(|f| f.verdict == Verdict::Flat);
    let churn_figures = Churn {
        id_changes: workers.iter().map(|w| w.id_changes.load(Ordering::Relaxed)).sum(),
        ..churn.figures()
    };
    let hb = stage.shared.welcome_heartbeat_timeout_ms.load(Ordering::Relaxed);
    let url = stage.url.clone();
    // The churn tasks hold the stage until they see the stop.
    stage.stop.cancel();
    let mut stage = stage;
    let log = loop {
        match Arc::try_unwrap(stage) {
            Ok(s) => break s.finish().await,
            Err(s) => {
                stage = s;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let report = SoakReport {
        coordinator: url,
        coordinator_log: log,
        workers: n,
        stable: args.stable,
        flappers: args.flappers,
        duration_s: args.duration.as_secs_f64(),
        sample_every_s: args.sample_every.as_secs_f64(),
        warmup_s: warm,
        keepalive_ms: st.keepalive.as_millis() as u64,
        heartbeat_timeout_ms: hb,
        worker_timeout_ms: st.worker_timeout.as_millis() as u64,
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        samples,
        rss_mib,
        anon_mib,
        fds,
        threads,
        tokio_tasks,
        flat,
        false_positives,
        steady_total,
        flap_total,
        churn: churn_figures,
        worst_keepalive_p99_ms: worst_ka,
        worst_steady_p99_ms: worst_steady,
        notes,
    };
    if let Some(path) = &args.svg {
        std::fs::write(path, report.svg()).map_err(|source| BenchError::Output {
            path: path.display().to_string(),
            source,
        })?;
    }
    Ok(report)
}
