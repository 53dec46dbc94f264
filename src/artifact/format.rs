//! Media types, annotation keys and the OCI manifest shapes of artifact format v1.
//!
//! The OCI wire types themselves live in [`crate::oci`], below the registry client; they are
//! re-exported here because artifact format v1 is written in them.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::digest::Digest;

pub use crate::oci::{
    Descriptor, ImageIndex, ImageManifest, ANNOTATION_REF_NAME, CONFIG_MEDIA_TYPE,
    CONTENT_MEDIA_TYPE, DOCKER_IMAGE_CONFIG_MEDIA_TYPE, DOCKER_MANIFEST_LIST_MEDIA_TYPE,
    DOCKER_MANIFEST_MEDIA_TYPE, MANIFEST_ACCEPT, MAX_MANIFEST_BYTES, OCI_IMAGE_CONFIG_MEDIA_TYPE,
    OCI_INDEX_MEDIA_TYPE, OCI_MANIFEST_MEDIA_TYPE, TAR_GZIP_MEDIA_TYPES,
};

/// What a manifest is, judged from its media type and its config's media type (nothing else
/// is read): what `tresor verify` reports, and how reading an artifact tells a Flux-format
/// artifact from a container image or an index it will not unpack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ManifestKind {
    /// An image manifest with Flux's config media type: what `tresor push` and `flux push
    /// artifact` write.
    Artifact,
    /// An image manifest whose config is a container image config (OCI or Docker).
    ContainerImage,
    /// An OCI image index or a Docker manifest list.
    ImageIndex,
    /// Any other manifest (another artifact type, an unknown config).
    Other,
}

impl ManifestKind {
    /// Classifies a manifest by its media type and, for image manifests, its config's.
    pub fn classify(media_type: &str, config_media_type: Option<&str>) -> Self {
        if media_type == OCI_INDEX_MEDIA_TYPE || media_type == DOCKER_MANIFEST_LIST_MEDIA_TYPE {
            return Self::ImageIndex;
        }
        match config_media_type {
            Some(CONFIG_MEDIA_TYPE) => Self::Artifact,
            Some(OCI_IMAGE_CONFIG_MEDIA_TYPE | DOCKER_IMAGE_CONFIG_MEDIA_TYPE) => {
                Self::ContainerImage
            }
            _ => Self::Other,
        }
    }

    /// How it is named in output: `Flux artifact`, `container image`, `image index`,
    /// `manifest`.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Artifact => "Flux artifact",
            Self::ContainerImage => "container image",
            Self::ImageIndex => "image index",
            Self::Other => "manifest",
        }
    }
}

impl std::fmt::Display for ManifestKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

/// `org.opencontainers.image.source`: where the content came from (repository URL).
pub const ANNOTATION_SOURCE: &str = "org.opencontainers.image.source";
/// `org.opencontainers.image.revision`: the source revision, e.g. `main@sha1:<sha>`.
pub const ANNOTATION_REVISION: &str = "org.opencontainers.image.revision";
/// `org.opencontainers.image.created`: RFC 3339 creation time.
pub const ANNOTATION_CREATED: &str = "org.opencontainers.image.created";
/// `dev.tresor.content`: `files` when pushed with `--content files` (so pull and sync check
/// such content as files, not as Kubernetes objects).
pub const ANNOTATION_CONTENT: &str = "dev.tresor.content";
/// Manifest annotation recording the pinned images (`push --pin-images`): a JSON object from
/// the reference as written to the digest it was pinned to.
pub const ANNOTATION_PINNED_IMAGES: &str = "dev.tresor.pinned-images";

/// The [`ANNOTATION_PINNED_IMAGES`] value for `pins`: compact JSON, keys sorted.
pub fn pinned_images_value(pins: &BTreeMap<String, Digest>) -> String {
    let map: BTreeMap<&str, String> = pins
        .iter()
        .map(|(k, v)| (k.as_str(), v.to_string()))
        .collect();
    serde_json::to_string(&map).unwrap_or_default()
}

/// Parses the annotation written by [`pinned_images_value`]; `None` when it is not a JSON
/// object of strings.
pub fn parse_pinned_images(value: &str) -> Option<BTreeMap<String, String>> {
    serde_json::from_str(value).ok()
}

/// The config blob tresor writes: the empty JSON object, like the OCI "empty descriptor".
/// Flux ignores the config content; only its media type matters.
pub const CONFIG_BLOB: &[u8] = b"{}";
