//! Deleting an `ArtifactSync`: the finalizer `tresor.dev/finalizer` and what happens to the
//! objects it applied.
//!
//! The puller adds the finalizer to every sync it reconciles (not to suspended ones, which it
//! does not touch). When the sync is deleted, the API server keeps it (with
//! `metadata.deletionTimestamp`) until the finalizer is removed, and the puller then:
//!
//! - `prune: true`: deletes every object of the inventory (the inventory ConfigMap and
//!   `status.inventory`) that still carries the sync's owner labels, in reverse apply order,
//!   **as the sync's service account** (the same impersonation it applied with, so a tenant
//!   cannot delete through tresor what it could not delete itself), then the inventory
//!   ConfigMap, then removes the finalizer. If a delete fails (e.g. Forbidden), the
//!   finalizer stays, the status says why (`Ready=False` with the error's reason) and the
//!   puller retries; remove the finalizer by hand to give up.
//! - `prune: false`: the objects are left in place untouched, still labelled (like Flux's
//!   kustomize-controller, which leaves objects of a non-pruning Kustomization as they are);
//!   the inventory ConfigMap is deleted and the finalizer removed. A new ArtifactSync with
//!   the same name and namespace takes them over.
//! - `suspend: true`: nothing is touched (objects and inventory ConfigMap stay); only the
//!   finalizer is removed.
//! - The sync's own Namespace is being deleted (the namespace controller deleted the sync
//!   with everything else in it): the objects in that namespace and the inventory ConfigMap
//!   are left to the namespace controller, which deletes them anyway — and which may already
//!   have deleted the tenant's RoleBinding that lets the puller impersonate there and keep
//!   inventories (deploy/examples/tenant.yaml), so every request there could be Forbidden
//!   and the namespace would stay Terminating for good. Objects elsewhere (cluster-scoped,
//!   other namespaces) are still pruned; if that fails, it is logged with the objects left
//!   behind and the finalizer is removed all the same, as Flux's kustomize-controller does
//!   when the account it impersonates is gone.
//!
//! Not `kube::runtime::finalizer`: it adds the finalizer in a reconcile of its own and waits
//! for the next watch event, so a new sync would cost an extra cycle; here the finalizer is
//! added (with a resourceVersion precondition) in the same reconcile that then applies.

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use serde_json::json;

use super::{apply_setup, call, Context, PullerError};
use crate::api::conditions::{now_rfc3339, observe, Observation};
use crate::api::ArtifactSync;
use crate::kube::ObjectRef;
use crate::reconcile::Retry;

/// The finalizer the puller puts on every ArtifactSync it reconciles.
pub const FINALIZER: &str = "tresor.dev/finalizer";

/// Whether `sync` carries the puller's finalizer.
fn has_finalizer(sync: &ArtifactSync) -> bool {
    sync.metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|f| f == FINALIZER))
}

/// Patches `metadata.finalizers` to `finalizers`, on the condition that the object did not
/// change since it was read (the resourceVersion precondition: the list is replaced, so it
/// must not drop a finalizer someone else added meanwhile; a conflict is retried).
async fn set_finalizers(
    sync: &ArtifactSync,
    ctx: &Context,
    namespace: &str,
    finalizers: Vec<String>,
) -> Result<(), PullerError> {
    let api: Api<ArtifactSync> = Api::namespaced(ctx.client.clone(), namespace);
    let patch = Patch::Merge(json!({
        "metadata": {
            "finalizers": finalizers,
            "resourceVersion": sync.metadata.resource_version,
        }
    }));
    let name = sync.metadata.name.as_deref().unwrap_or_default();
    call(
        "patch ArtifactSync finalizers",
        ctx.options.call_timeout,
        api.patch(name, &PatchParams::default(), &patch),
    )
    .await
    .map(drop)
}

/// Adds the finalizer if `sync` lacks it (one write, the first time only).
pub(super) async fn ensure_finalizer(
    sync: &ArtifactSync,
    ctx: &Context,
    namespace: &str,
) -> Result<(), PullerError> {
    if has_finalizer(sync) {
        return Ok(());
    }
    let mut finalizers = sync.metadata.finalizers.clone().unwrap_or_default();
    finalizers.push(FINALIZER.to_string());
    set_finalizers(sync, ctx, namespace, finalizers).await
}

/// The deletion path of `sync` (its `deletionTimestamp` is set); see the module docs.
/// Errors only when the finalizer or the status cannot be written; a failed cleanup is
/// recorded in the status and retried.
pub(super) async fn finalize(
    sync: &ArtifactSync,
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<Action, PullerError> {
    if !has_finalizer(sync) {
        return Ok(Action::await_change());
    }
    ctx.syncs
        .lock()
        .await
        .remove(&format!("{namespace}/{name}"));
    // Deleting what it applied is not drift.
    ctx.watches.forget(namespace, name);
    if !sync.spec.suspend {
        if let Err(e) = clean_up(sync, ctx, namespace, name).await {
            tracing::warn!(namespace, name, reason = e.reason(), error = %e, "cannot clean up");
            record_failure(sync, ctx, namespace, &e).await?;
            return Ok(Action::requeue(Duration::from_secs(30)));
        }
    }
    let finalizers = sync
        .metadata
        .finalizers
        .iter()
        .flatten()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    set_finalizers(sync, ctx, namespace, finalizers).await?;
    tracing::info!(
        namespace,
        name,
        prune = sync.spec.prune,
        suspended = sync.spec.suspend,
        "finalized"
    );
    Ok(Action::await_change())
}

/// Prunes the inventory (when `prune`) and deletes the inventory ConfigMap; see the module
/// docs for a sync whose Namespace is being deleted.
async fn clean_up(
    sync: &ArtifactSync,
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<(), PullerError> {
    let terminating = namespace_terminating(ctx, namespace).await?;
    let (cluster, store, mut options) = apply_setup(sync, ctx, namespace, name)?;
    if sync.spec.prune {
        let mut objects: Vec<ObjectRef> = if terminating {
            Vec::new()
        } else {
            store
                .load(options.api_timeout)
                .await?
                .map(|i| i.objects)
                .unwrap_or_default()
        };
        let recorded = sync.status.iter().flat_map(|s| &s.inventory);
        for e in recorded {
            let object = ObjectRef {
                group: e.group.clone(),
                version: e.version.clone(),
                kind: e.kind.clone(),
                namespace: (!e.namespace.is_empty()).then(|| e.namespace.clone()),
                name: e.name.clone(),
            };
            if !objects.iter().any(|o| o.same_object(&object)) {
                objects.push(object);
            }
        }
        if terminating {
            objects.retain(|o| o.namespace.as_deref() != Some(namespace));
        }
        // Deleting with the sync's rights; nothing is kept, so everything listed goes.
        options.dry_run = false;
        let report = match cluster.prune(&objects, &[], &options).await {
            Ok(report) => report,
            Err(e) if terminating => {
                let left: Vec<String> = objects.iter().map(ToString::to_string).collect();
                tracing::warn!(namespace, name, reason = e.reason(), error = %e,
                    left = left.join(", "),
                    "its namespace is being deleted and the objects outside it cannot be \
                     deleted; finalizing without them");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        for (object, why) in &report.skipped {
            tracing::info!(object = %object, why, "not deleted with its ArtifactSync");
        }
        tracing::info!(
            namespace,
            name,
            deleted = report.deleted.len(),
            namespace_terminating = terminating,
            "deleted the objects of a deleted ArtifactSync"
        );
    }
    if !terminating {
        store.delete(options.api_timeout).await?;
    }
    Ok(())
}

/// Whether `namespace` is being deleted (or is gone already): read directly, as the puller
/// itself, since this decides what the deletion path leaves to the namespace controller.
async fn namespace_terminating(ctx: &Context, namespace: &str) -> Result<bool, PullerError> {
    let ns: Option<Namespace> = call(
        "get Namespace",
        ctx.options.call_timeout,
        Api::all(ctx.client.clone()).get_opt(namespace),
    )
    .await?;
    Ok(ns.is_none_or(|ns| ns.metadata.deletion_timestamp.is_some()))
}

/// Writes a failed cleanup into the status (the sync is still there until finalized) and
/// publishes a Warning Event when `Ready` changes.
async fn record_failure(
    sync: &ArtifactSync,
    ctx: &Context,
    namespace: &str,
    error: &PullerError,
) -> Result<(), PullerError> {
    let old = sync.status.clone().unwrap_or_default();
    let mut status = old.clone();
    observe(
        &mut status,
        sync.metadata.generation,
        &Observation::Failed {
            reason: error.reason().to_string(),
            message: format!("cannot delete the applied objects: {error}"),
            retry: Retry::Transient,
        },
        &now_rfc3339(),
    );
    super::write_status(
        &super::StatusTarget::of(sync, namespace),
        ctx,
        &old,
        &status,
    )
    .await
    .map(|_| ())
}
