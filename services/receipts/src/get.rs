//! `receipts get …`: reads a running system over gRPC and prints readable tables, or the
//! proto3 JSON of the answer with `--json`.

use std::fmt::Write as _;

use anyhow::Context;
use receipts_proto::v1;
use receipts_proto::v1::delivery_query_client::DeliveryQueryClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use receipts_query::auth::Credentials;

use crate::demo::{DEMO_ACCOUNT, DEMO_TOKEN};

/// Where the API is and who is asking.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// gRPC address of the query service.
    #[arg(
        long,
        global = true,
        env = "RECEIPTS_GRPC",
        default_value = "127.0.0.1:50051"
    )]
    pub grpc: String,
    /// Account sid (defaults to the `receipts dev` demo account).
    #[arg(long, global = true, env = "RECEIPTS_ACCOUNT_SID", default_value = DEMO_ACCOUNT)]
    pub account: String,
    /// Auth token of the account.
    #[arg(long, global = true, env = "RECEIPTS_AUTH_TOKEN", default_value = DEMO_TOKEN, hide_default_value = true)]
    pub token: String,
    /// Print the answer as proto3 JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum What {
    /// A message's delivery summary.
    Message {
        conversation: String,
        message: String,
    },
    /// The receipts of a message (every page).
    Receipts {
        conversation: String,
        message: String,
    },
    /// One receipt.
    Receipt {
        conversation: String,
        message: String,
        receipt: String,
    },
    /// A conversation's rollup and its messages.
    Conversation { conversation: String },
    /// Every status change of a receipt.
    Timeline {
        conversation: String,
        message: String,
        receipt: String,
    },
}

pub type Client = DeliveryQueryClient<InterceptedService<Channel, Credentials>>;

pub async fn connect(connection: &Connection) -> anyhow::Result<Client> {
    let address = if connection.grpc.contains("://") {
        connection.grpc.clone()
    } else {
        format!("http://{}", connection.grpc)
    };
    let channel = Channel::from_shared(address.clone())
        .with_context(|| format!("invalid gRPC address {address}"))?
        .connect()
        .await
        .with_context(|| format!("cannot reach the query service at {address}"))?;
    let credentials = Credentials::new(&connection.account, &connection.token)
        .context("credentials must be printable ASCII")?;
    Ok(DeliveryQueryClient::with_interceptor(channel, credentials))
}

/// Aligned columns, the header underlined.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = String::new();
    let line = |cells: &mut dyn Iterator<Item = String>, out: &mut String| {
        let cells: Vec<String> = cells
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    };
    line(&mut header.iter().map(|h| h.to_string()), &mut out);
    line(&mut widths.iter().map(|w| "-".repeat(*w)), &mut out);
    for row in rows {
        line(&mut row.iter().cloned(), &mut out);
    }
    out
}

fn time(t: &Option<pbjson_types::Timestamp>) -> String {
    t.as_ref()
        .map(|t| receipts_proto::convert::timestamp_from_wire(t).rfc3339())
        .unwrap_or_default()
}

fn status_name(status: v1::DeliveryStatus) -> String {
    status
        .as_str_name()
        .trim_start_matches("DELIVERY_STATUS_")
        .to_ascii_lowercase()
}

fn amount(amount: v1::DeliveryAmount) -> String {
    amount
        .as_str_name()
        .trim_start_matches("DELIVERY_AMOUNT_")
        .to_ascii_lowercase()
}

fn summary_table(messages: &[v1::MessageDelivery]) -> String {
    let rows: Vec<Vec<String>> = messages
        .iter()
        .map(|m| {
            let d = m.delivery.unwrap_or_default();
            let cell = |a: v1::DeliveryAmount, n: u64| format!("{} ({n})", amount(a));
            vec![
                m.message_index.to_string(),
                m.message_sid.clone(),
                d.total.to_string(),
                cell(d.sent(), d.sent_count),
                cell(d.delivered(), d.delivered_count),
                cell(d.read(), d.read_count),
                cell(d.failed(), d.failed_count),
                cell(d.undelivered(), d.undelivered_count),
            ]
        })
        .collect();
    table(
        &[
            "index",
            "message",
            "total",
            "sent",
            "delivered",
            "read",
            "failed",
            "undelivered",
        ],
        &rows,
    )
}

fn receipts_table(receipts: &[v1::Receipt]) -> String {
    let rows: Vec<Vec<String>> = receipts
        .iter()
        .map(|r| {
            vec![
                r.sid.clone(),
                r.participant_sid.clone(),
                r.channel()
                    .as_str_name()
                    .trim_start_matches("CHANNEL_")
                    .to_ascii_lowercase(),
                status_name(r.status()),
                if r.error_code == 0 {
                    String::new()
                } else {
                    r.error_code.to_string()
                },
                r.channel_message_id.clone(),
                time(&r.date_updated),
            ]
        })
        .collect();
    table(
        &[
            "receipt",
            "participant",
            "channel",
            "status",
            "error",
            "channel message id",
            "updated",
        ],
        &rows,
    )
}

fn json<T: serde::Serialize>(value: &T) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(value)? + "\n")
}

/// Asks and renders; the returned text is what the command prints.
pub async fn run(connection: &Connection, what: What) -> anyhow::Result<String> {
    ask(connection, what)
        .await
        .map_err(|error| match error.downcast::<tonic::Status>() {
            Ok(status) => anyhow::anyhow!("{} ({:?})", status.message(), status.code()),
            Err(error) => error,
        })
}

async fn ask(connection: &Connection, what: What) -> anyhow::Result<String> {
    let mut client = connect(connection).await?;
    let as_json = connection.json;
    Ok(match what {
        What::Message {
            conversation,
            message,
        } => {
            let reply = client
                .get_message_delivery(v1::GetMessageDeliveryRequest {
                    conversation_sid: conversation,
                    message_sid: message,
                })
                .await?
                .into_inner();
            if as_json {
                json(&reply)?
            } else {
                summary_table(std::slice::from_ref(&reply))
            }
        }
        What::Receipts {
            conversation,
            message,
        } => {
            let mut receipts = Vec::new();
            let mut page_token = String::new();
            loop {
                let page = client
                    .list_receipts(v1::ListReceiptsRequest {
                        conversation_sid: conversation.clone(),
                        message_sid: message.clone(),
                        page_size: 50,
                        page_token,
                    })
                    .await?
                    .into_inner();
                receipts.extend(page.receipts);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            if as_json {
                json(&receipts)?
            } else {
                receipts_table(&receipts)
            }
        }
        What::Receipt {
            conversation,
            message,
            receipt,
        } => {
            let reply = client
                .get_receipt(v1::GetReceiptRequest {
                    conversation_sid: conversation,
                    message_sid: message,
                    receipt_sid: receipt,
                })
                .await?
                .into_inner();
            if as_json {
                json(&reply)?
            } else {
                receipts_table(std::slice::from_ref(&reply))
            }
        }
        What::Conversation { conversation } => {
            let rollup = client
                .get_conversation_rollup(v1::GetConversationRollupRequest {
                    conversation_sid: conversation.clone(),
                })
                .await?
                .into_inner();
            let mut messages = Vec::new();
            let mut page_token = String::new();
            loop {
                let page = client
                    .list_conversation_messages(v1::ListConversationMessagesRequest {
                        conversation_sid: conversation.clone(),
                        order: v1::Order::Asc.into(),
                        page_size: 100,
                        page_token,
                    })
                    .await?
                    .into_inner();
                messages.extend(page.messages);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            if as_json {
                json(&serde_json::json!({ "rollup": rollup, "messages": messages }))?
            } else {
                let c = rollup.counts.unwrap_or_default();
                let mut out = format!(
                    "conversation {}: {} messages, {} receipts, {} with failures, last update {}\n\
                     receipts by status: queued {} sent {} delivered {} read {} failed {} undelivered {}\n\n",
                    rollup.conversation_sid,
                    rollup.messages,
                    rollup.receipts,
                    rollup.messages_with_failures,
                    time(&rollup.last_updated),
                    c.queued,
                    c.sent,
                    c.delivered,
                    c.read,
                    c.failed,
                    c.undelivered,
                );
                out.push_str(&summary_table(&messages));
                out
            }
        }
        What::Timeline {
            conversation,
            message,
            receipt,
        } => {
            let reply = client
                .get_receipt_timeline(v1::GetReceiptTimelineRequest {
                    conversation_sid: conversation,
                    message_sid: message,
                    receipt_sid: receipt,
                })
                .await?
                .into_inner();
            if as_json {
                json(&reply)?
            } else {
                let rows: Vec<Vec<String>> = reply
                    .entries
                    .iter()
                    .map(|e| {
                        vec![
                            status_name(e.status()),
                            e.raw_status.clone(),
                            if e.error_code == 0 {
                                String::new()
                            } else {
                                e.error_code.to_string()
                            },
                            time(&e.provider_timestamp),
                        ]
                    })
                    .collect();
                table(&["status", "provider status", "error", "time"], &rows)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_their_columns() {
        let out = table(
            &["a", "long header"],
            &[
                vec!["wide cell".into(), "x".into()],
                vec!["y".into(), "z".into()],
            ],
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "a          long header");
        assert_eq!(lines[1], "---------  -----------");
        assert_eq!(lines[2], "wide cell  x");
        assert_eq!(lines[3], "y          z");
    }
}
