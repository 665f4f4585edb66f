//! Compiles `proto/` without a system `protoc`: protox parses the files in
//! pure Rust, tonic-prost-build generates the code, and the encoded
//! descriptor set is kept for server reflection.

use prost::Message;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/edgeplane/v1/worker.proto",
        "proto/edgeplane/v1/admin.proto",
        "proto/edgeplane/v1/cluster.proto",
        "proto/notes/v1/notes.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("edgeplane_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // The rpc is named `Connect`; the generated `connect(dst)` constructor
        // would collide with it. Clients are built from a `Channel` instead.
        .build_transport(false)
        // Small buffers: see src/proto_codec.rs.
        .codec_path("crate::proto_codec::SmallCodec")
        .compile_fds(fds)?;
    Ok(())
}
