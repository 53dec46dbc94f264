//! Signed SLSA provenance in cosign's attestation format.
//!
//! `push --provenance` builds an in-toto Statement v1 whose subject is the artifact digest
//! and whose predicate is SLSA provenance v1 (builder, source repository and commit, CI run
//! URL, from the CI environment), wraps it in a DSSE envelope signed with the push key, and
//! appends it as a layer (media type [`DSSE_MEDIA_TYPE`]) to the manifest tagged
//! `sha256-<hex>.att` — where `cosign attest`/`cosign verify-attestation` keep them.
//! Verification checks the DSSE signature over the pre-authentication encoding of the exact
//! stored payload, then that the statement's subject names the artifact digest.

use std::collections::BTreeMap;

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::keys::{PrivateKey, PublicKey};
use super::legacy::{self, SIGNATURE_ANNOTATION};
use super::{SigningError, VerifyError};
use crate::artifact::format::Descriptor;
use crate::digest::Digest;
use crate::reference::Reference;
use crate::registry::Repository;

/// Media type of an attestation layer (a DSSE envelope).
pub const DSSE_MEDIA_TYPE: &str = "application/vnd.dsse.envelope.v1+json";
/// DSSE payload type of in-toto statements.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// in-toto Statement v1 `_type`.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// SLSA provenance v1 predicate type.
pub const SLSA_PROVENANCE_V1: &str = "https://slsa.dev/provenance/v1";
/// `buildType` of provenance written by `tresor push`.
pub const BUILD_TYPE: &str = "https://tresor.dev/push/v1";
/// Layer annotation naming the predicate type (as cosign writes it).
pub const PREDICATE_TYPE_ANNOTATION: &str = "predicateType";
/// Largest attestation envelope tresor reads.
pub const MAX_ENVELOPE_BYTES: u64 = 256 * 1024;

/// The tag holding the attestations of `digest`: `sha256-<hex>.att`.
pub fn attestation_tag(digest: &Digest) -> String {
    format!("{}-{}.att", digest.algorithm(), digest.hex())
}

/// DSSE pre-authentication encoding: what the envelope signature covers.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// Where the build ran, from CI variables (GitHub Actions, GitLab CI) or "local".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildContext {
    /// SLSA builder id.
    pub builder_id: String,
    /// URL of the CI run (workflow run, job), if any.
    pub invocation_id: Option<String>,
}

impl BuildContext {
    /// Reads the CI environment.
    pub fn from_env(env: &BTreeMap<String, String>) -> Self {
        let get = |k: &str| env.get(k).filter(|v| !v.is_empty()).cloned();
        if get("GITHUB_ACTIONS").as_deref() == Some("true") {
            let server = get("GITHUB_SERVER_URL").unwrap_or_else(|| "https://github.com".into());
            let repo = get("GITHUB_REPOSITORY").unwrap_or_default();
            let builder_id = match get("GITHUB_WORKFLOW_REF") {
                Some(w) => format!("{server}/{w}"),
                None => format!("{server}/{repo}/actions"),
            };
            let invocation_id = get("GITHUB_RUN_ID").map(|id| {
                let attempt = get("GITHUB_RUN_ATTEMPT").unwrap_or_else(|| "1".into());
                format!("{server}/{repo}/actions/runs/{id}/attempts/{attempt}")
            });
            return Self {
                builder_id,
                invocation_id,
            };
        }
        if get("GITLAB_CI").as_deref() == Some("true") {
            let project = get("CI_PROJECT_URL").unwrap_or_default();
            let builder_id = match get("CI_RUNNER_ID") {
                Some(id) => format!("{project}/-/runners/{id}"),
                None => format!("{project}/-/jobs"),
            };
            return Self {
                builder_id,
                invocation_id: get("CI_JOB_URL"),
            };
        }
        Self {
            builder_id: "https://tresor.dev/builders/local".into(),
            invocation_id: None,
        }
    }
}

/// The in-toto statement (SLSA provenance v1) for an artifact `tresor push` just stored.
pub fn provenance_statement(
    reference: &Reference,
    digest: &Digest,
    source: Option<&str>,
    revision: Option<&str>,
    build: &BuildContext,
) -> Value {
    let mut external = serde_json::Map::new();
    if let Some(s) = source {
        external.insert("source".into(), json!(s));
    }
    if let Some(r) = revision {
        external.insert("revision".into(), json!(r));
    }
    let mut dependencies = Vec::new();
    if let (Some(source), Some(commit)) = (source, revision.and_then(commit_of)) {
        dependencies.push(json!({
            "uri": format!("git+{source}"),
            "digest": { "gitCommit": commit },
        }));
    }
    let mut metadata = serde_json::Map::new();
    if let Some(i) = &build.invocation_id {
        metadata.insert("invocationId".into(), json!(i));
    }
    json!({
        "_type": STATEMENT_TYPE,
        "subject": [{
            "name": super::payload::docker_reference(reference),
            "digest": { digest.algorithm(): digest.hex() },
        }],
        "predicateType": SLSA_PROVENANCE_V1,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": external,
                "resolvedDependencies": dependencies,
            },
            "runDetails": {
                "builder": { "id": build.builder_id },
                "metadata": metadata,
            },
        },
    })
}

/// The commit of a revision like `main@sha1:<hex>` or a bare hex commit.
fn commit_of(revision: &str) -> Option<String> {
    let tail = revision.rsplit_once('@').map_or(revision, |(_, t)| t);
    let hex = tail.strip_prefix("sha1:").unwrap_or(tail);
    (hex.len() >= 7 && hex.chars().all(|c| c.is_ascii_hexdigit())).then(|| hex.to_string())
}

/// A DSSE envelope as cosign stores it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// [`IN_TOTO_PAYLOAD_TYPE`].
    pub payload_type: String,
    /// Base64 of the statement bytes.
    pub payload: String,
    /// Signatures over the PAE.
    pub signatures: Vec<EnvelopeSignature>,
}

/// One DSSE signature.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnvelopeSignature {
    /// Key id (cosign leaves it empty).
    #[serde(default)]
    pub keyid: String,
    /// Base64 signature.
    pub sig: String,
}

/// Result of attaching an attestation.
#[derive(Debug, Clone, Serialize)]
pub struct AttestOutcome {
    /// The attestation tag written.
    pub attestation_tag: String,
    /// Attestations now stored under it.
    pub attestations: usize,
    /// False when an identical attestation was already present.
    pub added: bool,
    /// Predicate type.
    pub predicate_type: String,
}

/// Signs `statement` (DSSE, in-toto payload type) and appends it to the `.att` manifest of
/// `digest`.
pub async fn attest(
    repo: &Repository,
    digest: &Digest,
    statement: &Value,
    key: &PrivateKey,
) -> Result<AttestOutcome, SigningError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let payload = serde_json::to_vec(statement).unwrap_or_default();
    let signature = key.sign(&pae(IN_TOTO_PAYLOAD_TYPE, &payload));
    let envelope = Envelope {
        payload_type: IN_TOTO_PAYLOAD_TYPE.into(),
        payload: b64.encode(&payload),
        signatures: vec![EnvelopeSignature {
            keyid: String::new(),
            sig: b64.encode(signature),
        }],
    };
    let blob = Bytes::from(serde_json::to_vec(&envelope).unwrap_or_default());
    let predicate_type = statement
        .get("predicateType")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let mut layer = Descriptor::for_bytes(DSSE_MEDIA_TYPE, &blob);
    layer
        .annotations
        .insert(SIGNATURE_ANNOTATION.into(), String::new());
    layer
        .annotations
        .insert(PREDICATE_TYPE_ANNOTATION.into(), predicate_type.clone());
    let tag = attestation_tag(digest);
    let appended = legacy::append_layer(repo, &tag, layer, blob).await?;
    Ok(AttestOutcome {
        attestation_tag: tag,
        attestations: appended.layers,
        added: appended.added,
        predicate_type,
    })
}

/// One stored attestation (a DSSE envelope), not yet checked.
#[derive(Debug, Clone)]
pub struct DsseAttestation {
    /// Where it was found: `sha256-….att layer 0`, or `referrer sha256:…` for a bundle.
    pub source: String,
    /// The envelope bytes: the `.att` layer as stored, or the bundle's `dsseEnvelope`.
    pub envelope: Bytes,
}

impl DsseAttestation {
    /// Where it was found, e.g. `sha256-….att layer 0`.
    pub fn describe(&self) -> String {
        self.source.clone()
    }

    /// The attestation inside a Sigstore bundle (what cosign v3 `attest` stores as a
    /// referrer): its DSSE envelope, when the bundle holds one whose statement is not a cosign
    /// image signature (predicate `https://sigstore.dev/cosign/sign/v1`, which `cosign sign`
    /// writes and [`super::bundle`] verifies as a signature). `None` for signature bundles,
    /// message-signature bundles and anything unreadable: those are no attestations, and the
    /// signature of the envelope is checked later, over the payload bytes as stored.
    pub fn from_bundle(source: &str, bundle: &[u8]) -> Option<Self> {
        #[derive(Deserialize)]
        struct BundleDsse {
            #[serde(rename = "dsseEnvelope")]
            dsse_envelope: Option<Value>,
        }
        #[derive(Deserialize)]
        struct PredicateTypeOnly {
            #[serde(rename = "predicateType", default)]
            predicate_type: String,
        }
        let envelope_json = serde_json::from_slice::<BundleDsse>(bundle)
            .ok()?
            .dsse_envelope?;
        let envelope: Envelope = serde_json::from_value(envelope_json.clone()).ok()?;
        let payload = base64::engine::general_purpose::STANDARD
            .decode(envelope.payload.trim())
            .ok()?;
        let statement: PredicateTypeOnly = serde_json::from_slice(&payload).ok()?;
        if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE
            || statement.predicate_type == super::bundle::COSIGN_SIGN_PREDICATE_TYPE
        {
            return None;
        }
        Some(Self {
            source: source.to_string(),
            envelope: Bytes::from(serde_json::to_vec(&envelope_json).ok()?),
        })
    }

    /// Checks a DSSE signature with `key` over the stored payload, then that the statement
    /// names `digest`; returns the statement.
    pub fn verify_with_key(&self, key: &PublicKey, digest: &Digest) -> Result<Value, VerifyError> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let envelope: Envelope =
            serde_json::from_slice(&self.envelope).map_err(|e| VerifyError::InvalidPayload {
                reason: format!("{}: not a DSSE envelope: {e}", self.describe()),
            })?;
        let payload =
            b64.decode(envelope.payload.trim())
                .map_err(|e| VerifyError::BadSignatureEncoding {
                    reason: format!("{}: DSSE payload is not base64: {e}", self.describe()),
                })?;
        let message = pae(&envelope.payload_type, &payload);
        let mut signed = false;
        for s in &envelope.signatures {
            let raw = b64
                .decode(s.sig.trim())
                .map_err(|e| VerifyError::BadSignatureEncoding {
                    reason: format!("{}: DSSE signature is not base64: {e}", self.describe()),
                })?;
            if key.verify(&message, &raw) {
                signed = true;
                break;
            }
        }
        if !signed {
            return Err(VerifyError::SignatureInvalid {
                signatures: 1,
                authorities: format!("key {}", key.fingerprint()),
            });
        }
        statement_for(&envelope.payload_type, &payload, digest)
    }
}

/// Parses an authenticated statement and requires its subject to name `digest`.
pub fn statement_for(
    payload_type: &str,
    payload: &[u8],
    digest: &Digest,
) -> Result<Value, VerifyError> {
    let invalid = |reason: String| VerifyError::InvalidPayload { reason };
    if payload_type != IN_TOTO_PAYLOAD_TYPE {
        return Err(invalid(format!(
            "DSSE payload type is {payload_type:?}, expected {IN_TOTO_PAYLOAD_TYPE}"
        )));
    }
    let statement: Value = serde_json::from_slice(payload)
        .map_err(|e| invalid(format!("statement is not JSON: {e}")))?;
    let subjects = statement
        .get("subject")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("statement has no subject".into()))?;
    let names_digest = subjects.iter().any(|s| {
        s.get("digest")
            .and_then(|d| d.get(digest.algorithm()))
            .and_then(Value::as_str)
            == Some(digest.hex())
    });
    if !names_digest {
        let actual = subjects
            .iter()
            .filter_map(|s| s.get("digest").and_then(|d| d.get("sha256")))
            .filter_map(Value::as_str)
            .map(|h| format!("sha256:{h}"))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(VerifyError::PayloadDigestMismatch {
            expected: digest.clone(),
            actual,
        });
    }
    Ok(statement)
}

/// Every attestation layer stored for `digest` (bounded like signatures).
pub async fn collect(
    repo: &Repository,
    digest: &Digest,
) -> Result<Vec<DsseAttestation>, VerifyError> {
    let tag = attestation_tag(digest);
    let layers = legacy::read_layers(repo, &tag, DSSE_MEDIA_TYPE, MAX_ENVELOPE_BYTES).await?;
    Ok(layers
        .into_iter()
        .map(|(index, _, envelope)| DsseAttestation {
            source: format!("{tag} layer {index}"),
            envelope,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle_with_predicate(predicate_type: &str) -> Vec<u8> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let statement = json!({
            "_type": STATEMENT_TYPE,
            "subject": [{"digest": {"sha256": "ab"}}],
            "predicateType": predicate_type,
            "predicate": {},
        });
        serde_json::to_vec(&json!({
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {"publicKey": {"hint": ""}},
            "dsseEnvelope": {
                "payload": b64.encode(serde_json::to_vec(&statement).unwrap()),
                "payloadType": IN_TOTO_PAYLOAD_TYPE,
                "signatures": [{"sig": b64.encode(b"sig"), "keyid": ""}],
            },
        }))
        .unwrap()
    }

    #[test]
    fn an_attestation_bundle_is_read_and_a_signature_bundle_is_not() {
        let att = DsseAttestation::from_bundle(
            "referrer sha256:aa",
            &bundle_with_predicate(SLSA_PROVENANCE_V1),
        )
        .unwrap();
        assert_eq!(att.describe(), "referrer sha256:aa");
        let envelope: Envelope = serde_json::from_slice(&att.envelope).unwrap();
        assert_eq!(envelope.payload_type, IN_TOTO_PAYLOAD_TYPE);
        assert_eq!(envelope.signatures.len(), 1);

        let signature = bundle_with_predicate(super::super::bundle::COSIGN_SIGN_PREDICATE_TYPE);
        assert!(DsseAttestation::from_bundle("referrer sha256:bb", &signature).is_none());
        assert!(DsseAttestation::from_bundle("referrer sha256:cc", b"{}").is_none());
        assert!(DsseAttestation::from_bundle("referrer sha256:dd", b"not json").is_none());
    }

    #[test]
    fn pae_matches_the_dsse_spec_example() {
        // From the DSSE protocol document.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn build_context_from_github_gitlab_and_local() {
        let env = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        let gh = BuildContext::from_env(&env(&[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_SERVER_URL", "https://github.com"),
            ("GITHUB_REPOSITORY", "acme/app"),
            (
                "GITHUB_WORKFLOW_REF",
                "acme/app/.github/workflows/release.yml@refs/heads/main",
            ),
            ("GITHUB_RUN_ID", "42"),
            ("GITHUB_RUN_ATTEMPT", "2"),
        ]));
        assert_eq!(
            gh.builder_id,
            "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main"
        );
        assert_eq!(
            gh.invocation_id.as_deref(),
            Some("https://github.com/acme/app/actions/runs/42/attempts/2")
        );
        let gl = BuildContext::from_env(&env(&[
            ("GITLAB_CI", "true"),
            ("CI_PROJECT_URL", "https://gitlab.com/acme/app"),
            ("CI_RUNNER_ID", "7"),
            ("CI_JOB_URL", "https://gitlab.com/acme/app/-/jobs/9"),
        ]));
        assert_eq!(gl.builder_id, "https://gitlab.com/acme/app/-/runners/7");
        assert_eq!(
            gl.invocation_id.as_deref(),
            Some("https://gitlab.com/acme/app/-/jobs/9")
        );
        assert_eq!(
            BuildContext::from_env(&env(&[])).builder_id,
            "https://tresor.dev/builders/local"
        );
    }

    #[test]
    fn statement_names_the_digest_and_the_commit() {
        let reference: Reference = "oci://r.example/acme/app:v1".parse().unwrap();
        let digest = Digest::of(b"m");
        let s = provenance_statement(
            &reference,
            &digest,
            Some("https://github.com/acme/app"),
            Some("main@sha1:0123456789abcdef0123456789abcdef01234567"),
            &BuildContext::default(),
        );
        assert_eq!(s["subject"][0]["digest"]["sha256"], digest.hex());
        assert_eq!(
            s["predicate"]["buildDefinition"]["resolvedDependencies"][0]["digest"]["gitCommit"],
            "0123456789abcdef0123456789abcdef01234567"
        );
        let bytes = serde_json::to_vec(&s).unwrap();
        assert!(statement_for(IN_TOTO_PAYLOAD_TYPE, &bytes, &digest).is_ok());
        let other = Digest::of(b"other");
        let err = statement_for(IN_TOTO_PAYLOAD_TYPE, &bytes, &other).unwrap_err();
        assert_eq!(err.reason(), "PayloadDigestMismatch");
        assert_eq!(
            statement_for("text/plain", &bytes, &digest)
                .unwrap_err()
                .reason(),
            "InvalidPayload"
        );
    }
}
