use receipts_domain::DeliveryStatus;
use receipts_proto::v1;
use tonic::Code;

use crate::support::{ACCOUNT, Harness, Projection, TOKEN, client, eventually, sid};

/// The seed's worked example: five SMS/WhatsApp recipients, two read, one delivered, two sent.
fn seed_example() -> Projection {
    let mut p = Projection::default();
    for n in 1..=5u64 {
        p.register(ACCOUNT, &format!("SM{n:032x}"), 1, 10, n, 5);
    }
    for n in 1..=5u64 {
        p.report(&format!("SM{n:032x}"), DeliveryStatus::Sent, 2_000, None);
    }
    p.report(&format!("SM{:032x}", 1), DeliveryStatus::Read, 4_000, None);
    p.report(&format!("SM{:032x}", 2), DeliveryStatus::Read, 4_000, None);
    p.report(
        &format!("SM{:032x}", 3),
        DeliveryStatus::Delivered,
        3_000,
        None,
    );
    // A second message of the conversation, with a failure.
    p.register(ACCOUNT, "SMf0000000000000000000000000000001", 1, 11, 1, 1);
    p.report(
        "SMf0000000000000000000000000000001",
        DeliveryStatus::Failed,
        5_000,
        Some(30003),
    );
    p
}

fn amounts(d: &v1::DeliverySummary) -> (u64, [v1::DeliveryAmount; 5]) {
    (
        d.total,
        [
            d.sent(),
            d.delivered(),
            d.read(),
            d.failed(),
            d.undelivered(),
        ],
    )
}

#[tokio::test]
async fn every_rpc_answers_from_the_read_model() {
    use v1::DeliveryAmount::{All, None, Some};
    let harness = Harness::new().await;
    let dir = tempfile::tempdir().unwrap();
    let running = harness.start(dir.path()).await;
    let projection = seed_example();
    // Everything twice, and the first half again late: re-deliveries and stale versions.
    harness.publish(&projection.changes).await;
    harness.publish(&projection.changes).await;
    harness
        .publish(&projection.changes[..projection.changes.len() / 2])
        .await;

    let mut client = client(running.address, ACCOUNT, TOKEN).await;
    let conversation = sid("CH", 1);
    let message = sid("IM", 10);
    let request = v1::GetMessageDeliveryRequest {
        conversation_sid: conversation.clone(),
        message_sid: message.clone(),
    };
    let delivery = eventually("the seed example", || {
        let mut client = client.clone();
        let request = request.clone();
        async move {
            let reply = client
                .get_message_delivery(request)
                .await
                .ok()?
                .into_inner();
            (reply.delivery.as_ref()?.read_count == 2
                && reply.delivery.as_ref()?.delivered_count == 3)
                .then_some(reply)
        }
    })
    .await;
    let summary = delivery.delivery.unwrap();
    assert_eq!(amounts(&summary), (5, [All, Some, Some, None, None]));
    assert_eq!(
        (
            summary.sent_count,
            summary.delivered_count,
            summary.read_count
        ),
        (5, 3, 2)
    );
    assert_eq!(delivery.message_index, 10);

    // Receipts, paged by two: every receipt exactly once, in a stable order.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_receipts(v1::ListReceiptsRequest {
                conversation_sid: conversation.clone(),
                message_sid: message.clone(),
                page_size: 2,
                page_token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.receipts.len() <= 2);
        seen.extend(page.receipts);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 5);
    let mut sids: Vec<_> = seen.iter().map(|r| r.sid.clone()).collect();
    let listed = sids.clone();
    sids.sort();
    sids.dedup();
    assert_eq!(sids, listed, "stable order, no repeats");
    let read = seen
        .iter()
        .find(|r| r.status() == v1::DeliveryStatus::Read)
        .unwrap();
    assert_eq!(read.version, 3, "registered, sent, read");

    let one = client
        .get_receipt(v1::GetReceiptRequest {
            conversation_sid: conversation.clone(),
            message_sid: message.clone(),
            receipt_sid: read.sid.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(&one, read);

    // Timelines follow the projector changelog: queued at the registration, then every status
    // reported, at its provider time; versions are always 0.
    harness.write_changelog(&projection.states).await;
    let timeline_request = v1::GetReceiptTimelineRequest {
        conversation_sid: conversation.clone(),
        message_sid: message.clone(),
        receipt_sid: read.sid.clone(),
    };
    let timeline = eventually("the timeline", || {
        let mut client = client.clone();
        let request = timeline_request.clone();
        async move {
            let reply = client.get_receipt_timeline(request).await.ok();
            reply.map(tonic::Response::into_inner)
        }
    })
    .await;
    let statuses: Vec<_> = timeline
        .entries
        .iter()
        .map(|e| {
            let at = e.provider_timestamp.as_ref().map(|t| t.seconds);
            (e.status(), at, e.version)
        })
        .collect();
    assert_eq!(
        statuses,
        vec![
            (v1::DeliveryStatus::Queued, Option::Some(1), 0),
            (v1::DeliveryStatus::Sent, Option::Some(2), 0),
            (v1::DeliveryStatus::Read, Option::Some(4), 0)
        ]
    );

    // The conversation's messages, both orders, one per page.
    for (order, expected) in [
        (v1::Order::Asc, vec![10, 11]),
        (v1::Order::Desc, vec![11, 10]),
    ] {
        let mut indexes = Vec::new();
        let mut token = String::new();
        loop {
            let page = client
                .list_conversation_messages(v1::ListConversationMessagesRequest {
                    conversation_sid: conversation.clone(),
                    order: order.into(),
                    page_size: 1,
                    page_token: token.clone(),
                })
                .await
                .unwrap()
                .into_inner();
            indexes.extend(page.messages.iter().map(|m| m.message_index));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(indexes, expected, "{order:?}");
    }

    let rollup = eventually("the failed message in the rollup", || {
        let mut client = client.clone();
        let conversation = conversation.clone();
        async move {
            let rollup = client
                .get_conversation_rollup(v1::GetConversationRollupRequest {
                    conversation_sid: conversation,
                })
                .await
                .ok()?
                .into_inner();
            (rollup.messages_with_failures == 1).then_some(rollup)
        }
    })
    .await;
    assert_eq!((rollup.messages, rollup.receipts), (2, 6));
    let counts = rollup.counts.unwrap();
    assert_eq!(
        (counts.sent, counts.delivered, counts.read, counts.failed),
        (2, 1, 2, 1)
    );

    running.stop().await;
}

#[tokio::test]
async fn bad_input_is_invalid_argument_and_unknown_sids_not_found() {
    let harness = Harness::new().await;
    let dir = tempfile::tempdir().unwrap();
    let running = harness.start(dir.path()).await;
    let mut projection = Projection::default();
    projection.register(ACCOUNT, "SM00000000000000000000000000000001", 1, 10, 1, 1);
    harness.publish(&projection.changes).await;
    let mut client = client(running.address, ACCOUNT, TOKEN).await;
    let (conversation, message) = (sid("CH", 1), sid("IM", 10));
    eventually("the message", || {
        let mut client = client.clone();
        let request = v1::GetMessageDeliveryRequest {
            conversation_sid: conversation.clone(),
            message_sid: message.clone(),
        };
        async move { client.get_message_delivery(request).await.ok() }
    })
    .await;

    let status = client
        .get_message_delivery(v1::GetMessageDeliveryRequest {
            conversation_sid: "CH123".into(),
            message_sid: message.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("conversation_sid"),
        "{}",
        status.message()
    );

    let unknown = sid("IM", 99);
    let status = client
        .get_message_delivery(v1::GetMessageDeliveryRequest {
            conversation_sid: conversation.clone(),
            message_sid: unknown.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains(&unknown), "{}", status.message());

    let receipts = |page_size, page_token: &str| v1::ListReceiptsRequest {
        conversation_sid: conversation.clone(),
        message_sid: message.clone(),
        page_size,
        page_token: page_token.to_owned(),
    };
    let status = client.list_receipts(receipts(51, "")).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("page_size"),
        "{}",
        status.message()
    );
    let status = client
        .list_receipts(receipts(10, "Zm9yZ2Vk"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("page_token"),
        "{}",
        status.message()
    );
    let all = client
        .list_receipts(receipts(0, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.receipts.len(), 1, "page size 0 means the default");

    let status = client
        .get_receipt(v1::GetReceiptRequest {
            conversation_sid: conversation.clone(),
            message_sid: message.clone(),
            receipt_sid: sid("DY", 5),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = client
        .get_conversation_rollup(v1::GetConversationRollupRequest {
            conversation_sid: sid("CH", 2),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    running.stop().await;
}

/// A restarted instance resumes from its stored offsets and answers exactly as before.
#[tokio::test]
async fn a_restart_resumes_and_answers_identically() {
    restart_resumes_and_answers_identically(receipts_store::StorageEngine::Sled).await;
}

#[tokio::test]
async fn on_fjall_a_restart_resumes_and_answers_identically() {
    restart_resumes_and_answers_identically(receipts_store::StorageEngine::Fjall).await;
}

async fn restart_resumes_and_answers_identically(engine: receipts_store::StorageEngine) {
    let on_engine = |config: &mut receipts_query::QueryConfig| config.storage.engine = engine;
    let harness = Harness::new().await;
    let dir = tempfile::tempdir().unwrap();
    let projection = seed_example();
    harness.publish(&projection.changes).await;
    let request = v1::GetConversationRollupRequest {
        conversation_sid: sid("CH", 1),
    };

    let running = harness.start_with(dir.path(), on_engine).await;
    let client_one = client(running.address, ACCOUNT, TOKEN).await;
    let before = eventually("the whole example", || {
        let mut client = client_one.clone();
        let request = request.clone();
        async move {
            let rollup = client
                .get_conversation_rollup(request)
                .await
                .ok()?
                .into_inner();
            (rollup.receipts == 6
                && rollup.counts.as_ref()?.read == 2
                && rollup.messages_with_failures == 1)
                .then_some(rollup)
        }
    })
    .await;
    running.stop().await;

    let running = harness.start_with(dir.path(), on_engine).await;
    let mut client_two = client(running.address, ACCOUNT, TOKEN).await;
    assert_eq!(
        client_two
            .get_conversation_rollup(request.clone())
            .await
            .unwrap()
            .into_inner(),
        before
    );
    // Only what is new is applied after the restart.
    let mut more = Projection::default();
    more.register(ACCOUNT, "SMe0000000000000000000000000000001", 1, 12, 1, 1);
    harness.publish(&more.changes).await;
    let after = eventually("the new message", || {
        let mut client = client_two.clone();
        let request = request.clone();
        async move {
            let rollup = client
                .get_conversation_rollup(request)
                .await
                .ok()?
                .into_inner();
            (rollup.messages == 3).then_some(rollup)
        }
    })
    .await;
    assert_eq!(after.receipts, 7);
    running.stop().await;
}

/// A replica started after retention removed every `receipt-updates` record it would need
/// bootstraps from the projector changelog and serves every receipt and summary; what arrives
/// afterwards is applied on top.
#[tokio::test]
async fn a_replica_started_after_retention_bootstraps_from_the_projector_changelog() {
    let harness = Harness::new().await;
    let mut projection = seed_example();
    harness.publish(&projection.changes).await;
    harness.write_changelog(&projection.states).await;
    harness.trim_updates().await;

    let dir = tempfile::tempdir().unwrap();
    let running = harness.start(dir.path()).await;
    let client_one = client(running.address, ACCOUNT, TOKEN).await;
    let request = v1::GetConversationRollupRequest {
        conversation_sid: sid("CH", 1),
    };
    eventually("the example, from the changelog", || {
        let mut client = client_one.clone();
        let request = request.clone();
        async move {
            let rollup = client
                .get_conversation_rollup(request)
                .await
                .ok()?
                .into_inner();
            (rollup.receipts == 6
                && rollup.counts.as_ref()?.read == 2
                && rollup.messages_with_failures == 1)
                .then_some(())
        }
    })
    .await;
    // New updates after the bootstrap apply on top of it.
    let before = projection.changes.len();
    projection.report(&format!("SM{:032x}", 4), DeliveryStatus::Read, 9_000, None);
    harness.publish(&projection.changes[before..]).await;
    eventually("the read after the bootstrap", || {
        let mut client = client_one.clone();
        let request = request.clone();
        async move {
            let rollup = client
                .get_conversation_rollup(request)
                .await
                .ok()?
                .into_inner();
            (rollup.counts.as_ref()?.read == 3).then_some(())
        }
    })
    .await;
    running.stop().await;
}

/// Started before the receipt-updates topic exists, the service waits for it and then reads it.
#[tokio::test]
async fn a_missing_topic_is_waited_for() {
    let mut harness = Harness::new().await;
    harness.topics = receipts_testkit::unique_topics();
    let dir = tempfile::tempdir().unwrap();
    let running = harness.start(dir.path()).await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    receipts_bus::topics::ensure_topics(&harness.kafka, &harness.topics.specs(2))
        .await
        .unwrap();
    harness.publish(&seed_example().changes).await;
    let client = client(running.address, ACCOUNT, TOKEN).await;
    eventually("the example after the topic appeared", || {
        let mut client = client.clone();
        async move {
            client
                .get_conversation_rollup(v1::GetConversationRollupRequest {
                    conversation_sid: sid("CH", 1),
                })
                .await
                .ok()
                .filter(|r| r.get_ref().receipts == 6)
        }
    })
    .await;
    running.stop().await;
}
