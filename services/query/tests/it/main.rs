//! The query service against a real broker: receipt updates on a unique topic, a temp sled dir,
//! gRPC on a port of its own.

mod auth;
mod contract;
mod discovery;
mod limits;
mod python_client;
mod read_errors;
mod reads;
mod rest;
mod rest_timeline;
mod signing_secrets;
mod support;
mod timelines;
mod watch;
mod webhooks;
mod webhooks_grpc;
