//! Compiles `proto/` with the pure-Rust `protox` (no system `protoc`) and writes the
//! descriptor set next to the generated code for gRPC server reflection; etcd's API
//! (`proto/etcd`, the etcd store backend's client) is compiled the same way.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let files = [
        "proto/rollout/v1/agent.proto",
        "proto/rollout/v1/controller.proto",
        "proto/rollout/v1/store.proto",
    ];
    let fds = protox::compile(files, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("rollout_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .codec_path("crate::proto::codec::Codec")
        .compile_fds(fds)?;
    // etcd's API, for the etcd store backend: a client only, not served by reflection.
    let etcd = protox::compile(["proto/etcd/rpc.proto"], ["proto"])?;
    tonic_prost_build::configure().build_server(false).compile_fds(etcd)?;
    Ok(())
}
