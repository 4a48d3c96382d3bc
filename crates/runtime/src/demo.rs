//! The demo setup's credentials: what `receipts dev` configures and `simulate`, `sink`, `get` and
//! the bench use by default.

/// The demo account `receipts dev` serves.
pub const DEMO_ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
pub const DEMO_TOKEN: &str = "dev-auth-token";
/// The WhatsApp app secret and verify token, and the SMPP connection, of the demo setup.
pub const DEMO_WHATSAPP_SECRET: &str = "dev-whatsapp-app-secret";
pub const DEMO_WHATSAPP_VERIFY_TOKEN: &str = "dev-whatsapp-verify-token";
/// The business phone number id the demo account sends WhatsApp messages from.
pub const DEMO_WHATSAPP_PHONE_NUMBER_ID: &str = "100000000000001";
pub const DEMO_SMPP_CONNECTION: &str = "demo-smsc";
pub const DEMO_SMPP_TOKEN: &str = "dev-smpp-token";
