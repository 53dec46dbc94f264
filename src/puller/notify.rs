//! The puller's notifications (`spec.notify`): events derived from the status, delivered
//! beside the reconcile loop, at least once, a repeat only once.
//!
//! 1. [`record`] puts a cycle's event into `status.notification` (`delivered: false`); it
//!    is written with the same status patch as the conditions it describes, so a change is
//!    never recorded without its event.
//! 2. After the status write, [`pending`] finds an undelivered event and [`start`] sends it
//!    in the background to every target (Secrets read then, as the puller, from the sync's
//!    namespace), with retries (see [`crate::notify::send`]).
//! 3. Once every target has it, `delivered: true` is patched into the status, guarded by the
//!    resourceVersion of the status that held the event; the next reconcile also carries it
//!    over from memory. A puller restarted in between finds `delivered: false` and sends
//!    the event again (receivers deduplicate on its `id`); a failed delivery is tried again
//!    at the next reconcile and reported as a `NotifyFailed` Warning Event.
//!
//! The same event (the same failure every interval) has the same id and is not recorded
//! again, so it is sent once.

use std::collections::HashMap;
use std::sync::Arc;

use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::{source, Context, PullerError};
use crate::api::{ArtifactSync, ArtifactSyncStatus, Notification, NotifyTarget};
use crate::notify::{Event, Origin, Provider};
use crate::reconcile::Summary;
use crate::webhook::Secret;

/// Keys of the Secret named by `spec.notify[].secretRef`.
const ADDRESS_KEY: &str = "address";
const HMAC_KEY: &str = "secret";
const TOKEN_KEY: &str = "token";

/// The events this process is delivering or has delivered, by `namespace/name`: what keeps
/// a reconcile from sending an event twice while it is on its way, and from writing
/// `delivered: false` over a finished delivery.
#[derive(Default)]
pub(super) struct Deliveries {
    by_sync: std::sync::Mutex<HashMap<String, Delivery>>,
}

#[derive(Clone, PartialEq, Eq)]
struct Delivery {
    id: String,
    done: bool,
}

impl Deliveries {
    fn get(&self, key: &str) -> Option<Delivery> {
        self.lock().get(key).cloned()
    }

    fn set(&self, key: &str, delivery: Option<Delivery>) {
        let mut map = self.lock();
        match delivery {
            Some(d) => map.insert(key.to_string(), d),
            None => map.remove(key),
        };
    }

    /// Forgets a deleted sync.
    pub(super) fn forget(&self, key: &str) {
        self.set(key, None);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Delivery>> {
        self.by_sync.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `ArtifactSync namespace/name`: the origin of the sync's events.
fn origin(namespace: &str, name: &str) -> String {
    format!("ArtifactSync {namespace}/{name}")
}

/// Records the event of a cycle's `summary` in `status.notification`, unless the sync has
/// no `spec.notify` (then there is none), the cycle has nothing to tell, or it repeats the
/// recorded event.
pub(super) fn record(
    status: &mut ArtifactSyncStatus,
    sync: &ArtifactSync,
    namespace: &str,
    summary: &Summary,
    now: &str,
) {
    let event = Event::from_summary(summary, &origin(namespace, &sync.name_any()), now);
    keep(status, sync, event);
}

/// Records a reconcile that failed before its engine could run (a missing Secret, an
/// unreadable trust policy …) like [`record`] does a cycle.
pub(super) fn record_failure(
    status: &mut ArtifactSyncStatus,
    sync: &ArtifactSync,
    namespace: &str,
    error: &PullerError,
    now: &str,
) {
    let event = Event::failed(
        &sync.spec.url,
        error.reason(),
        &error.to_string(),
        &origin(namespace, &sync.name_any()),
        now,
    );
    keep(status, sync, Some(event));
}

fn keep(status: &mut ArtifactSyncStatus, sync: &ArtifactSync, event: Option<Event>) {
    if sync.spec.notify.is_empty() {
        status.notification = None;
        return;
    }
    let Some(event) = event else {
        return;
    };
    if status.notification.as_ref().map(|n| n.id.as_str()) == Some(event.id.as_str()) {
        return;
    }
    status.notification = Some(Notification {
        reason: event.reason,
        severity: event.severity.to_string(),
        reference: event.reference,
        digest: event.digest,
        applied: event.applied,
        source: event.source,
        revision: event.revision,
        message: event.message,
        origin: event.origin,
        time: event.time,
        id: event.id,
        delivered: false,
    });
}

/// A delivery to start once the status holding its event is written.
pub(super) struct Job {
    key: String,
    namespace: String,
    name: String,
    targets: Vec<NotifyTarget>,
    reference: k8s_openapi::api::core::v1::ObjectReference,
    notification: Notification,
}

/// The delivery `status.notification` still needs, if any. Marks it delivered when this
/// process has delivered it already (a finished delivery whose own status patch lost a
/// race); nothing when it is on its way.
pub(super) fn pending(
    ctx: &Context,
    sync: &ArtifactSync,
    namespace: &str,
    status: &mut ArtifactSyncStatus,
) -> Option<Job> {
    let key = format!("{namespace}/{}", sync.name_any());
    let notification = status.notification.as_mut().filter(|n| !n.delivered)?;
    match ctx.deliveries.get(&key) {
        Some(d) if d.id == notification.id && d.done => {
            notification.delivered = true;
            None
        }
        Some(d) if d.id == notification.id => None,
        _ => Some(Job {
            key,
            namespace: namespace.to_string(),
            name: sync.name_any(),
            targets: sync.spec.notify.clone(),
            reference: sync.object_ref(&()),
            notification: notification.clone(),
        }),
    }
}

/// Sends `job`'s event in the background; `resource_version` is that of the status holding
/// it, so that marking it delivered never lands on a newer event.
pub(super) fn start(ctx: Arc<Context>, job: Job, resource_version: Option<String>) {
    ctx.deliveries.set(
        &job.key,
        Some(Delivery {
            id: job.notification.id.clone(),
            done: false,
        }),
    );
    tokio::spawn(async move {
        let result = deliver(&ctx, &job).await;
        let id = job.notification.id.clone();
        match result {
            Ok(()) => {
                ctx.deliveries
                    .set(&job.key, Some(Delivery { id, done: true }));
                mark_delivered(&ctx, &job, resource_version).await;
            }
            Err(message) => {
                ctx.deliveries.set(&job.key, None);
                tracing::warn!(namespace = %job.namespace, name = %job.name,
                    reason = %job.notification.reason, error = %message,
                    "notification not delivered; trying again at the next reconcile");
                warn(&ctx, &job, &message).await;
            }
        }
    });
}

/// Builds the providers (reading their Secrets) and sends the event to all of them.
async fn deliver(ctx: &Context, job: &Job) -> Result<(), String> {
    let mut providers = Vec::with_capacity(job.targets.len());
    for (i, target) in job.targets.iter().enumerate() {
        providers.push(provider(ctx, job, i, target).await?);
    }
    let n = &job.notification;
    let event = Event {
        reason: n.reason.clone(),
        severity: if n.severity == "info" {
            "info"
        } else {
            "error"
        },
        reference: n.reference.clone(),
        digest: n.digest.clone(),
        applied: n.applied.clone(),
        source: n.source.clone(),
        revision: n.revision.clone(),
        message: n.message.clone(),
        origin: n.origin.clone(),
        time: n.time.clone(),
        id: n.id.clone(),
    };
    if crate::notify::send(&ctx.notify_client, &providers, &event).await {
        Ok(())
    } else {
        Err(format!("{} event: a target could not be reached", n.reason))
    }
}

/// The provider of `spec.notify[i]`, with the values of its Secret.
async fn provider(
    ctx: &Context,
    job: &Job,
    i: usize,
    target: &NotifyTarget,
) -> Result<Provider, String> {
    let field = format!("spec.notify[{i}]");
    let (mut address, mut secret, mut token) = (target.address.clone(), None, None);
    if let Some(r) = &target.secret_ref {
        let s = source::get_secret(ctx, &job.namespace, &r.name, &format!("{field}.secretRef"))
            .await
            .map_err(|e| e.to_string())?;
        let value = |key: &str| source::secret_key(&s, key).map(<[u8]>::to_vec);
        if address.is_none() {
            address = value(ADDRESS_KEY)
                .map(|b| String::from_utf8_lossy(&b).trim().to_string())
                .filter(|a| !a.is_empty());
        }
        secret = value(HMAC_KEY).and_then(|b| Secret::new(&b));
        token = value(TOKEN_KEY).and_then(|b| Secret::new(&b));
    }
    let what = format!("{} {field}", origin(&job.namespace, &job.name));
    let in_secret = |key: &str| match &target.secret_ref {
        Some(r) => format!("the key {key} of Secret {}/{}", job.namespace, r.name),
        None => format!("{field}.secretRef to a Secret with the key {key}"),
    };
    Provider::new(
        target.provider.as_str(),
        address.as_deref(),
        secret.as_ref(),
        token.as_ref(),
        &Origin {
            what: &what,
            url_hint: &format!("set {field}.address or {}", in_secret(ADDRESS_KEY)),
            token_hint: &in_secret(TOKEN_KEY),
        },
    )
    .map_err(|e| e.to_string())
}

/// Patches `delivered: true` into the status, unless the sync changed since the status that
/// held the event (409: the next reconcile carries it over from [`Deliveries`]).
async fn mark_delivered(ctx: &Context, job: &Job, resource_version: Option<String>) {
    let api: Api<ArtifactSync> = Api::namespaced(ctx.client.clone(), &job.namespace);
    let patch = Patch::Merge(json!({
        "metadata": { "resourceVersion": resource_version },
        "status": { "notification": { "delivered": true } },
    }));
    let patched = tokio::time::timeout(
        ctx.options.call_timeout,
        api.patch_status(&job.name, &PatchParams::default(), &patch),
    )
    .await;
    match patched {
        Ok(Ok(_)) => {
            tracing::debug!(namespace = %job.namespace, name = %job.name, "notification delivered");
        }
        Ok(Err(e)) => tracing::debug!(namespace = %job.namespace, name = %job.name, error = %e,
            "notification delivered; the status records it at the next reconcile"),
        Err(_) => tracing::debug!(namespace = %job.namespace, name = %job.name,
            "notification delivered; marking it timed out"),
    }
}

/// A `NotifyFailed` Warning Event on the sync: tenants see why nobody heard from it.
async fn warn(ctx: &Context, job: &Job, message: &str) {
    let event = KubeEvent {
        type_: EventType::Warning,
        reason: "NotifyFailed".into(),
        note: Some(super::event_note(message)),
        action: "Notify".into(),
        secondary: None,
    };
    let published = tokio::time::timeout(
        ctx.options.call_timeout,
        ctx.events.publish(&event, &job.reference),
    )
    .await;
    if !matches!(published, Ok(Ok(()))) {
        tracing::warn!(namespace = %job.namespace, name = %job.name, "cannot publish event");
    }
}
