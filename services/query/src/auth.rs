//! Who is calling: HTTP Basic `AccountSid:AuthToken` credentials, as Twilio uses them, carried in
//! the `authorization` metadata of every gRPC call.

use std::collections::BTreeMap;
use std::sync::Arc;

use receipts_domain::AccountSid;
use receipts_runtime::auth;
use receipts_runtime::config::Secret;

/// The accounts this instance serves and their auth tokens. `Debug` shows the account sids only:
/// an unsalted digest of a short token is as good as the token to anyone who can guess.
#[derive(Clone, Default)]
pub struct Accounts {
    /// SHA-256 of each token: comparing digests keeps the comparison independent of where the
    /// tokens first differ.
    tokens: Arc<BTreeMap<AccountSid, [u8; 32]>>,
}

impl std::fmt::Debug for Accounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accounts")
            .field("sids", &self.tokens.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Accounts {
    pub fn new<'a>(accounts: impl IntoIterator<Item = (AccountSid, &'a Secret)>) -> Self {
        let tokens = accounts
            .into_iter()
            .map(|(sid, token)| (sid, auth::digest(token.expose())))
            .collect();
        Accounts {
            tokens: Arc::new(tokens),
        }
    }

    /// The account an `authorization` header value authenticates, if any.
    pub fn authenticate(&self, authorization: &str) -> Option<AccountSid> {
        let (sid, token) = auth::basic_credentials_of(authorization)?;
        let sid = AccountSid::parse(&sid).ok()?;
        let expected = self.tokens.get(&sid)?;
        auth::same_bytes(expected, &auth::digest(&token)).then_some(sid)
    }
}

/// The `authorization` value for `account:token`, for clients and tests.
pub use receipts_runtime::auth::basic_authorization;

#[cfg(test)]
mod tests {
    use super::*;

    const AC: &str = "AC00000000000000000000000000000001";

    #[test]
    fn only_the_right_token_authenticates() {
        let token = Secret::new("s3cret");
        let accounts = Accounts::new([(AccountSid::parse(AC).unwrap(), &token)]);
        assert_eq!(
            accounts
                .authenticate(&basic_authorization(AC, "s3cret"))
                .unwrap()
                .as_str(),
            AC
        );
        assert_eq!(
            accounts.authenticate(&basic_authorization(AC, "s3cret ")),
            None
        );
        assert_eq!(
            accounts.authenticate(&basic_authorization(AC, "wrong")),
            None
        );
        let other = "AC00000000000000000000000000000002";
        assert_eq!(
            accounts.authenticate(&basic_authorization(other, "s3cret")),
            None
        );
        assert_eq!(accounts.authenticate("Bearer abc"), None);
        assert_eq!(accounts.authenticate("Basic !!!"), None);
        assert_eq!(accounts.authenticate(""), None);
    }
}

/// A client-side interceptor adding `authorization: Basic …` to every call.
#[derive(Clone)]
pub struct Credentials(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl Credentials {
    /// Fails when the account or token is not printable ASCII.
    pub fn new(
        account: &str,
        token: &str,
    ) -> Result<Self, tonic::metadata::errors::InvalidMetadataValue> {
        Ok(Credentials(basic_authorization(account, token).parse()?))
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials([redacted])")
    }
}

impl tonic::service::Interceptor for Credentials {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}
