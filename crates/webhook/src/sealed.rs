//! Signing secrets at rest: each `whsec_…` secret managed through the API is stored in its
//! configuration record as ChaCha20-Poly1305 ciphertext under the `webhook_secrets_key` the
//! query service and the dispatcher share, so whoever reads the `webhook-configs` topic learns a
//! secret's id and lifetime but not the secret.
//!
//! The associated data binds a ciphertext to its secret id and to the record key it is stored
//! under: a ciphertext copied into another account's record, or under another id, does not open.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use receipts_proto::v1;

use crate::standard::SECRET_PREFIX;

const NONCE_BYTES: usize = 12;
/// Bytes of key in a new secret (Standard Webhooks asks for 24 to 64).
const SECRET_KEY_BYTES: usize = 32;

/// The key that seals signing secrets: 32 bytes, configured as base64.
#[derive(Clone)]
pub struct SecretsKey(Key);

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretsKey(..)")
    }
}

/// A configured `webhook_secrets_key` that is not the base64 of 32 bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be the base64 of 32 random bytes (e.g. `openssl rand -base64 32`)")]
pub struct InvalidSecretsKey;

/// A stored secret that does not open under the configured key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("signing secret {id} does not open with the configured webhook_secrets_key")]
pub struct UnreadableSecret {
    pub id: String,
}

impl SecretsKey {
    pub fn from_base64(encoded: &str) -> Result<Self, InvalidSecretsKey> {
        let bytes = STANDARD
            .decode(encoded.trim())
            .map_err(|_| InvalidSecretsKey)?;
        if bytes.len() != 32 {
            return Err(InvalidSecretsKey);
        }
        Ok(SecretsKey(*Key::from_slice(&bytes)))
    }

    /// The stored form of `secret`, kept as secret `id` in the record under `record_key`.
    pub fn seal(&self, record_key: &str, id: &str, secret: &str) -> Vec<u8> {
        let nonce: [u8; NONCE_BYTES] = rand::random();
        let aad = associated_data(record_key, id);
        let ciphertext = ChaCha20Poly1305::new(&self.0)
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: secret.as_bytes(),
                    aad: &aad,
                },
            )
            .expect("ChaCha20-Poly1305 encrypts any message shorter than 256 GiB");
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&ciphertext);
        sealed
    }

    /// The `whsec_…` secret of a stored one.
    pub fn open(
        &self,
        record_key: &str,
        sealed: &v1::SealedSigningSecret,
    ) -> Result<String, UnreadableSecret> {
        let unreadable = || UnreadableSecret {
            id: sealed.id.clone(),
        };
        if sealed.ciphertext.len() < NONCE_BYTES {
            return Err(unreadable());
        }
        let (nonce, ciphertext) = sealed.ciphertext.split_at(NONCE_BYTES);
        let aad = associated_data(record_key, &sealed.id);
        let plain = ChaCha20Poly1305::new(&self.0)
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| unreadable())?;
        String::from_utf8(plain).map_err(|_| unreadable())
    }
}

fn associated_data(record_key: &str, id: &str) -> Vec<u8> {
    // Length-prefixed, so no (key, id) pair reads as another.
    let mut aad = Vec::with_capacity(16 + record_key.len() + id.len());
    for part in [record_key, id] {
        aad.extend_from_slice(&(part.len() as u64).to_be_bytes());
        aad.extend_from_slice(part.as_bytes());
    }
    aad
}

/// A fresh secret: `whsec_` and the base64 of 32 random bytes.
pub fn new_secret() -> String {
    let key: [u8; SECRET_KEY_BYTES] = rand::random();
    format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
}

/// A fresh secret id: `WS` and 32 hex digits.
pub fn new_secret_id() -> String {
    format!("WS{:032x}", rand::random::<u128>())
}

/// Whether a stored secret still signs at `now_ms` (unix milliseconds).
pub fn is_current(sealed: &v1::SealedSigningSecret, now_ms: i64) -> bool {
    match &sealed.expires {
        None => true,
        Some(expires) => {
            let expires_ms = expires.seconds * 1000 + i64::from(expires.nanos) / 1_000_000;
            now_ms < expires_ms
        }
    }
}

/// Why a configuration's signing secrets cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningSecretsError {
    #[error(
        "the configuration has sealed signing secrets but no webhook_secrets_key is configured"
    )]
    NoKey,
    #[error(transparent)]
    Unreadable(#[from] UnreadableSecret),
}

/// Every secret that signs a delivery made by `config` (stored under `record_key`) at `now_ms`:
/// the plain-text ones of older records and the unexpired sealed ones.
pub fn signing_secrets(
    config: &v1::WebhookConfig,
    record_key: &str,
    key: Option<&SecretsKey>,
    now_ms: i64,
) -> Result<Vec<String>, SigningSecretsError> {
    let mut secrets = config.signing_secrets.clone();
    let current: Vec<&v1::SealedSigningSecret> = config
        .sealed_secrets
        .iter()
        .filter(|sealed| is_current(sealed, now_ms))
        .collect();
    if current.is_empty() {
        return Ok(secrets);
    }
    let key = key.ok_or(SigningSecretsError::NoKey)?;
    for sealed in current {
        secrets.push(key.open(record_key, sealed)?);
    }
    Ok(secrets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SecretsKey {
        SecretsKey::from_base64(&STANDARD.encode([byte; 32])).unwrap()
    }

    fn stored(
        key: &SecretsKey,
        record_key: &str,
        id: &str,
        secret: &str,
    ) -> v1::SealedSigningSecret {
        v1::SealedSigningSecret {
            id: id.into(),
            ciphertext: key.seal(record_key, id, secret),
            ..Default::default()
        }
    }

    #[test]
    fn a_sealed_secret_opens_and_does_not_show() {
        let secret = new_secret();
        let sealed = stored(&key(1), "account/AC1", "WS1", &secret);
        assert_eq!(key(1).open("account/AC1", &sealed).unwrap(), secret);
        let body = &secret.as_bytes()[SECRET_PREFIX.len()..];
        assert!(
            !sealed
                .ciphertext
                .windows(body.len())
                .any(|window| window == body)
        );
        assert!(crate::standard::secret_key(&secret).is_some_and(|k| k.len() == 32));
    }

    #[test]
    fn another_key_record_or_id_does_not_open_it() {
        let sealed = stored(&key(1), "account/AC1", "WS1", "whsec_c2Vjb25k");
        assert!(key(2).open("account/AC1", &sealed).is_err());
        assert!(key(1).open("account/AC2", &sealed).is_err());
        let renamed = v1::SealedSigningSecret {
            id: "WS2".into(),
            ..sealed.clone()
        };
        assert!(key(1).open("account/AC1", &renamed).is_err());
        let mut tampered = sealed;
        *tampered.ciphertext.last_mut().unwrap() ^= 1;
        assert!(key(1).open("account/AC1", &tampered).is_err());
    }

    #[test]
    fn keys_must_be_32_bytes_of_base64() {
        assert_eq!(
            SecretsKey::from_base64("not base64!").unwrap_err(),
            InvalidSecretsKey
        );
        assert!(SecretsKey::from_base64(&STANDARD.encode([0u8; 16])).is_err());
        assert!(format!("{:?}", key(7)).find("07").is_none());
    }

    #[test]
    fn expired_secrets_do_not_sign_and_plain_ones_still_do() {
        let k = key(3);
        let mut config = v1::WebhookConfig {
            signing_secrets: vec!["whsec_cGxhaW4=".into()],
            ..Default::default()
        };
        let mut old = stored(&k, "account/AC1", "WS1", "whsec_b2xk");
        old.expires = Some(pbjson_types::Timestamp {
            seconds: 100,
            nanos: 0,
        });
        config.sealed_secrets = vec![old, stored(&k, "account/AC1", "WS2", "whsec_bmV3")];
        let at = |ms| signing_secrets(&config, "account/AC1", Some(&k), ms).unwrap();
        assert_eq!(at(99_999), ["whsec_cGxhaW4=", "whsec_b2xk", "whsec_bmV3"]);
        assert_eq!(at(100_000), ["whsec_cGxhaW4=", "whsec_bmV3"]);
        assert_eq!(
            signing_secrets(&config, "account/AC1", None, 0),
            Err(SigningSecretsError::NoKey)
        );
    }
}
