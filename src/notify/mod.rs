//! Telling pipelines and people how a reconcile went: each cycle that changed something
//! (`Applied`, `DriftCorrected`) or failed (`Rejected`, `Failed`) becomes one [`Event`],
//! sent to every configured [`Provider`] — a signed generic webhook, CloudEvents, Slack, a
//! GitHub commit status.
//!
//! Delivery happens beside the reconcile loop (never delaying it), each request bounded,
//! retried with backoff on connection errors, 5xx and 429. A repeat of the same event (the
//! same failure every interval) is sent once: [`Notifier`] remembers the last event's key.

mod provider;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest as _, Sha256};

pub use provider::{Origin, Provider, ProviderError};

use crate::reconcile::{Outcome, Step, Summary};

/// Attempts per delivery, and the first pause between them (doubling).
const ATTEMPTS: u32 = 4;
const BACKOFF: Duration = Duration::from_secs(1);
/// Timeout of each delivery request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One thing worth telling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// `Applied`, `DriftCorrected`, `Rejected` or `Failed`.
    pub reason: String,
    /// `info` for changes, `error` for refusals and failures.
    pub severity: &'static str,
    /// What is followed (`oci://host/repo:tag`).
    pub reference: String,
    /// The digest this cycle resolved, when it got that far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The digest in place after the cycle.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied: Option<String>,
    /// The artifact's `org.opencontainers.image.source`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The artifact's `org.opencontainers.image.revision`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// What happened, for people (the failure's reason code and message).
    pub message: String,
    /// Who reconciled what: `tresor sync → /srv/site`, `ArtifactSync shop/web`.
    pub origin: String,
    /// When (RFC 3339).
    pub time: String,
    /// Stable for the same event: what deduplication compares and CloudEvents' `id`.
    pub id: String,
}

impl Event {
    /// The event of a cycle's `summary`, or `None` when there is nothing to tell
    /// (`Unchanged`, `Abandoned`).
    pub fn from_summary(summary: &Summary, origin: &str, time: &str) -> Option<Self> {
        let severity = match summary.outcome {
            Outcome::Applied | Outcome::DriftCorrected => "info",
            Outcome::Rejected | Outcome::Failed => "error",
            Outcome::Unchanged | Outcome::Abandoned => return None,
        };
        let message = match (&summary.error, summary.outcome) {
            (Some(f), _) => format!("{}: {}", f.reason, f.message),
            (None, Outcome::DriftCorrected) => {
                format!("restored {}", summary.restored.join(", "))
            }
            (None, _) => format!(
                "applied {}",
                summary
                    .applied
                    .as_ref()
                    .map_or_else(|| "nothing".to_string(), ToString::to_string)
            ),
        };
        let reason = match &summary.error {
            // A new version that failed its health check: rolled back when the target holds
            // another digest afterwards (the puller's `spec.rollback`).
            Some(f) if f.step == Step::Health && summary.applied != summary.digest => {
                "RolledBack".to_string()
            }
            Some(f) if f.step == Step::Health => "HealthFailed".to_string(),
            Some(f) if summary.outcome == Outcome::Failed => f.reason.clone(),
            _ => summary.outcome.name().to_string(),
        };
        let digest = summary.digest.as_ref().map(ToString::to_string);
        Some(Self {
            id: event_id(origin, &reason, digest.as_deref(), &message),
            reason,
            severity,
            reference: summary.reference.clone(),
            digest,
            applied: summary.applied.as_ref().map(ToString::to_string),
            source: summary.source.clone(),
            revision: summary.revision.clone(),
            message,
            origin: origin.to_string(),
            time: time.to_string(),
        })
    }

    /// The event of a failure outside an engine cycle (the puller could not start one:
    /// a missing Secret, an unreadable trust policy).
    pub fn failed(reference: &str, reason: &str, message: &str, origin: &str, time: &str) -> Self {
        let message = format!("{reason}: {message}");
        Self {
            id: event_id(origin, reason, None, &message),
            reason: reason.to_string(),
            severity: "error",
            reference: reference.to_string(),
            digest: None,
            applied: None,
            source: None,
            revision: None,
            message,
            origin: origin.to_string(),
            time: time.to_string(),
        }
    }

    /// Whether this reports a change (`info`) rather than a refusal or failure.
    pub fn is_success(&self) -> bool {
        self.severity == "info"
    }
}

/// What deduplication compares: the same origin, reason, digest and message (not the time).
fn event_id(origin: &str, reason: &str, digest: Option<&str>, message: &str) -> String {
    let key = format!(
        "{origin}\n{reason}\n{}\n{message}",
        digest.unwrap_or_default()
    );
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Sends events to providers, once per distinct event.
#[derive(Debug)]
pub struct Notifier {
    providers: Arc<Vec<Provider>>,
    client: reqwest::Client,
    last: Mutex<Option<String>>,
}

impl Notifier {
    /// A notifier for `providers`.
    pub fn new(providers: Vec<Provider>) -> Result<Self, ProviderError> {
        Ok(Self {
            providers: Arc::new(providers),
            client: client()?,
            last: Mutex::new(None),
        })
    }

    /// Sends `event` to every provider in the background, unless it repeats the last one.
    /// Returns the delivery task (tests wait on it), or `None` for a repeat.
    pub fn notify(&self, event: Event) -> Option<tokio::task::JoinHandle<()>> {
        {
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            if last.as_deref() == Some(event.id.as_str()) {
                return None;
            }
            *last = Some(event.id.clone());
        }
        let providers = self.providers.clone();
        let client = self.client.clone();
        Some(tokio::spawn(async move {
            send(&client, &providers, &event).await;
        }))
    }
}

/// The HTTP client notifications go out with: every request bounded by a timeout.
pub fn client() -> Result<reqwest::Client, ProviderError> {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .user_agent(concat!("tresor/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ProviderError::Client(e.to_string()))
}

/// Sends `event` to every provider, each with retries. True when each of them took it or
/// refused it for good (a 4xx other than 429: sending it again would not help); false when
/// one could not be reached (the caller may try again later).
pub async fn send(client: &reqwest::Client, providers: &[Provider], event: &Event) -> bool {
    let mut done = true;
    for provider in providers {
        done &= deliver(client, provider, event).await;
    }
    done
}

/// One provider, with retries; a final failure is logged (the reconcile does not depend on
/// being heard). False when it was not reached.
async fn deliver(client: &reqwest::Client, provider: &Provider, event: &Event) -> bool {
    let Some(request) = provider.request(event) else {
        tracing::debug!(provider = provider.name(), reason = %event.reason, "nothing to send");
        return true;
    };
    let mut pause = BACKOFF;
    for attempt in 1..=ATTEMPTS {
        let mut sent = client.post(request.url.clone()).body(request.body.clone());
        for (name, value) in &request.headers {
            sent = sent.header(name.as_str(), value.as_str());
        }
        let retry = match sent.send().await {
            Ok(r) if r.status().is_success() => {
                tracing::debug!(provider = provider.name(), reason = %event.reason, "notified");
                return true;
            }
            Ok(r) => {
                let status = r.status();
                tracing::warn!(
                    provider = provider.name(),
                    status = status.as_u16(),
                    attempt,
                    "notification refused"
                );
                status.is_server_error() || status.as_u16() == 429
            }
            Err(e) => {
                tracing::warn!(provider = provider.name(), error = %e, attempt, "notification failed");
                true
            }
        };
        if !retry {
            return true;
        }
        if attempt == ATTEMPTS {
            return false;
        }
        tokio::time::sleep(pause).await;
        pause *= 2;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::{Failure, Retry, Step};

    fn summary(outcome: Outcome, error: Option<Failure>) -> Summary {
        Summary::for_test(outcome, error)
    }

    #[tokio::test]
    async fn unchanged_cycles_say_nothing_and_a_repeated_failure_is_sent_once() {
        assert!(Event::from_summary(&summary(Outcome::Unchanged, None), "o", "t").is_none());
        let failure = Failure {
            step: Step::Resolve,
            reason: "RegistryUnavailable".into(),
            message: "connection refused".into(),
            retry: Retry::Transient,
            digest: None,
        };
        let failed = summary(Outcome::Failed, Some(failure));
        let event = Event::from_summary(&failed, "o", "t1").unwrap();
        assert_eq!(event.reason, "RegistryUnavailable");
        assert_eq!(event.severity, "error");
        // The same failure at another time is the same event.
        let again = Event::from_summary(&failed, "o", "t2").unwrap();
        assert_eq!(event.id, again.id);
        let notifier = Notifier::new(Vec::new()).unwrap();
        assert!(notifier.notify(event).is_some());
        assert!(notifier.notify(again).is_none(), "a repeat is not sent");
        let applied = Event::from_summary(&summary(Outcome::Applied, None), "o", "t3").unwrap();
        assert!(notifier.notify(applied).is_some());
    }

    #[test]
    fn a_failed_health_check_is_health_failed_or_rolled_back() {
        let d1: crate::digest::Digest = format!("sha256:{}", "1".repeat(64)).parse().unwrap();
        let d2: crate::digest::Digest = format!("sha256:{}", "2".repeat(64)).parse().unwrap();
        let unhealthy = Failure {
            step: Step::Health,
            reason: "HealthTimeout".into(),
            message: "Deployment web is not available".into(),
            retry: Retry::Stalled,
            digest: Some(d2.clone()),
        };
        let mut s = summary(Outcome::Rejected, Some(unhealthy));
        s.digest = Some(d2.clone());
        s.applied = Some(d2.clone());
        let event = Event::from_summary(&s, "o", "t").unwrap();
        assert_eq!(
            (event.reason.as_str(), event.severity),
            ("HealthFailed", "error")
        );
        assert_eq!(
            event.message,
            "HealthTimeout: Deployment web is not available"
        );
        // The last healthy digest is back in place.
        s.applied = Some(d1);
        let event = Event::from_summary(&s, "o", "t").unwrap();
        assert_eq!(event.reason, "RolledBack");
        assert_eq!(event.digest.as_deref(), Some(d2.to_string().as_str()));
    }
}
