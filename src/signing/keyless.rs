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
    #[error("certificate chain is invalid: {message}; is --trusted-root the right one?")]
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

fn fmt_time(secs: i64) -> String {
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
    let bundle: sigstore::cosign::bundle::Bundle =
        serde_json::from_str(bundle_json).map_err(|e| {
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
