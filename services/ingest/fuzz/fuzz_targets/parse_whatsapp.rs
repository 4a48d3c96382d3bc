//! Any body: the webhook parser and the signature check return, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use receipts_domain::AccountSid;
use receipts_ingest::whatsapp::{parse_whatsapp, verify_hub_signature};

fuzz_target!(|data: &[u8]| {
    // Every number belongs to the one account, so the statuses themselves are parsed.
    let _ = parse_whatsapp(data, |_| {
        AccountSid::parse("AC00000000000000000000000000000001").ok()
    });
    let _ = verify_hub_signature("secret", data, &String::from_utf8_lossy(data));
});
