//! Bringing a fleet up at a bounded rate. Ten thousand clients dialing in
//! the same millisecond would measure the accept queue, not the steady
//! state; a real fleet also arrives spread out. Two bounds: starts per
//! second, and connects in flight (kept below the coordinator's
//! `--max-pending-handshakes`, so the ramp itself causes no refusals).

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy)]
pub struct Ramp {
    /// Starts per second.
    pub rate: f64,
    /// Connects in flight at most.
    pub in_flight: usize,
}

impl Ramp {
    /// How long starting `n` clients may take: the ramp itself plus `patience`.
    pub fn bound(&self, n: usize, patience: Duration) -> Duration {
        Duration::from_secs_f64(n as f64 / self.rate) + patience
    }

    /// Calls `start(i, permit)` for `i` in `0..n`; the callee drops the
    /// permit once its connect has finished (either way). Returns early if
    /// `stop` fires.
    pub async fn run<F>(&self, n: usize, stop: &CancellationToken, mut start: F)
    where
        F: FnMut(usize, OwnedSemaphorePermit),
    {
        let slots = Arc::new(Semaphore::new(self.in_flight.max(1)));
        let begin = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        let mut started = 0usize;
        while started < n {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            let allowed = ((begin.elapsed().as_secs_f64() * self.rate).floor() as usize).clamp(1, n);
            while started < allowed {
                let permit = tokio::select! {
                    p = slots.clone().acquire_owned() => p.expect("semaphore is never closed"),
                    _ = stop.cancelled() => return,
                };
                start(started, permit);
                started += 1;
            }
        }
    }
}
