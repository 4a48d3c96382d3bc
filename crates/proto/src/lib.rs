//! The wire types of receipts: prost messages and the tonic `DeliveryQuery` service generated from
//! `proto/receipts/v1`, their proto3 JSON mapping (serde, via pbjson), and the conversions between
//! them and the domain types.
//!
//! Layout: [`v1`] holds the generated code; [`convert`] the domain conversions, which validate
//! everything that comes off the wire; [`aggregates`] those of the projector's stored state and of
//! the read model's aggregates (message deliveries, rollups, timelines); [`codec`] decodes and encodes Kafka record payloads in
//! either protobuf or JSON; [`compat`] tells whether the proto files still read what a release
//! wrote (checked in the tests against `proto/releases/`).

pub mod aggregates;
pub mod codec;
pub mod compat;
pub mod convert;
pub mod webhooks;

/// Generated from `proto/receipts/v1/*.proto`.
#[allow(clippy::all, unreachable_pub, missing_debug_implementations)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/receipts.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/receipts.v1.serde.rs"));
}

/// The encoded descriptor set of every receipts proto file (imports included), for gRPC
/// reflection; `receipts contracts descriptor-set` writes it out for consumers, and the release
/// image ships it.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/receipts_descriptor.bin"));

pub use convert::ConversionError;
