//! Compiles every `.proto` under `proto/` with protox (pure Rust, so no system `protoc`)
//! and generates prost messages plus tonic clients and servers. The encoded descriptor set is
//! kept too, for server reflection.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "rankd/v1/ranker.proto",
    "rankd/admin/v1/admin.proto",
    "rankd/peer/v1/peer.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("rankd_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
