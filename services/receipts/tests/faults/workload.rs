//! The input of a scenario and the model of what it must lead to.
//!
//! [`Workload`] makes a steady stream of registrations and status reports: each message has one to
//! three recipients (one receipt each), each receipt a registration and one to five reports; a
//! receipt's events come in random order (reports before the registration included), about one
//! event in twenty is sent twice, and a few hundred receipts are in progress at any time, so their
//! events interleave.
//!
//! [`Model`] (the testkit's reference model) folds every event, in the order it was produced,
//! through a fresh `ReceiptState` per channel message, as a projector that never stopped does. A
//! channel message's events share a key, hence a partition, and the producer is idempotent, so
//! log order per key is production order and the model's versions are exact.

use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use receipts_domain::{
    AccountSid, Channel, ChannelMessageId, ConversationSid, DeliveryEvent, DeliveryEventKind,
    DeliveryStatus, MessageSid, ParticipantSid, Registration, StatusReport, StatusSource,
    Timestamp,
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
/// What a never-stopped system makes of the events produced so far.
pub(crate) use receipts_testkit::model::Model;
