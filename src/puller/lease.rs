//! Leader election with a `coordination.k8s.io/v1` Lease, so only one replica reconciles.
//!
//! kube-runtime has none built in. This is the client-go scheme reduced to what the puller
//! needs: a replica holds the Lease while it renews `renewTime` within `leaseDurationSeconds`;
//! another replica takes it over only after it expired. Writes carry the `resourceVersion`
//! read, so of two replicas racing for an expired Lease one gets 409 and stays follower.
//! A leader that cannot renew for a whole lease duration stops (the process exits and is
//! restarted as a follower), so two leaders never act for longer than clock skew allows.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::Client;

use super::PullerError;

/// One replica's handle on the Lease `namespace/name`.
#[derive(Clone)]
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    timeout: Duration,
    /// Whether the last Lease call got an answer from the API server (a standby's readiness).
    answered: Arc<AtomicBool>,
}

impl LeaseLock {
    /// A lock on Lease `namespace/name` for `identity` (e.g. the pod name), held for
    /// `duration` per renewal; every API call is bounded by `timeout`.
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
        timeout: Duration,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            duration: duration.max(Duration::from_secs(1)),
            timeout,
            answered: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether the last Lease call got an answer from the API server (shared, kept current).
    pub fn answered(&self) -> Arc<AtomicBool> {
        self.answered.clone()
    }

    /// The puller's lock: Lease `tresor-puller` in `POD_NAMESPACE` (default
    /// `tresor-system`), identity `POD_NAME`, else `HOSTNAME` (the pod name in a cluster),
    /// else the process id; held for 15 s per renewal.
    pub fn from_env(client: Client, timeout: Duration) -> Self {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let namespace = env("POD_NAMESPACE").unwrap_or_else(|| "tresor-system".into());
        let identity = env("POD_NAME")
            .or_else(|| env("HOSTNAME"))
            .unwrap_or_else(|| format!("tresor-puller-{}", std::process::id()));
        Self::new(
            client,
            &namespace,
            "tresor-puller",
            &identity,
            Duration::from_secs(15),
            timeout,
        )
    }

    /// Tries once to take or renew the Lease; `Ok(true)` when this replica holds it now.
    /// A lost race (409) is `Ok(false)`; other API failures are errors.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, PullerError> {
        let result = self.acquire_or_renew().await;
        self.answered.store(result.is_ok(), Ordering::Relaxed);
        result
    }

    async fn acquire_or_renew(&self) -> Result<bool, PullerError> {
        let now = Timestamp::now();
        let seconds = i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX);
        let current = super::call("get Lease", self.timeout, self.api.get_opt(&self.name)).await?;
        let Some(mut lease) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return self
                .write(self.api.create(&PostParams::default(), &lease))
                .await;
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let mine = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
            (Some(MicroTime(renewed)), Some(d)) => {
                renewed.as_second().saturating_add(i64::from(d)) < now.as_second()
            }
            _ => true,
        };
        if !mine && !expired && spec.holder_identity.is_some() {
            return Ok(false);
        }
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(seconds),
            acquire_time: if mine {
                spec.acquire_time.clone()
            } else {
                Some(MicroTime(now))
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(spec.lease_transitions.unwrap_or(0) + if mine { 0 } else { 1 }),
            ..spec
        });
        lease.metadata.managed_fields = None;
        self.write(self.api.replace(&self.name, &PostParams::default(), &lease))
            .await
    }

    async fn write(
        &self,
        fut: impl std::future::Future<Output = Result<Lease, kube::Error>>,
    ) -> Result<bool, PullerError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(_)) => Ok(true),
            Ok(Err(kube::Error::Api(e))) if e.code == 409 => Ok(false),
            Ok(Err(e)) => Err(PullerError::Kube {
                what: "write Lease".into(),
                message: e.to_string(),
            }),
            Err(_) => Err(PullerError::Kube {
                what: "write Lease".into(),
                message: format!("timed out after {}s", self.timeout.as_secs()),
            }),
        }
    }

    /// Waits until this replica holds the Lease (retrying every third of the duration).
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    tracing::info!(lease = %self.name, identity = %self.identity, "leading");
                    return;
                }
                Ok(false) => tracing::debug!(lease = %self.name, "another replica leads"),
                Err(e) => tracing::warn!(error = %e, "cannot acquire the lease"),
            }
            tokio::time::sleep(self.duration / 3).await;
        }
    }

    /// Renews the Lease every third of its duration; returns when it was lost (taken over,
    /// or not renewed for a whole duration).
    pub async fn hold(&self) -> PullerError {
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.duration / 3).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewed = tokio::time::Instant::now(),
                Ok(false) => return self.lost("another replica took the lease"),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot renew the lease");
                    if last_renewed.elapsed() >= self.duration {
                        return self.lost(&e.to_string());
                    }
                }
            }
        }
    }

    fn lost(&self, message: &str) -> PullerError {
        PullerError::LeaseLost {
            lease: self.name.clone(),
            message: message.to_string(),
        }
    }
}
