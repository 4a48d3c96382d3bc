//! The projector against a real broker: unique topics, a temp sled dir per instance.

mod flow;
mod support;
