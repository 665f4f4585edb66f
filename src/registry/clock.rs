//! The registry's clock: tokio time (so tests can pause it) as milliseconds
//! since the registry started, plus the wall-clock anchor that turns those
//! into RFC 3339 timestamps for operators.
//!
//! The clock leaves out time the coordinator itself could not run (a
//! `SIGSTOP`, a VM paused, a host swapping hard): the health clock credits
//! such a stall with [`Clock::credit_stall`], so that silence the
//! coordinator caused by not reading its sockets is never blamed on the
//! workers. Without it, every worker would be degraded (and, past the worker
//! timeout, removed) in the first sweep after the pause, before the
//! keepalives they sent meanwhile had been read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

#[derive(Debug)]
pub struct Clock {
    start: Instant,
    wall: SystemTime,
    /// Milliseconds of stalls credited so far.
    stalled_ms: AtomicU64,
}

impl Clock {
    pub fn new() -> Self {
        Clock {
            start: Instant::now(),
            wall: SystemTime::now(),
            stalled_ms: AtomicU64::new(0),
        }
    }

    /// Milliseconds the registry has been running, stalls left out. Fits
    /// an `AtomicU64`, which is how every session stamps "last heard"
    /// without taking a lock. A reading taken just before a stall is
    /// credited may be later than one taken just after: every use takes
    /// differences with `saturating_sub`.
    pub fn now_ms(&self) -> u64 {
        (self.start.elapsed().as_millis() as u64).saturating_sub(self.stalled_ms.load(Ordering::Relaxed))
    }

    /// The wall-clock time of a reading taken with [`Clock::now_ms`]
    /// (exact for readings since the last stall, early by the stall for
    /// older ones).
    pub fn wall_at(&self, ms: u64) -> SystemTime {
        self.wall + Duration::from_millis(ms + self.stalled_ms.load(Ordering::Relaxed))
    }

    /// Leaves `stall` out of the clock from now on: time in which this
    /// process ran nothing, so heard nothing.
    pub fn credit_stall(&self, stall: Duration) {
        self.stalled_ms.fetch_add(stall.as_millis() as u64, Ordering::Relaxed);
    }

    /// Total stall time credited.
    pub fn stalled(&self) -> Duration {
        Duration::from_millis(self.stalled_ms.load(Ordering::Relaxed))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether a gap of `gap` between two health-clock ticks `every` apart
/// means the process stalled, and by how much: more than [`STALL_SLACK`]
/// late is a stall (tick jitter under load is milliseconds; a second in
/// which not even a timer ran is not load a worker caused).
pub fn stall_in(gap: Duration, every: Duration) -> Option<Duration> {
    (gap > every + STALL_SLACK).then(|| gap - every)
}

/// How late a health-clock tick may be before the lateness counts as a stall.
pub const STALL_SLACK: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_credited_stall_is_left_out_of_the_clock() {
        let c = Clock::new();
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(c.now_ms(), 10_000);
        c.credit_stall(Duration::from_secs(7));
        assert_eq!(c.now_ms(), 3_000);
        assert_eq!(c.stalled(), Duration::from_secs(7));
        // The wall time of a reading is still the real one.
        let real = c.wall + Duration::from_secs(10);
        assert_eq!(c.wall_at(c.now_ms()), real);
    }

    #[test]
    fn only_a_tick_a_second_late_is_a_stall() {
        let every = Duration::from_millis(100);
        assert_eq!(stall_in(Duration::from_millis(150), every), None);
        assert_eq!(stall_in(Duration::from_millis(1100), every), None);
        assert_eq!(
            stall_in(Duration::from_millis(5100), every),
            Some(Duration::from_secs(5))
        );
    }
}
