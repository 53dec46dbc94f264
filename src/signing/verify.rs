//! Verification: collect candidate signatures, check each against each authority, apply
//! the policy's rule.
//!
//! Reads only the `.sig` manifest and its small payload blobs; the artifact's own layers are
//! never touched, so callers run this right after reading the manifest and before any
//! download. Adding a signature source means a new [`Candidate`] variant plus a collector in
//! [`collect_candidates`]; adding an authority kind means a new arm in [`verify_candidate`].

use serde::Serialize;

use super::attestation::{self, DsseAttestation};
use super::legacy::{self, LegacySignature};
use super::policy::{Authority, TrustPolicy};
use super::VerifyError;
use crate::artifact::fetch::ResolvedArtifact;
use crate::artifact::format::{ANNOTATION_CREATED, ANNOTATION_REVISION, ANNOTATION_SOURCE};
use crate::digest::Digest;
use crate::registry::Repository;

/// A signature found for the artifact, not yet checked.
#[derive(Debug, Clone)]
pub enum Candidate {
    /// A layer of the cosign `sha256-<hex>.sig` manifest.
    Legacy(LegacySignature),
    /// A DSSE attestation layer of the `sha256-<hex>.att` manifest.
    Attestation(DsseAttestation),
}

impl Candidate {
    /// How the candidate is named in results and messages.
    pub fn describe(&self) -> String {
        match self {
            Self::Legacy(s) => s.describe(),
            Self::Attestation(a) => a.describe(),
        }
    }
}

/// Who made a valid signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Signer {
    /// A key holder.
    Key {
        /// SHA-256 of the public key's DER SubjectPublicKeyInfo, hex.
        fingerprint: String,
    },
    /// A keyless signer (Fulcio certificate).
    Certificate {
        /// Certificate identity (SAN).
        identity: String,
        /// OIDC issuer.
        issuer: String,
    },
}

impl std::fmt::Display for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Key { fingerprint } => write!(f, "key sha256:{fingerprint}"),
            Self::Certificate { identity, issuer } => write!(f, "{identity} (issuer {issuer})"),
        }
    }
}

/// One valid signature and the authority it satisfies.
#[derive(Debug, Clone, Serialize)]
pub struct VerifiedSignature {
    /// The authority's name in the policy.
    pub authority: String,
    /// Who signed.
    pub signer: Signer,
    /// Where the signature is stored, e.g. `sha256-….sig layer 0`.
    pub source: String,
}

/// The artifact's provenance annotations, from the manifest already read.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ArtifactProvenance {
    /// `org.opencontainers.image.source`.
    pub source: Option<String>,
    /// `org.opencontainers.image.revision`.
    pub revision: Option<String>,
    /// `org.opencontainers.image.created`.
    pub created: Option<String>,
}

impl ArtifactProvenance {
    /// Reads the annotations of `artifact`'s manifest.
    pub fn of(artifact: &ResolvedArtifact) -> Self {
        let get = |k: &str| artifact.manifest.annotations.get(k).cloned();
        Self {
            source: get(ANNOTATION_SOURCE),
            revision: get(ANNOTATION_REVISION),
            created: get(ANNOTATION_CREATED),
        }
    }
}

/// A passed verification: what `tresor verify` prints and the reconcile engine records.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// The artifact, digest-pinned.
    pub reference: String,
    /// Its manifest digest.
    pub digest: Digest,
    /// Always true (a failed verification is a [`VerifyError`]).
    pub verified: bool,
    /// The rule applied, e.g. `all (2)`.
    pub require: String,
    /// Authorities with at least one valid signature.
    pub satisfied: Vec<String>,
    /// Every valid signature.
    pub signatures: Vec<VerifiedSignature>,
    /// Source, revision and creation time from the manifest annotations.
    pub provenance: ArtifactProvenance,
}

/// Verifies `artifact` against `policy`: reads its signatures (manifests and small payload
/// blobs only), checks every candidate against every authority and applies the rule.
///
/// Fails with an error for which [`VerifyError::is_unverified`] holds when the artifact is
/// not trusted: no signatures, none valid ([`VerifyError::SignatureInvalid`], or the most
/// telling per-signature error such as [`VerifyError::PayloadDigestMismatch`] when no
/// authority is satisfied), or too few authorities ([`VerifyError::PolicyNotSatisfied`]).
pub async fn verify(
    repo: &Repository,
    artifact: &ResolvedArtifact,
    policy: &TrustPolicy,
) -> Result<Verification, VerifyError> {
    for a in &policy.authorities {
        if matches!(a.authority, Authority::Keyless { .. }) {
            return Err(VerifyError::KeylessNotSupported {
                authority: a.name.clone(),
            });
        }
    }
    let candidates = collect_candidates(repo, &artifact.digest).await?;
    if candidates.is_empty() {
        return Err(VerifyError::NoSignatures {
            reference: artifact.reference.pinned(&artifact.digest),
            tag: legacy::signature_tag(&artifact.digest),
        });
    }
    evaluate(artifact, policy, &candidates)
}

/// A passed attestation verification: the signers and the verified statements.
#[derive(Debug, Clone, Serialize)]
pub struct AttestationVerification {
    /// Signers, rule and the artifact's annotations, as for signatures.
    #[serde(flatten)]
    pub verification: Verification,
    /// The in-toto statements with a valid signature from a trusted authority.
    pub statements: Vec<serde_json::Value>,
}

/// Verifies the artifact's attestations (`.att`, DSSE in-toto statements) against `policy`
/// like [`verify`] does signatures; returns the statements that verified. Reads manifests
/// and small envelope blobs only.
pub async fn verify_attestations(
    repo: &Repository,
    artifact: &ResolvedArtifact,
    policy: &TrustPolicy,
) -> Result<AttestationVerification, VerifyError> {
    let candidates: Vec<Candidate> = attestation::collect(repo, &artifact.digest)
        .await?
        .into_iter()
        .map(Candidate::Attestation)
        .collect();
    if candidates.is_empty() {
        return Err(VerifyError::NoSignatures {
            reference: artifact.reference.pinned(&artifact.digest),
            tag: attestation::attestation_tag(&artifact.digest),
        });
    }
    let verification = evaluate(artifact, policy, &candidates)?;
    let mut statements = Vec::new();
    for candidate in &candidates {
        let Candidate::Attestation(att) = candidate else {
            continue;
        };
        let source = att.describe();
        let Some(signed) = verification.signatures.iter().find(|s| s.source == source) else {
            continue;
        };
        // Re-run the check with the authority that passed, to get its statement.
        let Some(named) = policy
            .authorities
            .iter()
            .find(|a| a.name == signed.authority)
        else {
            continue;
        };
        if let Authority::Key { key } = &named.authority {
            statements.push(att.verify_with_key(key, &artifact.digest)?);
        }
    }
    Ok(AttestationVerification {
        verification,
        statements,
    })
}

/// Every signature stored for `digest`, from every source tresor reads.
pub async fn collect_candidates(
    repo: &Repository,
    digest: &Digest,
) -> Result<Vec<Candidate>, VerifyError> {
    let candidates = legacy::collect(repo, digest)
        .await?
        .into_iter()
        .map(Candidate::Legacy)
        .collect();
    // Sigstore bundles (referrers API / `sha256-<hex>` index tag) are to be collected here.
    Ok(candidates)
}

/// Checks one candidate against one authority: who signed, or why it does not count.
pub fn verify_candidate(
    authority: &Authority,
    candidate: &Candidate,
    digest: &Digest,
) -> Result<Signer, VerifyError> {
    match (authority, candidate) {
        (Authority::Key { key }, Candidate::Legacy(sig)) => {
            sig.verify_with_key(key, digest)?;
            Ok(Signer::Key {
                fingerprint: key.fingerprint().to_string(),
            })
        }
        (Authority::Key { key }, Candidate::Attestation(att)) => {
            att.verify_with_key(key, digest)?;
            Ok(Signer::Key {
                fingerprint: key.fingerprint().to_string(),
            })
        }
        (Authority::Keyless { .. }, _) => Err(VerifyError::KeylessNotSupported {
            authority: authority.to_string(),
        }),
    }
}

/// Applies the policy to already collected candidates (pure; no I/O).
pub fn evaluate(
    artifact: &ResolvedArtifact,
    policy: &TrustPolicy,
    candidates: &[Candidate],
) -> Result<Verification, VerifyError> {
    let mut signatures = Vec::new();
    let mut satisfied = Vec::new();
    let mut failures: Vec<VerifyError> = Vec::new();
    let mut details = Vec::new();
    for named in &policy.authorities {
        let mut ok = false;
        for candidate in candidates {
            match verify_candidate(&named.authority, candidate, &artifact.digest) {
                Ok(signer) => {
                    ok = true;
                    signatures.push(VerifiedSignature {
                        authority: named.name.clone(),
                        signer,
                        source: candidate.describe(),
                    });
                }
                Err(e) if e.is_unverified() => failures.push(e),
                Err(e) => return Err(e),
            }
        }
        if ok {
            satisfied.push(named.name.clone());
            details.push(format!("{} ({}): signed", named.name, named.authority));
        } else {
            details.push(format!(
                "{} ({}): no valid signature",
                named.name, named.authority
            ));
        }
    }
    let needed = policy.require.needed(policy.authorities.len());
    if satisfied.len() >= needed {
        return Ok(Verification {
            reference: artifact.reference.pinned(&artifact.digest),
            digest: artifact.digest.clone(),
            verified: true,
            require: policy.describe_rule(),
            satisfied,
            signatures,
            provenance: ArtifactProvenance::of(artifact),
        });
    }
    if satisfied.is_empty() {
        return Err(match most_telling(failures) {
            Some(VerifyError::SignatureInvalid { .. }) | None => VerifyError::SignatureInvalid {
                signatures: candidates.len(),
                authorities: describe_authorities(policy),
            },
            Some(other) => other,
        });
    }
    Err(VerifyError::PolicyNotSatisfied {
        required: policy.describe_rule(),
        satisfied: satisfied.len(),
        details,
    })
}

/// The failure that says most about why nothing verified: a trusted signature over the
/// wrong digest beats a malformed payload, which beats bad encoding, which beats "not
/// signed by this key".
fn most_telling(failures: Vec<VerifyError>) -> Option<VerifyError> {
    let rank = |e: &VerifyError| match e {
        VerifyError::PayloadDigestMismatch { .. } => 0,
        VerifyError::InvalidPayload { .. } => 1,
        VerifyError::BadSignatureEncoding { .. } => 2,
        _ => 3,
    };
    failures.into_iter().min_by_key(rank)
}

fn describe_authorities(policy: &TrustPolicy) -> String {
    policy
        .authorities
        .iter()
        .map(|a| format!("{} ({})", a.name, a.authority))
        .collect::<Vec<_>>()
        .join(", ")
}
