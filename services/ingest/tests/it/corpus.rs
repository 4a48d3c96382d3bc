//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the parsers: nothing
//! panics, samples named `ok-<n>-…` parse into `n` events, samples named `err-…` are refused.
//! Inputs the fuzzer adds under other names only have to return.

use std::path::PathBuf;

use receipts_domain::Timestamp;
use receipts_ingest::smpp::parse_smpp_receipt;
use receipts_ingest::twilio::parse_twilio_form;
use receipts_ingest::whatsapp::parse_whatsapp;

use crate::support::{account, whatsapp_account};

fn samples(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut samples: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    samples.sort();
    assert!(
        samples.iter().any(|(name, _)| name.starts_with("ok-")),
        "{target} has valid samples"
    );
    samples
}

/// Checks one sample's outcome against its name.
fn expect(target: &str, name: &str, outcome: Result<usize, String>) {
    if let Some(rest) = name.strip_prefix("ok-") {
        let count: usize = rest.split('-').next().unwrap().parse().unwrap();
        assert_eq!(outcome, Ok(count), "{target}/{name}");
    } else if name.starts_with("err-") {
        assert!(outcome.is_err(), "{target}/{name} parsed: {outcome:?}");
    }
}

#[test]
fn twilio_corpus() {
    for (name, body) in samples("parse_twilio_form") {
        let outcome = parse_twilio_form(&body, Timestamp::EPOCH)
            .map(|_| 1)
            .map_err(|e| e.to_string());
        expect("parse_twilio_form", &name, outcome);
    }
}

#[test]
fn whatsapp_corpus() {
    for (name, body) in samples("parse_whatsapp") {
        // A sample named `err-` has a status that is refused (skipped in a request).
        let outcome = parse_whatsapp(&body, whatsapp_account)
            .map_err(|e| e.to_string())
            .and_then(|parsed| match parsed.skipped.first() {
                Some(skipped) => Err(skipped.to_string()),
                None => Ok(parsed.events.len()),
            });
        expect("parse_whatsapp", &name, outcome);
    }
}

#[test]
fn smpp_corpus() {
    for (name, body) in samples("parse_smpp_receipt") {
        let outcome = match std::str::from_utf8(&body) {
            Ok(text) => parse_smpp_receipt(&account(), "corpus", text)
                .map(|_| 1)
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        expect("parse_smpp_receipt", &name, outcome);
    }
}
