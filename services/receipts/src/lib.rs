//! The `receipts` command. [`dev`] runs the whole system in one process on an embedded Kafka
//! broker (or a real one); the other modules are tools that talk to a running system, [`ops`]
//! the operator's ones (dead letters, lag, parked reports, webhooks). `receipts bench` is the
//! `receipts-bench` crate.

pub mod cli;
pub mod contracts;
pub mod dev;
pub mod get;
pub mod ops;
pub mod simulate;
pub mod sink;

pub use receipts_bus::embedded;
pub use receipts_runtime::{demo, process};
