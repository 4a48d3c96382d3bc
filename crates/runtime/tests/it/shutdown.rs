use receipts_runtime::shutdown::cancel_on;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn the_token_is_cancelled_when_the_trigger_fires() {
    let token = CancellationToken::new();
    cancel_on(token.clone(), async { "SIGTERM" }).await;
    assert!(token.is_cancelled());
}

#[tokio::test]
async fn waiting_ends_when_the_token_is_cancelled_elsewhere() {
    let token = CancellationToken::new();
    let child = token.child_token();
    token.cancel();
    // The trigger never fires; returning at all is the assertion.
    cancel_on(child.clone(), std::future::pending()).await;
    assert!(child.is_cancelled());
}
