//! Timing a stage that works through a backlog: how fast a bare consumer reads and decodes it
//! (the raw limit), and how fast a service's *stored* offsets advance over it.
//!
//! Both rates leave out the first [`WARMUP_FRACTION`] of the backlog, which covers connecting,
//! joining the group, opening sled and the first fetches; the rest is the steady state.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use receipts_bus::KafkaSettings;

/// The share of a backlog that warms a stage up and is not timed.
pub const WARMUP_FRACTION: f64 = 0.05;

/// How a run through a backlog went.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    /// Records per second after the warm-up.
    pub rate: f64,
    /// From start (client created) to the last record.
    pub total: Duration,
    /// Records the rate was computed over.
    pub timed_records: u64,
}

fn warmup(total: u64) -> u64 {
    ((total as f64 * WARMUP_FRACTION) as u64).max(1)
}

/// Reads every record of `ends` (partition → end offset) from the beginning with a bare
/// `StreamConsumer` (the client the services use, with their consumer settings) and runs `decode`
/// on each; counts decode failures. This is the limit a stage consuming the topic works against.
pub async fn raw_consume(
    kafka: &KafkaSettings,
    topic: &str,
    ends: &[(i32, i64)],
    decode: impl Fn(&rdkafka::message::BorrowedMessage<'_>) -> bool,
) -> anyhow::Result<(Throughput, u64)> {
    let total: u64 = ends.iter().map(|(_, end)| *end as u64).sum();
    let group = format!("receipts-bench-raw-{:08x}", rand::random::<u32>());
    let consumer: StreamConsumer = kafka.consumer_config(&group, &group).create()?;
    let mut assignment = TopicPartitionList::new();
    for (partition, _) in ends {
        assignment.add_partition_offset(topic, *partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let started = Instant::now();
    let warm = warmup(total);
    let (mut seen, mut failed) = (0u64, 0u64);
    let mut timed_from: Option<(Instant, u64)> = None;
    while seen < total {
        let message = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .context("no record for a minute")??;
        if !decode(&message) {
            failed += 1;
        }
        seen += 1;
        if timed_from.is_none() && seen >= warm {
            timed_from = Some((Instant::now(), seen));
        }
    }
    let (from, at) = match timed_from {
        Some((_, at)) if at >= total => (started, 0),
        Some(from) => from,
        None => (started, 0),
    };
    let elapsed = from.elapsed();
    Ok((
        Throughput {
            rate: super::per_sec(seen - at, elapsed),
            total: started.elapsed(),
            timed_records: seen - at,
        },
        failed,
    ))
}

/// Polls `stored` (the sum over partitions of a service's stored next offsets) until it reaches
/// `total`, and times its advance after the warm-up. Fails after `timeout` without progress.
/// How far a store has come: the sum of the next offsets `next_offset` gives for the partitions
/// of `ends`, for [`track_stored_offsets`].
pub fn stored_offsets<E>(
    ends: &[(i32, i64)],
    next_offset: impl Fn(i32) -> Result<Option<i64>, E> + Send + 'static,
) -> impl Fn() -> anyhow::Result<u64> + Send + 'static
where
    E: std::error::Error + Send + Sync + 'static,
{
    let partitions: Vec<i32> = ends.iter().map(|(partition, _)| *partition).collect();
    move || {
        let mut sum = 0u64;
        for &partition in &partitions {
            sum += next_offset(partition)?.unwrap_or(0) as u64;
        }
        Ok(sum)
    }
}

pub async fn track_stored_offsets(
    total: u64,
    timeout: Duration,
    stored: impl Fn() -> anyhow::Result<u64> + Send + 'static,
) -> anyhow::Result<Throughput> {
    let stop = Arc::new(AtomicBool::new(false));
    let guard = StopOnDrop(stop.clone());
    let result = tokio::task::spawn_blocking(move || -> anyhow::Result<Throughput> {
        let started = Instant::now();
        let warm = warmup(total);
        let mut timed_from: Option<(Instant, u64)> = None;
        let (mut last, mut last_change) = (0u64, Instant::now());
        loop {
            if stop.load(Ordering::Relaxed) {
                anyhow::bail!("stopped");
            }
            let now_stored = stored()?;
            let now = Instant::now();
            if now_stored != last {
                last = now_stored;
                last_change = now;
            }
            if timed_from.is_none() && now_stored >= warm {
                timed_from = Some((now, now_stored));
            }
            if now_stored >= total {
                let (from, at) = match timed_from {
                    // A backlog done in one step has no steady state to time: the rate then
                    // includes the start-up (only tiny runs, such as the tests, get here).
                    Some((_, at)) if at >= total => (started, 0),
                    Some(from) => from,
                    None => (started, 0),
                };
                return Ok(Throughput {
                    rate: super::per_sec(now_stored - at, now - from),
                    total: now - started,
                    timed_records: now_stored - at,
                });
            }
            if now - last_change > timeout {
                anyhow::bail!(
                    "stored offsets stopped at {now_stored} of {total} for {} s",
                    timeout.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    })
    .await?;
    drop(guard);
    result
}

struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}
