//! The verify step as a small trait, so the engine does not depend on how trust is decided.
//!
//! The engine calls [`Verifier::verify`] with the manifest only — before any blob is
//! downloaded. [`AllowUnsigned`] is the explicit opt-out (`--allow-unsigned`); the
//! signature verifier (`signing::verify` with a trust policy) plugs in as another
//! implementation.

use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

use crate::artifact::fetch::ResolvedArtifact;
use crate::registry::Repository;

/// A boxed, `Send` future: what [`Verifier::verify`] returns, so the trait stays
/// object-safe (`Arc<dyn Verifier>`) without an async-trait macro.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Decides whether a resolved artifact may be applied, from its manifest alone.
///
/// Implementations may read signature material from `repo` (cosign `.sig` tags, referrers)
/// but must not download the artifact's layers. Return [`VerifyRejected`] with
/// `transient: true` when the verdict could not be reached (e.g. the registry went away
/// while fetching signatures), so the engine retries instead of rejecting the digest.
pub trait Verifier: Send + Sync {
    /// Verifies `artifact`; on success says who vouched for it.
    fn verify<'a>(
        &'a self,
        repo: &'a Repository,
        artifact: &'a ResolvedArtifact,
    ) -> BoxFuture<'a, Result<VerifiedBy, VerifyRejected>>;
}

/// Who vouched for an artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifiedBy {
    /// Nobody: accepted through the explicit `--allow-unsigned` opt-out.
    Unsigned,
    /// The signers (key fingerprints or keyless identities) that satisfied the policy.
    Signers(Vec<String>),
}

impl VerifiedBy {
    /// One line for status and logs: `unsigned` or the signers joined by `, `.
    pub fn signer(&self) -> String {
        match self {
            Self::Unsigned => "unsigned".to_string(),
            Self::Signers(s) => s.join(", "),
        }
    }
}

/// A verifier's refusal (or failure to decide).
#[derive(Debug, Clone, thiserror::Error)]
#[error("verification failed: {message}")]
pub struct VerifyRejected {
    /// Stable CamelCase reason (e.g. the signing error's `reason()`).
    pub reason: &'static str,
    /// What was wrong and what to do.
    pub message: String,
    /// True when no verdict was reached and retrying may succeed (network trouble).
    pub transient: bool,
}

impl VerifyRejected {
    /// A definite refusal: the digest is rejected until the reference changes.
    pub fn rejected(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
            transient: false,
        }
    }

    /// No verdict (e.g. signatures could not be fetched): retried with backoff.
    pub fn transient(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
            transient: true,
        }
    }

    /// Stable CamelCase reason.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

/// The explicit opt-out: accepts every artifact and records it as `unsigned`.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowUnsigned;

impl Verifier for AllowUnsigned {
    fn verify<'a>(
        &'a self,
        _repo: &'a Repository,
        artifact: &'a ResolvedArtifact,
    ) -> BoxFuture<'a, Result<VerifiedBy, VerifyRejected>> {
        tracing::warn!(digest = %artifact.digest, "accepting unsigned content (--allow-unsigned)");
        Box::pin(std::future::ready(Ok(VerifiedBy::Unsigned)))
    }
}

/// Verifies signatures against a trust policy (`--key`, keyless identities, `--trust-policy`)
/// with [`crate::signing::verify`](fn@crate::signing::verify): manifests and signature payloads only.
#[derive(Debug, Clone)]
pub struct TrustVerifier {
    policy: crate::signing::TrustPolicy,
}

impl TrustVerifier {
    /// A verifier requiring `policy`.
    pub fn new(policy: crate::signing::TrustPolicy) -> Self {
        Self { policy }
    }
}

impl Verifier for TrustVerifier {
    fn verify<'a>(
        &'a self,
        repo: &'a Repository,
        artifact: &'a ResolvedArtifact,
    ) -> BoxFuture<'a, Result<VerifiedBy, VerifyRejected>> {
        Box::pin(async move {
            match crate::signing::verify(repo, artifact, &self.policy).await {
                Ok(v) => Ok(VerifiedBy::Signers(
                    v.signatures
                        .iter()
                        .map(|s| format!("{} ({})", s.authority, s.signer))
                        .collect(),
                )),
                // Untrusted content is rejected until the reference moves; anything else
                // (registry trouble while reading signatures, an unreadable key) is retried.
                Err(e) if e.is_unverified() => {
                    Err(VerifyRejected::rejected(e.reason(), e.to_string()))
                }
                Err(e) => Err(VerifyRejected::transient(e.reason(), e.to_string())),
            }
        })
    }
}
