//! The ingest gateway against a real broker (unique topics, port 0), and the fuzz corpus through
//! the parsers.

mod canonical;
mod corpus;
mod limits;
mod properties;
mod slow_clients;
mod smpp;
mod support;
mod twilio;
mod whatsapp;
