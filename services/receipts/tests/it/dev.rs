use std::time::Duration;

use receipts::dev::{
    DEMO_ACCOUNT, DEMO_SMPP_CONNECTION, DEMO_SMPP_TOKEN, DEMO_TOKEN, DEMO_WHATSAPP_SECRET, DevArgs,
};
use receipts::get::Connection;
use receipts::simulate::SimulateArgs;
use tokio_util::sync::CancellationToken;

fn dev_args(data_dir: &std::path::Path) -> DevArgs {
    DevArgs {
        data_dir: data_dir.to_owned(),
        kafka: None,
        ingest: "127.0.0.1:0".into(),
        grpc: "127.0.0.1:0".into(),
        rest: "127.0.0.1:0".into(),
        metrics: "127.0.0.1:0".into(),
        partitions: 4,
    }
}

/// Everything in one process on the embedded broker: simulated provider traffic (out of order,
/// duplicated, all three provider formats) ends in the summaries the simulator expects; a second
/// run on the same data dir starts cleanly; Ctrl-C (the shutdown token) stops it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_plus_simulate_converges_and_restarts_cleanly() {
    let data_dir = tempfile::tempdir().unwrap();
    for run in 0..2 {
        let shutdown = CancellationToken::new();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let dev = tokio::spawn(receipts::dev::run(
            dev_args(data_dir.path()),
            shutdown.clone(),
            move |addresses| {
                let _ = ready_tx.send(addresses.clone());
            },
        ));
        let addresses = tokio::time::timeout(Duration::from_secs(60), ready_rx)
            .await
            .expect("receipts dev starts within a minute")
            .expect("receipts dev reports its addresses");

        let args = SimulateArgs {
            conversations: 4,
            messages: 6,
            rate: 1_000,
            ingest: format!("http://{}", addresses.ingest),
            connection: Connection {
                grpc: addresses.grpc.to_string(),
                account: DEMO_ACCOUNT.into(),
                token: DEMO_TOKEN.into(),
                json: false,
            },
            seed: Some(42 + run),
            whatsapp_secret: DEMO_WHATSAPP_SECRET.into(),
            smpp_connection: DEMO_SMPP_CONNECTION.into(),
            smpp_token: DEMO_SMPP_TOKEN.into(),
            settle_secs: 60,
            quiet: true,
        };
        let mut out = Vec::new();
        let report = receipts::simulate::run(args, &mut out).await.unwrap();
        let out = String::from_utf8(out).unwrap();
        assert_eq!(report.messages, 24, "{out}");
        assert!(report.mismatches.is_empty(), "run {run}: {out}");
        assert_eq!(report.matched, 24);
        assert!(out.contains("24/24 message summaries match"), "{out}");

        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(60), dev)
            .await
            .expect("receipts dev stops within a minute")
            .unwrap()
            .unwrap();
    }
}
