//! The consumer context that makes stored offsets, not the group's, decide where reading starts.

use std::sync::Arc;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use receipts_store::ProjectorStore;
use tracing::{error, info};

use crate::metrics::PartitionLabel;

pub(crate) type ProjectorConsumer = StreamConsumer<SeekToStored>;

/// On assignment, starts each partition at the offset stored with the state (or at the
/// beginning when nothing was stored), so a crash replays exactly the unstored records.
/// Also turns librdkafka's periodic statistics into the per-partition lag gauge.
pub(crate) struct SeekToStored {
    store: Arc<dyn ProjectorStore>,
    topic: String,
    lag: Family<PartitionLabel, Gauge>,
}

impl SeekToStored {
    pub(crate) fn new(
        store: Arc<dyn ProjectorStore>,
        topic: String,
        lag: Family<PartitionLabel, Gauge>,
    ) -> Self {
        SeekToStored { store, topic, lag }
    }
}

impl ClientContext for SeekToStored {
    fn stats(&self, statistics: Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else {
            return;
        };
        for (&partition, stats) in &topic.partitions {
            // -1 is the internal "unassigned" partition, and lag is -1 where unknown.
            if partition >= 0 && stats.consumer_lag >= 0 {
                self.lag
                    .get_or_create(&PartitionLabel { partition })
                    .set(stats.consumer_lag);
            }
        }
    }
}

impl ConsumerContext for SeekToStored {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let mut assignment = TopicPartitionList::new();
                for element in tpl.elements() {
                    let stored = if element.topic() == self.topic {
                        self.store.next_offset(element.topic(), element.partition())
                    } else {
                        Ok(None)
                    };
                    let offset = match stored {
                        Ok(Some(next)) => Offset::Offset(next),
                        Ok(None) => Offset::Beginning,
                        Err(e) => {
                            // Starting anywhere else could skip or re-apply records: stop consuming
                            // this partition and say why.
                            error!(partition = element.partition(), error = %e, "cannot read stored offset");
                            continue;
                        }
                    };
                    info!(
                        partition = element.partition(),
                        ?offset,
                        "partition assigned"
                    );
                    if let Err(e) = assignment.add_partition_offset(
                        element.topic(),
                        element.partition(),
                        offset,
                    ) {
                        error!(partition = element.partition(), error = %e, "cannot assign partition");
                    }
                }
                if let Err(e) = consumer.assign(&assignment) {
                    error!(error = %e, "assignment failed");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                info!(partitions = tpl.count(), "partitions revoked");
                if let Err(e) = consumer.unassign() {
                    error!(error = %e, "unassignment failed");
                }
            }
            other => {
                let code: RDKafkaErrorCode = other.into();
                error!(error = %code, "rebalance failed");
                let _ = consumer.unassign();
            }
        }
    }
}
