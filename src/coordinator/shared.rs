//! What the `WorkerControl` handlers ([`super::control`]) and every worker
//! session ([`super::session`]) share. Its own file so that the two do not
//! import each other: control admits a stream and starts its session; the
//! session never reaches back into control.

use super::handshakes::Handshakes;
use super::CoordinatorConfig;
use crate::auth::Secret;
use crate::registry::Registry;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The coordinator's state as a Connect or Tunnel handler needs it.
pub struct ControlShared {
    pub registry: Arc<Registry>,
    pub catalog: Arc<crate::catalog::Catalog>,
    pub config: CoordinatorConfig,
    pub join: Secret,
    /// Bounds streams that have not yet said Hello, in total and per address.
    pub handshakes: Handshakes,
    /// Cancelled when the coordinator begins shutting down.
    pub closing: CancellationToken,
}
