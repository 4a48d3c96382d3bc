//! Produces the workload to `delivery-events` at a steady rate, keyed by channel message id as
//! ingest does, and folds every event into the model in the order it was produced. Records are
//! queued in the producer while the broker is away and delivered when it is back.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use receipts_proto::codec::{self, Encoding};
use receipts_proto::v1;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::workload::{Model, Workload};

const TICK: Duration = Duration::from_millis(20);

pub(crate) struct Stream {
    close: Arc<AtomicBool>,
    produced: Arc<AtomicUsize>,
    task: Option<JoinHandle<anyhow::Result<usize>>>,
}

impl Stream {
    /// Starts producing `rate` events per second from `workload` to `topic`.
    pub(crate) fn start(
        mut config: ClientConfig,
        topic: String,
        mut workload: Workload,
        rate: u32,
        model: Arc<Mutex<Model>>,
    ) -> anyhow::Result<Self> {
        let producer: FutureProducer = config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "900000")
            .set("queue.buffering.max.messages", "2000000")
            .create()?;
        let close = Arc::new(AtomicBool::new(false));
        let produced = Arc::new(AtomicUsize::new(0));
        let (acks, mut pending) = mpsc::unbounded_channel();
        let failures = tokio::spawn(async move {
            let mut failed: Vec<String> = Vec::new();
            while let Some(ack) = pending.recv().await {
                let ack: rdkafka::producer::DeliveryFuture = ack;
                match ack.await {
                    Ok(Ok(_)) => {}
                    Ok(Err((error, _))) => failed.push(error.to_string()),
                    Err(_) => failed.push("the producer went away".into()),
                }
            }
            failed
        });
        let task = {
            let (close, produced) = (close.clone(), produced.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(TICK);
                let per_tick = f64::from(rate) * TICK.as_secs_f64();
                let mut credit = 0.0;
                'produce: loop {
                    tick.tick().await;
                    if close.load(Ordering::SeqCst) {
                        workload.close();
                    }
                    credit += per_tick;
                    while credit >= 1.0 {
                        credit -= 1.0;
                        let Some(event) = workload.next_event() else {
                            break 'produce;
                        };
                        let payload =
                            codec::encode(&v1::Envelope::from(&event), Encoding::Protobuf);
                        let key = event.receipt_key().to_string();
                        let mut attempts = 0;
                        let ack = loop {
                            let record = FutureRecord::to(&topic).key(&key).payload(&payload);
                            match producer.send_result(record) {
                                Ok(ack) => break ack,
                                Err((
                                    KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                                    _,
                                )) if attempts < 600 => {
                                    attempts += 1;
                                    tokio::time::sleep(Duration::from_millis(100)).await;
                                }
                                Err((error, _)) => anyhow::bail!("producing: {error}"),
                            }
                        };
                        // Queued in production order, which is log order per key.
                        model
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .apply(&event);
                        produced.fetch_add(1, Ordering::SeqCst);
                        let _ = acks.send(ack);
                    }
                }
                drop(acks);
                let flushed =
                    tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(600)))
                        .await?;
                flushed?;
                let failed = failures.await?;
                anyhow::ensure!(
                    failed.is_empty(),
                    "{} events were not acknowledged, e.g. {}",
                    failed.len(),
                    failed[0]
                );
                Ok(produced.load(Ordering::SeqCst))
            })
        };
        Ok(Stream {
            close,
            produced,
            task: Some(task),
        })
    }

    pub(crate) fn produced(&self) -> usize {
        self.produced.load(Ordering::SeqCst)
    }

    /// Starts no new messages, finishes the ones in progress at the same rate, and returns the
    /// number of events produced once all are acknowledged.
    pub(crate) async fn finish(mut self) -> anyhow::Result<usize> {
        self.close.store(true, Ordering::SeqCst);
        match self.task.take() {
            Some(task) => task.await?,
            None => anyhow::bail!("the stream was finished already"),
        }
    }
}

/// A scenario that ends early stops its input.
impl Drop for Stream {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
