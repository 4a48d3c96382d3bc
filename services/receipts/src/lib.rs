//! The `receipts` command. [`dev`] runs the whole system in one process on an embedded Kafka
//! broker (or a real one); the other modules are tools that talk to a running system, [`ops`]
//! the operator's ones (dead letters, lag, parked reports, webhooks).

pub mod bench;
pub mod cli;
pub mod contracts;
pub mod demo;
pub mod dev;
pub mod embedded;
pub mod get;
pub mod ops;
pub mod process;
pub mod simulate;
pub mod sink;
