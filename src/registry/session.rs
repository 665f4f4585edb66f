//! The registry's handle on one open Connect stream.
//!
//! The stream handler stamps `heard_ms` on every message without taking the
//! registry lock (a keepalive costs one atomic store), and the registry
//! talks back through `notices` (drain, close) without knowing anything
//! about gRPC.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::sync::mpsc;

/// What the registry asks a session to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// Tell the worker to take no new work.
    Drain(String),
    /// End the stream, telling the worker why.
    Close(String),
    /// Send the worker its new assignment.
    Assign(crate::proto::Assignment),
}

#[derive(Debug)]
pub struct SessionLink {
    heard_ms: AtomicU64,
    /// Set by the health clock when it marks the worker degraded, so the
    /// next message can flip it back at once instead of at the next sweep.
    degraded: AtomicBool,
    notices: mpsc::UnboundedSender<Notice>,
}

impl SessionLink {
    pub fn new(now_ms: u64) -> (Self, mpsc::UnboundedReceiver<Notice>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let link = SessionLink {
            heard_ms: AtomicU64::new(now_ms),
            degraded: AtomicBool::new(false),
            notices: tx,
        };
        (link, rx)
    }

    /// Records a message from the worker. Returns true when the worker was
    /// marked degraded, so the caller should ask the registry to re-check it.
    pub fn heard(&self, now_ms: u64) -> bool {
        self.heard_ms.store(now_ms, Ordering::Relaxed);
        self.degraded.load(Ordering::Relaxed)
    }

    pub fn heard_ms(&self) -> u64 {
        self.heard_ms.load(Ordering::Relaxed)
    }

    pub(super) fn set_degraded(&self, degraded: bool) {
        self.degraded.store(degraded, Ordering::Relaxed);
    }

    pub(super) fn notify(&self, notice: Notice) {
        // The session may already be gone; then there is no one to tell.
        let _ = self.notices.send(notice);
    }
}
