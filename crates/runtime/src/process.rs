//! Stopping a child service process the way an orchestrator does.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Sends SIGTERM (through `kill`, so no unsafe code is needed), so the service drains and flushes
/// its database, and kills it if it has not exited within `grace`.
pub fn terminate(child: &mut Child, grace: Duration) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}
