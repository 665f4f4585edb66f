//! A connection flood for `bench overload`: many TCP connections opened to
//! the coordinator's port and held, each sending a byte of garbage now and
//! then (a slow, hostile client that never completes a request). A
//! connection the coordinator closes is opened again, so the flood keeps
//! its size for as long as it runs.

use serde::Serialize;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio_util::sync::CancellationToken;

/// Gap between two garbage bytes on one connection.
const DRIP: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub struct FloodStats {
    /// Connections established so far.
    pub opened: AtomicU64,
    /// Connections open now.
    pub held: AtomicU64,
    /// Connections the coordinator closed (or reset).
    pub closed: AtomicU64,
    /// Connect attempts that failed.
    pub refused: AtomicU64,
    /// Garbage bytes written.
    pub bytes: AtomicU64,
}

/// What the flood did, for a report.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct FloodFigures {
    pub connections: usize,
    pub opened: u64,
    pub held_at_end: u64,
    pub closed_by_coordinator: u64,
    pub failed_connects: u64,
    pub garbage_bytes: u64,
}

impl FloodStats {
    pub fn figures(&self, connections: usize) -> FloodFigures {
        FloodFigures {
            connections,
            opened: self.opened.load(Ordering::Relaxed),
            held_at_end: self.held.load(Ordering::Relaxed),
            closed_by_coordinator: self.closed.load(Ordering::Relaxed),
            failed_connects: self.refused.load(Ordering::Relaxed),
            garbage_bytes: self.bytes.load(Ordering::Relaxed),
        }
    }
}

/// The `i`-th flood source: 127.0.3.1 upwards over `count` addresses, apart
/// from the simulated workers' (127.0.0.2 ..).
pub fn flood_source(i: usize, count: usize) -> IpAddr {
    let n = (i % count.max(1)) as u32 + 1;
    IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 3, 0)) + n))
}

/// Starts `n` flood connections to `target`, until `stop`.
pub fn start(target: SocketAddr, n: usize, sources: usize, stop: CancellationToken) -> Arc<FloodStats> {
    let stats = Arc::new(FloodStats::default());
    for i in 0..n {
        tokio::spawn(one(target, flood_source(i, sources), stats.clone(), stop.clone()));
    }
    stats
}

async fn one(target: SocketAddr, source: IpAddr, stats: Arc<FloodStats>, stop: CancellationToken) {
    // Spread the opens and the drips over a second.
    let phase = Duration::from_micros(rand::random_range(0..1_000_000));
    tokio::select! {
        _ = tokio::time::sleep(phase) => {}
        _ = stop.cancelled() => return,
    }
    while !stop.is_cancelled() {
        let dial = async {
            let s = TcpSocket::new_v4()?;
            s.bind(SocketAddr::new(source, 0))?;
            s.connect(target).await
        };
        let stream = tokio::select! {
            s = dial => s,
            _ = stop.cancelled() => return,
        };
        let Ok(stream) = stream else {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = stop.cancelled() => return,
            }
            continue;
        };
        stats.opened.fetch_add(1, Ordering::Relaxed);
        stats.held.fetch_add(1, Ordering::Relaxed);
        let (mut rd, mut wr) = stream.into_split();
        let mut buf = [0u8; 512];
        let mut drip = tokio::time::interval(DRIP);
        let closed = loop {
            tokio::select! {
                _ = stop.cancelled() => break false,
                r = rd.read(&mut buf) => match r {
                    Ok(0) | Err(_) => break true,
                    Ok(_) => {} // an error page, say: keep holding
                },
                _ = drip.tick() => {
                    if wr.write_all(b"\x07").await.is_err() {
                        break true;
                    }
                    stats.bytes.fetch_add(1, Ordering::Relaxed);
                }
            }
        };
        stats.held.fetch_sub(1, Ordering::Relaxed);
        if !closed {
            return;
        }
        stats.closed.fetch_add(1, Ordering::Relaxed);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_apart_from_the_workers() {
        assert_eq!(flood_source(0, 40).to_string(), "127.0.3.1");
        assert_eq!(flood_source(41, 40).to_string(), "127.0.3.2");
    }
}
