//! The churn `bench soak` puts a fleet through, each kind its own task: a
//! flapper flips one service between `loading` and `ready`, the churner drops
//! random workers' connections abruptly and brings them back later (resuming
//! their ids), and the newcomers task starts workers under new names that
//! leave abruptly after a while. Each counts what it did, so the soak can
//! report how much churn the coordinator actually saw.
//!
//! Every task ends when the stage's stop token fires; each holds the stage
//! (to launch workers) only as long as it needs it.

use super::sim_worker::{Mode, SimWorker};
use super::stage::Stage;
use crate::proto::ServiceState;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What the churn did over a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Churn {
    pub disconnects: u64,
    pub newcomers_joined: u64,
    pub newcomers_left: u64,
    pub flips: u64,
    /// Welcomes that gave a returning worker another id than it had.
    pub id_changes: u64,
}

/// The live counts behind [`Churn`], shared by the churn tasks.
#[derive(Default)]
pub struct ChurnCounters {
    disconnects: AtomicU64,
    joined: AtomicU64,
    left: AtomicU64,
    flips: AtomicU64,
}

impl ChurnCounters {
    /// The counts so far (`id_changes` is the workers' own count, left 0).
    pub fn figures(&self) -> Churn {
        Churn {
            disconnects: self.disconnects.load(Ordering::Relaxed),
            newcomers_joined: self.joined.load(Ordering::Relaxed),
            newcomers_left: self.left.load(Ordering::Relaxed),
            flips: self.flips.load(Ordering::Relaxed),
            id_changes: 0,
        }
    }
}

/// A random pause in `0..limit`.
pub fn jitter(limit: Duration) -> Duration {
    Duration::from_micros(rand::random_range(0..limit.as_micros().max(1) as u64))
}

/// Flips `service` on `w` between `loading` and `ready` every `every`,
/// starting at a random point in the first two periods so that a fleet of
/// flappers does not flip in step.
pub async fn flapper(
    w: Arc<SimWorker>,
    service: &'static str,
    every: Duration,
    c: Arc<ChurnCounters>,
    stage: Arc<Stage>,
) {
    let stop = stage.stop.clone();
    drop(stage);
    tokio::select! {
        _ = tokio::time::sleep(jitter(every * 2)) => {}
        _ = stop.cancelled() => return,
    }
    let mut ready = true;
    loop {
        ready = !ready;
        w.set_readiness(
            service,
            if ready {
                ServiceState::Ready
            } else {
                ServiceState::Loading
            },
        );
        c.flips.fetch_add(1, Ordering::Relaxed);
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// `pace`: drops a minute, and how long a dropped worker stays away. A
/// worker already away is not picked again until it is back.
pub async fn churner(
    churners: Arc<Vec<Arc<SimWorker>>>,
    pace: (f64, Duration),
    c: Arc<ChurnCounters>,
    stage: Arc<Stage>,
) {
    let (per_min, away) = pace;
    let stop = stage.stop.clone();
    drop(stage);
    let down: Arc<Vec<AtomicBool>> = Arc::new((0..churners.len()).map(|_| AtomicBool::new(false)).collect());
    let gap = Duration::from_secs_f64(60.0 / per_min);
    let mut tick = tokio::time::interval(gap);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let i = rand::random_range(0..churners.len());
        if down[i].swap(true, Ordering::Relaxed) {
            continue;
        }
        let (w, down, stop) = (churners[i].clone(), down.clone(), stop.clone());
        c.disconnects.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            w.set_mode(Mode::Dead);
            tokio::select! {
                _ = tokio::time::sleep(away) => {}
                _ = stop.cancelled() => return,
            }
            w.set_mode(Mode::Run);
            down[i].store(false, Ordering::Relaxed);
        });
    }
}

/// How the newcomers task starts workers.
pub struct Newcomers {
    pub per_min: f64,
    /// A newcomer leaves after a random time in `0..2 * life`.
    pub life: Duration,
    /// The first newcomer's index (its name), after the fleet's own.
    pub first_index: usize,
    pub sources: usize,
    /// The service every newcomer declares.
    pub service: &'static str,
}

pub async fn newcomers(n: Newcomers, c: Arc<ChurnCounters>, stage: Arc<Stage>) {
    let stop = stage.stop.clone();
    let gap = Duration::from_secs_f64(60.0 / n.per_min);
    let mut tick = tokio::time::interval(gap);
    tick.tick().await;
    let mut index = n.first_index;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let w = stage.worker(index, n.sources, &[n.service]);
        index += 1;
        stage.launch(&w);
        c.joined.fetch_add(1, Ordering::Relaxed);
        let (c, stop, life) = (c.clone(), stop.clone(), jitter(n.life * 2));
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(life) => {}
                _ = stop.cancelled() => return,
            }
            w.set_mode(Mode::Leave);
            c.left.fetch_add(1, Ordering::Relaxed);
        });
    }
}
