//! edgeplane: the control plane for a fleet of edge machines.
//!
//! Workers dial out to one coordinator over a long-lived bidirectional gRPC
//! stream (`edgeplane.v1.WorkerControl/Connect`); the coordinator binds the
//! worker's identity to that stream, counts every message as a heartbeat,
//! and keeps liveness (the stream) apart from readiness (per service).
//!
//! Map of the crate, top-down: each module imports only modules in its own
//! group or below (`tests/module_graph.rs` fails on a cycle).
//!
//! Roles (what a subcommand runs):
//! - [`coordinator`]: the server: Connect sessions, the Admin API, health,
//!   reflection, the HTTP JSON views and the proxy's front door, on one port.
//! - [`worker`]: the agent: dial, keep alive, reconnect with backoff, resume;
//!   run what is assigned (`worker::runtime`); its end of the tunnel.
//! - [`admin_cli`]: `edgeplane workers` and `drain`, the operator's table.
//! - [`views_cli`]: `edgeplane services` and `gaps`, tables or JSON.
//! - [`watch_table`]: `edgeplane workers --watch`, the live table.
//! - [`demo`]: a coordinator and a local worker in one command.
//! - [`sample`]: the stand-in model service the demo and tests run.
//! - [`bench`](mod@bench): `edgeplane bench`, a simulated fleet against a real coordinator.
//!
//! Control plane:
//! - [`registry`]: worker records, the health clock, and the change events
//!   every view is built from. The one boundary through which state changes.
//! - [`cluster`]: several coordinators, one fleet through etcd: membership,
//!   the etcd-backed fleet store and its watch, the placement leader,
//!   compaction; without `--etcd`, nothing runs.
//! - [`catalog`]: the services the fleet can run, and their requirements.
//! - [`placement`]: which catalog services each worker should run (pure).
//! - [`json`]: the JSON shape of a worker, shared by the API and the CLI.
//!
//! Data plane:
//! - [`proxy`]: `/service/{name}/...` and gRPC by service name, to a ready
//!   replica: resolve, route, the attempt loop, forward; `proxy::h1`, the
//!   byte-level HTTP/1 fast path.
//! - [`routes`]: the route table the registry publishes and the proxy reads.
//! - [`upstream`]: reaching a replica (dial, inline HTTP/1 connections,
//!   why a send failed), for the proxy and the worker's tunnel alike.
//! - [`tunnel`]: the tunnel's wire format (byte pipe, header names, HTTP/2
//!   settings); each end lives with its role.
//!
//! Shared leaves:
//! - [`proto`], [`proto_codec`]: generated `edgeplane.v1` types, the
//!   reflection descriptor, and the small-buffer codec.
//! - [`auth`]: shared secrets, compared in constant time.
//! - [`metrics`]: Prometheus series (prometheus-client) and scrape-time gauges.
//! - [`duration`], [`parse`]: durations, sizes and URLs as operators type them.
//! - [`errors`]: error chains for people, and the one JSON error envelope.

#![forbid(unsafe_code)]

pub mod admin_cli;
pub mod auth;
pub mod bench;
pub mod catalog;
pub mod cluster;
pub mod coordinator;
pub mod credentials;
pub mod credentials_cli;
pub mod demo;
pub mod duration;
pub mod errors;
pub mod json;
pub mod metrics;
pub mod parse;
pub mod placement;
pub mod proto;
pub mod proto_codec;
pub mod proxy;
pub mod registry;
pub mod routes;
pub mod sample;
pub mod tls;
pub mod tunnel;
pub mod upstream;
pub mod views_cli;
pub mod watch_table;
pub mod worker;
