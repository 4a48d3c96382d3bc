//! `receipts webhooks list|show|deliveries`: the webhook configuration as the dispatcher sees
//! it (the compacted `webhook-configs` topic, read to its end; signing secrets are counted,
//! never shown) and everything the dispatcher did for one receipt: each attempt with its time,
//! answer and latency (the attempts topic), the newest version delivered to each webhook (the
//! dispatcher changelog), and what is still waiting on the retry topic or gave up on the DLQ.

use std::collections::{BTreeMap, HashMap};

use anyhow::Context;
use clap::Subcommand;
use receipts_dispatcher::job::{AttemptRecord, DeliveryJob, delivery_token};
use receipts_dispatcher::store::SETTLED;
use receipts_proto::codec::{self, Encoding};
use receipts_proto::v1;
use receipts_webhook::redacted_url;
use serde::Serialize;

use super::{OpsConfig, fold_topic, json, table, time};

#[derive(Debug, Clone, Subcommand)]
pub enum WebhooksCommand {
    /// List the configured webhooks.
    List {
        /// Only this account's (AC…).
        #[arg(long)]
        account: Option<String>,
    },
    /// Show one webhook, by its key (`account/AC…`, `service/AC…/IS…`,
    /// `conversation/AC…/CH…/WH…`) or its webhook sid (WH…).
    Show { webhook: String },
    /// Every webhook attempt made for a receipt, with its time, answer and latency, and where
    /// each of its deliveries stands.
    Deliveries { receipt_sid: String },
    /// The account's Standard Webhooks signing secrets, through the query service's gRPC API.
    Secrets(super::secrets::SecretsArgs),
}

/// A configuration as listed: everything but the secrets, URLs redacted.
#[derive(Debug, Clone, Serialize)]
pub struct Webhook {
    pub key: String,
    pub scope: String,
    pub account_sid: String,
    pub webhook_sid: String,
    pub method: String,
    pub filters: Vec<String>,
    pub post_webhook_url: String,
    pub pre_webhook_url: String,
    pub target: String,
    pub disabled_at: Option<String>,
    pub disabled_reason: String,
    /// How many Standard Webhooks signing secrets it has.
    pub signing_secrets: usize,
    pub date_updated: Option<String>,
}

fn millis(t: &Option<pbjson_types::Timestamp>) -> Option<i64> {
    t.as_ref()
        .map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
}

fn webhook(key: &str, config: &v1::WebhookConfig) -> Webhook {
    let scope = match config.scope() {
        v1::WebhookScope::Service => "service",
        v1::WebhookScope::Conversation => "conversation",
        v1::WebhookScope::Account | v1::WebhookScope::Unspecified => "account",
    };
    Webhook {
        key: key.to_owned(),
        scope: scope.to_owned(),
        account_sid: config.account_sid.clone(),
        webhook_sid: config.webhook_sid.clone(),
        method: config.method.clone(),
        filters: config.filters.clone(),
        post_webhook_url: redacted_url(&config.post_webhook_url),
        pre_webhook_url: redacted_url(&config.pre_webhook_url),
        target: config.target.clone(),
        disabled_at: millis(&config.disabled_at).map(|ms| time(Some(ms))),
        disabled_reason: config.disabled_reason.clone(),
        signing_secrets: config.signing_secrets.len() + config.sealed_secrets.len(),
        date_updated: millis(&config.date_updated).map(|ms| time(Some(ms))),
    }
}

/// The current configuration of every scope: the last record of each key, tombstones deleting.
async fn webhooks(config: &OpsConfig) -> anyhow::Result<Vec<Webhook>> {
    let current = fold_topic(
        &config.kafka,
        &config.topics.webhook_configs,
        BTreeMap::<String, v1::WebhookConfig>::new(),
        |current, record| {
            let Some(key) = record.key().and_then(|k| std::str::from_utf8(k).ok()) else {
                return Ok(());
            };
            let Some(payload) = record.payload() else {
                current.remove(key);
                return Ok(());
            };
            let encoding = Encoding::from_content_type(record.content_type())
                .with_context(|| format!("reading {}", record.origin()))?;
            let webhook = codec::decode::<v1::WebhookConfig>(payload, encoding)
                .with_context(|| format!("decoding {}", record.origin()))?;
            current.insert(key.to_owned(), webhook);
            Ok(())
        },
    )
    .await?;
    Ok(current
        .iter()
        .map(|(key, config)| webhook(key, config))
        .collect())
}

/// Where one delivery (a receipt version for a webhook) stands.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryState {
    pub webhook_key: String,
    pub version: u64,
    /// `delivered`; `dead-lettered`; `retrying` (waiting on the retry topic); `attempted`
    /// (attempts recorded, nothing settled yet); or `ended` (settled without a delivery: dropped
    /// as stale once a newer version was delivered, or its webhook was removed).
    pub state: String,
}

/// Everything recorded about one receipt's webhooks.
#[derive(Debug, Clone, Serialize)]
pub struct ReceiptDeliveries {
    pub receipt_sid: String,
    pub attempts: Vec<AttemptRecord>,
    pub deliveries: Vec<DeliveryState>,
}

async fn deliveries(config: &OpsConfig, receipt_sid: &str) -> anyhow::Result<ReceiptDeliveries> {
    let topics = &config.topics;
    let sid = receipt_sid.to_owned();
    let mut attempts = fold_topic(
        &config.kafka,
        &topics.webhook_attempts,
        Vec::<AttemptRecord>::new(),
        move |attempts, record| {
            if record.key() == Some(sid.as_bytes())
                && let Some(Ok(attempt)) = record.payload().map(serde_json::from_slice)
            {
                attempts.push(attempt);
            }
            Ok(())
        },
    )
    .await?;
    attempts.sort_by_key(|a| (a.at_ms, a.attempt));

    // (webhook, version) → state, from the weakest evidence to the strongest.
    let mut states: BTreeMap<(String, u64), &'static str> = BTreeMap::new();
    for a in &attempts {
        states.insert((a.webhook_key.clone(), a.version), "attempted");
    }
    let sid = receipt_sid.to_owned();
    let retrying = fold_topic(
        &config.kafka,
        &topics.webhook_retries,
        Vec::<DeliveryJob>::new(),
        move |jobs, record| {
            if let Some(Ok(job)) = record.payload().map(DeliveryJob::from_json)
                && job.receipt.sid.as_str() == sid
            {
                jobs.push(job);
            }
            Ok(())
        },
    )
    .await?;
    for job in retrying {
        states.insert((job.webhook_key, job.receipt.version), "retrying");
    }
    for letter in receipts_dispatcher::dead_letters(&config.kafka, topics).await? {
        if letter.job.receipt.sid.as_str() == receipt_sid && !letter.replayed {
            states.insert(
                (letter.job.webhook_key, letter.job.receipt.version),
                "dead-lettered",
            );
        }
    }
    // From the dispatcher changelog: `d/{webhook key}\0{receipt sid}`, the newest version
    // delivered to that webhook, and `t/{token}`, whether a delivery known here was settled.
    let tokens: HashMap<String, (String, u64)> = states
        .keys()
        .map(|(key, version)| {
            (
                delivery_token(receipt_sid, *version, key),
                (key.clone(), *version),
            )
        })
        .collect();
    let sid = receipt_sid.to_owned();
    let (delivered, settled) = fold_topic(
        &config.kafka,
        &topics.dispatcher_changelog,
        (
            BTreeMap::<String, u64>::new(),
            BTreeMap::<(String, u64), bool>::new(),
        ),
        move |(delivered, settled), record| {
            let Some(key) = record.key() else {
                return Ok(());
            };
            if let Some(token) = key.strip_prefix(b"t/") {
                let found = std::str::from_utf8(token).ok().and_then(|t| tokens.get(t));
                if let (Some(delivery), Some(Ok(bytes))) =
                    (found, record.payload().map(<[u8; 4]>::try_from))
                {
                    settled.insert(delivery.clone(), u32::from_be_bytes(bytes) == SETTLED);
                }
                return Ok(());
            }
            let Some(rest) = key.strip_prefix(b"d/") else {
                return Ok(());
            };
            let Some(split) = rest.iter().position(|b| *b == 0) else {
                return Ok(());
            };
            if &rest[split + 1..] != sid.as_bytes() {
                return Ok(());
            }
            let webhook_key = String::from_utf8_lossy(&rest[..split]).into_owned();
            if let Some(Ok(bytes)) = record.payload().map(<[u8; 8]>::try_from) {
                delivered.insert(webhook_key, u64::from_be_bytes(bytes));
            }
            Ok(())
        },
    )
    .await?;
    // Settled without being delivered or dead-lettered: dropped (stale, unconfigured).
    for (delivery, done) in settled {
        if let Some(state) = states.get_mut(&delivery)
            && done
            && matches!(*state, "attempted" | "retrying")
        {
            *state = "ended";
        }
    }
    for (webhook_key, newest) in &delivered {
        states.retain(|(key, version), _| !(key == webhook_key && version <= newest));
        states.insert((webhook_key.clone(), *newest), "delivered");
    }
    Ok(ReceiptDeliveries {
        receipt_sid: receipt_sid.to_owned(),
        attempts,
        deliveries: states
            .into_iter()
            .map(|((webhook_key, version), state)| DeliveryState {
                webhook_key,
                version,
                state: state.to_owned(),
            })
            .collect(),
    })
}

pub async fn run(
    config: &OpsConfig,
    command: WebhooksCommand,
    as_json: bool,
) -> anyhow::Result<String> {
    match command {
        WebhooksCommand::List { account } => {
            let listed: Vec<Webhook> = webhooks(config)
                .await?
                .into_iter()
                .filter(|w| account.as_ref().is_none_or(|a| *a == w.account_sid))
                .collect();
            if as_json {
                return Ok(json(&listed));
            }
            let rows: Vec<Vec<String>> = listed
                .iter()
                .map(|w| {
                    vec![
                        w.key.clone(),
                        w.method.clone(),
                        w.post_webhook_url.clone(),
                        w.filters.join(","),
                        w.disabled_at.clone().unwrap_or_else(|| "-".into()),
                        w.signing_secrets.to_string(),
                    ]
                })
                .collect();
            let mut out = table(
                &["WEBHOOK", "METHOD", "URL", "FILTERS", "DISABLED", "SECRETS"],
                &rows,
            );
            out.push_str(&format!("{} webhook(s)\n", rows.len()));
            Ok(out)
        }
        WebhooksCommand::Show { webhook } => {
            let found = webhooks(config)
                .await?
                .into_iter()
                .find(|w| {
                    w.key == webhook || (!w.webhook_sid.is_empty() && w.webhook_sid == webhook)
                })
                .with_context(|| format!("no webhook {webhook} is configured"))?;
            if as_json {
                return Ok(json(&found));
            }
            let value = serde_json::to_value(&found)?;
            let mut out = String::new();
            for (name, value) in value.as_object().expect("an object") {
                let value = match value {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Null => "-".into(),
                    other => other.to_string(),
                };
                out.push_str(&format!("{name}: {value}\n"));
            }
            Ok(out)
        }
        WebhooksCommand::Deliveries { receipt_sid } => {
            let found = deliveries(config, &receipt_sid).await?;
            if as_json {
                return Ok(json(&found));
            }
            let rows: Vec<Vec<String>> = found
                .attempts
                .iter()
                .map(|a| {
                    vec![
                        time(Some(a.at_ms)),
                        a.webhook_key.clone(),
                        a.version.to_string(),
                        (a.attempt + 1).to_string(),
                        a.outcome.clone(),
                        a.answer.clone(),
                        format!("{} ms", a.latency_ms),
                    ]
                })
                .collect();
            let mut out = table(
                &[
                    "TIME", "WEBHOOK", "VERSION", "ATTEMPT", "OUTCOME", "ANSWER", "LATENCY",
                ],
                &rows,
            );
            out.push_str(&format!("{} attempt(s) for {receipt_sid}\n\n", rows.len()));
            let states: Vec<Vec<String>> = found
                .deliveries
                .iter()
                .map(|d| {
                    vec![
                        d.webhook_key.clone(),
                        d.version.to_string(),
                        d.state.clone(),
                    ]
                })
                .collect();
            out.push_str(&table(&["WEBHOOK", "VERSION", "STATE"], &states));
            Ok(out)
        }
        WebhooksCommand::Secrets(args) => super::secrets::run(&args, as_json).await,
    }
}
