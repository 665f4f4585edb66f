//! edgeplane: the control plane for a fleet of edge machines.
//!
//! Workers dial out to one coordinator over a long-lived bidirectional gRPC
//! stream (`edgeplane.v1.WorkerControl/Connect`); the coordinator binds the
//! worker's identity to that stream, counts every message as a heartbeat,
//! and keeps liveness (the stream) apart from readiness (per service).
//!
//! Map of the crate:
//! - [`proto`]: generated `edgeplane.v1` types and the reflection descriptor.
//! - [`registry`]: worker records, the health clock, and the change events
//!   every view is built from. The one boundary through which state changes.
//! - [`coordinator`]: the server: Connect sessions, the Admin API, health,
//!   reflection and the HTTP JSON views, all on one port.
//! - [`worker`]: the agent: dial, keep alive, reconnect with backoff, resume.
//! - [`admin_cli`]: `edgeplane workers`, the operator's table.
//! - [`auth`], [`duration`]: shared secrets and operator-typed durations.

#![forbid(unsafe_code)]

pub mod admin_cli;
pub mod auth;
pub mod bench;
pub mod catalog;
pub mod coordinator;
pub mod demo;
pub mod duration;
pub mod errors;
pub mod json;
pub mod parse;
pub mod placement;
pub mod proto;
pub mod proto_codec;
pub mod proxy;
pub mod registry;
pub mod routes;
pub mod sample;
pub mod tunnel;
pub mod upstream;
pub mod worker;
