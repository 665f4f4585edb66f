//! Generated protocol types (`proto/edgeplane/v1/*.proto`) and the encoded
//! descriptor set that server reflection serves.

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("edgeplane.v1");

/// The sample notes service's gRPC API (`notes.v1`).
pub mod notes {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("notes.v1");
}

/// Every edgeplane file descriptor, encoded; handed to tonic-reflection so
/// that `grpcurl list` works without local proto files.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/edgeplane_descriptor.bin"));

/// Fully qualified gRPC service names, as health and reflection name them:
/// taken from the generated servers, so a rename in the proto cannot leave
/// a stale copy here.
pub const WORKER_CONTROL_SERVICE: &str = worker_control_server::SERVICE_NAME;
/// See [`WORKER_CONTROL_SERVICE`].
pub const ADMIN_SERVICE: &str = admin_server::SERVICE_NAME;
