//! What the `WorkerControl` handlers ([`super::control`]) and every worker
//! session ([`super::session`]) share. Its own file so that the two do not
//! import each other: control admits a stream and starts its session; the
//! session never reaches back into control.

use super::handshakes::Handshakes;
use super::CoordinatorConfig;
use crate::registry::Registry;
use std::sync::Arc;

/// The coordinator's state as a Connect or Tunnel handler needs it. (The
/// join token and the shutdown signal are not here: `control::Gate`, the
/// interceptor in front of every handler, checks both first.)
pub struct ControlShared {
    pub registry: Arc<Registry>,
    pub catalog: Arc<crate::catalog::Catalog>,
    pub config: CoordinatorConfig,
    /// Bounds streams that have not yet said Hello, in total and per address.
    pub handshakes: Handshakes,
    /// The CA that renews certificates over the stream, and the rest.
    pub security: Arc<super::security::Security>,
    /// Sessions begun and refused, heartbeats, keepalive round trips.
    pub metrics: Arc<crate::metrics::FleetMetrics>,
}
