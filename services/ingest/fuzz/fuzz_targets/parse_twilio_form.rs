//! Any body: the form parser and the signature check return, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use receipts_domain::Timestamp;
use receipts_ingest::twilio::{form_pairs, parse_twilio_form, verify_twilio_signature};

fuzz_target!(|data: &[u8]| {
    let _ = parse_twilio_form(data, Timestamp::EPOCH);
    let pairs = form_pairs(data);
    let signature = String::from_utf8_lossy(data);
    let _ = verify_twilio_signature(
        "token",
        "https://example.com/v1/twilio/status",
        &pairs,
        &signature,
    );
});
