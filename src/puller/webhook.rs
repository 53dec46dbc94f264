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

use kube::runtime::reflector::{ObjectRef, Store};
use kube::ResourceExt;
use tokio::sync::mpsc;

use super::watched::WatchedSync;
use crate::reconcile::metrics::Metrics;
use crate::reference::Reference;
use crate::webhook::{concerns, Hooks, Push};

/// How many times, and how far apart, a webhook's syncs are reconciled again: a registry
/// may notify before it moved the tag (Distribution sends the manifest's push event before
/// it writes the tag link); each extra reconcile of an unchanged sync is one registry HEAD.
const RECHECKS: u32 = 5;
const RECHECK_DELAY: Duration = Duration::from_secs(1);

/// Where a webhook's reconciles go: the controller's trigger stream.
pub(super) type Triggers = mpsc::Sender<ObjectRef<WatchedSync>>;

/// The puller's side of the webhook server.
pub(super) struct PullerHooks {
    /// The controller's ArtifactSync cache.
    pub(super) syncs: Store<WatchedSync>,
    pub(super) triggers: Triggers,
    pub(super) metrics: Arc<Metrics>,
}

impl PullerHooks {
    /// The syncs whose URL names `push`'s repository.
    fn following(&self, push: &Push) -> Vec<ObjectRef<WatchedSync>> {
        let mut refs = Vec::new();
        for watched in self.syncs.state() {
            let WatchedSync::Decoded(sync) = watched.as_ref() else {
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
}

impl Hooks for PullerHooks {
    fn trigger(&self, push: &Push) -> Vec<String> {
        let refs = self.following(push);
        let names = refs
            .iter()
            .map(|r| format!("{}/{}", r.namespace.as_deref().unwrap_or_default(), r.name))
            .collect();
        if refs.is_empty() {
            return names;
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
        names
    }

    fn counted(&self, kind: &str, code: u16) {
        self.metrics.count_webhook(kind, code);
    }
}
