//! `receipts contracts`: the event contracts this build speaks, for consumers to generate code
//! from and for the release image to ship: the AsyncAPI document of every topic and the protobuf
//! descriptor set of every payload.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

/// `docs/asyncapi.yaml` as it was when this binary was built.
pub const ASYNCAPI: &str = include_str!("../../../docs/asyncapi.yaml");

#[derive(Debug, Args)]
pub struct ContractsArgs {
    #[command(subcommand)]
    pub contract: Contract,
    /// Write to this file instead of standard output.
    #[arg(long, global = true)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Subcommand)]
pub enum Contract {
    /// The encoded protobuf `FileDescriptorSet` of `receipts.v1` (imports included), as
    /// `protoc --descriptor_set_out` writes it.
    DescriptorSet,
    /// The AsyncAPI 3.0 document of every Kafka topic: keys, headers, payloads, ordering,
    /// retention, compaction, writers and readers.
    Asyncapi,
}

impl Contract {
    pub fn bytes(self) -> &'static [u8] {
        match self {
            Contract::DescriptorSet => receipts_proto::FILE_DESCRIPTOR_SET,
            Contract::Asyncapi => ASYNCAPI.as_bytes(),
        }
    }
}

pub fn run(args: &ContractsArgs) -> anyhow::Result<()> {
    let bytes = args.contract.bytes();
    match &args.out {
        Some(path) => {
            std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
        }
        None => std::io::stdout()
            .write_all(bytes)
            .context("writing to standard output"),
    }
}
