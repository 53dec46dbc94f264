//! Reading an artifact back: resolve the reference to a digest, read the manifest (only the
//! manifest: this is where signature verification will sit, before any layer is fetched),
//! then download the content layer checked while it streams and unpack it with limits.

use std::fs::File;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::Serialize;

use super::archive::{self, Limits};
use super::format::{
    Descriptor, ImageManifest, ManifestKind, DOCKER_MANIFEST_LIST_MEDIA_TYPE, OCI_INDEX_MEDIA_TYPE,
};
use super::objects::{self, ContentMode, Object};
use super::ArtifactError;
use crate::digest::Digest;
use crate::reference::Reference;
use crate::registry::{FetchedManifest, RegistryError, Repository};

/// An artifact whose manifest has been read and whose digest is known.
#[derive(Debug, Clone)]
pub struct ResolvedArtifact {
    /// The reference as given, pinned to the digest.
    pub reference: Reference,
    /// The manifest digest.
    pub digest: Digest,
    /// The exact manifest bytes.
    pub manifest_bytes: Bytes,
    /// The manifest media type.
    pub media_type: String,
    /// The parsed manifest.
    pub manifest: ImageManifest,
    /// The content layer (Flux media type, else the first tar+gzip layer).
    pub layer: Descriptor,
}

/// Reads the manifest `reference` points at and picks its content layer. Downloads nothing
/// but the manifest.
pub async fn resolve(
    repo: &Repository,
    reference: &Reference,
) -> Result<ResolvedArtifact, ArtifactError> {
    let at = Repository::manifest_ref(reference)?;
    let fetched = repo.fetch_manifest(at).await?;
    from_manifest(reference, fetched)
}

/// Builds a [`ResolvedArtifact`] from manifest bytes already fetched and digest-checked
/// (from a registry, or read back from a cache): refuses indexes and picks the content layer.
pub fn from_manifest(
    reference: &Reference,
    fetched: FetchedManifest,
) -> Result<ResolvedArtifact, ArtifactError> {
    if fetched.media_type == OCI_INDEX_MEDIA_TYPE
        || fetched.media_type == DOCKER_MANIFEST_LIST_MEDIA_TYPE
    {
        return Err(ArtifactError::NotAnArtifact {
            reference: reference.to_string(),
            reason: format!(
                "it is an image index ({}); address one of its manifests by digest, or use \
                 `tresor verify` to check the index's signatures",
                fetched.media_type
            ),
        });
    }
    let manifest: ImageManifest = serde_json::from_slice(&fetched.bytes).map_err(|e| {
        ArtifactError::Registry(RegistryError::Invalid {
            what: reference.to_string(),
            kind: "manifest".into(),
            message: e.to_string(),
        })
    })?;
    // A container image's layers are a root filesystem, not a manifest tree: even when one
    // is tar+gzip, it is not content to unpack and apply. Its signatures are `tresor
    // verify`'s business, which reads any manifest.
    if ManifestKind::classify(&fetched.media_type, Some(&manifest.config.media_type))
        == ManifestKind::ContainerImage
    {
        return Err(ArtifactError::NotAnArtifact {
            reference: reference.to_string(),
            reason: format!(
                "it is a container image (config {}); tresor pulls, syncs and applies \
                 Flux-format artifacts (config {}) only; `tresor verify` checks an image's \
                 signatures",
                manifest.config.media_type,
                super::format::CONFIG_MEDIA_TYPE
            ),
        });
    }
    let layer = manifest
        .content_layer()
        .cloned()
        .ok_or_else(|| ArtifactError::NotAnArtifact {
            reference: reference.to_string(),
            reason: format!(
                "no content layer (expected {} or a tar+gzip layer; found {})",
                super::format::CONTENT_MEDIA_TYPE,
                if manifest.layers.is_empty() {
                    "no layers".to_string()
                } else {
                    manifest
                        .layers
                        .iter()
                        .map(|l| l.media_type.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ),
        })?;
    Ok(ResolvedArtifact {
        reference: reference.with_digest(fetched.digest.clone()),
        digest: fetched.digest,
        manifest_bytes: fetched.bytes,
        media_type: fetched.media_type,
        manifest,
        layer,
    })
}

/// Downloads the content layer into a temporary file (size and digest checked).
pub async fn fetch_layer(
    repo: &Repository,
    artifact: &ResolvedArtifact,
) -> Result<File, ArtifactError> {
    Ok(repo.fetch_blob(&artifact.layer).await?)
}

/// Result of `tresor pull`.
#[derive(Debug, Clone, Serialize)]
pub struct PullOutcome {
    /// Digest-pinned reference.
    pub reference: String,
    /// Manifest digest.
    pub digest: Digest,
    /// Output directory.
    pub output: PathBuf,
    /// Files written.
    pub files: Vec<String>,
}

/// Pulls the artifact into `output` atomically: it is unpacked into a staging directory next
/// to `output`, `check`ed (e.g. by the policy) and renamed into place only when everything
/// succeeded; otherwise nothing appears at `output`. `output` must not exist or be an empty
/// directory.
pub async fn pull_to_dir<E: From<ArtifactError>>(
    repo: &Repository,
    artifact: &ResolvedArtifact,
    output: &Path,
    limits: &Limits,
    check: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<PullOutcome, E> {
    check_output(output)?;
    let layer = fetch_layer(repo, artifact).await?;
    let parent = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|source| ArtifactError::Io {
        path: parent.clone(),
        source,
    })?;
    let stage = tempfile::Builder::new()
        .prefix(".tresor-pull-")
        .tempdir_in(&parent)
        .map_err(|source| ArtifactError::Io {
            path: parent.clone(),
            source,
        })?;
    let size = artifact.layer.size;
    let stage_path = stage.path().to_path_buf();
    let limits = limits.clone();
    let files = tokio::task::spawn_blocking(move || {
        archive::extract_to_dir(std::io::BufReader::new(layer), size, &stage_path, &limits)
    })
    .await
    .map_err(|e| ArtifactError::Input(format!("extraction failed unexpectedly: {e}")))?
    .map_err(ArtifactError::from)?;
    check(stage.path())?;
    // Re-check right before the switch: another process may have created it meanwhile.
    check_output(output)?;
    if output.exists() {
        std::fs::remove_dir(output).map_err(|source| ArtifactError::Io {
            path: output.to_path_buf(),
            source,
        })?;
    }
    let staged = stage.keep();
    std::fs::rename(&staged, output).map_err(|source| {
        let _ = std::fs::remove_dir_all(&staged);
        ArtifactError::Io {
            path: output.to_path_buf(),
            source,
        }
    })?;
    Ok(PullOutcome {
        reference: artifact.reference.pinned(&artifact.digest),
        digest: artifact.digest.clone(),
        output: output.to_path_buf(),
        files,
    })
}

fn check_output(output: &Path) -> Result<(), ArtifactError> {
    match std::fs::read_dir(output) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                Err(ArtifactError::OutputExists {
                    path: output.to_path_buf(),
                })
            } else {
                Ok(())
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ArtifactError::Io {
            path: output.to_path_buf(),
            source,
        }),
    }
}

/// Downloads the layer and parses the objects in it (in memory, with limits): what `diff`
/// compares a directory against.
pub async fn read_objects(
    repo: &Repository,
    artifact: &ResolvedArtifact,
    limits: &Limits,
    mode: ContentMode,
) -> Result<Vec<Object>, ArtifactError> {
    let files = read_files(repo, artifact, limits).await?;
    Ok(objects::parse_tree(&files, mode)?)
}

/// Downloads the layer and returns its files (relative path, bytes) in memory, with limits.
pub async fn read_files(
    repo: &Repository,
    artifact: &ResolvedArtifact,
    limits: &Limits,
) -> Result<Vec<(String, Vec<u8>)>, ArtifactError> {
    let layer = fetch_layer(repo, artifact).await?;
    let size = artifact.layer.size;
    let limits = limits.clone();
    tokio::task::spawn_blocking(move || {
        let files = archive::read_files(std::io::BufReader::new(layer), size, &limits)?;
        Ok(files.into_iter().map(|f| (f.path, f.data)).collect())
    })
    .await
    .map_err(|e| ArtifactError::Input(format!("reading the artifact failed unexpectedly: {e}")))?
}
