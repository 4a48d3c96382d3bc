//! `receipts parked`: the status reports waiting for their registration, oldest first.
//!
//! By default they are read from the projector changelog, which holds the state of every receipt
//! of every partition (a parked report is a state without a registration), so it works while the
//! projectors run and whichever owns a partition. `--data-dir` reads one stopped projector's own
//! database instead, as `receipts-projector parked` does.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Context;
use prost::Message as _;
use receipts_domain::{ReceiptKey, ReceiptState, StatusReport};
use receipts_proto::v1;
use receipts_store::{ProjectorStore, SledProjectorStore};
use serde::Serialize;

use super::{OpsConfig, fold_topic, json, table, time};

#[derive(Debug, Clone, Default, clap::Args)]
pub struct ParkedArgs {
    /// Read this stopped projector's data directory instead of the changelog.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Only reports waiting longer than this many seconds (the projector's `parked_ttl_secs`
    /// to see those it reports as expired).
    #[arg(long)]
    pub older_than_secs: Option<u64>,
}

/// One parked report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Parked {
    pub account_sid: String,
    pub channel_message_id: String,
    /// Since when it waits: when its state was last written (the arrival of its best report).
    pub parked_since: String,
    pub parked_since_ms: i64,
    pub status: Option<String>,
    pub raw_status: Option<String>,
    pub provider_time: Option<String>,
}

fn parked(key: &ReceiptKey, since_ms: i64, report: Option<&StatusReport>) -> Parked {
    Parked {
        account_sid: key.account.to_string(),
        channel_message_id: key.channel_message_id.to_string(),
        parked_since: time(Some(since_ms)),
        parked_since_ms: since_ms,
        status: report.map(|r| r.status.as_str().to_owned()),
        raw_status: report.map(|r| r.raw_status.clone()),
        provider_time: report.map(|r| time(Some(r.provider_time.unix_millis()))),
    }
}

/// The receipts whose latest state on the changelog has no registration (compaction may not
/// have run yet, so a later record of a key replaces an earlier one, and a registration ends the
/// wait). Only the parked ones are held while reading.
async fn from_changelog(config: &OpsConfig) -> anyhow::Result<Vec<Parked>> {
    let waiting = fold_topic(
        &config.kafka,
        &config.topics.projector_changelog,
        HashMap::<String, Parked>::new(),
        |waiting, record| {
            let Some(key) = record.key().and_then(|k| std::str::from_utf8(k).ok()) else {
                return Ok(());
            };
            let Some(payload) = record.payload() else {
                waiting.remove(key);
                return Ok(());
            };
            let stored = v1::StoredReceiptState::decode(payload)
                .with_context(|| format!("decoding {}", record.origin()))?;
            let state = ReceiptState::try_from(&stored)
                .with_context(|| format!("reading {}", record.origin()))?;
            match state.parked_report() {
                Some(report) => {
                    let id = ReceiptKey::parse(key)
                        .with_context(|| format!("the key of {}", record.origin()))?;
                    let since = record.timestamp_millis().unwrap_or_default();
                    waiting.insert(key.to_owned(), parked(&id, since, Some(report)));
                }
                None => {
                    waiting.remove(key);
                }
            }
            Ok(())
        },
    )
    .await?;
    Ok(waiting.into_values().collect())
}

fn from_database(dir: &std::path::Path) -> anyhow::Result<Vec<Parked>> {
    let store = SledProjectorStore::open(dir).with_context(|| {
        format!(
            "opening the projector database {} (is its projector still running?)",
            dir.display()
        )
    })?;
    Ok(store
        .parked()?
        .iter()
        .map(|p| parked(&p.key, p.parked_since.unix_millis(), p.report.as_ref()))
        .collect())
}

pub async fn run(config: &OpsConfig, args: ParkedArgs, as_json: bool) -> anyhow::Result<String> {
    let mut found = match &args.data_dir {
        Some(dir) => from_database(dir)?,
        None => from_changelog(config).await?,
    };
    if let Some(secs) = args.older_than_secs {
        use receipts_runtime::clock::{Clock, SystemClock};
        let now_ms = SystemClock.now().unix_millis();
        let cutoff = now_ms - (secs as i64).saturating_mul(1000);
        found.retain(|p| p.parked_since_ms < cutoff);
    }
    found.sort_by(|a, b| {
        (a.parked_since_ms, &a.account_sid, &a.channel_message_id).cmp(&(
            b.parked_since_ms,
            &b.account_sid,
            &b.channel_message_id,
        ))
    });
    if as_json {
        return Ok(json(&found));
    }
    let rows: Vec<Vec<String>> = found
        .iter()
        .map(|p| {
            vec![
                p.parked_since.clone(),
                p.account_sid.clone(),
                p.channel_message_id.clone(),
                p.status.clone().unwrap_or_else(|| "-".into()),
                p.provider_time.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "PARKED SINCE",
            "ACCOUNT",
            "CHANNEL MESSAGE ID",
            "STATUS",
            "PROVIDER TIME",
        ],
        &rows,
    );
    out.push_str(&format!("{} parked report(s)\n", rows.len()));
    Ok(out)
}
