//! Registry webhooks in the cluster (`tresor-puller --webhook-addr
//! --webhook-secret-file`): a push to a repository reconciles every ArtifactSync whose
//! `spec.url` names it, at once (see [`crate::webhook`] for payloads, proofs and limits).
//!
//! One set of receivers for the whole puller, its secret a file the admin mounts from a
//! Secret (deploy/components/webhooks). Tenants do not configure it: a webhook only makes
//! the puller look now, with each sync's own trust, so it needs no per-tenant scope — which
//! syncs a push concerns is decided from their URLs, never from the payload.

use std::sync::Arc;
use std::time::Duration;

use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio::sync::mpsc;

use super::watched::WatchedSync;
use super::{call, Context, REQUESTED_AT};
use crate::api::conditions::now_rfc3339;
use crate::reference::Reference;
use crate::webhook::{concerns, Hooks, Push};

/// How many times, and how far apart, a webhook's syncs are reconciled again: a registry
/// may notify before it moved the tag (Distribution sends the manifest's push event before
/// it writes the tag link); each extra reconcile of an unchanged sync is one registry HEAD.
const RECHECKS: u32 = 5;
const RECHECK_DELAY: Duration = Duration::from_secs(1);
/// A standby asks the leader again after this long, for the same reason (one more write
/// per sync rather than five).
const STANDBY_RECHECK: Duration = Duration::from_secs(2);

/// Where a webhook's reconciles go: the controller's trigger stream.
pub(super) type Triggers = mpsc::Sender<ObjectRef<WatchedSync>>;

/// The leader's side of the webhook server: its controller's cache and trigger stream.
#[derive(Clone)]
pub(super) struct LeaderHooks {
    /// The controller's ArtifactSync cache.
    pub(super) syncs: Store<WatchedSync>,
    pub(super) triggers: Triggers,
}

/// What every replica serves (the Service in front of the receivers reaches any of them):
/// the leader reconciles the syncs a push concerns through its controller; a standby asks
/// the leader by setting those syncs' `tresor.dev/reconcile-requested-at` annotation (one
/// list and one patch per sync, with the puller's own rights), which the leader's watch
/// turns into a reconcile.
pub(super) struct ReplicaHooks {
    pub(super) ctx: Arc<Context>,
}

/// The syncs among `syncs` whose URL names `push`'s repository.
fn following<'a>(
    syncs: impl Iterator<Item = &'a WatchedSync>,
    push: &Push,
) -> Vec<ObjectRef<WatchedSync>> {
    let mut refs = Vec::new();
    for watched in syncs {
        let WatchedSync::Decoded(sync) = watched else {
            continue;
        };
        let Ok(Reference::Registry(followed)) = sync.spec.url.parse::<Reference>() else {
            continue;
        };
        if concerns(
            push,
            &followed.host,
            &followed.repository,
            sync.spec.insecure,
        ) {
            let name = ObjectRef::new(&sync.name_any());
            refs.push(match sync.namespace() {
                Some(ns) => name.within(&ns),
                None => name,
            });
        }
    }
    refs
}

fn names(refs: &[ObjectRef<WatchedSync>]) -> Vec<String> {
    refs.iter()
        .map(|r| format!("{}/{}", r.namespace.as_deref().unwrap_or_default(), r.name))
        .collect()
}

impl LeaderHooks {
    fn trigger(&self, push: &Push) -> Vec<String> {
        let syncs = self.syncs.state();
        let refs = following(syncs.iter().map(AsRef::as_ref), push);
        let triggered = names(&refs);
        if refs.is_empty() {
            return triggered;
        }
        let triggers = self.triggers.clone();
        tokio::spawn(async move {
            for round in 0..=RECHECKS {
                if round > 0 {
                    tokio::time::sleep(RECHECK_DELAY).await;
                }
                for r in &refs {
                    // Full: the controller is busy; the pending reconciles will see the push.
                    let _ = triggers.try_send(r.clone());
                }
            }
        });
        triggered
    }
}

impl ReplicaHooks {
    /// A standby's answer: the syncs (of this puller's label selector) that follow the
    /// pushed repository get the annotation now and once more after [`STANDBY_RECHECK`].
    async fn ask_leader(&self, push: &Push) -> Vec<String> {
        let ctx = &self.ctx;
        let api: Api<WatchedSync> = Api::all(ctx.client.clone());
        let mut params = ListParams::default();
        if let Some(selector) = &ctx.options.watch_label_selector {
            params = params.labels(selector);
        }
        let listed = match call(
            "list ArtifactSyncs",
            ctx.options.call_timeout,
            api.list(&params),
        )
        .await
        {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(error = %e, push = %push, "standby cannot pass a webhook on");
                return Vec::new();
            }
        };
        let refs = following(listed.items.iter(), push);
        let triggered = names(&refs);
        let ctx = ctx.clone();
        tokio::spawn(async move {
            request_reconciles(&ctx, &refs).await;
            tokio::time::sleep(STANDBY_RECHECK).await;
            request_reconciles(&ctx, &refs).await;
        });
        triggered
    }
}

/// Sets `tresor.dev/reconcile-requested-at` on each of `refs` (what `kubectl annotate` does
/// for a manual reconcile).
async fn request_reconciles(ctx: &Context, refs: &[ObjectRef<WatchedSync>]) {
    let patch = Patch::Merge(json!({
        "metadata": { "annotations": { REQUESTED_AT: now_rfc3339() } }
    }));
    for r in refs {
        let namespace = r.namespace.as_deref().unwrap_or("default");
        let api: Api<crate::api::ArtifactSync> = Api::namespaced(ctx.client.clone(), namespace);
        let patched = call(
            "annotate ArtifactSync",
            ctx.options.call_timeout,
            api.patch(&r.name, &PatchParams::default(), &patch),
        )
        .await;
        if let Err(e) = patched {
            tracing::warn!(namespace, name = %r.name, error = %e,
                "standby cannot ask the leader to reconcile");
        }
    }
}

impl Hooks for ReplicaHooks {
    async fn trigger(&self, push: &Push) -> Vec<String> {
        let leader = self
            .ctx
            .leader_hooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match leader {
            Some(leader) => leader.trigger(push),
            None => self.ask_leader(push).await,
        }
    }

    fn counted(&self, kind: &str, code: u16) {
        self.ctx.metrics.count_webhook(kind, code);
    }
}
