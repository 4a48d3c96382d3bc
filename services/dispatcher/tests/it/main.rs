//! The dispatcher against a real broker (unique topics, a temp sled dir per instance) and local
//! HTTP receivers on 127.0.0.1:0.

mod crash;
mod flow;
mod handoff;
mod isolation;
mod leaks;
mod order;
mod retries;
mod sealed;
mod support;
