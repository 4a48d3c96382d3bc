//! The Kafka adapter against a real broker.

mod engine;
mod pipeline;
mod roundtrip;
