//! `tresor inspect`: what an artifact is (digest, media types, provenance, size, files).

use std::collections::BTreeMap;

use serde::Serialize;

use super::archive::{self, Limits};
use super::fetch::{self, ResolvedArtifact};
use super::format::{ANNOTATION_CREATED, ANNOTATION_REVISION, ANNOTATION_SOURCE};
use super::ArtifactError;
use crate::digest::Digest;
use crate::registry::Repository;

/// One file in the artifact.
#[derive(Debug, Clone, Serialize)]
pub struct FileEntry {
    /// Relative path.
    pub path: String,
    /// Uncompressed size.
    pub size: u64,
}

/// Everything `tresor inspect` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    /// Digest-pinned reference.
    pub reference: String,
    /// Manifest digest.
    pub digest: Digest,
    /// Manifest media type.
    pub media_type: String,
    /// Config media type.
    pub config_media_type: String,
    /// Content layer media type.
    pub layer_media_type: String,
    /// Content layer digest.
    pub layer_digest: Digest,
    /// `org.opencontainers.image.source`.
    pub source: Option<String>,
    /// `org.opencontainers.image.revision`.
    pub revision: Option<String>,
    /// `org.opencontainers.image.created`.
    pub created: Option<String>,
    /// All manifest annotations.
    pub annotations: BTreeMap<String, String>,
    /// Manifest + config + layers, in bytes.
    pub size: u64,
    /// Files in the content layer.
    pub files: Vec<FileEntry>,
    /// Images pinned by `push --pin-images`: reference as written → digest.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub pinned_images: BTreeMap<String, String>,
}

/// Reads the manifest and lists the content layer (streamed, bounded, nothing written).
pub async fn inspect(
    repo: &Repository,
    artifact: &ResolvedArtifact,
    limits: &Limits,
) -> Result<Inspection, ArtifactError> {
    let layer = fetch::fetch_layer(repo, artifact).await?;
    let size = artifact.layer.size;
    let limits = limits.clone();
    let files = tokio::task::spawn_blocking(move || {
        archive::list_files(std::io::BufReader::new(layer), size, &limits)
    })
    .await
    .map_err(|e| {
        ArtifactError::Input(format!("listing the artifact failed unexpectedly: {e}"))
    })??;
    let m = &artifact.manifest;
    let annotation = |k: &str| m.annotations.get(k).cloned();
    Ok(Inspection {
        reference: artifact.reference.pinned(&artifact.digest),
        digest: artifact.digest.clone(),
        media_type: artifact.media_type.clone(),
        config_media_type: m.config.media_type.clone(),
        layer_media_type: artifact.layer.media_type.clone(),
        layer_digest: artifact.layer.digest.clone(),
        source: annotation(ANNOTATION_SOURCE),
        revision: annotation(ANNOTATION_REVISION),
        created: annotation(ANNOTATION_CREATED),
        annotations: m.annotations.clone(),
        size: artifact.manifest_bytes.len() as u64
            + m.config.size
            + m.layers.iter().map(|l| l.size).sum::<u64>(),
        files: files
            .into_iter()
            .map(|(path, size)| FileEntry { path, size })
            .collect(),
        pinned_images: annotation(super::format::ANNOTATION_PINNED_IMAGES)
            .and_then(|v| super::format::parse_pinned_images(&v))
            .unwrap_or_default(),
    })
}
