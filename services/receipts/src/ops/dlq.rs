//! `receipts dlq list|show|replay`: the webhook deliveries that gave up, one of them in full,
//! and sending them back to the retry topic (the dispatcher's own replay, with its markers, so
//! an entry is replayed at most once from anywhere).

use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use receipts_dispatcher::{DeadLetter, ReplayFilter, ReplayProgress};
use receipts_runtime::clock::SystemClock;
use serde_json::json;

use super::{OpsConfig, json, table, time};

#[derive(Debug, Clone, Subcommand)]
pub enum DlqCommand {
    /// List the dead-lettered deliveries, oldest first.
    List {
        #[command(flatten)]
        filter: ListFilter,
    },
    /// Show one dead-lettered delivery in full, by its `partition/offset` on the DLQ.
    Show { origin: String },
    /// Send the matching deliveries back to the retry topic, due now, with the full retry
    /// schedule and their idempotency token; deliveries replayed before are skipped.
    Replay {
        #[command(flatten)]
        filter: ReplayFilter,
    },
}

/// Which dead letters to list; every criterion given must hold.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ListFilter {
    #[command(flatten)]
    pub delivery: ReplayFilter,
    /// Only deliveries of this receipt (DY…).
    #[arg(long)]
    pub receipt: Option<String>,
    /// Only deliveries no replay has sent back yet.
    #[arg(long)]
    pub pending: bool,
}

impl ListFilter {
    fn matches(&self, letter: &DeadLetter) -> bool {
        self.delivery
            .matches(&letter.job, letter.dead_lettered_at_ms)
            && self
                .receipt
                .as_ref()
                .is_none_or(|sid| sid == letter.job.receipt.sid.as_str())
            && !(self.pending && letter.replayed)
    }
}

fn summary(letter: &DeadLetter) -> serde_json::Value {
    let job = &letter.job;
    json!({
        "origin": letter.origin,
        "dead_lettered_at": time(Some(letter.dead_lettered_at_ms)),
        "account_sid": job.account_sid,
        "conversation_sid": job.receipt.registration.conversation.as_str(),
        "receipt_sid": job.receipt.sid.as_str(),
        "version": job.receipt.version,
        "webhook_key": job.webhook_key,
        "url": job.url,
        "attempts": job.attempt,
        "error": letter.error.as_deref().or(job.last_error.as_deref()),
        "replayed": letter.replayed,
        "idempotency_token": job.token,
    })
}

/// Draws a replay's progress on standard error (when `shown`): a bar of the matching entries,
/// ending with how many were replayed before.
fn draw_replay(bar: &mut Option<ProgressBar>, shown: bool, step: ReplayProgress) {
    match step {
        ReplayProgress::Matched(entries) => {
            *bar = Some(if shown {
                ProgressBar::new(entries as u64).with_style(
                    ProgressStyle::with_template("{bar:40} {pos}/{len} replayed {msg}")
                        .expect("the template is valid"),
                )
            } else {
                ProgressBar::hidden()
            });
        }
        ReplayProgress::Entry => {
            if let Some(bar) = bar {
                bar.inc(1);
            }
        }
        ReplayProgress::Finished(report) => {
            if let Some(bar) = bar {
                bar.finish_with_message(format!(
                    "({} already replayed before)",
                    report.already_replayed
                ));
            }
        }
    }
}

/// Runs one `dlq` command and returns what it prints.
pub async fn run(config: &OpsConfig, command: DlqCommand, as_json: bool) -> anyhow::Result<String> {
    match command {
        DlqCommand::List { filter } => {
            let letters: Vec<DeadLetter> =
                receipts_dispatcher::dead_letters(&config.kafka, &config.topics)
                    .await?
                    .into_iter()
                    .filter(|letter| filter.matches(letter))
                    .collect();
            if as_json {
                return Ok(json(&letters.iter().map(summary).collect::<Vec<_>>()));
            }
            let rows: Vec<Vec<String>> = letters
                .iter()
                .map(|l| {
                    vec![
                        l.origin.clone(),
                        time(Some(l.dead_lettered_at_ms)),
                        l.job.receipt.sid.to_string(),
                        l.job.receipt.version.to_string(),
                        l.job.webhook_key.clone(),
                        l.job.attempt.to_string(),
                        if l.replayed { "yes" } else { "no" }.to_owned(),
                        l.error
                            .clone()
                            .or(l.job.last_error.clone())
                            .unwrap_or_default(),
                    ]
                })
                .collect();
            let mut out = table(
                &[
                    "ORIGIN",
                    "DEAD-LETTERED",
                    "RECEIPT",
                    "VERSION",
                    "WEBHOOK",
                    "ATTEMPTS",
                    "REPLAYED",
                    "ERROR",
                ],
                &rows,
            );
            out.push_str(&format!("{} dead-lettered deliveries\n", rows.len()));
            Ok(out)
        }
        DlqCommand::Show { origin } => {
            let letters = receipts_dispatcher::dead_letters(&config.kafka, &config.topics).await?;
            let Some(letter) = letters.into_iter().find(|l| l.origin == origin) else {
                anyhow::bail!(
                    "no dead-lettered delivery at {origin} on {} (want partition/offset, as `receipts dlq list` shows)",
                    config.topics.webhook_dlq
                );
            };
            let mut detail = summary(&letter);
            detail["delivery"] = serde_json::to_value(&letter.job)?;
            if as_json {
                return Ok(json(&detail));
            }
            let mut out = String::new();
            for (name, value) in detail.as_object().expect("an object") {
                let value = match value {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Object(_) => serde_json::to_string_pretty(value)?,
                    other => other.to_string(),
                };
                out.push_str(&format!("{name}: {value}\n"));
            }
            Ok(out)
        }
        DlqCommand::Replay { filter } => {
            // The progress bar goes to standard error, and only for people.
            let mut bar = None;
            let report = receipts_dispatcher::replay_dlq(
                &config.kafka,
                &config.topics,
                &filter,
                &SystemClock,
                |step| draw_replay(&mut bar, !as_json, step),
            )
            .await?;
            let value = json!({
                "entries": report.entries,
                "matched": report.matched,
                "replayed": report.replayed,
                "already_replayed": report.already_replayed,
            });
            if as_json {
                return Ok(json(&value));
            }
            Ok(format!(
                "{} of {} dead-lettered deliveries matched: {} replayed, {} replayed before\n",
                report.matched, report.entries, report.replayed, report.already_replayed
            ))
        }
    }
}
