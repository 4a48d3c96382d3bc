//! Accounts are tenants: a report only ever touches the receipt of the account it was
//! authenticated for, and two accounts registering the same channel message id get two receipts.

use std::time::Duration;

use receipts_domain::{AccountSid, ChannelMessageId, DeliveryStatus, ReceiptKey};
use receipts_proto::codec::Encoding;
use receipts_store::{ProjectorStore, SledProjectorStore};

use crate::support::{
    ACCOUNT, Harness, assert_no_more, key, of_account, read_updates, registration, report,
};

const OTHER: &str = "AC00000000000000000000000000000002";
/// 9999-12-31T23:59:59Z, the latest provider time ingest accepts.
const FAR_FUTURE: i64 = 253_402_300_799_000;

#[tokio::test]
async fn a_report_only_touches_its_own_accounts_receipt() {
    let harness = Harness::new(2).await;
    let dir = tempfile::tempdir().unwrap();
    let (shutdown, running) = harness.spawn(dir.path());
    let reader = harness.reader(&harness.topics.receipt_updates);

    // `wamid.shared` is registered by both accounts; `wamid.a` only by ACCOUNT. OTHER reports
    // read for both ids, and far in the future: it must neither move ACCOUNT's receipts nor
    // pin them.
    harness
        .produce(
            &[
                registration("wamid.shared", 1, 1, 1, 1),
                registration("wamid.a", 1, 2, 1, 1),
                of_account(registration("wamid.shared", 9, 9, 9, 1), OTHER),
                of_account(
                    report("wamid.shared", DeliveryStatus::Read, FAR_FUTURE),
                    OTHER,
                ),
                of_account(report("wamid.a", DeliveryStatus::Read, FAR_FUTURE), OTHER),
                report("wamid.shared", DeliveryStatus::Delivered, 2_000),
            ],
            Encoding::Protobuf,
        )
        .await;

    // Three registrations, OTHER's read of its own receipt, ACCOUNT's delivered.
    let updates = read_updates(&reader, 5).await;
    assert_no_more(&reader, Duration::from_secs(3)).await;
    let status_of = |account: &str, id: &str| {
        let sid = ReceiptKey::new(
            AccountSid::parse(account).unwrap(),
            ChannelMessageId::parse(id).unwrap(),
        )
        .receipt_sid();
        updates
            .iter()
            .rev()
            .find(|(_, u)| u.receipt.sid == sid)
            .map(|(_, u)| {
                (
                    u.receipt.status(),
                    u.receipt.registration.account.to_string(),
                )
            })
    };
    assert_eq!(
        status_of(ACCOUNT, "wamid.shared"),
        Some((DeliveryStatus::Delivered, ACCOUNT.to_owned()))
    );
    assert_eq!(
        status_of(ACCOUNT, "wamid.a"),
        Some((DeliveryStatus::Queued, ACCOUNT.to_owned()))
    );
    assert_eq!(
        status_of(OTHER, "wamid.shared"),
        Some((DeliveryStatus::Read, OTHER.to_owned()))
    );

    shutdown.cancel();
    running.await.unwrap();
    let store = SledProjectorStore::open(dir.path()).unwrap();
    let own = store.state(&key("wamid.a")).unwrap().unwrap();
    assert_eq!(
        own.best, None,
        "OTHER's report never reached ACCOUNT's state"
    );
    // OTHER's report of an id it never registered waits under OTHER's key.
    let parked = store.parked().unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].key.account.as_str(), OTHER);
    assert_eq!(parked[0].key.channel_message_id.as_str(), "wamid.a");
}
