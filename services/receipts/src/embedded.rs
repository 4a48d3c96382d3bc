//! librdkafka's mock cluster as the embedded broker of `receipts dev` and `receipts bench`.
//! Its handle cannot leave the thread it was made on, so it lives on a thread of its own; its
//! measured limits are in the project's shared notes on brokers.

use std::sync::mpsc;

use anyhow::Context;
use rdkafka::mocking::MockCluster;
use receipts_bus::TopicSpec;

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
    pub fn start(specs: Vec<TopicSpec>) -> anyhow::Result<Self> {
        let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<String>>();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("embedded-kafka".into())
            .spawn(move || {
                let started = (|| -> anyhow::Result<MockCluster<'static, _>> {
                    let cluster = MockCluster::new(1).context("starting the embedded broker")?;
                    // The embedded broker has no admin API: topics are made through the mock itself.
                    for spec in &specs {
                        cluster
                            .create_topic(&spec.name, spec.partitions, 1)
                            .with_context(|| format!("creating topic {}", spec.name))?;
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
        let bootstrap = ready_rx
            .recv()
            .context("the embedded broker thread ended")??;
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
