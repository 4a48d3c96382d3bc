//! Any text: the receipt parser returns, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use receipts_domain::AccountSid;
use receipts_ingest::smpp::parse_smpp_receipt;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let account = AccountSid::parse("AC00000000000000000000000000000001").unwrap();
        let _ = parse_smpp_receipt(&account, "fuzz", text);
    }
});
