//! Admission of Connect streams that have not said Hello yet.
//!
//! A stream waiting for its Hello costs a task and a timer and proves
//! nothing about its peer, so such streams are bounded twice: in total, so
//! the coordinator's memory stays bounded, and per source address, so that
//! one peer opening streams it never uses (possible whenever no join token
//! is set) cannot take every slot and lock other workers out for each
//! handshake window. An IPv6 peer is counted by its /64, which one host can
//! hold entirely.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::warn;

/// Why a stream was not admitted; shown to the peer as RESOURCE_EXHAUSTED.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    #[error("too many workers are mid-handshake; retry with backoff")]
    Total,
    #[error("too many Connect streams from {0} are mid-handshake (at most {1} per address); send Hello on the open ones, or retry with backoff")]
    PerAddress(IpAddr, usize),
}

/// Streams waiting for their Hello, by source address (as [`key`] counts it).
type Counts = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// The two bounds, shared by every Connect call.
pub struct Handshakes {
    total: Arc<Semaphore>,
    per_address: Counts,
    max_per_address: usize,
    /// Streams refused by the per-address bound, to log a flood at doubling
    /// counts rather than once per stream.
    refused_per_address: AtomicU64,
}

/// Held while a stream waits for its Hello; gives both slots back on drop.
pub struct Permit {
    _total: OwnedSemaphorePermit,
    address: Option<(IpAddr, Counts)>,
}

fn lock(m: &Mutex<HashMap<IpAddr, usize>>) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
    // Counts stay consistent under a panic elsewhere: each update is one
    // statement. Keep admitting rather than poisoning every later Connect.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The key an address is counted under: IPv4 (also when mapped into IPv6)
/// as it is, IPv6 by its /64.
fn key(addr: IpAddr) -> IpAddr {
    match addr.to_canonical() {
        IpAddr::V6(v6) => {
            let mut s = v6.segments();
            s[4..].fill(0);
            IpAddr::V6(s.into())
        }
        v4 => v4,
    }
}

impl Handshakes {
    pub fn new(max_total: usize, max_per_address: usize) -> Self {
        Handshakes {
            total: Arc::new(Semaphore::new(max_total)),
            per_address: Default::default(),
            max_per_address,
            refused_per_address: AtomicU64::new(0),
        }
    }

    /// Admits a stream from `peer` (unknown: only the total bound applies),
    /// or says which bound it hit. Never waits.
    pub fn admit(&self, peer: Option<IpAddr>) -> Result<Permit, Refused> {
        let address = match peer.map(key) {
            Some(addr) => {
                let mut counts = lock(&self.per_address);
                let n = counts.entry(addr).or_insert(0);
                if *n >= self.max_per_address {
                    drop(counts);
                    let refused = self.refused_per_address.fetch_add(1, Ordering::Relaxed) + 1;
                    if refused.is_power_of_two() {
                        warn!(peer = %addr, max = self.max_per_address, refused, "refusing Connect streams: too many from one address are mid-handshake");
                    }
                    return Err(Refused::PerAddress(addr, self.max_per_address));
                }
                *n += 1;
                Some((addr, self.per_address.clone()))
            }
            None => None,
        };
        match self.total.clone().try_acquire_owned() {
            Ok(total) => Ok(Permit { _total: total, address }),
            Err(_) => {
                release(address);
                Err(Refused::Total)
            }
        }
    }

    /// Streams from `peer` waiting for their Hello now.
    #[cfg(test)]
    fn pending_from(&self, peer: IpAddr) -> usize {
        lock(&self.per_address).get(&key(peer)).copied().unwrap_or(0)
    }
}

fn release(address: Option<(IpAddr, Counts)>) {
    let Some((addr, counts)) = address else { return };
    let mut counts = lock(&counts);
    if let Some(n) = counts.get_mut(&addr) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            // Gone with its last stream: the map holds only live addresses.
            counts.remove(&addr);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        release(self.address.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn each_address_has_its_own_bound_within_the_total() {
        let h = Handshakes::new(3, 2);
        let a1 = h.admit(ip("10.0.0.1")).unwrap();
        let _a2 = h.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(
            h.admit(ip("10.0.0.1")).err(),
            Some(Refused::PerAddress("10.0.0.1".parse().unwrap(), 2))
        );
        // The same address mapped into IPv6 is the same peer.
        assert!(h.admit(ip("::ffff:10.0.0.1")).is_err());
        let _b = h.admit(ip("10.0.0.2")).unwrap();
        // The total is full: refused, and the refused stream holds nothing.
        assert_eq!(h.admit(ip("10.0.0.3")).err(), Some(Refused::Total));
        assert_eq!(h.pending_from("10.0.0.3".parse().unwrap()), 0);
        drop(a1);
        assert_eq!(h.pending_from("10.0.0.1".parse().unwrap()), 1);
        assert!(h.admit(ip("10.0.0.1")).is_ok());
    }

    #[test]
    fn an_ipv6_host_is_counted_by_its_64() {
        let h = Handshakes::new(10, 1);
        let _a = h.admit(ip("2001:db8:1:2::1")).unwrap();
        assert!(h.admit(ip("2001:db8:1:2:ffff::9")).is_err());
        assert!(h.admit(ip("2001:db8:1:3::1")).is_ok());
    }

    #[test]
    fn an_unknown_peer_meets_only_the_total() {
        let h = Handshakes::new(2, 1);
        let _a = h.admit(None).unwrap();
        let _b = h.admit(None).unwrap();
        assert_eq!(h.admit(None).err(), Some(Refused::Total));
    }
}
