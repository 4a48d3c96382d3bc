use std::time::Duration;

use receipts_domain::DeliveryStatus;
use receipts_proto::v1;
use tonic::Code;

use crate::support::{ACCOUNT, Harness, OTHER_ACCOUNT, Projection, TOKEN, client, eventually, sid};

/// A watcher of one conversation sees that conversation's changes from now on, in order, and
/// nothing of other conversations or accounts.
#[tokio::test]
async fn watchers_see_their_conversations_changes() {
    let harness = Harness::new().await;
    let dir = tempfile::tempdir().unwrap();
    let running = harness.start(dir.path()).await;
    let mut client = client(running.address, ACCOUNT, TOKEN).await;
    // The read model is live once an earlier change is visible.
    let mut warmup = Projection::default();
    warmup.register(ACCOUNT, "SM0000000000000000000000000000000a", 9, 90, 1, 1);
    harness.publish(&warmup.changes).await;
    eventually("the read model to start", || {
        let mut client = client.clone();
        async move {
            client
                .get_conversation_rollup(v1::GetConversationRollupRequest {
                    conversation_sid: sid("CH", 9),
                })
                .await
                .ok()
        }
    })
    .await;

    let mut stream = client
        .watch_updates(v1::WatchUpdatesRequest {
            conversation_sid: sid("CH", 1),
        })
        .await
        .unwrap()
        .into_inner();
    let mut p = Projection::default();
    p.register(
        OTHER_ACCOUNT,
        "SM00000000000000000000000000000002",
        1,
        10,
        1,
        1,
    );
    p.register(ACCOUNT, "SM00000000000000000000000000000003", 2, 20, 1, 1);
    p.register(ACCOUNT, "SM00000000000000000000000000000001", 1, 10, 1, 1);
    p.report(
        "SM00000000000000000000000000000001",
        DeliveryStatus::Delivered,
        3_000,
        None,
    );
    harness.publish(&p.changes).await;
    harness.publish(&p.changes).await; // re-delivered: not shown again

    let mut seen = Vec::new();
    while seen.len() < 2 {
        let update = tokio::time::timeout(Duration::from_secs(60), stream.message())
            .await
            .expect("updates arrive")
            .unwrap()
            .unwrap();
        let receipt = update.receipt.unwrap();
        assert_eq!(receipt.account_sid, ACCOUNT);
        assert_eq!(receipt.conversation_sid, sid("CH", 1));
        seen.push((receipt.status(), receipt.version));
    }
    assert_eq!(
        seen,
        vec![
            (v1::DeliveryStatus::Queued, 1),
            (v1::DeliveryStatus::Delivered, 2)
        ]
    );
    assert!(
        tokio::time::timeout(Duration::from_secs(2), stream.message())
            .await
            .is_err(),
        "nothing else"
    );

    let status = client
        .watch_updates(v1::WatchUpdatesRequest {
            conversation_sid: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    running.stop().await;
}

/// A watcher that never reads is cut off with RESOURCE_EXHAUSTED instead of being buffered
/// without bound.
#[tokio::test]
async fn a_watcher_that_does_not_keep_up_is_told_so() {
    let harness = Harness::new().await;
    let dir = tempfile::tempdir().unwrap();
    let running = harness.start(dir.path()).await;
    let mut client = client(running.address, ACCOUNT, TOKEN).await;
    let mut warmup = Projection::default();
    warmup.register(ACCOUNT, "SM0000000000000000000000000000000a", 9, 90, 1, 1);
    harness.publish(&warmup.changes).await;
    eventually("the read model to start", || {
        let mut client = client.clone();
        async move {
            client
                .get_conversation_rollup(v1::GetConversationRollupRequest {
                    conversation_sid: sid("CH", 9),
                })
                .await
                .ok()
        }
    })
    .await;
    let mut stream = client
        .watch_updates(v1::WatchUpdatesRequest::default())
        .await
        .unwrap()
        .into_inner();

    // Far more updates than the watch buffer (16) and the transport's buffers hold.
    let mut p = Projection::default();
    for n in 0..3_000u64 {
        p.register(ACCOUNT, &format!("SM{n:032x}"), 1, n, 1, 1);
    }
    harness.publish(&p.changes).await;
    eventually("the read model to apply everything", || {
        let mut client = client.clone();
        async move {
            let rollup = client
                .get_conversation_rollup(v1::GetConversationRollupRequest {
                    conversation_sid: sid("CH", 1),
                })
                .await
                .ok()?
                .into_inner();
            (rollup.receipts == 3_000).then_some(())
        }
    })
    .await;

    let mut received = 0;
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(60), stream.message())
            .await
            .expect("the stream ends")
        {
            Ok(Some(_)) => received += 1,
            Ok(None) => panic!("the stream ended without saying why after {received} updates"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        received < 3_000,
        "a slow client is not buffered without bound"
    );
    running.stop().await;
}
