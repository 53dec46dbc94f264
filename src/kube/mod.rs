//! The Kubernetes apply step: staged server-side apply, prune, health and drift, shared by
//! the in-cluster puller and `tresor apply`.
//!
//! # What one apply does
//!
//! 1. **Prepare** — every manifest gets tresor's owner labels ([`LABEL_NAME`],
//!    [`LABEL_NAMESPACE`]: the owning sync). Kinds are resolved through a
//!    [`ResourceResolver`] (API discovery in production); namespaced objects without a
//!    namespace get the target namespace, cluster-scoped ones lose a namespace they should
//!    not have.
//! 2. **Stage 1** — Namespaces, then CustomResourceDefinitions, applied with server-side
//!    apply (field manager [`FIELD_MANAGER`], `force=false` unless asked, so a field another
//!    manager owns is a [`ApplyError::Conflict`] naming that manager). Then tresor waits
//!    (bounded) until every CRD reports `Established`.
//! 3. **Stage 2** — everything else, ordered by kind (ServiceAccounts and RBAC before
//!    workloads), with bounded concurrency.
//!
//!    Each stage is first sent as a server-side **dry run** (`dryRun=All`): admission,
//!    RBAC, conflicts, immutable fields and missing namespaces are found before anything of
//!    the stage is written. When the real apply still fails, nothing after the failure is
//!    sent and the error ([`ApplyError::Stage`]) lists what was applied.
//! 4. **Prune** — objects of the previous inventory that are not in the new one are
//!    deleted in reverse order (workloads first, CRDs and Namespaces last), each re-read
//!    first and deleted only if it still carries tresor's owner labels of this sync. An
//!    artifact that is suddenly empty is refused ([`ApplyError::PruneGuard`]) unless
//!    `allow_empty`.
//! 5. **Health** — kstatus-like rules ([`health`]) with a timeout; on failure, the last
//!    healthy version can be applied again (`rollback`).
//! 6. **Record** — the inventory (`{group, version, kind, namespace, name}` of every
//!    applied object, [`ObjectRef`]) is returned and, for `tresor apply`, stored in a
//!    ConfigMap ([`InventoryStore`]).
//!
//! # Drift
//!
//! Server-side apply is idempotent: applying the same objects again changes nothing unless
//! something drifted. [`Cluster::drifted`] compares each applied object with the live one
//! (every field tresor sets must have tresor's value; fields others add are fine) and
//! [`KubeApplier::correct_drift`] re-applies only what drifted — that is the hook the
//! puller calls on watch events for owned objects (and every cycle as a backstop, through
//! the engine's drift step). Drift repairs force ownership back (`force_drift`): a field
//! someone changed with `kubectl edit` belongs to them afterwards, and the artifact is the
//! source of truth.
//!
//! # Impersonation
//!
//! With a service account ([`connect`] with `impersonate`), every request carries
//! `Impersonate-User: system:serviceaccount:NS:NAME`, so a tenant's sync can do only what
//! that account may; a refusal is [`ApplyError::Forbidden`] naming the account and verb.

mod applier;
mod apply;
mod client;
mod error;
pub mod health;
mod inventory;
mod resolve;

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use applier::{KubeApplier, KubeDrift};
pub use apply::{
    first_difference, live_difference, AppliedObject, ApplyReport, Cluster, LiveObjects,
    PruneReport,
};
pub use client::{
    client_from_config, connect, impersonating, service_account_user, watch_client_from_config,
    ConnectOptions, WATCH_READ_TIMEOUT,
};
pub use error::ApplyError;
pub use inventory::{Inventory, InventoryStore};
pub use resolve::{DiscoveryResolver, Resolved, ResourceResolver, StaticResolver, BUILTIN_KINDS};

/// The field manager of every server-side apply tresor makes.
pub const FIELD_MANAGER: &str = "tresor";
/// Owner label: the name of the owning sync (ArtifactSync, or `tresor apply --name`).
pub const LABEL_NAME: &str = "tresor.dev/name";
/// Owner label: the namespace of the owning sync.
pub const LABEL_NAMESPACE: &str = "tresor.dev/namespace";

/// One applied object, as recorded in an inventory.
///
/// Displayed as `Kind.group/namespace/name` (no group for the core group, no namespace for
/// cluster-scoped objects). Two refs name the same object when all fields but `version`
/// agree ([`ObjectRef::same_object`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectRef {
    /// API group (empty for the core group).
    pub group: String,
    /// API version.
    pub version: String,
    /// Kind.
    pub kind: String,
    /// Namespace; `None` for cluster-scoped objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

impl ObjectRef {
    /// Whether both name the same object (group, kind, namespace and name; any version).
    pub fn same_object(&self, other: &ObjectRef) -> bool {
        self.identity() == other.identity()
    }

    /// Group, kind, namespace, name: what identifies the object in the cluster.
    pub fn identity(&self) -> (&str, &str, Option<&str>, &str) {
        (
            &self.group,
            &self.kind,
            self.namespace.as_deref(),
            &self.name,
        )
    }

    /// `apiVersion` (`group/version`, or `version` for the core group).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.kind)?;
        if !self.group.is_empty() {
            write!(f, ".{}", self.group)?;
        }
        f.write_str("/")?;
        if let Some(ns) = &self.namespace {
            write!(f, "{ns}/")?;
        }
        f.write_str(&self.name)
    }
}

/// The sync that owns applied objects: written as [`LABEL_NAME`] / [`LABEL_NAMESPACE`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The sync's name.
    pub name: String,
    /// The sync's namespace.
    pub namespace: String,
}

/// How objects are applied, pruned and checked.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Who owns the objects (labels, prune guard).
    pub owner: Owner,
    /// Namespace for namespaced objects that do not name one.
    pub target_namespace: Option<String>,
    /// The only namespace namespaced objects may be applied to (`tresor-puller
    /// --no-cross-namespace`: the sync's own); an artifact with an object elsewhere is
    /// refused before anything is applied ([`ApplyError::CrossNamespace`]). Cluster-scoped
    /// objects are not affected: the API server decides whether the account may write them.
    pub confine_to: Option<String>,
    /// Take fields other field managers own (`force=true`) instead of failing with a
    /// conflict.
    pub force: bool,
    /// Take ownership back when repairing drift (see the module docs).
    pub force_drift: bool,
    /// Server-side dry run: nothing is written, pruned or recorded.
    pub dry_run: bool,
    /// Delete objects that left the artifact.
    pub prune: bool,
    /// Allow an empty artifact to prune everything.
    pub allow_empty: bool,
    /// Wait for health after applying.
    pub wait: bool,
    /// How long to wait for health.
    pub health_timeout: Duration,
    /// How long to wait for CRDs to be established.
    pub crd_timeout: Duration,
    /// Timeout of every API call.
    pub api_timeout: Duration,
    /// How often to poll while waiting (CRDs, health).
    pub poll: Duration,
    /// Requests in flight at once within a stage.
    pub concurrency: usize,
    /// On health failure, apply the last healthy version again.
    pub rollback: bool,
    /// Send each stage as a dry run first, so a refused stage writes nothing.
    pub validate_first: bool,
    /// Apply only this directory of the artifact (relative, normalised by
    /// [`crate::artifact::subdirectory`]); `None`: the whole artifact.
    pub path: Option<std::path::PathBuf>,
}

impl ApplyOptions {
    /// Defaults for `owner`: no force, prune off, no wait, 5m health, 1m CRDs, 30s calls.
    pub fn new(owner: Owner) -> Self {
        Self {
            owner,
            target_namespace: None,
            confine_to: None,
            force: false,
            force_drift: true,
            dry_run: false,
            prune: false,
            allow_empty: false,
            wait: false,
            health_timeout: Duration::from_secs(300),
            crd_timeout: Duration::from_secs(60),
            api_timeout: Duration::from_secs(30),
            poll: Duration::from_secs(1),
            concurrency: 8,
            rollback: false,
            validate_first: true,
            path: None,
        }
    }
}
