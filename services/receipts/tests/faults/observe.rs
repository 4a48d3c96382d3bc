//! What the system shows from the outside while faults happen: every record of
//! `receipt-updates` (read from the beginning by a consumer of the test's own), the query instances
//! over gRPC, and the webhook receiver; and from these, whether the system has caught up with the
//! input produced up to a given moment.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use receipts_domain::{ReceiptChange, ReceiptSid};
use receipts_proto::codec::{self, Encoding};
use receipts_proto::v1;
use receipts_proto::v1::delivery_query_client::DeliveryQueryClient;
use receipts_query::auth::Credentials;
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::receiver::Receiver;
use crate::workload::{ACCOUNT, Model, TOKEN};

/// One (receipt, version) as published on `receipt-updates`.
pub(crate) struct Published {
    /// The first record of this version.
    pub(crate) change: ReceiptChange,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    /// Later records of the same version.
    pub(crate) repeats: u32,
    /// Later records of the same version with different content.
    pub(crate) conflicting: u32,
}

#[derive(Default)]
pub(crate) struct UpdateRecord {
    pub(crate) by_receipt: HashMap<ReceiptSid, BTreeMap<u64, Published>>,
    pub(crate) records: u64,
    pub(crate) undecodable: u64,
    /// Errors the reader met (an offset out of range means records were lost to it).
    pub(crate) errors: Vec<String>,
}

/// Reads `receipt-updates` from the beginning of every partition, in the background.
pub(crate) struct UpdateLog {
    record: Arc<Mutex<UpdateRecord>>,
    task: JoinHandle<()>,
}

impl UpdateLog {
    pub(crate) fn follow(
        mut config: ClientConfig,
        topic: &str,
        partitions: i32,
    ) -> anyhow::Result<Self> {
        let consumer: StreamConsumer = config
            .set("group.id", "fault-suite-reader")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "error")
            .set("enable.partition.eof", "false")
            .create()?;
        let mut assignment = TopicPartitionList::new();
        for p in 0..partitions {
            assignment.add_partition_offset(topic, p, Offset::Beginning)?;
        }
        consumer.assign(&assignment)?;
        let record: Arc<Mutex<UpdateRecord>> = Arc::default();
        let kept = record.clone();
        let task = tokio::spawn(async move {
            loop {
                match consumer.recv().await {
                    Ok(message) => keep(&kept, &message),
                    // The broker being away is no loss; anything else (offset out of range) may be.
                    Err(KafkaError::MessageConsumption(
                        RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown,
                    )) => {}
                    Err(error) => {
                        let mut kept = kept.lock().unwrap_or_else(PoisonError::into_inner);
                        if kept.errors.len() < 20 {
                            kept.errors.push(error.to_string());
                        }
                    }
                }
            }
        });
        Ok(UpdateLog { record, task })
    }

    pub(crate) fn record(&self) -> MutexGuard<'_, UpdateRecord> {
        self.record.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for UpdateLog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn keep(kept: &Mutex<UpdateRecord>, message: &rdkafka::message::BorrowedMessage<'_>) {
    let change = message
        .payload()
        .and_then(|p| codec::decode::<v1::ReceiptUpdated>(p, Encoding::Protobuf).ok())
        .and_then(|wire| ReceiptChange::try_from(&wire).ok());
    let mut kept = kept.lock().unwrap_or_else(PoisonError::into_inner);
    kept.records += 1;
    let Some(change) = change else {
        kept.undecodable += 1;
        return;
    };
    let versions = kept
        .by_receipt
        .entry(change.receipt.sid.clone())
        .or_default();
    match versions.get_mut(&change.receipt.version) {
        Some(first) => {
            first.repeats += 1;
            if first.change != change {
                first.conflicting += 1;
            }
        }
        None => {
            versions.insert(
                change.receipt.version,
                Published {
                    change,
                    partition: message.partition(),
                    offset: message.offset(),
                    repeats: 0,
                    conflicting: 0,
                },
            );
        }
    }
}

pub(crate) type QueryClient = DeliveryQueryClient<InterceptedService<Channel, Credentials>>;

/// A gRPC client of the query instance on `port`, authenticated as the suite's account.
pub(crate) async fn query_client(port: u16) -> anyhow::Result<QueryClient> {
    let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .connect()
        .await?;
    Ok(DeliveryQueryClient::with_interceptor(
        channel,
        Credentials::new(ACCOUNT, TOKEN)?,
    ))
}

/// The input produced up to a moment, and what of it the system has not shown yet. Each check
/// looks again only at what was missing the time before.
pub(crate) struct Cutoff {
    pub(crate) at: Instant,
    /// Receipts whose version at the cutoff was not seen on `receipt-updates` yet.
    unpublished: Vec<(ReceiptSid, u64)>,
    /// Per partition, the needed record with the greatest offset seen so far: a query instance
    /// that serves it has read the partition that far (it reads each partition in order).
    newest: HashMap<i32, (i64, ReceiptChange)>,
    /// Webhook-firing (receipt, version) pairs up to the cutoff not delivered yet.
    undelivered: Vec<(ReceiptSid, u64)>,
}

impl Cutoff {
    pub(crate) fn of(model: &Model) -> Self {
        let versions = model.versions();
        let undelivered = versions
            .iter()
            .flat_map(|(sid, &v)| model.firing(sid, v).into_iter().map(|f| (sid.clone(), f)))
            .collect();
        Cutoff {
            at: Instant::now(),
            unpublished: versions.into_iter().collect(),
            newest: HashMap::new(),
            undelivered,
        }
    }
}

/// What is still missing for the system to be caught up with a cutoff.
#[derive(Debug, Default, Clone)]
pub(crate) struct Behind {
    /// Receipts whose cutoff version was not published yet.
    pub(crate) projector: usize,
    /// Query instances that do not serve the newest needed record of every partition.
    pub(crate) query: Vec<String>,
    /// Webhook-firing changes up to the cutoff neither delivered nor superseded by a delivered
    /// newer version.
    pub(crate) webhooks: usize,
}

impl Behind {
    pub(crate) fn caught_up(&self) -> bool {
        self.projector == 0 && self.query.is_empty() && self.webhooks == 0
    }
}

impl std::fmt::Display for Behind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} receipts unpublished, query behind: {:?}, {} webhooks outstanding",
            self.projector, self.query, self.webhooks
        )
    }
}

/// How far the system is from `cutoff`.
pub(crate) async fn behind(
    cutoff: &mut Cutoff,
    updates: &UpdateLog,
    queries: &[(String, u16)],
    receiver: &Receiver,
) -> Behind {
    {
        let record = updates.record();
        let newest = &mut cutoff.newest;
        cutoff.unpublished.retain(|(sid, version)| {
            let Some(published) = record.by_receipt.get(sid).and_then(|v| v.get(version)) else {
                return true;
            };
            let entry = newest
                .entry(published.partition)
                .or_insert_with(|| (published.offset, published.change.clone()));
            if published.offset > entry.0 {
                *entry = (published.offset, published.change.clone());
            }
            false
        });
    }
    {
        let delivered = receiver.record();
        cutoff.undelivered.retain(|(sid, v)| {
            let ok = delivered.ok_versions.get(sid.as_str());
            ok.is_none_or(|ok| ok.range(v..).next().is_none())
        });
    }
    let mut behind = Behind {
        projector: cutoff.unpublished.len(),
        query: Vec::new(),
        webhooks: cutoff.undelivered.len(),
    };
    if behind.projector > 0 {
        behind.query = queries.iter().map(|(name, _)| name.clone()).collect();
        return behind;
    }
    for (name, port) in queries {
        let mut serves = true;
        match query_client(*port).await {
            Ok(mut client) => {
                for (_, change) in cutoff.newest.values() {
                    let registration = &change.receipt.registration;
                    let request = v1::GetReceiptRequest {
                        conversation_sid: registration.conversation.as_str().to_owned(),
                        message_sid: registration.message.as_str().to_owned(),
                        receipt_sid: change.receipt.sid.as_str().to_owned(),
                    };
                    let current = client
                        .get_receipt(request)
                        .await
                        .is_ok_and(|r| r.into_inner().version >= change.receipt.version);
                    if !current {
                        serves = false;
                        break;
                    }
                }
            }
            Err(_) => serves = false,
        }
        if !serves {
            behind.query.push(name.clone());
        }
    }
    behind
}
