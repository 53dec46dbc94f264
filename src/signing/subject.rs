//! What a signature is over: the digest of any manifest or index — a tresor artifact, a
//! container image (OCI or Docker v2 schema 2), an image index or manifest list, or any other
//! OCI manifest. cosign signs whatever digest a reference resolves to, and `tresor verify`
//! checks exactly that; only `pull`, `sync`, `apply` and the puller insist on an artifact
//! (see [`crate::artifact::fetch::from_manifest`]).

use std::collections::BTreeMap;

use crate::artifact::fetch::ResolvedArtifact;
use crate::artifact::format::ManifestKind;
use crate::digest::Digest;
use crate::reference::Reference;
use crate::registry::{FetchedManifest, RegistryError, Repository};

/// A manifest whose signatures are to be checked: its digest, what kind of thing it is and
/// its annotations (for the provenance printed with a verification). Built from the manifest
/// alone; no layer, config or child manifest is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// The reference as given, pinned to the digest.
    pub reference: Reference,
    /// The manifest digest: what a signature must name.
    pub digest: Digest,
    /// The manifest media type.
    pub media_type: String,
    /// Artifact, container image, index or other.
    pub kind: ManifestKind,
    /// The manifest's (or index's) string annotations.
    pub annotations: BTreeMap<String, String>,
}

/// The fields of any manifest or index that a subject needs; everything else is ignored.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<ConfigProbe>,
    #[serde(default)]
    layers: Option<serde_json::Value>,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
    #[serde(default)]
    annotations: BTreeMap<String, serde_json::Value>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfigProbe {
    media_type: String,
}

impl Subject {
    /// Builds the subject from a manifest already fetched and digest-checked.
    ///
    /// Fails with [`RegistryError::Invalid`] when the bytes are not a JSON manifest or index
    /// (an object with a `config`, `layers` or `manifests` field).
    pub fn from_manifest(
        reference: &Reference,
        fetched: FetchedManifest,
    ) -> Result<Self, RegistryError> {
        let invalid = |message: String| RegistryError::Invalid {
            what: format!("{reference} ({})", fetched.digest),
            kind: "manifest".into(),
            message,
        };
        let probe: Probe =
            serde_json::from_slice(&fetched.bytes).map_err(|e| invalid(e.to_string()))?;
        if probe.config.is_none() && probe.layers.is_none() && probe.manifests.is_none() {
            return Err(invalid(
                "neither an image manifest (no config or layers) nor an index (no manifests)"
                    .into(),
            ));
        }
        // The document's own `mediaType` is covered by the digest a signature names; the
        // Content-Type header is not, so it only counts when the document has none.
        let media_type = probe.media_type.unwrap_or(fetched.media_type);
        let kind = ManifestKind::classify(
            &media_type,
            probe.config.as_ref().map(|c| c.media_type.as_str()),
        );
        let annotations = probe
            .annotations
            .into_iter()
            .filter_map(|(k, v)| match v {
                serde_json::Value::String(s) => Some((k, s)),
                _ => None,
            })
            .collect();
        Ok(Self {
            reference: reference.with_digest(fetched.digest.clone()),
            digest: fetched.digest,
            media_type,
            kind,
            annotations,
        })
    }

    /// The subject of an artifact already resolved for pull, sync or apply.
    pub fn of_artifact(artifact: &ResolvedArtifact) -> Self {
        Self {
            reference: artifact.reference.clone(),
            digest: artifact.digest.clone(),
            media_type: artifact.media_type.clone(),
            kind: ManifestKind::classify(
                &artifact.media_type,
                Some(&artifact.manifest.config.media_type),
            ),
            annotations: artifact.manifest.annotations.clone(),
        }
    }

    /// The digest-pinned reference as text.
    pub fn pinned(&self) -> String {
        self.reference.pinned(&self.digest)
    }
}

/// Reads the manifest or index `reference` resolves to (only that document) and returns it
/// as a subject: what `tresor verify` checks, whatever kind of manifest it is.
pub async fn resolve(repo: &Repository, reference: &Reference) -> Result<Subject, RegistryError> {
    let at = Repository::manifest_ref(reference)?;
    let fetched = repo.fetch_manifest(at).await?;
    Subject::from_manifest(reference, fetched)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::format::{
        DOCKER_MANIFEST_LIST_MEDIA_TYPE, DOCKER_MANIFEST_MEDIA_TYPE, OCI_INDEX_MEDIA_TYPE,
        OCI_MANIFEST_MEDIA_TYPE,
    };

    fn subject(media_type: &str, json: &str) -> Result<Subject, RegistryError> {
        let reference: Reference =
            "oci://registry.test/acme/app:v1"
                .parse()
                .map_err(|_| RegistryError::Invalid {
                    what: "test".into(),
                    kind: "reference".into(),
                    message: "unparsable".into(),
                })?;
        let bytes = bytes::Bytes::from(json.to_owned());
        Subject::from_manifest(
            &reference,
            FetchedManifest {
                digest: Digest::of(&bytes),
                bytes,
                media_type: media_type.into(),
            },
        )
    }

    #[test]
    fn container_images_indexes_and_artifacts_are_told_apart() {
        let cases = [
            (
                DOCKER_MANIFEST_MEDIA_TYPE,
                r#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"sha256:00","size":1},"layers":[]}"#,
                ManifestKind::ContainerImage,
            ),
            (
                OCI_MANIFEST_MEDIA_TYPE,
                r#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json"},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+zstd"}],"annotations":{"org.opencontainers.image.source":"https://example.com/x","n":1}}"#,
                ManifestKind::ContainerImage,
            ),
            (
                OCI_MANIFEST_MEDIA_TYPE,
                r#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.cncf.flux.config.v1+json"},"layers":[]}"#,
                ManifestKind::Artifact,
            ),
            (
                OCI_MANIFEST_MEDIA_TYPE,
                r#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.empty.v1+json"},"layers":[]}"#,
                ManifestKind::Other,
            ),
            (
                OCI_INDEX_MEDIA_TYPE,
                r#"{"schemaVersion":2,"manifests":[]}"#,
                ManifestKind::ImageIndex,
            ),
            (
                DOCKER_MANIFEST_LIST_MEDIA_TYPE,
                r#"{"schemaVersion":2,"manifests":[]}"#,
                ManifestKind::ImageIndex,
            ),
        ];
        for (media_type, json, kind) in cases {
            let s = subject(media_type, json).map_err(|e| e.to_string());
            assert_eq!(s.as_ref().map(|s| s.kind), Ok(kind), "{json}");
        }
        // Only string annotations are kept.
        let s = subject(OCI_MANIFEST_MEDIA_TYPE, cases[1].1).map_err(|e| e.to_string());
        let keys: Vec<String> = s
            .map(|s| s.annotations.into_keys().collect())
            .unwrap_or_default();
        assert_eq!(keys, vec!["org.opencontainers.image.source".to_string()]);
    }

    #[test]
    fn the_documents_own_media_type_wins_over_the_header() {
        let s = subject(
            OCI_INDEX_MEDIA_TYPE,
            r#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"mediaType":"application/vnd.docker.container.image.v1+json"},"layers":[]}"#,
        )
        .map(|s| (s.kind, s.media_type))
        .map_err(|e| e.to_string());
        assert_eq!(
            s,
            Ok((
                ManifestKind::ContainerImage,
                DOCKER_MANIFEST_MEDIA_TYPE.to_string()
            ))
        );
    }

    #[test]
    fn documents_that_are_not_manifests_are_refused() {
        for json in ["[]", "{}", "not json", r#"{"schemaVersion":2}"#] {
            let err = subject(OCI_MANIFEST_MEDIA_TYPE, json).map(|s| s.kind);
            assert!(
                matches!(err, Err(RegistryError::Invalid { .. })),
                "{json}: {err:?}"
            );
        }
    }
}
