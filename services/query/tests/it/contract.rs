//! Validation of response bodies against Twilio's own OpenAPI schemas
//! (`tests/contract/twilio_conversations_v1.openapi-excerpt.json`, a copy of the excerpt the
//! contract cites: twilio-oai `spec/json/twilio_conversations_v1.json`).
//!
//! OpenAPI 3.0 schemas become JSON Schema (2020-12) by inlining `#/components/schemas/…` and
//! turning `nullable: true` into a `[T, "null"]` type union. Formats (`uri`, `date-time`) are
//! asserted. Three documented adjustments, each the narrowest that fits the spec's own words:
//! - the excerpt lacks the service-scoped copies of some schemas; each is its default-service
//!   twin plus `chat_service_sid` (contract §3: "the same fields plus `chat_service_sid`");
//! - a receipt's `status` enum admits `null`: the spec's description reads "can be `read`,
//!   `failed`, `delivered`, `undelivered`, `sent` or null", and queued receipts are null;
//! - nothing else is loosened: unknown keys are allowed because the spec allows them.

use std::sync::OnceLock;

use serde_json::{Map, Value, json};

fn spec() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/contract/twilio_conversations_v1.openapi-excerpt.json"
        );
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    })
}

/// The schema named `name`, or the derivation of a service-scoped one the excerpt lacks.
fn component(name: &str) -> Value {
    let schemas = &spec()["schemas"];
    if let Some(schema) = schemas.get(name) {
        let mut schema = schema.clone();
        if name.ends_with("receipt_enum_delivery_status") {
            schema["nullable"] = json!(true);
        }
        return schema;
    }
    let twin = match name {
        "conversations.v1.service.service_conversation.service_conversation_message" => {
            "conversations.v1.conversation.conversation_message"
        }
        "conversations.v1.service.service_conversation.service_conversation_scoped_webhook" => {
            "conversations.v1.conversation.conversation_scoped_webhook"
        }
        "service_conversation_message_receipt_enum_delivery_status" => {
            "conversation_message_receipt_enum_delivery_status"
        }
        "service_webhook_configuration_enum_method" => "configuration_webhook_enum_method",
        other => panic!("the excerpt has no schema {other} and no twin is known"),
    };
    let mut schema = component(twin);
    if let Some(properties) = schema.get_mut("properties") {
        properties["chat_service_sid"] = json!({
            "type": "string", "minLength": 34, "maxLength": 34,
            "pattern": "^IS[0-9a-fA-F]{32}$", "nullable": true
        });
    }
    schema
}

/// OpenAPI 3.0 → JSON Schema: refs inlined, `nullable` as a type union.
fn convert(schema: &Value) -> Value {
    match schema {
        Value::Object(object) => {
            if let Some(Value::String(reference)) = object.get("$ref") {
                let name = reference
                    .strip_prefix("#/components/schemas/")
                    .unwrap_or_else(|| panic!("unexpected $ref {reference}"));
                return convert(&component(name));
            }
            let mut out = Map::new();
            for (key, value) in object {
                if matches!(
                    key.as_str(),
                    "nullable" | "x-twilio" | "description" | "examples"
                ) {
                    continue;
                }
                out.insert(key.clone(), convert(value));
            }
            if object.get("nullable") == Some(&Value::Bool(true)) {
                if let Some(Value::String(kind)) = out.get("type").cloned() {
                    out.insert("type".into(), json!([kind, "null"]));
                }
                if let Some(Value::Array(values)) = out.get_mut("enum") {
                    values.push(Value::Null);
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(convert).collect()),
        other => other.clone(),
    }
}

/// The JSON Schema of the `status` response of `method` on the spec path `path`.
pub(crate) fn response_schema(path: &str, method: &str, status: u16) -> Value {
    let operation = &spec()["paths"][path][method];
    let schema =
        &operation["responses"][status.to_string()]["content"]["application/json"]["schema"];
    assert!(
        !schema.is_null(),
        "the spec has no {status} JSON response for {method} {path}"
    );
    convert(schema)
}

/// Panics with every violation if `body` does not validate.
pub(crate) fn assert_valid(path: &str, method: &str, status: u16, body: &Value) {
    let schema = response_schema(path, method, status);
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|e| panic!("schema of {method} {path} does not compile: {e}"));
    let errors: Vec<String> = validator
        .iter_errors(body)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{method} {path} response violates the upstream schema:\n{}\nbody: {body:#}",
        errors.join("\n")
    );
}

/// The keys of a JSON object in the order they were written (serde_json's `preserve_order` is on
/// for the tests).
pub(crate) fn key_order(value: &Value) -> Vec<String> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .cloned()
        .collect()
}

/// Twilio's key orders, from the spec's examples (contract §1, §2, §4).
pub(crate) const MESSAGE_KEYS: &[&str] = &[
    "sid",
    "account_sid",
    "conversation_sid",
    "body",
    "media",
    "author",
    "participant_sid",
    "attributes",
    "date_created",
    "date_updated",
    "index",
    "delivery",
    "content_sid",
    "url",
    "links",
];
pub(crate) const RECEIPT_KEYS: &[&str] = &[
    "sid",
    "account_sid",
    "conversation_sid",
    "message_sid",
    "channel_message_sid",
    "status",
    "error_code",
    "participant_sid",
    "date_created",
    "date_updated",
    "url",
];
pub(crate) const META_KEYS: &[&str] = &[
    "page",
    "page_size",
    "first_page_url",
    "previous_page_url",
    "url",
    "next_page_url",
    "key",
];
pub(crate) const ERROR_KEYS: &[&str] = &["code", "message", "more_info", "status"];
pub(crate) const ACCOUNT_WEBHOOK_KEYS: &[&str] = &[
    "account_sid",
    "pre_webhook_url",
    "post_webhook_url",
    "method",
    "filters",
    "target",
    "url",
];
pub(crate) const SERVICE_WEBHOOK_KEYS: &[&str] = &[
    "account_sid",
    "chat_service_sid",
    "pre_webhook_url",
    "post_webhook_url",
    "filters",
    "method",
    "url",
];
pub(crate) const SCOPED_WEBHOOK_KEYS: &[&str] = &[
    "account_sid",
    "conversation_sid",
    "sid",
    "target",
    "configuration",
    "date_created",
    "date_updated",
    "url",
];

/// `keys` with `chat_service_sid` after `account_sid`: the service-scoped order.
pub(crate) fn with_service(keys: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    let at = out.iter().position(|k| k == "account_sid").unwrap() + 1;
    out.insert(at, "chat_service_sid".into());
    out
}

/// `object`'s keys are exactly `expected`, in that order.
pub(crate) fn assert_keys(object: &Value, expected: &[impl AsRef<str>]) {
    let want: Vec<&str> = expected.iter().map(AsRef::as_ref).collect();
    assert_eq!(key_order(object), want, "key order of {object:#}");
}

/// A Twilio error body with `code` and HTTP `status`, keys in Twilio's order.
pub(crate) fn assert_twilio_error(body: &str, status: u16, code: u64) {
    let value: Value = serde_json::from_str(body).unwrap();
    assert_eq!(key_order(&value), ERROR_KEYS, "error body {body}");
    assert_eq!(value["status"], status, "{body}");
    assert_eq!(value["code"], code, "{body}");
    assert!(
        value["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert_eq!(
        value["more_info"],
        format!("https://www.twilio.com/docs/errors/{code}"),
        "{body}"
    );
}

/// The validator is only worth its passes if it fails what the spec forbids.
#[test]
fn the_validator_rejects_what_the_spec_forbids() {
    let receipt = json!({
        "sid": format!("DY{:032x}", 1), "account_sid": format!("AC{:032x}", 1),
        "conversation_sid": format!("CH{:032x}", 1), "message_sid": format!("IM{:032x}", 1),
        "channel_message_sid": format!("SM{:032x}", 1), "status": null, "error_code": 0,
        "participant_sid": format!("MB{:032x}", 1), "date_created": "2016-03-24T20:37:57Z",
        "date_updated": "2016-03-24T20:37:57Z", "url": "http://127.0.0.1:1/v1/x"
    });
    let path = "/v1/Conversations/{ConversationSid}/Messages/{MessageSid}/Receipts/{Sid}";
    assert_valid(path, "get", 200, &receipt);
    for (field, bad) in [
        ("status", json!("queued")),
        ("error_code", Value::Null),
        ("channel_message_sid", json!("wamid.HBgL")),
        ("date_created", json!("yesterday")),
        ("url", json!("not a uri")),
        ("sid", json!(format!("XX{:032x}", 1))),
    ] {
        let mut broken = receipt.clone();
        broken[field] = bad;
        let outcome = std::panic::catch_unwind(|| assert_valid(path, "get", 200, &broken));
        assert!(outcome.is_err(), "{field} should be rejected");
    }
}
