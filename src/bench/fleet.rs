//! `edgeplane bench fleet`: the run, phase by phase.
//!
//! 1. start (or find) the coordinator and a `WatchWorkers` stream;
//! 2. ramp the simulated fleet up at a bounded rate: time to connect all;
//! 3. idle window (keepalives paused) and keepalive window: CPU, memory,
//!    round trips;
//! 4. kill a sample abruptly: time until reported `disconnected`; bring
//!    them back;
//! 5. silence a sample: time until reported `degraded`, against the
//!    heartbeat timeout; let them speak again;
//! 6. SIGKILL the coordinator, start it again on the same port: time until
//!    every worker is registered again, under the id it had;
//! 7. settle, and count false positives over the whole run.

use super::args::FleetArgs;
use super::child::{free_port, ChildServer};
use super::connector::{resolve, source_address};
use super::error::BenchError;
use super::histogram::{summarize, Histogram};
use super::procfs::{self, Window};
use super::ramp::Ramp;
use super::report::{Degraded, Detection, FalsePositives, FleetReport, Restart};
use super::sim_worker::{self, Mode, SimShared, SimWorker};
use super::watch::{FleetWatch, Observation};
use crate::parse::normalize_url;
use crate::proto::WorkerStatus;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;

/// A phase in which some workers are expected to be reported unhealthy.
struct Excuse {
    from: Instant,
    to: Instant,
    /// None: every worker (the coordinator restart).
    ids: Option<HashSet<String>>,
}

fn ms(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

fn validate(args: &FleetArgs) -> Result<(), BenchError> {
    let bad = |m: &str| Err(BenchError::Settings(m.to_string()));
    let l = &args.load;
    if l.workers == 0 {
        return bad("--workers must be at least 1");
    }
    if l.keepalive.is_zero() || l.ramp_rate <= 0.0 || l.sources == 0 || l.sources > 250 {
        return bad("--keepalive and --ramp-rate must be positive, --sources 1..=250");
    }
    if args.coordinator.is_none() && !l.idle.is_zero() && l.idle + 2 * l.keepalive > args.heartbeat_timeout {
        return bad("--idle plus two keepalive intervals must fit in --heartbeat-timeout, or the idle window would degrade the fleet");
    }
    if args.kill + args.silence > l.workers {
        return bad("--kill plus --silence must not exceed --workers");
    }
    Ok(())
}

async fn health_ok(url: &str) -> bool {
    let Ok(ep) = Endpoint::from_shared(url.to_string()) else {
        return false;
    };
    let Ok(ch) = ep.connect_timeout(Duration::from_millis(500)).connect().await else {
        return false;
    };
    let mut h = tonic_health::pb::health_client::HealthClient::new(ch);
    let req = tonic_health::pb::HealthCheckRequest { service: String::new() };
    matches!(h.check(req).await, Ok(r) if r.get_ref().status == 1)
}

fn spawn_coordinator(args: &FleetArgs, port: u16) -> Result<ChildServer, BenchError> {
    let bin = match &args.coordinator_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?,
    };
    let log = args
        .coordinator_log
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("edgeplane-bench-coordinator-{port}.log")));
    let n = args.load.workers;
    let mut a: Vec<String> = [
        "coordinator",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--keepalive-interval",
        &ms(args.load.keepalive),
        "--heartbeat-timeout",
        &ms(args.heartbeat_timeout),
        "--worker-timeout",
        &ms((args.heartbeat_timeout * 4).max(Duration::from_secs(600))),
        "--max-workers",
        &(n + 1000).max(20_000).to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(args.coordinator_args.iter().cloned());
    ChildServer::spawn("the coordinator", &bin, a, Vec::new(), &log)
}

/// `count` indices spread evenly over `0..n`, starting at `offset`.
fn sample(n: usize, count: usize, offset: usize) -> Vec<usize> {
    if count == 0 {
        return Vec::new();
    }
    let step = (n / count).max(1);
    (0..count).map(|k| (offset + k * step) % n).collect()
}

pub async fn run(args: &FleetArgs) -> Result<FleetReport, BenchError> {
    validate(args)?;
    let fd_limit = super::fdlimit::raise_to_hard()?;
    let n = args.load.workers;
    let patience = args.load.patience;
    let stop = CancellationToken::new();
    let _stop_on_return = stop.clone().drop_guard();
    let mut notes = Vec::new();

    let (url, mut child) = match &args.coordinator {
        Some(u) => (normalize_url(u), None),
        None => {
            let port = free_port()?;
            let url = format!("http://127.0.0.1:{port}");
            let mut c = spawn_coordinator(args, port)?;
            let u = url.clone();
            c.wait_ready(Duration::from_secs(30), || health_ok(&u)).await?;
            (url, Some(c))
        }
    };
    let pid = child.as_ref().and_then(|c| c.pid()).or(args.coordinator_pid);
    let baseline = pid.map(procfs::sample).transpose()?;
    let target = resolve(&url).await.map_err(|reason| BenchError::Url {
        url: url.clone(),
        reason,
    })?;

    let watch = FleetWatch::start(url.clone(), stop.clone());
    if !watch.wait(patience, |s| s.synced).await {
        return Err(BenchError::Watch(format!("no WatchWorkers snapshot from {url}")));
    }

    let endpoint = Endpoint::from_shared(url.clone())
        .map_err(|e| BenchError::Url {
            url: url.clone(),
            reason: e.to_string(),
        })?
        .connect_timeout(Duration::from_secs(10))
        // As the agent: HTTP/2 pings every 20 s notice a dead path.
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    let run_tag = format!("bench-{}-{}", std::process::id(), rand::random::<u32>());
    let shared = Arc::new(SimShared {
        target,
        endpoint,
        keepalive: args.load.keepalive,
        reconnect: (args.reconnect_min, args.reconnect_max),
        epoch: Instant::now(),
        paused: AtomicBool::new(false),
        recording: AtomicBool::new(false),
        rtt: Histogram::new(),
        welcome: Histogram::new(),
        connected: tokio::sync::watch::channel(0).0,
        unexpected_ends: AtomicU64::new(0),
        failed_attempts: AtomicU64::new(0),
        failures: Default::default(),
        welcome_heartbeat_timeout_ms: AtomicU64::new(0),
        welcome_keepalive_ms: AtomicU64::new(0),
        stop: stop.clone(),
        run_tag: run_tag.clone(),
    });
    let workers: Vec<Arc<SimWorker>> = (0..n)
        .map(|i| Arc::new(SimWorker::new(i, &run_tag, source_address(i, args.load.sources))))
        .collect();
    let connected_at_least = |k: usize| {
        let mut rx = shared.connected.subscribe();
        async move { tokio::time::timeout(patience, rx.wait_for(|c| *c >= k)).await.is_ok() }
    };

    // Ramp up.
    let ramp = Ramp {
        rate: args.load.ramp_rate,
        in_flight: args.load.ramp_in_flight,
    };
    let ramp_window = Window::start(pid);
    let t0 = Instant::now();
    let ramped = ramp.run(n, &stop, |i, permit| {
        tokio::spawn(sim_worker::run(workers[i].clone(), shared.clone(), permit));
    });
    if tokio::time::timeout(ramp.bound(n, patience), ramped).await.is_err() {
        notes.push("the ramp did not finish within its bound".into());
    }
    let all = connected_at_least(n).await;
    let connect_all = all.then(|| t0.elapsed());
    let registered = watch.wait(patience, |s| s.synced && s.healthy >= n).await;
    let ramp_usage = ramp_window.finish();
    let connected = *shared.connected.borrow();
    if !all || !registered {
        notes.push(format!(
            "only {connected} of {n} workers connected within {patience:?} (watch saw {} healthy); see the coordinator log",
            watch.with(|s| s.healthy)
        ));
    }
    let hb = match shared.welcome_heartbeat_timeout_ms.load(Ordering::Relaxed) {
        0 => args.heartbeat_timeout,
        v => Duration::from_millis(v),
    };
    let told = shared.welcome_keepalive_ms.load(Ordering::Relaxed);
    if told != 0 && told != args.load.keepalive.as_millis() as u64 {
        notes.push(format!(
            "the coordinator asks for keepalives every {told} ms; the bench sends them every {} ms",
            args.load.keepalive.as_millis()
        ));
    }
    // One interval with keepalives flowing, so the ramp's tail is over.
    tokio::time::sleep(args.load.keepalive).await;

    // Idle: connected, keepalives paused (only HTTP/2 pings and the health clock run).
    let idle = if !args.load.idle.is_zero() && args.load.idle + 2 * args.load.keepalive <= hb {
        shared.paused.store(true, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let w = Window::start(pid);
        tokio::time::sleep(args.load.idle).await;
        let u = w.finish();
        shared.paused.store(false, Ordering::Relaxed);
        tokio::time::sleep(args.load.keepalive).await;
        Some(u)
    } else {
        if !args.load.idle.is_zero() {
            notes.push("idle window skipped: it would not fit in the heartbeat timeout".into());
        }
        None
    };

    // Keepalives flowing.
    shared.rtt.reset();
    shared.recording.store(true, Ordering::Relaxed);
    let w = Window::start(pid);
    tokio::time::sleep(args.load.duration).await;
    let keepalive_usage = w.finish();
    shared.recording.store(false, Ordering::Relaxed);
    let rtt = shared.rtt.summary();

    let mut excuses: Vec<Excuse> = Vec::new();

    // Abrupt disconnects.
    let kill_idx = sample(n, args.kill, 0);
    let (kill, excuse) = kill_phase(args, &workers, &kill_idx, &watch, &shared, patience).await;
    excuses.push(excuse);

    // Silence.
    let silence_idx = sample(n, args.silence, (n / args.kill.max(1)).max(2) / 2);
    let (degraded, excuse) = silence_phase(args, &workers, &silence_idx, &watch, &shared, hb, patience).await;
    excuses.push(excuse);

    // Coordinator restart.
    let ends_before_restart = shared.unexpected_ends.load(Ordering::Relaxed);
    let mut ends_in_restart = 0;
    let restart = match child.as_mut() {
        Some(c) if !args.no_restart => {
            let r = restart_phase(c, &url, &workers, &watch, &shared, patience).await?;
            excuses.push(Excuse {
                from: r.1,
                to: r.2,
                ids: None,
            });
            ends_in_restart = shared.unexpected_ends.load(Ordering::Relaxed) - ends_before_restart;
            Some(r.0)
        }
        _ => None,
    };
    let pid = child.as_ref().and_then(|c| c.pid()).or(pid);

    // Settle, then count.
    let w = Window::start(pid);
    tokio::time::sleep(args.settle).await;
    let settle_usage = w.finish();
    let false_positives = watch.with(|s| false_positives(&s.log, &excuses));
    let unexpected = shared.unexpected_ends.load(Ordering::Relaxed) - ends_in_restart;

    for (cause, count) in shared.failure_causes().into_iter().take(5) {
        notes.push(format!("failed attempts: {count} x {cause}"));
    }
    stop.cancel();
    let log = child.as_ref().map(|c| c.log().display().to_string());
    if let Some(c) = child {
        c.stop().await;
    }
    let per_worker = |u: &procfs::WindowUsage| -> Option<f64> {
        let t = u.target?;
        let b = baseline?;
        Some((t.rss_kib as f64 - b.rss_kib as f64) / n as f64)
    };
    Ok(FleetReport {
        coordinator: url,
        coordinator_log: log,
        spawned: args.coordinator.is_none(),
        workers: n,
        keepalive_ms: args.load.keepalive.as_millis() as u64,
        heartbeat_timeout_ms: hb.as_millis() as u64,
        duration_s: args.load.duration.as_secs_f64(),
        ramp_rate: args.load.ramp_rate,
        sources: args.load.sources,
        fd_limit,
        connected,
        connect_all_s: connect_all.map(|d| d.as_secs_f64()),
        welcome: shared.welcome.summary(),
        failed_attempts: shared.failed_attempts.load(Ordering::Relaxed),
        baseline_rss_kib: baseline.map(|b| b.rss_kib),
        ramp: ramp_usage,
        idle_per_worker_kib: idle.as_ref().and_then(per_worker),
        idle,
        keepalive_per_worker_kib: per_worker(&keepalive_usage),
        keepalive: keepalive_usage,
        settle: settle_usage,
        rtt,
        kill,
        degraded,
        restart,
        false_positives,
        unexpected_session_ends: unexpected,
        watch_snapshots: watch.with(|s| s.snapshots),
        notes,
    })
}

/// Waits until every victim is back and reported healthy.
async fn revive(victims: &[Arc<SimWorker>], watch: &FleetWatch, shared: &SimShared, n: usize, patience: Duration) {
    for w in victims {
        w.set_mode(Mode::Run);
    }
    let ids: Vec<String> = victims.iter().filter_map(|w| w.id()).collect();
    let mut rx = shared.connected.subscribe();
    let _ = tokio::time::timeout(patience, rx.wait_for(|c| *c >= n)).await;
    watch
        .wait(patience, |s| {
            ids.iter().all(|id| s.fleet.get(id) == Some(&WorkerStatus::Healthy))
        })
        .await;
}

/// Applies `mode` to each victim in turn, spread over `spread`; returns
/// (worker id, when) for each.
async fn stagger(victims: &[Arc<SimWorker>], mode: Mode, spread: Duration) -> Vec<(String, Instant)> {
    let gap = spread / victims.len().max(1) as u32;
    let mut tick = tokio::time::interval(gap.max(Duration::from_micros(100)));
    let mut out = Vec::new();
    for w in victims {
        tick.tick().await;
        if let Some(id) = w.id() {
            out.push((id, Instant::now()));
        }
        w.set_mode(mode);
    }
    out
}

/// First report of `status` for each id, after the given instant.
fn first_reports(log: &[Observation], from: usize, status: WorkerStatus) -> std::collections::HashMap<String, Instant> {
    let mut m = std::collections::HashMap::new();
    for o in &log[from..] {
        if o.status == status {
            m.entry(o.worker_id.clone()).or_insert(o.at);
        }
    }
    m
}

async fn kill_phase(
    args: &FleetArgs,
    workers: &[Arc<SimWorker>],
    idx: &[usize],
    watch: &FleetWatch,
    shared: &SimShared,
    patience: Duration,
) -> (Detection, Excuse) {
    let victims: Vec<Arc<SimWorker>> = idx.iter().map(|&i| workers[i].clone()).collect();
    let from = Instant::now();
    let log_start = watch.with(|s| s.log.len());
    let killed = stagger(&victims, Mode::Dead, args.spread).await;
    let ids: HashSet<String> = killed.iter().map(|(id, _)| id.clone()).collect();
    let limit = patience.min(Duration::from_secs(30));
    watch
        .wait(limit, |s| {
            let seen = first_reports(&s.log, log_start, WorkerStatus::Disconnected);
            ids.iter().all(|id| seen.contains_key(id))
        })
        .await;
    let seen = watch.with(|s| first_reports(&s.log, log_start, WorkerStatus::Disconnected));
    let lat: Vec<Duration> = killed
        .iter()
        .filter_map(|(id, at)| seen.get(id).map(|t| t.saturating_duration_since(*at)))
        .collect();
    revive(&victims, watch, shared, workers.len(), patience).await;
    let detection = Detection {
        sample: killed.len(),
        detected: lat.len(),
        latency: summarize(&lat),
    };
    let excuse = Excuse {
        from,
        to: Instant::now(),
        ids: Some(ids),
    };
    (detection, excuse)
}

async fn silence_phase(
    args: &FleetArgs,
    workers: &[Arc<SimWorker>],
    idx: &[usize],
    watch: &FleetWatch,
    shared: &SimShared,
    hb: Duration,
    patience: Duration,
) -> (Degraded, Excuse) {
    let victims: Vec<Arc<SimWorker>> = idx.iter().map(|&i| workers[i].clone()).collect();
    let from = Instant::now();
    let log_start = watch.with(|s| s.log.len());
    let silenced = stagger(&victims, Mode::Silent, args.spread).await;
    let ids: HashSet<String> = silenced.iter().map(|(id, _)| id.clone()).collect();
    let limit = patience.min(hb * 2 + Duration::from_secs(10));
    watch
        .wait(limit, |s| {
            let seen = first_reports(&s.log, log_start, WorkerStatus::Degraded);
            ids.iter().all(|id| seen.contains_key(id))
        })
        .await;
    let seen = watch.with(|s| first_reports(&s.log, log_start, WorkerStatus::Degraded));
    let mut since_last = Vec::new();
    let mut lag = Vec::new();
    for w in &victims {
        let Some(t) = w.id().and_then(|id| seen.get(&id).copied()) else {
            continue;
        };
        let last = shared.epoch + Duration::from_micros(w.last_sent_us.load(Ordering::Relaxed));
        let d = t.saturating_duration_since(last);
        since_last.push(d);
        lag.push(d.saturating_sub(hb));
    }
    revive(&victims, watch, shared, workers.len(), patience).await;
    let degraded = Degraded {
        sample: silenced.len(),
        detected: since_last.len(),
        timeout_ms: hb.as_millis() as u64,
        since_last_keepalive: summarize(&since_last),
        lag_over_timeout: summarize(&lag),
    };
    let excuse = Excuse {
        from,
        to: Instant::now(),
        ids: Some(ids),
    };
    (degraded, excuse)
}

/// Returns the figures and the excused window (kill .. converged).
async fn restart_phase(
    child: &mut ChildServer,
    url: &str,
    workers: &[Arc<SimWorker>],
    watch: &FleetWatch,
    shared: &SimShared,
    patience: Duration,
) -> Result<(Restart, Instant, Instant), BenchError> {
    let n = workers.len();
    let before: HashSet<String> = workers.iter().filter_map(|w| w.id()).collect();
    let killed_at = Instant::now();
    child.kill().await?;
    let respawned_at = Instant::now();
    child.respawn()?;
    let u = url.to_string();
    let ready_after = child.wait_ready(Duration::from_secs(30), || health_ok(&u)).await?;
    let window = Window::start(child.pid());
    let converged = watch
        .wait(patience, |s| s.synced && s.healthy >= n && s.fleet.len() >= n)
        .await;
    let converged_at = Instant::now();
    let usage = window.finish();
    let (registered, extra, missing) = watch.with(|s| {
        let extra = s.fleet.keys().filter(|id| !before.contains(*id)).count();
        let missing = before.iter().filter(|id| !s.fleet.contains_key(*id)).count();
        (s.fleet.len(), extra, missing)
    });
    let id_changes: u64 = workers.iter().map(|w| w.id_changes.load(Ordering::Relaxed)).sum();
    let mut rx = shared.connected.subscribe();
    let _ = tokio::time::timeout(patience, rx.wait_for(|c| *c >= n)).await;
    let r = Restart {
        down_ms: respawned_at.duration_since(killed_at).as_secs_f64() * 1000.0,
        ready_s: ready_after.as_secs_f64(),
        reconverge_s: converged.then(|| converged_at.duration_since(respawned_at).as_secs_f64()),
        registered,
        ids_before: before.len(),
        new_ids: extra,
        missing,
        id_changes,
        usage,
    };
    Ok((r, killed_at, Instant::now()))
}

fn false_positives(log: &[Observation], excuses: &[Excuse]) -> FalsePositives {
    let mut workers = HashSet::new();
    let mut examples = Vec::new();
    let mut reports = 0;
    for o in log {
        let excused = excuses
            .iter()
            .any(|e| o.at >= e.from && o.at <= e.to && e.ids.as_ref().is_none_or(|ids| ids.contains(&o.worker_id)));
        if excused {
            continue;
        }
        reports += 1;
        workers.insert(o.worker_id.clone());
        if examples.len() < 5 {
            examples.push(format!("{} {}", o.worker_id, o.status.as_str_name()));
        }
    }
    FalsePositives {
        reports,
        workers: workers.len(),
        examples,
    }
}

/// Where a JSON report goes.
pub fn write_json(path: &PathBuf, json: &str) -> Result<(), BenchError> {
    if path.as_os_str() == "-" {
        println!("{json}");
        return Ok(());
    }
    std::fs::write(path, json).map_err(|source| BenchError::Output {
        path: path.display().to_string(),
        source,
    })
}
