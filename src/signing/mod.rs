//! Keyless (Fulcio/Rekor) and Sigstore-bundle signature verification, offline.
//!
//! - [`keyless`]: cosign legacy `.sig` layers signed keylessly, and [`keyless::KeylessError`].
//! - [`bundle`]: cosign v3 Sigstore bundles (v0.3), keyless or key-based.
//! - [`identity`]: who may sign ([`identity::KeylessIdentity`]) and who did
//!   ([`identity::VerifiedSigner`]).
//! - [`trust_root`]: Fulcio CAs and Rekor keys from a `trusted_root.json`.
//!
//! Not verified: embedded SCTs (CT logs) and RFC 3161 timestamps; the signing time comes from
//! the Rekor SET.
pub mod bundle;
mod fulcio;
pub mod identity;
pub mod keyless;
mod rekor;
pub mod trust_root;
