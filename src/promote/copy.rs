//! Copying an artifact to another repository (registry or OCI layout) by digest: the
//! manifest (or index and its manifests), config and layers, and the signing material cosign
//! keeps beside it — the `.sig` and `.att` layers, and Sigstore bundle referrers (the
//! `sha256-<hex>` fallback index and the referrers API).
//!
//! Nothing is re-serialised: manifests are pushed as the exact bytes fetched, so digests are
//! kept. Signature and attestation layers are *appended* to what the target already holds
//! ([`legacy::append_layers`]), never replacing another signer's layers. Every read is
//! bounded like verification's (layer counts and payload sizes), and no tag but cosign's
//! own (`.sig`, `.att`, fallback index) is written here: moving the target tag is
//! [`super::promote`]'s last step.

use std::collections::BTreeSet;
use std::io::Read as _;

use bytes::Bytes;
use serde::Serialize;

use super::PromoteError;
use crate::digest::Digest;
use crate::oci::{Descriptor, ImageIndex, OCI_INDEX_MEDIA_TYPE};
use crate::registry::{FetchedManifest, ManifestRef, RegistryError, Repository};
use crate::signing::attestation::{self, DSSE_MEDIA_TYPE, MAX_ENVELOPE_BYTES};
use crate::signing::legacy::{self, MAX_PAYLOAD_BYTES, MAX_SIGNATURE_LAYERS};
use crate::signing::payload::SIMPLE_SIGNING_MEDIA_TYPE;
use crate::signing::referrers::{self, MAX_BUNDLE_REFERRERS};

/// How deep image indexes may nest (index → manifest is depth 1).
const MAX_DEPTH: usize = 2;
/// Most child manifests of one index that are copied.
const MAX_CHILDREN: usize = 256;

/// What a copy did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CopyReport {
    /// Manifests (the artifact, its children, referrers) not yet in the target.
    pub manifests: usize,
    /// Blobs sent (or to be sent).
    pub blobs_copied: usize,
    /// Bytes of those blobs.
    pub bytes_copied: u64,
    /// Blobs the target already had.
    pub blobs_present: usize,
    /// Signature layers (`.sig`) of the source.
    pub signatures: usize,
    /// Attestation layers (`.att`) of the source.
    pub attestations: usize,
    /// Sigstore bundle referrers of the source.
    pub referrers: usize,
}

/// Copies manifest `digest` with everything it references from `from` to `to`, then its
/// signatures, attestations and bundle referrers. With `dry_run` only reads and counts.
pub async fn copy(
    from: &Repository,
    to: &Repository,
    digest: &Digest,
    dry_run: bool,
) -> Result<CopyReport, PromoteError> {
    let mut report = CopyReport::default();
    let fetched = from.fetch_manifest(ManifestRef::Digest(digest)).await?;
    copy_manifest(from, to, fetched, 0, dry_run, &mut report).await?;
    copy_layers(
        from,
        to,
        &legacy::signature_tag(digest),
        SIMPLE_SIGNING_MEDIA_TYPE,
        MAX_PAYLOAD_BYTES,
        dry_run,
        &mut report.signatures,
    )
    .await?;
    copy_layers(
        from,
        to,
        &attestation::attestation_tag(digest),
        DSSE_MEDIA_TYPE,
        MAX_ENVELOPE_BYTES,
        dry_run,
        &mut report.attestations,
    )
    .await?;
    copy_referrers(from, to, digest, dry_run, &mut report).await?;
    Ok(report)
}

/// The parts of a manifest or index that reference other content.
#[derive(serde::Deserialize)]
struct Links {
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

/// Copies the blobs (or child manifests) of `fetched`, then `fetched` itself by digest.
async fn copy_manifest(
    from: &Repository,
    to: &Repository,
    fetched: FetchedManifest,
    depth: usize,
    dry_run: bool,
    report: &mut CopyReport,
) -> Result<(), PromoteError> {
    if to
        .resolve(ManifestRef::Digest(&fetched.digest))
        .await
        .or_else(absent)?
        .is_some()
    {
        return Ok(());
    }
    let links: Links =
        serde_json::from_slice(&fetched.bytes).map_err(|e| RegistryError::Invalid {
            what: format!("manifest {}", fetched.digest),
            kind: "manifest".into(),
            message: e.to_string(),
        })?;
    if links.manifests.len() > MAX_CHILDREN {
        return Err(PromoteError::TooLarge {
            what: format!("index {}", fetched.digest),
            message: format!(
                "{} manifests, more than the {MAX_CHILDREN} tresor copies",
                links.manifests.len()
            ),
        });
    }
    for child in &links.manifests {
        if depth >= MAX_DEPTH {
            return Err(PromoteError::TooLarge {
                what: format!("index {}", fetched.digest),
                message: format!("indexes nested deeper than {MAX_DEPTH} levels"),
            });
        }
        let child = from
            .fetch_manifest(ManifestRef::Digest(&child.digest))
            .await?;
        Box::pin(copy_manifest(from, to, child, depth + 1, dry_run, report)).await?;
    }
    for blob in links.config.iter().chain(&links.layers) {
        copy_blob(from, to, blob, dry_run, report).await?;
    }
    report.manifests += 1;
    if !dry_run {
        to.push_manifest(&fetched.media_type, &fetched.bytes, None)
            .await?;
    }
    Ok(())
}

/// A missing repository in the target means nothing is there yet.
fn absent(e: RegistryError) -> Result<Option<Digest>, RegistryError> {
    match e {
        RegistryError::RepositoryNotFound { .. } | RegistryError::ManifestNotFound { .. } => {
            Ok(None)
        }
        other => Err(other),
    }
}

async fn copy_blob(
    from: &Repository,
    to: &Repository,
    blob: &Descriptor,
    dry_run: bool,
    report: &mut CopyReport,
) -> Result<(), PromoteError> {
    let present = match to.blob_exists(&blob.digest).await {
        Ok(p) => p,
        Err(RegistryError::RepositoryNotFound { .. }) => false,
        Err(e) => return Err(e.into()),
    };
    if present {
        report.blobs_present += 1;
        return Ok(());
    }
    report.blobs_copied += 1;
    report.bytes_copied += blob.size;
    if dry_run {
        return Ok(());
    }
    // fetch_blob checks size and digest while streaming (and bounds the size).
    let mut file = from.fetch_blob(blob).await?;
    let mut data = Vec::new();
    file.read_to_end(&mut data)
        .map_err(|source| RegistryError::Io {
            path: "<temporary blob file>".into(),
            source,
        })?;
    to.push_blob(&blob.digest, Bytes::from(data)).await?;
    Ok(())
}

/// Appends the layers of `tag` in `from` (of `media_type`, bounded) to `tag` in `to`.
async fn copy_layers(
    from: &Repository,
    to: &Repository,
    tag: &str,
    media_type: &str,
    max_bytes: u64,
    dry_run: bool,
    count: &mut usize,
) -> Result<(), PromoteError> {
    let layers = legacy::read_layers(from, tag, media_type, max_bytes)
        .await
        .map_err(|source| PromoteError::Verify {
            stage: format!("reading {tag} of the source to copy it"),
            source: Box::new(source),
        })?;
    *count = layers.len();
    if layers.is_empty() || dry_run {
        return Ok(());
    }
    let layers = layers.into_iter().map(|(_, d, b)| (d, b)).collect();
    legacy::append_layers(to, tag, layers).await?;
    Ok(())
}

/// Copies the bundle referrers of `digest` (referrers API and fallback index) and lists
/// them in the target's fallback index, merged with what is listed there already; a target
/// with the referrers API indexes them itself from their `subject`.
async fn copy_referrers(
    from: &Repository,
    to: &Repository,
    digest: &Digest,
    dry_run: bool,
    report: &mut CopyReport,
) -> Result<(), PromoteError> {
    let tag = referrers::fallback_tag(digest);
    let mut listed: Vec<Descriptor> = Vec::new();
    if let Some(index) = from.referrers(digest, None).await? {
        listed.extend(index.manifests);
    }
    if let Some(index) = fallback_index(from, &tag).await? {
        listed.extend(index.manifests);
    }
    let mut seen = BTreeSet::new();
    listed.retain(|d| seen.insert(d.digest.clone()));
    if listed.len() > MAX_BUNDLE_REFERRERS {
        return Err(PromoteError::TooLarge {
            what: format!("referrers of {digest}"),
            message: format!(
                "{} referrers, more than the {MAX_BUNDLE_REFERRERS} tresor reads",
                listed.len()
            ),
        });
    }
    report.referrers = listed.len();
    if listed.is_empty() || dry_run {
        return Ok(());
    }
    for referrer in &listed {
        let fetched = from
            .fetch_manifest(ManifestRef::Digest(&referrer.digest))
            .await?;
        copy_manifest(from, to, fetched, MAX_DEPTH, false, report).await?;
    }
    if to.referrers(digest, None).await?.is_some() {
        return Ok(());
    }
    let mut index = fallback_index(to, &tag).await?.unwrap_or(ImageIndex {
        schema_version: 2,
        media_type: Some(OCI_INDEX_MEDIA_TYPE.into()),
        manifests: Vec::new(),
        annotations: Default::default(),
    });
    let before = index.manifests.len();
    for d in listed {
        if !index.manifests.iter().any(|m| m.digest == d.digest) {
            index.manifests.push(d);
        }
    }
    if index.manifests.len() > before {
        if index.manifests.len() > MAX_SIGNATURE_LAYERS {
            return Err(PromoteError::TooLarge {
                what: format!("{tag} in the target"),
                message: format!("more than {MAX_SIGNATURE_LAYERS} referrers"),
            });
        }
        let bytes = serde_json::to_vec(&index).map_err(|e| RegistryError::Invalid {
            what: tag.clone(),
            kind: "index".into(),
            message: e.to_string(),
        })?;
        to.push_manifest(OCI_INDEX_MEDIA_TYPE, &bytes, Some(&tag))
            .await?;
    }
    Ok(())
}

/// The image index under the fallback tag, `None` when there is none.
async fn fallback_index(repo: &Repository, tag: &str) -> Result<Option<ImageIndex>, PromoteError> {
    let fetched = match repo.fetch_manifest(ManifestRef::Tag(tag)).await {
        Ok(f) => f,
        Err(RegistryError::ManifestNotFound { .. } | RegistryError::RepositoryNotFound { .. }) => {
            return Ok(None)
        }
        Err(e) => return Err(e.into()),
    };
    let index: ImageIndex =
        serde_json::from_slice(&fetched.bytes).map_err(|e| RegistryError::Invalid {
            what: tag.to_string(),
            kind: "index".into(),
            message: e.to_string(),
        })?;
    Ok(Some(index))
}
