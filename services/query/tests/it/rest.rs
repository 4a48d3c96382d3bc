//! The Twilio-compatible REST facade, read side: every body validates against Twilio's schemas
//! and keeps Twilio's key order; paging is walked through `next_page_url` exactly as given; bad
//! input, bad credentials and other accounts' sids get Twilio's errors.

use receipts_domain::{ChatServiceSid, DeliveryStatus};
use serde_json::Value;

use crate::contract::{
    MESSAGE_KEYS, META_KEYS, RECEIPT_KEYS, assert_keys, assert_twilio_error, assert_valid,
    with_service,
};
use crate::support::{
    ACCOUNT, Harness, HttpResponse, OTHER_ACCOUNT, OTHER_TOKEN, Projection, Running, TOKEN,
    eventually, http, sid,
};

const MESSAGES: &str = "/v1/Conversations/{ConversationSid}/Messages";
const MESSAGE: &str = "/v1/Conversations/{ConversationSid}/Messages/{Sid}";
const RECEIPTS: &str = "/v1/Conversations/{ConversationSid}/Messages/{MessageSid}/Receipts";
const RECEIPT: &str = "/v1/Conversations/{ConversationSid}/Messages/{MessageSid}/Receipts/{Sid}";
const S_MESSAGES: &str = "/v1/Services/{ChatServiceSid}/Conversations/{ConversationSid}/Messages";
const S_MESSAGE: &str =
    "/v1/Services/{ChatServiceSid}/Conversations/{ConversationSid}/Messages/{Sid}";
const S_RECEIPTS: &str =
    "/v1/Services/{ChatServiceSid}/Conversations/{ConversationSid}/Messages/{MessageSid}/Receipts";
const S_RECEIPT: &str = "/v1/Services/{ChatServiceSid}/Conversations/{ConversationSid}/Messages/{MessageSid}/Receipts/{Sid}";

pub(crate) fn service() -> String {
    sid("IS", 1)
}

/// CH1: IM10 to six recipients (two read, one delivered, two sent, one still queued on an SMPP
/// id), IM11 failed with 30003, IM12 to seven recipients, all sent. CH2 (chat service IS1): IM20
/// delivered.
pub(crate) fn seed() -> Projection {
    let mut p = Projection::default();
    for n in 1..=5u64 {
        p.register(ACCOUNT, &format!("SM{n:032x}"), 1, 10, n, 6);
        p.report(&format!("SM{n:032x}"), DeliveryStatus::Sent, 2_000, None);
    }
    p.register(ACCOUNT, "smpp:smsc-a:4711", 1, 10, 6, 6);
    p.report(&format!("SM{:032x}", 1), DeliveryStatus::Read, 4_000, None);
    p.report(&format!("SM{:032x}", 2), DeliveryStatus::Read, 4_000, None);
    p.report(
        &format!("SM{:032x}", 3),
        DeliveryStatus::Delivered,
        3_000,
        None,
    );
    p.register(ACCOUNT, &sid("SM", 0xf1), 1, 11, 1, 1);
    p.report(&sid("SM", 0xf1), DeliveryStatus::Failed, 5_000, Some(30003));
    for n in 1..=7u64 {
        p.register(ACCOUNT, &sid("SM", 0x700 + n), 1, 12, n, 7);
        p.report(&sid("SM", 0x700 + n), DeliveryStatus::Sent, 6_000, None);
    }
    p.chat_service = Some(ChatServiceSid::parse(&service()).unwrap());
    p.register(ACCOUNT, &sid("SM", 0x2001), 2, 20, 1, 1);
    p.report(&sid("SM", 0x2001), DeliveryStatus::Delivered, 7_000, None);
    p
}

pub(crate) struct Seeded {
    pub(crate) harness: Harness,
    pub(crate) running: Running,
    _dir: tempfile::TempDir,
}

impl Seeded {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running.rest_address)
    }

    pub(crate) async fn get(&self, path: &str) -> HttpResponse {
        http("GET", &self.url(path), Some((ACCOUNT, TOKEN)), &[]).await
    }
}

/// A query service with the seed applied: the REST facade answers for every seeded message.
pub(crate) async fn start_seeded() -> Seeded {
    let harness = Harness::new().await;
    let dir = tempfile::tempdir().unwrap();
    let running = harness.start(dir.path()).await;
    let projection = seed();
    harness.publish(&projection.changes).await;
    // Timelines follow the projector changelog, as the projector writes it.
    harness.write_changelog(&projection.states).await;
    let seeded = Seeded {
        harness,
        running,
        _dir: dir,
    };
    let last = format!(
        "/v1/Services/{}/Conversations/{}/Messages/{}",
        service(),
        sid("CH", 2),
        sid("IM", 20)
    );
    let first = format!(
        "/v1/Conversations/{}/Messages/{}",
        sid("CH", 1),
        sid("IM", 10)
    );
    eventually("the seed in the read model", || async {
        let first = seeded.get(&first).await;
        let done = seeded.get(&last).await.status == 200
            && first.status == 200
            && first.json()["delivery"]["read"] == "some";
        done.then_some(())
    })
    .await;
    eventually("every seeded timeline", || async {
        for registration in projection
            .states
            .values()
            .filter_map(|s| s.registration.as_ref())
        {
            let family = match &registration.chat_service {
                Some(service) => format!("/v1/Services/{service}/Conversations"),
                None => "/v1/Conversations".to_owned(),
            };
            let path = format!(
                "{family}/{}/Messages/{}/Receipts/{}/Timeline",
                registration.conversation,
                registration.message,
                registration.receipt_sid()
            );
            if seeded.get(&path).await.status != 200 {
                return None;
            }
        }
        Some(())
    })
    .await;
    seeded
}

fn ok(response: &HttpResponse) -> Value {
    assert_eq!(response.status, 200, "{}", response.body);
    assert!(
        response
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/json")),
        "{:?}",
        response.headers
    );
    response.json()
}

#[tokio::test]
async fn reads_follow_the_twilio_contract() {
    let seeded = start_seeded().await;
    let base = seeded.url("");
    let (ch1, im10) = (sid("CH", 1), sid("IM", 10));

    // A message with its delivery summary; what the service does not hold is null.
    let path = format!("/v1/Conversations/{ch1}/Messages/{im10}");
    let message = ok(&seeded.get(&path).await);
    assert_valid(MESSAGE, "get", 200, &message);
    assert_keys(&message, MESSAGE_KEYS);
    assert_eq!(
        message["delivery"],
        serde_json::json!({"total": 6, "sent": "some", "delivered": "some", "read": "some",
            "failed": "none", "undelivered": "none"})
    );
    assert_keys(
        &message["delivery"],
        &[
            "total",
            "sent",
            "delivered",
            "read",
            "failed",
            "undelivered",
        ],
    );
    for absent in [
        "body",
        "media",
        "author",
        "participant_sid",
        "attributes",
        "content_sid",
    ] {
        assert!(message[absent].is_null(), "{absent}");
    }
    assert_eq!(message["index"], 10);
    assert_eq!(message["account_sid"], ACCOUNT);
    assert_eq!(message["url"], format!("{base}{path}"));
    assert_eq!(
        message["links"]["delivery_receipts"],
        format!("{base}{path}/Receipts")
    );
    assert_eq!(
        message["links"]["channel_metadata"],
        format!("{base}{path}/ChannelMetadata")
    );
    assert_eq!(message["date_created"], "1970-01-01T00:00:01Z");

    // Messages, by index in either order; Order is case-insensitive and echoed lowercase.
    let list = ok(&seeded
        .get(&format!("/v1/Conversations/{ch1}/Messages?Order=DeSc"))
        .await);
    assert_valid(MESSAGES, "get", 200, &list);
    assert_keys(&list, &["meta", "messages"]);
    assert_keys(&list["meta"], META_KEYS);
    let indexes: Vec<&Value> = list["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["index"])
        .collect();
    assert_eq!(indexes, [12, 11, 10]);
    assert_eq!(list["meta"]["key"], "messages");
    assert_eq!(list["meta"]["page_size"], 50);
    assert_eq!(
        list["meta"]["url"],
        format!("{base}/v1/Conversations/{ch1}/Messages?Order=desc&PageSize=50&Page=0")
    );
    assert!(list["meta"]["next_page_url"].is_null());
    let failed = &list["messages"][1];
    assert_eq!(failed["delivery"]["failed"], "all");

    // Receipts: a queued one has a null status, error_code 0, and a Twilio-shaped channel sid.
    let receipts = ok(&seeded.get(&format!("{path}/Receipts")).await);
    assert_valid(RECEIPTS, "get", 200, &receipts);
    assert_keys(&receipts, &["meta", "delivery_receipts"]);
    assert_eq!(receipts["meta"]["key"], "delivery_receipts");
    let items = receipts["delivery_receipts"].as_array().unwrap();
    assert_eq!(items.len(), 6);
    for item in items {
        assert_keys(item, RECEIPT_KEYS);
    }
    let queued = items
        .iter()
        .find(|r| r["status"].is_null())
        .expect("the queued receipt");
    assert_eq!(queued["error_code"], 0);
    let channel_sid = queued["channel_message_sid"].as_str().unwrap();
    assert!(
        channel_sid.starts_with("SM") && channel_sid.len() == 34,
        "{channel_sid}"
    );
    assert_eq!(queued["participant_sid"], sid("MB", 6));
    let mut statuses: Vec<&str> = items.iter().filter_map(|r| r["status"].as_str()).collect();
    statuses.sort();
    assert_eq!(statuses, ["delivered", "read", "read", "sent", "sent"]);

    // One receipt, by its url.
    let one = &items[0];
    let url = one["url"].as_str().unwrap();
    let fetched = ok(&http("GET", url, Some((ACCOUNT, TOKEN)), &[]).await);
    assert_valid(RECEIPT, "get", 200, &fetched);
    assert_keys(&fetched, RECEIPT_KEYS);
    assert_eq!(&fetched, one);

    // A failed receipt carries its error code.
    let failed_receipts = ok(&seeded
        .get(&format!(
            "/v1/Conversations/{ch1}/Messages/{}/Receipts",
            sid("IM", 11)
        ))
        .await);
    assert_eq!(failed_receipts["delivery_receipts"][0]["status"], "failed");
    assert_eq!(failed_receipts["delivery_receipts"][0]["error_code"], 30003);
    assert_valid(RECEIPTS, "get", 200, &failed_receipts);
}

#[tokio::test]
async fn service_scoped_paths_add_the_chat_service() {
    let seeded = start_seeded().await;
    let base = seeded.url("");
    let (is1, ch2, im20) = (service(), sid("CH", 2), sid("IM", 20));
    let conversation = format!("/v1/Services/{is1}/Conversations/{ch2}");

    let message = ok(&seeded.get(&format!("{conversation}/Messages/{im20}")).await);
    assert_valid(S_MESSAGE, "get", 200, &message);
    assert_keys(&message, &with_service(MESSAGE_KEYS));
    assert_eq!(message["chat_service_sid"], is1);
    assert_eq!(
        message["links"]["delivery_receipts"],
        format!("{base}{conversation}/Messages/{im20}/Receipts")
    );
    let list = ok(&seeded
        .get(&format!("{conversation}/Messages?PageSize=1"))
        .await);
    assert_valid(S_MESSAGES, "get", 200, &list);
    assert_keys(&list["messages"][0], &with_service(MESSAGE_KEYS));

    let receipts = ok(&seeded
        .get(&format!("{conversation}/Messages/{im20}/Receipts"))
        .await);
    assert_valid(S_RECEIPTS, "get", 200, &receipts);
    let receipt = &receipts["delivery_receipts"][0];
    assert_keys(receipt, &with_service(RECEIPT_KEYS));
    assert_eq!(receipt["chat_service_sid"], is1);
    assert_eq!(receipt["status"], "delivered");
    let url = receipt["url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("{base}{conversation}/Messages/{im20}/Receipts/DY")),
        "{url}"
    );
    let fetched = ok(&http("GET", url, Some((ACCOUNT, TOKEN)), &[]).await);
    assert_valid(S_RECEIPT, "get", 200, &fetched);
    assert_eq!(&fetched, receipt);

    // The same message through another service, or a service message outside its service
    // family, is not found: a service's data is reached through that service.
    let other_service = sid("IS", 2);
    let elsewhere = seeded
        .get(&format!(
            "/v1/Services/{other_service}/Conversations/{ch2}/Messages/{im20}"
        ))
        .await;
    assert_twilio_error(&elsewhere.body, 404, 20404);
    // The default family reaches every conversation of the account.
    let default_family = seeded
        .get(&format!("/v1/Conversations/{ch2}/Messages/{im20}"))
        .await;
    let default_family = ok(&default_family);
    assert!(default_family.get("chat_service_sid").is_none());
    assert_valid(MESSAGE, "get", 200, &default_family);
}

#[tokio::test]
async fn paging_walks_every_page_by_next_page_url() {
    let seeded = start_seeded().await;
    let (ch1, im12) = (sid("CH", 1), sid("IM", 12));

    // Seven receipts, three per page: three pages, each receipt once, in a stable order.
    let mut url = seeded.url(&format!(
        "/v1/Conversations/{ch1}/Messages/{im12}/Receipts?PageSize=3"
    ));
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = ok(&http("GET", &url, Some((ACCOUNT, TOKEN)), &[]).await);
        assert_valid(RECEIPTS, "get", 200, &page);
        assert_keys(&page["meta"], META_KEYS);
        assert_eq!(page["meta"]["page"], pages);
        assert_eq!(page["meta"]["page_size"], 3);
        // meta.url is the page's own URL, with PageSize and Page spelled out on the first.
        if pages == 0 {
            assert_eq!(page["meta"]["url"], format!("{url}&Page=0"));
            assert_eq!(page["meta"]["url"], page["meta"]["first_page_url"]);
        } else {
            assert_eq!(page["meta"]["url"], url);
        }
        if pages == 1 {
            assert_eq!(
                page["meta"]["previous_page_url"],
                page["meta"]["first_page_url"]
            );
        }
        if pages == 2 {
            // Back one page, by the URL as given: the second page again.
            let previous = page["meta"]["previous_page_url"].as_str().unwrap();
            let back = ok(&http("GET", previous, Some((ACCOUNT, TOKEN)), &[]).await);
            assert_valid(RECEIPTS, "get", 200, &back);
            let back: Vec<&str> = back["delivery_receipts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["sid"].as_str().unwrap())
                .collect();
            assert_eq!(back, seen[3..6]);
        }
        for receipt in page["delivery_receipts"].as_array().unwrap() {
            seen.push(receipt["sid"].as_str().unwrap().to_owned());
        }
        pages += 1;
        match page["meta"]["next_page_url"].as_str() {
            Some(next) => url = next.to_owned(),
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 7);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, seen, "each receipt once, in sid order");

    // Messages, newest first, one per page.
    let mut url = seeded.url(&format!(
        "/v1/Conversations/{ch1}/Messages?Order=DESC&PageSize=1"
    ));
    let mut indexes = Vec::new();
    loop {
        let page = ok(&http("GET", &url, Some((ACCOUNT, TOKEN)), &[]).await);
        assert_valid(MESSAGES, "get", 200, &page);
        for message in page["messages"].as_array().unwrap() {
            indexes.push(message["index"].as_u64().unwrap());
        }
        match page["meta"]["next_page_url"].as_str() {
            Some(next) => {
                assert!(next.contains("Order=desc&PageSize=1&Page="), "{next}");
                url = next.to_owned();
            }
            None => break,
        }
    }
    assert_eq!(indexes, [12, 11, 10]);

    // `Page` without a token is reached by walking.
    let second = ok(&seeded
        .get(&format!(
            "/v1/Conversations/{ch1}/Messages?PageSize=1&Page=1"
        ))
        .await);
    assert_eq!(second["messages"][0]["index"], 11);
    assert_eq!(second["meta"]["page"], 1);
}

#[tokio::test]
async fn bad_input_and_credentials_get_twilio_errors() {
    let seeded = start_seeded().await;
    let (ch1, im10, im12) = (sid("CH", 1), sid("IM", 10), sid("IM", 12));
    let receipts = format!("/v1/Conversations/{ch1}/Messages/{im12}/Receipts");
    let messages = format!("/v1/Conversations/{ch1}/Messages");

    for (path, code) in [
        (format!("{receipts}?PageSize=0"), 20001),
        (format!("{receipts}?PageSize=51"), 20001),
        (format!("{receipts}?PageSize=many"), 20001),
        (format!("{messages}?PageSize=101"), 20001),
        (format!("{messages}?Order=sideways"), 20001),
        (format!("{messages}?Page=-1"), 20001),
        (format!("{receipts}?PageToken=forged"), 21481),
        (
            format!("/v1/Conversations/{ch1}/Messages/IMnot-a-sid"),
            20001,
        ),
        (
            format!("/v1/Conversations/{ch1}/Messages/{im12}/Receipts/DY123"),
            20001,
        ),
        (
            format!("/v1/Conversations/not-a-sid/Messages/{im12}"),
            20001,
        ),
    ] {
        let response = seeded.get(&path).await;
        assert_twilio_error(&response.body, 400, code);
    }
    // A token of one list is no token for another.
    let page = ok(&seeded.get(&format!("{receipts}?PageSize=1")).await);
    let next = page["meta"]["next_page_url"].as_str().unwrap();
    let token = next.split("PageToken=").nth(1).unwrap();
    let elsewhere = seeded
        .get(&format!(
            "/v1/Conversations/{ch1}/Messages/{im10}/Receipts?PageSize=1&PageToken={token}"
        ))
        .await;
    assert_twilio_error(&elsewhere.body, 400, 21481);

    // Unknown resources.
    for path in [
        format!("/v1/Conversations/{ch1}/Messages/{}", sid("IM", 99)),
        format!("/v1/Conversations/{}/Messages", sid("CH", 99)),
        format!("{receipts}/{}", sid("DY", 99)),
        "/v1/Nothing/Here".to_owned(),
    ] {
        assert_twilio_error(&seeded.get(&path).await.body, 404, 20404);
    }

    // Credentials: none, wrong, and another account's, which sees nothing of this one.
    let message = seeded.url(&format!("{messages}/{im10}"));
    let anonymous = http("GET", &message, None, &[]).await;
    assert_twilio_error(&anonymous.body, 401, 20003);
    assert!(
        anonymous
            .header("www-authenticate")
            .is_some_and(|v| v.starts_with("Basic"))
    );
    let wrong = http("GET", &message, Some((ACCOUNT, OTHER_TOKEN)), &[]).await;
    assert_twilio_error(&wrong.body, 401, 20003);
    for path in [
        format!("{messages}/{im10}"),
        messages.clone(),
        receipts.clone(),
    ] {
        let other = http(
            "GET",
            &seeded.url(&path),
            Some((OTHER_ACCOUNT, OTHER_TOKEN)),
            &[],
        )
        .await;
        assert_twilio_error(&other.body, 404, 20404);
        assert!(
            !other.body.contains(&ch1) || !other.body.contains(ACCOUNT),
            "{}",
            other.body
        );
    }
    let _ = &seeded.harness;
}
