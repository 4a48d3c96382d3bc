//! The input of a scenario and the model of what it must lead to.
//!
//! [`Workload`] makes a steady stream of registrations and status reports: each message has one to
//! three recipients (one receipt each), each receipt a registration and one to five reports; a
//! receipt's events come in random order (reports before the registration included), about one
//! event in twenty is sent twice, and a few hundred receipts are in progress at any time, so their
//! events interleave.
//!
//! [`Model`] folds every event, in the order it was produced, through a fresh `ReceiptState` per
//! channel message, as a projector that never stopped does. A channel message's events share a
//! key, hence a partition, and the producer is idempotent, so log order per key is production
//! order and the model's versions are exact.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use receipts_domain::{
    AccountSid, Channel, ChannelMessageId, ConversationSid, DeliveryEvent, DeliveryEventKind,
    DeliveryStatus, DeliverySummary, MessageSid, ParticipantSid, ReceiptChange, ReceiptKey,
    ReceiptSid, ReceiptState, RegisterOutcome, Registration, ReportOutcome, StatusCounts,
    StatusReport, StatusSource, Timestamp,
};

pub(crate) const ACCOUNT: &str = "AC0000000000000000000000000000fa17";
pub(crate) const TOKEN: &str = "fault-suite-token";

/// Receipts whose events are being produced at any one time.
const IN_PROGRESS: usize = 400;

fn sid(prefix: &str, n: u64) -> String {
    format!("{prefix}{n:032x}")
}

/// One receipt's events still to be produced.
struct Pending {
    events: Vec<DeliveryEvent>,
}

pub(crate) struct Workload {
    rng: StdRng,
    run: u64,
    conversations: u64,
    next_message: u64,
    in_progress: Vec<Pending>,
    /// No new messages are started once this is false.
    open: bool,
}

impl Workload {
    pub(crate) fn new(seed: u64, conversations: u64) -> Self {
        Workload {
            rng: StdRng::seed_from_u64(seed),
            run: seed,
            conversations,
            next_message: 0,
            in_progress: Vec::new(),
            open: true,
        }
    }

    /// Stops starting new messages; the ones in progress still finish.
    pub(crate) fn close(&mut self) {
        self.open = false;
    }

    /// The next event to produce, `None` once closed and every receipt is complete.
    pub(crate) fn next_event(&mut self) -> Option<DeliveryEvent> {
        while self.open && self.in_progress.len() < IN_PROGRESS {
            self.start_message();
        }
        if self.in_progress.is_empty() {
            return None;
        }
        let i = self.rng.random_range(0..self.in_progress.len());
        let event = self.in_progress[i].events.pop();
        if self.in_progress[i].events.is_empty() {
            self.in_progress.swap_remove(i);
        }
        event
    }

    fn start_message(&mut self) {
        let m = self.next_message;
        self.next_message += 1;
        let rng = &mut self.rng;
        let conversation =
            ConversationSid::parse(&sid("CH", rng.random_range(0..self.conversations) + 1))
                .expect("a conversation sid");
        let message = MessageSid::parse(&sid("IM", m + 1)).expect("a message sid");
        let recipients: u32 = rng.random_range(1..=3);
        let registered_at = Timestamp::from_unix_millis(1_700_000_000_000 + m as i64);
        for r in 0..recipients {
            let channel = *Channel::ALL.choose(rng).expect("channels");
            let id = match channel {
                Channel::Sms => format!("SM{:016x}{:016x}", self.run, m * 4 + u64::from(r)),
                _ => format!("wamid.{:x}.{m}.{r}", self.run),
            };
            let id = ChannelMessageId::parse(&id).expect("a channel message id");
            let mut events = vec![DeliveryEvent {
                event_id: format!("reg-{id}"),
                kind: DeliveryEventKind::Registered(Registration {
                    account: AccountSid::parse(ACCOUNT).expect("the account sid"),
                    chat_service: None,
                    conversation: conversation.clone(),
                    message: message.clone(),
                    message_index: m,
                    participant: ParticipantSid::parse(&sid("MB", m * 4 + u64::from(r) + 1))
                        .expect("a participant sid"),
                    channel,
                    channel_message_id: id.clone(),
                    expected_receipts: recipients,
                    registered_at,
                }),
            }];
            for n in 0..rng.random_range(1..=5) {
                let status = *DeliveryStatus::ALL.choose(rng).expect("statuses");
                let failed = matches!(status, DeliveryStatus::Failed | DeliveryStatus::Undelivered);
                events.push(DeliveryEvent {
                    event_id: format!("rep-{id}-{n}"),
                    kind: DeliveryEventKind::Reported(StatusReport {
                        account: AccountSid::parse(ACCOUNT).expect("the account sid"),
                        channel_message_id: id.clone(),
                        status,
                        raw_status: status.as_str().to_owned(),
                        error_code: failed
                            .then(|| *[30003, 30005, 63016].choose(rng).expect("codes")),
                        provider_time: Timestamp::from_unix_millis(
                            registered_at.unix_millis() + rng.random_range(1_000..60_000),
                        ),
                        source: *StatusSource::ALL.choose(rng).expect("sources"),
                    }),
                });
            }
            let again: Vec<DeliveryEvent> = events
                .iter()
                .filter(|_| rng.random_bool(0.05))
                .cloned()
                .collect();
            events.extend(again);
            events.shuffle(rng);
            self.in_progress.push(Pending { events });
        }
    }
}

/// Whether the dispatcher's fire rule sends `onDeliveryUpdated` for `change`, given the receipt's
/// previous version: the status or error code changed, and the status is one Twilio names.
fn fires(change: &ReceiptChange, previous: Option<&ReceiptChange>) -> bool {
    let receipt = &change.receipt;
    let named = receipt.status() != DeliveryStatus::Queued;
    let changed = match previous {
        None => true,
        Some(p) => {
            p.receipt.status() != receipt.status() || p.receipt.error_code() != receipt.error_code()
        }
    };
    named && changed
}

/// What a never-stopped system makes of the events produced so far.
#[derive(Default)]
pub(crate) struct Model {
    states: HashMap<ReceiptKey, ReceiptState>,
    /// Per receipt, its changes by version (version 1 first).
    changes: HashMap<ReceiptSid, Vec<ReceiptChange>>,
}

impl Model {
    pub(crate) fn apply(&mut self, event: &DeliveryEvent) {
        let state = self.states.entry(event.receipt_key()).or_default();
        let change = match event.kind.clone() {
            DeliveryEventKind::Registered(r) => match state.register(r) {
                Ok(RegisterOutcome::Changed(change)) => Some(change),
                Ok(RegisterOutcome::Unchanged) => None,
                Err(conflict) => panic!("the workload conflicts with itself: {conflict}"),
            },
            DeliveryEventKind::Reported(r) => match state.apply_report(r) {
                ReportOutcome::Changed(change) => Some(change),
                ReportOutcome::Parked | ReportOutcome::Unchanged => None,
            },
        };
        if let Some(change) = change {
            self.changes
                .entry(change.receipt.sid.clone())
                .or_default()
                .push(change);
        }
    }

    /// The current version of every receipt: what the system must have caught up to.
    pub(crate) fn versions(&self) -> HashMap<ReceiptSid, u64> {
        self.changes
            .iter()
            .map(|(sid, changes)| (sid.clone(), changes.len() as u64))
            .collect()
    }

    pub(crate) fn changes(&self, sid: &ReceiptSid) -> &[ReceiptChange] {
        self.changes.get(sid).map_or(&[], Vec::as_slice)
    }

    pub(crate) fn receipts(&self) -> impl Iterator<Item = (&ReceiptSid, &[ReceiptChange])> {
        self.changes.iter().map(|(sid, c)| (sid, c.as_slice()))
    }

    /// The versions of `sid` up to `upto` that fire a webhook.
    pub(crate) fn firing(&self, sid: &ReceiptSid, upto: u64) -> Vec<u64> {
        let changes = self.changes(sid);
        let upto = (upto as usize).min(changes.len());
        (0..upto)
            .filter(|&i| fires(&changes[i], i.checked_sub(1).map(|p| &changes[p])))
            .map(|i| i as u64 + 1)
            .collect()
    }

    /// How many webhook-firing changes the events so far make.
    pub(crate) fn firing_count(&self) -> usize {
        self.changes
            .keys()
            .map(|sid| self.firing(sid, u64::MAX).len())
            .sum()
    }

    /// Every message, by (conversation, message), with its expected summary.
    pub(crate) fn summaries(&self) -> HashMap<(String, String), DeliverySummary> {
        let mut messages: HashMap<(String, String), (u64, Vec<DeliveryStatus>)> = HashMap::new();
        for changes in self.changes.values() {
            let receipt = &changes.last().expect("a receipt has a change").receipt;
            let key = (
                receipt.registration.conversation.as_str().to_owned(),
                receipt.registration.message.as_str().to_owned(),
            );
            let entry = messages.entry(key).or_default();
            entry.0 = entry
                .0
                .max(u64::from(receipt.registration.expected_receipts));
            entry.1.push(receipt.status());
        }
        messages
            .into_iter()
            .map(|(key, (expected, statuses))| {
                (
                    key,
                    DeliverySummary::new(expected, &StatusCounts::recount(statuses)),
                )
            })
            .collect()
    }
}
