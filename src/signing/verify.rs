//! Verification: collect candidate signatures, check each against each authority, apply
//! the policy's rule.
//!
//! Reads only the `.sig` manifest, the bundle referrers and their small payload blobs; the
//! artifact's own layers are never touched, so callers run this right after reading the
//! manifest and before any download. Adding a signature source means a new [`Candidate`]
//! variant plus a collector in [`collect_candidates`]; adding an authority kind means a new
//! [`PreparedAuthority`] variant and its arms in [`verify_candidate`].

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bytes::Bytes;
use serde::Serialize;

use super::attestation::{self, DsseAttestation};
use super::bundle::{self, BundleAuthority};
use super::identity::KeylessIdentity;
use super::keyless::{self, KeylessError};
use super::legacy::{self, LegacySignature};
use super::policy::{Authority, TrustPolicy, TrustedRootSource};
use super::referrers;
use super::trust_root::{TrustRoot, MAX_TRUSTED_ROOT_BYTES};
use super::{PublicKey, VerifyError};
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
    /// A cosign v3 Sigstore bundle (v0.3), from a referrer manifest.
    Bundle {
        /// Where it was found, e.g. `referrer sha256:…`.
        source: String,
        /// The bundle JSON exactly as stored.
        bytes: Bytes,
    },
}

impl Candidate {
    /// How the candidate is named in results and messages.
    pub fn describe(&self) -> String {
        match self {
            Self::Legacy(s) => s.describe(),
            Self::Attestation(a) => a.describe(),
            Self::Bundle { source, .. } => source.clone(),
        }
    }
}

/// An authority ready to check signatures: the key with its PEM (bundles take PEM), or the
/// keyless identity with its trusted root already read and parsed.
#[derive(Debug, Clone)]
pub enum PreparedAuthority {
    /// A public key.
    Key {
        /// The key.
        key: PublicKey,
        /// Its PEM form, for [`BundleAuthority::Key`].
        pem: String,
    },
    /// A keyless signer.
    Keyless {
        /// Required certificate identity and issuer.
        identity: KeylessIdentity,
        /// Fulcio CAs and Rekor keys.
        root: TrustRoot,
    },
}

/// A trust policy whose authorities are prepared: what [`evaluate`] checks against. Trusted
/// roots are read once per verification (and once per file), not once per candidate.
#[derive(Debug, Clone)]
pub struct PreparedPolicy<'a> {
    /// The policy as loaded.
    pub policy: &'a TrustPolicy,
    /// Its authorities, in the same order.
    pub authorities: Vec<PreparedAuthority>,
}

impl<'a> PreparedPolicy<'a> {
    /// Prepares `policy`: reads and parses each keyless authority's trusted root.
    ///
    /// Fails with [`VerifyError::TrustedRoot`] (an error, exit 2) when a trusted root cannot
    /// be read or is not a Sigstore trusted root.
    pub fn load(policy: &'a TrustPolicy) -> Result<Self, VerifyError> {
        let mut roots: Vec<(PathBuf, TrustRoot)> = Vec::new();
        let mut authorities = Vec::new();
        for named in &policy.authorities {
            authorities.push(match &named.authority {
                Authority::Key { key } => PreparedAuthority::Key {
                    key: key.clone(),
                    pem: key.to_pem(),
                },
                Authority::Keyless {
                    identity,
                    issuer,
                    trusted_root,
                } => {
                    let root = match trusted_root {
                        TrustedRootSource::Loaded { root, .. } => root.clone(),
                        TrustedRootSource::File(path) => {
                            match roots.iter().find(|(p, _)| p == path) {
                                Some((_, root)) => root.clone(),
                                None => {
                                    let root = read_trusted_root(path).map_err(|source| {
                                        VerifyError::TrustedRoot {
                                            authority: named.name.clone(),
                                            path: path.clone(),
                                            source,
                                        }
                                    })?;
                                    roots.push((path.clone(), root.clone()));
                                    root
                                }
                            }
                        }
                    };
                    PreparedAuthority::Keyless {
                        identity: KeylessIdentity {
                            identity: identity.clone(),
                            issuer: issuer.clone(),
                        },
                        root,
                    }
                }
            });
        }
        Ok(Self {
            policy,
            authorities,
        })
    }
}

/// Reads a `trusted_root.json`, bounded.
fn read_trusted_root(path: &Path) -> Result<TrustRoot, KeylessError> {
    let mut json = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| {
            f.take(MAX_TRUSTED_ROOT_BYTES as u64 + 1)
                .read_to_end(&mut json)
        })
        .map_err(|e| KeylessError::TrustRootInvalid {
            message: format!("cannot read it: {e}"),
        })?;
    TrustRoot::from_json(&json)
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
    let prepared = PreparedPolicy::load(policy)?;
    let candidates = collect_candidates(repo, &artifact.digest).await?;
    if candidates.is_empty() {
        return Err(VerifyError::NoSignatures {
            reference: artifact.reference.pinned(&artifact.digest),
            tag: format!(
                "{}, nor bundles in referrers or {}",
                legacy::signature_tag(&artifact.digest),
                referrers::fallback_tag(&artifact.digest)
            ),
        });
    }
    evaluate(artifact, &prepared, &candidates, SystemTime::now())
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
    for a in &policy.authorities {
        if matches!(a.authority, Authority::Keyless { .. }) {
            return Err(VerifyError::KeylessNotSupported {
                authority: a.name.clone(),
            });
        }
    }
    let prepared = PreparedPolicy::load(policy)?;
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
    let verification = evaluate(artifact, &prepared, &candidates, SystemTime::now())?;
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

/// Every signature stored for `digest`, from every source tresor reads: the legacy `.sig`
/// layers, then the Sigstore bundles (referrers API and `sha256-<hex>` fallback tag).
pub async fn collect_candidates(
    repo: &Repository,
    digest: &Digest,
) -> Result<Vec<Candidate>, VerifyError> {
    let mut candidates: Vec<Candidate> = legacy::collect(repo, digest)
        .await?
        .into_iter()
        .map(Candidate::Legacy)
        .collect();
    candidates.extend(
        referrers::collect(repo, digest)
            .await?
            .into_iter()
            .map(|b| Candidate::Bundle {
                source: b.source,
                bytes: b.bytes,
            }),
    );
    Ok(candidates)
}

/// Checks one candidate against one authority: who signed, or why it does not count.
/// `now` bounds how far in the future a transparency-log entry may claim to be.
pub fn verify_candidate(
    authority: &PreparedAuthority,
    candidate: &Candidate,
    digest: &Digest,
    now: SystemTime,
) -> Result<Signer, VerifyError> {
    let key_signer = |key: &PublicKey| Signer::Key {
        fingerprint: key.fingerprint().to_string(),
    };
    match (authority, candidate) {
        (PreparedAuthority::Key { key, .. }, Candidate::Legacy(sig)) => {
            sig.verify_with_key(key, digest)?;
            Ok(key_signer(key))
        }
        (PreparedAuthority::Key { key, .. }, Candidate::Attestation(att)) => {
            att.verify_with_key(key, digest)?;
            Ok(key_signer(key))
        }
        (PreparedAuthority::Key { key, pem }, Candidate::Bundle { bytes, .. }) => {
            bundle::verify_bundle(
                bytes,
                &digest.to_string(),
                &BundleAuthority::Key {
                    public_key_pem: pem,
                },
                now,
            )?;
            Ok(key_signer(key))
        }
        (PreparedAuthority::Keyless { identity, root }, Candidate::Legacy(sig)) => {
            let annotations: BTreeMap<String, String> = [
                (keyless::SIGNATURE_ANNOTATION, &sig.signature),
                (keyless::CERTIFICATE_ANNOTATION, &sig.certificate),
                (keyless::CHAIN_ANNOTATION, &sig.chain),
                (keyless::BUNDLE_ANNOTATION, &sig.bundle),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k.to_owned(), v)))
            .collect();
            let signer =
                keyless::verify_legacy_keyless(&sig.payload, &annotations, identity, root, now)?;
            legacy::check_payload_digest(&sig.payload, digest)?;
            Ok(certificate_signer(signer))
        }
        (PreparedAuthority::Keyless { identity, root }, Candidate::Bundle { bytes, .. }) => {
            let signer = bundle::verify_bundle(
                bytes,
                &digest.to_string(),
                &BundleAuthority::Keyless { identity, root },
                now,
            )?;
            Ok(certificate_signer(signer))
        }
        (PreparedAuthority::Keyless { identity, .. }, Candidate::Attestation(_)) => {
            Err(VerifyError::KeylessNotSupported {
                authority: format!("keyless {}", identity.identity),
            })
        }
    }
}

fn certificate_signer(signer: super::identity::VerifiedSigner) -> Signer {
    Signer::Certificate {
        identity: signer.identity,
        issuer: signer.issuer.unwrap_or_default(),
    }
}

/// Applies the prepared policy to already collected candidates (pure; no I/O). `now` bounds
/// how far in the future a transparency-log entry may claim to be.
pub fn evaluate(
    artifact: &ResolvedArtifact,
    prepared: &PreparedPolicy<'_>,
    candidates: &[Candidate],
    now: SystemTime,
) -> Result<Verification, VerifyError> {
    let policy = prepared.policy;
    let mut signatures = Vec::new();
    let mut satisfied = Vec::new();
    let mut failures: Vec<VerifyError> = Vec::new();
    let mut details = Vec::new();
    for (named, authority) in policy.authorities.iter().zip(&prepared.authorities) {
        let mut ok = false;
        for candidate in candidates {
            match verify_candidate(authority, candidate, &artifact.digest, now) {
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
            Some(telling) if rank(&telling) < GENERIC => telling,
            _ => VerifyError::SignatureInvalid {
                signatures: candidates.len(),
                authorities: describe_authorities(policy),
            },
        });
    }
    Err(VerifyError::PolicyNotSatisfied {
        required: policy.describe_rule(),
        satisfied: satisfied.len(),
        details,
    })
}

/// Rank of failures that only say "not signed by this authority"; reported as the summary
/// [`VerifyError::SignatureInvalid`].
const GENERIC: u8 = 5;

/// How much a failure says about why nothing verified (lower says more): a trusted signature
/// over the wrong digest beats a certificate for another identity or issuer, which beats
/// broken keyless evidence (chain, validity, transparency log), a malformed payload and bad
/// encoding, which beat "not signed by this authority".
fn rank(e: &VerifyError) -> u8 {
    match e {
        VerifyError::PayloadDigestMismatch { .. }
        | VerifyError::Keyless(KeylessError::SubjectDigestMismatch { .. }) => 0,
        VerifyError::Keyless(
            KeylessError::IdentityMismatch { .. } | KeylessError::IssuerMismatch { .. },
        ) => 1,
        VerifyError::Keyless(
            KeylessError::CertificateChainInvalid { .. }
            | KeylessError::CertificateExpired { .. }
            | KeylessError::TlogEntryInvalid { .. }
            | KeylessError::TlogEntryMissing,
        ) => 2,
        VerifyError::InvalidPayload { .. } => 3,
        VerifyError::BadSignatureEncoding { .. } => 4,
        _ => GENERIC,
    }
}

/// The failure that says most about why nothing verified (see [`rank`]).
fn most_telling(failures: Vec<VerifyError>) -> Option<VerifyError> {
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
