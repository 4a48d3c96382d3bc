//! Handing batches over and settling them: what a handler returns from
//! [`super::Handler::pipeline`], how the engine lets a batch's rest run on its own while the
//! next batch is processed, commits batches in order, and hands a failed batch over again with
//! every batch that came after it.
//!
//! A settling batch runs as a task of its own, counted in [`Shared`] from the moment it is
//! spawned until it ends (even by panic), so that a revocation can wait until nothing of a
//! partition is still being stored before the partition is given up.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use receipts_runtime::health::ComponentState;
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info};

use super::engine::IDLE_TICK;
use super::rebalance::Shared;
use super::trouble::Trouble;
use super::{Commit, ConsumeError, Consumer, Handler, Transient, error_chain};
use crate::errors::Backoff;
use crate::record::Record;
use crate::trace::batch_span;

type Rest<E> = Pin<Box<dyn Future<Output = Result<Commit, E>> + Send>>;

/// What is left of a batch once it was handed over: nothing, or its last steps.
pub struct Settling<E>(Inner<E>);

enum Inner<E> {
    Settled(Commit),
    Pending(Rest<E>),
}

impl<E> std::fmt::Debug for Settling<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Inner::Settled(commit) => f.debug_tuple("Settled").field(commit).finish(),
            Inner::Pending(_) => f.write_str("Pending"),
        }
    }
}

impl<E: Send + 'static> Settling<E> {
    /// The batch is stored: these offsets are durable.
    pub fn settled(commit: Commit) -> Self {
        Settling(Inner::Settled(commit))
    }

    /// The batch is stored once `rest` resolves, to the offsets it made durable.
    pub fn pending(rest: impl Future<Output = Result<Commit, E>> + Send + 'static) -> Self {
        Settling(Inner::Pending(Box::pin(rest)))
    }

    /// Runs the rest to its end.
    pub async fn wait(self) -> Result<Commit, E> {
        match self.0 {
            Inner::Settled(commit) => Ok(commit),
            Inner::Pending(rest) => rest.await,
        }
    }

    /// Already settled: its commit. Pending: the rest, back.
    pub(super) fn into_settled(self) -> Result<Commit, Self> {
        match self.0 {
            Inner::Settled(commit) => Ok(commit),
            pending => Err(Settling(pending)),
        }
    }
}

/// A batch settling on its own, with its records (to commit, or to hand over again).
pub(super) struct InFlight<E> {
    records: Arc<[Record]>,
    task: tokio::task::JoinHandle<Result<Commit, E>>,
    /// Cancelled once the task's work is done.
    done: CancellationToken,
}

impl<E: Send + 'static> InFlight<E> {
    pub(super) fn spawn(records: Arc<[Record]>, rest: Settling<E>, shared: &Arc<Shared>) -> Self {
        let unsettled = Unsettled::count(shared.clone());
        let stored = records.clone();
        let done = CancellationToken::new();
        let finishing = done.clone().drop_guard();
        let task = tokio::spawn(async move {
            let _finishing = finishing;
            let unsettled = unsettled;
            let outcome = rest.wait().await;
            // Durable before the count drops, so that a revocation waiting for it commits
            // these offsets and the next owner starts right after the batch.
            if let Ok(commit) = &outcome {
                unsettled.0.mark_durable(&stored, commit);
            }
            outcome
        });
        InFlight {
            records,
            task,
            done,
        }
    }

    pub(super) fn is_finished(&self) -> bool {
        self.done.is_cancelled()
    }

    /// Resolves once `in_flight`'s work is done; never if there is none.
    pub(super) async fn finished(in_flight: Option<&Self>) {
        match in_flight {
            Some(in_flight) => in_flight.done.cancelled().await,
            None => std::future::pending().await,
        }
    }

    /// Its outcome, `None` if the runtime cancelled it (nothing more of it is stored); a panic
    /// of the task goes on in the caller.
    pub(super) async fn outcome(self) -> (Arc<[Record]>, Option<Result<Commit, E>>) {
        match self.task.await {
            Ok(outcome) => (self.records, Some(outcome)),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => (self.records, None),
        }
    }
}

/// One settling batch in [`Shared`]'s count, for as long as it lives.
struct Unsettled(Arc<Shared>);

impl Unsettled {
    fn count(shared: Arc<Shared>) -> Self {
        shared.settling_started();
        Unsettled(shared)
    }
}

impl Drop for Unsettled {
    fn drop(&mut self) {
        self.0.settling_ended();
    }
}

impl Consumer {
    /// Hands `records` over while the batch before them settles, then commits that one (so
    /// batches are committed in order) and leaves these settling. A batch that failed is handed
    /// over again together with every batch handed over after it. False: shut down.
    pub(super) async fn hand_over<H: Handler>(
        &self,
        handler: &mut H,
        records: Arc<[Record]>,
        in_flight: &mut Option<InFlight<H::Error>>,
        trouble: &mut Trouble,
        shutdown: &CancellationToken,
    ) -> Result<bool, ConsumeError<H::Error>> {
        // One that already ended is settled first: nothing is applied on top of a failure.
        if in_flight.as_ref().is_some_and(InFlight::is_finished)
            && let Some(taken) = in_flight.take()
            && let Some(failed) = self.settle(taken, trouble).await?
        {
            handler.unsettled_dropped();
            let joined = failed.iter().chain(records.iter()).cloned().collect();
            return self.retry(handler, joined, trouble, shutdown).await;
        }
        let span = batch_span(
            &records,
            self.options.group_id.as_deref(),
            &self.options.name,
        );
        let started = self
            .watched(
                Instant::now(),
                handler.pipeline(records.clone()).instrument(span),
            )
            .await;
        let failed = match in_flight.take() {
            Some(previous) => self.settle(previous, trouble).await?,
            None => None,
        };
        let again = match (failed, started) {
            (None, Ok(settling)) => {
                return self
                    .keep(handler, records, settling, in_flight, trouble, shutdown)
                    .await;
            }
            (_, Err(source)) if !source.is_transient() => return Err(self.failed(source)),
            (None, Err(e)) => {
                self.note_failure(trouble, &e);
                records
            }
            (Some(failed), started) => {
                // Applied on top of a batch that failed: it must fail too, store nothing.
                if let Ok(settling) = started {
                    let _ = settling.wait().await;
                }
                failed.iter().chain(records.iter()).cloned().collect()
            }
        };
        handler.unsettled_dropped();
        self.retry(handler, again, trouble, shutdown).await
    }

    /// A batch handed over: committed if it is stored, else left settling on its own. On a
    /// single-threaded runtime a revocation could not wait for it, so it is waited for here.
    async fn keep<H: Handler>(
        &self,
        handler: &mut H,
        records: Arc<[Record]>,
        settling: Settling<H::Error>,
        in_flight: &mut Option<InFlight<H::Error>>,
        trouble: &mut Trouble,
        shutdown: &CancellationToken,
    ) -> Result<bool, ConsumeError<H::Error>> {
        let settling = match settling.into_settled() {
            Ok(commit) => {
                self.commit(&records, commit);
                return Ok(true);
            }
            Err(pending) => pending,
        };
        if Handle::current().runtime_flavor() == RuntimeFlavor::MultiThread {
            *in_flight = Some(InFlight::spawn(records, settling, &self.shared));
            return Ok(true);
        }
        match self.watched(Instant::now(), settling.wait()).await {
            Ok(commit) => {
                self.settled(trouble, &records, commit);
                Ok(true)
            }
            Err(source) if !source.is_transient() => Err(self.failed(source)),
            Err(e) => {
                self.note_failure(trouble, &e);
                handler.unsettled_dropped();
                self.retry(handler, records, trouble, shutdown).await
            }
        }
    }

    /// Hands `records` over until they are stored, awaiting each attempt to the end and
    /// receiving nothing meanwhile (so no rebalance comes between). False: shut down.
    pub(super) async fn retry<H: Handler>(
        &self,
        handler: &mut H,
        records: Arc<[Record]>,
        trouble: &mut Trouble,
        shutdown: &CancellationToken,
    ) -> Result<bool, ConsumeError<H::Error>> {
        let mut backoff = Backoff::default();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(false),
                _ = tokio::time::sleep(backoff.next_delay()) => {}
            }
            let Some(settling) = self.process(handler, &records, trouble, shutdown).await? else {
                return Ok(false);
            };
            match self.watched(Instant::now(), settling.wait()).await {
                Ok(commit) => {
                    self.settled(trouble, &records, commit);
                    return Ok(true);
                }
                Err(source) if !source.is_transient() => return Err(self.failed(source)),
                Err(e) => {
                    self.note_failure(trouble, &e);
                    handler.unsettled_dropped();
                }
            }
        }
    }

    /// Waits for the batch settling and commits it. `Some`: it failed (or the runtime cancelled
    /// it) and its records are to be handed over again.
    pub(super) async fn settle<E: std::error::Error + Transient + Send + 'static>(
        &self,
        in_flight: InFlight<E>,
        trouble: &mut Trouble,
    ) -> Result<Option<Arc<[Record]>>, ConsumeError<E>> {
        let (records, outcome) = self.watched(Instant::now(), in_flight.outcome()).await;
        match outcome {
            Some(Ok(commit)) => {
                self.settled(trouble, &records, commit);
                Ok(None)
            }
            Some(Err(source)) if !source.is_transient() => Err(self.failed(source)),
            Some(Err(e)) => {
                self.note_failure(trouble, &e);
                Ok(Some(records))
            }
            None => Ok(Some(records)),
        }
    }

    /// Hands `records` to the handler until it succeeds or fails for good. `None`: shut down
    /// while waiting to try again (nothing of the batch was stored).
    async fn process<H: Handler>(
        &self,
        handler: &mut H,
        records: &Arc<[Record]>,
        trouble: &mut Trouble,
        shutdown: &CancellationToken,
    ) -> Result<Option<Settling<H::Error>>, ConsumeError<H::Error>> {
        let mut backoff = Backoff::default();
        let started = Instant::now();
        loop {
            // One span per handing-over, linked to the traces of the batch's records.
            let span = batch_span(
                records,
                self.options.group_id.as_deref(),
                &self.options.name,
            );
            let processing = handler.pipeline(records.clone()).instrument(span);
            match self.watched(started, processing).await {
                Ok(settling) => {
                    trouble.over(&self.options.name);
                    self.component.set(ComponentState::Ready);
                    return Ok(Some(settling));
                }
                Err(source) if !source.is_transient() => return Err(self.failed(source)),
                Err(e) => {
                    self.note_failure(trouble, &e);
                    let delay = backoff.next_delay();
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(None),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// Awaits `work`. Work that does not finish (acknowledgements that never come while the
    /// broker is away) makes the consumer stale as surely as a receive error does.
    async fn watched<T>(&self, started: Instant, work: impl Future<Output = T>) -> T {
        tokio::pin!(work);
        let mut stalled = false;
        let output = loop {
            tokio::select! {
                output = &mut work => break output,
                _ = tokio::time::sleep(IDLE_TICK) => {
                    let lasted = started.elapsed();
                    if lasted > self.options.stale_after {
                        stalled = true;
                        self.component.set(ComponentState::Stalled {
                            seconds: lasted.as_secs(),
                        });
                    }
                }
            }
        };
        if stalled {
            info!(consumer = %self.options.name, after_secs = started.elapsed().as_secs(), "stalled batch finished");
        }
        output
    }

    fn settled(&self, trouble: &mut Trouble, records: &[Record], commit: Commit) {
        trouble.over(&self.options.name);
        self.component.set(ComponentState::Ready);
        self.commit(records, commit);
    }

    fn note_failure(&self, trouble: &mut Trouble, error: &(dyn std::error::Error + 'static)) {
        trouble.record(&self.options.name, &error_chain(error));
        self.check_stale(trouble);
    }

    fn failed<E: std::error::Error + 'static>(&self, source: E) -> ConsumeError<E> {
        ConsumeError::Handler {
            consumer: self.options.name.clone(),
            source,
        }
    }
}
