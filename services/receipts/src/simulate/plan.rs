//! The traffic of a simulated run, drawn from a seed before anything is sent: per message its
//! recipients and their routes, per recipient the provider's words in the provider's format, and
//! the summary every message must end with. The same seed draws the same plan.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use receipts_domain::{DeliveryStatus, StatusCounts, Timestamp};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    Whatsapp,
    Twilio,
    Smpp,
}

/// One HTTP request to ingest.
#[derive(Debug, Clone)]
pub(super) enum Request {
    Registrations(String),
    Twilio(Vec<(String, String)>),
    Whatsapp(String),
    Smpp(String),
}

/// What the run sent, and what the summaries must say at the end.
#[derive(Debug, Default)]
pub struct Plan {
    pub(super) requests: Vec<Request>,
    /// (conversation, message) → (expected receipts, final statuses).
    pub(super) expected: BTreeMap<(String, String), (u64, StatusCounts)>,
    pub receipts: usize,
    pub chat_participants: usize,
}

fn hex_id(rng: &mut StdRng) -> String {
    format!("{:016x}{:016x}", rng.random::<u64>(), rng.random::<u64>())
}

fn rfc3339(unix: i64) -> String {
    Timestamp::from_unix_millis(unix * 1000).rfc3339()
}

/// YYMMDDhhmm in UTC, as SMPP receipts and Twilio's RawDlrDoneDate carry it.
fn yymmddhhmm(unix: i64) -> String {
    Timestamp::from_unix_millis(unix * 1000)
        .to_utc()
        .map(|t| t.format("%y%m%d%H%M").to_string())
        .unwrap_or_default()
}

impl Plan {
    pub fn generate(
        account: &str,
        conversations: u32,
        messages: u32,
        seed: u64,
        smpp_connection: &str,
        whatsapp_phone_number_id: &str,
    ) -> Plan {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut plan = Plan::default();
        let start = 1_767_225_600 + i64::from(rng.random_range(0..86_400u32)); // 2026-01-01 + up to a day
        for c in 0..conversations {
            let conversation = format!("CH{}", hex_id(&mut rng));
            for m in 0..messages {
                let message = format!("IM{}", hex_id(&mut rng));
                let recipients = rng.random_range(1..=4u32);
                plan.chat_participants += rng.random_range(0..=2usize);
                let sent_at = start + i64::from(c * messages + m) * 7;
                let mut registrations = Vec::new();
                let mut counts = StatusCounts::default();
                for _ in 0..recipients {
                    let participant = format!("MB{}", hex_id(&mut rng));
                    let route = match rng.random_range(0..10) {
                        0..=3 => Route::Whatsapp,
                        4..=7 => Route::Twilio,
                        _ => Route::Smpp,
                    };
                    let (channel, channel_message_id, smsc_id) = match route {
                        Route::Whatsapp => (
                            "CHANNEL_WHATSAPP",
                            format!("wamid.{}", hex_id(&mut rng)),
                            String::new(),
                        ),
                        Route::Twilio => (
                            "CHANNEL_SMS",
                            format!("SM{}", hex_id(&mut rng)),
                            String::new(),
                        ),
                        Route::Smpp => {
                            let id = format!("{:010}", rng.random::<u32>());
                            ("CHANNEL_SMS", format!("smpp:{smpp_connection}:{id}"), id)
                        }
                    };
                    registrations.push(serde_json::json!({
                        "eventId": format!("reg-{channel_message_id}"),
                        "occurredAt": rfc3339(sent_at),
                        "receiptRegistered": {
                            "accountSid": account, "conversationSid": conversation, "messageSid": message,
                            "messageIndex": m, "participantSid": participant, "channel": channel,
                            "channelMessageId": channel_message_id, "expectedReceipts": recipients,
                        }
                    }));
                    let (steps, last) = outcome(route, &mut rng);
                    counts.record(None, last);
                    plan.receipts += 1;
                    for (n, (raw, error)) in steps.into_iter().enumerate() {
                        let at = sent_at + 1 + n as i64 * 2;
                        let request = match route {
                            Route::Whatsapp => Request::Whatsapp(whatsapp_body(
                                whatsapp_phone_number_id,
                                &channel_message_id,
                                raw,
                                at,
                                error,
                            )),
                            Route::Twilio => {
                                let mut form = vec![
                                    ("AccountSid".to_owned(), account.to_owned()),
                                    ("MessageSid".to_owned(), channel_message_id.clone()),
                                    ("MessageStatus".to_owned(), raw.to_owned()),
                                    ("RawDlrDoneDate".to_owned(), yymmddhhmm(at)),
                                ];
                                if let Some(code) = error {
                                    form.push(("ErrorCode".to_owned(), code.to_string()));
                                }
                                Request::Twilio(form)
                            }
                            Route::Smpp => Request::Smpp(format!(
                                "id:{smsc_id} sub:001 dlvrd:{} submit date:{} done date:{} stat:{raw} err:{:03} text:hello",
                                if raw == "DELIVRD" { "001" } else { "000" },
                                yymmddhhmm(sent_at),
                                yymmddhhmm(at),
                                error.unwrap_or(0),
                            )),
                        };
                        // Providers resend: about one report in ten arrives twice.
                        if rng.random_bool(0.1) {
                            plan.requests.push(request.clone());
                        }
                        plan.requests.push(request);
                    }
                }
                plan.requests.push(Request::Registrations(
                    serde_json::json!({ "events": registrations }).to_string(),
                ));
                plan.expected.insert(
                    (conversation.clone(), message),
                    (u64::from(recipients), counts),
                );
            }
        }
        // Everything in any order: reports before registrations, delivered before sent.
        plan.requests.shuffle(&mut rng);
        plan
    }
}

/// The provider's words for one recipient's way, and the canonical status it ends in.
fn outcome(route: Route, rng: &mut StdRng) -> (Vec<(&'static str, Option<u32>)>, DeliveryStatus) {
    use DeliveryStatus::*;
    let roll = rng.random_range(0..100);
    match route {
        Route::Whatsapp => match roll {
            0..=64 => (
                vec![("sent", None), ("delivered", None), ("read", None)],
                Read,
            ),
            65..=84 => (vec![("sent", None), ("delivered", None)], Delivered),
            85..=89 => (vec![("sent", None)], Sent),
            _ => {
                let code = *[63016, 63024].choose(rng).unwrap_or(&63016);
                (vec![("failed", Some(code))], Failed)
            }
        },
        Route::Twilio => match roll {
            0..=74 => (
                vec![("queued", None), ("sent", None), ("delivered", None)],
                Delivered,
            ),
            75..=84 => (vec![("queued", None), ("sent", None)], Sent),
            85..=92 => {
                let code = *[30003, 30005, 30006].choose(rng).unwrap_or(&30003);
                (
                    vec![("sent", None), ("undelivered", Some(code))],
                    Undelivered,
                )
            }
            _ => {
                let code = *[30007, 30008].choose(rng).unwrap_or(&30007);
                (vec![("failed", Some(code))], Failed)
            }
        },
        Route::Smpp => match roll {
            0..=79 => (vec![("ENROUTE", None), ("DELIVRD", None)], Delivered),
            80..=89 => (vec![("UNDELIV", Some(1))], Undelivered),
            _ => (vec![("REJECTD", Some(11))], Failed),
        },
    }
}

fn whatsapp_body(
    phone_number_id: &str,
    id: &str,
    status: &str,
    at: i64,
    error: Option<u32>,
) -> String {
    let mut entry = serde_json::json!({
        "id": id, "status": status, "timestamp": at.to_string(), "recipient_id": "15551234567",
    });
    if let Some(code) = error {
        entry["errors"] = serde_json::json!([{ "code": code, "title": "simulated" }]);
    }
    serde_json::json!({
        "object": "whatsapp_business_account",
        "entry": [{ "id": "0", "changes": [{ "field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": { "phone_number_id": phone_number_id },
            "statuses": [entry]
        }}]}]
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smpp_and_twilio_dates_are_utc_minutes() {
        assert_eq!(yymmddhhmm(0), "7001010000");
        assert_eq!(yymmddhhmm(1_767_225_600 + 3_661), "2601010101");
        assert_eq!(yymmddhhmm(1_772_323_199), "2602282359");
    }

    #[test]
    fn a_plan_is_repeatable_and_excludes_chat_participants() {
        let a = Plan::generate("AC0123456789abcdef0123456789abcdef", 3, 4, 7, "smsc", "1");
        let b = Plan::generate("AC0123456789abcdef0123456789abcdef", 3, 4, 7, "smsc", "1");
        assert_eq!(a.requests.len(), b.requests.len());
        assert_eq!(a.expected.len(), 12);
        let receipts: u64 = a
            .expected
            .values()
            .map(|(_, counts)| counts.receipts())
            .sum();
        assert_eq!(receipts as usize, a.receipts);
        for (expected, counts) in a.expected.values() {
            assert_eq!(
                *expected,
                counts.receipts(),
                "total counts non-chat recipients only"
            );
        }
    }
}
