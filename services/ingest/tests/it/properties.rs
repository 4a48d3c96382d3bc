//! The parsers as properties, on stable (the fuzz targets need nightly): no input makes them
//! panic, corpus samples cut or altered anywhere are answered with a result, well-formed inputs
//! in any field order and letter case parse to what they say, and a Twilio signature holds
//! exactly for the parameters it was made over.

use proptest::prelude::*;
use receipts_domain::{DeliveryEventKind, StatusReport, Timestamp};
use receipts_ingest::smpp::parse_smpp_receipt;
use receipts_ingest::twilio::{parse_twilio_form, twilio_signature, verify_twilio_signature};
use receipts_ingest::whatsapp::parse_whatsapp;

use crate::support::{account, whatsapp_account};

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut samples: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    samples.sort();
    samples
}

/// A corpus sample cut at `cut` with the byte at `flip` replaced by `byte`.
fn mutate(sample: &[u8], cut: prop::sample::Index, flip: prop::sample::Index, byte: u8) -> Vec<u8> {
    let mut data = sample[..cut.index(sample.len() + 1)].to_vec();
    if !data.is_empty() {
        let i = flip.index(data.len());
        data[i] = byte;
    }
    data
}

fn report_of(kind: DeliveryEventKind) -> StatusReport {
    match kind {
        DeliveryEventKind::Reported(r) => r,
        DeliveryEventKind::Registered(r) => panic!("a report, not {r:?}"),
    }
}

const STATS: [&str; 8] = [
    "DELIVRD", "EXPIRED", "DELETED", "UNDELIV", "ACCEPTD", "UNKNOWN", "REJECTD", "ENROUTE",
];

fn any_case(text: &str, upper: &[bool]) -> String {
    text.chars()
        .zip(upper.iter().cycle())
        .map(|(c, up)| if *up { c.to_ascii_uppercase() } else { c })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn no_input_panics(data in prop::collection::vec(any::<u8>(), 0..512), text in ".{0,256}") {
        let _ = parse_twilio_form(&data, Timestamp::EPOCH);
        let _ = parse_whatsapp(&data, whatsapp_account);
        let _ = parse_smpp_receipt(&account(), "p", &text);
        let _ = parse_smpp_receipt(&account(), "p", &String::from_utf8_lossy(&data));
    }

    #[test]
    fn altered_corpus_samples_are_answered(
        which in any::<prop::sample::Index>(),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let twilio = corpus("parse_twilio_form");
        let _ = parse_twilio_form(&mutate(&twilio[which.index(twilio.len())], cut, flip, byte), Timestamp::EPOCH);
        let whatsapp = corpus("parse_whatsapp");
        let _ = parse_whatsapp(&mutate(&whatsapp[which.index(whatsapp.len())], cut, flip, byte), whatsapp_account);
        let smpp = corpus("parse_smpp_receipt");
        let data = mutate(&smpp[which.index(smpp.len())], cut, flip, byte);
        let _ = parse_smpp_receipt(&account(), "p", &String::from_utf8_lossy(&data));
    }

    #[test]
    fn smpp_fields_in_any_order_and_case(
        id in "[0-9A-Za-z]{1,20}",
        stat in prop::sample::select(STATS.as_slice()),
        err in 0u32..1000,
        minute in 0u32..60,
        order in Just((0..6).collect::<Vec<usize>>()).prop_shuffle(),
        upper in prop::collection::vec(any::<bool>(), 1..16),
    ) {
        let fields = [
            format!("id:{id}"),
            "sub:001".to_owned(),
            "dlvrd:001".to_owned(),
            "submit date:2403011200".to_owned(),
            format!("done date:24030112{minute:02}"),
            format!("stat:{stat}"),
        ];
        let mut text: Vec<String> = order
            .iter()
            .map(|&i| {
                let (name, value) = fields[i].split_once(':').unwrap();
                format!("{}:{value}", any_case(name, &upper))
            })
            .collect();
        text.push(format!("{}:{err:03}", any_case("err", &upper)));
        text.push(format!("{}:id:x stat:NOPE", any_case("text", &upper)));
        let report = report_of(parse_smpp_receipt(&account(), "c", &text.join(" ")).unwrap().kind);
        prop_assert_eq!(report.channel_message_id.as_str(), format!("smpp:c:{id}"));
        prop_assert_eq!(report.raw_status.as_str(), stat);
        prop_assert_eq!(report.error_code, (err != 0).then_some(err));
        prop_assert_eq!(
            report.provider_time.unix_millis(),
            1_709_294_400_000 + i64::from(minute) * 60_000
        );
    }

    #[test]
    fn twilio_signatures_hold_exactly_for_their_parameters(
        params in prop::collection::vec(("[A-Za-z]{1,8}", ".{0,12}"), 0..8),
        token in "[a-z0-9]{1,32}",
        changed in any::<prop::sample::Index>(),
    ) {
        let url = "https://hooks.example.com/receipts/v1/twilio/status?x=1";
        let signature = twilio_signature(&token, url, &params);
        prop_assert!(verify_twilio_signature(&token, url, &params, &signature));
        // Order of the parameters does not matter.
        let mut reversed = params.clone();
        reversed.reverse();
        prop_assert!(verify_twilio_signature(&token, url, &reversed, &signature));
        if !params.is_empty() {
            let mut altered = params.clone();
            // Longer than any generated value, so it cannot be a value already there.
            altered[changed.index(params.len())].1.push_str(&"!".repeat(13));
            prop_assert!(!verify_twilio_signature(&token, url, &altered, &signature));
        }
        let other_token = format!("{token}x");
        prop_assert!(!verify_twilio_signature(&other_token, url, &params, &signature));
    }
}
