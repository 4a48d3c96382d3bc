//! Realistic input for the benchmarks: conversation messages with one to four SMS, WhatsApp or
//! SMPP recipients, each registered and then reported on the way providers do it, with real key
//! shapes (`SM…` sids, `wamid.…` ids, SMSC-scoped ids), some reports arriving before their
//! registration and some sent twice.
//!
//! The receipt changes the projector will publish are computed here with the domain merge, in
//! the order each key's records reach the projector, so the stages can tell when they are done and
//! the read model can be fed exactly what the projector would have produced.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use receipts_domain::{
    AccountSid, Channel, ChannelMessageId, ConversationSid, DeliveryEvent, DeliveryEventKind,
    MessageSid, ParticipantSid, ReceiptChange, ReceiptKey, ReceiptState, RegisterOutcome,
    Registration, ReportOutcome, StatusReport, StatusSource, Timestamp, map_provider_status,
};

use receipts_runtime::demo::{DEMO_ACCOUNT, DEMO_SMPP_CONNECTION};

/// Messages per conversation, before moving on to the next conversation.
const MESSAGES_PER_CONVERSATION: u64 = 20;
/// Records are shuffled within windows of this size: reports overtake their registration and
/// each other, as they do between providers and the platform.
const SHUFFLE_WINDOW: usize = 48;

/// The records of a run, in the order they are produced.
#[derive(Debug, Default)]
pub struct Workload {
    pub events: Vec<DeliveryEvent>,
    /// (conversation, message) of every message registered, in order.
    pub messages: Vec<(ConversationSid, MessageSid)>,
}

fn hex(rng: &mut StdRng, len: usize) -> String {
    const DIGITS: &[u8] = b"0123456789abcdef";
    (0..len)
        .map(|_| DIGITS[rng.random_range(0..16)] as char)
        .collect()
}

fn base64ish(rng: &mut StdRng, len: usize) -> String {
    const DIGITS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| DIGITS[rng.random_range(0..DIGITS.len())] as char)
        .collect()
}

/// The raw statuses one recipient goes through, in the provider's words.
fn provider_statuses(rng: &mut StdRng, source: StatusSource) -> Vec<(&'static str, Option<u32>)> {
    let roll: f64 = rng.random();
    match source {
        StatusSource::WhatsappCloud if roll < 0.03 => vec![("failed", Some(131_026))],
        StatusSource::WhatsappCloud if roll < 0.6 => {
            vec![("sent", None), ("delivered", None), ("read", None)]
        }
        StatusSource::WhatsappCloud => vec![("sent", None), ("delivered", None)],
        StatusSource::Smpp if roll < 0.05 => vec![("UNDELIV", Some(1))],
        StatusSource::Smpp => vec![("DELIVRD", None)],
        _ if roll < 0.02 => vec![("failed", Some(30_008))],
        _ if roll < 0.06 => vec![("sent", None), ("undelivered", Some(30_003))],
        _ => vec![("sent", None), ("delivered", None)],
    }
}

/// About `reports` records (registrations and status reports together), deterministic for a seed.
pub fn generate(reports: usize, seed: u64) -> Workload {
    let mut rng = StdRng::seed_from_u64(seed);
    let account = AccountSid::parse(DEMO_ACCOUNT).expect("the demo account sid is valid");
    let mut workload = Workload::default();
    let mut window = Vec::with_capacity(SHUFFLE_WINDOW * 2);
    let start = 1_764_000_000_000_i64;
    let mut message_number = 0u64;
    let mut conversation = ConversationSid::derive(&["bench", &seed.to_string(), "0"]);
    while workload.events.len() + window.len() < reports {
        if message_number > 0 && message_number.is_multiple_of(MESSAGES_PER_CONVERSATION) {
            conversation =
                ConversationSid::derive(&["bench", &seed.to_string(), &message_number.to_string()]);
        }
        let message_index = message_number % MESSAGES_PER_CONVERSATION;
        let message = MessageSid::derive(&[conversation.as_str(), &message_index.to_string()]);
        message_number += 1;
        workload
            .messages
            .push((conversation.clone(), message.clone()));
        let recipients = rng.random_range(1..=4u32);
        let sent_at = start + message_number as i64 * 50;
        for recipient in 0..recipients {
            let (channel, source, id) = match rng.random_range(0..20) {
                0..10 => (
                    Channel::Sms,
                    StatusSource::TwilioMessaging,
                    ChannelMessageId::parse(&format!("SM{}", hex(&mut rng, 32))),
                ),
                10..17 => (
                    Channel::Whatsapp,
                    StatusSource::WhatsappCloud,
                    ChannelMessageId::parse(&format!(
                        "wamid.HBgL{}FQIAERgS{}",
                        base64ish(&mut rng, 16),
                        hex(&mut rng, 18).to_uppercase()
                    )),
                ),
                _ => (
                    Channel::Sms,
                    StatusSource::Smpp,
                    ChannelMessageId::smpp(DEMO_SMPP_CONNECTION, &hex(&mut rng, 10)),
                ),
            };
            let id = id.expect("generated channel message ids are valid");
            let registration = Registration {
                account: account.clone(),
                chat_service: None,
                conversation: conversation.clone(),
                message: message.clone(),
                message_index,
                participant: ParticipantSid::derive(&[message.as_str(), &recipient.to_string()]),
                channel,
                channel_message_id: id.clone(),
                expected_receipts: recipients,
                registered_at: Timestamp::from_unix_millis(sent_at),
            };
            window.push(DeliveryEvent {
                event_id: format!("reg:{id}"),
                kind: DeliveryEventKind::Registered(registration),
            });
            for (step, (raw, error_code)) in
                provider_statuses(&mut rng, source).into_iter().enumerate()
            {
                let at = sent_at + 800 * (step as i64 + 1) + rng.random_range(0..400);
                let report = StatusReport {
                    account: account.clone(),
                    channel_message_id: id.clone(),
                    status: map_provider_status(source, raw)
                        .expect("generated raw statuses are known"),
                    raw_status: raw.to_owned(),
                    error_code,
                    provider_time: Timestamp::from_unix_millis(at),
                    source,
                };
                let event = DeliveryEvent {
                    event_id: format!("{id}:{raw}:{at}"),
                    kind: DeliveryEventKind::Reported(report),
                };
                // Providers resend about one report in twenty.
                if rng.random_bool(0.05) {
                    window.push(event.clone());
                }
                window.push(event);
            }
        }
        if window.len() >= SHUFFLE_WINDOW {
            window.shuffle(&mut rng);
            workload.events.append(&mut window);
        }
    }
    window.shuffle(&mut rng);
    workload.events.append(&mut window);
    workload.events.truncate(reports);
    workload
}

/// The receipt changes the projector publishes for `events`, in the order of the events. Each
/// key's records keep their relative order on its partition, and a key's state depends only on
/// its own records, so this is exactly what the projector emits (interleaved differently across
/// partitions).
pub fn changes(events: &[DeliveryEvent]) -> Vec<ReceiptChange> {
    let mut states: HashMap<ReceiptKey, ReceiptState> = HashMap::new();
    let mut changes = Vec::new();
    for event in events {
        let state = states.entry(event.receipt_key()).or_default();
        match &event.kind {
            DeliveryEventKind::Registered(registration) => {
                if let Ok(RegisterOutcome::Changed(change)) = state.register(registration.clone()) {
                    changes.push(change);
                }
            }
            DeliveryEventKind::Reported(report) => {
                if let ReportOutcome::Changed(change) = state.apply_report(report.clone()) {
                    changes.push(change);
                }
            }
        }
    }
    changes
}

/// Distinct receipts (registered channel messages of an account) among `events`.
pub fn receipts(events: &[DeliveryEvent]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e.kind, DeliveryEventKind::Registered(_)))
        .map(|e| e.receipt_key())
        .collect::<std::collections::HashSet<_>>()
        .len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workload_is_deterministic_sized_and_mostly_changes() {
        let a = generate(2_000, 7);
        let b = generate(2_000, 7);
        assert_eq!(a.events.len(), 2_000);
        assert_eq!(a.events, b.events);
        let changes = changes(&a.events);
        // Registrations and reports that move a receipt forward change it; duplicates, reports
        // overtaken by a later one and reports applied with their registration do not.
        assert!(
            changes.len() > 700 && changes.len() < 2_000,
            "{}",
            changes.len()
        );
        assert!(receipts(&a.events) > 500);
    }
}
