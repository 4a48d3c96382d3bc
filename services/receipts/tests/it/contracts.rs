//! `docs/asyncapi.yaml` is a valid AsyncAPI 3.0 document, names every topic the services use
//! with the cleanup policy they create it with, describes each protobuf payload with exactly its
//! message's fields, and accepts records exactly as the services write them.

use std::collections::BTreeSet;

use prost::Message;
use prost_types::{DescriptorProto, FileDescriptorSet};
use receipts_domain::{
    AccountSid, Channel, ChannelMessageId, ConversationSid, DeliveryEvent, DeliveryEventKind,
    DeliveryStatus, MessageSid, ParticipantSid, ReceiptState, RegisterOutcome, Registration,
    ReportOutcome, StatusReport, StatusSource, Timestamp,
};
use receipts_proto::v1;
use serde_json::{Value, json};

use crate::yaml;

const DOCUMENT: &str = "docs/asyncapi.yaml";

fn document() -> Value {
    yaml::load(DOCUMENT)
}

/// Every violation of `instance` against `schema`, one line each.
fn violations(schema: &Value, instance: &Value) -> Vec<String> {
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft7)
        .should_validate_formats(true)
        .build(schema)
        .unwrap_or_else(|e| panic!("the schema does not compile: {e}"));
    validator
        .iter_errors(instance)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect()
}

/// Validates `instance` against the schema at `pointer` (`#/components/…`) of the document.
fn assert_matches(pointer: &str, instance: &Value) {
    let schema = json!({ "components": document()["components"].clone(), "$ref": pointer });
    let errors = violations(&schema, instance);
    assert!(
        errors.is_empty(),
        "{instance:#} does not match {pointer}:\n{}",
        errors.join("\n")
    );
}

#[test]
fn the_document_is_valid_asyncapi_3() {
    let text =
        std::fs::read_to_string(yaml::repo().join("docs/schemas/asyncapi-3.0.0.json")).unwrap();
    let schema: Value = serde_json::from_str(&text).unwrap();
    let errors = violations(&schema, &document());
    assert!(
        errors.is_empty(),
        "{DOCUMENT} is not valid AsyncAPI 3.0.0:\n{}",
        errors.join("\n")
    );

    // The validator does see mistakes: an operation needs an action.
    let mut broken = document();
    broken["operations"]["publishReceiptUpdates"]["action"] = json!("publish");
    assert!(!violations(&schema, &broken).is_empty());
}

#[test]
fn every_topic_is_a_channel_written_and_read_with_its_cleanup_policy() {
    let document = document();
    let channels = document["channels"].as_object().unwrap();
    let specs = receipts_bus::TopicNames::default().specs(4);
    let addresses: BTreeSet<&str> = channels
        .values()
        .map(|c| c["address"].as_str().unwrap())
        .collect();
    let topics: BTreeSet<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        addresses, topics,
        "channels of {DOCUMENT} against TopicNames"
    );

    for (id, channel) in channels {
        let spec = specs.iter().find(|s| s.name == channel["address"]).unwrap();
        let kafka = &channel["bindings"]["kafka"];
        let policy = if spec.compacted { "compact" } else { "delete" };
        assert_eq!(
            kafka["topicConfiguration"]["cleanup.policy"],
            json!([policy]),
            "{id}: cleanup.policy"
        );
        // Topics created with one partition say so; the others have as many as configured.
        let partitions = (spec.partitions == 1)
            .then_some(json!(1))
            .unwrap_or(Value::Null);
        assert_eq!(kafka["partitions"], partitions, "{id}: partitions");

        let reference = format!("#/channels/{id}");
        let actions: BTreeSet<&str> = document["operations"]
            .as_object()
            .unwrap()
            .values()
            .filter(|op| op["channel"]["$ref"] == reference.as_str())
            .map(|op| op["action"].as_str().unwrap())
            .collect();
        assert_eq!(
            actions,
            BTreeSet::from(["receive", "send"]),
            "{id}: who writes and who reads it"
        );
        for message in channel["messages"].as_object().unwrap().values() {
            let pointer = message["$ref"].as_str().unwrap();
            let name = pointer.strip_prefix("#/components/messages/").unwrap();
            assert!(
                document["components"]["messages"][name].is_object(),
                "{id}: {pointer} does not exist"
            );
        }
    }
}

fn descriptors() -> FileDescriptorSet {
    FileDescriptorSet::decode(receipts_proto::FILE_DESCRIPTOR_SET).unwrap()
}

fn protobuf_message<'a>(set: &'a FileDescriptorSet, full_name: &str) -> &'a DescriptorProto {
    let name = full_name.strip_prefix("receipts.v1.").unwrap();
    set.file
        .iter()
        .filter(|f| f.package() == "receipts.v1")
        .flat_map(|f| &f.message_type)
        .find(|m| m.name() == name)
        .unwrap_or_else(|| panic!("{DOCUMENT} names {full_name}, which proto/ does not define"))
}

#[test]
fn payload_schemas_have_the_fields_of_their_protobuf_messages() {
    let document = document();
    let set = descriptors();
    let schemas = document["components"]["schemas"].as_object().unwrap();
    let mut described = BTreeSet::new();
    for (id, schema) in schemas {
        if let Some(full_name) = schema["x-protobuf-message"].as_str() {
            let message = protobuf_message(&set, full_name);
            let fields: BTreeSet<&str> = message.field.iter().map(|f| f.json_name()).collect();
            let properties: BTreeSet<&str> = schema["properties"]
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(
                properties, fields,
                "{id}: properties against the fields of {full_name}"
            );
            described.insert(full_name.to_owned());
        }
        if let Some(full_name) = schema["x-protobuf-enum"].as_str() {
            let name = full_name.strip_prefix("receipts.v1.").unwrap();
            let enumeration = set
                .file
                .iter()
                .flat_map(|f| &f.enum_type)
                .find(|e| e.name() == name)
                .unwrap_or_else(|| panic!("{id}: proto/ defines no enum {full_name}"));
            let values: Vec<&str> = enumeration.value.iter().map(|v| v.name()).collect();
            assert_eq!(schema["enum"], json!(values), "{id}: values of {full_name}");
        }
    }
    // Every message a topic carries is described.
    for carried in [
        "receipts.v1.Envelope",
        "receipts.v1.ReceiptUpdated",
        "receipts.v1.WebhookConfig",
        "receipts.v1.StoredReceiptState",
    ] {
        assert!(
            described.contains(carried),
            "{DOCUMENT} does not describe {carried}"
        );
    }
}

fn sid(prefix: &str, n: u128) -> String {
    format!("{prefix}{n:032x}")
}

fn registration() -> Registration {
    Registration {
        account: AccountSid::parse(&sid("AC", 1)).unwrap(),
        chat_service: None,
        conversation: ConversationSid::parse(&sid("CH", 2)).unwrap(),
        message: MessageSid::parse(&sid("IM", 3)).unwrap(),
        message_index: 4,
        participant: ParticipantSid::parse(&sid("MB", 5)).unwrap(),
        channel: Channel::Sms,
        channel_message_id: ChannelMessageId::parse(&sid("SM", 6)).unwrap(),
        expected_receipts: 2,
        registered_at: Timestamp::from_unix_millis(1_767_600_000_000),
    }
}

fn failed_report() -> StatusReport {
    StatusReport {
        account: AccountSid::parse(&sid("AC", 1)).unwrap(),
        channel_message_id: ChannelMessageId::parse(&sid("SM", 6)).unwrap(),
        status: DeliveryStatus::Undelivered,
        raw_status: "undelivered".into(),
        error_code: Some(30005),
        provider_time: Timestamp::from_unix_millis(1_767_600_004_321),
        source: StatusSource::TwilioMessaging,
    }
}

/// The records the services write, encoded as JSON, match the schemas of their messages.
#[test]
fn records_as_the_services_write_them_match_their_schemas() {
    let mut state = ReceiptState::default();
    let RegisterOutcome::Changed(_) = state.register(registration()).unwrap() else {
        panic!("a first registration changes the state");
    };
    let ReportOutcome::Changed(change) = state.apply_report(failed_report()) else {
        panic!("a report of a registered receipt changes it");
    };
    let update = serde_json::to_value(v1::ReceiptUpdated::from(&change)).unwrap();
    assert_matches("#/components/messages/ReceiptUpdated/payload", &update);

    let mut headers = serde_json::Map::new();
    headers.insert("content-type".into(), json!("application/x-protobuf"));
    for (name, value) in receipts_projector::cloudevents::receipt_updated_headers(&change) {
        headers.insert(name.into(), json!(value));
    }
    assert_matches(
        "#/components/messages/ReceiptUpdated/headers",
        &Value::Object(headers.clone()),
    );
    // The header schema is strict enough to notice a missing attribute.
    headers.remove("ce_subject");
    let schema = json!({
        "components": document()["components"].clone(),
        "$ref": "#/components/messages/ReceiptUpdated/headers",
    });
    assert!(!violations(&schema, &Value::Object(headers)).is_empty());

    for event in [
        DeliveryEvent {
            event_id: "reg-1".into(),
            kind: DeliveryEventKind::Registered(registration()),
        },
        DeliveryEvent {
            event_id: "rep-1".into(),
            kind: DeliveryEventKind::Reported(failed_report()),
        },
    ] {
        let envelope = serde_json::to_value(v1::Envelope::from(&event)).unwrap();
        assert_matches("#/components/messages/DeliveryEvent/payload", &envelope);
    }
    let stored = serde_json::to_value(v1::StoredReceiptState::from(&state)).unwrap();
    assert_matches("#/components/messages/ReceiptState/payload", &stored);

    let config = v1::WebhookConfig {
        scope: v1::WebhookScope::Conversation.into(),
        account_sid: sid("AC", 1),
        conversation_sid: sid("CH", 2),
        webhook_sid: sid("WH", 7),
        method: "POST".into(),
        filters: vec!["onDeliveryUpdated".into()],
        post_webhook_url: "https://hooks.example.com/receipts".into(),
        target: "webhook".into(),
        date_created: Some(pbjson_types::Timestamp {
            seconds: 1_767_600_000,
            nanos: 0,
        }),
        ..Default::default()
    };
    assert_matches(
        "#/components/schemas/WebhookKey",
        &json!(receipts_proto::webhooks::webhook_key(&config)),
    );
    assert_matches(
        "#/components/messages/WebhookConfig/payload",
        &serde_json::to_value(&config).unwrap(),
    );

    let mut job = receipts_dispatcher::job::DeliveryJob::new(
        change.receipt.clone(),
        receipts_proto::webhooks::webhook_key(&config),
        config.post_webhook_url.clone(),
        1_767_600_005_000,
    );
    job.last_error = Some("503 Service Unavailable".into());
    let job: Value = serde_json::from_slice(&job.to_json()).unwrap();
    assert_matches("#/components/messages/PendingDelivery/payload", &job);
    assert_matches("#/components/messages/DeadLetteredDelivery/payload", &job);

    let attempt = receipts_dispatcher::job::AttemptRecord {
        receipt_sid: change.receipt.sid.to_string(),
        version: change.receipt.version,
        account_sid: sid("AC", 1),
        conversation_sid: sid("CH", 2),
        webhook_key: receipts_proto::webhooks::webhook_key(&config),
        url: receipts_webhook::redacted_url(&config.post_webhook_url),
        token: job["token"].as_str().unwrap().to_owned(),
        attempt: 0,
        at_ms: 1_767_600_005_000,
        latency_ms: 41,
        outcome: "retry".into(),
        answer: "HTTP 503".into(),
    };
    assert_matches(
        "#/components/messages/WebhookAttempt/payload",
        &serde_json::to_value(&attempt).unwrap(),
    );
}

/// The document's own examples match the messages they illustrate.
#[test]
fn examples_match_their_messages() {
    let document = document();
    let mut seen = 0;
    for (name, message) in document["components"]["messages"].as_object().unwrap() {
        for example in message["examples"].as_array().into_iter().flatten() {
            for part in ["headers", "payload"] {
                if !example[part].is_null() {
                    assert_matches(
                        &format!("#/components/messages/{name}/{part}"),
                        &example[part],
                    );
                    seen += 1;
                }
            }
        }
    }
    assert!(seen > 0, "{DOCUMENT} has no examples to check");
}

/// `receipts contracts` prints what this build speaks: the document above and the descriptor
/// set the release image ships.
#[test]
fn the_cli_prints_the_contracts_of_this_build() {
    use receipts::contracts::Contract;

    let document = std::fs::read(yaml::repo().join(DOCUMENT)).unwrap();
    assert_eq!(Contract::Asyncapi.bytes(), document.as_slice());
    let set = FileDescriptorSet::decode(Contract::DescriptorSet.bytes()).unwrap();
    protobuf_message(&set, "receipts.v1.ReceiptUpdated");
    assert!(
        set.file
            .iter()
            .any(|f| f.name() == "google/protobuf/timestamp.proto"),
        "the set includes its imports, so it can be used on its own"
    );
}

/// The release image carries both contracts where the README says.
#[test]
fn the_release_image_ships_the_contracts() {
    let dockerfile = std::fs::read_to_string(yaml::repo().join("Dockerfile")).unwrap();
    for needed in [
        "receipts contracts descriptor-set --out /src/contracts/receipts-v1.binpb",
        "cp docs/asyncapi.yaml /src/contracts/asyncapi.yaml",
        "COPY --from=build /src/contracts/ /usr/share/receipts/",
    ] {
        assert!(
            dockerfile.contains(needed),
            "the Dockerfile lacks {needed:?}"
        );
    }
}
