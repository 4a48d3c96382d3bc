//! The ingest gateway (DESIGN §2 "Ingest"): provider status reports arrive over HTTP and leave as
//! canonical `delivery-events` on Kafka.
//!
//! Layout: one pure parser per format, each a function from the request body to validated events
//! ([`twilio::parse_twilio_form`], [`whatsapp::parse_whatsapp`], [`smpp::parse_smpp_receipt`],
//! [`canonical::parse_event_batch`]); [`report`] holds what they share (the field error, the
//! deterministic event id, provider time formats).

pub mod canonical;
pub mod report;
pub mod smpp;
pub mod twilio;
pub mod whatsapp;
