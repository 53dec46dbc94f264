//! Finding the cosign v3 Sigstore bundles attached to an artifact.
//!
//! `cosign sign --new-bundle-format` stores each bundle as a *referrer*: an OCI manifest with
//! `artifactType` = [`BUNDLE_V03_MEDIA_TYPE`], `subject` = the artifact, and one layer (the
//! bundle JSON). Registries with the OCI referrers API list them at
//! `/v2/<repo>/referrers/<digest>`; for the others (Distribution 2.8, OCI layouts) cosign keeps
//! an image index under the fallback tag `sha256-<hex>` listing the same manifests. tresor
//! reads both, bounded: at most [`MAX_BUNDLE_REFERRERS`] bundle referrers, bundle blobs of at
//! most [`MAX_BUNDLE_BYTES`]. Only referrer manifests and bundle blobs are fetched, never the
//! artifact's own layers.

use std::collections::BTreeSet;

use bytes::Bytes;

use super::bundle::{BUNDLE_V03_MEDIA_TYPE, MAX_BUNDLE_BYTES};
use super::VerifyError;
use crate::artifact::format::{
    Descriptor, ImageIndex, ImageManifest, DOCKER_MANIFEST_LIST_MEDIA_TYPE, OCI_INDEX_MEDIA_TYPE,
};
use crate::digest::Digest;
use crate::registry::{ManifestRef, RegistryError, Repository};

/// Most bundle referrers read for one artifact; more is refused as misbehaviour.
pub const MAX_BUNDLE_REFERRERS: usize = 64;

/// One bundle found for an artifact, not yet verified.
#[derive(Debug, Clone)]
pub struct StoredBundle {
    /// Where it was found, e.g. `referrer sha256:…`.
    pub source: String,
    /// The bundle JSON exactly as stored (digest checked).
    pub bytes: Bytes,
}

/// The fallback tag listing the referrers of `digest`: `sha256-<hex>`.
pub fn fallback_tag(digest: &Digest) -> String {
    format!("{}-{}", digest.algorithm(), digest.hex())
}

/// The OCI empty descriptor's media type: cosign's referrer manifests use it for their config.
pub const EMPTY_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";

/// Every bundle stored for `digest`: referrers API first, then the fallback tag (both, since a
/// registry may have gained the API after bundles were pushed under the tag), deduplicated.
///
/// A fallback index entry counts when its `artifactType` is the bundle type, or is
/// [`EMPTY_CONFIG_MEDIA_TYPE`] or absent: cosign v2 writes the index through
/// go-containerregistry, which records the referrer's *config* media type there instead of the
/// manifest's `artifactType`, so the referrer manifest itself decides (it must hold a bundle
/// layer).
///
/// Fails with [`VerifyError::TooManySignatures`] when more than [`MAX_BUNDLE_REFERRERS`]
/// possible bundle referrers are listed (before fetching any of them), and with registry
/// errors. Oversized bundles and referrers announced as bundles without a bundle layer are
/// skipped with a warning.
pub async fn collect(repo: &Repository, digest: &Digest) -> Result<Vec<StoredBundle>, VerifyError> {
    let mut listed: Vec<Descriptor> = Vec::new();
    if let Some(index) = repo.referrers(digest, Some(BUNDLE_V03_MEDIA_TYPE)).await? {
        listed.extend(
            index
                .manifests
                .into_iter()
                .filter(|d| d.artifact_type.as_deref() == Some(BUNDLE_V03_MEDIA_TYPE)),
        );
    }
    let tag = fallback_tag(digest);
    if let Some(index) = fallback_index(repo, &tag).await? {
        listed.extend(index.manifests.into_iter().filter(|d| {
            matches!(
                d.artifact_type.as_deref(),
                None | Some(BUNDLE_V03_MEDIA_TYPE | EMPTY_CONFIG_MEDIA_TYPE)
            )
        }));
    }
    let mut seen = BTreeSet::new();
    let referrers: Vec<Descriptor> = listed
        .into_iter()
        .filter(|d| seen.insert(d.digest.clone()))
        .collect();
    if referrers.len() > MAX_BUNDLE_REFERRERS {
        return Err(VerifyError::TooManySignatures {
            tag: format!("referrers of {digest}"),
            count: referrers.len(),
            limit: MAX_BUNDLE_REFERRERS,
        });
    }
    let mut out = Vec::new();
    for referrer in referrers {
        let announced = referrer.artifact_type.as_deref() == Some(BUNDLE_V03_MEDIA_TYPE);
        if let Some(bundle) = read_bundle(repo, &referrer.digest, announced).await? {
            out.push(bundle);
        }
    }
    Ok(out)
}

/// The image index under the fallback tag, `None` when the tag does not exist or holds
/// something else (a tag named like this is cosign's; anything else is not ours to judge).
async fn fallback_index(repo: &Repository, tag: &str) -> Result<Option<ImageIndex>, VerifyError> {
    let fetched = match repo.fetch_manifest(ManifestRef::Tag(tag)).await {
        Ok(f) => f,
        Err(RegistryError::ManifestNotFound { .. } | RegistryError::RepositoryNotFound { .. }) => {
            return Ok(None)
        }
        Err(e) => return Err(e.into()),
    };
    if fetched.media_type != OCI_INDEX_MEDIA_TYPE
        && fetched.media_type != DOCKER_MANIFEST_LIST_MEDIA_TYPE
    {
        tracing::warn!(tag = %tag, media_type = %fetched.media_type, "fallback referrers tag is not an image index; ignoring it");
        return Ok(None);
    }
    serde_json::from_slice(&fetched.bytes)
        .map(Some)
        .map_err(|e| VerifyError::InvalidSignatureManifest {
            tag: tag.to_string(),
            message: e.to_string(),
        })
}

/// Reads one referrer manifest (by digest, checked) and its bundle layer; `None` when it holds
/// no bundle. `announced`: the listing said it is a bundle referrer, so a manifest without a
/// bundle layer is worth a warning (otherwise it is another kind of referrer, e.g. an SBOM).
async fn read_bundle(
    repo: &Repository,
    manifest_digest: &Digest,
    announced: bool,
) -> Result<Option<StoredBundle>, VerifyError> {
    let source = format!("referrer {manifest_digest}");
    let fetched = repo
        .fetch_manifest(ManifestRef::Digest(manifest_digest))
        .await?;
    let manifest: ImageManifest = serde_json::from_slice(&fetched.bytes).map_err(|e| {
        VerifyError::InvalidSignatureManifest {
            tag: source.clone(),
            message: e.to_string(),
        }
    })?;
    let Some(layer) = manifest
        .layers
        .iter()
        .find(|l| l.media_type == BUNDLE_V03_MEDIA_TYPE)
    else {
        if announced || manifest.artifact_type.as_deref() == Some(BUNDLE_V03_MEDIA_TYPE) {
            tracing::warn!(referrer = %manifest_digest, "bundle referrer has no bundle layer; skipping it");
        } else {
            tracing::debug!(referrer = %manifest_digest, "referrer is not a bundle; skipping it");
        }
        return Ok(None);
    };
    let limit = MAX_BUNDLE_BYTES as u64;
    if layer.size > limit {
        tracing::warn!(referrer = %manifest_digest, size = layer.size, "skipping oversized bundle");
        return Ok(None);
    }
    let bytes = repo.fetch_small_blob(layer, limit).await?;
    Ok(Some(StoredBundle { source, bytes }))
}
