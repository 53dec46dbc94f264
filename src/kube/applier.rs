//! [`KubeApplier`]: the engine's apply/prune/health/drift steps against a cluster.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::apply::rank_of;
use super::{
    AppliedObject, ApplyError, ApplyOptions, ApplyReport, Cluster, Inventory, InventoryStore,
    LiveObjects, ObjectRef, PruneReport,
};
use crate::artifact::archive::Limits;
use crate::artifact::objects::{self, ContentMode};
use crate::digest::Digest;
use crate::reconcile::target::{stage_in, Decrypted, Staged};
use crate::reconcile::{Applier, StepError};
use crate::secrets::Decryption;
use zeroize::Zeroize as _;

/// What the drift check found.
#[derive(Debug, Clone)]
pub enum KubeDrift {
    /// The applied objects are not known in this process (e.g. after a restart, or a
    /// one-shot `tresor apply` of an unchanged digest): read them from the artifact and
    /// compare then.
    Unknown,
    /// These objects differ from what was applied, with the first differing path.
    Objects(Vec<(AppliedObject, String)>),
}

/// The last version that passed the health check, kept for rollback.
#[derive(Debug, Clone)]
struct Healthy {
    digest: Digest,
    objects: Arc<[AppliedObject]>,
}

/// Applies artifacts to a cluster: the Kubernetes [`Applier`] for the reconcile engine,
/// usable on its own too ([`KubeApplier::apply_objects`], [`KubeApplier::correct_drift`]).
///
/// State: the applied digest and inventory (loaded from the [`InventoryStore`] when there
/// is one, or given by the puller from its status with [`KubeApplier::with_state`]), the
/// applied objects (for drift checks) and the last healthy version (for rollback).
pub struct KubeApplier {
    cluster: Cluster,
    options: ApplyOptions,
    store: Option<InventoryStore>,
    staging: PathBuf,
    current: Option<Digest>,
    inventory: Vec<ObjectRef>,
    pending_prune: Vec<ObjectRef>,
    desired: Option<Arc<[AppliedObject]>>,
    healthy_digest: Option<Digest>,
    healthy: Option<Healthy>,
    last: Option<ApplyReport>,
    last_prune: Option<PruneReport>,
    seen: Option<Arc<dyn LiveObjects>>,
}

impl KubeApplier {
    /// An applier with no recorded state; staged trees go under `staging`.
    pub fn new(cluster: Cluster, options: ApplyOptions, staging: &Path) -> Self {
        Self {
            cluster,
            options,
            store: None,
            staging: staging.to_path_buf(),
            current: None,
            inventory: Vec::new(),
            pending_prune: Vec::new(),
            desired: None,
            healthy_digest: None,
            healthy: None,
            last: None,
            last_prune: None,
            seen: None,
        }
    }

    /// An applier that records its inventory in `store` and starts from what is stored
    /// there (so a second `tresor apply` prunes what the first one applied).
    pub async fn open(
        cluster: Cluster,
        options: ApplyOptions,
        staging: &Path,
        store: InventoryStore,
    ) -> Result<Self, ApplyError> {
        let loaded = store.load(options.api_timeout).await?;
        let mut me = Self::new(cluster, options, staging);
        if let Some(inventory) = loaded {
            me.current = inventory.digest.as_deref().and_then(|d| d.parse().ok());
            me.healthy_digest = inventory.healthy.as_deref().and_then(|d| d.parse().ok());
            me.inventory = inventory.objects;
        }
        me.store = Some(store);
        Ok(me)
    }

    /// Starts from a known applied digest and inventory (the puller's status).
    pub fn with_state(mut self, digest: Option<Digest>, inventory: Vec<ObjectRef>) -> Self {
        self.current = digest;
        self.inventory = inventory;
        self
    }

    /// Takes the live state for drift checks from `seen` (the puller's watch caches) where
    /// it is known; `None` makes every drift check GET every applied object (the backstop).
    pub fn set_seen(&mut self, seen: Option<Arc<dyn LiveObjects>>) {
        self.seen = seen;
    }

    /// The objects as applied (with owner labels), when known in this process: what drift
    /// checks compare the live objects with.
    pub fn desired(&self) -> Option<&[AppliedObject]> {
        self.desired.as_deref()
    }

    /// The options.
    pub fn options(&self) -> &ApplyOptions {
        &self.options
    }

    /// The cluster.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The applied digest.
    pub fn current(&self) -> Option<&Digest> {
        self.current.as_ref()
    }

    /// The inventory of the applied digest (sorted).
    pub fn inventory(&self) -> &[ObjectRef] {
        &self.inventory
    }

    /// The report of the last apply (also of a dry run).
    pub fn last_report(&self) -> Option<&ApplyReport> {
        self.last.as_ref()
    }

    /// The report of the last prune (also of a dry run).
    pub fn last_prune(&self) -> Option<&PruneReport> {
        self.last_prune.as_ref()
    }

    /// Applies `manifests` as the content of `digest` (staged; see [`crate::kube`]) and
    /// records the new inventory. Returns the previous digest, whose objects
    /// [`Applier::prune`] then removes. In a dry run nothing is recorded and the prune is
    /// computed at once (see [`KubeApplier::last_prune`]).
    pub async fn apply_objects(
        &mut self,
        digest: &Digest,
        manifests: Vec<Value>,
    ) -> Result<Option<Digest>, ApplyError> {
        let report = self
            .cluster
            .apply(manifests, &self.inventory, &self.options)
            .await?;
        if self.options.dry_run {
            if self.options.prune {
                let pruned = self
                    .cluster
                    .prune(&self.inventory, &report.inventory, &self.options)
                    .await?;
                self.last_prune = Some(pruned);
            }
            self.last = Some(report);
            return Ok(None);
        }
        tracing::info!(%digest, objects = report.inventory.len(), "applied to the cluster");
        let previous = self.current.replace(digest.clone());
        self.pending_prune = if self.options.prune {
            std::mem::take(&mut self.inventory)
        } else {
            Vec::new()
        };
        self.inventory = report.inventory.clone();
        self.desired = Some(report.objects.clone());
        self.last = Some(report);
        self.save().await?;
        Ok(previous.or_else(|| {
            // An inventory without a digest still has objects to prune.
            (!self.pending_prune.is_empty()).then(|| digest.clone())
        }))
    }

    /// Re-applies applied objects whose live state drifted (the hook for watch events on
    /// owned objects); returns what was restored. Does nothing when the applied objects
    /// are not known in this process (the next engine cycle reads them from the cache).
    pub async fn correct_drift(&mut self) -> Result<Vec<ObjectRef>, ApplyError> {
        let Some(desired) = &self.desired else {
            return Ok(Vec::new());
        };
        let drifted = self
            .cluster
            .drifted_seen(desired, &self.options, self.seen.as_deref())
            .await?;
        self.reapply(drifted).await
    }

    async fn reapply(
        &mut self,
        mut drifted: Vec<(AppliedObject, String)>,
    ) -> Result<Vec<ObjectRef>, ApplyError> {
        drifted.sort_by_key(|(o, _)| rank_of(&o.id));
        let mut restored = Vec::new();
        for (object, path) in drifted {
            tracing::info!(object = %object.id, path, "drift: re-applying");
            self.cluster
                .patch(
                    &object,
                    self.options.force_drift || self.options.force,
                    self.options.dry_run,
                    self.options.api_timeout,
                )
                .await?;
            restored.push(object.id);
        }
        Ok(restored)
    }

    async fn save(&self) -> Result<(), ApplyError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        if self.options.dry_run {
            return Ok(());
        }
        let mut objects = self.inventory.clone();
        for p in &self.pending_prune {
            if !objects.iter().any(|o| o.same_object(p)) {
                objects.push(p.clone());
            }
        }
        objects.sort();
        let inventory = Inventory {
            digest: self.current.as_ref().map(ToString::to_string),
            healthy: self.healthy_digest.as_ref().map(ToString::to_string),
            objects,
        };
        store.save(&inventory, self.options.api_timeout).await
    }

    async fn rollback(&mut self, to: Healthy, why: ApplyError) -> ApplyError {
        tracing::warn!(digest = %to.digest, error = %why, "health failed: rolling back");
        let manifests = match to.objects.iter().map(AppliedObject::value).collect() {
            Ok(m) => m,
            Err(e) => return e,
        };
        let report = match self
            .cluster
            .apply(manifests, &self.inventory, &self.options)
            .await
        {
            Ok(r) => r,
            Err(e) => return e,
        };
        if self.options.prune {
            if let Err(e) = self
                .cluster
                .prune(&self.inventory, &report.inventory, &self.options)
                .await
            {
                return e;
            }
        }
        self.current = Some(to.digest.clone());
        self.inventory = report.inventory.clone();
        self.desired = Some(report.objects.clone());
        self.last = Some(report);
        self.healthy = Some(to.clone());
        if let Err(e) = self.save().await {
            return e;
        }
        ApplyError::RolledBack {
            digest: to.digest.to_string(),
            source: Box::new(why),
        }
    }
}

/// Reads the staged tree's manifests as JSON: all of it, or only the directory `path`.
/// SOPS files are read from `decrypted` (memory), never from the encrypted copy on disk.
fn load_manifests(
    dir: &Path,
    path: Option<&Path>,
    decrypted: &Decrypted,
) -> Result<Vec<Value>, ApplyError> {
    let dir = match path {
        None => dir.to_path_buf(),
        Some(sub) => {
            let full = dir.join(sub);
            // The extracted tree has no links (see `artifact::archive`), so this is the
            // directory itself.
            if !std::fs::symlink_metadata(&full).is_ok_and(|m| m.is_dir()) {
                return Err(ApplyError::PathNotFound {
                    path: sub.display().to_string(),
                    found: top_level_directories(dir),
                });
            }
            full
        }
    };
    let prefix = path
        .map(|p| format!("{}/", p.display()))
        .unwrap_or_default();
    let mut files = objects::read_dir_files(&dir, ContentMode::Kubernetes)?;
    for (rel, bytes) in &mut files {
        if let Some(plain) = decrypted.get(&format!("{prefix}{rel}")) {
            // The plaintext copy lives only as long as this parse.
            bytes.zeroize();
            *bytes = plain.to_vec();
        }
    }
    let parsed = objects::parse_tree(&files, ContentMode::Kubernetes);
    for (_, bytes) in &mut files {
        bytes.zeroize();
    }
    parsed?
        .into_iter()
        .map(|o| {
            serde_json::to_value(&o.value).map_err(|e| ApplyError::BadObject {
                object: format!("{} ({})", o.key, o.place()),
                message: format!("cannot be sent as JSON: {e}"),
            })
        })
        .collect()
}

/// `top-level directories: a, b` of `dir` (sorted, at most 10), for [`ApplyError::PathNotFound`].
fn top_level_directories(dir: &Path) -> String {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let more = if names.len() > 10 { ", …" } else { "" };
    names.truncate(10);
    if names.is_empty() {
        "the artifact has no directories".into()
    } else {
        format!("top-level directories: {}{more}", names.join(", "))
    }
}

impl Applier for KubeApplier {
    type Drift = KubeDrift;

    /// The manifests (`.yaml`, `.yml`, `.json`) under `--path` / `spec.path`: an encrypted
    /// file the cluster never sees is neither decrypted nor a reason to refuse.
    fn uses(&self, path: &str) -> bool {
        let manifest = [".yaml", ".yml", ".json"]
            .iter()
            .any(|ext| path.to_ascii_lowercase().ends_with(ext));
        let under = match &self.options.path {
            Some(dir) if !dir.as_os_str().is_empty() => {
                path.starts_with(&format!("{}/", dir.display()))
            }
            _ => true,
        };
        manifest && under
    }

    fn current(&self) -> Option<&Digest> {
        self.current.as_ref()
    }

    fn stage(
        &self,
        digest: &Digest,
        layer: File,
        size: u64,
        limits: &Limits,
    ) -> Result<Staged, StepError> {
        stage_in(&self.staging, digest, layer, size, limits)
    }

    async fn apply(&mut self, staged: Staged) -> Result<(Option<Digest>, Vec<String>), StepError> {
        let manifests = load_manifests(
            staged.path(),
            self.options.path.as_deref(),
            staged.decrypted(),
        )?;
        let digest = staged.digest().clone();
        let previous = self.apply_objects(&digest, manifests).await?;
        let warnings = match (&self.last_prune, self.options.dry_run) {
            (Some(p), true) => p
                .deleted
                .iter()
                .map(|o| format!("dry run: would prune {o}"))
                .collect(),
            _ => Vec::new(),
        };
        Ok((previous, warnings))
    }

    async fn prune(&mut self, _previous: &Digest) -> Result<Vec<String>, StepError> {
        if self.pending_prune.is_empty() {
            return Ok(Vec::new());
        }
        let report = self
            .cluster
            .prune(&self.pending_prune, &self.inventory, &self.options)
            .await?;
        self.pending_prune.clear();
        self.save().await?;
        let warnings = report
            .skipped
            .iter()
            .filter(|(_, why)| why != "already gone")
            .map(|(o, why)| format!("not pruned {o}: {why}"))
            .collect();
        self.last_prune = Some(report);
        Ok(warnings)
    }

    fn checks_health(&self) -> bool {
        self.options.wait && !self.options.dry_run
    }

    async fn health(&mut self) -> Result<Vec<String>, StepError> {
        let (Some(current), Some(objects)) = (self.current.clone(), self.desired.clone()) else {
            return Ok(Vec::new());
        };
        match self.cluster.wait_healthy(&objects, &self.options).await {
            Ok(()) => {
                self.healthy = Some(Healthy {
                    digest: current.clone(),
                    objects,
                });
                self.healthy_digest = Some(current);
                self.save().await?;
                Ok(Vec::new())
            }
            Err(e) => match self.healthy.clone() {
                Some(to) if self.options.rollback && to.digest != current => {
                    Err(self.rollback(to, e).await.into())
                }
                _ => Err(e.into()),
            },
        }
    }

    async fn check_drift(&mut self) -> Result<Option<KubeDrift>, StepError> {
        if self.current.is_none() {
            return Ok(None);
        }
        let Some(desired) = &self.desired else {
            return Ok(Some(KubeDrift::Unknown));
        };
        let drifted = self
            .cluster
            .drifted_seen(desired, &self.options, self.seen.as_deref())
            .await?;
        Ok((!drifted.is_empty()).then_some(KubeDrift::Objects(drifted)))
    }

    async fn repair(
        &mut self,
        drift: KubeDrift,
        layer: File,
        size: u64,
        limits: &Limits,
        decryption: &Decryption,
    ) -> Result<(Vec<String>, Vec<String>), StepError> {
        let drifted = match drift {
            KubeDrift::Objects(list) => list,
            KubeDrift::Unknown => {
                let Some(current) = self.current.clone() else {
                    return Ok((Vec::new(), Vec::new()));
                };
                let mut staged = stage_in(&self.staging, &current, layer, size, limits)?;
                staged.decrypt(decryption, |path| self.uses(path))?;
                let manifests = load_manifests(
                    staged.path(),
                    self.options.path.as_deref(),
                    staged.decrypted(),
                )?;
                let objects = self.cluster.prepare(manifests, &self.options).await?;
                let drifted = self.cluster.drifted(&objects, &self.options).await?;
                self.desired = Some(objects.into());
                drifted
            }
        };
        let restored = self.reapply(drifted).await?;
        Ok((
            restored.iter().map(ToString::to_string).collect(),
            Vec::new(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_manifests_reads_only_the_subdirectory_or_says_what_exists() {
        let dir = tempfile::tempdir().unwrap();
        for (sub, name) in [("base", "a"), ("prod", "b")] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
            std::fs::write(
                dir.path().join(sub).join("cm.yaml"),
                format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n"),
            )
            .unwrap();
        }
        let all = load_manifests(dir.path(), None, &Decrypted::default()).unwrap();
        assert_eq!(all.len(), 2);
        let prod =
            load_manifests(dir.path(), Some(Path::new("prod")), &Decrypted::default()).unwrap();
        assert_eq!(prod.len(), 1);
        assert_eq!(prod[0]["metadata"]["name"], "b");
        let err = load_manifests(
            dir.path(),
            Some(Path::new("base/cm.yaml")),
            &Decrypted::default(),
        )
        .unwrap_err();
        assert_eq!(err.reason(), "PathNotFound");
        assert!(
            err.to_string()
                .contains("top-level directories: base, prod"),
            "{err}"
        );
    }
}
