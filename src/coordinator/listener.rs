//! The accept loop, with a bound on open connections.
//!
//! Past the bound a new connection is accepted and closed at once: the
//! client sees an immediate failure (and a worker backs off) rather than a
//! connect that hangs in the kernel's backlog, and the coordinator's file
//! descriptors and memory stay bounded whatever peers do.

use std::io;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tracing::warn;

/// An accepted connection, and the slot it holds until it is closed.
pub struct Limited {
    pub stream: TcpStream,
    pub slot: OwnedSemaphorePermit,
}

/// Accepts until the receiver is dropped; yields connections within the bound.
pub fn accept_limited(listener: TcpListener, max_connections: usize) -> ReceiverStream<io::Result<Limited>> {
    let (tx, rx) = mpsc::channel(64);
    let slots = Arc::new(Semaphore::new(max_connections));
    tokio::spawn(async move {
        let mut refused: u64 = 0;
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = tx.closed() => return,
            };
            let (stream, _) = match accepted {
                Ok(s) => s,
                Err(e) => {
                    // EMFILE and friends: pause briefly instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                refused += 1;
                if refused.is_power_of_two() {
                    warn!(
                        max_connections,
                        refused, "connection limit reached; closing new connections"
                    );
                }
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            if tx.send(Ok(Limited { stream, slot })).await.is_err() {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}
