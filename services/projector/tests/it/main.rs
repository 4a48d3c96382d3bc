//! The projector against a real broker: unique topics, a temp sled dir per instance.

mod accounts;
mod cloudevents;
mod crash;
mod flow;
mod handoff;
mod pipeline;
mod rebalance;
mod support;
