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
use super::promotion::{Approval, PromotionRecord};
use super::referrers;
use super::subject::Subject;
use super::trust_root::{TrustRoot, MAX_TRUSTED_ROOT_BYTES};
use super::{PublicKey, VerifyError};
use crate::artifact::format::{
    ManifestKind, ANNOTATION_CREATED, ANNOTATION_REVISION, ANNOTATION_SOURCE,
};
use crate::digest::Digest;
use crate::registry::Repository;

/// A signature found for the artifact, not yet checked.
#[derive(Debug, Clone)]
pub enum Candidate {
    /// A layer of the cosign `sha256-<hex>.sig` manifest.
    Legacy(LegacySignature),
    /// A DSSE attestation: a layer of the `sha256-<hex>.att` manifest, or the envelope of an
    /// attestation bundle (cosign v3) from a referrer manifest.
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
    Ok(TrustRoot::from_json(&json)?.with_origin(format!("--trusted-root {}", path.display())))
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

/// The subject's provenance annotations, from the manifest already read.
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
    /// Reads the annotations of `subject`'s manifest.
    pub fn of(subject: &Subject) -> Self {
        let get = |k: &str| subject.annotations.get(k).cloned();
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
    /// What was verified, digest-pinned.
    pub reference: String,
    /// Its manifest digest.
    pub digest: Digest,
    /// The media type of what was verified (image manifest, index, Docker manifest, …).
    pub media_type: String,
    /// What was verified: `artifact`, `container-image`, `image-index` or `other`.
    pub kind: ManifestKind,
    /// Always true (a failed verification is a [`VerifyError`]).
    pub verified: bool,
    /// The rule applied, e.g. `all (2)`.
    pub require: String,
    /// Authorities with at least one valid signature.
    pub satisfied: Vec<String>,
    /// Every valid signature, once, under the one authority it is counted for.
    pub signatures: Vec<VerifiedSignature>,
    /// Source, revision and creation time from the manifest annotations.
    pub provenance: ArtifactProvenance,
}

/// Verifies `subject` (any manifest or index) against `policy`: reads its signatures (manifests and small payload
/// blobs only), checks every candidate against every authority and applies the rule.
///
/// Fails with an error for which [`VerifyError::is_unverified`] holds when the artifact is
/// not trusted: no signatures, none valid ([`VerifyError::SignatureInvalid`], or the most
/// telling per-signature error such as [`VerifyError::PayloadDigestMismatch`] when no
/// authority is satisfied), or too few authorities ([`VerifyError::PolicyNotSatisfied`]).
pub async fn verify(
    repo: &Repository,
    subject: &Subject,
    policy: &TrustPolicy,
) -> Result<Verification, VerifyError> {
    let prepared = PreparedPolicy::load(policy)?;
    let (candidates, attestations) = collect_signatures(repo, &subject.digest).await?;
    if candidates.is_empty() {
        let mut tag = format!(
            "{}, nor bundles in referrers or {}",
            legacy::signature_tag(&subject.digest),
            referrers::fallback_tag(&subject.digest)
        );
        if attestations > 0 {
            tag.push_str(&format!(
                "; {attestations} attestation bundle(s) found there are not signatures: \
                 `tresor verify --attestation` checks them"
            ));
        }
        return Err(VerifyError::NoSignatures {
            reference: subject.pinned(),
            tag,
        });
    }
    evaluate(subject, &prepared, &candidates, SystemTime::now())
}

/// A passed attestation verification: the signers and the verified statements.
#[derive(Debug, Clone, Serialize)]
pub struct AttestationVerification {
    /// Signers, rule and the artifact's annotations, as for signatures.
    #[serde(flatten)]
    pub verification: Verification,
    /// The in-toto statements with a valid signature from a trusted authority.
    pub statements: Vec<serde_json::Value>,
    /// The promotion records among them (`tresor promote`), newest first, each signed by
    /// the approver key it names.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub promotions: Vec<super::promotion::Approval>,
}

/// Verifies the artifact's attestations (DSSE in-toto statements: `.att` layers and cosign v3
/// attestation bundles) against `policy` like [`verify`] does signatures; returns the
/// statements that verified. Reads manifests and small envelope and bundle blobs only.
pub async fn verify_attestations(
    repo: &Repository,
    subject: &Subject,
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
    // `.att` layers (cosign v2, tresor) and attestation bundles (cosign v3 `attest` stores
    // them as referrers, next to its signature bundles, which are skipped here).
    let mut attestations = attestation::collect(repo, &subject.digest).await?;
    attestations.extend(
        referrers::collect(repo, &subject.digest)
            .await?
            .iter()
            .filter_map(|b| DsseAttestation::from_bundle(&b.source, &b.bytes)),
    );
    let candidates: Vec<Candidate> = attestations
        .into_iter()
        .map(Candidate::Attestation)
        .collect();
    if candidates.is_empty() {
        return Err(VerifyError::NoSignatures {
            reference: subject.pinned(),
            tag: format!(
                "{}, nor attestation bundles in referrers or {}",
                attestation::attestation_tag(&subject.digest),
                referrers::fallback_tag(&subject.digest)
            ),
        });
    }
    let verification = evaluate(subject, &prepared, &candidates, SystemTime::now())?;
    // The policy holds; every statement signed by one of its authorities is returned (the
    // rule counted distinct signers, the statements are what they signed).
    let mut statements = Vec::new();
    let mut promotions = Vec::new();
    for candidate in &candidates {
        let Candidate::Attestation(att) = candidate else {
            continue;
        };
        for named in &policy.authorities {
            let Authority::Key { key } = &named.authority else {
                continue;
            };
            match att.verify_with_key(key, &subject.digest) {
                Ok(statement) => {
                    if let Some(record) = PromotionRecord::from_statement(&statement)
                        .filter(|r| r.approver.key == format!("sha256:{}", key.fingerprint()))
                    {
                        promotions.push(Approval {
                            authority: named.name.clone(),
                            policy: None,
                            record,
                        });
                    }
                    statements.push(statement);
                    break;
                }
                Err(e) if e.is_unverified() => {}
                Err(e) => return Err(e),
            }
        }
    }
    promotions.sort_by(|a, b| b.record.time.cmp(&a.record.time));
    Ok(AttestationVerification {
        verification,
        statements,
        promotions,
    })
}

/// Every signature stored for `digest`, from every source tresor reads: the legacy `.sig`
/// layers, then the Sigstore bundles (referrers API and `sha256-<hex>` fallback tag).
///
/// Attestation bundles (cosign v3 `attest` stores them as referrers next to its signature
/// bundles) are not signatures of the artifact and are left out; cosign v3.1.3's `verify`
/// counts them, tresor does not.
pub async fn collect_candidates(
    repo: &Repository,
    digest: &Digest,
) -> Result<Vec<Candidate>, VerifyError> {
    Ok(collect_signatures(repo, digest).await?.0)
}

/// [`collect_candidates`], and how many attestation bundles were left out.
async fn collect_signatures(
    repo: &Repository,
    digest: &Digest,
) -> Result<(Vec<Candidate>, usize), VerifyError> {
    let mut candidates: Vec<Candidate> = legacy::collect(repo, digest)
        .await?
        .into_iter()
        .map(Candidate::Legacy)
        .collect();
    let mut attestations = 0;
    for b in referrers::collect(repo, digest).await? {
        if DsseAttestation::from_bundle(&b.source, &b.bytes).is_some() {
            tracing::debug!(source = %b.source, "attestation bundle is not a signature; skipping it");
            attestations += 1;
            continue;
        }
        candidates.push(Candidate::Bundle {
            source: b.source,
            bytes: b.bytes,
        });
    }
    Ok((candidates, attestations))
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
///
/// N-of-M counts distinct signers: every candidate is checked against every authority, then
/// each signer (a key, or a certificate identity and issuer) is credited to at most one
/// authority, chosen by a maximum matching so that overlapping authorities (two regexps
/// matching one identity) never turn one signer into two. [`Verification::signatures`]
/// lists every valid signature once, under the authority its signer is credited to.
pub fn evaluate(
    subject: &Subject,
    prepared: &PreparedPolicy<'_>,
    candidates: &[Candidate],
    now: SystemTime,
) -> Result<Verification, VerifyError> {
    let policy = prepared.policy;
    let mut valid: Vec<ValidPair> = Vec::new();
    let mut failures: Vec<VerifyError> = Vec::new();
    for (a, authority) in prepared.authorities.iter().enumerate() {
        for (c, candidate) in candidates.iter().enumerate() {
            match verify_candidate(authority, candidate, &subject.digest, now) {
                Ok(signer) => valid.push(ValidPair {
                    authority: a,
                    candidate: c,
                    signer,
                }),
                Err(e) if e.is_unverified() => failures.push(e),
                Err(e) => return Err(e),
            }
        }
    }
    let credit = credit_distinct_signers(policy.authorities.len(), candidates.len(), &valid);
    let signatures = list_signatures(policy, candidates, &valid, &credit);
    let mut satisfied = Vec::new();
    let mut details = Vec::new();
    for (a, named) in policy.authorities.iter().enumerate() {
        match credit.credited.get(a).copied().flatten() {
            Some(_) => {
                satisfied.push(named.name.clone());
                details.push(format!("{} ({}): signed", named.name, named.authority));
            }
            None if valid.iter().any(|p| p.authority == a) => details.push(format!(
                "{} ({}): signed only by signers already counted for other authorities",
                named.name, named.authority
            )),
            None => details.push(format!(
                "{} ({}): no valid signature",
                named.name, named.authority
            )),
        }
    }
    let needed = policy.require.needed(policy.authorities.len());
    if satisfied.len() >= needed {
        return Ok(Verification {
            reference: subject.pinned(),
            digest: subject.digest.clone(),
            media_type: subject.media_type.clone(),
            kind: subject.kind,
            verified: true,
            require: policy.describe_rule(),
            satisfied,
            signatures,
            provenance: ArtifactProvenance::of(subject),
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

/// A candidate that verified under an authority, and who made it.
#[derive(Debug, Clone)]
struct ValidPair {
    authority: usize,
    candidate: usize,
    signer: Signer,
}

/// Every valid signature once, in the order stored, with one authority: the one its signer
/// is credited to when that authority accepts it, else the first authority that does. So a
/// signature is never listed under two authorities.
fn list_signatures(
    policy: &TrustPolicy,
    candidates: &[Candidate],
    valid: &[ValidPair],
    credit: &Credit,
) -> Vec<VerifiedSignature> {
    let mut out = Vec::new();
    for (c, candidate) in candidates.iter().enumerate() {
        let group = credit.group.get(c).copied();
        let credited_here = |p: &&ValidPair| {
            credit
                .credited
                .get(p.authority)
                .copied()
                .flatten()
                .and_then(|i| valid.get(i))
                .is_some_and(|chosen| credit.group.get(chosen.candidate).copied() == group)
        };
        let mine = || valid.iter().filter(|p| p.candidate == c);
        let Some(pair) = mine().find(credited_here).or_else(|| mine().next()) else {
            continue;
        };
        let Some(named) = policy.authorities.get(pair.authority) else {
            continue;
        };
        out.push(VerifiedSignature {
            authority: named.name.clone(),
            signer: pair.signer.clone(),
            source: candidate.describe(),
        });
    }
    out
}

/// Which authority each signer is credited to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Credit {
    /// Per authority: the index into the valid pairs of the signature that credits it.
    credited: Vec<Option<usize>>,
    /// Per candidate: its signer group (candidates made by one signer share one).
    group: Vec<usize>,
}

/// Credits each authority with at most one signer and each signer to at most one authority,
/// crediting as many authorities as possible. Returns, per authority, the index into
/// `valid` of the pair that credits it, and each candidate's signer group.
///
/// A signer is a group of candidates: candidates made by the same [`Signer`] are one group,
/// and so is a candidate that (against all odds) verified as two signers, so one stored
/// signature can never count twice either. The matching is Kuhn's augmenting paths; policies
/// have a handful of authorities and candidates, so its O(V·E) is nothing.
fn credit_distinct_signers(authorities: usize, candidates: usize, valid: &[ValidPair]) -> Credit {
    // Union-find over candidates: join the candidates of each signer.
    let mut parent: Vec<usize> = (0..candidates).collect();
    fn find(parent: &mut [usize], mut x: usize) -> usize {
        while let Some(&p) = parent.get(x) {
            if p == x {
                break;
            }
            let grand = parent.get(p).copied().unwrap_or(p);
            if let Some(slot) = parent.get_mut(x) {
                *slot = grand;
            }
            x = p;
        }
        x
    }
    for (i, a) in valid.iter().enumerate() {
        for b in valid.iter().skip(i + 1) {
            if a.signer == b.signer {
                let (ra, rb) = (
                    find(&mut parent, a.candidate),
                    find(&mut parent, b.candidate),
                );
                if let Some(slot) = parent.get_mut(ra) {
                    *slot = rb;
                }
            }
        }
    }
    // Edges: authority -> (signer group, pair index); the first pair per group is kept.
    let mut edges: Vec<Vec<(usize, usize)>> = vec![Vec::new(); authorities];
    for (i, pair) in valid.iter().enumerate() {
        let group = find(&mut parent, pair.candidate);
        if let Some(list) = edges.get_mut(pair.authority) {
            if !list.iter().any(|(g, _)| *g == group) {
                list.push((group, i));
            }
        }
    }
    fn augment(
        a: usize,
        edges: &[Vec<(usize, usize)>],
        seen: &mut [bool],
        owner: &mut [Option<usize>],
    ) -> bool {
        for &(group, _) in edges.get(a).map(Vec::as_slice).unwrap_or_default() {
            if seen.get(group).copied().unwrap_or(true) {
                continue;
            }
            if let Some(s) = seen.get_mut(group) {
                *s = true;
            }
            let current = owner.get(group).copied().flatten();
            let free = match current {
                None => true,
                Some(other) => augment(other, edges, seen, owner),
            };
            if free {
                if let Some(o) = owner.get_mut(group) {
                    *o = Some(a);
                }
                return true;
            }
        }
        false
    }
    // owner[group] = the authority the group is credited to.
    let mut owner: Vec<Option<usize>> = vec![None; candidates];
    for a in 0..authorities {
        let mut seen = vec![false; candidates];
        augment(a, &edges, &mut seen, &mut owner);
    }
    let mut credited = vec![None; authorities];
    for (group, a) in owner.iter().enumerate() {
        let Some(a) = *a else { continue };
        let pair = edges
            .get(a)
            .and_then(|list| list.iter().find(|(g, _)| *g == group))
            .map(|(_, i)| *i);
        if let Some(slot) = credited.get_mut(a) {
            *slot = pair;
        }
    }
    let group = (0..candidates).map(|c| find(&mut parent, c)).collect();
    Credit { credited, group }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> Signer {
        Signer::Key {
            fingerprint: format!("{n:02x}"),
        }
    }

    fn pair(authority: usize, candidate: usize, signer: Signer) -> ValidPair {
        ValidPair {
            authority,
            candidate,
            signer,
        }
    }

    fn credited_count(authorities: usize, candidates: usize, valid: &[ValidPair]) -> usize {
        credit_distinct_signers(authorities, candidates, valid)
            .credited
            .iter()
            .flatten()
            .count()
    }

    #[test]
    fn one_signature_credits_one_authority() {
        // Both authorities accept candidate 0 (overlapping keyless matchers).
        let valid = [pair(0, 0, key(1)), pair(1, 0, key(1))];
        assert_eq!(credited_count(2, 1, &valid), 1);
    }

    #[test]
    fn two_signatures_by_one_signer_are_one_signer() {
        let valid = [
            pair(0, 0, key(1)),
            pair(0, 1, key(1)),
            pair(1, 0, key(1)),
            pair(1, 1, key(1)),
        ];
        assert_eq!(credited_count(2, 2, &valid), 1);
    }

    #[test]
    fn the_matching_finds_the_assignment_that_credits_most() {
        // Authority 0 accepts signers 1 and 2, authority 1 only signer 1: a greedy
        // first-come assignment would give signer 1 to authority 0 and leave 1 empty.
        let valid = [pair(0, 0, key(1)), pair(0, 1, key(2)), pair(1, 0, key(1))];
        let credit = credit_distinct_signers(2, 2, &valid);
        assert_eq!(credit.credited, vec![Some(1), Some(2)]);
    }

    #[test]
    fn a_candidate_seen_as_two_signers_still_counts_once() {
        let valid = [pair(0, 0, key(1)), pair(1, 0, key(2))];
        assert_eq!(credited_count(2, 1, &valid), 1);
    }
}
