//! The cosign simple-signing payload: the exact bytes a legacy signature covers.
//!
//! cosign signs `{"critical":{"identity":{"docker-reference":"<repo>"},"image":
//! {"docker-manifest-digest":"sha256:…"},"type":"cosign container image signature"},
//! "optional":null}` — compact JSON, fields in that order. tresor writes the same layout so
//! `cosign verify` accepts its signatures, and when verifying it parses the stored bytes
//! (after their signature checked out), never a re-serialisation.
//!
//! `docker-reference` is the repository without tag or digest: `host/repo` for registries.
//! An OCI layout has no registry name, so tresor uses `localhost/<layout directory name>`
//! (lower-cased, other characters replaced by `-`): stable when the layout is moved or
//! copied to a registry, and free of local absolute paths. Neither cosign nor tresor
//! requires `docker-reference` to match where the artifact lives now.

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::reference::Reference;

/// Media type of a simple-signing payload layer.
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The `critical.type` cosign writes.
pub const SIGNATURE_TYPE: &str = "cosign container image signature";

/// A simple-signing payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimpleSigning {
    /// What the signature is about.
    pub critical: Critical,
    /// Optional claims (cosign writes `null` unless annotations are given).
    pub optional: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The `critical` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Critical {
    /// Where the image was signed.
    pub identity: Identity,
    /// The signed manifest.
    pub image: Image,
    /// Always [`SIGNATURE_TYPE`].
    #[serde(rename = "type")]
    pub kind: String,
}

/// `critical.identity`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Repository the signer addressed, without tag or digest.
    #[serde(rename = "docker-reference")]
    pub docker_reference: String,
}

/// `critical.image`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// The signed manifest digest, `sha256:…`.
    #[serde(rename = "docker-manifest-digest")]
    pub docker_manifest_digest: String,
}

/// The payload bytes for `digest` in `docker_reference`, byte for byte as cosign writes them.
pub fn simple_signing(docker_reference: &str, digest: &Digest) -> Vec<u8> {
    let payload = SimpleSigning {
        critical: Critical {
            identity: Identity {
                docker_reference: docker_reference.to_string(),
            },
            image: Image {
                docker_manifest_digest: digest.to_string(),
            },
            kind: SIGNATURE_TYPE.to_string(),
        },
        optional: None,
    };
    // Serialising plain structs of strings cannot fail.
    serde_json::to_vec(&payload).unwrap_or_default()
}

/// Parses stored payload bytes and checks the signature type.
pub fn parse(bytes: &[u8]) -> Result<SimpleSigning, String> {
    let payload: SimpleSigning = serde_json::from_slice(bytes)
        .map_err(|e| format!("not a cosign simple-signing document: {e}"))?;
    if payload.critical.kind != SIGNATURE_TYPE {
        return Err(format!(
            "critical.type is {:?}, expected {SIGNATURE_TYPE:?}",
            payload.critical.kind
        ));
    }
    Ok(payload)
}

/// The `docker-reference` tresor signs for `reference` (see the module docs).
pub fn docker_reference(reference: &Reference) -> String {
    match reference {
        Reference::Registry(r) => format!("{}/{}", r.host, r.repository),
        Reference::Layout(l) => {
            let name = l
                .path
                .canonicalize()
                .unwrap_or_else(|_| l.path.clone())
                .file_name()
                .map(|n| n.to_string_lossy().to_lowercase())
                .unwrap_or_default();
            let mut cleaned: String = name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                        c
                    } else {
                        '-'
                    }
                })
                .collect();
            cleaned = cleaned
                .trim_matches(|c: char| !c.is_ascii_alphanumeric())
                .to_string();
            if cleaned.is_empty() {
                cleaned = "layout".to_string();
            }
            format!("localhost/{cleaned}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// cosign's own payload from the containers/image fixtures
    /// (`testdata/cosign/legacy/valid/signature-1`).
    const COSIGN_PAYLOAD: &str = r#"{"critical":{"identity":{"docker-reference":"192.168.64.2:5000/cosign-signed-single-sample"},"image":{"docker-manifest-digest":"sha256:634a8f35b5f16dcf4aaa0822adc0b1964bb786fca12f6831de8ddc45e5986a00"},"type":"cosign container image signature"},"optional":null}"#;

    #[test]
    fn payload_is_byte_for_byte_cosigns_layout() {
        let digest: Digest =
            "sha256:634a8f35b5f16dcf4aaa0822adc0b1964bb786fca12f6831de8ddc45e5986a00"
                .parse()
                .unwrap();
        let bytes = simple_signing("192.168.64.2:5000/cosign-signed-single-sample", &digest);
        assert_eq!(String::from_utf8(bytes).unwrap(), COSIGN_PAYLOAD);
    }

    #[test]
    fn parses_cosign_payload_and_rejects_other_types() {
        let parsed = parse(COSIGN_PAYLOAD.as_bytes()).unwrap();
        assert_eq!(
            parsed.critical.image.docker_manifest_digest,
            "sha256:634a8f35b5f16dcf4aaa0822adc0b1964bb786fca12f6831de8ddc45e5986a00"
        );
        let other = COSIGN_PAYLOAD.replace("cosign container image signature", "x");
        assert!(parse(other.as_bytes())
            .unwrap_err()
            .contains("critical.type"));
        assert!(parse(b"[1]").is_err());
    }

    #[test]
    fn docker_reference_of_registry_and_layout() {
        let r: Reference = "oci://127.0.0.1:5001/acme/app:v1".parse().unwrap();
        assert_eq!(docker_reference(&r), "127.0.0.1:5001/acme/app");
        let l: Reference = "oci-layout:/tmp/does-not-exist/My Layout:v1"
            .parse()
            .unwrap();
        assert_eq!(docker_reference(&l), "localhost/my-layout");
    }
}
