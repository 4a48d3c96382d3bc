//! Turning SIGINT and SIGTERM into a cancelled [`CancellationToken`].
//!
//! The token belongs to the caller (`main`), which hands clones to everything that must stop; nothing
//! here is global, so tests and `receipts dev` can run several services each with its own token. The
//! first signal starts the graceful shutdown; with [`spawn_signal_handler`], a second one ends the process
//! at once, for an operator who will not wait for the drain.

use std::future::Future;
use std::io;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Exit status after a second signal: the shell's convention for "terminated by SIGINT".
const FORCED_EXIT_CODE: i32 = 130;

/// Waits for SIGINT or SIGTERM, then cancels `token`. Returns early, without cancelling anything, if the
/// token is cancelled by someone else first.
pub async fn cancel_on_signal(token: CancellationToken) -> io::Result<()> {
    let mut signals = ShutdownSignals::register()?;
    cancel_on(token, signals.next()).await;
    Ok(())
}

/// Installs the SIGINT and SIGTERM handlers now, then in a task cancels `token` on the first signal and
/// exits the process with status 130 on the next one.
///
/// The handlers are installed before this returns, so a signal that arrives while the service is still
/// starting already triggers a graceful shutdown instead of killing the process.
pub fn spawn_signal_handler(token: CancellationToken) -> io::Result<JoinHandle<()>> {
    let mut signals = ShutdownSignals::register()?;
    Ok(tokio::spawn(async move {
        cancel_on(token, signals.next()).await;
        let signal = signals.next().await;
        warn!(signal, "second signal during shutdown, exiting now");
        std::process::exit(FORCED_EXIT_CODE);
    }))
}

/// Cancels `token` once `trigger` resolves, logging the reason it yields (such as `"SIGTERM"`). Returns
/// early if the token is cancelled by someone else first.
pub async fn cancel_on<F>(token: CancellationToken, trigger: F)
where
    F: Future<Output = &'static str>,
{
    tokio::select! {
        signal = trigger => {
            info!(signal, "shutting down");
            token.cancel();
        }
        () = token.cancelled() => {}
    }
}

/// The signals that ask the process to stop.
struct ShutdownSignals {
    interrupt: Signal,
    terminate: Signal,
}

impl ShutdownSignals {
    fn register() -> io::Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// The name of the next signal received.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            Some(()) = self.interrupt.recv() => "SIGINT",
            Some(()) = self.terminate.recv() => "SIGTERM",
            // Both streams ended: the runtime is going away and no signal will come any more.
            else => std::future::pending().await,
        }
    }
}
