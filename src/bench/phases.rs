//! The phases of `edgeplane bench fleet` that disturb the fleet on purpose
//! (kill, silence, coordinator restart), and the false-positive count that
//! excuses what they caused. [`super::fleet`] runs them in order.

use super::args::FleetArgs;
use super::child::ChildServer;
use super::error::BenchError;
use super::histogram::summarize;
use super::procfs::Window;
use super::reach::health_ok_with;
use super::report::{Degraded, Detection, FalsePositives, Restart};
use super::sim_worker::{Mode, SimShared, SimWorker};
use super::watch::{FleetWatch, Observation};
use crate::proto::WorkerStatus;
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A phase in which some workers are expected to be reported unhealthy.
pub(super) struct Excuse {
    pub from: Instant,
    pub to: Instant,
    /// None: every worker (the coordinator restart).
    pub ids: Option<HashSet<String>>,
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

pub(super) async fn kill_phase(
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

pub(super) async fn silence_phase(
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
        skipped: None,
    };
    let excuse = Excuse {
        from,
        to: Instant::now(),
        ids: Some(ids),
    };
    (degraded, excuse)
}

/// Returns the figures and the excused window (kill .. converged).
pub(super) async fn restart_phase(
    child: &mut ChildServer,
    url: &str,
    tls: Option<&tonic::transport::ClientTlsConfig>,
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
    let ready_after = child
        .wait_ready(Duration::from_secs(30), || health_ok_with(&u, tls))
        .await?;
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

pub(super) fn false_positives(log: &[Observation], excuses: &[Excuse]) -> FalsePositives {
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
