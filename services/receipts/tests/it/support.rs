//! The four services of receipts (ingest, projector, query, dispatcher) in the test process on
//! fresh topics of the test broker, each with the configuration a test adjusts before they start,
//! and listeners bound on port 0.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use receipts_bus::topics::ensure_topics;
use receipts_bus::{KafkaSettings, TopicNames};
use receipts_runtime::config::Secret;
use receipts_runtime::metrics::Metrics;
use receipts_webhook::ssrf::AddressPolicy;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A listener on a free port of 127.0.0.1, and its address.
pub(crate) async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    (listener, address)
}

/// The test broker with a fresh set of topics, two partitions each.
pub(crate) async fn fresh_topics() -> (KafkaSettings, TopicNames) {
    let kafka = receipts_testkit::kafka();
    let topics = receipts_testkit::unique_topics();
    ensure_topics(&kafka, &topics.specs(2)).await.unwrap();
    (kafka, topics)
}

/// The configurations of the four services, to adjust before [`Services::spawn`].
pub(crate) struct Services {
    pub(crate) ingest: receipts_ingest::IngestConfig,
    pub(crate) projector: receipts_projector::ProjectorConfig,
    pub(crate) query: receipts_query::QueryConfig,
    pub(crate) dispatcher: receipts_dispatcher::DispatcherConfig,
}

impl Services {
    /// Every service on `topics`, keeping its state under `data_dir`, serving `accounts`, with no
    /// metrics listener; the dispatcher may call webhooks on 127.0.0.0/8.
    pub(crate) fn new(
        kafka: &KafkaSettings,
        topics: &TopicNames,
        data_dir: &Path,
        accounts: &[(&str, &str)],
    ) -> Self {
        let accounts: BTreeMap<String, Secret> = accounts
            .iter()
            .map(|(account, token)| ((*account).to_owned(), Secret::new(*token)))
            .collect();
        Services {
            ingest: receipts_ingest::IngestConfig {
                kafka: kafka.clone(),
                topics: topics.clone(),
                accounts: accounts.clone(),
                metrics_listen: String::new(),
                ..Default::default()
            },
            projector: receipts_projector::ProjectorConfig {
                kafka: kafka.clone(),
                topics: topics.clone(),
                data_dir: data_dir.join("projector"),
                metrics_listen: String::new(),
                ..Default::default()
            },
            query: receipts_query::QueryConfig {
                kafka: kafka.clone(),
                topics: topics.clone(),
                data_dir: data_dir.join("query"),
                accounts: accounts.clone(),
                metrics_listen: String::new(),
                ..Default::default()
            },
            dispatcher: receipts_dispatcher::DispatcherConfig {
                kafka: kafka.clone(),
                topics: topics.clone(),
                data_dir: data_dir.join("dispatcher"),
                accounts,
                ssrf: AddressPolicy::allowing(vec!["127.0.0.0/8".parse().unwrap()]),
                metrics_listen: String::new(),
                ..Default::default()
            },
        }
    }

    /// Runs the four services until `shutdown`: ingest on `ingest`, the query service's gRPC on
    /// `grpc` and its REST facade on `rest` when given. The task fails if a service does.
    pub(crate) fn spawn(
        self,
        ingest: TcpListener,
        grpc: TcpListener,
        rest: Option<TcpListener>,
        shutdown: CancellationToken,
    ) -> JoinHandle<()> {
        let registry = Metrics::new();
        tokio::spawn(async move {
            let (ingest, projector, query, dispatcher) = tokio::join!(
                receipts_ingest::run(self.ingest, ingest, &registry, shutdown.clone()),
                receipts_projector::run(self.projector, &registry, shutdown.clone()),
                receipts_query::run(self.query, grpc, rest, &registry, shutdown.clone()),
                receipts_dispatcher::run(self.dispatcher, &registry, shutdown.clone()),
            );
            ingest.expect("ingest runs");
            projector.expect("projector runs");
            query.expect("query runs");
            dispatcher.expect("dispatcher runs");
        })
    }
}
