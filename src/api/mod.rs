//! The Kubernetes API of tresor: the `tresor.dev/v1alpha1` custom resources.
//!
//! - [`ArtifactSync`] (namespaced): which artifact to pull, how to verify it and how to apply
//!   it; its status carries kstatus conditions, digests, signer, inventory and history.
//! - [`TrustPolicy`] (cluster-scoped): who must have signed artifacts from which repositories
//!   in which namespaces. An `ArtifactSync` can add requirements but never weaken a policy
//!   that covers it: see [`effective_requirements`].
//! - `notification`: where a sync's events go (`spec.notify`) and the last one
//!   (`status.notification`).
//! - [`conditions`]: pure helpers turning an engine outcome into kstatus conditions.
//! - `decode`: one object at a time from raw JSON, so that one object the puller cannot
//!   read stops only itself ([`ArtifactSync::decode`], [`TrustPolicy::decode`]).
//! - [`crdgen`]: the CRD YAML and JSON schemas under `schemas/` and `deploy/crds/`.
//!
//! The types are plain data with `validate()` methods; nothing here talks to a cluster.

mod artifact_sync;
pub mod conditions;
pub mod crdgen;
mod decode;
mod notification;
pub mod reference;
mod trust;
mod trust_policy;

pub use artifact_sync::{
    is_dns_label, ArtifactSync, ArtifactSyncSpec, ArtifactSyncStatus, Decryption,
    DecryptionProvider, HistoryEntry, InventoryEntry, LocalObjectRef, Promotion, SourceRef, Verify,
    HISTORY_LIMIT, MAX_NAME_LENGTH,
};
pub use conditions::{Condition, ConditionStatus};
pub use decode::{check_unreadable_policies, UnreadablePolicy};
pub use notification::{Notification, NotifyProvider, NotifyTarget};
pub use trust::{
    effective_requirements, Authority, Constraint, KeyAuthority, KeylessAuthority, Require,
    Requirements, SecretKeyRef,
};
pub use trust_policy::{
    LabelSelector, NamespaceSelector, SelectorRequirement, TrustPolicy, TrustPolicySpec,
};

/// API group of tresor's custom resources.
pub const GROUP: &str = "tresor.dev";
/// API version of tresor's custom resources.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of tresor's custom resources.
pub const API_VERSION: &str = "tresor.dev/v1alpha1";

/// A custom resource that is invalid, or trust requirements that cannot be satisfied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// A field of a spec is invalid (the API server's schema cannot catch everything).
    #[error("{object}: {field}: {message}")]
    InvalidSpec {
        /// `Kind namespace/name` of the object.
        object: String,
        /// The field path, e.g. `spec.ref`.
        field: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// `spec.url` reaches a registry under another spelling than its canonical one (host
    /// case, a default port, another name of Docker Hub). Refused rather than rewritten, so
    /// what TrustPolicies match is what the object says.
    #[error(
        "{object}: spec.url {url:?} is not in canonical form; write {canonical:?} \
         (TrustPolicy repositories match the canonical spelling: lower-case host, no default \
         port, docker.io for Docker Hub)"
    )]
    NonCanonicalReference {
        /// `Kind namespace/name` of the ArtifactSync.
        object: String,
        /// The URL as written.
        url: String,
        /// The same repository spelled canonically.
        canonical: String,
    },
    /// `spec.verify.trustPolicy` names a TrustPolicy that does not exist.
    #[error("{object}: TrustPolicy {name:?} not found; create it or fix spec.verify.trustPolicy")]
    TrustPolicyNotFound {
        /// `Kind namespace/name` of the ArtifactSync.
        object: String,
        /// The policy name.
        name: String,
    },
    /// The ArtifactSync tries to weaken a TrustPolicy that covers it.
    #[error("{object}: {message} (TrustPolicy {policy:?} covers this ArtifactSync and cannot be weakened)")]
    WeakensTrustPolicy {
        /// `Kind namespace/name` of the ArtifactSync.
        object: String,
        /// The covering policy.
        policy: String,
        /// What the ArtifactSync asked for.
        message: String,
    },
    /// No TrustPolicy covers the ArtifactSync and it names no authorities.
    #[error(
        "{object}: nothing says who must have signed the artifact; add spec.verify (authorities \
         or trustPolicy), a TrustPolicy covering this namespace and repository, or set \
         spec.verify.allowUnsigned: true to opt out explicitly"
    )]
    NoTrustRequirements {
        /// `Kind namespace/name` of the ArtifactSync.
        object: String,
    },
    /// A TrustPolicy the puller cannot read might cover the ArtifactSync (or the sync names
    /// it): nothing is applied until the policy is fixed, so that trust never silently
    /// weakens.
    #[error(
        "{object}: TrustPolicy {policy:?} cannot be read ({field}: {message}) and may cover \
         this ArtifactSync; nothing is applied until a cluster admin fixes or deletes that policy"
    )]
    TrustPolicyUnreadable {
        /// `Kind namespace/name` of the ArtifactSync.
        object: String,
        /// The unreadable policy.
        policy: String,
        /// The field that could not be read.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The CRDs could not be rendered (a bug in the types).
    #[error("could not render the CRDs: {message}")]
    Render {
        /// The serializer's message.
        message: String,
    },
}

impl ApiError {
    /// Stable CamelCase reason for conditions, events, metrics and `--format json`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidSpec { .. } => "InvalidSpec",
            Self::NonCanonicalReference { .. } => "NonCanonicalReference",
            Self::TrustPolicyNotFound { .. } => "TrustPolicyNotFound",
            Self::WeakensTrustPolicy { .. } => "WeakensTrustPolicy",
            Self::NoTrustRequirements { .. } => "NoTrustRequirements",
            Self::TrustPolicyUnreadable { .. } => "TrustPolicyUnreadable",
            Self::Render { .. } => "RenderFailed",
        }
    }
}
