//! The query read model on worked examples.

use receipts_domain::{
    AccountSid, Channel, DeliveryStatus, DeliverySummary, Receipt, StatusCounts, StatusSource,
};
use receipts_store::{ApplyStats, QueryStore, SledQueryStore, SortOrder};

use crate::{
    ACCOUNT, OTHER_ACCOUNT, Projector, TOPIC, account, all_messages, all_receipts, at,
    conversation, message_sid, offset, open, provider_report, read_model, registration,
    registration_of, reopen, report,
};

const WHATSAPP: StatusSource = StatusSource::WhatsappCloud;
const TWILIO: StatusSource = StatusSource::TwilioMessaging;
const CHANGELOG: &str = "receipts.projector-changelog.v1";

/// The docs' example: a message to five recipients. Two WhatsApp recipients read it, one SMS was
/// delivered, two SMS are still at `sent`.
fn five_recipients() -> Projector {
    let mut projector = Projector::default();
    for id in ["wamid.a", "wamid.b"] {
        projector.register(registration_of(ACCOUNT, 0, id, Channel::Whatsapp, 5));
    }
    for id in ["SMs1", "SMs2", "SMs3"] {
        projector.register(registration(0, id, 5));
    }
    for (id, raw, millis) in [
        ("wamid.a", "sent", 1000),
        ("wamid.a", "delivered", 2000),
        ("wamid.a", "read", 3000),
        // The second WhatsApp recipient's read receipt overtakes its delivery receipt.
        ("wamid.b", "read", 3000),
        ("wamid.b", "sent", 1000),
        ("wamid.b", "delivered", 2000),
    ] {
        projector.report(provider_report(id, WHATSAPP, raw, None, millis));
    }
    for (id, raws) in [
        ("SMs1", &["queued", "sending", "sent", "delivered"][..]),
        ("SMs2", &["queued", "sent"]),
        ("SMs3", &["sending", "sent"]),
    ] {
        for (second, raw) in (1..).zip(raws) {
            projector.report(provider_report(id, TWILIO, raw, None, second * 1000));
        }
    }
    projector
}

#[test]
fn the_five_recipient_example_reads_sent_all_delivered_some_read_some() {
    let projector = five_recipients();
    let (_dir, store) = open();
    let stats = store.apply(&projector.changes, &[offset(1)]).unwrap();
    assert_eq!(stats.applied, projector.changes.len() as u64);
    assert_eq!(
        stats.applied_positions,
        (0..projector.changes.len()).collect::<Vec<_>>()
    );

    let view = store
        .message(&account(), &conversation(), &message_sid(0))
        .unwrap()
        .expect("the message is known");
    let summary = view.summary;
    assert_eq!(
        (
            summary.total,
            summary.sent_amount().as_str(),
            summary.delivered_amount().as_str(),
            summary.read_amount().as_str(),
            summary.failed_amount().as_str(),
            summary.undelivered_amount().as_str(),
        ),
        (5, "all", "some", "some", "none", "none")
    );
    assert_eq!((summary.sent, summary.delivered, summary.read), (5, 3, 2));
    assert_eq!(
        view.counts,
        StatusCounts {
            sent: 2,
            delivered: 1,
            read: 2,
            ..StatusCounts::default()
        }
    );
    assert_eq!((view.index, view.expected_receipts), (0, 5));
    assert_eq!(view.date_created, at(0));
    assert_eq!(view.date_updated, at(4000), "SMs1 was delivered last");

    let rollup = store
        .rollup(&account(), &conversation())
        .unwrap()
        .expect("the conversation is known");
    assert_eq!((rollup.messages, rollup.receipts), (1, 5));
    assert_eq!(rollup.counts, view.counts);
    assert_eq!(rollup.messages_with_failures, 0);

    let receipts = all_receipts(&store, &account(), &message_sid(0), 2);
    let mut expected: Vec<Receipt> = projector.receipts().collect();
    expected.sort_by(|a, b| a.sid.cmp(&b.sid));
    assert_eq!(receipts, expected);

    // wamid.b: registered, then read; the late `sent` and `delivered` did not change the
    // receipt, but its timeline shows them at their own times.
    let b = projector.receipt("wamid.b");
    assert_eq!(
        store
            .timeline(&account(), &conversation(), &message_sid(0), &b.sid)
            .unwrap(),
        None,
        "no changelog state of it was applied yet"
    );
    store.apply_timelines(&projector.changelog, &[]).unwrap();
    let timeline = store
        .timeline(&account(), &conversation(), &message_sid(0), &b.sid)
        .unwrap()
        .unwrap();
    let steps: Vec<_> = timeline
        .iter()
        .map(|e| (e.status, e.raw_status.as_str(), e.source, e.at))
        .collect();
    assert_eq!(
        steps,
        [
            (DeliveryStatus::Queued, "", None, at(0)),
            (DeliveryStatus::Sent, "sent", Some(WHATSAPP), at(1000)),
            (
                DeliveryStatus::Delivered,
                "delivered",
                Some(WHATSAPP),
                at(2000)
            ),
            (DeliveryStatus::Read, "read", Some(WHATSAPP), at(3000)),
        ]
    );
}

#[test]
fn duplicate_and_stale_versions_change_nothing() {
    let projector = five_recipients();
    let (_dir, store) = open();
    store.apply(&projector.changes, &[offset(1)]).unwrap();
    let before = read_model(&store, &account());

    // A producer that crashed re-sends everything; a lagging one sends an old version late.
    let stats = store.apply(&projector.changes, &[offset(2)]).unwrap();
    assert_eq!(
        stats,
        ApplyStats {
            applied: 0,
            duplicates: 5,
            stale: projector.changes.len() as u64 - 5,
            applied_positions: vec![],
        }
    );
    let stats = store.apply(&projector.changes[..1], &[offset(3)]).unwrap();
    assert_eq!(stats.applied, 0);
    assert_eq!(read_model(&store, &account()), before);
    assert_eq!(store.next_offset(TOPIC, 0).unwrap(), Some(3));
}

#[test]
fn several_versions_of_one_receipt_in_one_batch_apply_in_order() {
    let mut projector = Projector::default();
    projector.register(registration(0, "SMa", 2));
    projector.report(report("SMa", DeliveryStatus::Sent, 1000));
    projector.report(report("SMa", DeliveryStatus::Undelivered, 2000));
    projector.register(registration(0, "SMb", 2));
    projector.report(report("SMa", DeliveryStatus::Read, 3000));
    projector.report(provider_report("SMb", TWILIO, "failed", Some(30008), 1500));
    assert_eq!(projector.changes.len(), 6);

    let (_dir, batched) = open();
    let stats = batched.apply(&projector.changes, &[offset(6)]).unwrap();
    assert_eq!(stats.applied, 6);
    batched.apply_timelines(&projector.changelog, &[]).unwrap();
    let (_dir2, one_by_one) = open();
    for (i, change) in projector.changes.iter().enumerate() {
        one_by_one
            .apply(std::slice::from_ref(change), &[offset(i as i64 + 1)])
            .unwrap();
    }
    for state in &projector.changelog {
        one_by_one
            .apply_timelines(std::slice::from_ref(state), &[])
            .unwrap();
    }
    let model = read_model(&batched, &account());
    assert_eq!(model, read_model(&one_by_one, &account()));

    let view = &model.messages[0];
    assert_eq!(
        view.counts,
        StatusCounts {
            failed: 1,
            read: 1,
            ..StatusCounts::default()
        }
    );
    assert_eq!(view.summary, DeliverySummary::new(2, &view.counts));
    let rollup = model.rollup.unwrap();
    assert_eq!(
        rollup.messages_with_failures, 1,
        "SMb failed, though SMa's undelivered was since read"
    );
    let a = projector.receipt("SMa");
    let timeline = batched
        .timeline(&account(), &conversation(), &message_sid(0), &a.sid)
        .unwrap()
        .unwrap();
    let statuses: Vec<_> = timeline.iter().map(|e| (e.status, e.at)).collect();
    assert_eq!(
        statuses,
        [
            (DeliveryStatus::Queued, at(0)),
            (DeliveryStatus::Sent, at(1000)),
            (DeliveryStatus::Undelivered, at(2000)),
            (DeliveryStatus::Read, at(3000)),
        ]
    );
    let b = projector.receipt("SMb");
    let failed = batched
        .timeline(&account(), &conversation(), &message_sid(0), &b.sid)
        .unwrap()
        .unwrap();
    assert_eq!(failed[1].error_code, Some(30008));
}

#[test]
fn messages_with_failures_follow_each_message_into_and_out_of_failure() {
    let mut projector = Projector::default();
    projector.register(registration(0, "SMa", 1));
    projector.register(registration(1, "SMb", 2));
    projector.register(registration(1, "SMc", 2));
    let (_dir, store) = open();
    let failures = |projector: &Projector, store: &SledQueryStore| {
        store.apply(&projector.changes, &[]).unwrap();
        store
            .rollup(&account(), &conversation())
            .unwrap()
            .unwrap()
            .messages_with_failures
    };
    assert_eq!(failures(&projector, &store), 0);
    projector.report(report("SMb", DeliveryStatus::Undelivered, 1000));
    projector.report(report("SMc", DeliveryStatus::Failed, 1000));
    assert_eq!(failures(&projector, &store), 1, "two failures, one message");
    projector.report(report("SMa", DeliveryStatus::Failed, 1000));
    assert_eq!(failures(&projector, &store), 2);
    projector.report(report("SMb", DeliveryStatus::Read, 2000));
    assert_eq!(failures(&projector, &store), 2, "SMc still failed");
    projector.report(report("SMc", DeliveryStatus::Read, 2000));
    assert_eq!(failures(&projector, &store), 1);
}

#[test]
fn offsets_are_stored_with_the_state_and_survive_a_reopen() {
    let projector = five_recipients();
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let store = SledQueryStore::open(dir.path()).unwrap();
        assert_eq!(store.next_offset(TOPIC, 0).unwrap(), None);
        let other_partition = receipts_store::PartitionOffset {
            partition: 7,
            ..offset(11)
        };
        store
            .apply(&projector.changes, &[offset(42), other_partition])
            .unwrap();
        let changelog = receipts_store::PartitionOffset {
            topic: CHANGELOG.into(),
            partition: 0,
            next_offset: 17,
        };
        store
            .apply_timelines(&projector.changelog, &[changelog])
            .unwrap();
        store.flush().unwrap();
        read_model(&store, &account())
    };
    let store = reopen(dir.path());
    assert_eq!(store.next_offset(TOPIC, 0).unwrap(), Some(42));
    assert_eq!(store.next_offset(TOPIC, 7).unwrap(), Some(11));
    assert_eq!(store.next_offset(TOPIC, 1).unwrap(), None);
    assert_eq!(store.next_offset("other", 0).unwrap(), None);
    assert_eq!(store.next_offset(CHANGELOG, 0).unwrap(), Some(17));
    assert_eq!(read_model(&store, &account()), before);
    assert_eq!(before.messages.len(), 1);
}

#[test]
fn paging_walks_every_message_and_receipt_once_in_either_order() {
    // Seven messages with gaps in their indexes, registered out of order, each with 1..=4
    // receipts; one index is large enough to need all eight key bytes.
    let indexes = [9, 2, 300, 1 << 40, 7, 0, 3];
    let mut projector = Projector::default();
    for (n, index) in indexes.iter().enumerate() {
        for r in 0..=(n % 4) {
            projector.register(registration(*index, &format!("SM{index}-{r}"), 4));
        }
    }
    let (_dir, store) = open();
    store.apply(&projector.changes, &[]).unwrap();
    let mut ascending = indexes.to_vec();
    ascending.sort_unstable();
    let mut descending = ascending.clone();
    descending.reverse();

    for page_size in [1, 2, 3, 7, 8, 100] {
        let walked: Vec<u64> = all_messages(&store, &account(), SortOrder::Ascending, page_size)
            .iter()
            .map(|view| view.index)
            .collect();
        assert_eq!(walked, ascending, "ascending by {page_size}");
        let walked: Vec<u64> = all_messages(&store, &account(), SortOrder::Descending, page_size)
            .iter()
            .map(|view| view.index)
            .collect();
        assert_eq!(walked, descending, "descending by {page_size}");
    }

    // A page that ends exactly at the last message says so.
    let page = store
        .messages_page(&account(), &conversation(), SortOrder::Ascending, 7, None)
        .unwrap();
    assert_eq!((page.items.len(), page.next), (7, None));
    let page = store
        .messages_page(
            &account(),
            &conversation(),
            SortOrder::Descending,
            2,
            Some(3),
        )
        .unwrap();
    let indexes: Vec<u64> = page.items.iter().map(|v| v.index).collect();
    assert_eq!((indexes, page.next), (vec![2, 0], None));
    let page = store
        .messages_page(
            &account(),
            &conversation(),
            SortOrder::Ascending,
            2,
            Some(u64::MAX),
        )
        .unwrap();
    assert!(page.items.is_empty() && page.next.is_none());

    let index = 1 << 40;
    let mut expected: Vec<_> = projector
        .receipts()
        .filter(|r| r.registration.message_index == index)
        .map(|r| r.sid)
        .collect();
    expected.sort();
    assert_eq!(expected.len(), 4);
    for page_size in [1, 2, 3, 4, 5] {
        let walked: Vec<_> = all_receipts(&store, &account(), &message_sid(index), page_size)
            .into_iter()
            .map(|r| r.sid)
            .collect();
        assert_eq!(walked, expected, "receipts by {page_size}");
    }
}

#[test]
fn another_accounts_data_is_not_found() {
    // The same conversation and message sids under two accounts stay two separate read models.
    let mut projector = five_recipients();
    projector.register(registration_of(
        OTHER_ACCOUNT,
        0,
        "SMother",
        Channel::Sms,
        1,
    ));
    projector.report(report("SMother", DeliveryStatus::Failed, 1000));
    let (_dir, store) = open();
    store.apply(&projector.changes, &[]).unwrap();
    store.apply_timelines(&projector.changelog, &[]).unwrap();
    let other = AccountSid::parse(OTHER_ACCOUNT).unwrap();
    let stranger = AccountSid::parse("AC22222222222222222222222222222222").unwrap();
    let (conversation, message) = (conversation(), message_sid(0));

    let mine = read_model(&store, &account());
    assert_eq!(mine.receipts[0].len(), 5);
    assert_eq!(mine.rollup.as_ref().unwrap().messages_with_failures, 0);
    let theirs = read_model(&store, &other);
    assert_eq!(theirs.receipts[0].len(), 1);
    assert_eq!(theirs.rollup.as_ref().unwrap().counts.failed, 1);

    let a = projector.receipt("wamid.a").sid;
    assert!(
        store
            .receipt(&account(), &conversation, &message, &a)
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .timeline(&account(), &conversation, &message, &a)
            .unwrap()
            .is_some()
    );
    for account in [&other, &stranger] {
        assert_eq!(
            store.receipt(account, &conversation, &message, &a).unwrap(),
            None
        );
        assert_eq!(
            store
                .timeline(account, &conversation, &message, &a)
                .unwrap(),
            None
        );
    }
    assert_eq!(
        store.message(&stranger, &conversation, &message).unwrap(),
        None
    );
    assert_eq!(store.rollup(&stranger, &conversation).unwrap(), None);
    let page = store
        .receipts_page(&stranger, &conversation, &message, 50, None)
        .unwrap();
    assert!(page.items.is_empty() && page.next.is_none());
    let page = store
        .messages_page(&stranger, &conversation, SortOrder::Descending, 50, None)
        .unwrap();
    assert!(page.items.is_empty() && page.next.is_none());
}

/// What releases up to 0.1 wrote (storage format 1) for `model`, `account`'s test conversation:
/// text keys, and receipts and timelines in their wire forms.
fn write_format1(tree: &sled::Tree, model: &crate::ReadModel, projector: &Projector) {
    use prost::Message;
    use receipts_domain::ReceiptTimeline;
    use receipts_proto::convert::timestamp_to_wire;
    use receipts_proto::v1;

    let (account, conversation) = (ACCOUNT, crate::CONVERSATION);
    for view in &model.messages {
        let mut key = format!("m/{account}/{conversation}/").into_bytes();
        key.extend_from_slice(&view.index.to_be_bytes());
        key.extend_from_slice(format!("/{}", view.message).as_bytes());
        let stored = v1::StoredMessageDelivery {
            message_sid: view.message.to_string(),
            chat_service_sid: String::new(),
            message_index: view.index,
            expected_receipts: view.expected_receipts,
            counts: Some((&view.counts).into()),
            date_created: Some(timestamp_to_wire(view.date_created)),
            date_updated: Some(timestamp_to_wire(view.date_updated)),
        };
        tree.insert(key, stored.encode_to_vec()).unwrap();
        tree.insert(
            format!("n/{account}/{conversation}/{}", view.message),
            &view.index.to_be_bytes(),
        )
        .unwrap();
    }
    let rollup = model.rollup.as_ref().unwrap();
    let stored = v1::StoredConversationRollup {
        messages: rollup.messages,
        counts: Some((&rollup.counts).into()),
        messages_with_failures: rollup.messages_with_failures,
        last_updated: Some(timestamp_to_wire(rollup.last_updated)),
    };
    tree.insert(
        format!("c/{account}/{conversation}"),
        stored.encode_to_vec(),
    )
    .unwrap();
    for receipt in projector.receipts() {
        let path = format!(
            "{account}/{conversation}/{}/{}",
            receipt.registration.message, receipt.sid
        );
        tree.insert(
            format!("r/{path}"),
            v1::Receipt::from(&receipt).encode_to_vec(),
        )
        .unwrap();
        // The per-version entries nobody reads.
        tree.insert(format!("t/{path}/1"), b"old".as_slice())
            .unwrap();
    }
    let mut timelines: std::collections::BTreeMap<String, ReceiptTimeline> = Default::default();
    for state in &projector.changelog {
        let registration = state.registration.as_ref().unwrap();
        let path = format!(
            "{account}/{conversation}/{}/{}",
            registration.message,
            registration.receipt_sid()
        );
        let timeline = match timelines.remove(&path) {
            Some(timeline) => timeline.apply(state),
            None => ReceiptTimeline::of(state).unwrap(),
        };
        timelines.insert(path, timeline);
    }
    for (path, timeline) in &timelines {
        tree.insert(
            format!("h/{path}"),
            v1::StoredReceiptTimeline::from(timeline).encode_to_vec(),
        )
        .unwrap();
    }
    tree.insert(format!("o/{TOPIC}/0"), &1i64.to_be_bytes())
        .unwrap();
}

#[test]
fn a_read_model_of_format_1_is_moved_when_opened_and_reads_the_same() {
    let mut projector = five_recipients();
    // A Twilio-shaped channel message id, which the current format writes in binary.
    let twilio = "SM0123456789abcdef0123456789abcdef";
    projector.register(registration(0, twilio, 5));
    projector.report(provider_report(twilio, TWILIO, "delivered", None, 4000));
    let (_current_dir, current) = open();
    current.apply(&projector.changes, &[offset(1)]).unwrap();
    current.apply_timelines(&projector.changelog, &[]).unwrap();
    let expected = read_model(&current, &account());
    assert_eq!(expected.receipts[0].len(), 6);
    assert!(
        expected.receipts[0]
            .iter()
            .all(|(_, timeline)| timeline.is_some())
    );

    let dir = tempfile::tempdir().unwrap();
    {
        let db = receipts_store::open_db(dir.path()).unwrap();
        write_format1(&db.open_tree("query").unwrap(), &expected, &projector);
        db.flush().unwrap();
    }
    let moved = reopen(dir.path());
    assert_eq!(read_model(&moved, &account()), expected);
    assert_eq!(moved.next_offset(TOPIC, 0).unwrap(), Some(1));
    // Applying the same changes again finds every one of them already there.
    let again = moved.apply(&projector.changes, &[offset(1)]).unwrap();
    assert_eq!(again.applied, 0);
    drop(moved);
    // Opened again, there is nothing left to move and nothing changed.
    assert_eq!(read_model(&reopen(dir.path()), &account()), expected);
}

#[test]
fn the_read_model_on_fjall_reads_as_on_sled_and_survives_a_reopen() {
    let projector = five_recipients();
    let (_sled_dir, on_sled) = open();
    let dir = tempfile::tempdir().unwrap();
    let storage = receipts_store::StorageConfig::default();
    {
        let on_fjall = receipts_store::FjallQueryStore::open_with(dir.path(), &storage).unwrap();
        for store in [&on_sled as &dyn QueryStore, &on_fjall] {
            store.apply(&projector.changes, &[offset(7)]).unwrap();
            store.apply_timelines(&projector.changelog, &[]).unwrap();
        }
        on_fjall.flush().unwrap();
    }
    let on_fjall = receipts_store::FjallQueryStore::open_with(dir.path(), &storage).unwrap();
    assert_eq!(
        read_model(&on_fjall, &account()),
        read_model(&on_sled, &account())
    );
    assert_eq!(on_fjall.next_offset(TOPIC, 0).unwrap(), Some(7));
    for page_size in [1, 2] {
        assert_eq!(
            all_messages(&on_fjall, &account(), SortOrder::Descending, page_size),
            all_messages(&on_sled, &account(), SortOrder::Descending, page_size)
        );
    }
}
