//! The reconcile engine: keep a target equal to the artifact a reference points at.
//!
//! One cycle is a fixed sequence of [`Step`]s, each returning an outcome, and exactly one
//! [`Summary`] at the end:
//!
//! 1. **resolve** — tag, semver range or fixed digest → digest. When the tag still points at
//!    the digest that is applied (and cached), this is one HEAD request and the cycle goes
//!    straight to drift correction: no manifest GET, no blob.
//! 2. **verify** — the [`Verifier`] sees the manifest only, *before any blob is downloaded*.
//! 3. **fetch** — the content layer by digest, from the content-addressed [`cache`] (re-hashed
//!    when read back; a corrupted entry is deleted and fetched again) or from the registry.
//! 4. **extract** — hardened, bounded unpacking into a staging directory ([`target`]).
//! 5. **policy** — the [`Policy`] hook sees the staged tree, still encrypted
//!    ([`ImmutabilityPolicy`]: the `tresor lint` rules, in the sync's mode: enforce, warn or
//!    off).
//! 6. **decrypt** — SOPS files are decrypted with the sync's age identities
//!    ([`crate::secrets::Decryption`]), MACs verified, the plaintext kept in memory
//!    ([`target::Staged::decrypt`]); a SOPS file without a usable identity fails closed.
//! 7. **apply** — the [`Applier`]: the atomic switch of the target directory, or staged
//!    server-side apply into a cluster (the puller's and `tresor apply`'s applier, which
//!    reports its failures as [`ApplierFailure`]s).
//! 8. **prune** — the previous version goes; files tresor never managed are carried over
//!    (objects that left the artifact are deleted, if they still carry tresor's labels).
//! 9. **health** — only appliers that check health (Kubernetes: kstatus rules, rollback).
//! 10. **record** — the caller turns the [`Summary`] into status, metrics and logs, once.
//!
//! Every cycle also corrects drift (edited or deleted managed files) from the cache, so the
//! target stays correct while the registry is unreachable. Failures are classified by
//! [`Retry`]: transient ones (network, 5xx, local I/O) are retried with backoff, stalled ones
//! (bad signature, refused content, missing tag) wait for the reference to change; a digest
//! that was rejected is remembered and not fetched again. Nothing partial or unverified is
//! ever applied; a failed new version leaves the last good one in place.
//!
//! The host agent (`tresor sync`) runs the engine every interval over its directory
//! [`target`]; the Kubernetes puller and `tresor apply` run the same [`Engine`] with a
//! cluster [`Applier`].

mod applier;
pub mod cache;
mod engine;
pub mod metrics;
mod policy;
pub mod source;
pub mod status;
pub mod target;
mod verify;

use std::time::Duration;

use serde::Serialize;

pub use crate::retry::Retry;
pub use applier::{Applier, ApplierFailure};
pub use engine::{Cancel, Engine};
pub use policy::{ImmutabilityPolicy, NoPolicy, Policy, PolicyRejected};
pub use verify::{
    trust_fingerprint, AllowUnsigned, BoxFuture, TrustVerifier, Verdicts, VerifiedBy, Verifier,
    VerifyRejected,
};

use crate::artifact::archive::ArchiveError;
use crate::artifact::ArtifactError;
use crate::digest::Digest;
use crate::registry::RegistryError;

/// A step of a reconcile cycle, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Reference → digest (and the manifest, when the digest is new).
    Resolve,
    /// Signature / trust policy on the manifest.
    Verify,
    /// Content layer from the cache or the registry.
    Fetch,
    /// Hardened unpacking into a staging directory.
    Extract,
    /// Content policy on the staged tree.
    Policy,
    /// SOPS files decrypted with the sync's age identities.
    Decrypt,
    /// The atomic switch.
    Apply,
    /// Removal of the previous version.
    Prune,
    /// Waiting until what was applied is healthy (Kubernetes).
    Health,
    /// Restoring edited or deleted managed files.
    Drift,
    /// The `--exec` command after an applied change (host agent).
    Exec,
}

impl Step {
    /// Lower-case name, as in logs and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::Resolve => "resolve",
            Self::Verify => "verify",
            Self::Fetch => "fetch",
            Self::Extract => "extract",
            Self::Policy => "policy",
            Self::Decrypt => "decrypt",
            Self::Apply => "apply",
            Self::Prune => "prune",
            Self::Health => "health",
            Self::Drift => "drift",
            Self::Exec => "exec",
        }
    }
}

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// Talking to the registry failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The manifest is not a usable artifact, or fetching it failed.
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    /// The followed tag does not exist.
    #[error("{reference}: tag not found; push it, or follow another tag")]
    TagNotFound {
        /// The reference followed.
        reference: String,
    },
    /// No tag of the repository matches the semver range.
    #[error(
        "no tag of {repository} matches the semver range {range:?} (tags that are not semantic \
         versions are ignored)"
    )]
    NoMatchingVersion {
        /// The repository.
        repository: String,
        /// The range as given.
        range: String,
    },
    /// The verifier refused the artifact.
    #[error(transparent)]
    Verify(#[from] VerifyRejected),
    /// The policy hook refused the staged content.
    #[error(transparent)]
    Policy(#[from] PolicyRejected),
    /// A SOPS file could not be decrypted (no identity, not a recipient, tampered).
    #[error(transparent)]
    Secrets(#[from] crate::secrets::SecretsError),
    /// The content layer could not be unpacked safely.
    #[error(transparent)]
    Extract(#[from] ArchiveError),
    /// The on-disk cache failed.
    #[error(transparent)]
    Cache(#[from] cache::CacheError),
    /// Switching or repairing the target failed.
    #[error(transparent)]
    Target(#[from] target::TargetError),
    /// The applier's own target failed (applying to, pruning from or checking it).
    #[error(transparent)]
    Applier(#[from] ApplierFailure),
    /// The applied version is not in the cache and the registry cannot be asked.
    #[error(
        "{digest} is applied but not in the cache, and the registry could not be reached to \
         fetch it again: drift cannot be corrected until it is back"
    )]
    NotCached {
        /// The applied digest.
        digest: Digest,
    },
    /// tresor is shutting down; the cycle stopped before the switch.
    #[error("the cycle was abandoned because tresor is shutting down; nothing was switched")]
    Abandoned,
}

impl StepError {
    /// Stable CamelCase reason for status, metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Registry(e) => e.reason(),
            Self::Artifact(e) => e.reason(),
            Self::TagNotFound { .. } => "TagNotFound",
            Self::NoMatchingVersion { .. } => "NoMatchingVersion",
            Self::Verify(e) => e.reason(),
            Self::Policy(e) => e.reason(),
            Self::Secrets(e) => e.reason(),
            Self::Extract(e) => e.reason(),
            Self::Cache(e) => e.reason(),
            Self::Target(e) => e.reason(),
            Self::Applier(e) => e.reason(),
            Self::NotCached { .. } => "NotCached",
            Self::Abandoned => "Abandoned",
        }
    }

    /// Whether to retry soon or wait for a change.
    pub fn retry(&self) -> Retry {
        let transient = match self {
            Self::Registry(e) | Self::Artifact(ArtifactError::Registry(e)) => {
                e.is_transient() || matches!(e, RegistryError::Io { .. })
            }
            Self::Artifact(ArtifactError::Io { .. }) => true,
            Self::Verify(e) => e.transient,
            Self::Cache(_) | Self::Target(_) | Self::NotCached { .. } | Self::Abandoned => true,
            Self::Extract(ArchiveError::Io { .. }) => true,
            Self::Applier(e) => e.is_transient(),
            _ => false,
        };
        if transient {
            Retry::Transient
        } else {
            Retry::Stalled
        }
    }
}

/// How a cycle ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Outcome {
    /// A new version was switched in.
    Applied,
    /// Nothing changed and nothing had drifted.
    Unchanged,
    /// The version is unchanged; drifted files were restored.
    DriftCorrected,
    /// A new version was refused (verification, policy, extraction …); the last good stays.
    Rejected,
    /// The cycle failed (e.g. registry unreachable); the last good stays.
    Failed,
    /// Shutting down; stopped before the switch.
    Abandoned,
}

impl Outcome {
    /// The CamelCase name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Applied => "Applied",
            Self::Unchanged => "Unchanged",
            Self::DriftCorrected => "DriftCorrected",
            Self::Rejected => "Rejected",
            Self::Failed => "Failed",
            Self::Abandoned => "Abandoned",
        }
    }
}

/// A failure, as reported: which step, why, what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// The step that failed.
    pub step: Step,
    /// Stable CamelCase reason.
    pub reason: String,
    /// The message.
    pub message: String,
    /// Retry soon or wait for a change.
    pub retry: Retry,
    /// The digest concerned, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
}

impl Failure {
    /// A failure of `step` from `error`.
    pub fn new(step: Step, error: &StepError, digest: Option<Digest>) -> Self {
        Self {
            step,
            reason: error.reason().to_string(),
            message: error.to_string(),
            retry: error.retry(),
            digest,
        }
    }
}

/// How long one step took.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepTiming {
    /// The step.
    pub step: Step,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Whether it succeeded.
    pub ok: bool,
}

/// The one summary of a reconcile cycle.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// How the cycle ended.
    pub outcome: Outcome,
    /// The reference followed (tag, semver range or digest).
    pub reference: String,
    /// The digest the reference resolved to this cycle, when resolving worked.
    pub digest: Option<Digest>,
    /// The tag picked for a semver range.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The digest the target holds after the cycle.
    pub applied: Option<Digest>,
    /// `org.opencontainers.image.source` of the artifact this cycle resolved (new digests
    /// only): where notifications link to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// `org.opencontainers.image.revision` of that artifact (e.g. `main@sha1:<sha>`): the
    /// commit a GitHub status is set on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Who vouched for the applied digest (`unsigned` for the explicit opt-out).
    pub signer: Option<String>,
    /// Who approved the applied digest into this repository (`tresor promote`), when a
    /// promotion record verified under the same trust.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<crate::signing::promotion::Approval>,
    /// Managed files restored by drift correction.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub restored: Vec<String>,
    /// Cache entries found corrupted (deleted and fetched again).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cache_corrupted: Vec<Digest>,
    /// Warnings, e.g. from the policy hook or files that could not be carried over.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The failure, if any (the first one; drift failures are reported when nothing else
    /// failed).
    pub error: Option<Failure>,
    /// Step timings in order.
    pub steps: Vec<StepTiming>,
    /// The whole cycle, in seconds.
    pub seconds: f64,
}

#[cfg(test)]
impl Summary {
    /// A summary of `outcome` with `error` and nothing else, following `oci://r/app:v1`:
    /// what unit tests of the layers that read summaries start from.
    pub(crate) fn for_test(outcome: Outcome, error: Option<Failure>) -> Self {
        Self {
            outcome,
            reference: "oci://r/app:v1".into(),
            digest: None,
            tag: None,
            applied: None,
            signer: None,
            approval: None,
            source: None,
            revision: None,
            restored: vec![],
            cache_corrupted: vec![],
            warnings: vec![],
            error,
            steps: vec![],
            seconds: 0.0,
        }
    }
}

impl Summary {
    /// The whole cycle's duration.
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.seconds.max(0.0))
    }
}
