//! Reconnect delays: exponential, capped, and jittered so that a thousand
//! workers that lost the coordinator together do not return in lockstep.

use rand::Rng;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max: max.max(min),
            attempt: 0,
        }
    }

    /// Forget past failures (after a session got its Welcome).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The ceiling for the current attempt: min * 2^attempt, capped.
    fn ceiling(&self) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(20));
        self.min.saturating_mul(factor).min(self.max)
    }

    /// The next delay: uniform in [ceiling/2, ceiling] ("equal jitter"),
    /// so delays still grow while no two workers share one.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        let spread = (ceiling - half).as_nanos() as u64;
        half + Duration::from_nanos(if spread == 0 {
            0
        } else {
            rand::rng().random_range(0..=spread)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_caps_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let d0 = b.next_delay();
        assert!(d0 >= Duration::from_millis(50) && d0 <= Duration::from_millis(100));
        let d1 = b.next_delay();
        assert!(d1 >= Duration::from_millis(100) && d1 <= Duration::from_millis(200));
        for _ in 0..40 {
            assert!(b.next_delay() <= Duration::from_secs(1));
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn delays_are_spread_not_lockstep() {
        let delays: std::collections::HashSet<Duration> = (0..100)
            .map(|_| {
                let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
                b.next_delay();
                b.next_delay();
                b.next_delay()
            })
            .collect();
        // 100 workers at their third attempt: nearly all distinct.
        assert!(delays.len() > 90, "only {} distinct delays", delays.len());
    }
}
