//! The Kafka adapter against a real broker.

mod roundtrip;
