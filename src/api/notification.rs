//! Where an ArtifactSync's changes and failures are reported (`spec.notify`), and the last
//! event the puller has to report (`status.notification`).
//!
//! The event lives in the status, written with the same patch as the conditions it
//! describes; `delivered` turns true once every target has it. A puller that restarts
//! between the two sends it then: no change is lost, and a repeat (the same failure every
//! interval) is one event.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::LocalObjectRef;

/// One notification target of a sync.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotifyTarget {
    /// `generic` (JSON, HMAC-signed with the Secret's `secret`), `cloudevents` (CloudEvents
    /// 1.0 structured mode), `slack` (an incoming webhook) or `github` (commit statuses on
    /// the artifact's revision, with the Secret's `token`).
    pub provider: NotifyProvider,
    /// The URL to post to; for `github` the API base (default `https://api.github.com`).
    /// Leave it out to take the Secret's `address` key (a Slack webhook URL is a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// A Secret in this namespace with any of `address`, `secret` (the HMAC key of
    /// `generic` payloads) and `token` (GitHub's). Read for every delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectRef>,
}

impl NotifyTarget {
    /// What the API server's schema cannot check: an `address` that is an http(s) URL,
    /// and a Secret where the provider needs one (a URL without `address`, GitHub's token).
    pub fn check(&self) -> Result<(), String> {
        if let Some(address) = &self.address {
            let url = url::Url::parse(address)
                .map_err(|e| format!("address {address:?} is not a URL: {e}"))?;
            if !matches!(url.scheme(), "https" | "http") {
                return Err(format!(
                    "address {address:?} has scheme {:?}: use https (or http)",
                    url.scheme()
                ));
            }
        }
        let needs_url = self.provider != NotifyProvider::Github && self.address.is_none();
        if self.secret_ref.is_none() && (needs_url || self.provider == NotifyProvider::Github) {
            return Err(if needs_url {
                "set address, or secretRef to a Secret with an address key".into()
            } else {
                "github needs secretRef: a Secret with a token key".into()
            });
        }
        Ok(())
    }
}

/// The kinds of notification target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NotifyProvider {
    /// JSON, signed with HMAC-SHA256 (`X-Signature: sha256=…`) when the Secret has `secret`.
    #[default]
    Generic,
    /// CloudEvents 1.0 over HTTP.
    Cloudevents,
    /// A Slack-compatible incoming webhook.
    Slack,
    /// GitHub commit statuses.
    Github,
}

impl NotifyProvider {
    /// The name in the spec (and in `tresor sync --notify KIND=URL`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Generic => "generic",
            Self::Cloudevents => "cloudevents",
            Self::Slack => "slack",
            Self::Github => "github",
        }
    }
}

/// The last event for the sync's notify targets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// `Applied`, `DriftCorrected`, `Rejected`, `HealthFailed`, `RolledBack`, or a
    /// failure's reason.
    pub reason: String,
    /// `info` or `error`.
    pub severity: String,
    /// What the sync follows.
    pub reference: String,
    /// The digest the cycle resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The digest applied after the cycle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<String>,
    /// The artifact's `org.opencontainers.image.source`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The artifact's `org.opencontainers.image.revision`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// What happened.
    pub message: String,
    /// `ArtifactSync namespace/name`.
    pub origin: String,
    /// When it happened (RFC 3339).
    pub time: String,
    /// Stable for the same event (a repeat has the same id): receivers deduplicate on it.
    pub id: String,
    /// Every target has it (or refused it for good with a 4xx).
    #[serde(default)]
    pub delivered: bool,
}
