//! Where "now" comes from.
//!
//! The rules never read the time themselves: whatever needs the current wall-clock time (a
//! delivery's due time, when a secret expired, when an endpoint was disabled) is handed a
//! [`Clock`]. The system clock and a clock that follows tokio's (pausable) time live with the
//! runtime plumbing; a test can pass a clock of its own and control every timestamp it sees.

use std::fmt::Debug;

use crate::Timestamp;

/// A source of the current wall-clock time.
pub trait Clock: Send + Sync + Debug {
    fn now(&self) -> Timestamp;
}
