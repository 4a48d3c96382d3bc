//! Replaying the dead-letter topic: matching entries go back to the retry topic as due now, with
//! their attempt counter reset (the full schedule again) and their idempotency token kept.
//!
//! Every replayed entry gets a marker record on the DLQ itself (key `replayed/{partition}/{offset}`,
//! no payload, header `receipts-replayed`), so a second replay, from any machine, skips it. A
//! replay interrupted between producing an entry and its marker can resend that one entry; the
//! receiver recognises it by its `I-Twilio-Idempotency-Token`.

use std::collections::HashSet;

use receipts_bus::{KafkaSettings, Outgoing, Publisher, TopicNames};
use receipts_domain::Clock;
use receipts_proto::codec::Encoding;
use receipts_webhook::redacted_url;

use crate::DispatcherError;
use crate::job::{DUE_AT_HEADER, DeliveryJob, REPLAYED_HEADER};

/// Which DLQ entries to replay; every criterion given must hold. Also the command line of
/// `receipts-dispatcher replay-dlq`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ReplayFilter {
    /// Only deliveries of this account (AC…).
    #[arg(long)]
    pub account: Option<String>,
    /// Only deliveries to this webhook URL (as it was when the delivery was created). Records
    /// show URLs redacted (credentials and query as `***`); the full URL or its redacted form
    /// both match.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Only entries dead-lettered at or after this RFC 3339 time.
    #[arg(long = "since", value_parser = parse_rfc3339)]
    pub since_ms: Option<i64>,
    /// Only entries dead-lettered before this RFC 3339 time.
    #[arg(long = "until", value_parser = parse_rfc3339)]
    pub until_ms: Option<i64>,
}

impl ReplayFilter {
    /// Whether the delivery `job`, dead-lettered at `dead_lettered_ms`, meets every criterion.
    pub fn matches(&self, job: &DeliveryJob, dead_lettered_ms: i64) -> bool {
        self.account.as_ref().is_none_or(|a| *a == job.account_sid)
            && self
                .endpoint
                .as_ref()
                .is_none_or(|e| redacted_url(e) == redacted_url(&job.url))
            && self.since_ms.is_none_or(|s| dead_lettered_ms >= s)
            && self.until_ms.is_none_or(|u| dead_lettered_ms < u)
    }
}

/// What a replay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// DLQ entries read (markers not counted).
    pub entries: usize,
    pub matched: usize,
    pub replayed: usize,
    /// Matching entries an earlier replay already sent back.
    pub already_replayed: usize,
}

/// How far a replay has got, for whoever shows it (the CLI draws a progress bar from it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayProgress {
    /// The entries matching the filter are known: this many are gone through next.
    Matched(usize),
    /// The next matching entry is being gone through (replayed, or skipped as replayed before).
    Entry,
    /// Every matching entry was gone through.
    Finished(ReplayReport),
}

/// One delivery on the dead-letter topic, as operators list it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// `partition/offset` on the DLQ: what `replayed_from` and replay markers name.
    pub origin: String,
    /// The delivery as it gave up (URL redacted, `last_error` set).
    pub job: DeliveryJob,
    /// When it was dead-lettered (the record's timestamp), unix millis.
    pub dead_lettered_at_ms: i64,
    /// Why, from the record's `receipts-error` header.
    pub error: Option<String>,
    /// Whether a replay already sent it back to the retry topic.
    pub replayed: bool,
}

/// Every delivery on the dead-letter topic up to its end as of now, in (partition, offset)
/// order, with whether it was replayed. Records that are no delivery are left out.
pub async fn dead_letters(
    kafka: &KafkaSettings,
    topics: &TopicNames,
) -> Result<Vec<DeadLetter>, DispatcherError> {
    let (kafka, dlq) = (kafka.clone(), topics.webhook_dlq.clone());
    let entries = tokio::task::spawn_blocking(move || read_to_end(&kafka, &dlq)).await??;
    let mut markers = HashSet::new();
    let mut letters = Vec::new();
    for entry in entries {
        match entry {
            Entry::Marker(origin) => {
                markers.insert(origin);
            }
            Entry::Job {
                origin,
                job,
                at_ms,
                error,
            } => letters.push(DeadLetter {
                origin,
                job,
                dead_lettered_at_ms: at_ms,
                error,
                replayed: false,
            }),
        }
    }
    for letter in &mut letters {
        letter.replayed = markers.contains(&letter.origin);
    }
    Ok(letters)
}

/// Replays the DLQ entries matching `filter`, due at once by `clock`; tells `progress` how far it
/// has got.
pub async fn replay_dlq(
    kafka: &KafkaSettings,
    topics: &TopicNames,
    filter: &ReplayFilter,
    clock: &dyn Clock,
    mut progress: impl FnMut(ReplayProgress),
) -> Result<ReplayReport, DispatcherError> {
    let letters = dead_letters(kafka, topics).await?;
    let mut report = ReplayReport {
        entries: letters.len(),
        ..ReplayReport::default()
    };
    let mut candidates = Vec::new();
    for letter in letters {
        if filter.matches(&letter.job, letter.dead_lettered_at_ms) {
            candidates.push((letter.origin, letter.job, letter.replayed));
        }
    }
    report.matched = candidates.len();
    let publisher = Publisher::new(
        kafka,
        &receipts_bus::settings::client_id("receipts-dispatcher-replay"),
    )?;
    progress(ReplayProgress::Matched(candidates.len()));
    for (origin, mut job, replayed) in candidates {
        progress(ReplayProgress::Entry);
        if replayed {
            report.already_replayed += 1;
            continue;
        }
        job.attempt = 0;
        job.due_at_ms = clock.now().unix_millis();
        job.replayed_from = Some(origin.clone());
        let retry = Outgoing::new(&topics.webhook_retries, job.record_key(), job.to_json())
            .content_type(Encoding::Json)
            .header(DUE_AT_HEADER, job.due_at_ms.to_string())
            .traced_by(&job.trace);
        publisher.send_all(&[retry]).await?;
        let marker = Outgoing {
            topic: topics.webhook_dlq.clone(),
            key: format!("replayed/{origin}").into_bytes(),
            payload: None,
            ..Default::default()
        }
        .header(REPLAYED_HEADER, origin.as_str());
        publisher.send_all(&[marker]).await?;
        report.replayed += 1;
    }
    progress(ReplayProgress::Finished(report));
    Ok(report)
}

enum Entry {
    Marker(String),
    Job {
        origin: String,
        job: DeliveryJob,
        at_ms: i64,
        error: Option<String>,
    },
}

/// Every record of `topic` up to the high watermarks as of now.
fn read_to_end(kafka: &KafkaSettings, topic: &str) -> Result<Vec<Entry>, DispatcherError> {
    let mut entries = Vec::new();
    for partition in receipts_bus::changelog::partition_ends(kafka, topic)?.into_keys() {
        receipts_bus::changelog::restore_partition(kafka, topic, partition, None, |records, _| {
            for record in records {
                let origin = format!("{}/{}", record.partition(), record.offset());
                let replayed = record
                    .header(REPLAYED_HEADER)
                    .map(|v| String::from_utf8_lossy(v).into_owned());
                if let Some(of) = replayed {
                    entries.push(Entry::Marker(of));
                } else if let Some(Ok(mut job)) = record.payload().map(DeliveryJob::from_json) {
                    // A replayed delivery stays in the trace of the report that caused it.
                    job.trace = receipts_bus::TraceCarrier::of_record(record);
                    let at_ms = record.timestamp_millis().unwrap_or_default();
                    let error = record
                        .header(receipts_bus::record::ERROR_HEADER)
                        .map(|v| String::from_utf8_lossy(v).into_owned());
                    entries.push(Entry::Job {
                        origin,
                        job,
                        at_ms,
                        error,
                    });
                }
            }
            Ok::<_, std::convert::Infallible>(())
        })?;
    }
    Ok(entries)
}

/// Parses an RFC 3339 time (`2026-11-27T18:00:00Z`, `…T18:00:00.5+01:00`) into unix millis.
pub fn parse_rfc3339(text: &str) -> Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.timestamp_millis())
        .map_err(|_| format!("{text:?} is not an RFC 3339 time like 2026-11-27T18:00:00Z"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times_parse() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_rfc3339("2020-03-23T18:45:17Z"), Ok(1_584_989_117_000));
        assert_eq!(
            parse_rfc3339("2020-03-23T19:45:17.25+01:00"),
            Ok(1_584_989_117_250)
        );
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00Z"), Ok(951_782_400_000));
        assert!(parse_rfc3339("2020-03-23").is_err());
        assert!(parse_rfc3339("2020-13-23T00:00:00Z").is_err());
        assert!(parse_rfc3339("2020-03-23T00:00:00").is_err());
    }
}
