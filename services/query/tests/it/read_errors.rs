//! The exact answer to every failing read, over gRPC (code and message) and over REST (status,
//! headers and the whole Twilio error body, byte for byte), including which error wins when a
//! call has more than one thing wrong with it.

use receipts_domain::{AccountSid, ChatServiceSid, ConversationSid, MessageSid, ReceiptSid};
use receipts_proto::v1;
use receipts_query::page_token::{PageTokens, messages_scope, receipts_scope};
use receipts_store::SortOrder;
use serde_json::json;
use tonic::{Code, Status};

use crate::rest::{Seeded, service, start_seeded};
use crate::support::{ACCOUNT, OTHER_ACCOUNT, OTHER_TOKEN, TOKEN, client, http, sid};

/// A token this service issues (the test key) over a cursor that is no cursor of the list.
fn bad_cursor(scope: &str) -> String {
    PageTokens::new(b"test key").issue(scope, "not a cursor")
}

fn expect(result: Result<impl std::fmt::Debug, Status>, code: Code, message: &str) {
    let status = result.expect_err("the call fails");
    assert_eq!(
        (status.code(), status.message()),
        (code, message),
        "{status:?}"
    );
}

fn malformed<T: std::fmt::Debug>(
    parse: impl FnOnce(&str) -> Result<T, receipts_domain::IdError>,
    value: &str,
) -> String {
    parse(value).unwrap_err().to_string()
}

#[tokio::test]
async fn grpc_read_errors_keep_their_codes_and_messages() {
    let seeded = start_seeded().await;
    let mut client = client(seeded.running.address, ACCOUNT, TOKEN).await;
    let (ch1, im10, im99) = (sid("CH", 1), sid("IM", 10), sid("IM", 99));
    let (ch99, dy99) = (sid("CH", 99), sid("DY", 99));
    let bad_ch = malformed(ConversationSid::parse, "CH123");
    let bad_im = malformed(MessageSid::parse, "IM123");
    let bad_dy = malformed(ReceiptSid::parse, "DY123");
    let invalid = Code::InvalidArgument;

    let delivery = |conversation: &str, message: &str| v1::GetMessageDeliveryRequest {
        conversation_sid: conversation.to_owned(),
        message_sid: message.to_owned(),
    };
    let calls = [
        (
            delivery("", &im10),
            "conversation_sid is required".to_owned(),
        ),
        (delivery(&ch1, ""), "message_sid is required".to_owned()),
        (
            delivery("CH123", "IM123"),
            format!("conversation_sid: {bad_ch}"),
        ),
        (delivery(&ch1, "IM123"), format!("message_sid: {bad_im}")),
    ];
    for (request, message) in calls {
        expect(
            client.get_message_delivery(request).await,
            invalid,
            &message,
        );
    }
    expect(
        client.get_message_delivery(delivery(&ch1, &im99)).await,
        Code::NotFound,
        &format!("message {im99} in conversation {ch1} not found"),
    );

    let receipts = |message: &str, page_size, page_token: &str| v1::ListReceiptsRequest {
        conversation_sid: ch1.clone(),
        message_sid: message.to_owned(),
        page_size,
        page_token: page_token.to_owned(),
    };
    let scope = receipts_scope(
        &AccountSid::parse(ACCOUNT).unwrap(),
        &ConversationSid::parse(&ch1).unwrap(),
        &MessageSid::parse(&im10).unwrap(),
    );
    let calls = [
        (receipts("IM123", 51, "x"), format!("message_sid: {bad_im}")),
        (
            receipts(&im10, 51, "x"),
            "page_size must be between 1 and 50, got 51".to_owned(),
        ),
        (
            receipts(&im10, 10, "Zm9yZ2Vk"),
            "page_token is not a token this list issued".to_owned(),
        ),
        (
            receipts(&im10, 10, &bad_cursor(&scope)),
            "page_token is not valid".to_owned(),
        ),
    ];
    for (request, message) in calls {
        expect(client.list_receipts(request).await, invalid, &message);
    }
    expect(
        client.list_receipts(receipts(&im99, 0, "")).await,
        Code::NotFound,
        &format!("message {im99} in conversation {ch1} not found"),
    );

    let receipt = |message: &str, receipt: &str| v1::GetReceiptRequest {
        conversation_sid: ch1.clone(),
        message_sid: message.to_owned(),
        receipt_sid: receipt.to_owned(),
    };
    let timeline = |message: &str, receipt: &str| v1::GetReceiptTimelineRequest {
        conversation_sid: ch1.clone(),
        message_sid: message.to_owned(),
        receipt_sid: receipt.to_owned(),
    };
    for (message, sid, answer) in [
        (im10.as_str(), "", "receipt_sid is required".to_owned()),
        ("IM123", "DY123", format!("message_sid: {bad_im}")),
        (&im10, "DY123", format!("receipt_sid: {bad_dy}")),
    ] {
        expect(
            client.get_receipt(receipt(message, sid)).await,
            invalid,
            &answer,
        );
        expect(
            client.get_receipt_timeline(timeline(message, sid)).await,
            invalid,
            &answer,
        );
    }
    let unknown = format!("receipt {dy99} not found");
    expect(
        client.get_receipt(receipt(&im10, &dy99)).await,
        Code::NotFound,
        &unknown,
    );
    expect(
        client.get_receipt_timeline(timeline(&im10, &dy99)).await,
        Code::NotFound,
        &unknown,
    );

    let messages = |conversation: &str, page_size, order, page_token: &str| {
        v1::ListConversationMessagesRequest {
            conversation_sid: conversation.to_owned(),
            page_size,
            order,
            page_token: page_token.to_owned(),
        }
    };
    let scope = messages_scope(
        &AccountSid::parse(ACCOUNT).unwrap(),
        &ConversationSid::parse(&ch1).unwrap(),
        SortOrder::Descending,
    );
    let calls = [
        (
            messages("", 0, 0, ""),
            "conversation_sid is required".to_owned(),
        ),
        (
            messages("CH123", 101, 7, "x"),
            format!("conversation_sid: {bad_ch}"),
        ),
        (
            messages(&ch1, 101, 7, "x"),
            "page_size must be between 1 and 100, got 101".to_owned(),
        ),
        (
            messages(&ch1, 100, 7, "x"),
            "order: unknown value 7".to_owned(),
        ),
        (
            messages(&ch1, 10, v1::Order::Asc as i32, &bad_cursor(&scope)),
            "page_token is not a token this list issued".to_owned(),
        ),
        (
            messages(&ch1, 10, v1::Order::Desc as i32, &bad_cursor(&scope)),
            "page_token is not valid".to_owned(),
        ),
    ];
    for (request, message) in calls {
        expect(
            client.list_conversation_messages(request).await,
            invalid,
            &message,
        );
    }
    let gone = format!("conversation {ch99} not found");
    expect(
        client
            .list_conversation_messages(messages(&ch99, 0, 0, ""))
            .await,
        Code::NotFound,
        &gone,
    );
    let rollup = |conversation: &str| v1::GetConversationRollupRequest {
        conversation_sid: conversation.to_owned(),
    };
    expect(
        client.get_conversation_rollup(rollup(&ch99)).await,
        Code::NotFound,
        &gone,
    );
    expect(
        client.get_conversation_rollup(rollup("CH123")).await,
        invalid,
        &format!("conversation_sid: {bad_ch}"),
    );
    expect(
        client
            .watch_updates(v1::WatchUpdatesRequest {
                conversation_sid: "CH123".into(),
            })
            .await,
        invalid,
        &format!("conversation_sid: {bad_ch}"),
    );

    // Another account's sids are simply not found.
    let mut other =
        crate::support::client(seeded.running.address, OTHER_ACCOUNT, OTHER_TOKEN).await;
    expect(
        other.get_message_delivery(delivery(&ch1, &im10)).await,
        Code::NotFound,
        &format!("message {im10} in conversation {ch1} not found"),
    );
    expect(
        other.get_conversation_rollup(rollup(&ch1)).await,
        Code::NotFound,
        &format!("conversation {ch1} not found"),
    );
    seeded.running.stop().await;
}

/// `path` answers `status` with exactly Twilio's error body for `code` and `message`.
async fn assert_body(seeded: &Seeded, path: &str, status: u16, code: u32, message: &str) {
    assert_answer(&seeded.get(path).await, path, status, code, message);
}

fn assert_answer(
    response: &crate::support::HttpResponse,
    path: &str,
    status: u16,
    code: u32,
    message: &str,
) {
    let body = json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status,
    });
    assert_eq!(
        (response.status, response.body.as_str()),
        (status, body.to_string().as_str()),
        "{path}"
    );
    assert_eq!(
        response.header("content-type"),
        Some("application/json"),
        "{path}"
    );
}

#[tokio::test]
async fn rest_read_errors_keep_their_twilio_bodies() {
    let seeded = start_seeded().await;
    let (ch1, im10, im12, im99) = (sid("CH", 1), sid("IM", 10), sid("IM", 12), sid("IM", 99));
    let (ch2, im20, ch99, dy99) = (sid("CH", 2), sid("IM", 20), sid("CH", 99), sid("DY", 99));
    let (is1, is2) = (service(), sid("IS", 2));
    let bad_ch = malformed(ConversationSid::parse, "CH123");
    let bad_im = malformed(MessageSid::parse, "IM123");
    let bad_dy = malformed(ReceiptSid::parse, "DY123");
    let bad_is = malformed(ChatServiceSid::parse, "IS123");
    let token = "Invalid PageToken: request the paging URLs exactly as the API provided them";
    let account = AccountSid::parse(ACCOUNT).unwrap();
    let conversation = ConversationSid::parse(&ch1).unwrap();
    let receipts_token = bad_cursor(&receipts_scope(
        &account,
        &conversation,
        &MessageSid::parse(&im12).unwrap(),
    ));
    let messages_token = bad_cursor(&messages_scope(
        &account,
        &conversation,
        SortOrder::Ascending,
    ));

    let cases = [
        // Malformed sids name Twilio's parameter; the path's sids are checked before the query.
        (
            format!("/v1/Conversations/CH123/Messages/{im10}"),
            400,
            20001,
            format!("Invalid parameter ConversationSid: {bad_ch}"),
        ),
        (
            format!("/v1/Conversations/{ch1}/Messages/IM123"),
            400,
            20001,
            format!("Invalid parameter Sid: {bad_im}"),
        ),
        (
            "/v1/Conversations/CH123/Messages?PageSize=0".to_owned(),
            400,
            20001,
            format!("Invalid parameter ConversationSid: {bad_ch}"),
        ),
        (
            format!("/v1/Conversations/{ch1}/Messages/IM123/Receipts?PageSize=0"),
            400,
            20001,
            format!("Invalid parameter MessageSid: {bad_im}"),
        ),
        (
            format!("/v1/Conversations/{ch1}/Messages/IM123/Receipts/DY123"),
            400,
            20001,
            format!("Invalid parameter MessageSid: {bad_im}"),
        ),
        (
            format!("/v1/Conversations/{ch1}/Messages/{im10}/Receipts/DY123"),
            400,
            20001,
            format!("Invalid parameter Sid: {bad_dy}"),
        ),
        (
            format!("/v1/Services/IS123/Conversations/CH123/Messages/{im10}"),
            400,
            20001,
            format!("Invalid parameter ChatServiceSid: {bad_is}"),
        ),
        // The query is checked before the page token is opened.
        (
            format!("/v1/Conversations/{ch1}/Messages/{im12}/Receipts?PageToken=forged&PageSize=0"),
            400,
            20001,
            "Invalid parameter PageSize: must be an integer from 1 to 50, got \"0\"".to_owned(),
        ),
        (
            format!("/v1/Conversations/{ch1}/Messages/{im12}/Receipts?PageToken=forged"),
            400,
            21481,
            token.to_owned(),
        ),
        (
            format!("/v1/Conversations/{ch1}/Messages/{im12}/Receipts?PageToken={receipts_token}"),
            400,
            21481,
            token.to_owned(),
        ),
        (
            format!("/v1/Conversations/{ch1}/Messages?PageToken={messages_token}"),
            400,
            21481,
            token.to_owned(),
        ),
        // A token is checked before the list is known to exist.
        (
            format!("/v1/Conversations/{ch99}/Messages?PageToken=forged"),
            400,
            21481,
            token.to_owned(),
        ),
        // Unknown resources, and those of another chat service.
        (
            format!("/v1/Conversations/{ch1}/Messages/{im99}"),
            404,
            20404,
            format!("The requested resource message {im99} of conversation {ch1} was not found"),
        ),
        (
            format!("/v1/Conversations/{ch1}/Messages/{im99}/Receipts"),
            404,
            20404,
            format!("The requested resource message {im99} of conversation {ch1} was not found"),
        ),
        (
            format!("/v1/Conversations/{ch99}/Messages"),
            404,
            20404,
            format!("The requested resource conversation {ch99} was not found"),
        ),
        (
            format!("/v1/Conversations/{ch1}/Messages/{im10}/Receipts/{dy99}"),
            404,
            20404,
            format!("The requested resource receipt {dy99} was not found"),
        ),
        (
            format!("/v1/Services/{is2}/Conversations/{ch2}/Messages"),
            404,
            20404,
            format!("The requested resource conversation {ch2} was not found"),
        ),
        (
            format!("/v1/Services/{is2}/Conversations/{ch2}/Messages/{im20}"),
            404,
            20404,
            format!("The requested resource message {im20} of conversation {ch2} was not found"),
        ),
        (
            format!("/v1/Services/{is2}/Conversations/{ch2}/Messages/{im20}/Receipts"),
            404,
            20404,
            format!("The requested resource message {im20} of conversation {ch2} was not found"),
        ),
        (
            format!("/v1/Services/{is1}/Conversations/{ch1}/Messages"),
            404,
            20404,
            format!("The requested resource conversation {ch1} was not found"),
        ),
        // An empty path segment is a malformed sid, not a missing one.
        (
            format!("/v1/Conversations//Messages/{im10}"),
            400,
            20001,
            format!(
                "Invalid parameter ConversationSid: {}",
                malformed(ConversationSid::parse, "")
            ),
        ),
    ];
    for (path, status, code, message) in cases {
        assert_body(&seeded, &path, status, code, &message).await;
    }

    // A receipt of the service family read through another service, and another account's
    // receipt, are not found.
    let listed = seeded
        .get(&format!(
            "/v1/Services/{is1}/Conversations/{ch2}/Messages/{im20}/Receipts"
        ))
        .await
        .json();
    let dy = listed["delivery_receipts"][0]["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_body(
        &seeded,
        &format!("/v1/Services/{is2}/Conversations/{ch2}/Messages/{im20}/Receipts/{dy}"),
        404,
        20404,
        &format!("The requested resource receipt {dy} was not found"),
    )
    .await;
    let path = format!("/v1/Conversations/{ch2}/Messages/{im20}/Receipts/{dy}");
    let other = http(
        "GET",
        &seeded.url(&path),
        Some((OTHER_ACCOUNT, OTHER_TOKEN)),
        &[],
    )
    .await;
    assert_answer(
        &other,
        &path,
        404,
        20404,
        &format!("The requested resource receipt {dy} was not found"),
    );
    seeded.running.stop().await;
}
