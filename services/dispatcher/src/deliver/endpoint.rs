//! Endpoints and their workers: each endpoint (webhook configuration key) has its own queue of
//! due attempts and its own worker, so a slow or dead endpoint only ever delays itself.
//!
//! The worker takes at most `endpoint_concurrency` request slots at once; a slot is held until
//! the attempt's request is answered (settling its outcome goes on without it).
//! While the endpoint's circuit is open ([`super::breaker`]) the worker waits; once half-open it
//! makes one attempt at a time until the circuit closes again.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::breaker::{Breaker, CircuitState, Transition};
use super::{Deliverer, lock};
use crate::job::DeliveryJob;
use crate::metrics::ScopeLabel;

#[derive(Debug)]
pub(super) struct Endpoint {
    pub(super) key: String,
    pub(super) queue: Mutex<VecDeque<DeliveryJob>>,
    ready: Notify,
    permits: Arc<Semaphore>,
    breaker: Mutex<Breaker>,
}

impl Endpoint {
    pub(super) fn new(key: &str, concurrency: usize) -> Self {
        Endpoint {
            key: key.to_owned(),
            queue: Mutex::default(),
            ready: Notify::new(),
            permits: Arc::new(Semaphore::new(concurrency)),
            breaker: Mutex::default(),
        }
    }

    pub(super) fn push(&self, job: DeliveryJob) {
        lock(&self.queue).push_back(job);
        self.ready.notify_one();
    }
}

impl Deliverer {
    /// The endpoint of webhook `key`, with its worker started the first time it is asked for.
    pub(super) fn endpoint(self: &Arc<Self>, key: &str) -> Arc<Endpoint> {
        let mut endpoints = lock(&self.endpoints);
        if let Some(endpoint) = endpoints.get(key) {
            return endpoint.clone();
        }
        let endpoint = Arc::new(Endpoint::new(key, self.context.endpoint_concurrency));
        endpoints.insert(key.to_owned(), endpoint.clone());
        self.tracker
            .spawn(self.clone().endpoint_worker(endpoint.clone()));
        endpoint
    }

    async fn endpoint_worker(self: Arc<Self>, endpoint: Arc<Endpoint>) {
        loop {
            let job = loop {
                if let Some(job) = lock(&endpoint.queue).pop_front() {
                    break job;
                }
                tokio::select! {
                    _ = self.shutdown.cancelled() => return,
                    _ = endpoint.ready.notified() => {}
                }
            };
            let state = lock(&endpoint.breaker).state(Instant::now());
            if let CircuitState::Open(wait) = state {
                debug!(endpoint = %endpoint.key, ?wait, "circuit open, waiting to probe");
                tokio::select! {
                    _ = self.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            let permit = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                permit = endpoint.permits.clone().acquire_owned() => {
                    permit.expect("endpoint semaphores are never closed")
                }
            };
            if state == CircuitState::Closed {
                let (this, endpoint) = (self.clone(), endpoint.clone());
                self.tracker.spawn(async move {
                    this.attempt(&endpoint, job, permit).await;
                });
            } else {
                // Half-open: one probe at a time decides.
                self.attempt(&endpoint, job, permit).await;
            }
        }
    }

    /// Feeds the circuit breaker: `alive` is any answer but a transient failure.
    pub(super) fn record(&self, endpoint: &Endpoint, alive: bool) {
        let transition =
            lock(&endpoint.breaker).record(alive, &self.context.breaker, Instant::now());
        let scope = ScopeLabel::of_key(&endpoint.key);
        let metrics = &self.context.metrics;
        match transition {
            Transition::Unchanged => {}
            Transition::Closed => {
                info!(endpoint = %endpoint.key, "circuit closed");
                metrics.breakers_open.get_or_create(&scope).dec();
            }
            Transition::Opened { failures } => {
                warn!(endpoint = %endpoint.key, failures, "circuit opened");
                metrics.breaker_opened.get_or_create(&scope).inc();
                metrics.breakers_open.get_or_create(&scope).inc();
            }
        }
    }
}
