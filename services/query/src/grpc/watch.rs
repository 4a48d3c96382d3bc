//! `WatchUpdates`: one task per open stream forwards the read model's changes that the stream's
//! [`WatchScope`] admits, and each account may hold only so many streams at once.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use receipts_domain::{AccountSid, ReceiptChange};
use receipts_proto::v1;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::reads::WatchScope;

pub(super) type WatchStream =
    Pin<Box<dyn Stream<Item = Result<v1::ReceiptUpdated, Status>> + Send>>;

/// Open `WatchUpdates` streams per account, and the most one account may hold.
#[derive(Debug, Clone)]
pub(super) struct Watchers {
    open: Arc<Mutex<HashMap<AccountSid, usize>>>,
    max: usize,
}

impl Watchers {
    pub(super) fn new(max: usize) -> Self {
        Watchers {
            open: Arc::default(),
            max,
        }
    }

    /// A slot for one more watch stream of `account`, or `RESOURCE_EXHAUSTED` when it holds
    /// all it may.
    pub(super) fn slot(&self, account: &AccountSid) -> Result<WatchSlot, Status> {
        let mut watchers = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let open = watchers.entry(account.clone()).or_default();
        if *open >= self.max {
            return Err(Status::resource_exhausted(format!(
                "the account has {open} WatchUpdates streams open, the most it may; close one first"
            )));
        }
        *open += 1;
        Ok(WatchSlot {
            watchers: self.open.clone(),
            account: account.clone(),
        })
    }
}

/// One open watch stream, counted against its account until it ends.
pub(super) struct WatchSlot {
    watchers: Arc<Mutex<HashMap<AccountSid, usize>>>,
    account: AccountSid,
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut watchers = self.watchers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(open) = watchers.get_mut(&self.account) {
            *open -= 1;
            if *open == 0 {
                watchers.remove(&self.account);
            }
        }
    }
}

/// The stream of the changes `scope` admits from `updates`, holding `slot` until it ends: when
/// the client goes away, falls more than the broadcast buffer behind, or `shutdown`.
pub(super) fn stream(
    mut updates: broadcast::Receiver<Arc<ReceiptChange>>,
    scope: WatchScope,
    slot: WatchSlot,
    buffer: usize,
    shutdown: CancellationToken,
) -> WatchStream {
    let (sender, receiver) = mpsc::channel(buffer.max(1));
    tokio::spawn(async move {
        let _slot = slot;
        loop {
            let received = tokio::select! {
                received = updates.recv() => received,
                // The client went away: the slot is freed now, not at the next update.
                () = sender.closed() => return,
                _ = shutdown.cancelled() => {
                    let _ = sender.send(Err(Status::unavailable("the server is shutting down"))).await;
                    return;
                }
            };
            let change = match received {
                Ok(change) => change,
                Err(broadcast::error::RecvError::Closed) => return,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    // Buffering for a slow client without bound would let one client take the
                    // server's memory: it is told, and can reconnect and re-read the state.
                    let status = Status::resource_exhausted(format!(
                        "the client fell {missed} updates behind; reconnect and re-read the state"
                    ));
                    let _ = sender.send(Err(status)).await;
                    return;
                }
            };
            if !scope.admits(&change) {
                continue;
            }
            if sender
                .send(Ok(v1::ReceiptUpdated::from(&*change)))
                .await
                .is_err()
            {
                return; // the client went away
            }
        }
    });
    Box::pin(ReceiverStream::new(receiver))
}
