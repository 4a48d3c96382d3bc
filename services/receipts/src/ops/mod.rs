//! Operator commands against a running system's Kafka topics: the webhook dead-letter topic
//! ([`dlq`]), consumer lag ([`lag`]), status reports waiting for their registration
//! ([`parked`]) and webhook configuration and deliveries ([`webhooks`]); [`secrets`], the
//! signing secrets, goes through the query service instead, which holds their key.
//!
//! Every command reads the topics directly, so it works while the services run and whichever
//! instance owns a partition; none of them joins a consumer group. Each one returns its output
//! as text, a table for people or JSON (`--json`) for scripts, so tests run the very code the
//! command line does.

pub mod dlq;
pub mod lag;
pub mod parked;
pub mod secrets;
pub mod webhooks;

use std::path::PathBuf;

use anyhow::Context;
use receipts_bus::record::Record;
use receipts_bus::{KafkaSettings, TopicNames};
use receipts_runtime::config::{self, Validate};
use serde::{Deserialize, Serialize};

/// Where the system's topics are: the `[kafka]` and `[topics]` of the services' configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct OpsConfig {
    pub kafka: KafkaSettings,
    pub topics: TopicNames,
}

impl Validate for OpsConfig {}

/// How an operator command finds the system and prints its answer.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct OpsArgs {
    /// The services' TOML configuration file; its [kafka] and [topics] are used (then
    /// RECEIPTS_KAFKA__… and RECEIPTS_TOPICS__… variables, as for the services).
    #[arg(long, env = "RECEIPTS_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Kafka bootstrap servers, instead of the configuration's.
    #[arg(long, global = true)]
    pub kafka: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

impl OpsArgs {
    pub fn load(&self) -> anyhow::Result<OpsConfig> {
        let mut loaded: OpsConfig =
            config::load(self.config.as_deref()).context("loading configuration")?;
        if let Some(servers) = &self.kafka {
            loaded.kafka.bootstrap_servers = servers.clone();
        }
        Ok(loaded)
    }
}

/// Folds every record of `topic`, up to its end as of now and partition by partition, into
/// `state` with `visit`, on a blocking thread; a topic that does not exist has no records. Only
/// what `visit` keeps stays in memory, however long the topic.
pub(crate) async fn fold_topic<T, F>(
    kafka: &KafkaSettings,
    topic: &str,
    state: T,
    mut visit: F,
) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: FnMut(&mut T, &Record) -> anyhow::Result<()> + Send + 'static,
{
    let (kafka, topic) = (kafka.clone(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let mut state = state;
        let ends = receipts_bus::changelog::partition_ends(&kafka, &topic)
            .with_context(|| format!("reading the partitions of {topic}"))?;
        for partition in ends.into_keys() {
            let mut failure = None;
            let read = receipts_bus::changelog::restore_partition(
                &kafka,
                &topic,
                partition,
                None,
                |chunk, _| {
                    for record in chunk {
                        if let Err(error) = visit(&mut state, record) {
                            failure = Some(error);
                            return Err(Stopped);
                        }
                    }
                    Ok(())
                },
            );
            if let Some(error) = failure {
                return Err(error);
            }
            read.with_context(|| format!("reading {topic} partition {partition}"))?;
        }
        Ok(state)
    })
    .await
    .context("reading a topic")?
}

/// Ends a [`fold_topic`] early; the reason is kept beside it.
#[derive(Debug)]
struct Stopped;

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stopped by an unreadable record")
    }
}

impl std::error::Error for Stopped {}

/// `YYYY-MM-DDTHH:MM:SSZ`, or `-` for none.
pub(crate) fn time(millis: Option<i64>) -> String {
    millis.map_or_else(
        || "-".to_owned(),
        |ms| receipts_domain::Timestamp::from_unix_millis(ms).iso8601_seconds(),
    )
}

/// Lines of `rows` under `header`, each column as wide as its widest cell.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let padded: Vec<String> = cells
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(padded.join("  ").trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// `value` as pretty JSON and a newline.
pub(crate) fn json(value: &impl Serialize) -> String {
    let mut text = serde_json::to_string_pretty(value).expect("command output serialises");
    text.push('\n');
    text
}
