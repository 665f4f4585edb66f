//! Several coordinators, one fleet: membership of a cluster through etcd.
//!
//! Without `--etcd` nothing here runs and the coordinator keeps its fleet
//! in memory, alone (the embedded default). With it, each coordinator
//! holds one etcd lease and a key for itself on it ([`Member`]), and its
//! registry keeps fleet records in etcd ([`EtcdFleet`], written by a
//! [`Writer`] task; the encoding is [`record_codec`]); the key layout is in
//! [`keys`]. Worker keepalives never reach etcd: liveness stays
//! with the coordinator holding a worker's stream, and etcd holds only
//! what changes on transitions.

pub mod compact;
pub mod config;
mod error;
mod etcd_tls;
mod identity;
pub mod keys;
pub mod leader;
mod member;
pub mod record_codec;
pub mod revocations;
mod role;
mod store;
mod watcher;

pub use config::ClusterConfig;
pub use error::ClusterError;
pub use identity::coordinator_id;
pub use keys::Keys;
pub use member::{CoordinatorInfo, Link, Member};
pub use role::Role;
pub use store::{EtcdFleet, Writer};
pub use watcher::{ApplyPlacement, LearnRevocation, Watcher};
