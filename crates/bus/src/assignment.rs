//! Partition assignment from stored offsets.
//!
//! Every service stores the next offset of each partition with its state (DESIGN §4). When the
//! group assigns it partitions, reading starts at those stored offsets — the beginning where
//! nothing is stored — never at the group's committed offsets, which are only advisory. A crash
//! therefore replays exactly the records whose effects were not stored.

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{error, info};

/// Handles a rebalance event: assigns the partitions in `tpl` at the offsets `stored` returns,
/// or gives them up. Call it from [`ConsumerContext::rebalance`].
///
/// A partition whose stored offset cannot be read is left unassigned (and logged): starting it
/// anywhere else could skip or re-apply records.
pub fn rebalance_from_stored<C, E>(
    consumer: &BaseConsumer<C>,
    event: RDKafkaRespErr,
    tpl: &TopicPartitionList,
    stored: impl Fn(&str, i32) -> Result<Option<i64>, E>,
) where
    C: ConsumerContext,
    E: std::fmt::Display,
{
    match event {
        RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
            let mut assignment = TopicPartitionList::new();
            for element in tpl.elements() {
                let (topic, partition) = (element.topic(), element.partition());
                let offset = match stored(topic, partition) {
                    Ok(Some(next)) => Offset::Offset(next),
                    Ok(None) => Offset::Beginning,
                    Err(e) => {
                        error!(topic, partition, error = %e, "cannot read stored offset; partition left unassigned");
                        continue;
                    }
                };
                info!(topic, partition, ?offset, "partition assigned");
                if let Err(e) = assignment.add_partition_offset(topic, partition, offset) {
                    error!(topic, partition, error = %e, "cannot assign partition");
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
