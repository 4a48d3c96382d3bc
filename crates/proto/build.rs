//! Generates the prost messages, the tonic service and the proto3 JSON (serde) impls into
//! `OUT_DIR`, plus a descriptor set for gRPC reflection. protoc comes from the
//! `protoc-bin-vendored` crate, so a clean clone builds without a system protoc.

use std::env;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("receipts_descriptor.bin");
    let protos = [
        root.join("receipts/v1/events.proto"),
        root.join("receipts/v1/query.proto"),
        root.join("receipts/v1/state.proto"),
        root.join("receipts/v1/webhooks.proto"),
    ];
    let includes = [root.clone(), protoc_bin_vendored::include_path()?];

    let mut config = prost_build::Config::new();
    config
        .protoc_executable(protoc_bin_vendored::protoc_bin_path()?)
        .compile_well_known_types()
        .extern_path(".google.protobuf", "::pbjson_types");
    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptor_path)
        .compile_with_config(config, &protos, &includes)?;

    let descriptors = std::fs::read(&descriptor_path)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .build(&[".receipts.v1"])?;

    println!("cargo:rerun-if-changed={}", root.display());
    Ok(())
}
