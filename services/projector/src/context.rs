//! The consumer context that makes stored offsets, not the group's, decide where reading starts.

use std::sync::Arc;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, StreamConsumer};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, TopicPartitionList};
use receipts_bus::assignment::rebalance_from_stored;
use receipts_store::ProjectorStore;

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
        event: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        rebalance_from_stored(consumer, event, tpl, |topic, partition| {
            if topic == self.topic {
                self.store.next_offset(topic, partition)
            } else {
                Ok(None)
            }
        });
    }
}
