//! `tresor push`: package a directory as artifact format v1 and upload it.
//!
//! Packaging validates the manifests and builds the deterministic layer in parallel (two
//! threads, one pass over the files each), so validation costs no wall time on a multi-core
//! machine. Uploading skips blobs already present, sends the rest in one piece, and refuses
//! to move an existing tag to different content unless asked to.

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;
use serde::Serialize;

use super::archive::{self, PackOptions};
use super::format::{
    Descriptor, ImageManifest, ANNOTATION_CREATED, ANNOTATION_REVISION, ANNOTATION_SOURCE,
    CONFIG_BLOB, CONFIG_MEDIA_TYPE, CONTENT_MEDIA_TYPE, OCI_MANIFEST_MEDIA_TYPE,
};
use super::metadata::Created;
use super::objects::{self, ContentMode};
use super::ArtifactError;
use crate::digest::Digest;
use crate::reference::Reference;
use crate::registry::{ManifestRef, Repository};

/// What goes into the manifest besides the content.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// `org.opencontainers.image.source`.
    pub source: Option<String>,
    /// `org.opencontainers.image.revision`.
    pub revision: Option<String>,
    /// Extra manifest annotations (`--annotation k=v`).
    pub annotations: BTreeMap<String, String>,
    /// Creation time policy.
    pub created: Created,
    /// Allow moving an existing tag to different content.
    pub overwrite: bool,
    /// Pack what symlinks point at instead of refusing them.
    pub resolve_symlinks: bool,
    /// Whether the content must be Kubernetes objects or may be arbitrary files.
    pub content: ContentMode,
}

/// A packaged artifact, ready to upload.
pub struct Package {
    /// The manifest.
    pub manifest: ImageManifest,
    /// Its exact serialisation (what is uploaded and signed).
    pub manifest_bytes: Vec<u8>,
    /// Its digest.
    pub digest: Digest,
    /// The content layer bytes.
    pub layer: Bytes,
    /// Files in the layer, in archive order.
    pub files: Vec<String>,
}

/// Result of a push, as printed by `tresor push --format json`.
#[derive(Debug, Clone, Serialize)]
pub struct PushOutcome {
    /// Digest-pinned reference, `oci://host/repo@sha256:…`.
    pub reference: String,
    /// The repository, `oci://host/repo`.
    pub repository: String,
    /// The tag pushed to.
    pub tag: Option<String>,
    /// Manifest digest.
    pub digest: Digest,
    /// Bytes stored: manifest + config + layer.
    pub size: u64,
    /// Files in the artifact.
    pub files: Vec<String>,
    /// True when the tag already held this content and nothing was written.
    pub unchanged: bool,
    /// Blobs actually uploaded (0 when all were present).
    pub blobs_uploaded: usize,
}

/// Validates and packs `dir` (in parallel) and builds the manifest.
pub fn package(dir: &Path, options: &PushOptions) -> Result<Package, ArtifactError> {
    let content = options.content;
    let (package, _) = package_with(dir, options, |dir| {
        Ok(objects::check_dir(dir, content)?.len())
    })?;
    Ok(package)
}

/// Packs `dir` while `validate` checks it on another thread (e.g. the immutability policy,
/// which needs the full parse anyway, so the tree is parsed once). `validate` must fail
/// with [`ArtifactError::Objects`] on parse errors and duplicates; its result is returned
/// next to the package.
pub fn package_with<V: Send>(
    dir: &Path,
    options: &PushOptions,
    validate: impl FnOnce(&Path) -> Result<V, ArtifactError> + Send,
) -> Result<(Package, V), ArtifactError> {
    let created = options.created.timestamp().map_err(ArtifactError::Input)?;
    let mut annotations = BTreeMap::new();
    for (key, value) in &options.annotations {
        if [ANNOTATION_CREATED, ANNOTATION_SOURCE, ANNOTATION_REVISION].contains(&key.as_str()) {
            return Err(ArtifactError::Annotation {
                annotation: format!("{key}={value}"),
                reason: "set by tresor; use --source, --revision or --reproducible".into(),
            });
        }
        annotations.insert(key.clone(), value.clone());
    }
    annotations.insert(ANNOTATION_CREATED.to_string(), created);
    if let Some(source) = &options.source {
        annotations.insert(ANNOTATION_SOURCE.to_string(), source.clone());
    }
    if let Some(revision) = &options.revision {
        annotations.insert(ANNOTATION_REVISION.to_string(), revision.clone());
    }

    let (packed, validated) = std::thread::scope(|scope| {
        let validation = scope.spawn(|| objects::leaving_cores(1, || validate(dir)));
        (
            archive::pack(
                dir,
                &PackOptions {
                    resolve_symlinks: options.resolve_symlinks,
                },
            ),
            validation.join(),
        )
    });
    // Directory problems (missing, empty, symlinks) come from the packer with the clearest
    // message; parse errors from validation.
    let packed = packed?;
    let validated = validated
        .map_err(|_| ArtifactError::Input("manifest validation failed unexpectedly".into()))??;

    let mut layer = Descriptor::for_bytes(CONTENT_MEDIA_TYPE, &[]);
    layer.digest = packed.digest.clone();
    layer.size = packed.size;
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST_MEDIA_TYPE.to_string()),
        artifact_type: None,
        config: Descriptor::for_bytes(CONFIG_MEDIA_TYPE, CONFIG_BLOB),
        layers: vec![layer],
        subject: None,
        annotations,
    };
    let manifest_bytes = manifest.to_bytes();
    let package = Package {
        digest: Digest::of(&manifest_bytes),
        manifest,
        manifest_bytes,
        layer: Bytes::from(packed.layer),
        files: packed.files,
    };
    Ok((package, validated))
}

/// Uploads `package` to `reference` (which must carry a tag).
pub async fn upload(
    repo: &Repository,
    reference: &Reference,
    package: &Package,
    overwrite: bool,
) -> Result<PushOutcome, ArtifactError> {
    let tag = reference
        .tag()
        .ok_or_else(|| ArtifactError::NotAnArtifact {
            reference: reference.to_string(),
            reason: "push needs a tag: add :TAG to the reference".into(),
        })?;
    let size =
        package.manifest_bytes.len() as u64 + CONFIG_BLOB.len() as u64 + package.layer.len() as u64;
    let outcome = |digest: &Digest, unchanged: bool, blobs_uploaded: usize| PushOutcome {
        reference: reference.pinned(digest),
        repository: reference.repository(),
        tag: Some(tag.to_string()),
        digest: digest.clone(),
        size,
        files: package.files.clone(),
        unchanged,
        blobs_uploaded,
    };

    if let Some(existing) = repo.resolve(ManifestRef::Tag(tag)).await? {
        if existing == package.digest {
            return Ok(outcome(&existing, true, 0));
        }
        if same_content(repo, &existing, &package.manifest).await? {
            tracing::info!(%existing, "tag already holds this content; nothing to push");
            return Ok(outcome(&existing, true, 0));
        }
        if !overwrite {
            return Err(ArtifactError::TagExists {
                reference: reference.to_string(),
                existing,
            });
        }
    }

    // The config blob, then the one content layer the manifest describes.
    let config = (&package.manifest.config, Bytes::from_static(CONFIG_BLOB));
    let layers = package
        .manifest
        .layers
        .iter()
        .map(|l| (l, package.layer.clone()));
    let mut uploaded = 0;
    for (descriptor, data) in std::iter::once(config).chain(layers) {
        if repo.push_blob(&descriptor.digest, data).await? {
            uploaded += 1;
        }
    }
    let digest = repo
        .push_manifest(OCI_MANIFEST_MEDIA_TYPE, &package.manifest_bytes, Some(tag))
        .await?;
    Ok(outcome(&digest, false, uploaded))
}

/// Whether the manifest at `existing` has the same layer and annotations as `manifest`,
/// apart from the creation time: re-pushing an unchanged tree is a no-op, not a conflict.
async fn same_content(
    repo: &Repository,
    existing: &Digest,
    manifest: &ImageManifest,
) -> Result<bool, ArtifactError> {
    let fetched = repo.fetch_manifest(ManifestRef::Digest(existing)).await?;
    let Ok(mut other) = serde_json::from_slice::<ImageManifest>(&fetched.bytes) else {
        return Ok(false);
    };
    let mut ours = manifest.clone();
    other.annotations.remove(ANNOTATION_CREATED);
    ours.annotations.remove(ANNOTATION_CREATED);
    Ok(other == ours)
}
