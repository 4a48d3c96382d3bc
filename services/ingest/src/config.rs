//! The gateway's configuration: compiled defaults < TOML file < `RECEIPTS_*` environment (see
//! `receipts_runtime::config`). Credentials are [`Secret`]s and never printed; the account and
//! SMPP connection maps come from the file (environment names are lowercased, sids are not).

use std::collections::BTreeMap;

use receipts_bus::{KafkaSettings, TopicNames};
use receipts_domain::AccountSid;
use receipts_runtime::config::{ConfigError, Secret, TelemetryConfig, Validate};
use receipts_runtime::http::HttpLimits;
use serde::{Deserialize, Serialize};

/// Everything the gateway needs to run. Defaults suit a local broker; without accounts, a
/// WhatsApp app secret or SMPP connections, the matching endpoints refuse every request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct IngestConfig {
    pub kafka: KafkaSettings,
    pub topics: TopicNames,
    /// Address the HTTP endpoints listen on.
    pub listen: String,
    /// The gateway's URL as providers call it (scheme, host, optional port and path prefix, no
    /// trailing slash), e.g. `https://hooks.example.com/receipts`. Twilio signs the full URL it
    /// called, which behind a proxy is not the one this process sees: the signed URL is this base
    /// followed by the request's path and query.
    pub public_base_url: String,
    /// Account sid → auth token: checks `X-Twilio-Signature` of that account's callbacks, and
    /// HTTP Basic `AccountSid:AuthToken` on the canonical batch endpoint.
    pub accounts: BTreeMap<String, Secret>,
    pub whatsapp: WhatsappConfig,
    /// SMSC connection name → the account it sends for and the bearer token its bridge sends
    /// (`Authorization: Bearer <token>` on `POST /v1/smpp/{connection}/receipts`).
    pub smpp_connections: BTreeMap<String, SmppConnection>,
    /// Larger request bodies are answered with 413.
    pub body_limit_bytes: usize,
    /// Timeouts, the connection cap and load shedding of the HTTP server (see
    /// `receipts_runtime::http`): `http.header_read_timeout_ms`, `http.body_read_timeout_ms`,
    /// `http.max_connections`, `http.max_requests_in_flight`, `http.retry_after_secs`.
    pub http: HttpLimits,
    /// How long Kafka may take to acknowledge a request's events (librdkafka
    /// `message.timeout.ms`) before the request is answered with 503.
    pub produce_timeout_ms: u64,
    /// `Retry-After` of a 503.
    pub retry_after_secs: u64,
    /// Create a missing `delivery-events` topic at start with this many partitions (0: expect it).
    pub create_topics_partitions: i32,
    /// Address of the metrics endpoint; empty disables it.
    pub metrics_listen: String,
    pub telemetry: TelemetryConfig,
}

/// The WhatsApp Cloud API app.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct WhatsappConfig {
    /// Echoed back in the `GET` verification handshake when Meta sends the same token.
    pub verify_token: Secret,
    /// Keys the `X-Hub-Signature-256` HMAC of every `POST`.
    pub app_secret: Secret,
    /// Business phone number id (`value.metadata.phone_number_id`) → the account sid that owns
    /// it. Statuses sent from a number not listed here are skipped and counted (see
    /// `crate::whatsapp`).
    pub phone_numbers: BTreeMap<String, String>,
}

/// One SMSC connection: the account whose messages it carries, and its bridge's token.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmppConnection {
    pub account: String,
    pub token: Secret,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            kafka: KafkaSettings::default(),
            topics: TopicNames::default(),
            listen: "127.0.0.1:8080".into(),
            public_base_url: "http://127.0.0.1:8080".into(),
            accounts: BTreeMap::new(),
            whatsapp: WhatsappConfig::default(),
            smpp_connections: BTreeMap::new(),
            body_limit_bytes: 1024 * 1024,
            http: HttpLimits::default(),
            produce_timeout_ms: 10_000,
            retry_after_secs: 5,
            create_topics_partitions: 0,
            metrics_listen: "127.0.0.1:9465".into(),
            telemetry: TelemetryConfig::default(),
        }
    }
}

/// Connection names become part of channel message ids (`smpp:{connection}:{id}`), so they are
/// kept to characters that cannot be confused with the separator.
fn is_connection_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl Validate for IngestConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.kafka.bootstrap_servers.trim().is_empty() {
            return Err(ConfigError::invalid(
                "kafka.bootstrap_servers",
                "must not be empty",
            ));
        }
        if self.topics.delivery_events.trim().is_empty() {
            return Err(ConfigError::invalid(
                "topics.delivery_events",
                "must not be empty",
            ));
        }
        if self.listen.trim().is_empty() {
            return Err(ConfigError::invalid("listen", "must not be empty"));
        }
        let base = &self.public_base_url;
        if !(base.starts_with("http://") || base.starts_with("https://"))
            || base.ends_with('/')
            || base.contains(['?', '#'])
        {
            return Err(ConfigError::invalid(
                "public_base_url",
                "must be an http(s) URL without a trailing slash, query or fragment",
            ));
        }
        for (sid, token) in &self.accounts {
            if let Err(e) = AccountSid::parse(sid) {
                return Err(ConfigError::invalid(
                    format!("accounts.{sid}"),
                    e.to_string(),
                ));
            }
            if token.is_empty() {
                return Err(ConfigError::invalid(
                    format!("accounts.{sid}"),
                    "auth token must not be empty",
                ));
            }
        }
        for (number, account) in &self.whatsapp.phone_numbers {
            if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ConfigError::invalid(
                    format!("whatsapp.phone_numbers.{number}"),
                    "phone number ids are decimal digits",
                ));
            }
            if let Err(e) = AccountSid::parse(account) {
                return Err(ConfigError::invalid(
                    format!("whatsapp.phone_numbers.{number}"),
                    e.to_string(),
                ));
            }
        }
        for (name, connection) in &self.smpp_connections {
            if !is_connection_name(name) {
                return Err(ConfigError::invalid(
                    format!("smpp_connections.{name}"),
                    "connection names are 1-64 of A-Z a-z 0-9 - _ .",
                ));
            }
            if let Err(e) = AccountSid::parse(&connection.account) {
                return Err(ConfigError::invalid(
                    format!("smpp_connections.{name}.account"),
                    e.to_string(),
                ));
            }
            if connection.token.is_empty() {
                return Err(ConfigError::invalid(
                    format!("smpp_connections.{name}.token"),
                    "must not be empty",
                ));
            }
        }
        if self.body_limit_bytes == 0 {
            return Err(ConfigError::invalid(
                "body_limit_bytes",
                "must be at least 1",
            ));
        }
        if self.produce_timeout_ms == 0 || self.produce_timeout_ms > i32::MAX as u64 {
            return Err(ConfigError::invalid(
                "produce_timeout_ms",
                "must be between 1 and 2147483647",
            ));
        }
        self.http.validate().map_err(|e| e.within("http"))?;
        self.telemetry.validate().map_err(|e| e.within("telemetry"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_mistakes_name_their_key() {
        assert!(IngestConfig::default().validate().is_ok());
        let config = IngestConfig {
            public_base_url: "https://hooks.example.com/".into(),
            ..IngestConfig::default()
        };
        assert_eq!(
            config.validate().unwrap_err().key(),
            Some("public_base_url")
        );
        let mut config = IngestConfig::default();
        config.accounts.insert("nope".into(), Secret::new("t"));
        assert_eq!(config.validate().unwrap_err().key(), Some("accounts.nope"));
        let mut config = IngestConfig::default();
        config.http.body_read_timeout_ms = 0;
        assert_eq!(
            config.validate().unwrap_err().key(),
            Some("http.body_read_timeout_ms")
        );
        let connection = |account: &str| SmppConnection {
            account: account.into(),
            token: Secret::new("t"),
        };
        let mut config = IngestConfig::default();
        config.smpp_connections.insert(
            "a:b".into(),
            connection("AC00000000000000000000000000000001"),
        );
        assert_eq!(
            config.validate().unwrap_err().key(),
            Some("smpp_connections.a:b")
        );
        let mut config = IngestConfig::default();
        config
            .smpp_connections
            .insert("smsc-eu".into(), connection("nobody"));
        assert_eq!(
            config.validate().unwrap_err().key(),
            Some("smpp_connections.smsc-eu.account")
        );
        let mut config = IngestConfig::default();
        config
            .whatsapp
            .phone_numbers
            .insert("106540352242922".into(), "AC1".into());
        assert_eq!(
            config.validate().unwrap_err().key(),
            Some("whatsapp.phone_numbers.106540352242922")
        );
    }

    #[test]
    fn a_file_and_the_environment_fill_every_section() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ingest.toml");
        std::fs::write(
            &path,
            r#"
public_base_url = "https://hooks.example.com/receipts"
body_limit_bytes = 2048

[accounts]
AC00000000000000000000000000000001 = "token-one"

[whatsapp]
verify_token = "verify"
app_secret = "app"

[whatsapp.phone_numbers]
106540352242922 = "AC00000000000000000000000000000001"

[smpp_connections.smsc-eu]
account = "AC00000000000000000000000000000001"
token = "smpp-token"
"#,
        )
        .unwrap();
        let config: IngestConfig = receipts_runtime::config::Loader::new()
            .file(&path)
            .env_from([
                ("RECEIPTS_KAFKA__BOOTSTRAP_SERVERS", "kafka:9092"),
                ("RECEIPTS_PRODUCE_TIMEOUT_MS", "2500"),
            ])
            .load()
            .unwrap();
        assert_eq!(config.kafka.bootstrap_servers, "kafka:9092");
        assert_eq!(config.produce_timeout_ms, 2500);
        assert_eq!(config.body_limit_bytes, 2048);
        assert_eq!(
            config.accounts["AC00000000000000000000000000000001"].expose(),
            "token-one"
        );
        assert_eq!(config.whatsapp.app_secret.expose(), "app");
        assert_eq!(
            config.whatsapp.phone_numbers["106540352242922"],
            "AC00000000000000000000000000000001"
        );
        let smsc = &config.smpp_connections["smsc-eu"];
        assert_eq!(smsc.account, "AC00000000000000000000000000000001");
        assert_eq!(smsc.token.expose(), "smpp-token");
    }

    #[test]
    fn secrets_do_not_print() {
        let mut config = IngestConfig::default();
        config.accounts.insert(
            "AC00000000000000000000000000000001".into(),
            Secret::new("hunter2"),
        );
        config.whatsapp.app_secret = Secret::new("hunter3");
        config.whatsapp.verify_token = Secret::new("hunter4");
        config.smpp_connections.insert(
            "smsc-eu".into(),
            SmppConnection {
                account: "AC00000000000000000000000000000001".into(),
                token: Secret::new("hunter5"),
            },
        );
        config
            .kafka
            .properties
            .insert("sasl.password".into(), "hunter6".into());
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter"), "{debug}");
        let debug = format!("{:?}", config.whatsapp);
        assert!(!debug.contains("hunter"), "{debug}");
    }
}
