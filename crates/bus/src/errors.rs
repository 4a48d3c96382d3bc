//! Sorting consumer errors into the ones to wait out and the ones to stop on.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// Whether the consumer can go on after `error`.
///
/// Fatal: a stored offset fell off the log (data would be lost if reading went on elsewhere) and
/// anything that says the client itself is unusable. Everything else — a broker or topic that is
/// not there yet, a network error — is waited out with backoff.
pub fn is_fatal(error: &KafkaError) -> bool {
    match error {
        KafkaError::MessageConsumption(code) | KafkaError::Global(code) => matches!(
            code,
            RDKafkaErrorCode::OffsetOutOfRange
                | RDKafkaErrorCode::AutoOffsetReset
                | RDKafkaErrorCode::Fatal
                | RDKafkaErrorCode::Authentication
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::GroupAuthorizationFailed
        ),
        KafkaError::ClientCreation(_) | KafkaError::ClientConfig(..) => true,
        _ => false,
    }
}

/// Capped exponential backoff with jitter, for waiting out transient errors.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: Duration::from_millis(100),
            max: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// The next delay: doubles up to the cap, each drawn uniformly from its upper half so that
    /// many clients do not retry in step.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        let half = delay / 2;
        half + half.mul_f64(rand::random::<f64>())
    }

    /// Back to the shortest delay, after a success.
    pub fn reset(&mut self) {
        *self = Backoff {
            max: self.max,
            ..Backoff::default()
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_offsets_are_fatal_and_missing_topics_are_not() {
        assert!(is_fatal(&KafkaError::MessageConsumption(
            RDKafkaErrorCode::OffsetOutOfRange
        )));
        assert!(is_fatal(&KafkaError::MessageConsumption(
            RDKafkaErrorCode::AutoOffsetReset
        )));
        assert!(!is_fatal(&KafkaError::MessageConsumption(
            RDKafkaErrorCode::UnknownTopicOrPartition
        )));
        assert!(!is_fatal(&KafkaError::MessageConsumption(
            RDKafkaErrorCode::BrokerTransportFailure
        )));
    }

    #[test]
    fn backoff_grows_to_its_cap_and_resets() {
        let mut backoff = Backoff::default();
        let delays: Vec<_> = (0..12).map(|_| backoff.next_delay()).collect();
        assert!(delays[0] <= Duration::from_millis(100));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(10)));
        assert!(delays[11] >= Duration::from_secs(5), "{delays:?}");
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }
}
