//! The verify step as a small trait, so the engine does not depend on how trust is decided.
//!
//! The engine calls [`Verifier::verify`] with the manifest only — before any blob is
//! downloaded. [`AllowUnsigned`] is the explicit opt-out (`--allow-unsigned`); the
//! signature verifier (`signing::verify` with a trust policy) plugs in as another
//! implementation.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::artifact::fetch::ResolvedArtifact;
use crate::digest::Digest;
use crate::registry::Repository;
use crate::signing::promotion::{self, Approval};

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

    /// What this verifier trusts, as a stable fingerprint: two verifiers with the same
    /// fingerprint reach the same verdict on the same artifact, so a verdict can be reused
    /// ([`Verdicts`]) as long as the fingerprint is unchanged. Any change of keys,
    /// identities, trusted roots or the N-of-M rule must change it.
    fn trust(&self) -> String;
}

/// Fingerprint of a trust description: SHA-256, lower-case hex.
pub fn trust_fingerprint(description: &str) -> String {
    hex::encode(Sha256::digest(description.as_bytes()))
}

/// Successful verifications of this process, by repository, digest and the verifier's
/// [`Verifier::trust`] fingerprint.
///
/// The engine applies (and repairs drift from) only a digest found here for its own trust:
/// an applied digest read back from the cluster or the host (an inventory, a status, a
/// state file: things others can write) is verified again before anything of it is
/// applied. A hit costs a map lookup, so an unchanged sync does not fetch its signatures
/// every cycle. Shared by every engine of a process (the puller's syncs); the entries are
/// only positive verdicts, bounded by [`Verdicts::MAX`] (all are dropped when full, which
/// costs one verification each).
#[derive(Clone, Default)]
pub struct Verdicts {
    inner: Arc<Mutex<VerdictMap>>,
}

/// (repository, digest, trust fingerprint) → who vouched.
type VerdictMap = HashMap<(String, Digest, String), VerifiedBy>;

impl Verdicts {
    /// Entries kept before the map is cleared.
    pub const MAX: usize = 16_384;

    /// The verdict on `digest` in `repository` under the trust `fingerprint`, if this
    /// process reached one.
    pub fn get(&self, repository: &str, digest: &Digest, fingerprint: &str) -> Option<VerifiedBy> {
        let key = (
            repository.to_string(),
            digest.clone(),
            fingerprint.to_string(),
        );
        self.lock().get(&key).cloned()
    }

    /// Records that `digest` in `repository` passed the trust `fingerprint`.
    pub fn insert(&self, repository: &str, digest: &Digest, fingerprint: &str, by: VerifiedBy) {
        let mut map = self.lock();
        if map.len() >= Self::MAX {
            map.clear();
        }
        map.insert(
            (
                repository.to_string(),
                digest.clone(),
                fingerprint.to_string(),
            ),
            by,
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VerdictMap> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Who vouched for an artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifiedBy {
    /// Nobody: accepted through the explicit `--allow-unsigned` opt-out.
    Unsigned,
    /// The signers (key fingerprints or keyless identities) that satisfied the policy.
    Signers(Vec<String>),
    /// The signers, and a promotion record of the digest into this repository signed by a
    /// key authority of the same policy (`tresor promote`; the newest when there are several).
    Promoted {
        /// As for [`VerifiedBy::Signers`].
        signers: Vec<String>,
        /// Who approved it, when and why.
        approval: Box<Approval>,
    },
}

impl VerifiedBy {
    /// One line for status and logs: `unsigned` or the signers joined by `, `.
    pub fn signer(&self) -> String {
        match self {
            Self::Unsigned => "unsigned".to_string(),
            Self::Signers(s) | Self::Promoted { signers: s, .. } => s.join(", "),
        }
    }

    /// The verified promotion record, if any.
    pub fn approval(&self) -> Option<&Approval> {
        match self {
            Self::Promoted { approval, .. } => Some(approval.as_ref()),
            _ => None,
        }
    }

    /// `signers`, with `approval` when there is one.
    pub fn signed(signers: Vec<String>, approval: Option<Approval>) -> Self {
        match approval {
            Some(approval) => Self::Promoted {
                signers,
                approval: Box::new(approval),
            },
            None => Self::Signers(signers),
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

    fn trust(&self) -> String {
        "allow-unsigned".to_string()
    }
}

/// Verifies signatures against a trust policy (`--key`, keyless identities, `--trust-policy`)
/// with [`crate::signing::verify`](fn@crate::signing::verify): manifests and signature payloads only.
#[derive(Debug, Clone)]
pub struct TrustVerifier {
    policy: crate::signing::TrustPolicy,
    /// [`Verifier::trust`], computed once.
    fingerprint: String,
    /// Where the policy comes from (e.g. `TrustPolicy/prod`), named in approvals.
    origin: Option<String>,
}

impl TrustVerifier {
    /// A verifier requiring `policy`.
    pub fn new(policy: crate::signing::TrustPolicy) -> Self {
        let fingerprint = trust_fingerprint(&describe(&policy));
        Self {
            policy,
            fingerprint,
            origin: None,
        }
    }

    /// Names where the policy comes from (e.g. `TrustPolicy/prod`) in the approvals it
    /// verifies ([`Approval::policy`]); display only, not part of [`Verifier::trust`].
    pub fn with_origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = Some(origin.into());
        self
    }
}

/// Everything `policy` trusts, as text: keys by fingerprint, keyless authorities by
/// identity, issuer and trusted root, and the N-of-M rule.
fn describe(policy: &crate::signing::TrustPolicy) -> String {
    use crate::signing::Authority;
    use std::fmt::Write as _;
    let mut description = format!("require {:?};", policy.require);
    for a in &policy.authorities {
        let _ = match &a.authority {
            Authority::Key { key } => write!(description, " {}=key:{};", a.name, key.fingerprint()),
            Authority::Keyless {
                identity,
                issuer,
                trusted_root,
            } => write!(
                description,
                " {}=keyless:{identity:?}/{issuer:?}/{trusted_root:?};",
                a.name
            ),
        };
    }
    description
}

impl Verifier for TrustVerifier {
    fn verify<'a>(
        &'a self,
        repo: &'a Repository,
        artifact: &'a ResolvedArtifact,
    ) -> BoxFuture<'a, Result<VerifiedBy, VerifyRejected>> {
        Box::pin(async move {
            let signers = match crate::signing::verify(
                repo,
                &crate::signing::Subject::of_artifact(artifact),
                &self.policy,
            )
            .await
            {
                Ok(v) => v
                    .signatures
                    .iter()
                    .map(|s| format!("{} ({})", s.authority, s.signer))
                    .collect(),
                // Untrusted content is rejected until the reference moves; anything else
                // (registry trouble while reading signatures, an unreadable key) is retried.
                Err(e) if e.is_unverified() => {
                    return Err(VerifyRejected::rejected(e.reason(), e.to_string()))
                }
                Err(e) => return Err(VerifyRejected::transient(e.reason(), e.to_string())),
            };
            // Who approved it, from promotion records this policy's keys signed for this
            // repository: shown in status, never a reason to refuse or accept.
            let repository = artifact.reference.repository();
            let approval = promotion::verified_approvals(repo, &artifact.digest, &self.policy)
                .await
                .map_err(|e| VerifyRejected::transient(e.reason(), e.to_string()))?
                .into_iter()
                .find(|a| a.record.targets_repository(&repository))
                .map(|a| Approval {
                    policy: self.origin.clone(),
                    ..a
                });
            Ok(VerifiedBy::signed(signers, approval))
        })
    }

    fn trust(&self) -> String {
        self.fingerprint.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::signing::{Require, TrustPolicy};

    fn verifier(keys: &[&str], require: Require) -> TrustVerifier {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata");
        let keys: Vec<PathBuf> = keys.iter().map(|k| root.join(k)).collect();
        TrustVerifier::new(TrustPolicy::for_keys(&keys, require).unwrap())
    }

    #[test]
    fn trust_fingerprint_changes_with_keys_and_rule_only() {
        let ci = verifier(&["policy/ci.pub"], Require::Any);
        assert_eq!(
            ci.trust(),
            verifier(&["policy/ci.pub"], Require::Any).trust()
        );
        assert_ne!(
            ci.trust(),
            verifier(&["policy/security-team.pub"], Require::Any).trust()
        );
        let both = ["policy/ci.pub", "policy/security-team.pub"];
        assert_ne!(
            verifier(&both, Require::Any).trust(),
            verifier(&both, Require::All).trust()
        );
        assert_ne!(ci.trust(), AllowUnsigned.trust());
    }

    #[test]
    fn verdicts_are_kept_per_repository_digest_and_trust() {
        let verdicts = Verdicts::default();
        let digest = Digest::of(b"artifact");
        let by = VerifiedBy::Signers(vec!["ci".into()]);
        verdicts.insert("r/app", &digest, "t1", by.clone());
        assert_eq!(verdicts.get("r/app", &digest, "t1"), Some(by));
        assert_eq!(verdicts.get("r/app", &digest, "t2"), None);
        assert_eq!(verdicts.get("r/other", &digest, "t1"), None);
        assert_eq!(verdicts.get("r/app", &Digest::of(b"other"), "t1"), None);
    }
}
