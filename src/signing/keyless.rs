//! Keyless verification of cosign's legacy `.sig` layers, and the errors of keyless and
//! bundle verification.
//!
//! A keyless legacy signature layer carries the simple-signing payload as its blob and, as
//! annotations, the base64 signature, the Fulcio leaf certificate (PEM), optionally its chain
//! (PEM) and the Rekor bundle (the SET over the log entry). [`verify_legacy_keyless`] checks,
//! offline: the signature over the exact payload bytes with the certificate's key; the SET with
//! the trusted root's Rekor key; that the log entry records this signature, certificate and
//! payload hash; that the certificate was valid when the entry was integrated and chains, at
//! that time, to a Fulcio CA of the trusted root; and the identity policy. Checking the
//! payload's `docker-manifest-digest` against the artifact is the caller's job
//! ([`simple_signing_manifest_digest`] reads it).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::fulcio::FulcioCertificate;
use super::identity::{KeylessIdentity, SignerKind, VerifiedSigner};
use super::rekor::{self, ExpectedEntry, SetPayload};
use super::trust_root::TrustRoot;

/// Layer annotation holding the base64 signature over the layer blob.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// Layer annotation holding the PEM Fulcio leaf certificate.
pub const CERTIFICATE_ANNOTATION: &str = "dev.sigstore.cosign/certificate";
/// Layer annotation holding the PEM certificate chain (intermediates, root).
pub const CHAIN_ANNOTATION: &str = "dev.sigstore.cosign/chain";
/// Layer annotation holding the Rekor bundle (`{SignedEntryTimestamp, Payload}`).
pub const BUNDLE_ANNOTATION: &str = "dev.sigstore.cosign/bundle";

/// Largest annotation value read (a certificate chain is a few KiB).
const MAX_ANNOTATION_BYTES: usize = 256 * 1024;
/// Largest simple-signing payload parsed by [`simple_signing_manifest_digest`].
const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// Why a keyless or bundle signature did not verify.
///
/// Each variant has a stable [`reason`](KeylessError::reason) for conditions, events, metrics
/// and JSON output. Times are Unix seconds.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeylessError {
    /// The trusted root file cannot be used.
    #[error("trusted root is invalid: {message}")]
    TrustRootInvalid {
        /// What was wrong.
        message: String,
    },
    /// An identity or issuer regexp does not compile.
    #[error("invalid certificate regexp {pattern:?}: {message}")]
    InvalidRegexp {
        /// The pattern as given.
        pattern: String,
        /// The compiler's complaint.
        message: String,
    },
    /// A required signature-layer annotation is absent.
    #[error("signature layer has no {name} annotation; it is not a keyless cosign signature")]
    AnnotationMissing {
        /// The annotation key.
        name: String,
    },
    /// A signature-layer annotation cannot be decoded.
    #[error("annotation {name} is invalid: {message}")]
    AnnotationInvalid {
        /// The annotation key.
        name: String,
        /// What was wrong.
        message: String,
    },
    /// The signing certificate cannot be parsed or lacks what Fulcio puts there.
    #[error("signing certificate is invalid: {message}")]
    CertificateInvalid {
        /// What was wrong.
        message: String,
    },
    /// The certificate does not chain to a Fulcio CA of the trusted root.
    #[error("certificate chain is invalid: {message}")]
    CertificateChainInvalid {
        /// What was wrong.
        message: String,
    },
    /// The certificate was not valid when the signature was logged (or, with no log entry,
    /// is not valid now).
    #[error(
        "signing certificate was not valid at {} (valid {} to {}); a keyless signature counts only if the transparency log proves it was made while the certificate was valid",
        fmt_time(*at), fmt_time(*not_before), fmt_time(*not_after)
    )]
    CertificateExpired {
        /// Start of the certificate's validity.
        not_before: i64,
        /// End of the certificate's validity.
        not_after: i64,
        /// The time it was checked at.
        at: i64,
    },
    /// No certificate SAN matches the expected identity.
    #[error("certificate identity {found:?} does not match the expected identity {expected:?}")]
    IdentityMismatch {
        /// The policy's identity (exact value or `regexp …`).
        expected: String,
        /// The certificate's SANs.
        found: String,
    },
    /// The certificate's OIDC issuer does not match.
    #[error("certificate oidc issuer {found:?} does not match the expected issuer {expected:?}")]
    IssuerMismatch {
        /// The policy's issuer (exact value or `regexp …`).
        expected: String,
        /// The certificate's issuer.
        found: String,
    },
    /// A keyless signature comes without a transparency-log entry, so its time is unproven.
    #[error("keyless signature has no transparency-log entry (rekor bundle); its signing time cannot be proven offline")]
    TlogEntryMissing,
    /// The transparency-log evidence does not verify or does not match the signature.
    #[error("transparency-log entry is invalid: {message}")]
    TlogEntryInvalid {
        /// What was wrong.
        message: String,
    },
    /// The signature does not verify over the stored payload.
    #[error("signature is invalid: {message}")]
    SignatureInvalid {
        /// What was wrong.
        message: String,
    },
    /// The signed statement is about another artifact.
    #[error("signature is for {actual}, not for the artifact {expected}")]
    SubjectDigestMismatch {
        /// The artifact digest the caller verifies.
        expected: String,
        /// The digest(s) the signature covers.
        actual: String,
    },
    /// The bundle is malformed or not a cosign signature bundle.
    #[error("sigstore bundle is invalid: {message}")]
    BundleInvalid {
        /// What was wrong.
        message: String,
    },
    /// The bundle exceeds the size limit.
    #[error("sigstore bundle is {size} bytes, more than the limit of {limit}")]
    BundleTooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The bundle's media type is not one tresor verifies.
    #[error("unsupported sigstore bundle media type {media_type:?}; tresor verifies application/vnd.dev.sigstore.bundle.v0.3+json")]
    UnsupportedBundleVersion {
        /// The bundle's `mediaType`.
        media_type: String,
    },
    /// The caller's public key cannot be used.
    #[error("public key is invalid: {message}")]
    KeyInvalid {
        /// What was wrong.
        message: String,
    },
}

impl KeylessError {
    /// Stable CamelCase reason, the same in conditions, events, metrics and `--output json`.
    pub fn reason(&self) -> &'static str {
        match self {
            KeylessError::TrustRootInvalid { .. } => "TrustRootInvalid",
            KeylessError::InvalidRegexp { .. } => "InvalidRegexp",
            KeylessError::AnnotationMissing { .. } => "AnnotationMissing",
            KeylessError::AnnotationInvalid { .. } => "AnnotationInvalid",
            KeylessError::CertificateInvalid { .. } => "CertificateInvalid",
            KeylessError::CertificateChainInvalid { .. } => "CertificateChainInvalid",
            KeylessError::CertificateExpired { .. } => "CertificateExpired",
            KeylessError::IdentityMismatch { .. } => "IdentityMismatch",
            KeylessError::IssuerMismatch { .. } => "IssuerMismatch",
            KeylessError::TlogEntryMissing => "TlogEntryMissing",
            KeylessError::TlogEntryInvalid { .. } => "TlogEntryInvalid",
            KeylessError::SignatureInvalid { .. } => "SignatureInvalid",
            KeylessError::SubjectDigestMismatch { .. } => "SubjectDigestMismatch",
            KeylessError::BundleInvalid { .. } => "BundleInvalid",
            KeylessError::BundleTooLarge { .. } => "BundleTooLarge",
            KeylessError::UnsupportedBundleVersion { .. } => "UnsupportedBundleVersion",
            KeylessError::KeyInvalid { .. } => "KeyInvalid",
        }
    }

    pub(super) fn trust_root(message: impl Into<String>) -> Self {
        KeylessError::TrustRootInvalid {
            message: message.into(),
        }
    }

    pub(super) fn certificate(message: impl Into<String>) -> Self {
        KeylessError::CertificateInvalid {
            message: message.into(),
        }
    }

    pub(super) fn chain(message: impl Into<String>) -> Self {
        KeylessError::CertificateChainInvalid {
            message: message.into(),
        }
    }

    pub(super) fn tlog(message: impl Into<String>) -> Self {
        KeylessError::TlogEntryInvalid {
            message: message.into(),
        }
    }

    pub(super) fn bundle(message: impl Into<String>) -> Self {
        KeylessError::BundleInvalid {
            message: message.into(),
        }
    }

    fn annotation(name: &str, message: impl Into<String>) -> Self {
        KeylessError::AnnotationInvalid {
            name: name.to_owned(),
            message: message.into(),
        }
    }
}

pub(super) fn fmt_time(secs: i64) -> String {
    match u64::try_from(secs) {
        Ok(s) => humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(s)).to_string(),
        Err(_) => secs.to_string(),
    }
}

/// `now` as Unix seconds (times before 1970 count as 0).
pub(super) fn unix_now(now: SystemTime) -> i64 {
    now.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn annotation<'a>(
    annotations: &'a BTreeMap<String, String>,
    name: &str,
) -> Result<Option<&'a str>, KeylessError> {
    match annotations.get(name) {
        Some(v) if v.len() > MAX_ANNOTATION_BYTES => Err(KeylessError::annotation(
            name,
            format!(
                "{} bytes, more than the limit of {MAX_ANNOTATION_BYTES}",
                v.len()
            ),
        )),
        Some(v) => Ok(Some(v.as_str())),
        None => Ok(None),
    }
}

fn required<'a>(
    annotations: &'a BTreeMap<String, String>,
    name: &str,
) -> Result<&'a str, KeylessError> {
    annotation(annotations, name)?.ok_or_else(|| KeylessError::AnnotationMissing {
        name: name.to_owned(),
    })
}

/// Verifies one keyless cosign legacy signature layer, offline.
///
/// `payload` is the layer blob exactly as stored (the simple-signing JSON); `annotations` are
/// the layer's annotations; `now` bounds how far in the future a log entry may claim to be.
/// The signing time is the Rekor entry's integrated time, proven by the SET; a signature
/// without a Rekor bundle is rejected ([`KeylessError::TlogEntryMissing`], or
/// [`KeylessError::CertificateExpired`] if the certificate is not even valid at `now`).
///
/// The caller must still check that the payload names the artifact's digest.
pub fn verify_legacy_keyless(
    payload: &[u8],
    annotations: &BTreeMap<String, String>,
    identity: &KeylessIdentity,
    root: &TrustRoot,
    now: SystemTime,
) -> Result<VerifiedSigner, KeylessError> {
    let now = unix_now(now);
    let signature = STANDARD
        .decode(required(annotations, SIGNATURE_ANNOTATION)?.trim())
        .map_err(|e| KeylessError::annotation(SIGNATURE_ANNOTATION, format!("not base64: {e}")))?;
    let cert =
        FulcioCertificate::from_pem(required(annotations, CERTIFICATE_ANNOTATION)?.as_bytes())?;
    let chain = match annotation(annotations, CHAIN_ANNOTATION)? {
        Some(pem) => pem_chain(pem)?,
        None => Vec::new(),
    };

    cert.verify_signature(&signature, payload)?;

    let Some(bundle_json) = annotation(annotations, BUNDLE_ANNOTATION)? else {
        cert.check_valid_at(now)?;
        return Err(KeylessError::TlogEntryMissing);
    };
    let bundle: rekor::RekorBundle = serde_json::from_str(bundle_json).map_err(|e| {
        KeylessError::annotation(BUNDLE_ANNOTATION, format!("not a rekor bundle: {e}"))
    })?;
    let set = STANDARD
        .decode(bundle.signed_entry_timestamp.trim())
        .map_err(|e| KeylessError::tlog(format!("signed entry timestamp is not base64: {e}")))?;
    let p = &bundle.payload;
    rekor::verify_set(
        root,
        &set,
        &SetPayload {
            body_b64: &p.body,
            integrated_time: p.integrated_time,
            log_index: p.log_index,
            log_id_hex: &p.log_id,
        },
        now,
    )?;
    let body = STANDARD
        .decode(&p.body)
        .map_err(|e| KeylessError::tlog(format!("entry body is not base64: {e}")))?;
    rekor::check_body(
        &body,
        &ExpectedEntry::HashedRekord {
            digest: Sha256::digest(payload).into(),
            signature: &signature,
            certificate_der: cert.der(),
        },
    )?;

    let at = p.integrated_time;
    cert.check_valid_at(at)?;
    cert.verify_chain(root, &chain, at)?;
    let (identity, issuer) = cert.check_identity(identity)?;
    Ok(VerifiedSigner {
        kind: SignerKind::Keyless,
        identity,
        issuer: Some(issuer),
        integrated_time: Some(at),
    })
}

fn pem_chain(pem: &str) -> Result<Vec<Vec<u8>>, KeylessError> {
    let certs = x509_cert::Certificate::load_pem_chain(pem.as_bytes())
        .map_err(|e| KeylessError::annotation(CHAIN_ANNOTATION, format!("not a pem chain: {e}")))?;
    certs
        .iter()
        .map(|c| {
            x509_cert::der::Encode::to_der(c)
                .map_err(|e| KeylessError::annotation(CHAIN_ANNOTATION, e.to_string()))
        })
        .collect()
}

/// Reads `critical.image.docker-manifest-digest` from a simple-signing payload.
///
/// Fails with [`KeylessError::SignatureInvalid`] if the payload is not simple-signing JSON.
pub fn simple_signing_manifest_digest(payload: &[u8]) -> Result<String, KeylessError> {
    let invalid = |message: &str| KeylessError::SignatureInvalid {
        message: format!("signed payload {message}"),
    };
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(invalid("is larger than 1 MiB"));
    }
    let value: serde_json::Value =
        serde_json::from_slice(payload).map_err(|_| invalid("is not json"))?;
    value
        .pointer("/critical/image/docker-manifest-digest")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| invalid("has no critical.image.docker-manifest-digest"))
}

#[cfg(test)]
mod tests {
    //! A test PKI stands in for Fulcio and Rekor: there are no real keyless legacy vectors.

    use rcgen::{
        date_time_ymd, BasicConstraints, CertificateParams, CustomExtension, DnType,
        ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
        SigningKey, PKCS_ECDSA_P256_SHA256,
    };
    use serde_json::json;

    use super::*;
    use crate::signing::identity::Matcher;

    const IDENTITY: &str =
        "https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v1.0.0";
    const ISSUER: &str = "https://token.actions.githubusercontent.com";
    /// 2025-06-01T00:00:00Z: the leaf certificate is valid for ten minutes from here.
    const T0: i64 = 1_748_736_000;
    const DIGEST: &str = "sha256:634a8f35b5f16dcf4aaa0822adc0b1964bb786fca12f6831de8ddc45e5986a00";

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(u64::try_from(T0 + 86_400).unwrap())
    }

    struct Ca {
        params: CertificateParams,
        key: KeyPair,
        der: Vec<u8>,
    }

    fn ca(name: &str, parent: Option<&Ca>) -> Ca {
        let mut params = CertificateParams::new(vec![]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.not_before = date_time_ymd(2020, 1, 1);
        params.not_after = date_time_ymd(2040, 1, 1);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        if parent.is_some() {
            // Like Fulcio's intermediate; webpki requires the EKU along the whole path.
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
        }
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let der = match parent {
            Some(p) => params.signed_by(&key, &Issuer::from_params(&p.params, &p.key)),
            None => params.self_signed(&key),
        }
        .unwrap()
        .der()
        .to_vec();
        Ca { params, key, der }
    }

    struct Leaf {
        key: KeyPair,
        pem: String,
        der: Vec<u8>,
    }

    /// A Fulcio-like leaf: URI SAN, OIDC issuer extensions, code signing, ten minutes long.
    fn leaf(ca: &Ca, issuer_v2: Option<&str>, issuer_v1: Option<&str>) -> Leaf {
        let mut params = CertificateParams::new(vec![]).unwrap();
        params.not_before = date_time_ymd(2025, 6, 1);
        params.not_after = date_time_ymd(2025, 6, 1) + Duration::from_secs(600);
        params.subject_alt_names = vec![SanType::URI(IDENTITY.try_into().unwrap())];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
        if let Some(issuer) = issuer_v2 {
            let mut utf8 = vec![0x0c, u8::try_from(issuer.len()).unwrap()];
            utf8.extend_from_slice(issuer.as_bytes());
            params
                .custom_extensions
                .push(CustomExtension::from_oid_content(
                    &[1, 3, 6, 1, 4, 1, 57264, 1, 8],
                    utf8,
                ));
        }
        if let Some(issuer) = issuer_v1 {
            params
                .custom_extensions
                .push(CustomExtension::from_oid_content(
                    &[1, 3, 6, 1, 4, 1, 57264, 1, 1],
                    issuer.as_bytes().to_vec(),
                ));
        }
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = params
            .signed_by(&key, &Issuer::from_params(&ca.params, &ca.key))
            .unwrap();
        Leaf {
            key,
            pem: cert.pem(),
            der: cert.der().to_vec(),
        }
    }

    struct Pki {
        fulcio: Ca,
        rekor: KeyPair,
        root: TrustRoot,
    }

    fn trusted_root(chain: &[&[u8]], rekor: &KeyPair) -> TrustRoot {
        let spki = rekor.subject_public_key_info();
        let json = json!({
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [{
                "baseUrl": "https://rekor.test",
                "hashAlgorithm": "SHA2_256",
                "publicKey": {
                    "rawBytes": STANDARD.encode(&spki),
                    "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                    "validFor": {"start": "2020-01-01T00:00:00Z"}
                },
                "logId": {"keyId": STANDARD.encode(Sha256::digest(&spki))}
            }],
            "certificateAuthorities": [{
                "subject": {"organization": "test", "commonName": "fulcio"},
                "uri": "https://fulcio.test",
                "certChain": {"certificates": chain.iter().map(|c| json!({"rawBytes": STANDARD.encode(c)})).collect::<Vec<_>>()},
                "validFor": {"start": "2020-01-01T00:00:00Z"}
            }],
            "ctlogs": []
        });
        TrustRoot::from_json(&serde_json::to_vec(&json).unwrap()).unwrap()
    }

    fn pki() -> Pki {
        let fulcio = ca("fake fulcio", None);
        let rekor = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let root = trusted_root(&[&fulcio.der], &rekor);
        Pki {
            fulcio,
            rekor,
            root,
        }
    }

    fn payload() -> Vec<u8> {
        format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"registry.test/app"}},"image":{{"docker-manifest-digest":"{DIGEST}"}},"type":"cosign container image signature"}},"optional":null}}"#
        )
        .into_bytes()
    }

    fn hashedrekord(payload: &[u8], signature: &[u8], cert_pem: &str) -> String {
        let body = json!({
            "apiVersion": "0.0.1",
            "kind": "hashedrekord",
            "spec": {
                "data": {"hash": {"algorithm": "sha256", "value": hex::encode(Sha256::digest(payload))}},
                "signature": {
                    "content": STANDARD.encode(signature),
                    "publicKey": {"content": STANDARD.encode(cert_pem)}
                }
            }
        });
        STANDARD.encode(serde_json::to_vec(&body).unwrap())
    }

    /// A Rekor bundle annotation whose SET `rekor` signs.
    fn rekor_bundle(rekor: &KeyPair, body_b64: &str, integrated_time: i64) -> String {
        let log_id = hex::encode(Sha256::digest(rekor.subject_public_key_info()));
        let canonical = format!(
            r#"{{"body":"{body_b64}","integratedTime":{integrated_time},"logID":"{log_id}","logIndex":42}}"#
        );
        let set = rekor.sign(canonical.as_bytes()).unwrap();
        json!({
            "SignedEntryTimestamp": STANDARD.encode(set),
            "Payload": {"body": body_b64, "integratedTime": integrated_time, "logIndex": 42, "logID": log_id}
        })
        .to_string()
    }

    /// Signs `payload` as cosign does keylessly: signature, certificate, Rekor bundle.
    fn sign(
        pki: &Pki,
        leaf: &Leaf,
        payload: &[u8],
        integrated_time: i64,
    ) -> BTreeMap<String, String> {
        let signature = leaf.key.sign(payload).unwrap();
        let body = hashedrekord(payload, &signature, &leaf.pem);
        BTreeMap::from([
            (SIGNATURE_ANNOTATION.to_owned(), STANDARD.encode(&signature)),
            (CERTIFICATE_ANNOTATION.to_owned(), leaf.pem.clone()),
            (
                BUNDLE_ANNOTATION.to_owned(),
                rekor_bundle(&pki.rekor, &body, integrated_time),
            ),
        ])
    }

    fn exact() -> KeylessIdentity {
        KeylessIdentity {
            identity: Matcher::exact(IDENTITY),
            issuer: Matcher::exact(ISSUER),
        }
    }

    fn verify(
        pki: &Pki,
        payload: &[u8],
        annotations: &BTreeMap<String, String>,
    ) -> Result<VerifiedSigner, KeylessError> {
        verify_legacy_keyless(payload, annotations, &exact(), &pki.root, now())
    }

    #[test]
    fn keyless_legacy_signature_verifies() {
        let pki = pki();
        let leaf = leaf(&pki.fulcio, Some(ISSUER), None);
        let annotations = sign(&pki, &leaf, &payload(), T0 + 60);
        assert_eq!(
            verify(&pki, &payload(), &annotations).unwrap(),
            VerifiedSigner {
                kind: SignerKind::Keyless,
                identity: IDENTITY.into(),
                issuer: Some(ISSUER.into()),
                integrated_time: Some(T0 + 60),
            }
        );
        assert_eq!(simple_signing_manifest_digest(&payload()).unwrap(), DIGEST);
    }

    #[test]
    fn legacy_issuer_extension_is_read_and_v2_wins() {
        let pki = pki();
        let v1_only = leaf(&pki.fulcio, None, Some(ISSUER));
        let annotations = sign(&pki, &v1_only, &payload(), T0 + 60);
        assert_eq!(
            verify(&pki, &payload(), &annotations)
                .unwrap()
                .issuer
                .as_deref(),
            Some(ISSUER)
        );

        let both = leaf(
            &pki.fulcio,
            Some("https://accounts.google.com"),
            Some(ISSUER),
        );
        let annotations = sign(&pki, &both, &payload(), T0 + 60);
        match verify(&pki, &payload(), &annotations).unwrap_err() {
            KeylessError::IssuerMismatch { found, .. } => {
                assert_eq!(found, "https://accounts.google.com")
            }
            e => panic!("unexpected {e:?}"),
        }
    }

    #[test]
    fn tampered_payload_is_an_invalid_signature() {
        let pki = pki();
        let leaf = leaf(&pki.fulcio, Some(ISSUER), None);
        let annotations = sign(&pki, &leaf, &payload(), T0 + 60);
        let mut tampered = payload();
        tampered.push(b' ');
        assert_eq!(
            verify(&pki, &tampered, &annotations).unwrap_err().reason(),
            "SignatureInvalid"
        );
    }

    #[test]
    fn certificate_from_another_ca_does_not_chain() {
        let pki = pki();
        let rogue = ca("rogue fulcio", None);
        let leaf = leaf(&rogue, Some(ISSUER), None);
        let annotations = sign(&pki, &leaf, &payload(), T0 + 60);
        let err = verify(&pki, &payload(), &annotations).unwrap_err();
        assert_eq!(err.reason(), "CertificateChainInvalid");
        assert_eq!(
            err.to_string(),
            format!(
                "certificate chain is invalid: the signing certificate does not chain to a \
                 Fulcio CA of the trusted root valid at {} (when the signature was logged): it \
                 was issued by none of the root's certificate authorities; is that the right \
                 trusted root?",
                fmt_time(T0 + 60)
            )
        );
        // Shipping the rogue root in the chain annotation does not make it trusted.
        let mut annotations = annotations;
        let rogue_pem = x509_cert::der::pem::encode_string(
            "CERTIFICATE",
            x509_cert::der::pem::LineEnding::LF,
            &rogue.der,
        )
        .unwrap();
        annotations.insert(CHAIN_ANNOTATION.to_owned(), rogue_pem);
        assert_eq!(
            verify(&pki, &payload(), &annotations).unwrap_err().reason(),
            "CertificateChainInvalid"
        );
    }

    #[test]
    fn intermediate_from_the_chain_annotation_is_used() {
        let pki = pki();
        let intermediate = ca("fulcio intermediate", Some(&pki.fulcio));
        let leaf = leaf(&intermediate, Some(ISSUER), None);
        let mut annotations = sign(&pki, &leaf, &payload(), T0 + 60);
        assert_eq!(
            verify(&pki, &payload(), &annotations).unwrap_err().reason(),
            "CertificateChainInvalid"
        );
        let pem = x509_cert::der::pem::encode_string(
            "CERTIFICATE",
            x509_cert::der::pem::LineEnding::LF,
            &intermediate.der,
        )
        .unwrap();
        annotations.insert(CHAIN_ANNOTATION.to_owned(), pem);
        assert_eq!(
            verify(&pki, &payload(), &annotations).unwrap().identity,
            IDENTITY
        );
    }

    #[test]
    fn identity_and_issuer_mismatches_are_distinct() {
        let pki = pki();
        let leaf = leaf(&pki.fulcio, Some(ISSUER), None);
        let annotations = sign(&pki, &leaf, &payload(), T0 + 60);
        let other_identity = KeylessIdentity {
            identity: Matcher::exact(
                "https://github.com/acme/other/.github/workflows/release.yml@refs/tags/v1.0.0",
            ),
            issuer: Matcher::exact(ISSUER),
        };
        match verify_legacy_keyless(&payload(), &annotations, &other_identity, &pki.root, now())
            .unwrap_err()
        {
            KeylessError::IdentityMismatch { found, .. } => assert_eq!(found, IDENTITY),
            e => panic!("unexpected {e:?}"),
        }
        let unanchored = KeylessIdentity {
            identity: Matcher::regexp("acme/app").unwrap(),
            issuer: Matcher::exact(ISSUER),
        };
        let err = verify_legacy_keyless(&payload(), &annotations, &unanchored, &pki.root, now())
            .unwrap_err();
        assert_eq!(err.reason(), "IdentityMismatch");
        let other_issuer = KeylessIdentity {
            identity: Matcher::regexp(r"https://github\.com/acme/.*").unwrap(),
            issuer: Matcher::exact("https://gitlab.com"),
        };
        let err = verify_legacy_keyless(&payload(), &annotations, &other_issuer, &pki.root, now())
            .unwrap_err();
        assert_eq!(err.reason(), "IssuerMismatch");
    }

    #[test]
    fn expired_certificate_without_tlog_entry_is_rejected() {
        let pki = pki();
        let leaf = leaf(&pki.fulcio, Some(ISSUER), None);
        let mut annotations = sign(&pki, &leaf, &payload(), T0 + 60);
        annotations.remove(BUNDLE_ANNOTATION);
        match verify(&pki, &payload(), &annotations).unwrap_err() {
            KeylessError::CertificateExpired { not_after, at, .. } => {
                assert_eq!(not_after, T0 + 600);
                assert_eq!(at, T0 + 86_400);
            }
            e => panic!("unexpected {e:?}"),
        }
        // Even while the certificate is still valid, no log entry means no proven signing time.
        let during = UNIX_EPOCH + Duration::from_secs(u64::try_from(T0 + 120).unwrap());
        let err = verify_legacy_keyless(&payload(), &annotations, &exact(), &pki.root, during)
            .unwrap_err();
        assert_eq!(err.reason(), "TlogEntryMissing");
    }

    #[test]
    fn entry_integrated_after_certificate_expiry_is_rejected() {
        let pki = pki();
        let leaf = leaf(&pki.fulcio, Some(ISSUER), None);
        let annotations = sign(&pki, &leaf, &payload(), T0 + 3_600);
        assert_eq!(
            verify(&pki, &payload(), &annotations).unwrap_err().reason(),
            "CertificateExpired"
        );
    }

    #[test]
    fn tampered_set_is_rejected() {
        let pki = pki();
        let leaf = leaf(&pki.fulcio, Some(ISSUER), None);
        let mut annotations = sign(&pki, &leaf, &payload(), T0 + 60);
        // Move the integrated time without re-signing: the SET no longer verifies.
        let bundle = annotations[BUNDLE_ANNOTATION].replace(
            &format!("\"integratedTime\":{}", T0 + 60),
            &format!("\"integratedTime\":{}", T0 + 61),
        );
        assert_ne!(bundle, annotations[BUNDLE_ANNOTATION]);
        annotations.insert(BUNDLE_ANNOTATION.to_owned(), bundle);
        assert_eq!(
            verify(&pki, &payload(), &annotations).unwrap_err().reason(),
            "TlogEntryInvalid"
        );
    }

    #[test]
    fn set_signed_by_an_untrusted_log_is_rejected() {
        let pki = pki();
        let leaf = leaf(&pki.fulcio, Some(ISSUER), None);
        let mut annotations = sign(&pki, &leaf, &payload(), T0 + 60);
        let rogue = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let signature = STANDARD.decode(&annotations[SIGNATURE_ANNOTATION]).unwrap();
        let body = hashedrekord(&payload(), &signature, &leaf.pem);
        annotations.insert(
            BUNDLE_ANNOTATION.to_owned(),
            rekor_bundle(&rogue, &body, T0 + 60),
        );
        let err = verify(&pki, &payload(), &annotations).unwrap_err();
        assert_eq!(err.reason(), "TlogEntryInvalid");
        assert!(
            err.to_string()
                .contains("not a rekor log of the trusted root"),
            "{err}"
        );
    }

    #[test]
    fn entry_for_another_signature_is_rejected() {
        let pki = pki();
        let leaf = leaf(&pki.fulcio, Some(ISSUER), None);
        let mut annotations = sign(&pki, &leaf, &payload(), T0 + 60);
        // A genuine, validly signed log entry, but for another payload.
        let other = b"another payload".to_vec();
        let other_sig = leaf.key.sign(&other).unwrap();
        let body = hashedrekord(&other, &other_sig, &leaf.pem);
        annotations.insert(
            BUNDLE_ANNOTATION.to_owned(),
            rekor_bundle(&pki.rekor, &body, T0 + 60),
        );
        let err = verify(&pki, &payload(), &annotations).unwrap_err();
        assert_eq!(err.reason(), "TlogEntryInvalid");
        assert!(err.to_string().contains("digest"), "{err}");
        assert_eq!(
            leaf.der.len(),
            FulcioCertificate::from_pem(leaf.pem.as_bytes())
                .unwrap()
                .der()
                .len()
        );
    }

    #[test]
    fn missing_or_garbled_annotations_are_named() {
        let pki = pki();
        let leaf = leaf(&pki.fulcio, Some(ISSUER), None);
        let annotations = sign(&pki, &leaf, &payload(), T0 + 60);
        let mut missing = annotations.clone();
        missing.remove(CERTIFICATE_ANNOTATION);
        match verify(&pki, &payload(), &missing).unwrap_err() {
            KeylessError::AnnotationMissing { name } => assert_eq!(name, CERTIFICATE_ANNOTATION),
            e => panic!("unexpected {e:?}"),
        }
        let mut garbled = annotations.clone();
        garbled.insert(SIGNATURE_ANNOTATION.to_owned(), "not base64!".into());
        assert_eq!(
            verify(&pki, &payload(), &garbled).unwrap_err().reason(),
            "AnnotationInvalid"
        );
        let mut garbled = annotations;
        garbled.insert(
            CERTIFICATE_ANNOTATION.to_owned(),
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
        );
        assert_eq!(
            verify(&pki, &payload(), &garbled).unwrap_err().reason(),
            "CertificateInvalid"
        );
    }

    #[test]
    fn manifest_digest_helper_rejects_non_simple_signing() {
        assert_eq!(
            simple_signing_manifest_digest(b"{}").unwrap_err().reason(),
            "SignatureInvalid"
        );
        assert_eq!(
            simple_signing_manifest_digest(b"nope")
                .unwrap_err()
                .reason(),
            "SignatureInvalid"
        );
    }
}
