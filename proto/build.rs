//! Compiles every `.proto` under `proto/` with protox (pure Rust, so no system `protoc`)
//! and generates prost messages plus tonic clients and servers. The encoded descriptor set is
//! kept too, for server reflection.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "rankd/v1/ranker.proto",
    "rankd/admin/v1/admin.proto",
    "rankd/peer/v1/peer.proto",
    "inference/grpc_predict_v2.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptors = prost::Message::encode_to_vec(&fds);
    std::fs::write(out_dir.join("rankd_descriptor.bin"), &descriptors)?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    // serde for rankd's own messages, in the canonical protobuf JSON mapping (camelCase
    // names, 64-bit integers as strings, enums by name): `rankctl -o json` prints them, and
    // scripts can read them with any protobuf-JSON parser.
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .out_dir(&out_dir)
        .build(&[".rankd"])?;
    Ok(())
}
