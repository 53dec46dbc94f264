//! cosign's tag-based signatures: a manifest tagged `sha256-<hex>.sig` in the artifact's
//! repository, one layer per signature.
//!
//! Each layer is a simple-signing payload blob ([`super::payload`]) with media type
//! [`SIMPLE_SIGNING_MEDIA_TYPE`] and the base64 ECDSA signature over the blob's exact bytes
//! in the [`SIGNATURE_ANNOTATION`] annotation. Signing appends a layer and keeps every
//! existing one (several signers); an identical layer is not added twice. Reading is
//! bounded: at most [`MAX_SIGNATURE_LAYERS`] layers of at most [`MAX_PAYLOAD_BYTES`] each.
//!
//! Appending is read-modify-write on a tag: two signers racing on the same artifact can
//! lose one signature (the registry API has no compare-and-swap). Sign one after the other.

use std::collections::BTreeMap;

use base64::Engine as _;
use bytes::Bytes;
use serde::Serialize;

use super::keys::PrivateKey;
use super::payload::{self, SIMPLE_SIGNING_MEDIA_TYPE};
use super::{SigningError, VerifyError};
use crate::artifact::format::{Descriptor, ImageManifest, OCI_MANIFEST_MEDIA_TYPE};
use crate::digest::Digest;
use crate::reference::Reference;
use crate::registry::{ManifestRef, RegistryError, Repository};

/// Layer annotation holding the base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// Layer annotation holding a keyless signer's Fulcio certificate (PEM).
pub const CERTIFICATE_ANNOTATION: &str = "dev.sigstore.cosign/certificate";
/// Layer annotation holding the certificate chain (PEM).
pub const CHAIN_ANNOTATION: &str = "dev.sigstore.cosign/chain";
/// Layer annotation holding the Rekor bundle (SET) as JSON.
pub const BUNDLE_ANNOTATION: &str = "dev.sigstore.cosign/bundle";
/// Config media type of the signature manifest (as cosign writes it).
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// Most signature layers tresor reads or writes in one `.sig` manifest.
pub const MAX_SIGNATURE_LAYERS: usize = 256;
/// Largest payload blob tresor downloads.
pub const MAX_PAYLOAD_BYTES: u64 = 64 * 1024;

/// The tag holding the signatures of `digest`: `sha256-<hex>.sig`.
pub fn signature_tag(digest: &Digest) -> String {
    format!("{}-{}.sig", digest.algorithm(), digest.hex())
}

/// One signature layer as stored: what a verifier checks.
#[derive(Debug, Clone)]
pub struct LegacySignature {
    /// The `.sig` tag it came from.
    pub tag: String,
    /// Position of the layer in the `.sig` manifest.
    pub index: usize,
    /// The payload blob, exactly as stored (digest checked).
    pub payload: Bytes,
    /// The signature annotation as stored (base64), if present.
    pub signature: Option<String>,
    /// Fulcio certificate (keyless), if present.
    pub certificate: Option<String>,
    /// Certificate chain (keyless), if present.
    pub chain: Option<String>,
    /// Rekor bundle JSON (keyless), if present.
    pub bundle: Option<String>,
}

impl LegacySignature {
    /// How the signature is named in messages: `sha256-….sig layer 0`.
    pub fn describe(&self) -> String {
        format!("{} layer {}", self.tag, self.index)
    }

    /// Checks the signature with `key` over the stored payload bytes, then that the payload
    /// names `digest`. Only authenticated bytes are parsed.
    pub fn verify_with_key(
        &self,
        key: &super::PublicKey,
        digest: &Digest,
    ) -> Result<(), VerifyError> {
        let encoded =
            self.signature
                .as_deref()
                .ok_or_else(|| VerifyError::BadSignatureEncoding {
                    reason: format!("{}: no {SIGNATURE_ANNOTATION} annotation", self.describe()),
                })?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|e| VerifyError::BadSignatureEncoding {
                reason: format!(
                    "{}: {SIGNATURE_ANNOTATION} is not base64: {e}",
                    self.describe()
                ),
            })?;
        if !key.verify(&self.payload, &raw) {
            return Err(VerifyError::SignatureInvalid {
                signatures: 1,
                authorities: format!("key {}", key.fingerprint()),
            });
        }
        check_payload_digest(&self.payload, digest)
    }
}

/// Parses an authenticated payload and requires it to name `digest`.
pub fn check_payload_digest(payload_bytes: &[u8], digest: &Digest) -> Result<(), VerifyError> {
    let parsed =
        payload::parse(payload_bytes).map_err(|reason| VerifyError::InvalidPayload { reason })?;
    let named = parsed.critical.image.docker_manifest_digest;
    if named != digest.to_string() {
        return Err(VerifyError::PayloadDigestMismatch {
            expected: digest.clone(),
            actual: named,
        });
    }
    Ok(())
}

/// Reads the `.sig` manifest of `digest` and the payload blobs of its signature layers.
/// No `.sig` tag means no signatures (an empty list). Bounded: more than
/// [`MAX_SIGNATURE_LAYERS`] layers is [`VerifyError::TooManySignatures`]; a payload larger
/// than [`MAX_PAYLOAD_BYTES`] is skipped with a warning.
pub async fn collect(
    repo: &Repository,
    digest: &Digest,
) -> Result<Vec<LegacySignature>, VerifyError> {
    let tag = signature_tag(digest);
    let layers = read_layers(repo, &tag, SIMPLE_SIGNING_MEDIA_TYPE, MAX_PAYLOAD_BYTES).await?;
    Ok(layers
        .into_iter()
        .map(|(index, layer, payload)| {
            let annotation = |key: &str| layer.annotations.get(key).cloned();
            LegacySignature {
                tag: tag.clone(),
                index,
                payload,
                signature: annotation(SIGNATURE_ANNOTATION),
                certificate: annotation(CERTIFICATE_ANNOTATION),
                chain: annotation(CHAIN_ANNOTATION),
                bundle: annotation(BUNDLE_ANNOTATION),
            }
        })
        .collect())
}

/// The layers of the cosign-style manifest under `tag` with `media_type`, with their blobs
/// (digest-checked, at most `max_bytes` each; larger ones are skipped with a warning).
/// No such tag: an empty list. More than [`MAX_SIGNATURE_LAYERS`] layers: an error, before
/// any blob is fetched.
pub async fn read_layers(
    repo: &Repository,
    tag: &str,
    media_type: &str,
    max_bytes: u64,
) -> Result<Vec<(usize, Descriptor, Bytes)>, VerifyError> {
    let Some(manifest) = fetch_signature_manifest(repo, tag).await? else {
        return Ok(Vec::new());
    };
    if manifest.layers.len() > MAX_SIGNATURE_LAYERS {
        return Err(VerifyError::TooManySignatures {
            tag: tag.to_string(),
            count: manifest.layers.len(),
            limit: MAX_SIGNATURE_LAYERS,
        });
    }
    let mut out = Vec::new();
    for (index, layer) in manifest.layers.into_iter().enumerate() {
        if layer.media_type != media_type {
            tracing::warn!(tag = %tag, index, media_type = %layer.media_type, "skipping layer with unexpected media type");
            continue;
        }
        if layer.size > max_bytes {
            tracing::warn!(tag = %tag, index, size = layer.size, "skipping oversized signature layer");
            continue;
        }
        let blob = repo.fetch_small_blob(&layer, max_bytes).await?;
        out.push((index, layer, blob));
    }
    Ok(out)
}

async fn fetch_signature_manifest(
    repo: &Repository,
    tag: &str,
) -> Result<Option<ImageManifest>, VerifyError> {
    let fetched = match repo.fetch_manifest(ManifestRef::Tag(tag)).await {
        Ok(f) => f,
        Err(RegistryError::ManifestNotFound { .. } | RegistryError::RepositoryNotFound { .. }) => {
            return Ok(None)
        }
        Err(e) => return Err(e.into()),
    };
    serde_json::from_slice(&fetched.bytes)
        .map(Some)
        .map_err(|e| VerifyError::InvalidSignatureManifest {
            tag: tag.to_string(),
            message: e.to_string(),
        })
}

/// Result of signing, as printed by `tresor sign --format json`.
#[derive(Debug, Clone, Serialize)]
pub struct SignOutcome {
    /// The signed artifact, digest-pinned.
    pub reference: String,
    /// Its manifest digest.
    pub digest: Digest,
    /// The signature tag written.
    pub signature_tag: String,
    /// Digest of the `.sig` manifest now stored.
    pub signature_manifest: Digest,
    /// Signature layers now in the `.sig` manifest.
    pub signatures: usize,
    /// False when an identical signature was already present (nothing written).
    pub added: bool,
    /// Fingerprint of the signing key.
    pub fingerprint: String,
}

/// Signs the manifest `digest` in the repository of `reference` with `key`: appends one
/// signature layer to its `.sig` manifest, keeping the existing layers.
pub async fn sign(
    repo: &Repository,
    reference: &Reference,
    digest: &Digest,
    key: &PrivateKey,
) -> Result<SignOutcome, SigningError> {
    let tag = signature_tag(digest);
    let payload = Bytes::from(payload::simple_signing(
        &payload::docker_reference(reference),
        digest,
    ));
    let signature = base64::engine::general_purpose::STANDARD.encode(key.sign(&payload));
    let mut layer = Descriptor::for_bytes(SIMPLE_SIGNING_MEDIA_TYPE, &payload);
    layer
        .annotations
        .insert(SIGNATURE_ANNOTATION.to_string(), signature);

    let appended = append_layer(repo, &tag, layer, payload).await?;
    Ok(SignOutcome {
        reference: reference.pinned(digest),
        digest: digest.clone(),
        signature_tag: tag,
        signature_manifest: appended.manifest,
        signatures: appended.layers,
        added: appended.added,
        fingerprint: key.public_key().fingerprint().to_string(),
    })
}

/// What [`append_layer`] did.
#[derive(Debug, Clone)]
pub struct Appended {
    /// Digest of the manifest now under the tag.
    pub manifest: Digest,
    /// Layers in it.
    pub layers: usize,
    /// False when an identical layer was already there (nothing written).
    pub added: bool,
}

/// Appends `layer` (content `blob`) to the cosign-style manifest under `tag` (`.sig`,
/// `.att`), creating it when absent. Existing layers are kept; an identical layer is not
/// added again; more than [`MAX_SIGNATURE_LAYERS`] is refused.
pub async fn append_layer(
    repo: &Repository,
    tag: &str,
    layer: Descriptor,
    blob: Bytes,
) -> Result<Appended, SigningError> {
    append_layers(repo, tag, vec![(layer, blob)]).await
}

/// [`append_layer`] for several layers with one manifest write (copying signatures to
/// another repository): layers already present are skipped; `added` is false when all were.
pub async fn append_layers(
    repo: &Repository,
    tag: &str,
    new_layers: Vec<(Descriptor, Bytes)>,
) -> Result<Appended, SigningError> {
    let existing = match repo.fetch_manifest(ManifestRef::Tag(tag)).await {
        Ok(f) => Some((
            serde_json::from_slice::<ImageManifest>(&f.bytes).map_err(|e| {
                SigningError::InvalidSignatureManifest {
                    tag: tag.to_string(),
                    message: e.to_string(),
                }
            })?,
            f.digest,
        )),
        Err(RegistryError::ManifestNotFound { .. } | RegistryError::RepositoryNotFound { .. }) => {
            None
        }
        Err(e) => return Err(e.into()),
    };
    let mut layers = Vec::new();
    let mut existing_digest = None;
    if let Some((manifest, manifest_digest)) = existing {
        layers = manifest.layers;
        existing_digest = Some(manifest_digest);
    }
    let before = layers.len();
    for (layer, blob) in new_layers {
        if layers.contains(&layer) {
            continue;
        }
        if layers.len() >= MAX_SIGNATURE_LAYERS {
            return Err(SigningError::TooManySignatures {
                tag: tag.to_string(),
                count: layers.len(),
                limit: MAX_SIGNATURE_LAYERS,
            });
        }
        repo.push_blob(&layer.digest, blob).await?;
        layers.push(layer);
    }
    if let (Some(manifest), true) = (existing_digest, layers.len() == before) {
        return Ok(Appended {
            manifest,
            layers: layers.len(),
            added: false,
        });
    }

    let config = signature_config(&layers);
    let config_descriptor = Descriptor::for_bytes(CONFIG_MEDIA_TYPE, &config);
    repo.push_blob(&config_descriptor.digest, Bytes::from(config))
        .await?;
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST_MEDIA_TYPE.to_string()),
        artifact_type: None,
        config: config_descriptor,
        layers,
        subject: None,
        annotations: BTreeMap::new(),
    };
    let digest = repo
        .push_manifest(OCI_MANIFEST_MEDIA_TYPE, &manifest.to_bytes(), Some(tag))
        .await?;
    Ok(Appended {
        manifest: digest,
        layers: manifest.layers.len(),
        added: true,
    })
}

/// The config blob cosign (go-containerregistry) writes for a signature image: an empty
/// image config whose `rootfs.diff_ids` are the payload digests, one history entry each.
fn signature_config(layers: &[Descriptor]) -> Vec<u8> {
    let zero = "0001-01-01T00:00:00Z";
    let config = serde_json::json!({
        "architecture": "",
        "created": zero,
        "history": layers.iter().map(|_| serde_json::json!({"created": zero})).collect::<Vec<_>>(),
        "os": "",
        "rootfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(|l| l.digest.to_string()).collect::<Vec<_>>(),
        },
        "config": {},
    });
    serde_json::to_vec(&config).unwrap_or_default()
}
