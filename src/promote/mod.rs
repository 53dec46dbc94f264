//! Promotion: moving a verified artifact into an environment as a signed, recorded act
//! (`tresor promote`), not a bare tag move anyone with push rights can make.
//!
//! [`promote`] runs fixed steps and moves the target tag last:
//!
//! 1. **resolve** the source to a digest (a tag is resolved once; the digest is used after).
//! 2. **verify** the source in its own repository under the target environment's trust
//!    policy *without the approver* ([`without_approver`]): the other signers (e.g. CI) must
//!    hold before the approver adds anything. Nothing is written when this fails.
//! 3. **copy** to the target repository when it is another one (registry, repository or OCI
//!    layout): manifest, blobs, signatures, attestations and bundle referrers, digest kept
//!    ([`copy`]).
//! 4. **sign** in the target repository: the approver's signature is appended (cosign's
//!    `.sig` scheme), then the signed promotion attestation
//!    ([`crate::signing::promotion`]) is appended to `.att`.
//! 5. **check** the target under the *full* policy, approver included.
//! 6. **move the tag**, after checking it still points where it pointed at step 1 (else
//!    [`PromoteError::TagChanged`]: someone else moved it meanwhile).
//!
//! A dry run does steps 1 and 2 and reports what 3–6 would do; it writes nothing.

pub mod copy;

use std::path::PathBuf;
use std::time::SystemTime;

use serde::Serialize;

use crate::digest::Digest;
use crate::reference::Reference;
use crate::registry::{ManifestRef, RegistryError, Repository};
use crate::signing::attestation::{self, AttestOutcome};
use crate::signing::legacy::{self, SignOutcome};
use crate::signing::policy::{NamedAuthority, Require};
use crate::signing::promotion::{Approver, PromotedFrom, PromotedTo, PromotionRecord};
use crate::signing::{
    subject, Authority, PrivateKey, PublicKey, SigningError, Subject, TrustPolicy, VerifyError,
};

/// Why a promotion did not happen.
#[derive(Debug, thiserror::Error)]
pub enum PromoteError {
    /// Reading or writing a registry or layout failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Signing or attaching the attestation failed.
    #[error(transparent)]
    Signing(#[from] SigningError),
    /// The source (or, after signing, the target) does not satisfy the trust policy.
    #[error("{stage}: {source}")]
    Verify {
        /// `source … without the approver` or `target … with the approver`.
        stage: String,
        /// Why.
        source: Box<VerifyError>,
    },
    /// `--to` has no tag, or is pinned to a digest.
    #[error("--to {reference}: give the target as a tag, e.g. oci://registry.example/app:prod (a promotion moves a tag)")]
    TargetNotATag {
        /// The target as given.
        reference: String,
    },
    /// Source and target are the same tag.
    #[error("--to {reference} is the source itself; promote to another tag")]
    SameTag {
        /// The tag.
        reference: String,
    },
    /// The policy names no authority besides the approver.
    #[error(
        "{policy}: no authority besides the approver ({approver}); a promotion needs at least \
         one other signer (e.g. CI) to have signed the source"
    )]
    ApproverOnly {
        /// Where the policy came from.
        policy: String,
        /// The approver's key.
        approver: String,
    },
    /// The target tag moved while the promotion ran.
    #[error(
        "{reference} changed while promoting (was {expected}, now {actual}); nothing was \
         moved: run the promotion again"
    )]
    TagChanged {
        /// The target tag.
        reference: String,
        /// What it pointed at when the promotion started (`absent` if it did not exist).
        expected: String,
        /// What it points at now.
        actual: String,
    },
    /// More content than tresor copies.
    #[error("{what}: {message}")]
    TooLarge {
        /// What was being copied.
        what: String,
        /// The limit that was hit.
        message: String,
    },
}

impl PromoteError {
    /// Stable CamelCase reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Registry(e) => e.reason(),
            Self::Signing(e) => e.reason(),
            Self::Verify { source, .. } => source.reason(),
            Self::TargetNotATag { .. } => "TargetNotATag",
            Self::SameTag { .. } => "SameTag",
            Self::ApproverOnly { .. } => "ApproverOnly",
            Self::TagChanged { .. } => "TagChanged",
            Self::TooLarge { .. } => "TooLarge",
        }
    }

    /// True when the content is not trusted (exit code 1), as opposed to errors (exit 2).
    pub fn is_unverified(&self) -> bool {
        matches!(self, Self::Verify { source, .. } if source.is_unverified())
    }
}

/// A promotion to run.
pub struct Request<'a> {
    /// The source (tag or digest).
    pub source: &'a Reference,
    /// The target tag.
    pub target: &'a Reference,
    /// The approver's private key.
    pub key: &'a PrivateKey,
    /// The target environment's trust policy, approver included.
    pub policy: &'a TrustPolicy,
    /// Where the policy came from, for messages.
    pub policy_origin: &'a str,
    /// `--reason`.
    pub reason: Option<&'a str>,
    /// Report only; write nothing.
    pub dry_run: bool,
}

/// What a promotion did (or, in a dry run, would do).
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// Whether this was a dry run (then nothing was written).
    pub dry_run: bool,
    /// The source as given.
    pub source: String,
    /// Its digest (what was promoted).
    pub digest: Digest,
    /// The target tag with the digest, e.g. `oci://…/app:prod@sha256:…`.
    pub target: String,
    /// What the target tag pointed at before, if it existed.
    pub previous_digest: Option<Digest>,
    /// The rule checked at the source without the approver, e.g. `all (1)`.
    pub verified_require: String,
    /// The authorities whose signatures satisfied it.
    pub verified_by: Vec<String>,
    /// The policy authority that is the approver, if the policy names the approver's key.
    pub approver_authority: Option<String>,
    /// The approver's key fingerprint, `sha256:…`.
    pub approver_key: String,
    /// Whether the target is another repository (then content was copied).
    pub cross_repository: bool,
    /// What was (or would be) copied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub copied: Option<copy::CopyReport>,
    /// The approver's signature in the target repository (not in a dry run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignOutcome>,
    /// The promotion attestation in the target repository (not in a dry run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attestation: Option<AttestOutcome>,
    /// The promotion record signed (or that would be signed).
    pub record: PromotionRecord,
    /// Whether the target tag was moved (false in a dry run, or when it already pointed at
    /// the digest).
    pub tag_moved: bool,
}

/// `policy` without the approver's authority, and the name of the authority left out.
///
/// The rest must hold without the approver: `all` stays `all` (of the others), `N` becomes
/// `N - 1` (the approver's signature will count for one), and `any` stays `any` — so at
/// least one authority besides the approver is always required: a promotion never rests on
/// the approver's word alone. When the approver's key is not in the policy, the whole
/// policy must hold. Fails with [`PromoteError::ApproverOnly`] when nobody else is left.
pub fn without_approver(
    policy: &TrustPolicy,
    approver: &PublicKey,
    origin: &str,
) -> Result<(TrustPolicy, Option<String>), PromoteError> {
    let is_approver = |a: &NamedAuthority| matches!(&a.authority, Authority::Key { key } if key.same_key(approver));
    let Some(removed) = policy.authorities.iter().find(|a| is_approver(a)) else {
        return Ok((policy.clone(), None));
    };
    let rest: Vec<NamedAuthority> = policy
        .authorities
        .iter()
        .filter(|a| !is_approver(a))
        .cloned()
        .collect();
    if rest.is_empty() {
        return Err(PromoteError::ApproverOnly {
            policy: origin.to_string(),
            approver: format!("key sha256:{}", approver.fingerprint()),
        });
    }
    let require = match policy.require {
        Require::All => Require::All,
        Require::Any => Require::Any,
        Require::AtLeast(n) => Require::AtLeast(n.saturating_sub(1).clamp(1, rest.len())),
    };
    let reduced = TrustPolicy::new(rest, require, &PathBuf::from(origin)).map_err(|e| {
        PromoteError::Verify {
            stage: format!("{origin} without the approver"),
            source: Box::new(e.into()),
        }
    })?;
    Ok((reduced, Some(removed.name.clone())))
}

/// Step 1: the manifest the source resolves to (a tag is read once; the digest is used
/// from then on).
pub async fn resolve(from: &Repository, source: &Reference) -> Result<Subject, PromoteError> {
    Ok(subject::resolve(from, source).await?)
}

/// Runs steps 2–6 of a promotion of `source` (from [`resolve`]; see the module docs). `from`
/// and `to` are the repositories of the source and the target (the same repository may be
/// opened twice).
pub async fn promote(
    from: &Repository,
    to: &Repository,
    source: &Subject,
    request: &Request<'_>,
) -> Result<Outcome, PromoteError> {
    let target_tag = match (request.target.tag(), request.target.digest()) {
        (Some(tag), None) => tag.to_string(),
        _ => {
            return Err(PromoteError::TargetNotATag {
                reference: request.target.to_string(),
            })
        }
    };
    let cross_repository = request.source.repository() != request.target.repository();
    if !cross_repository
        && request.source.digest().is_none()
        && request.source.tag() == Some(target_tag.as_str())
    {
        return Err(PromoteError::SameTag {
            reference: request.target.to_string(),
        });
    }

    let digest = source.digest.clone();

    // 2. verify without the approver, where the source lives
    let approver = request.key.public_key();
    let (reduced, approver_authority) =
        without_approver(request.policy, approver, request.policy_origin)?;
    let verified = crate::signing::verify(from, source, &reduced)
        .await
        .map_err(|source| PromoteError::Verify {
            source: Box::new(source),
            stage: format!(
                "{} does not satisfy {} without the approver (require {})",
                request.source,
                request.policy_origin,
                reduced.describe_rule()
            ),
        })?;

    let previous = tag_digest(to, &target_tag).await?;
    let record = PromotionRecord {
        from: PromotedFrom {
            reference: request.source.to_string(),
            digest: digest.to_string(),
        },
        to: PromotedTo {
            reference: request.target.to_string(),
            previous_digest: previous.as_ref().map(Digest::to_string),
        },
        approver: Approver {
            key: format!("sha256:{}", approver.fingerprint()),
        },
        time: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        reason: request.reason.map(str::to_string),
    };
    let mut outcome = Outcome {
        dry_run: request.dry_run,
        source: request.source.to_string(),
        digest: digest.clone(),
        target: request.target.with_digest(digest.clone()).to_string(),
        previous_digest: previous.clone(),
        verified_require: verified.require.clone(),
        verified_by: verified.satisfied.clone(),
        approver_authority,
        approver_key: record.approver.key.clone(),
        cross_repository,
        copied: None,
        signature: None,
        attestation: None,
        record: record.clone(),
        tag_moved: false,
    };

    // 3. copy
    if cross_repository {
        outcome.copied = Some(copy::copy(from, to, &digest, request.dry_run).await?);
    }
    if request.dry_run {
        return Ok(outcome);
    }

    // 4. sign and attest where the target lives
    outcome.signature = Some(legacy::sign(to, request.target, &digest, request.key).await?);
    let statement = record.statement(request.target, &digest);
    outcome.attestation = Some(attestation::attest(to, &digest, &statement, request.key).await?);

    // 5. the full policy must now hold at the target
    let target_subject = subject::resolve(to, &request.target.with_digest(digest.clone())).await?;
    crate::signing::verify(to, &target_subject, request.policy)
        .await
        .map_err(|source| PromoteError::Verify {
            source: Box::new(source),
            stage: format!(
                "{} does not satisfy {} with the approver's signature; the tag was not moved",
                request.target.pinned(&digest),
                request.policy_origin
            ),
        })?;

    // 6. move the tag, unless someone else moved it meanwhile
    let now = tag_digest(to, &target_tag).await?;
    if now != previous {
        return Err(PromoteError::TagChanged {
            reference: request.target.to_string(),
            expected: previous.map_or_else(|| "absent".into(), |d| d.to_string()),
            actual: now.map_or_else(|| "absent".into(), |d| d.to_string()),
        });
    }
    if previous.as_ref() != Some(&digest) {
        let manifest = to.fetch_manifest(ManifestRef::Digest(&digest)).await?;
        to.push_manifest(&manifest.media_type, &manifest.bytes, Some(&target_tag))
            .await?;
        outcome.tag_moved = true;
    }
    Ok(outcome)
}

/// The digest `tag` points at in `repo`; `None` when the tag or the repository is absent.
async fn tag_digest(repo: &Repository, tag: &str) -> Result<Option<Digest>, RegistryError> {
    match repo.resolve(ManifestRef::Tag(tag)).await {
        Ok(d) => Ok(d),
        Err(RegistryError::RepositoryNotFound { .. } | RegistryError::ManifestNotFound { .. }) => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> PublicKey {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/policy")
            .join(format!("{name}.pub"));
        PublicKey::from_file(&path).unwrap()
    }

    fn policy(names: &[&str], require: Require) -> TrustPolicy {
        let authorities = names
            .iter()
            .map(|n| NamedAuthority {
                name: (*n).to_string(),
                authority: Authority::Key { key: key(n) },
            })
            .collect();
        TrustPolicy::new(authorities, require, std::path::Path::new("p.yaml")).unwrap()
    }

    #[test]
    fn the_approver_is_left_out_and_the_rule_shrinks_by_one() {
        let approver = key("security-team");
        let (p, removed) = without_approver(
            &policy(&["ci", "security-team"], Require::All),
            &approver,
            "p",
        )
        .unwrap();
        assert_eq!(removed.as_deref(), Some("security-team"));
        assert_eq!(p.authorities.len(), 1);
        assert_eq!(p.authorities[0].name, "ci");
        assert_eq!(p.require, Require::All);

        let (p, _) = without_approver(
            &policy(&["ci", "security-team"], Require::AtLeast(2)),
            &approver,
            "p",
        )
        .unwrap();
        assert_eq!(p.require, Require::AtLeast(1));
        // `any` still needs someone besides the approver.
        let (p, _) = without_approver(
            &policy(&["ci", "security-team"], Require::Any),
            &approver,
            "p",
        )
        .unwrap();
        assert_eq!((p.require, p.authorities.len()), (Require::Any, 1));
    }

    #[test]
    fn an_approver_outside_the_policy_leaves_it_whole_and_alone_is_refused() {
        let (p, removed) =
            without_approver(&policy(&["ci"], Require::All), &key("security-team"), "p").unwrap();
        assert_eq!((removed, p.authorities.len()), (None, 1));
        let err = without_approver(&policy(&["ci"], Require::All), &key("ci"), "p").unwrap_err();
        assert_eq!(err.reason(), "ApproverOnly");
        assert!(
            err.to_string().contains("at least one other signer"),
            "{err}"
        );
    }
}
