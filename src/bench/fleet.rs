//! `edgeplane bench fleet`: the run, phase by phase.
//!
//! 1. start the coordinator, or check within seconds that the one given
//!    answers; open a `WatchWorkers` stream;
//! 2. ramp the simulated fleet up at a bounded rate: time to connect all;
//! 3. idle window (keepalives paused) and keepalive window: CPU, memory,
//!    round trips;
//! 4. kill a sample abruptly: time until reported `disconnected`; bring
//!    them back;
//! 5. silence a sample: time until reported `degraded`, against the
//!    heartbeat timeout (the coordinator's, from its Welcome; skipped when
//!    it exceeds `--patience`); let them speak again;
//! 6. SIGKILL the coordinator, start it again on the same port: time until
//!    every worker is registered again, under the id it had;
//! 7. settle, and count false positives over the whole run.
//!
//! Each phase prints a line to stderr as it starts ([`progress`]), so a
//! long run never looks hung.

use super::args::FleetArgs;
use super::child::{free_port, ChildServer};
use super::connector::{resolve, source_address};
use super::error::BenchError;
use super::histogram::Summary;
use super::phases::{false_positives, kill_phase, restart_phase, silence_phase, Excuse};
use super::pki::{Pki, WorkerCert};
use super::procfs::{self, Window};
use super::ramp::Ramp;
use super::reach::{health_ok_with, reach};
use super::report::{progress, Degraded, FleetReport};
use super::sim_worker::{self, SimShared, SimWorker};
use super::watch::FleetWatch;
use crate::duration::format_short;
use crate::parse::normalize_url;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;

/// Bound on the first WatchWorkers snapshot from a coordinator that has
/// already answered its health check.
const WATCH_SYNC_LIMIT: Duration = Duration::from_secs(30);

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

/// `extra`: flags of the bench's own (the TLS ones of `--tls`), before the
/// caller's `--coordinator-arg`s.
fn spawn_coordinator(args: &FleetArgs, port: u16, extra: Vec<String>) -> Result<ChildServer, BenchError> {
    let bin = args.child.bin()?;
    let log = args.child.log_or(&format!("edgeplane-bench-coordinator-{port}.log"));
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
    a.extend(extra);
    a.extend(args.child.coordinator_args.iter().cloned());
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
    let pki = if args.tls { Some(Arc::new(Pki::make()?)) } else { None };
    // The bench's own calls (health, the watch) trust the run's CA.
    let client_tls = pki.as_ref().map(|p| p.client());

    let (url, mut child) = match &args.coordinator {
        Some(u) => {
            let url = normalize_url(u);
            progress(format_args!("reaching the coordinator at {url}"));
            reach(&url).await.map_err(|reason| BenchError::Unreachable {
                url: url.clone(),
                reason,
            })?;
            (url, None)
        }
        None => {
            let port = free_port()?;
            let scheme = if pki.is_some() { "https" } else { "http" };
            let url = format!("{scheme}://127.0.0.1:{port}");
            let tls_args = pki.as_ref().map(|p| p.coordinator_args()).unwrap_or_default();
            progress(format_args!(
                "starting a coordinator at {url}{}",
                if pki.is_some() {
                    " (mutual TLS: --require-client-cert)"
                } else {
                    ""
                }
            ));
            let mut c = spawn_coordinator(args, port, tls_args)?;
            let u = url.clone();
            let tls = client_tls.as_ref();
            c.wait_ready(Duration::from_secs(30), || health_ok_with(&u, tls))
                .await?;
            (url, Some(c))
        }
    };
    let pid = child.as_ref().and_then(|c| c.pid()).or(args.coordinator_pid);
    let baseline = pid.map(procfs::sample).transpose()?;
    let target = resolve(&url).await.map_err(|reason| BenchError::Url {
        url: url.clone(),
        reason,
    })?;

    let watch = FleetWatch::start_with(url.clone(), client_tls.clone(), stop.clone());
    let sync_limit = patience.min(WATCH_SYNC_LIMIT);
    if !watch.wait(sync_limit, |s| s.synced).await {
        return Err(BenchError::Watch(format!(
            "no WatchWorkers snapshot from {url} within {}",
            format_short(sync_limit)
        )));
    }

    let endpoint = sim_worker::endpoint(&url)?;
    let (certs, certificates_s) = match &pki {
        Some(p) => {
            progress(format_args!(
                "issuing {n} client certificates (a key pair, a CSR and a signature each)"
            ));
            let t = Instant::now();
            let certs = issue_all(p.clone(), n, endpoint.clone()).await?;
            progress(format_args!("issued in {:.2} s", t.elapsed().as_secs_f64()));
            (certs, Some(t.elapsed().as_secs_f64()))
        }
        None => (Vec::new(), None),
    };
    let mut certs = certs.into_iter();
    let run_tag = format!("bench-{}-{}", std::process::id(), rand::random::<u32>());
    let shared = Arc::new(SimShared::new(
        vec![target],
        endpoint,
        args.load.keepalive,
        (args.reconnect_min, args.reconnect_max),
        stop.clone(),
        run_tag.clone(),
    ));
    let workers: Vec<Arc<SimWorker>> = (0..n)
        .map(|i| {
            let w = SimWorker::new(i, &run_tag, source_address(i, args.load.sources));
            Arc::new(match certs.next() {
                Some(c) => w.with_certificate(c),
                None => w,
            })
        })
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
    progress(format_args!(
        "ramp: {n} workers at {}/s, waiting up to {} for all",
        args.load.ramp_rate,
        format_short(patience)
    ));
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
    match connect_all {
        Some(t) => progress(format_args!("ramp: {n} connected in {:.2} s", t.as_secs_f64())),
        None => progress(format_args!("ramp: only {connected} of {n} connected")),
    }
    // The heartbeat timeout that applies is the coordinator's, as its
    // Welcome says (an external one's is not --heartbeat-timeout).
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
        progress(format_args!(
            "idle window: {} with keepalives paused",
            format_short(args.load.idle)
        ));
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
            let why = format!(
                "idle window skipped: it would not fit in the heartbeat timeout ({})",
                format_short(hb)
            );
            progress(format_args!("{why}"));
            notes.push(why);
        }
        None
    };

    // Keepalives flowing.
    progress(format_args!("keepalive window: {}", format_short(args.load.duration)));
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
    progress(format_args!(
        "kill: {} workers, until reported disconnected",
        kill_idx.len()
    ));
    let (kill, excuse) = kill_phase(args, &workers, &kill_idx, &watch, &shared, patience).await;
    progress(format_args!("kill: {} of {} detected", kill.detected, kill.sample));
    excuses.push(excuse);

    // Silence. Degraded comes only after the heartbeat timeout: one longer
    // than the patience would be waited out in vain.
    let degraded = if hb > patience {
        let why = format!(
            "silence phase skipped: the coordinator's heartbeat timeout ({}, from its Welcome) exceeds --patience ({})",
            format_short(hb),
            format_short(patience)
        );
        progress(format_args!("{why}"));
        notes.push(why.clone());
        Degraded {
            sample: 0,
            detected: 0,
            timeout_ms: hb.as_millis() as u64,
            since_last_keepalive: Summary::default(),
            lag_over_timeout: Summary::default(),
            skipped: Some(why),
        }
    } else {
        let silence_idx = sample(n, args.silence, (n / args.kill.max(1)).max(2) / 2);
        progress(format_args!(
            "silence: {} workers, until reported degraded (heartbeat timeout {})",
            silence_idx.len(),
            format_short(hb)
        ));
        let (degraded, excuse) = silence_phase(args, &workers, &silence_idx, &watch, &shared, hb, patience).await;
        progress(format_args!(
            "silence: {} of {} detected",
            degraded.detected, degraded.sample
        ));
        excuses.push(excuse);
        degraded
    };

    // Coordinator restart.
    let ends_before_restart = shared.unexpected_ends.load(Ordering::Relaxed);
    let mut ends_in_restart = 0;
    let restart = match child.as_mut() {
        Some(c) if !args.no_restart => {
            progress(format_args!(
                "restart: SIGKILL the coordinator, start it again, until all {n} are back"
            ));
            let r = restart_phase(c, &url, client_tls.as_ref(), &workers, &watch, &shared, patience).await?;
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
    progress(format_args!("settle: {}", format_short(args.settle)));
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
        tls: args.tls,
        certificates_s,
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

/// `n` worker certificates (`bench-0` ..), off the runtime's threads: the
/// watch and the child's health checks go on meanwhile.
async fn issue_all(pki: Arc<Pki>, n: usize, base: Endpoint) -> Result<Vec<WorkerCert>, BenchError> {
    tokio::task::spawn_blocking(move || {
        (0..n)
            .map(|i| pki.issue(&format!("bench-{i}"), &base))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| BenchError::Settings(format!("issuing certificates: {e}")))?
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
