//! The registry's clock: tokio time (so tests can pause it) as milliseconds
//! since the registry started, plus the wall-clock anchor that turns those
//! into RFC 3339 timestamps for operators.

use std::time::{Duration, SystemTime};
use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
    wall: SystemTime,
}

impl Clock {
    pub fn new() -> Self {
        Clock {
            start: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// Milliseconds since the registry started. Fits an `AtomicU64`, which
    /// is how every session stamps "last heard" without taking a lock.
    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// The wall-clock time of a reading taken with [`Clock::now_ms`].
    pub fn wall_at(&self, ms: u64) -> SystemTime {
        self.wall + Duration::from_millis(ms)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}
