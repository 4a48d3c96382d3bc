//! The official Twilio helper library for Python (`twilio` on PyPI) against the facade: the proof
//! that code written for Twilio works here by changing its base URL. `scripts/test.sh` installs
//! the pinned library into `target/pyenv` and exports `RECEIPTS_TEST_PYTHON`; without it this test
//! fails (it is never skipped).

use std::path::PathBuf;
use std::process::Command;

use crate::rest::{service, start_seeded};
use crate::support::{ACCOUNT, TOKEN, sid};

fn python() -> PathBuf {
    match std::env::var_os("RECEIPTS_TEST_PYTHON") {
        Some(python) => PathBuf::from(python),
        None if std::env::var("CI").is_ok_and(|ci| ci == "true") => panic!(
            "RECEIPTS_TEST_PYTHON is not set on CI: .ci/run must run the tests through \
             scripts/test.sh, which installs the twilio helper library and exports it"
        ),
        None => panic!(
            "RECEIPTS_TEST_PYTHON is not set: run the tests with scripts/test.sh (it installs the \
             pinned twilio helper library into target/pyenv and exports RECEIPTS_TEST_PYTHON), or \
             point RECEIPTS_TEST_PYTHON at a python3 that has `twilio` installed"
        ),
    }
}

#[tokio::test]
async fn the_twilio_python_library_works_against_the_facade() {
    let python = python();
    let seeded = start_seeded().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/twilio_client.py");
    let args = [
        script.to_owned(),
        seeded.url(""),
        ACCOUNT.to_owned(),
        TOKEN.to_owned(),
        sid("CH", 1),
        sid("IM", 10),
        sid("IM", 12),
        service(),
    ];
    let output = tokio::task::spawn_blocking(move || Command::new(&python).args(args).output())
        .await
        .unwrap()
        .expect("the python interpreter in RECEIPTS_TEST_PYTHON runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the twilio client failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    for expected in [
        "ok message delivery",
        "ok listed 7 receipts over pages of 2",
        "ok paged by hand: 3 pages",
        "ok receipt status sent error_code 0",
        "ok unknown message: 404 20404",
        "ok configuration read back",
        "ok service configuration read back",
        "ok no scoped webhook left",
        "python client: all checks passed",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}\n{stderr}"
        );
    }
    assert!(!stdout.contains("FAILED"), "{stdout}");
}
