//! librdkafka's mock cluster as the embedded broker of `receipts dev` and `receipts bench`.
//! Its handle cannot leave the thread it was made on, so it lives on a thread of its own; its
//! measured limits are in the project's shared notes on brokers.

use std::sync::mpsc;

use rdkafka::error::KafkaError;
use rdkafka::mocking::MockCluster;

use crate::TopicSpec;

/// The embedded broker did not start.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error("starting the embedded broker")]
    Start(#[source] KafkaError),
    #[error("creating topic {topic} on the embedded broker")]
    CreateTopic {
        topic: String,
        #[source]
        source: KafkaError,
    },
    #[error("starting the embedded broker's thread")]
    Thread(#[from] std::io::Error),
    #[error("the embedded broker's thread ended before the broker was ready")]
    Ended,
}

/// An embedded broker on a thread of its own (its handle cannot move between threads); dropping
/// this stops it.
pub struct EmbeddedBroker {
    bootstrap: String,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EmbeddedBroker {
    /// Starts the broker with the given topics (it has no admin API: topics are made through the
    /// mock itself).
    pub fn start(specs: Vec<TopicSpec>) -> Result<Self, EmbeddedError> {
        let (ready_tx, ready_rx) = mpsc::channel::<Result<String, EmbeddedError>>();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("embedded-kafka".into())
            .spawn(move || {
                let started = (|| -> Result<MockCluster<'static, _>, EmbeddedError> {
                    let cluster = MockCluster::new(1).map_err(EmbeddedError::Start)?;
                    // The embedded broker has no admin API: topics are made through the mock itself.
                    for spec in &specs {
                        cluster
                            .create_topic(&spec.name, spec.partitions, 1)
                            .map_err(|source| EmbeddedError::CreateTopic {
                                topic: spec.name.clone(),
                                source,
                            })?;
                    }
                    Ok(cluster)
                })();
                match started {
                    Ok(cluster) => {
                        let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                        let _ = stop_rx.recv();
                        drop(cluster);
                    }
                    Err(error) => {
                        let _ = ready_tx.send(Err(error));
                    }
                }
            })?;
        let bootstrap = ready_rx.recv().map_err(|_| EmbeddedError::Ended)??;
        Ok(EmbeddedBroker {
            bootstrap,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The broker's `bootstrap.servers`.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }
}

impl std::fmt::Debug for EmbeddedBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBroker")
            .field("bootstrap", &self.bootstrap)
            .finish_non_exhaustive()
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
