//! Signing and verification, cosign-compatible: who may change what runs.
//!
//! - [`keys`]: cosign key files (encrypted ECDSA P-256 private keys, PEM public keys),
//!   fingerprints, `tresor keygen`.
//! - [`payload`]: the simple-signing payload cosign signs, byte for byte.
//! - [`legacy`]: cosign's tag scheme (`sha256-<hex>.sig`): appending a signature layer, and
//!   collecting the layers as verification candidates.
//! - [`attestation`]: signed SLSA provenance (in-toto statement, DSSE, cosign's `.att` tag).
//! - [`promotion`]: signed promotion records (`tresor promote`) and which of them verify.
//! - [`policy`]: trust policies: named authorities and a rule (`any`, `all`, `N`).
//! - [`subject`]: what is verified: the digest of any manifest or index (artifact, container
//!   image, image index), read without its layers.
//! - [`verify`](mod@verify): [`verify()`] checks every candidate signature against every authority and
//!   applies the rule. It reads manifests and small signature blobs only, never the
//!   artifact's own layers, so it can run before anything is downloaded.
//! - [`keyless`]: cosign legacy `.sig` layers signed keylessly (Fulcio certificate, Rekor
//!   SET), offline against a [`trust_root::TrustRoot`].
//! - [`bundle`]: cosign v3 Sigstore bundles (v0.3), keyless or key-based.
//! - [`referrers`]: finding bundles: the OCI referrers API, or the `sha256-<hex>` fallback
//!   index tag.
//! - [`identity`]: who may sign keylessly ([`identity::KeylessIdentity`]) and who did.
//! - [`trust_root`]: Fulcio CAs and Rekor keys from a `trusted_root.json`.
//!
//! Not verified: embedded SCTs (CT logs) and RFC 3161 timestamps; the signing time comes from
//! the Rekor SET.
//!
//! Extension points: a new signature source adds a [`verify::Candidate`] variant and a
//! collector in [`verify::collect_candidates`]; a new authority kind adds a
//! [`verify::PreparedAuthority`] variant and its arms in [`verify::verify_candidate`].

pub mod attestation;
pub mod bundle;
mod fulcio;
pub mod identity;
pub mod keyless;
pub mod keys;
pub mod legacy;
pub mod payload;
pub mod policy;
pub mod promotion;
pub mod referrers;
mod rekor;
pub mod subject;
pub mod trust_root;
pub mod verify;

use crate::digest::Digest;
use crate::registry::RegistryError;

pub use keyless::KeylessError;

pub use keys::{KeyError, PrivateKey, PublicKey};
pub use policy::{Authority, NamedAuthority, PolicyError, Require, TrustPolicy, TrustedRootSource};
pub use subject::Subject;
pub use verify::{verify, Signer, Verification, VerifiedSignature};

/// Errors while signing an artifact.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// The private key could not be loaded.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Reading or writing the registry or layout failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The existing `.sig` manifest already holds the most signatures tresor handles.
    #[error("{tag} already holds {count} signature layers (limit {limit}); refusing to add more")]
    TooManySignatures {
        /// The signature tag.
        tag: String,
        /// Layers found.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// The existing `.sig` manifest is not a manifest tresor can append to.
    #[error("{tag}: existing signature manifest is invalid: {message}")]
    InvalidSignatureManifest {
        /// The signature tag.
        tag: String,
        /// The parse error.
        message: String,
    },
}

impl SigningError {
    /// Stable CamelCase reason for conditions, events, metrics and JSON output.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Key(e) => e.reason(),
            Self::Registry(e) => e.reason(),
            Self::TooManySignatures { .. } => "TooManySignatures",
            Self::InvalidSignatureManifest { .. } => "InvalidSignatureManifest",
        }
    }
}

/// Why an artifact is not verified, or why verification could not run.
///
/// [`VerifyError::is_unverified`] separates "the content is not trusted" (exit code 1;
/// stalled until the artifact or policy changes) from errors such as an unreadable key
/// file or an unreachable registry (exit code 2; possibly transient).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A key given as trust material could not be loaded.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The trust policy is invalid.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// Reading the registry or layout failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// No signature is stored for the artifact.
    #[error("{reference} is not signed: no signatures found (looked for tag {tag})")]
    NoSignatures {
        /// The artifact, digest-pinned.
        reference: String,
        /// Where signatures were looked for.
        tag: String,
    },
    /// A trusted key signed a payload for a different manifest digest.
    #[error(
        "signature payload digest does not match the artifact: the signature is for \
         {actual}, the artifact is {expected}"
    )]
    PayloadDigestMismatch {
        /// The artifact's manifest digest.
        expected: Digest,
        /// The digest named in the signed payload.
        actual: String,
    },
    /// The signed payload is not a cosign simple-signing document.
    #[error("invalid signature payload: {reason}")]
    InvalidPayload {
        /// What is wrong with it.
        reason: String,
    },
    /// The signature annotation is not base64 (or missing).
    #[error("invalid signature encoding: {reason}")]
    BadSignatureEncoding {
        /// What is wrong with it.
        reason: String,
    },
    /// No signature verifies with the trusted keys.
    #[error(
        "no valid signature from a trusted authority: none of the {signatures} signature(s) \
         verifies with {authorities}"
    )]
    SignatureInvalid {
        /// Number of candidate signatures tried.
        signatures: usize,
        /// The authorities tried (names and fingerprints).
        authorities: String,
    },
    /// The `.sig` manifest has more layers than tresor reads.
    #[error(
        "{tag} holds {count} signature layers, more than the limit of {limit}; refusing to \
         verify (a registry serving this is misbehaving or under attack)"
    )]
    TooManySignatures {
        /// The signature tag.
        tag: String,
        /// Layers found.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// Some authorities signed, but fewer than the policy requires.
    #[error(
        "trust policy not satisfied: requires {required}, satisfied by {satisfied}: {}",
        details.join("; ")
    )]
    PolicyNotSatisfied {
        /// The rule, e.g. `all (2)` or `2 of 3`.
        required: String,
        /// Authorities with a valid signature.
        satisfied: usize,
        /// Per authority: satisfied or why not.
        details: Vec<String>,
    },
    /// `--attestation` with a keyless authority: keyless attestations are not verified yet.
    #[error(
        "authority {authority:?} is keyless; keyless verification of attestations is not \
         supported yet (use key authorities for --attestation)"
    )]
    KeylessNotSupported {
        /// The authority name.
        authority: String,
    },
    /// A keyless or bundle signature did not verify (or the bundle is malformed): see
    /// [`KeylessError::reason`]. Unverified, except for an unusable regexp or key.
    #[error(transparent)]
    Keyless(#[from] KeylessError),
    /// The trusted root of a keyless authority cannot be read or is not a trusted root.
    #[error("authority {authority:?}: trusted root {}: {source}", path.display())]
    TrustedRoot {
        /// The authority name.
        authority: String,
        /// The `trusted_root.json` file.
        path: std::path::PathBuf,
        /// What is wrong with it ([`KeylessError::TrustRootInvalid`]).
        source: KeylessError,
    },
    /// The `.sig` manifest could not be parsed.
    #[error("{tag}: invalid signature manifest: {message}")]
    InvalidSignatureManifest {
        /// The signature tag.
        tag: String,
        /// The parse error.
        message: String,
    },
}

impl VerifyError {
    /// Stable CamelCase reason for conditions, events, metrics and JSON output.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Key(e) => e.reason(),
            Self::Policy(e) => e.reason(),
            Self::Registry(e) => e.reason(),
            Self::NoSignatures { .. } => "NoSignatures",
            Self::PayloadDigestMismatch { .. } => "PayloadDigestMismatch",
            Self::InvalidPayload { .. } => "InvalidPayload",
            Self::BadSignatureEncoding { .. } => "BadSignatureEncoding",
            Self::SignatureInvalid { .. } => "SignatureInvalid",
            Self::TooManySignatures { .. } => "TooManySignatures",
            Self::PolicyNotSatisfied { .. } => "PolicyNotSatisfied",
            Self::KeylessNotSupported { .. } => "KeylessNotSupported",
            Self::Keyless(e) => e.reason(),
            Self::TrustedRoot { .. } => "TrustRootInvalid",
            Self::InvalidSignatureManifest { .. } => "InvalidSignatureManifest",
        }
    }

    /// True when the artifact is not trusted (as opposed to verification failing to run).
    pub fn is_unverified(&self) -> bool {
        if let Self::Keyless(e) = self {
            // Configuration problems, not untrusted content.
            return !matches!(
                e,
                KeylessError::TrustRootInvalid { .. }
                    | KeylessError::InvalidRegexp { .. }
                    | KeylessError::KeyInvalid { .. }
            );
        }
        matches!(
            self,
            Self::NoSignatures { .. }
                | Self::PayloadDigestMismatch { .. }
                | Self::InvalidPayload { .. }
                | Self::BadSignatureEncoding { .. }
                | Self::SignatureInvalid { .. }
                | Self::TooManySignatures { .. }
                | Self::PolicyNotSatisfied { .. }
                | Self::InvalidSignatureManifest { .. }
        )
    }
}
