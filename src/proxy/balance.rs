//! Choosing a replica: power of two choices on outstanding requests, with
//! passive ejection of replicas that just refused a connection.
//!
//! Two random candidates, the less busy one wins: close to least-loaded
//! without a global scan, and without the herd that "always the least
//! loaded" causes when many requests pick at once.

use crate::routes::{Endpoint, EndpointLoad};
use rand::Rng;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Picks a replica not in `tried`. Ejected replicas are used only when
/// nothing else is left.
pub fn pick(ready: &[Arc<Endpoint>], tried: &[Arc<Endpoint>], now_ms: u64) -> Option<Arc<Endpoint>> {
    // One replica, first attempt (the common case): it is the answer
    // whether or not it is ejected, so skip the bookkeeping.
    if let ([only], []) = (ready, tried) {
        return Some(only.clone());
    }
    let fresh = |e: &&Arc<Endpoint>| !tried.iter().any(|t| Arc::ptr_eq(t, e));
    let live: Vec<&Arc<Endpoint>> = ready
        .iter()
        .filter(fresh)
        .filter(|e| e.load.ejected_until_ms.load(Ordering::Relaxed) <= now_ms)
        .collect();
    let pool = if live.is_empty() {
        ready.iter().filter(fresh).collect()
    } else {
        live
    };
    match pool.len() {
        0 => None,
        1 => Some(pool[0].clone()),
        n => {
            let mut rng = rand::rng();
            let a = rng.random_range(0..n);
            let mut b = rng.random_range(0..n - 1);
            if b >= a {
                b += 1;
            }
            let (la, lb) = (outstanding(pool[a]), outstanding(pool[b]));
            Some(if lb < la { pool[b].clone() } else { pool[a].clone() })
        }
    }
}

fn outstanding(e: &Endpoint) -> usize {
    e.load.outstanding.load(Ordering::Relaxed)
}

/// Counts a request as outstanding on a replica until dropped (which is
/// when the response body has been sent on, or the attempt failed).
pub struct InFlight(Arc<EndpointLoad>);

impl InFlight {
    pub fn start(e: &Endpoint) -> Self {
        e.load.outstanding.fetch_add(1, Ordering::Relaxed);
        InFlight(e.load.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(name: &str) -> Arc<Endpoint> {
        let (origin, prefix) = Endpoint::parse_url("http://127.0.0.1:1").unwrap();
        Arc::new(Endpoint {
            worker_id: name.into(),
            worker_name: name.into(),
            origin,
            prefix,
            via: crate::routes::Via::Direct,
            load: Default::default(),
        })
    }

    #[test]
    fn prefers_the_less_busy_of_two() {
        let (a, b) = (ep("a"), ep("b"));
        let _busy: Vec<InFlight> = (0..5).map(|_| InFlight::start(&a)).collect();
        for _ in 0..50 {
            assert_eq!(pick(&[a.clone(), b.clone()], &[], 0).unwrap().worker_id, "b");
        }
    }

    #[test]
    fn skips_tried_and_ejected_replicas() {
        let (a, b, c) = (ep("a"), ep("b"), ep("c"));
        let all = [a.clone(), b.clone(), c.clone()];
        b.load.ejected_until_ms.store(1_000, Ordering::Relaxed);
        for _ in 0..50 {
            assert_eq!(pick(&all, std::slice::from_ref(&a), 10).unwrap().worker_id, "c");
        }
        // Only an ejected one left: better than nothing.
        assert_eq!(pick(&all, &[a.clone(), c.clone()], 10).unwrap().worker_id, "b");
        assert!(pick(&all, &all, 10).is_none());
    }

    #[test]
    fn in_flight_counts_until_dropped() {
        let a = ep("a");
        let g = InFlight::start(&a);
        assert_eq!(outstanding(&a), 1);
        drop(g);
        assert_eq!(outstanding(&a), 0);
    }
}
