//! Any body: the webhook parser and the signature check return, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use receipts_ingest::whatsapp::{parse_whatsapp, verify_hub_signature};

fuzz_target!(|data: &[u8]| {
    let _ = parse_whatsapp(data);
    let _ = verify_hub_signature("secret", data, &String::from_utf8_lossy(data));
});
