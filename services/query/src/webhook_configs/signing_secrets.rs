//! Standard Webhooks signing secrets of a webhook configuration (the account's, a chat
//! service's or a conversation webhook's), as a resource: create, list, rotate, revoke. Each secret is sealed under the configured
//! `webhook_secrets_key` before it goes into the record (see `receipts_webhook::sealed`), and the
//! secret itself leaves this service once, in the answer to the call that made it.
//!
//! Expired secrets are dropped from the record by the next write; until then they are stored but
//! neither listed nor used to sign.

use std::time::Duration;

use receipts_domain::AccountSid;
use receipts_proto::convert::timestamp_to_wire;
use receipts_proto::v1;
use receipts_proto::webhooks::webhook_key;
use receipts_webhook::sealed::{self, SecretsKey};

use super::{ConfigCallError, Scope, WebhookConfigs, record_of};

/// The most secrets that sign at once; rotation needs two.
pub const MAX_SIGNING_SECRETS: usize = 10;
/// How long a rotated secret keeps signing when the call does not say.
pub const DEFAULT_ROTATION_GRACE: Duration = Duration::from_secs(24 * 60 * 60);
/// The longest grace period a rotation may ask for.
pub const MAX_ROTATION_GRACE: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// A secret just made: how it is listed, the secret itself (shown this once), and for a rotation
/// the secret it replaces with its new expiry.
#[derive(Clone, PartialEq, Eq)]
pub struct CreatedSecret {
    pub listed: v1::SigningSecret,
    pub secret: String,
    pub rotated: Option<v1::SigningSecret>,
}

impl std::fmt::Debug for CreatedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedSecret")
            .field("listed", &self.listed)
            .field("rotated", &self.rotated)
            .finish_non_exhaustive()
    }
}

impl From<CreatedSecret> for v1::CreatedSigningSecret {
    fn from(created: CreatedSecret) -> Self {
        v1::CreatedSigningSecret {
            signing_secret: Some(created.listed),
            secret: created.secret,
            rotated: created.rotated,
        }
    }
}

fn listed(sealed: &v1::SealedSigningSecret) -> v1::SigningSecret {
    v1::SigningSecret {
        id: sealed.id.clone(),
        created: sealed.created,
        expires: sealed.expires,
    }
}

/// A secret id is `WS` and 32 lowercase hex digits.
fn check_id(id: &str) -> Result<(), ConfigCallError> {
    let hex = id.strip_prefix("WS").unwrap_or_default();
    if hex.len() == 32 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(super::invalid(
            "Sid",
            "must be WS followed by 32 hex digits",
        ))
    }
}

fn not_found(id: &str) -> ConfigCallError {
    ConfigCallError::NotFound(format!("signing secret {id}"))
}

/// A conversation webhook must exist to hold secrets; the account's and a service's
/// configuration are made by their first write.
fn missing(scope: &Scope) -> Option<ConfigCallError> {
    match scope {
        Scope::Conversation(_, webhook) => {
            Some(ConfigCallError::NotFound(format!("webhook {webhook}")))
        }
        Scope::Account | Scope::Service(_) => None,
    }
}

impl WebhookConfigs {
    fn secrets_key(&self) -> Result<&SecretsKey, ConfigCallError> {
        self.secrets_key
            .as_ref()
            .ok_or(ConfigCallError::NoSecretsKey)
    }

    /// The secrets of `scope` that still sign, oldest first.
    pub async fn list_signing_secrets(
        &self,
        account: &AccountSid,
        scope: &Scope,
    ) -> Result<Vec<v1::SigningSecret>, ConfigCallError> {
        let config = self.get(account, scope).await?;
        if config.is_none()
            && let Some(error) = missing(scope)
        {
            return Err(error);
        }
        let now = self.now().unix_millis();
        Ok(config
            .iter()
            .flat_map(|c| &c.sealed_secrets)
            .filter(|s| sealed::is_current(s, now))
            .map(listed)
            .collect())
    }

    /// A new secret for `scope`'s configuration, signing at once.
    pub async fn create_signing_secret(
        &self,
        account: &AccountSid,
        scope: &Scope,
    ) -> Result<CreatedSecret, ConfigCallError> {
        self.change_secrets(account, scope, None).await
    }

    /// A new secret replacing `id`, which keeps signing for `grace` and then expires.
    pub async fn rotate_signing_secret(
        &self,
        account: &AccountSid,
        scope: &Scope,
        id: &str,
        grace: Duration,
    ) -> Result<CreatedSecret, ConfigCallError> {
        check_id(id)?;
        if grace > MAX_ROTATION_GRACE {
            return Err(super::invalid(
                "GracePeriodSeconds",
                format!("must be at most {}", MAX_ROTATION_GRACE.as_secs()),
            ));
        }
        self.change_secrets(account, scope, Some((id, grace))).await
    }

    /// Stops secret `id` signing at once.
    pub async fn revoke_signing_secret(
        &self,
        account: &AccountSid,
        scope: &Scope,
        id: &str,
    ) -> Result<(), ConfigCallError> {
        check_id(id)?;
        self.loaded().await?;
        let _write = self.writes.lock().await;
        let key = webhook_key(&record_of(account, scope));
        let mut config = self
            .view
            .get(&key)
            .ok_or_else(|| missing(scope).unwrap_or_else(|| not_found(id)))?;
        let at = self.now().unix_millis();
        config.sealed_secrets.retain(|s| sealed::is_current(s, at));
        let before = config.sealed_secrets.len();
        config.sealed_secrets.retain(|s| s.id != id);
        if config.sealed_secrets.len() == before {
            return Err(not_found(id));
        }
        config.date_updated = Some(timestamp_to_wire(self.now()));
        self.write(config).await?;
        Ok(())
    }

    /// Adds a new secret, and with `rotate` sets the expiry of the one it replaces.
    async fn change_secrets(
        &self,
        account: &AccountSid,
        scope: &Scope,
        rotate: Option<(&str, Duration)>,
    ) -> Result<CreatedSecret, ConfigCallError> {
        let secrets_key = self.secrets_key()?;
        self.loaded().await?;
        let _write = self.writes.lock().await;
        let blank = record_of(account, scope);
        let key = webhook_key(&blank);
        let mut config = match self.view.get(&key) {
            Some(config) => config,
            None => match missing(scope) {
                Some(error) => return Err(error),
                None => blank,
            },
        };
        let now_ms = self.now().unix_millis();
        config
            .sealed_secrets
            .retain(|s| sealed::is_current(s, now_ms));
        let rotated = match rotate {
            None => None,
            Some((id, grace)) => {
                let old = config
                    .sealed_secrets
                    .iter_mut()
                    .find(|s| s.id == id)
                    .ok_or_else(|| not_found(id))?;
                let ends = old_expiry(old.expires, now_ms, grace);
                old.expires = Some(ends);
                Some(listed(old))
            }
        };
        if config.sealed_secrets.len() >= MAX_SIGNING_SECRETS {
            return Err(ConfigCallError::TooManySecrets);
        }
        let secret = sealed::new_secret();
        let id = sealed::new_secret_id();
        let stamp = timestamp_to_wire(self.now());
        let stored = v1::SealedSigningSecret {
            ciphertext: secrets_key.seal(&key, &id, &secret),
            id,
            created: Some(stamp),
            expires: None,
        };
        let created = listed(&stored);
        config.sealed_secrets.push(stored);
        config.date_created.get_or_insert(stamp);
        config.date_updated = Some(stamp);
        self.write(config).await?;
        Ok(CreatedSecret {
            listed: created,
            secret,
            rotated,
        })
    }
}

/// When a rotated secret stops signing: after the grace period, or sooner if it was already
/// due to expire (a second rotation never extends the first).
fn old_expiry(
    current: Option<pbjson_types::Timestamp>,
    now_ms: i64,
    grace: Duration,
) -> pbjson_types::Timestamp {
    let ends_ms = now_ms.saturating_add(i64::try_from(grace.as_millis()).unwrap_or(i64::MAX));
    let ends = timestamp_to_wire(receipts_domain::Timestamp::from_unix_millis(ends_ms));
    match current {
        Some(current) if (current.seconds, current.nanos) < (ends.seconds, ends.nanos) => current,
        _ => ends,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_never_extends_an_expiry() {
        let grace = Duration::from_secs(10);
        let fresh = old_expiry(None, 5_500, grace);
        assert_eq!((fresh.seconds, fresh.nanos), (15, 500_000_000));
        let sooner = pbjson_types::Timestamp {
            seconds: 7,
            nanos: 0,
        };
        assert_eq!(old_expiry(Some(sooner), 5_500, grace), sooner);
    }
}
