//! Micro-benchmarks of the two pieces of domain work every receipt change costs: the merge
//! (`ReceiptState::register` and `ReceiptState::apply_report`) and the summary update
//! (`StatusCounts::record` followed by `DeliverySummary::new`).
//!
//! Run with `cargo bench -p receipts-domain`; the figures are quoted in `BENCHMARKS.md`.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use receipts_domain::{
    AccountSid, Channel, ChannelMessageId, ConversationSid, DeliveryStatus, DeliverySummary,
    MessageSid, ParticipantSid, ReceiptState, Registration, StatusCounts, StatusReport,
    StatusSource, Timestamp,
};

const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
const CONVERSATION: &str = "CH0123456789abcdef0123456789abcdef";
const MESSAGE: &str = "IM0123456789abcdef0123456789abcdef";
const CHANNEL_MESSAGE: &str = "SM00112233445566778899aabbccddeeff";

fn at(millis: i64) -> Timestamp {
    Timestamp::from_unix_millis(1_732_000_000_000 + millis)
}

fn registration() -> Registration {
    Registration {
        account: AccountSid::parse(ACCOUNT).unwrap(),
        chat_service: None,
        conversation: ConversationSid::parse(CONVERSATION).unwrap(),
        message: MessageSid::parse(MESSAGE).unwrap(),
        message_index: 7,
        participant: ParticipantSid::derive(&["bench"]),
        channel: Channel::Sms,
        channel_message_id: ChannelMessageId::parse(CHANNEL_MESSAGE).unwrap(),
        expected_receipts: 3,
        registered_at: at(0),
    }
}

fn report(status: DeliveryStatus, raw: &str, millis: i64) -> StatusReport {
    StatusReport {
        account: AccountSid::parse(ACCOUNT).unwrap(),
        channel_message_id: ChannelMessageId::parse(CHANNEL_MESSAGE).unwrap(),
        status,
        raw_status: raw.to_owned(),
        error_code: None,
        provider_time: at(millis),
        source: StatusSource::TwilioMessaging,
    }
}

fn registered() -> ReceiptState {
    let mut state = ReceiptState::default();
    state.register(registration()).unwrap();
    state
}

fn merge(c: &mut Criterion) {
    let mut group = c.benchmark_group("merge");
    // A new receipt: the registration creates it (this includes deriving its `DY` sid).
    group.bench_function("register new receipt", |b| {
        b.iter_batched(
            registration,
            |r| black_box(ReceiptState::default().register(r).unwrap()),
            BatchSize::SmallInput,
        )
    });
    // The common case of the projector: a report that moves a registered receipt forward and
    // yields a change to publish.
    group.bench_function("apply_report changes a registered receipt", |b| {
        b.iter_batched(
            || {
                let mut state = registered();
                state.apply_report(report(DeliveryStatus::Sent, "sent", 10));
                (state, report(DeliveryStatus::Delivered, "delivered", 20))
            },
            |(mut state, r)| black_box(state.apply_report(r)),
            BatchSize::SmallInput,
        )
    });
    // A late or duplicate report: compared and dropped, nothing to publish.
    group.bench_function("apply_report stale report", |b| {
        b.iter_batched(
            || {
                let mut state = registered();
                state.apply_report(report(DeliveryStatus::Read, "read", 30));
                (state, report(DeliveryStatus::Delivered, "delivered", 20))
            },
            |(mut state, r)| black_box(state.apply_report(r)),
            BatchSize::SmallInput,
        )
    });
    // A report before its registration: parked.
    group.bench_function("apply_report parks before registration", |b| {
        b.iter_batched(
            || report(DeliveryStatus::Delivered, "delivered", 20),
            |r| black_box(ReceiptState::default().apply_report(r)),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn summary(c: &mut Criterion) {
    let mut group = c.benchmark_group("summary");
    let statuses = [
        (None, DeliveryStatus::Queued),
        (Some(DeliveryStatus::Queued), DeliveryStatus::Sent),
        (Some(DeliveryStatus::Sent), DeliveryStatus::Delivered),
        (Some(DeliveryStatus::Delivered), DeliveryStatus::Read),
    ];
    let mut step = 0usize;
    let mut counts = StatusCounts::default();
    // What the read model does per applied snapshot: move the counters by the old and new
    // status, then derive the summary it stores and serves.
    group.bench_function("record + DeliverySummary::new", |b| {
        b.iter(|| {
            let (previous, current) = statuses[step % statuses.len()];
            step += 1;
            counts.record(black_box(previous), black_box(current));
            black_box(DeliverySummary::new(black_box(3), &counts))
        })
    });
    group.finish();
}

criterion_group!(benches, merge, summary);
criterion_main!(benches);
