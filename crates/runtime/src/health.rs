//! Readiness: whether every part of a service that must be current is current.
//!
//! Each consumer registers a [`Component`] and moves it between [`ComponentState`]s: starting,
//! restoring its partitions' state, ready, unable to reach the broker, or stopped. The service is
//! ready only while every component is; `/healthz` answers 503 with the reasons otherwise, gRPC
//! health follows [`Readiness::subscribe`], and the `receipts_consumer_ready` gauge says which
//! component is not. A service never serves as current what a stopped or stale consumer left behind.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;

/// Where one component stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComponentState {
    Starting,
    /// Bringing the state of newly assigned partitions up to date before processing them.
    Restoring {
        partitions: usize,
    },
    Ready,
    /// The broker has not answered for longer than the component tolerates.
    Unreachable {
        seconds: u64,
    },
    /// One batch has been in hand for longer than the component tolerates (its writes are not
    /// acknowledged, its store does not answer).
    Stalled {
        seconds: u64,
    },
    /// The component ended; the service must not be taken as current any more.
    Stopped {
        reason: String,
    },
}

impl fmt::Display for ComponentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ComponentState::Starting => f.write_str("starting"),
            ComponentState::Restoring { partitions } => {
                write!(f, "restoring the state of {partitions} partition(s)")
            }
            ComponentState::Ready => f.write_str("ready"),
            ComponentState::Unreachable { seconds } => {
                write!(f, "cannot reach the Kafka broker for {seconds} s")
            }
            ComponentState::Stalled { seconds } => {
                write!(f, "one batch has been in progress for {seconds} s")
            }
            ComponentState::Stopped { reason } => write!(f, "stopped: {reason}"),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ConsumerLabel {
    pub(crate) consumer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct LagLabel {
    pub(crate) consumer: String,
    pub(crate) topic: String,
    pub(crate) partition: i32,
}

#[derive(Debug, Default)]
struct Inner {
    components: BTreeMap<String, ComponentState>,
}

/// The readiness of one process; clones share it. Held by [`crate::metrics::Metrics`] so that
/// every service finds it where it finds its metrics.
#[derive(Debug, Clone)]
pub struct Readiness {
    inner: Arc<Mutex<Inner>>,
    gauge: Family<ConsumerLabel, Gauge>,
    lag: Family<LagLabel, Gauge>,
    changed: watch::Sender<bool>,
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness {
            inner: Arc::default(),
            gauge: Family::default(),
            lag: Family::default(),
            changed: watch::channel(true).0,
        }
    }
}

/// Why a process is not ready, one line per component that is not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub ready: bool,
    pub reasons: Vec<String>,
}

impl Readiness {
    /// The gauge (`receipts_consumer_ready`, 1 or 0 per component) to register with the metrics.
    pub(crate) fn gauge(&self) -> Family<ConsumerLabel, Gauge> {
        self.gauge.clone()
    }

    /// The gauge (`receipts_consumer_lag`, records behind the high watermark per consumer and
    /// partition) to register with the metrics.
    pub(crate) fn lag_gauge(&self) -> Family<LagLabel, Gauge> {
        self.lag.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a component, `Starting` until it says otherwise. Names are fixed by the code
    /// (`projector`, `read-model`, …), so the gauge's labels stay bounded.
    pub fn component(&self, name: &str) -> Component {
        let component = Component {
            name: name.to_owned(),
            readiness: self.clone(),
        };
        component.set(ComponentState::Starting);
        component
    }

    pub fn report(&self) -> Report {
        let inner = self.lock();
        let reasons: Vec<String> = inner
            .components
            .iter()
            .filter(|(_, state)| **state != ComponentState::Ready)
            .map(|(name, state)| format!("{name}: {state}"))
            .collect();
        Report {
            ready: reasons.is_empty(),
            reasons,
        }
    }

    pub fn is_ready(&self) -> bool {
        self.report().ready
    }

    /// Follows the overall readiness: the value is true while every component is ready.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.changed.subscribe()
    }

    fn set(&self, name: &str, state: ComponentState) {
        let ready = {
            let mut inner = self.lock();
            self.gauge
                .get_or_create(&ConsumerLabel {
                    consumer: name.to_owned(),
                })
                .set(i64::from(state == ComponentState::Ready));
            inner.components.insert(name.to_owned(), state);
            inner
                .components
                .values()
                .all(|s| *s == ComponentState::Ready)
        };
        self.changed.send_if_modified(|current| {
            let modified = *current != ready;
            *current = ready;
            modified
        });
    }
}

/// One part of a service whose state decides readiness.
#[derive(Debug, Clone)]
pub struct Component {
    name: String,
    readiness: Readiness,
}

impl Component {
    pub fn set(&self, state: ComponentState) {
        self.readiness.set(&self.name, state);
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many records the component is behind the end of `topic`'s `partition`.
    pub fn set_lag(&self, topic: &str, partition: i32, lag: i64) {
        self.readiness
            .lag
            .get_or_create(&LagLabel {
                consumer: self.name.clone(),
                topic: topic.to_owned(),
                partition,
            })
            .set(lag);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_while_every_component_is() {
        let readiness = Readiness::default();
        assert!(
            readiness.is_ready(),
            "nothing registered is nothing to wait for"
        );
        let watcher = readiness.subscribe();
        let a = readiness.component("projector");
        let b = readiness.component("read-model");
        assert!(!readiness.is_ready());
        a.set(ComponentState::Ready);
        b.set(ComponentState::Restoring { partitions: 2 });
        let report = readiness.report();
        assert!(!report.ready);
        assert_eq!(
            report.reasons,
            vec!["read-model: restoring the state of 2 partition(s)".to_owned()]
        );
        assert!(!*watcher.borrow());
        b.set(ComponentState::Ready);
        assert!(readiness.is_ready());
        assert!(*watcher.borrow());
        a.set(ComponentState::Stopped {
            reason: "offset out of range".into(),
        });
        assert_eq!(
            readiness.report().reasons,
            vec!["projector: stopped: offset out of range".to_owned()]
        );
        assert!(!*watcher.borrow());
    }
}
