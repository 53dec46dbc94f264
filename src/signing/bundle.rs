//! Verification of cosign v3 signatures stored as Sigstore bundles (v0.3), offline.
//!
//! `cosign sign --new-bundle-format` attaches to an image a bundle
//! (`application/vnd.dev.sigstore.bundle.v0.3+json`) holding a DSSE envelope whose payload is
//! an in-toto statement (predicate type `https://sigstore.dev/cosign/sign/v1`) naming the
//! image digest as subject. [`verify_bundle`] checks the signature over the DSSE PAE of the
//! payload bytes **as stored** (never a re-serialisation: sigstore-rs #608), that the statement
//! names the artifact digest, and the signer: a Fulcio certificate (keyless: Rekor SET,
//! inclusion proof when present, validity at the integrated time, chain to the trusted root,
//! identity policy) or a caller-supplied P-256 public key.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use sigstore::crypto::{CosignVerificationKey, Signature};
use sigstore_protobuf_specs::dev::sigstore::bundle::v1::{bundle, verification_material, Bundle};
use sigstore_protobuf_specs::dev::sigstore::rekor::v1::TransparencyLogEntry;
use std::time::SystemTime;

use super::fulcio::FulcioCertificate;
use super::identity::{KeylessIdentity, SignerKind, VerifiedSigner};
use super::keyless::{unix_now, KeylessError};
use super::rekor::{self, ExpectedEntry, InclusionProof, SetPayload};
use super::trust_root::TrustRoot;

/// The bundle media type tresor verifies.
pub const BUNDLE_V03_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// Largest bundle accepted; real ones are about 10 KiB.
pub const MAX_BUNDLE_BYTES: usize = 1024 * 1024;
/// The in-toto predicate type of a cosign v3 image signature.
pub const COSIGN_SIGN_PREDICATE_TYPE: &str = "https://sigstore.dev/cosign/sign/v1";
/// The DSSE payload type of an in-toto statement.
const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
const IN_TOTO_STATEMENT_TYPES: [&str; 2] = [
    "https://in-toto.io/Statement/v1",
    "https://in-toto.io/Statement/v0.1",
];

/// Who must have signed a bundle.
#[derive(Debug, Clone, Copy)]
pub enum BundleAuthority<'a> {
    /// A Fulcio certificate for this identity, chaining to this trusted root, logged in Rekor.
    Keyless {
        /// The required certificate identity and OIDC issuer.
        identity: &'a KeylessIdentity,
        /// Fulcio CAs and Rekor keys.
        root: &'a TrustRoot,
    },
    /// A long-lived ECDSA P-256 key (PEM `PUBLIC KEY`, as in `cosign.pub`). The bundle's
    /// transparency-log entries, if any, are not checked (like `--insecure-ignore-tlog`).
    Key {
        /// The PEM public key.
        public_key_pem: &'a str,
    },
}

#[derive(Deserialize)]
struct MediaTypeOnly {
    #[serde(rename = "mediaType", default)]
    media_type: String,
}

#[derive(Deserialize)]
struct Statement {
    #[serde(rename = "_type")]
    statement_type: String,
    #[serde(rename = "predicateType")]
    predicate_type: String,
    #[serde(default)]
    subject: Vec<Subject>,
}

#[derive(Deserialize)]
struct Subject {
    #[serde(default)]
    digest: std::collections::BTreeMap<String, String>,
}

/// What the bundle's signature covers, after the subject check.
enum Signed {
    /// DSSE: the signature is over `pae`; the log entry records `payload_digest`.
    Dsse {
        pae: Vec<u8>,
        payload_digest: [u8; 32],
    },
    /// Message signature over the artifact itself, whose SHA-256 is `digest`.
    Message { digest: [u8; 32] },
}

/// Verifies a Sigstore bundle v0.3 for the artifact `artifact_digest` (`sha256:<hex>`).
///
/// `now` only bounds how far in the future a Rekor entry may claim to be; certificate validity
/// is judged at the entry's integrated time. Each way of failing has its own
/// [`KeylessError`] variant: wrong digest ([`KeylessError::SubjectDigestMismatch`]), bad
/// signature, bad log evidence, certificate not valid then or not chaining to the root,
/// identity or issuer mismatch, oversized or malformed bundle.
pub fn verify_bundle(
    bundle_json: &[u8],
    artifact_digest: &str,
    authority: &BundleAuthority<'_>,
    now: SystemTime,
) -> Result<VerifiedSigner, KeylessError> {
    if bundle_json.len() > MAX_BUNDLE_BYTES {
        return Err(KeylessError::BundleTooLarge {
            size: bundle_json.len(),
            limit: MAX_BUNDLE_BYTES,
        });
    }
    let expected = parse_sha256_digest(artifact_digest)?;
    let media: MediaTypeOnly = serde_json::from_slice(bundle_json)
        .map_err(|e| KeylessError::bundle(format!("not json: {e}")))?;
    if media.media_type != BUNDLE_V03_MEDIA_TYPE {
        return Err(KeylessError::UnsupportedBundleVersion {
            media_type: media.media_type,
        });
    }
    let bundle: Bundle = serde_json::from_slice(bundle_json)
        .map_err(|e| KeylessError::bundle(format!("not a sigstore bundle: {e}")))?;

    let (signature, signed) = match &bundle.content {
        Some(bundle::Content::DsseEnvelope(envelope)) => {
            if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE {
                return Err(KeylessError::bundle(format!(
                    "dsse payload type {:?} is not {IN_TOTO_PAYLOAD_TYPE}",
                    envelope.payload_type
                )));
            }
            let [sig] = envelope.signatures.as_slice() else {
                return Err(KeylessError::bundle(format!(
                    "dsse envelope has {} signatures, expected exactly one",
                    envelope.signatures.len()
                )));
            };
            check_statement(&envelope.payload, artifact_digest, &expected)?;
            let signed = Signed::Dsse {
                pae: pae(&envelope.payload_type, &envelope.payload),
                payload_digest: Sha256::digest(&envelope.payload).into(),
            };
            (sig.sig.as_slice(), signed)
        }
        Some(bundle::Content::MessageSignature(message)) => {
            let digest = message
                .message_digest
                .as_ref()
                .filter(|d| d.algorithm == sigstore_protobuf_specs::dev::sigstore::common::v1::HashAlgorithm::Sha2256 as i32)
                .ok_or_else(|| KeylessError::bundle("message signature has no sha-256 digest"))?;
            if digest.digest.as_slice() != expected.as_slice() {
                return Err(KeylessError::SubjectDigestMismatch {
                    expected: artifact_digest.to_owned(),
                    actual: format!("sha256:{}", hex::encode(&digest.digest)),
                });
            }
            (
                message.signature.as_slice(),
                Signed::Message { digest: expected },
            )
        }
        None => {
            return Err(KeylessError::bundle(
                "bundle has no dsse envelope or message signature",
            ))
        }
    };

    match authority {
        BundleAuthority::Keyless { identity, root } => {
            verify_keyless(&bundle, signature, &signed, identity, root, unix_now(now))
        }
        BundleAuthority::Key { public_key_pem } => verify_key(signature, &signed, public_key_pem),
    }
}

fn parse_sha256_digest(digest: &str) -> Result<[u8; 32], KeylessError> {
    digest
        .strip_prefix("sha256:")
        .filter(|h| {
            h.len() == 64
                && h.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        })
        .and_then(|h| hex::decode(h).ok())
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| {
            KeylessError::bundle(format!(
                "artifact digest {digest:?} is not sha256:<64 lower-case hex>"
            ))
        })
}

fn check_statement(
    payload: &[u8],
    artifact_digest: &str,
    expected: &[u8; 32],
) -> Result<(), KeylessError> {
    let statement: Statement = serde_json::from_slice(payload).map_err(|e| {
        KeylessError::bundle(format!("dsse payload is not an in-toto statement: {e}"))
    })?;
    if !IN_TOTO_STATEMENT_TYPES.contains(&statement.statement_type.as_str()) {
        return Err(KeylessError::bundle(format!(
            "statement type {:?} is not an in-toto statement",
            statement.statement_type
        )));
    }
    if statement.predicate_type != COSIGN_SIGN_PREDICATE_TYPE {
        return Err(KeylessError::bundle(format!(
            "predicate type {:?} is not a cosign signature ({COSIGN_SIGN_PREDICATE_TYPE})",
            statement.predicate_type
        )));
    }
    let expected_hex = hex::encode(expected);
    let subjects: Vec<String> = statement
        .subject
        .iter()
        .filter_map(|s| s.digest.get("sha256"))
        .map(|h| format!("sha256:{h}"))
        .collect();
    if statement.subject.iter().any(|s| {
        s.digest
            .get("sha256")
            .is_some_and(|h| h.eq_ignore_ascii_case(&expected_hex))
    }) {
        return Ok(());
    }
    Err(KeylessError::SubjectDigestMismatch {
        expected: artifact_digest.to_owned(),
        actual: if subjects.is_empty() {
            "no sha256 subject".to_owned()
        } else {
            subjects.join(", ")
        },
    })
}

/// DSSE pre-authentication encoding: `DSSEv1 <len> <type> <len> <payload>`.
fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

fn verify_keyless(
    bundle: &Bundle,
    signature: &[u8],
    signed: &Signed,
    policy: &KeylessIdentity,
    root: &TrustRoot,
    now: i64,
) -> Result<VerifiedSigner, KeylessError> {
    let material = bundle
        .verification_material
        .as_ref()
        .ok_or_else(|| KeylessError::bundle("bundle has no verification material"))?;
    let (cert, untrusted) = match &material.content {
        Some(verification_material::Content::Certificate(c)) => {
            (FulcioCertificate::from_der(&c.raw_bytes)?, Vec::new())
        }
        Some(verification_material::Content::X509CertificateChain(chain)) => {
            let mut certs = chain.certificates.iter().map(|c| c.raw_bytes.clone());
            let leaf = certs
                .next()
                .ok_or_else(|| KeylessError::bundle("certificate chain is empty"))?;
            (FulcioCertificate::from_der(&leaf)?, certs.collect())
        }
        Some(verification_material::Content::PublicKey(_)) => return Err(KeylessError::bundle(
            "bundle is signed with a public key, not a fulcio certificate; verify it with a key",
        )),
        None => return Err(KeylessError::bundle("bundle has no certificate")),
    };

    let expected_entry = match signed {
        Signed::Dsse {
            pae,
            payload_digest,
        } => {
            cert.verify_signature(signature, pae)?;
            ExpectedEntry::Dsse {
                payload_digest: *payload_digest,
                signature,
                certificate_der: cert.der(),
            }
        }
        Signed::Message { digest } => {
            verify_prehashed(cert.spki_der(), signature, digest)?;
            ExpectedEntry::HashedRekord {
                digest: *digest,
                signature,
                certificate_der: cert.der(),
            }
        }
    };

    let entry = match material.tlog_entries.as_slice() {
        [] => return Err(KeylessError::TlogEntryMissing),
        [entry] => entry,
        more => {
            return Err(KeylessError::bundle(format!(
                "bundle has {} transparency-log entries, expected one",
                more.len()
            )))
        }
    };
    let at = verify_tlog_entry(entry, &expected_entry, root, now)?;

    cert.check_valid_at(at)?;
    cert.verify_chain(root, &untrusted, at)?;
    let (identity, issuer) = cert.check_identity(policy)?;
    Ok(VerifiedSigner {
        kind: SignerKind::Keyless,
        identity,
        issuer: Some(issuer),
        integrated_time: Some(at),
    })
}

/// Verifies the entry's SET (and inclusion proof, if present) and its binding to the
/// signature; returns the integrated time.
fn verify_tlog_entry(
    entry: &TransparencyLogEntry,
    expected: &ExpectedEntry<'_>,
    root: &TrustRoot,
    now: i64,
) -> Result<i64, KeylessError> {
    let promise = entry.inclusion_promise.as_ref().ok_or_else(|| {
        KeylessError::tlog("entry has no inclusion promise (signed entry timestamp) to prove the signing time offline")
    })?;
    let log_id = entry
        .log_id
        .as_ref()
        .ok_or_else(|| KeylessError::tlog("entry has no log id"))?;
    let log_id_hex = hex::encode(&log_id.key_id);
    let body_b64 = STANDARD.encode(&entry.canonicalized_body);
    let log = rekor::verify_set(
        root,
        &promise.signed_entry_timestamp,
        &SetPayload {
            body_b64: &body_b64,
            integrated_time: entry.integrated_time,
            log_index: entry.log_index,
            log_id_hex: &log_id_hex,
        },
        now,
    )?;
    rekor::check_body(&entry.canonicalized_body, expected)?;
    if let Some(proof) = &entry.inclusion_proof {
        let checkpoint = proof
            .checkpoint
            .as_ref()
            .ok_or_else(|| KeylessError::tlog("inclusion proof has no checkpoint"))?;
        rekor::verify_inclusion_proof(
            log,
            &entry.canonicalized_body,
            &InclusionProof {
                log_index: proof.log_index,
                tree_size: proof.tree_size,
                root_hash: &proof.root_hash,
                hashes: &proof.hashes,
                checkpoint: &checkpoint.envelope,
            },
        )?;
    }
    Ok(entry.integrated_time)
}

fn verify_key(
    signature: &[u8],
    signed: &Signed,
    public_key_pem: &str,
) -> Result<VerifiedSigner, KeylessError> {
    let (label, der) = x509_cert::der::pem::decode_vec(public_key_pem.as_bytes()).map_err(|e| {
        KeylessError::KeyInvalid {
            message: format!("not a pem public key: {e}"),
        }
    })?;
    if label != "PUBLIC KEY" {
        return Err(KeylessError::KeyInvalid {
            message: format!("expected a PEM PUBLIC KEY, found {label}"),
        });
    }
    let key = CosignVerificationKey::try_from_der(&der).map_err(|e| KeylessError::KeyInvalid {
        message: e.to_string(),
    })?;
    if !matches!(key, CosignVerificationKey::ECDSA_P256_SHA256_ASN1(_)) {
        return Err(KeylessError::KeyInvalid {
            message: "expected an ecdsa p-256 public key".into(),
        });
    }
    match signed {
        Signed::Dsse { pae, .. } => key
            .verify_signature(Signature::Raw(signature), pae)
            .map_err(|_| KeylessError::SignatureInvalid {
                message: "signature does not verify with the given public key".into(),
            })?,
        Signed::Message { digest } => verify_prehashed(&der, signature, digest)?,
    }
    Ok(VerifiedSigner {
        kind: SignerKind::Key,
        identity: format!("sha256:{}", hex::encode(Sha256::digest(&der))),
        issuer: None,
        integrated_time: None,
    })
}

/// Verifies an ECDSA P-256 signature over a SHA-256 digest (a bundle `messageSignature`
/// signs the artifact bytes, which a verifier of an image only knows by digest).
fn verify_prehashed(
    spki_der: &[u8],
    signature: &[u8],
    digest: &[u8; 32],
) -> Result<(), KeylessError> {
    use aws_lc_rs::{digest, signature};
    let invalid = |message: &str| KeylessError::SignatureInvalid {
        message: message.to_owned(),
    };
    let digest = digest::Digest::import_less_safe(digest, &digest::SHA256)
        .map_err(|_| invalid("digest has the wrong length"))?;
    signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, spki_der)
        .verify_digest(&digest, signature)
        .map_err(|_| invalid("message signature does not verify with the signer's p-256 key"))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_ASN1_SIGNING};
    use serde_json::{json, Value};

    use super::*;
    use crate::signing::identity::Matcher;

    const BUNDLE: &[u8] = include_bytes!("../../testdata/cosign/bundles/bundle_v03.json");
    const ROOT: &[u8] = include_bytes!("../../testdata/cosign/bundles/trusted_root.json");
    const DIGEST: &str = "sha256:c811d58de79c92f03214e63aa339484e488d694ae8a6283b5f3f17a9faf50172";
    const IDENTITY: &str = "https://github.com/kubewarden/kubewarden-controller/.github/workflows/release.yml@refs/tags/v1.34.0";
    const ISSUER: &str = "https://token.actions.githubusercontent.com";
    const INTEGRATED_TIME: i64 = 1_775_719_409;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_775_800_000)
    }

    fn policy(identity: Matcher, issuer: Matcher) -> KeylessIdentity {
        KeylessIdentity { identity, issuer }
    }

    fn exact() -> KeylessIdentity {
        policy(Matcher::exact(IDENTITY), Matcher::exact(ISSUER))
    }

    fn verify_with(
        bundle: &[u8],
        root: &[u8],
        id: &KeylessIdentity,
    ) -> Result<VerifiedSigner, KeylessError> {
        let root = TrustRoot::from_json(root).unwrap();
        verify_bundle(
            bundle,
            DIGEST,
            &BundleAuthority::Keyless {
                identity: id,
                root: &root,
            },
            now(),
        )
    }

    fn edited(edit: impl FnOnce(&mut Value)) -> Vec<u8> {
        let mut v: Value = serde_json::from_slice(BUNDLE).unwrap();
        edit(&mut v);
        serde_json::to_vec(&v).unwrap()
    }

    fn tlog(v: &mut Value) -> &mut Value {
        &mut v["verificationMaterial"]["tlogEntries"][0]
    }

    #[test]
    fn cosign_v3_bundle_verifies_for_its_digest_identity_and_issuer() {
        let signer = verify_with(BUNDLE, ROOT, &exact()).unwrap();
        assert_eq!(
            signer,
            VerifiedSigner {
                kind: SignerKind::Keyless,
                identity: IDENTITY.into(),
                issuer: Some(ISSUER.into()),
                integrated_time: Some(INTEGRATED_TIME),
            }
        );
    }

    #[test]
    fn cosign_v3_bundle_verifies_with_anchored_regexps() {
        let id = policy(
            Matcher::regexp(
                r"https://github\.com/kubewarden/.+/\.github/workflows/release\.yml@refs/tags/v.*",
            )
            .unwrap(),
            Matcher::regexp(r"https://token\.actions\.githubusercontent\.com").unwrap(),
        );
        assert_eq!(verify_with(BUNDLE, ROOT, &id).unwrap().identity, IDENTITY);
    }

    #[test]
    fn another_digest_is_a_subject_mismatch() {
        let root = TrustRoot::from_json(ROOT).unwrap();
        let id = exact();
        let other = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
        let err = verify_bundle(
            BUNDLE,
            other,
            &BundleAuthority::Keyless {
                identity: &id,
                root: &root,
            },
            now(),
        )
        .unwrap_err();
        match err {
            KeylessError::SubjectDigestMismatch { expected, actual } => {
                assert_eq!(expected, other);
                assert_eq!(actual, DIGEST);
            }
            e => panic!("unexpected {e:?}"),
        }
    }

    #[test]
    fn another_identity_is_an_identity_mismatch() {
        let id = policy(
            Matcher::exact("https://github.com/kubewarden/kubewarden-controller/.github/workflows/release.yml@refs/tags/v1.35.0"),
            Matcher::exact(ISSUER),
        );
        match verify_with(BUNDLE, ROOT, &id).unwrap_err() {
            KeylessError::IdentityMismatch { found, .. } => assert_eq!(found, IDENTITY),
            e => panic!("unexpected {e:?}"),
        }
    }

    #[test]
    fn another_issuer_is_an_issuer_mismatch() {
        let id = policy(
            Matcher::exact(IDENTITY),
            Matcher::exact("https://accounts.google.com"),
        );
        match verify_with(BUNDLE, ROOT, &id).unwrap_err() {
            KeylessError::IssuerMismatch { expected, found } => {
                assert_eq!(expected, "https://accounts.google.com");
                assert_eq!(found, ISSUER);
            }
            e => panic!("unexpected {e:?}"),
        }
    }

    #[test]
    fn regexp_that_does_not_match_is_an_identity_mismatch() {
        let id = policy(
            Matcher::regexp("https://github.com/sigstore/.*").unwrap(),
            Matcher::exact(ISSUER),
        );
        assert_eq!(
            verify_with(BUNDLE, ROOT, &id).unwrap_err().reason(),
            "IdentityMismatch"
        );
        // A substring cosign's unanchored regexp would accept is not enough for tresor.
        let id = policy(
            Matcher::regexp("kubewarden-controller").unwrap(),
            Matcher::exact(ISSUER),
        );
        assert_eq!(
            verify_with(BUNDLE, ROOT, &id).unwrap_err().reason(),
            "IdentityMismatch"
        );
        let id = policy(
            Matcher::exact(IDENTITY),
            Matcher::regexp("token.actions").unwrap(),
        );
        assert_eq!(
            verify_with(BUNDLE, ROOT, &id).unwrap_err().reason(),
            "IssuerMismatch"
        );
    }

    #[test]
    fn tampered_payload_is_an_invalid_signature() {
        let bundle = edited(|v| {
            let payload = STANDARD
                .decode(v["dsseEnvelope"]["payload"].as_str().unwrap())
                .unwrap();
            let tampered = String::from_utf8(payload)
                .unwrap()
                .replace("\"annotations\":{}", "\"annotations\":{\"x\":\"y\"}");
            v["dsseEnvelope"]["payload"] = json!(STANDARD.encode(tampered));
        });
        assert_eq!(
            verify_with(&bundle, ROOT, &exact()).unwrap_err().reason(),
            "SignatureInvalid"
        );
    }

    #[test]
    fn payload_is_verified_as_stored_not_reserialised() {
        // Same JSON, different bytes (a space): a verifier that re-serialises would accept it.
        let bundle = edited(|v| {
            let payload = STANDARD
                .decode(v["dsseEnvelope"]["payload"].as_str().unwrap())
                .unwrap();
            let spaced = String::from_utf8(payload).unwrap().replacen(':', ": ", 1);
            v["dsseEnvelope"]["payload"] = json!(STANDARD.encode(spaced));
        });
        assert_eq!(
            verify_with(&bundle, ROOT, &exact()).unwrap_err().reason(),
            "SignatureInvalid"
        );
    }

    #[test]
    fn certificate_not_chaining_to_the_root_is_rejected() {
        // Keep only the 2021 Fulcio CA: the signing certificate was issued by the current one.
        let mut root: Value = serde_json::from_slice(ROOT).unwrap();
        root["certificateAuthorities"]
            .as_array_mut()
            .unwrap()
            .remove(1);
        let root = serde_json::to_vec(&root).unwrap();
        assert_eq!(
            verify_with(BUNDLE, &root, &exact()).unwrap_err().reason(),
            "CertificateChainInvalid"
        );
    }

    #[test]
    fn tampered_set_is_an_invalid_tlog_entry() {
        let bundle = edited(|v| {
            let set = STANDARD
                .decode(
                    tlog(v)["inclusionPromise"]["signedEntryTimestamp"]
                        .as_str()
                        .unwrap(),
                )
                .unwrap();
            let mut set = set;
            let last = set.len() - 2;
            set[last] ^= 1;
            tlog(v)["inclusionPromise"]["signedEntryTimestamp"] = json!(STANDARD.encode(set));
        });
        assert_eq!(
            verify_with(&bundle, ROOT, &exact()).unwrap_err().reason(),
            "TlogEntryInvalid"
        );
    }

    #[test]
    fn moved_integrated_time_breaks_the_set() {
        let bundle =
            edited(|v| tlog(v)["integratedTime"] = json!((INTEGRATED_TIME + 60).to_string()));
        let err = verify_with(&bundle, ROOT, &exact()).unwrap_err();
        assert_eq!(err.reason(), "TlogEntryInvalid", "{err}");
    }

    #[test]
    fn missing_set_is_rejected() {
        let bundle = edited(|v| {
            tlog(v).as_object_mut().unwrap().remove("inclusionPromise");
        });
        assert_eq!(
            verify_with(&bundle, ROOT, &exact()).unwrap_err().reason(),
            "TlogEntryInvalid"
        );
        let bundle = edited(|v| v["verificationMaterial"]["tlogEntries"] = json!([]));
        assert_eq!(
            verify_with(&bundle, ROOT, &exact()).unwrap_err().reason(),
            "TlogEntryMissing"
        );
    }

    #[test]
    fn tampered_inclusion_proof_is_rejected() {
        let bundle = edited(|v| {
            tlog(v)["inclusionProof"]["hashes"][0] = json!(STANDARD.encode([0u8; 32]));
        });
        let err = verify_with(&bundle, ROOT, &exact()).unwrap_err();
        assert_eq!(err.reason(), "TlogEntryInvalid");
        assert!(err.to_string().contains("inclusion proof"), "{err}");
    }

    #[test]
    fn checkpoint_not_signed_by_rekor_is_rejected() {
        let bundle = edited(|v| {
            let note = tlog(v)["inclusionProof"]["checkpoint"]["envelope"]
                .as_str()
                .unwrap()
                .to_owned();
            let forged = note.replacen("rekor.sigstore.dev - ", "rekor.sigstore.dex - ", 1);
            assert_ne!(note, forged);
            tlog(v)["inclusionProof"]["checkpoint"]["envelope"] = json!(forged);
        });
        let err = verify_with(&bundle, ROOT, &exact()).unwrap_err();
        assert_eq!(err.reason(), "TlogEntryInvalid");
        assert!(
            err.to_string().contains("checkpoint is not signed"),
            "{err}"
        );
    }

    #[test]
    fn entry_from_the_future_is_rejected() {
        let root = TrustRoot::from_json(ROOT).unwrap();
        let id = exact();
        let before = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let err = verify_bundle(
            BUNDLE,
            DIGEST,
            &BundleAuthority::Keyless {
                identity: &id,
                root: &root,
            },
            before,
        )
        .unwrap_err();
        assert_eq!(err.reason(), "TlogEntryInvalid");
    }

    #[test]
    fn oversized_and_unknown_bundles_are_rejected() {
        let mut big = BUNDLE.to_vec();
        big.resize(MAX_BUNDLE_BYTES + 1, b' ');
        assert_eq!(
            verify_with(&big, ROOT, &exact()).unwrap_err().reason(),
            "BundleTooLarge"
        );
        let v01 = edited(|v| {
            v["mediaType"] = json!("application/vnd.dev.sigstore.bundle+json;version=0.1")
        });
        assert_eq!(
            verify_with(&v01, ROOT, &exact()).unwrap_err().reason(),
            "UnsupportedBundleVersion"
        );
        assert_eq!(
            verify_with(b"{\"mediaType\":", ROOT, &exact())
                .unwrap_err()
                .reason(),
            "BundleInvalid"
        );
        let attestation = edited(|v| {
            let p = STANDARD
                .decode(v["dsseEnvelope"]["payload"].as_str().unwrap())
                .unwrap();
            let p = String::from_utf8(p)
                .unwrap()
                .replace("cosign/sign/v1", "cosign/other/v1");
            v["dsseEnvelope"]["payload"] = json!(STANDARD.encode(p));
        });
        assert_eq!(
            verify_with(&attestation, ROOT, &exact())
                .unwrap_err()
                .reason(),
            "BundleInvalid"
        );
    }

    struct TestKey {
        pair: EcdsaKeyPair,
        pem: String,
    }

    fn test_key() -> TestKey {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &SystemRandom::new())
                .unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref()).unwrap();
        // SPKI for P-256 = fixed 26-byte prefix + the uncompressed point.
        let mut spki = hex::decode("3059301306072a8648ce3d020106082a8648ce3d030107034200").unwrap();
        spki.extend_from_slice(pair.public_key().as_ref());
        let pem = x509_cert::der::pem::encode_string(
            "PUBLIC KEY",
            x509_cert::der::pem::LineEnding::LF,
            &spki,
        )
        .unwrap();
        TestKey { pair, pem }
    }

    fn key_bundle(key: &TestKey, payload: &[u8]) -> Vec<u8> {
        let sig = key
            .pair
            .sign(&SystemRandom::new(), &pae(IN_TOTO_PAYLOAD_TYPE, payload))
            .unwrap();
        serde_json::to_vec(&json!({
            "mediaType": BUNDLE_V03_MEDIA_TYPE,
            "verificationMaterial": {"publicKey": {"hint": "test"}, "tlogEntries": []},
            "dsseEnvelope": {
                "payload": STANDARD.encode(payload),
                "payloadType": IN_TOTO_PAYLOAD_TYPE,
                "signatures": [{"sig": STANDARD.encode(sig.as_ref()), "keyid": ""}]
            }
        }))
        .unwrap()
    }

    fn statement(digest_hex: &str) -> Vec<u8> {
        format!(
            r#"{{"_type":"https://in-toto.io/Statement/v1","subject":[{{"digest":{{"sha256":"{digest_hex}"}}}}],"predicateType":"https://sigstore.dev/cosign/sign/v1"}}"#
        )
        .into_bytes()
    }

    #[test]
    fn key_bundle_verifies_with_its_key_and_names_the_fingerprint() {
        let key = test_key();
        let bundle = key_bundle(&key, &statement(DIGEST.trim_start_matches("sha256:")));
        let signer = verify_bundle(
            &bundle,
            DIGEST,
            &BundleAuthority::Key {
                public_key_pem: &key.pem,
            },
            now(),
        )
        .unwrap();
        assert_eq!(signer.kind, SignerKind::Key);
        let (_, der) = x509_cert::der::pem::decode_vec(key.pem.as_bytes()).unwrap();
        assert_eq!(
            signer.identity,
            format!("sha256:{}", hex::encode(Sha256::digest(der)))
        );
        assert_eq!(signer.issuer, None);

        let other = test_key();
        let err = verify_bundle(
            &bundle,
            DIGEST,
            &BundleAuthority::Key {
                public_key_pem: &other.pem,
            },
            now(),
        )
        .unwrap_err();
        assert_eq!(err.reason(), "SignatureInvalid");
    }

    #[test]
    fn key_bundle_for_another_digest_or_keyless_policy_is_rejected() {
        let key = test_key();
        let bundle = key_bundle(&key, &statement(&"ab".repeat(32)));
        let err = verify_bundle(
            &bundle,
            DIGEST,
            &BundleAuthority::Key {
                public_key_pem: &key.pem,
            },
            now(),
        )
        .unwrap_err();
        assert_eq!(err.reason(), "SubjectDigestMismatch");
        let bundle = key_bundle(&key, &statement(DIGEST.trim_start_matches("sha256:")));
        assert_eq!(
            verify_with(&bundle, ROOT, &exact()).unwrap_err().reason(),
            "BundleInvalid"
        );
    }

    #[test]
    fn non_p256_key_is_rejected() {
        let ed25519 = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n";
        let err = verify_bundle(
            BUNDLE,
            DIGEST,
            &BundleAuthority::Key {
                public_key_pem: ed25519,
            },
            now(),
        )
        .unwrap_err();
        assert_eq!(err.reason(), "KeyInvalid");
        assert!(err.to_string().contains("p-256"), "{err}");
    }

    #[test]
    fn message_signature_bundle_verifies_with_key() {
        let key = test_key();
        let manifest = b"{\"schemaVersion\":2}";
        let digest = Sha256::digest(manifest);
        let artifact = format!("sha256:{}", hex::encode(digest));
        let sig = key.pair.sign(&SystemRandom::new(), manifest).unwrap();
        let bundle = serde_json::to_vec(&json!({
            "mediaType": BUNDLE_V03_MEDIA_TYPE,
            "verificationMaterial": {"publicKey": {"hint": "test"}, "tlogEntries": []},
            "messageSignature": {
                "messageDigest": {"algorithm": "SHA2_256", "digest": STANDARD.encode(digest)},
                "signature": STANDARD.encode(sig.as_ref())
            }
        }))
        .unwrap();
        let auth = BundleAuthority::Key {
            public_key_pem: &key.pem,
        };
        assert_eq!(
            verify_bundle(&bundle, &artifact, &auth, now())
                .unwrap()
                .kind,
            SignerKind::Key
        );
        assert_eq!(
            verify_bundle(&bundle, DIGEST, &auth, now())
                .unwrap_err()
                .reason(),
            "SubjectDigestMismatch"
        );
    }
}
