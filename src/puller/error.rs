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
    /// A field the puller does not implement yet is set.
    #[error("{object}: {field} is not supported by this puller yet; remove it")]
    Unsupported {
        /// `ArtifactSync namespace/name`.
        object: String,
        /// The field path.
        field: String,
    },
    /// A Secret holding a public key is missing, lacks the key, or is not a PEM public key.
    #[error("Secret {namespace}/{name}: {message}")]
    Secret {
        /// Namespace of the Secret.
        namespace: String,
        /// Name of the Secret.
        name: String,
        /// What is wrong and what to do.
        message: String,
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
            Self::Unsupported { .. } => "Unsupported",
            Self::Secret { .. } => "SecretInvalid",
            Self::Kube { .. } => "KubeApiError",
            Self::Apply(e) => e.reason(),
            Self::LeaseLost { .. } => "LeaseLost",
            Self::Setup { reason, .. } => reason,
        }
    }

    /// True when retrying may help without a change to the spec (API or Secret trouble).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Kube { .. } | Self::Secret { .. } | Self::Apply(_) => true,
            Self::Api(_)
            | Self::Unsupported { .. }
            | Self::Setup { .. }
            | Self::LeaseLost { .. } => false,
        }
    }
}
