//! Why a reconcile of an `ArtifactSync` could not run the engine (or record its result).

use crate::api::ApiError;
use crate::kube::ApplyError;

/// A failure of the puller around the engine: the spec, trust material, Secrets, the
/// Kubernetes API. Failures inside a cycle are the engine's (`Summary::error`).
#[derive(Debug, thiserror::Error)]
pub enum PullerError {
    /// The spec is invalid or its trust requirements cannot be met (see [`ApiError`]).
    #[error(transparent)]
    Api(#[from] ApiError),
    /// A Secret the spec names (public key, pull secret, CA, trusted root) has the wrong
    /// type, lacks the key, or holds something unusable.
    #[error("Secret {namespace}/{name}: {message}")]
    Secret {
        /// Namespace of the Secret.
        namespace: String,
        /// Name of the Secret.
        name: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// A Secret the spec names does not exist.
    #[error("Secret {namespace}/{name} (named by {field}) does not exist; create it")]
    SecretMissing {
        /// Namespace of the Secret.
        namespace: String,
        /// Name of the Secret.
        name: String,
        /// The spec field naming it, e.g. `spec.pullSecretRef`.
        field: String,
    },
    /// A call to the Kubernetes API failed or timed out.
    #[error("kubernetes API: {what}: {message}")]
    Kube {
        /// What was asked, e.g. `list TrustPolicies`.
        what: String,
        /// The error.
        message: String,
    },
    /// This replica lost the leader-election Lease and must stop reconciling.
    #[error("lost the leader lease {lease}: {message}")]
    LeaseLost {
        /// Name of the Lease.
        lease: String,
        /// Why.
        message: String,
    },
    /// Building the apply step failed (client, inventory).
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// `spec.targetNamespace` names another namespace than the sync's own, and the puller
    /// confines syncs to their namespace (`--no-cross-namespace`).
    #[error(
        "{object}: spec.targetNamespace {namespace:?} is another namespace; this puller applies \
         a sync only into its own namespace (--no-cross-namespace): remove targetNamespace, or \
         create the ArtifactSync in {namespace:?}. Nothing was applied"
    )]
    CrossNamespace {
        /// The ArtifactSync (`namespace/name`).
        object: String,
        /// The namespace it names.
        namespace: String,
    },
    /// The puller may not keep the inventory ConfigMap in the sync's namespace: the
    /// namespace was not onboarded (no RoleBinding to `tresor-puller-tenant` there).
    #[error(
        "{source}; the puller may not keep its inventory in namespace {namespace}: a cluster \
         admin onboards the namespace by binding ClusterRole tresor-puller-tenant there \
         (docs/puller.md \"Adding a tenant\")"
    )]
    NotOnboarded {
        /// The sync's namespace.
        namespace: String,
        /// The refusal.
        source: Box<ApplyError>,
    },
    /// The registry, cache or source could not be set up.
    #[error("{message}")]
    Setup {
        /// Stable reason of the underlying error.
        reason: &'static str,
        /// The message.
        message: String,
    },
}

impl PullerError {
    /// Stable CamelCase reason for conditions, events, metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Api(e) => e.reason(),
            Self::Secret { .. } => "SecretInvalid",
            Self::SecretMissing { .. } => "SecretNotFound",
            Self::Kube { .. } => "KubeApiError",
            Self::Apply(e) => e.reason(),
            Self::LeaseLost { .. } => "LeaseLost",
            Self::CrossNamespace { .. } => "CrossNamespace",
            Self::NotOnboarded { source, .. } => source.reason(),
            Self::Setup { reason, .. } => reason,
        }
    }

    /// True when retrying may help without a change to the spec (API or Secret trouble).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Kube { .. }
            | Self::Secret { .. }
            | Self::SecretMissing { .. }
            | Self::Apply(_)
            | Self::NotOnboarded { .. } => true,
            Self::Api(_)
            | Self::Setup { .. }
            | Self::LeaseLost { .. }
            | Self::CrossNamespace { .. } => false,
        }
    }
}
