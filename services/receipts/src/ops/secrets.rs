//! `receipts webhooks secrets create|list|rotate|revoke`: the Standard Webhooks signing secrets
//! of an account's webhook configuration, managed through the query service's gRPC API (which
//! holds the key that seals them), not the topic. A secret is printed once, by the command that
//! makes it.

use anyhow::Context;
use receipts_proto::v1;
use serde::Serialize;

use super::{json, table, time};
use crate::demo::{DEMO_ACCOUNT, DEMO_TOKEN};
use crate::get::{Connection, connect};

/// Who manages secrets, and where.
#[derive(Debug, Clone, clap::Args)]
pub struct SecretsArgs {
    /// gRPC address of the query service.
    #[arg(long, env = "RECEIPTS_GRPC", default_value = "127.0.0.1:50051")]
    pub grpc: String,
    /// Account sid (defaults to the `receipts dev` demo account).
    #[arg(long, env = "RECEIPTS_ACCOUNT_SID", default_value = DEMO_ACCOUNT)]
    pub account: String,
    /// Auth token of the account.
    #[arg(long, env = "RECEIPTS_AUTH_TOKEN", default_value = DEMO_TOKEN, hide_default_value = true)]
    pub token: String,
    /// A chat service's configuration (IS…) instead of the account's.
    #[arg(long, conflicts_with = "conversation")]
    pub service: Option<String>,
    /// A conversation webhook's (CH…, with --webhook) instead of the account's.
    #[arg(long, requires = "webhook")]
    pub conversation: Option<String>,
    /// The conversation webhook (WH…).
    #[arg(long, requires = "conversation")]
    pub webhook: Option<String>,
    #[command(subcommand)]
    pub command: SecretsCommand,
}

impl SecretsArgs {
    fn scope(&self) -> Option<v1::SigningSecretScope> {
        let scope = v1::SigningSecretScope {
            chat_service_sid: self.service.clone().unwrap_or_default(),
            conversation_sid: self.conversation.clone().unwrap_or_default(),
            webhook_sid: self.webhook.clone().unwrap_or_default(),
        };
        (scope != v1::SigningSecretScope::default()).then_some(scope)
    }
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum SecretsCommand {
    /// Make a new secret, signing from now on beside the others; prints it once.
    Create,
    /// The secrets that sign (ids, created, expires), never the secrets.
    List,
    /// Replace a secret: the new one signs at once, the old one until the grace period ends.
    Rotate {
        /// The secret to replace (WS…).
        id: String,
        /// Seconds the old secret keeps signing (the service's default: a day).
        #[arg(long)]
        grace_secs: Option<u64>,
    },
    /// Stop a secret signing at once.
    Revoke { id: String },
}

/// A secret as printed: never the secret, except `secret` right after it was made.
#[derive(Debug, Clone, Serialize)]
pub struct SecretLine {
    pub id: String,
    pub created: Option<String>,
    pub expires: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

fn millis(t: &Option<pbjson_types::Timestamp>) -> Option<String> {
    t.as_ref()
        .map(|t| time(Some(t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)))
}

fn line(s: &v1::SigningSecret, secret: Option<String>) -> SecretLine {
    SecretLine {
        id: s.id.clone(),
        created: millis(&s.created),
        expires: millis(&s.expires),
        secret,
    }
}

/// What `create` and `rotate` print.
#[derive(Debug, Clone, Serialize)]
pub struct Created {
    pub created: SecretLine,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotated: Option<SecretLine>,
}

fn created(answer: v1::CreatedSigningSecret) -> anyhow::Result<Created> {
    let listed = answer
        .signing_secret
        .context("the service answered without the new secret")?;
    Ok(Created {
        created: line(&listed, Some(answer.secret)),
        rotated: answer.rotated.map(|r| line(&r, None)),
    })
}

fn created_text(created: &Created) -> String {
    let mut out = format!(
        "created {} (shown once, keep it now)\n{}\n",
        created.created.id,
        created.created.secret.as_deref().unwrap_or_default()
    );
    if let Some(rotated) = &created.rotated {
        out.push_str(&format!(
            "{} keeps signing until {}\n",
            rotated.id,
            rotated.expires.as_deref().unwrap_or("-")
        ));
    }
    out
}

pub async fn run(args: &SecretsArgs, as_json: bool) -> anyhow::Result<String> {
    let mut client = connect(&Connection {
        grpc: args.grpc.clone(),
        account: args.account.clone(),
        token: args.token.clone(),
        json: as_json,
    })
    .await?;
    match &args.command {
        SecretsCommand::Create => {
            let answer = client
                .create_signing_secret(v1::CreateSigningSecretRequest {
                    scope: args.scope(),
                })
                .await
                .context("creating a signing secret")?
                .into_inner();
            let made = created(answer)?;
            Ok(if as_json {
                json(&made)
            } else {
                created_text(&made)
            })
        }
        SecretsCommand::List => {
            let listed: Vec<SecretLine> = client
                .list_signing_secrets(v1::ListSigningSecretsRequest {
                    scope: args.scope(),
                })
                .await
                .context("listing signing secrets")?
                .into_inner()
                .signing_secrets
                .iter()
                .map(|s| line(s, None))
                .collect();
            if as_json {
                return Ok(json(&listed));
            }
            let rows: Vec<Vec<String>> = listed
                .iter()
                .map(|s| {
                    vec![
                        s.id.clone(),
                        s.created.clone().unwrap_or_else(|| "-".into()),
                        s.expires.clone().unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            let mut out = table(&["SECRET", "CREATED", "EXPIRES"], &rows);
            out.push_str(&format!("{} signing secret(s)\n", rows.len()));
            Ok(out)
        }
        SecretsCommand::Rotate { id, grace_secs } => {
            let answer = client
                .rotate_signing_secret(v1::RotateSigningSecretRequest {
                    id: id.clone(),
                    grace_period_seconds: *grace_secs,
                    scope: args.scope(),
                })
                .await
                .with_context(|| format!("rotating signing secret {id}"))?
                .into_inner();
            let made = created(answer)?;
            Ok(if as_json {
                json(&made)
            } else {
                created_text(&made)
            })
        }
        SecretsCommand::Revoke { id } => {
            client
                .revoke_signing_secret(v1::RevokeSigningSecretRequest {
                    id: id.clone(),
                    scope: args.scope(),
                })
                .await
                .with_context(|| format!("revoking signing secret {id}"))?;
            Ok(if as_json {
                json(&serde_json::json!({ "revoked": id }))
            } else {
                format!("revoked {id}\n")
            })
        }
    }
}
