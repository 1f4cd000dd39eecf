//! Compiles `proto/` with the pure-Rust `protox` (no system `protoc`) and writes the
//! descriptor set next to the generated code for gRPC server reflection; etcd's API
//! (`proto/etcd`, the etcd store backend's client) is compiled the same way. Also
//! names the commit built (`ROLLOUT_COMMIT`, for `rollout --version`).

use std::path::PathBuf;
use std::process::Command;

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
    println!("cargo:rustc-env=ROLLOUT_COMMIT={}", commit());
    Ok(())
}

/// The commit of the checkout being built (12 hex digits), or `unknown` outside a git
/// checkout (a source tarball) or without git; built again when HEAD moves.
fn commit() -> String {
    let git = |args: &[&str]| {
        let out = Command::new("git").args(args).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let Some(commit) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return "unknown".into();
    };
    // HEAD, the branch it names, and the packed refs: a new commit changes one of them.
    let mut watched = vec!["HEAD".to_string(), "packed-refs".to_string()];
    watched.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for name in watched {
        if let Some(path) = git(&["rev-parse", "--git-path", &name])
            && std::path::Path::new(&path).exists()
        {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    commit
}
