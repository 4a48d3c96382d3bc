use receipts_proto::v1;
use tonic::Code;

use crate::support::{
    ACCOUNT, Harness, OTHER_ACCOUNT, OTHER_TOKEN, Projection, TOKEN, client, eventually, sid,
};

/// Wrong or missing credentials are refused, and an account never sees another's data, even
/// when it knows the sids.
#[tokio::test]
async fn accounts_see_only_their_own_data() {
    let harness = Harness::new().await;
    let dir = tempfile::tempdir().unwrap();
    let running = harness.start(dir.path()).await;
    let mut projection = Projection::default();
    projection.register(ACCOUNT, "SM00000000000000000000000000000001", 1, 10, 1, 1);
    projection.register(
        OTHER_ACCOUNT,
        "SM00000000000000000000000000000002",
        2,
        20,
        1,
        1,
    );
    harness.publish(&projection.changes).await;

    let mut one = client(running.address, ACCOUNT, TOKEN).await;
    let mut two = client(running.address, OTHER_ACCOUNT, OTHER_TOKEN).await;
    let own = |conversation, message| v1::GetMessageDeliveryRequest {
        conversation_sid: sid("CH", conversation),
        message_sid: sid("IM", message),
    };
    eventually("both accounts' messages", || {
        let (mut one, mut two) = (one.clone(), two.clone());
        async move {
            one.get_message_delivery(own(1, 10)).await.ok()?;
            two.get_message_delivery(own(2, 20)).await.ok()
        }
    })
    .await;

    let status = one.get_message_delivery(own(2, 20)).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = two.get_message_delivery(own(1, 10)).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let receipt = one
        .list_receipts(v1::ListReceiptsRequest {
            conversation_sid: sid("CH", 1),
            message_sid: sid("IM", 10),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .receipts
        .remove(0);
    let status = two
        .get_receipt(v1::GetReceiptRequest {
            conversation_sid: receipt.conversation_sid.clone(),
            message_sid: receipt.message_sid.clone(),
            receipt_sid: receipt.sid.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    let mut wrong = client(running.address, ACCOUNT, OTHER_TOKEN).await;
    assert_eq!(
        wrong
            .get_message_delivery(own(1, 10))
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", running.address))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut anonymous = v1::delivery_query_client::DeliveryQueryClient::new(channel);
    assert_eq!(
        anonymous
            .get_message_delivery(own(1, 10))
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );

    running.stop().await;
}
