//! The agent's `--metrics-listen`: its own series, derived from what it
//! already publishes (its status and its services' board), so the session
//! and probe code count nothing themselves.
//!
//! - a session that went from connected to not, or a failed attempt (a new
//!   `last_error`), is a reconnect, by cause;
//! - each acked keepalive's round trip goes into the histogram;
//! - each service's state, and how long it has been loading, are read from
//!   the board at scrape time;
//! - restarts are counted by the process runtime (Docker restarts its
//!   containers by its own policy, and counts them itself).

use super::{AgentStatus, ServiceReport};
use crate::metrics::agent::cause;
use crate::metrics::{AgentMetrics, Gauges};
use crate::proto::ServiceState;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

type Board = watch::Receiver<BTreeMap<String, ServiceReport>>;

fn state_label(s: ServiceState) -> &'static str {
    crate::registry::service_state_str(s)
}

/// Why a failed attempt failed, from the reason the session gave.
fn cause_of(welcomed_before: bool, reason: &str) -> &'static str {
    if welcomed_before {
        cause::SESSION_LOST
    } else if reason.contains("coordinator refused")
        || reason.contains("Unauthenticated")
        || reason.contains("PermissionDenied")
        || reason.contains("was revoked")
    {
        cause::REFUSED
    } else {
        cause::UNREACHABLE
    }
}

/// What the agent's metrics are read from.
pub struct Sources {
    pub status: watch::Receiver<AgentStatus>,
    pub board: Board,
    /// Counted by the process runtime.
    pub restarts: crate::metrics::agent::Restarts,
}

/// Serves the agent's metrics on `at` until `shutdown`.
pub async fn serve(at: SocketAddr, sources: Sources, shutdown: CancellationToken) {
    let Sources {
        status,
        board,
        restarts,
    } = sources;
    let since: Arc<Mutex<BTreeMap<String, Instant>>> = Arc::default();
    let mut gauges = Gauges::default();
    let b = board.clone();
    gauges.add(
        "service_state",
        "1 for each service's current readiness state on this worker",
        move || {
            b.borrow()
                .iter()
                .map(|(name, r)| {
                    let labels = vec![("service", name.clone()), ("state", state_label(r.state).to_string())];
                    (labels, 1)
                })
                .collect()
        },
    );
    let s = since.clone();
    gauges.add(
        "service_loading_seconds",
        "How long each service has been loading (0 once it is not)",
        move || {
            let s = s.lock().unwrap_or_else(|e| e.into_inner());
            s.iter()
                .map(|(name, at)| (vec![("service", name.clone())], at.elapsed().as_secs() as i64))
                .collect()
        },
    );
    let metrics = Arc::new(AgentMetrics::new(gauges, restarts));
    let listener = match tokio::net::TcpListener::bind(at).await {
        Ok(l) => l,
        Err(e) => {
            warn!(%at, error = %e, "cannot serve --metrics-listen");
            return;
        }
    };
    info!(listen = %at, "serving the agent's /metrics");
    tokio::spawn(follow_status(status, metrics.clone(), shutdown.clone()));
    tokio::spawn(follow_board(board, since, shutdown.clone()));
    crate::metrics::serve::apart(listener, Arc::new(move || metrics.encode()), shutdown).await;
}

async fn follow_status(mut status: watch::Receiver<AgentStatus>, m: Arc<AgentMetrics>, shutdown: CancellationToken) {
    let mut last = status.borrow_and_update().clone();
    loop {
        tokio::select! {
            changed = status.changed() => if changed.is_err() { return },
            () = shutdown.cancelled() => return,
        }
        let now = status.borrow_and_update().clone();
        if now.keepalives_acked > last.keepalives_acked {
            if let Some(rtt) = now.last_rtt {
                m.keepalive_rtt(rtt);
            }
        }
        if now.last_error.is_some() && now.last_error != last.last_error || (last.connected && !now.connected) {
            m.reconnect(cause_of(last.connected, now.last_error.as_deref().unwrap_or("")));
        }
        last = now;
    }
}

async fn follow_board(mut board: Board, since: Arc<Mutex<BTreeMap<String, Instant>>>, shutdown: CancellationToken) {
    loop {
        {
            let b = board.borrow_and_update();
            let mut s = since.lock().unwrap_or_else(|e| e.into_inner());
            s.retain(|name, _| b.get(name).is_some_and(|r| r.state == ServiceState::Loading));
            for (name, r) in b.iter() {
                if r.state == ServiceState::Loading {
                    s.entry(name.clone()).or_insert_with(Instant::now);
                }
            }
        }
        tokio::select! {
            changed = board.changed() => if changed.is_err() { return },
            () = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_told_apart() {
        assert_eq!(cause_of(true, "stream ended"), cause::SESSION_LOST);
        assert_eq!(
            cause_of(false, "coordinator refused: Unauthenticated: join token required"),
            cause::REFUSED
        );
        assert_eq!(cause_of(false, "connect: connection refused"), cause::UNREACHABLE);
        assert_eq!(cause_of(false, "dial: timed out"), cause::UNREACHABLE);
    }
}
