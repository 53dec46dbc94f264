//! [`Cluster`]: staged server-side apply, prune, drift detection and health waits against
//! one API server, through a [`ResourceResolver`].

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{stream, StreamExt};
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::{Api, Client};
use serde_json::{Map, Value};

use super::health::{self, Health};
use super::{
    ApplyError, ApplyOptions, ObjectRef, Owner, Resolved, ResourceResolver, FIELD_MANAGER,
    LABEL_NAME, LABEL_NAMESPACE,
};

const CRD_GROUP: &str = "apiextensions.k8s.io";
const STAGE_ONE: &str = "namespaces and CRDs";
const STAGE_TWO: &str = "objects";

/// An object as tresor applies it: identity, resolved resource, and the manifest with
/// owner labels and namespace filled in.
#[derive(Debug, Clone)]
pub struct AppliedObject {
    /// Identity (with the namespace it is applied in).
    pub id: ObjectRef,
    /// The resolved resource.
    pub resource: Resolved,
    /// The manifest sent, as compact JSON text, parsed again when a drift check compares it
    /// or a rollback re-applies it: a `serde_json::Value` of a small manifest takes about ten
    /// times the memory of its text, and the puller keeps every applied object of every sync
    /// (scripts/bench-cluster.sh scale). Shared with the puller's watch index.
    manifest: Arc<str>,
}

impl AppliedObject {
    /// `value` as applied to `id` through `resource`; fails with [`ApplyError::BadObject`]
    /// when it cannot be written as JSON.
    pub fn new(id: ObjectRef, resource: Resolved, value: &Value) -> Result<Self, ApplyError> {
        let manifest = serde_json::to_string(value).map_err(|e| ApplyError::BadObject {
            object: id.to_string(),
            message: format!("cannot be sent as JSON: {e}"),
        })?;
        Ok(Self {
            id,
            resource,
            manifest: manifest.into(),
        })
    }

    /// The manifest as compact JSON text (the same text for the same manifest).
    pub fn manifest(&self) -> &Arc<str> {
        &self.manifest
    }

    /// The manifest as a JSON value; fails with [`ApplyError::BadObject`] only if the text
    /// [`AppliedObject::new`] wrote does not read back.
    pub fn value(&self) -> Result<Value, ApplyError> {
        serde_json::from_str(&self.manifest).map_err(|e| ApplyError::BadObject {
            object: self.id.to_string(),
            message: format!("applied manifest does not read back: {e}"),
        })
    }
}

/// What an apply did.
#[derive(Debug, Clone, Default)]
pub struct ApplyReport {
    /// Every object of the artifact, sorted: the new inventory.
    pub inventory: Vec<ObjectRef>,
    /// The objects as applied (for drift checks, health and rollback), in apply order;
    /// shared by the applier's records of what it applied and what was healthy.
    pub objects: Arc<[AppliedObject]>,
    /// Whether this was a server-side dry run.
    pub dry_run: bool,
}

/// What a prune did.
#[derive(Debug, Clone, Default)]
pub struct PruneReport {
    /// Deleted (or, in a dry run, would be deleted).
    pub deleted: Vec<ObjectRef>,
    /// Left alone, with why (gone already, labels no longer tresor's, kind not served).
    pub skipped: Vec<(ObjectRef, String)>,
}

/// A manifest before its kind is resolved.
#[derive(Debug, Clone)]
struct Manifest {
    gvk: GroupVersionKind,
    name: String,
    namespace: Option<String>,
    value: Value,
    display: String,
}

/// One API server as seen by one (possibly impersonated) account.
#[derive(Clone)]
pub struct Cluster {
    client: Client,
    resolver: Arc<dyn ResourceResolver>,
    account: Option<String>,
}

impl Cluster {
    /// A cluster reached through `client`, kinds resolved by `resolver`; `account` is the
    /// impersonated user (for error messages), if any.
    pub fn new(
        client: Client,
        resolver: Arc<dyn ResourceResolver>,
        account: Option<String>,
    ) -> Self {
        Self {
            client,
            resolver,
            account,
        }
    }

    /// The client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn api(&self, resource: &Resolved, namespace: Option<&str>) -> Api<DynamicObject> {
        match namespace {
            Some(ns) if resource.namespaced => {
                Api::namespaced_with(self.client.clone(), ns, resource.resource.as_ref())
            }
            _ => Api::all_with(self.client.clone(), resource.resource.as_ref()),
        }
    }

    /// Runs one API call with `timeout`, mapping errors for `verb` on `id`.
    async fn call<T>(
        &self,
        id: &ObjectRef,
        verb: &str,
        timeout: Duration,
        fut: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, ApplyError> {
        match tokio::time::timeout(timeout, fut).await {
            Err(_) => Err(ApplyError::Timeout {
                object: id.to_string(),
                verb: verb.to_string(),
                after: timeout,
            }),
            Ok(r) => r.map_err(|e| {
                ApplyError::from_kube(
                    e,
                    &id.to_string(),
                    verb,
                    id.namespace.as_deref(),
                    self.account.as_deref(),
                )
            }),
        }
    }

    /// Reads an object; `None` when it does not exist.
    pub async fn get(
        &self,
        object: &ObjectRef,
        resource: &Resolved,
        timeout: Duration,
    ) -> Result<Option<Value>, ApplyError> {
        let api = self.api(resource, object.namespace.as_deref());
        let got = self
            .call(object, "get", timeout, api.get_opt(&object.name))
            .await?;
        got.map(|o| to_json(&o, object)).transpose()
    }

    /// Server-side apply of one object as [`FIELD_MANAGER`]; returns the live object.
    pub async fn patch(
        &self,
        object: &AppliedObject,
        force: bool,
        dry_run: bool,
        timeout: Duration,
    ) -> Result<Value, ApplyError> {
        let mut params = PatchParams::apply(FIELD_MANAGER);
        params.force = force;
        params.dry_run = dry_run;
        let api = self.api(&object.resource, object.id.namespace.as_deref());
        let value = object.value()?;
        let live = self
            .call(
                &object.id,
                "patch",
                timeout,
                api.patch(&object.id.name, &params, &Patch::Apply(&value)),
            )
            .await
            .map_err(|e| e.with_role_ref(&value))?;
        to_json(&live, &object.id)
    }

    async fn tagged_patch<'a>(
        &'a self,
        object: &'a AppliedObject,
        force: bool,
        dry_run: bool,
        timeout: Duration,
    ) -> (&'a AppliedObject, Result<Value, ApplyError>) {
        (object, self.patch(object, force, dry_run, timeout).await)
    }

    async fn tagged_get<'a>(
        &'a self,
        object: &'a AppliedObject,
        timeout: Duration,
    ) -> (&'a AppliedObject, Result<Option<Value>, ApplyError>) {
        (
            object,
            self.get(&object.id, &object.resource, timeout).await,
        )
    }

    /// Applies `manifests` in two stages (see the module docs) and returns the report.
    /// An empty artifact over a non-empty `previous` inventory is refused when pruning is
    /// on, unless `allow_empty`.
    pub async fn apply(
        &self,
        manifests: Vec<Value>,
        previous: &[ObjectRef],
        options: &ApplyOptions,
    ) -> Result<ApplyReport, ApplyError> {
        if manifests.is_empty() && options.prune && !options.allow_empty && !previous.is_empty() {
            return Err(ApplyError::PruneGuard {
                previous: previous.len(),
            });
        }
        let manifests = manifests
            .into_iter()
            .map(|v| manifest(v, &options.owner))
            .collect::<Result<Vec<_>, _>>()?;
        self.check_confined(&manifests, options).await?;
        let (mut first, mut second): (Vec<_>, Vec<_>) =
            manifests.into_iter().partition(|m| stage_one(&m.gvk));
        first.sort_by_key(|m| rank(&m.gvk.group, &m.gvk.kind));
        second.sort_by_key(|m| rank(&m.gvk.group, &m.gvk.kind));
        let artifact_namespaces: BTreeSet<String> = first
            .iter()
            .filter(|m| m.gvk.kind == "Namespace")
            .map(|m| m.name.clone())
            .collect();
        let crd_kinds: BTreeSet<(String, String)> = first
            .iter()
            .filter(|m| m.gvk.kind == "CustomResourceDefinition")
            .filter_map(|m| {
                let spec = m.value.get("spec")?;
                Some((
                    spec.get("group")?.as_str()?.to_string(),
                    spec.get("names")?.get("kind")?.as_str()?.to_string(),
                ))
            })
            .collect();

        let mut report = ApplyReport {
            dry_run: options.dry_run,
            ..ApplyReport::default()
        };
        let first = self.resolve_all(first, options, None).await?;
        self.check_claims(STAGE_ONE, &first, previous, options)
            .await?;
        self.run_stage(STAGE_ONE, &first, options, &artifact_namespaces)
            .await?;
        let crds: Vec<&AppliedObject> = first
            .iter()
            .filter(|o| o.id.kind == "CustomResourceDefinition")
            .collect();
        if !crds.is_empty() && !options.dry_run {
            self.wait_established(&crds, options).await?;
        }
        let deadline = Instant::now() + options.crd_timeout;
        let second = self
            .resolve_all(second, options, Some((deadline, &crd_kinds)))
            .await?;
        self.check_claims(STAGE_TWO, &second, previous, options)
            .await?;
        self.run_stage(STAGE_TWO, &second, options, &artifact_namespaces)
            .await?;
        report.objects = first.into_iter().chain(second).collect();
        report.inventory = report.objects.iter().map(|o| o.id.clone()).collect();
        report.inventory.sort();
        Ok(report)
    }

    /// The objects `manifests` would be applied as (labels, resolved kinds, namespaces),
    /// without sending anything but discovery requests.
    pub async fn prepare(
        &self,
        manifests: Vec<Value>,
        options: &ApplyOptions,
    ) -> Result<Vec<AppliedObject>, ApplyError> {
        let manifests = manifests
            .into_iter()
            .map(|v| manifest(v, &options.owner))
            .collect::<Result<Vec<_>, _>>()?;
        self.check_confined(&manifests, options).await?;
        self.resolve_all(manifests, options, None).await
    }

    /// With [`ApplyOptions::confine_to`], refuses the artifact when a namespaced object
    /// would land in another namespace (its own `metadata.namespace`, or the target
    /// namespace). Runs before anything is sent, so nothing is half-applied. Whether a kind
    /// is namespaced comes from discovery, or from the artifact's own CRDs (`spec.scope`)
    /// for kinds not served yet; a kind neither knows counts as namespaced.
    async fn check_confined(
        &self,
        manifests: &[Manifest],
        options: &ApplyOptions,
    ) -> Result<(), ApplyError> {
        let Some(home) = options.confine_to.as_deref() else {
            return Ok(());
        };
        let crd_scopes: Vec<(String, String, bool)> = manifests
            .iter()
            .filter(|m| m.gvk.group == CRD_GROUP && m.gvk.kind == "CustomResourceDefinition")
            .filter_map(|m| {
                let spec = m.value.get("spec")?;
                Some((
                    spec.get("group")?.as_str()?.to_string(),
                    spec.get("names")?.get("kind")?.as_str()?.to_string(),
                    spec.get("scope").and_then(Value::as_str) != Some("Cluster"),
                ))
            })
            .collect();
        for m in manifests {
            let Some(namespace) = m
                .namespace
                .as_deref()
                .or(options.target_namespace.as_deref())
            else {
                continue;
            };
            if namespace == home {
                continue;
            }
            let namespaced = match self.resolver.resolve(&m.gvk, &m.display).await {
                Ok(resolved) => resolved.namespaced,
                Err(ApplyError::UnknownKind { .. }) => crd_scopes
                    .iter()
                    .find(|(g, k, _)| *g == m.gvk.group && *k == m.gvk.kind)
                    .is_none_or(|(_, _, namespaced)| *namespaced),
                Err(e) => return Err(e),
            };
            if namespaced {
                return Err(ApplyError::CrossNamespace {
                    object: m.display.clone(),
                    namespace: namespace.to_string(),
                    allowed: home.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Resolves kinds and fills in namespaces. With `crd_deadline`, kinds defined by the
    /// artifact's CRDs are retried until the deadline (discovery can lag establishment).
    async fn resolve_all(
        &self,
        manifests: Vec<Manifest>,
        options: &ApplyOptions,
        crd_deadline: Option<(Instant, &BTreeSet<(String, String)>)>,
    ) -> Result<Vec<AppliedObject>, ApplyError> {
        let mut out = Vec::with_capacity(manifests.len());
        for m in manifests {
            let from_artifact_crd = crd_deadline.is_some_and(|(_, kinds)| {
                kinds.contains(&(m.gvk.group.clone(), m.gvk.kind.clone()))
            });
            let resource = loop {
                match self.resolver.resolve(&m.gvk, &m.display).await {
                    Ok(r) => break Some(r),
                    // A dry run cannot resolve kinds whose CRD it only pretended to create.
                    Err(ApplyError::UnknownKind { .. }) if from_artifact_crd && options.dry_run => {
                        tracing::info!(object = %m.display, "dry run: its CRD is not established yet; not checked");
                        break None;
                    }
                    Err(ApplyError::UnknownKind { .. })
                        if from_artifact_crd
                            && crd_deadline.is_some_and(|(until, _)| Instant::now() < until) =>
                    {
                        tokio::time::sleep(options.poll.min(Duration::from_millis(200))).await;
                    }
                    Err(e) => return Err(e),
                }
            };
            if let Some(resource) = resource {
                out.push(finish(m, resource, options)?);
            }
        }
        Ok(out)
    }

    /// Refuses to take objects that another owner applied: every object new to this
    /// inventory is read first, and one that carries tresor's labels naming someone else is
    /// [`ApplyError::Claimed`] (all share the field manager `tresor`, so server-side apply
    /// alone would hand it over silently, and two syncs would take it from each other on
    /// every cycle). `force` takes it over. Objects already in `previous` cost nothing.
    async fn check_claims(
        &self,
        stage: &'static str,
        objects: &[AppliedObject],
        previous: &[ObjectRef],
        options: &ApplyOptions,
    ) -> Result<(), ApplyError> {
        if options.force {
            return Ok(());
        }
        let reads: Vec<_> = objects
            .iter()
            .filter(|o| previous.binary_search(&o.id).is_err())
            .map(|object| self.tagged_get(object, options.api_timeout))
            .collect();
        let mut results = stream::iter(reads).buffered(options.concurrency.max(1));
        while let Some((object, live)) = results.next().await {
            let claimed = match live {
                Ok(Some(live)) => claimant(&live, &options.owner),
                Ok(None) => None,
                // Not readable (e.g. an impersonated account that may only patch): the apply
                // itself reports what the account may not do.
                Err(ApplyError::Forbidden { .. } | ApplyError::ImpersonationForbidden { .. }) => {
                    None
                }
                Err(e) => return Err(e),
            };
            if let Some(owner) = claimed {
                return Err(ApplyError::Stage {
                    stage,
                    applied: Vec::new(),
                    source: Box::new(ApplyError::Claimed {
                        object: object.id.to_string(),
                        owner,
                    }),
                });
            }
        }
        Ok(())
    }

    /// Dry run of the whole stage, then the real apply; stops at the first failure.
    async fn run_stage(
        &self,
        stage: &'static str,
        objects: &[AppliedObject],
        options: &ApplyOptions,
        artifact_namespaces: &BTreeSet<String>,
    ) -> Result<(), ApplyError> {
        if objects.is_empty() {
            return Ok(());
        }
        let passes: &[bool] = if options.dry_run {
            &[true]
        } else if options.validate_first {
            &[true, false]
        } else {
            &[false]
        };
        for &dry_run in passes {
            let mut applied = Vec::new();
            let calls: Vec<_> = objects
                .iter()
                .map(|object| {
                    self.tagged_patch(object, options.force, dry_run, options.api_timeout)
                })
                .collect();
            let mut results = stream::iter(calls).buffered(options.concurrency.max(1));
            while let Some((object, live)) = results.next().await {
                match live {
                    Ok(_) => applied.push(object.id.to_string()),
                    // In a dry run, the artifact's own namespaces do not exist yet.
                    Err(ApplyError::NamespaceMissing { namespace, .. })
                        if options.dry_run && artifact_namespaces.contains(&namespace) => {}
                    Err(e) => {
                        return Err(ApplyError::Stage {
                            stage,
                            applied: if dry_run { Vec::new() } else { applied },
                            source: Box::new(e),
                        })
                    }
                }
            }
            tracing::debug!(stage, dry_run, objects = objects.len(), "stage applied");
        }
        Ok(())
    }

    /// Polls the CRDs until each reports `Established=True`, telling the resolver.
    async fn wait_established(
        &self,
        crds: &[&AppliedObject],
        options: &ApplyOptions,
    ) -> Result<(), ApplyError> {
        let until = Instant::now() + options.crd_timeout;
        let mut pending: Vec<&AppliedObject> = crds.to_vec();
        loop {
            let mut still = Vec::new();
            for crd in pending {
                let live = self
                    .get(&crd.id, &crd.resource, options.api_timeout)
                    .await?;
                match live {
                    Some(live) if health::condition(&live, "Established") == Some(true) => {
                        self.resolver.crd_established(&live);
                    }
                    _ => still.push(crd),
                }
            }
            if still.is_empty() {
                return Ok(());
            }
            if Instant::now() >= until {
                return Err(ApplyError::CrdNotEstablished {
                    crds: still.iter().map(|c| c.id.name.clone()).collect(),
                    timeout: options.crd_timeout,
                });
            }
            pending = still;
            tokio::time::sleep(options.poll.min(Duration::from_millis(200))).await;
        }
    }

    /// Deletes the objects of `previous` that are not in `keep`, in reverse apply order,
    /// each only if it still carries `owner`'s labels (re-read right before the delete).
    /// In a dry run, reports what would be deleted.
    pub async fn prune(
        &self,
        previous: &[ObjectRef],
        keep: &[ObjectRef],
        options: &ApplyOptions,
    ) -> Result<PruneReport, ApplyError> {
        let mut gone: Vec<&ObjectRef> = previous
            .iter()
            .filter(|p| !keep.iter().any(|k| k.same_object(p)))
            .collect();
        gone.sort_by_key(|r| std::cmp::Reverse(rank(&r.group, &r.kind)));
        let mut report = PruneReport::default();
        for object in gone {
            let gvk = GroupVersionKind::gvk(&object.group, &object.version, &object.kind);
            let resource = match self.resolver.resolve(&gvk, &object.to_string()).await {
                Ok(r) => r,
                Err(ApplyError::UnknownKind { .. }) => {
                    report
                        .skipped
                        .push((object.clone(), "its kind is no longer served".into()));
                    continue;
                }
                Err(e) => return Err(e),
            };
            let Some(live) = self.get(object, &resource, options.api_timeout).await? else {
                report.skipped.push((object.clone(), "already gone".into()));
                continue;
            };
            if !owned_by(&live, &options.owner) {
                report.skipped.push((
                    object.clone(),
                    format!(
                        "no longer carries tresor's labels {LABEL_NAME}={} {LABEL_NAMESPACE}={}",
                        options.owner.name, options.owner.namespace
                    ),
                ));
                continue;
            }
            if !options.dry_run {
                let api = self.api(&resource, object.namespace.as_deref());
                let params = DeleteParams::background();
                match self
                    .call(
                        object,
                        "delete",
                        options.api_timeout,
                        api.delete(&object.name, &params),
                    )
                    .await
                {
                    Ok(_) | Err(ApplyError::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            tracing::info!(object = %object, dry_run = options.dry_run, "pruned");
            report.deleted.push(object.clone());
        }
        Ok(report)
    }

    /// The objects whose live state differs from what tresor applied (deleted, or a field
    /// tresor sets holding another value), with the first differing path. Reads every
    /// object with a GET.
    pub async fn drifted(
        &self,
        objects: &[AppliedObject],
        options: &ApplyOptions,
    ) -> Result<Vec<(AppliedObject, String)>, ApplyError> {
        self.drifted_seen(objects, options, None).await
    }

    /// Like [`Cluster::drifted`], but takes the live state from `seen` (watch caches) where
    /// it is known and GETs only the rest.
    pub async fn drifted_seen(
        &self,
        objects: &[AppliedObject],
        options: &ApplyOptions,
        seen: Option<&dyn LiveObjects>,
    ) -> Result<Vec<(AppliedObject, String)>, ApplyError> {
        let mut drifted = Vec::new();
        let mut unknown = Vec::new();
        for object in objects {
            match seen.and_then(|s| s.live(object)) {
                Some(live) => {
                    if let Some(path) = difference(object, live.as_ref()) {
                        drifted.push((object.clone(), path));
                    }
                }
                None => unknown.push(object),
            }
        }
        let calls: Vec<_> = unknown
            .into_iter()
            .map(|object| self.tagged_get(object, options.api_timeout))
            .collect();
        let mut checks = stream::iter(calls).buffered(options.concurrency.max(1));
        while let Some((object, live)) = checks.next().await {
            if let Some(path) = difference(object, live?.as_ref()) {
                drifted.push((object.clone(), path));
            }
        }
        Ok(drifted)
    }

    /// Waits until every object is healthy ([`health::health`]); fails with the objects
    /// still not healthy at the timeout, or at once when one failed for good.
    pub async fn wait_healthy(
        &self,
        objects: &[AppliedObject],
        options: &ApplyOptions,
    ) -> Result<(), ApplyError> {
        let until = Instant::now() + options.health_timeout;
        let mut pending: Vec<&AppliedObject> = objects
            .iter()
            .filter(|o| health::has_status(&o.id.group, &o.id.kind))
            .collect();
        loop {
            let mut still = Vec::new();
            let mut failed = Vec::new();
            for object in pending {
                let live = self
                    .get(&object.id, &object.resource, options.api_timeout)
                    .await?;
                match live.as_ref().map(health::health) {
                    None => still.push((object, "not found".to_string())),
                    Some(Health::Current) => {}
                    Some(Health::InProgress(why)) => still.push((object, why)),
                    Some(Health::Failed(why)) => failed.push(format!("{}: {why}", object.id)),
                }
            }
            if !failed.is_empty() {
                return Err(ApplyError::Unhealthy { objects: failed });
            }
            if still.is_empty() {
                return Ok(());
            }
            if Instant::now() >= until {
                return Err(ApplyError::HealthTimeout {
                    objects: still
                        .iter()
                        .map(|(o, why)| format!("{}: {why}", o.id))
                        .collect(),
                    timeout: options.health_timeout,
                });
            }
            pending = still.into_iter().map(|(o, _)| o).collect();
            tokio::time::sleep(options.poll).await;
        }
    }
}

/// Where the live object (`None`: it does not exist) differs from what was applied.
fn difference(object: &AppliedObject, live: Option<&Value>) -> Option<String> {
    match live {
        None => Some("deleted".to_string()),
        Some(live) => match object.value() {
            Ok(applied) => live_difference(&applied, live),
            Err(e) => Some(e.to_string()),
        },
    }
}

/// The first path where the live object differs from what was applied (`desired`), like
/// [`first_difference`] but without `apiVersion`, `kind` and `status`: the first two name the
/// resource the object was read from (list responses, a watch cache's initial state, leave
/// them out of every item); `status` belongs to the controllers (server-side apply ignores
/// it where it is a subresource, yet rendered CRDs often carry an empty one).
pub fn live_difference(desired: &Value, live: &Value) -> Option<String> {
    match (desired, live) {
        (Value::Object(desired), Value::Object(live)) => desired
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "apiVersion" | "kind" | "status"))
            .find_map(|(k, dv)| member_difference(k, dv, live, "")),
        (desired, live) => first_difference(desired, live, ""),
    }
}

/// Live objects as a watch last saw them, so a drift check need not GET each one
/// ([`Cluster::drifted_seen`]; the puller's watch caches implement it).
pub trait LiveObjects: Send + Sync {
    /// `Some(Some(live))` when a watch that is in sync holds the object, `Some(None)` when
    /// such a watch knows it does not exist (deleted), `None` when no synced watch covers
    /// it (then it is read with a GET).
    fn live(&self, object: &AppliedObject) -> Option<Option<Value>>;
}

fn to_json(object: &DynamicObject, id: &ObjectRef) -> Result<Value, ApplyError> {
    serde_json::to_value(object).map_err(|e| ApplyError::Transport {
        object: id.to_string(),
        verb: "decode".into(),
        message: e.to_string(),
    })
}

fn stage_one(gvk: &GroupVersionKind) -> bool {
    (gvk.group.is_empty() && gvk.kind == "Namespace")
        || (gvk.group == CRD_GROUP && gvk.kind == "CustomResourceDefinition")
}

/// The apply rank of an applied object (lower first).
pub(super) fn rank_of(id: &ObjectRef) -> u8 {
    rank(&id.group, &id.kind)
}

/// Apply order within and across stages (prune uses the reverse).
fn rank(group: &str, kind: &str) -> u8 {
    match (group, kind) {
        ("", "Namespace") => 0,
        (CRD_GROUP, "CustomResourceDefinition") => 1,
        ("", "ServiceAccount") => 2,
        ("rbac.authorization.k8s.io", "ClusterRole" | "Role") => 3,
        ("rbac.authorization.k8s.io", "ClusterRoleBinding" | "RoleBinding") => 4,
        ("", "ConfigMap" | "Secret" | "PersistentVolumeClaim") => 5,
        ("", "Service") => 6,
        _ => 7,
    }
}

/// Reads identity fields and adds the owner labels.
fn manifest(mut value: Value, owner: &Owner) -> Result<Manifest, ApplyError> {
    let str_at = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_string);
    let api_version = str_at(&value, "/apiVersion").unwrap_or_default();
    let kind = str_at(&value, "/kind").unwrap_or_default();
    let name = str_at(&value, "/metadata/name").unwrap_or_default();
    let namespace = str_at(&value, "/metadata/namespace").filter(|n| !n.is_empty());
    let display = format!(
        "{kind} {}{name}",
        namespace
            .as_deref()
            .map(|n| format!("{n}/"))
            .unwrap_or_default()
    );
    if api_version.is_empty() || kind.is_empty() || name.is_empty() {
        return Err(ApplyError::BadObject {
            object: display,
            message: "apiVersion, kind and metadata.name are required".into(),
        });
    }
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), api_version.clone()),
    };
    let bad = |message: &str| ApplyError::BadObject {
        object: display.clone(),
        message: message.to_string(),
    };
    let metadata = value
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| bad("metadata must be a mapping"))?;
    let labels = metadata
        .entry("labels")
        .or_insert_with(|| Value::Object(Map::new()));
    if labels.is_null() {
        *labels = Value::Object(Map::new());
    }
    let labels = labels
        .as_object_mut()
        .ok_or_else(|| bad("metadata.labels must be a mapping"))?;
    labels.insert(LABEL_NAME.into(), Value::String(owner.name.clone()));
    labels.insert(
        LABEL_NAMESPACE.into(),
        Value::String(owner.namespace.clone()),
    );
    Ok(Manifest {
        gvk: GroupVersionKind::gvk(&group, &version, &kind),
        name,
        namespace,
        value,
        display,
    })
}

/// Namespace defaulting (namespaced) or removal (cluster-scoped), then the identity.
fn finish(
    mut m: Manifest,
    resource: Resolved,
    options: &ApplyOptions,
) -> Result<AppliedObject, ApplyError> {
    let namespace = if resource.namespaced {
        let ns = m
            .namespace
            .clone()
            .or_else(|| options.target_namespace.clone())
            .ok_or_else(|| ApplyError::BadObject {
                object: m.display.clone(),
                message: "namespaced object without metadata.namespace, and no target \
                          namespace is set (--namespace / spec.targetNamespace)"
                    .into(),
            })?;
        if let Some(meta) = m.value.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("namespace".into(), Value::String(ns.clone()));
        }
        Some(ns)
    } else {
        if let Some(meta) = m.value.get_mut("metadata").and_then(Value::as_object_mut) {
            if meta.remove("namespace").is_some() {
                tracing::warn!(object = %m.display, "cluster-scoped object names a namespace; ignoring it");
            }
        }
        None
    };
    let id = ObjectRef {
        group: m.gvk.group,
        version: m.gvk.version,
        kind: m.gvk.kind,
        namespace,
        name: m.name,
    };
    AppliedObject::new(id, resource, &m.value)
}

/// `namespace/name` of the other owner whose tresor labels `live` carries, if any.
fn claimant(live: &Value, owner: &Owner) -> Option<String> {
    let labels = live.pointer("/metadata/labels")?;
    let label = |k: &str| labels.get(k).and_then(Value::as_str);
    let name = label(LABEL_NAME)?;
    let namespace = label(LABEL_NAMESPACE).unwrap_or("");
    (name != owner.name || namespace != owner.namespace).then(|| format!("{namespace}/{name}"))
}

/// Whether `live` carries `owner`'s labels.
pub(super) fn owned_by(live: &Value, owner: &Owner) -> bool {
    let labels = live.pointer("/metadata/labels");
    let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
    label(LABEL_NAME) == Some(owner.name.as_str())
        && label(LABEL_NAMESPACE) == Some(owner.namespace.as_str())
}

/// The first path where `desired` is not contained in `live` (every field of `desired`
/// present with an equal value; lists element-wise with equal length; extra fields in
/// `live` — server defaults, other managers' fields — are fine).
pub fn first_difference(desired: &Value, live: &Value, path: &str) -> Option<String> {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d
            .iter()
            .find_map(|(k, dv)| member_difference(k, dv, l, path)),
        (Value::Array(d), Value::Array(l)) => {
            if d.len() != l.len() {
                return Some(path.to_string());
            }
            d.iter()
                .zip(l)
                .enumerate()
                .find_map(|(i, (dv, lv))| first_difference(dv, lv, &format!("{path}[{i}]")))
        }
        (Value::Number(d), Value::Number(l)) if d.as_f64() == l.as_f64() => None,
        (d, l) if d == l => None,
        _ => Some(if path.is_empty() {
            ".".into()
        } else {
            path.to_string()
        }),
    }
}

/// Where member `key` of an object at `path`, desired as `desired`, differs in `live`.
fn member_difference(
    key: &str,
    desired: &Value,
    live: &serde_json::Map<String, Value>,
    path: &str,
) -> Option<String> {
    let here = format!("{path}.{key}");
    match live.get(key) {
        None if desired.is_null() => None,
        None => Some(here),
        Some(lv) => first_difference(desired, lv, &here),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn containment_ignores_server_additions_and_finds_changes() {
        let desired = json!({"spec": {"replicas": 2, "template": {"c": [{"image": "a"}]}}});
        let live = json!({"spec": {"replicas": 2, "paused": false,
            "template": {"c": [{"image": "a", "imagePullPolicy": "IfNotPresent"}]}}, "status": {}});
        assert_eq!(first_difference(&desired, &live, ""), None);
        let changed = json!({"spec": {"replicas": 5, "template": {"c": [{"image": "a"}]}}});
        assert_eq!(
            first_difference(&desired, &changed, "").as_deref(),
            Some(".spec.replicas")
        );
        let fewer = json!({"spec": {"replicas": 2, "template": {"c": []}}});
        assert_eq!(
            first_difference(&desired, &fewer, "").as_deref(),
            Some(".spec.template.c")
        );
    }

    #[test]
    fn order_puts_namespaces_and_crds_first() {
        assert!(rank("", "Namespace") < rank(CRD_GROUP, "CustomResourceDefinition"));
        assert!(rank(CRD_GROUP, "CustomResourceDefinition") < rank("", "ServiceAccount"));
        assert!(rank("", "Service") < rank("apps", "Deployment"));
    }

    #[test]
    fn manifests_get_owner_labels() {
        let owner = Owner {
            name: "app".into(),
            namespace: "flux".into(),
        };
        let m = manifest(
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": null}}),
            &owner,
        )
        .unwrap();
        assert_eq!(m.gvk.group, "apps");
        assert!(owned_by(&m.value, &owner));
        assert!(manifest(json!({"kind": "X"}), &owner).is_err());
    }
    /// Regression (first run against a real API server): list responses leave apiVersion
    /// and kind out of every item, so a watch cache's objects lack them; that is no drift.
    #[test]
    fn live_object_without_api_version_and_kind_has_not_drifted() {
        let object = AppliedObject::new(
            ObjectRef {
                group: String::new(),
                version: "v1".into(),
                kind: "ConfigMap".into(),
                namespace: Some("ns".into()),
                name: "a".into(),
            },
            Resolved {
                resource: kube::api::ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(
                    &(),
                )
                .into(),
                namespaced: true,
            },
            &json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "a", "namespace": "ns"}, "data": {"k": "one"}}),
        )
        .unwrap();
        let listed = json!({"metadata": {"name": "a", "namespace": "ns", "uid": "u"},
            "data": {"k": "one"}});
        assert_eq!(difference(&object, Some(&listed)), None);
        let changed = json!({"metadata": {"name": "a", "namespace": "ns"}, "data": {"k": "two"}});
        assert_eq!(
            difference(&object, Some(&changed)).as_deref(),
            Some(".data.k")
        );
        assert_eq!(difference(&object, None).as_deref(), Some("deleted"));
        // A rendered CRD's empty status is not drift against the filled-in live one.
        let crd = json!({"metadata": {"name": "a"}, "status": {"conditions": []}});
        let live =
            json!({"metadata": {"name": "a"}, "status": {"conditions": [{"type": "Established"}]}});
        assert_eq!(live_difference(&crd, &live), None);
    }

    /// `--no-cross-namespace`: namespaced objects elsewhere (named, through the target
    /// namespace, or of a kind only the artifact's CRD defines) are refused; cluster-scoped
    /// ones, even naming a namespace, are left to the server.
    #[tokio::test]
    async fn confinement_refuses_namespaced_objects_elsewhere_only() {
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let cluster = Cluster::new(
            Client::try_from(config).unwrap(),
            Arc::new(crate::kube::StaticResolver::builtin()),
            None,
        );
        let owner = Owner {
            name: "app".into(),
            namespace: "team".into(),
        };
        let mut options = ApplyOptions::new(owner.clone());
        options.target_namespace = Some("team".into());
        options.confine_to = Some("team".into());
        let check = |objects: Vec<Value>, options: ApplyOptions| {
            let cluster = cluster.clone();
            let owner = owner.clone();
            async move {
                let manifests: Vec<Manifest> = objects
                    .into_iter()
                    .map(|v| manifest(v, &owner).unwrap())
                    .collect();
                cluster.check_confined(&manifests, &options).await
            }
        };
        let cm = |ns: Option<&str>| {
            let mut v = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
            if let Some(ns) = ns {
                v["metadata"]["namespace"] = json!(ns);
            }
            v
        };
        let namespace = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "other", "namespace": "other"}});
        assert!(
            check(vec![cm(None), cm(Some("team")), namespace], options.clone())
                .await
                .is_ok()
        );
        let e = check(vec![cm(None), cm(Some("other"))], options.clone())
            .await
            .unwrap_err();
        assert_eq!(e.reason(), "CrossNamespace");
        assert!(e.to_string().contains("ConfigMap other/c"), "{e}");
        let mut elsewhere = options.clone();
        elsewhere.target_namespace = Some("other".into());
        assert!(check(vec![cm(None)], elsewhere).await.is_err());
        // A kind of the artifact's own CRD: its scope decides.
        let crd = |scope: &str| {
            json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                "metadata": {"name": "widgets.example.com"},
                "spec": {"group": "example.com", "scope": scope, "names": {"kind": "Widget"}}})
        };
        let widget = json!({"apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": "w", "namespace": "other"}});
        assert!(
            check(vec![crd("Namespaced"), widget.clone()], options.clone())
                .await
                .is_err()
        );
        assert!(check(vec![crd("Cluster"), widget.clone()], options.clone())
            .await
            .is_ok());
        assert!(check(vec![widget.clone()], options.clone()).await.is_err());
        options.confine_to = None;
        assert!(check(vec![widget, cm(Some("other"))], options)
            .await
            .is_ok());
    }

    #[test]
    fn claimant_names_another_owner_only() {
        let owner = Owner {
            name: "app".into(),
            namespace: "ns".into(),
        };
        let labelled = |name: &str, namespace: &str| json!({"metadata": {"labels": {LABEL_NAME: name, LABEL_NAMESPACE: namespace}}});
        assert_eq!(claimant(&labelled("app", "ns"), &owner), None);
        assert_eq!(claimant(&json!({"metadata": {}}), &owner), None);
        assert_eq!(
            claimant(&labelled("other", "ns"), &owner).as_deref(),
            Some("ns/other")
        );
        assert_eq!(
            claimant(&labelled("app", "elsewhere"), &owner).as_deref(),
            Some("elsewhere/app")
        );
    }
}
