//! The `receipts` command. [`dev`] runs the whole system in one process on an embedded Kafka
//! broker (or a real one); the other modules are tools that talk to a running system.

pub mod bench;
pub mod cli;
pub mod contracts;
pub mod dev;
pub mod embedded;
pub mod get;
pub mod simulate;
pub mod sink;
