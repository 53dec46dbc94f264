//! The OCI wire format: media types, descriptors, image manifests and indexes — what
//! registries and OCI layouts store. It sits below both the registry client (which moves
//! these documents) and the artifact format (which gives them meaning), so neither of the
//! two has to import the other.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// OCI image manifest media type; the only manifest type tresor writes.
pub const OCI_MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const OCI_INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// Docker v2 schema 2 manifest media type (read for interop, e.g. cosign fixtures).
pub const DOCKER_MANIFEST_MEDIA_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list media type.
pub const DOCKER_MANIFEST_LIST_MEDIA_TYPE: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
/// Flux's artifact config media type.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.cncf.flux.config.v1+json";
/// Flux's content layer media type (a tar+gzip of the manifest tree).
pub const CONTENT_MEDIA_TYPE: &str = "application/vnd.cncf.flux.content.v1.tar+gzip";
/// Generic tar+gzip layer media types accepted as a fallback content layer.
pub const TAR_GZIP_MEDIA_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
];

/// OCI image config media type: the config of a container image (cosign's `.sig`
/// manifests reuse it).
pub const OCI_IMAGE_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// Docker container image config media type.
pub const DOCKER_IMAGE_CONFIG_MEDIA_TYPE: &str = "application/vnd.docker.container.image.v1+json";

/// OCI layout annotation carrying a manifest's tag in `index.json`.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Accept header for manifest requests: every manifest type tresor can read.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.list.v2+json";

/// Largest manifest tresor reads (registries themselves cap manifests at 4 MiB).
pub const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;

/// A content descriptor: media type, digest, size and optional annotations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced content.
    pub media_type: String,
    /// Digest of the referenced content.
    pub digest: Digest,
    /// Size in bytes of the referenced content.
    pub size: u64,
    /// Optional annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Artifact type (only on index entries and referrers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
}

impl Descriptor {
    /// A descriptor for `data` with `media_type`.
    pub fn for_bytes(media_type: &str, data: &[u8]) -> Self {
        Self {
            media_type: media_type.to_string(),
            digest: Digest::of(data),
            size: data.len() as u64,
            annotations: BTreeMap::new(),
            artifact_type: None,
        }
    }
}

/// An OCI (or Docker v2) image manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    /// Always 2.
    pub schema_version: u32,
    /// The manifest media type (optional in the spec, always written by tresor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Artifact type (OCI 1.1); tresor does not set it, for Flux compatibility.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The config blob.
    pub config: Descriptor,
    /// The layers; a tresor artifact has exactly one.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    /// The manifest this one refers to (OCI 1.1 referrers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// Manifest annotations (source, revision, created, user annotations).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl ImageManifest {
    /// The content layer: the Flux content media type first, else the first tar+gzip layer.
    pub fn content_layer(&self) -> Option<&Descriptor> {
        self.layers
            .iter()
            .find(|l| l.media_type == CONTENT_MEDIA_TYPE)
            .or_else(|| {
                self.layers
                    .iter()
                    .find(|l| TAR_GZIP_MEDIA_TYPES.contains(&l.media_type.as_str()))
            })
    }

    /// Serialises the manifest the way tresor stores it (compact JSON, fixed field order).
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising plain structs and string maps cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// An OCI image index (used for OCI layouts' `index.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    /// Always 2.
    pub schema_version: u32,
    /// The index media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The manifests it lists.
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    /// Index annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}
