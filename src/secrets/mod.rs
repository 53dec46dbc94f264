//! Encrypted secrets: SOPS files whose data key is wrapped for age recipients, decrypted
//! only where they are applied.
//!
//! Secrets travel in an artifact encrypted (`sops --encrypt` with age recipients, before
//! `tresor push`); the reconcile engine decrypts them after verification and extraction,
//! just before apply, with the identities of that sync ([`Decryption`]): `--age-identity
//! FILE` for `tresor apply` and `tresor sync`, `spec.decryption.secretRef` for the puller.
//! A SOPS file without a usable identity fails closed: nothing of the version is applied.
//!
//! - [`age`]: identities (`AGE-SECRET-KEY-1…`) and the unwrapping of the data key.
//! - [`sops`]: the SOPS format: which values are encrypted, AES-256-GCM per value with
//!   the value's path as additional data, the MAC over all values.
//! - [`format`](mod@format): YAML, JSON, dotenv and binary files as sops writes them.
//!
//! Decision 0005 says why the format is implemented here rather than by running sops.

pub mod age;
pub mod format;
pub mod sops;

use zeroize::Zeroizing;

pub use self::age::Identities;
pub use self::format::Format;

/// Why a secret could not be decrypted (every variant names the file or identity source;
/// none carries a decrypted value).
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// An identity file or Secret value is unusable.
    #[error("age identities from {from}: {message}")]
    IdentityFile {
        /// The file, or `Secret ns/name key k.agekey`.
        from: String,
        /// What is wrong (never the key material).
        message: String,
    },
    /// A SOPS file in the artifact, and no identity to decrypt it with.
    #[error(
        "{file} is encrypted with SOPS and no age identity was given to decrypt it: set \
         {hint} (nothing of this version was applied)"
    )]
    NoIdentity {
        /// The file, relative to the artifact.
        file: String,
        /// What to set: `--age-identity FILE` or `spec.decryption.secretRef`.
        hint: String,
    },
    /// A SOPS file that cannot be decrypted, or whose MAC does not match.
    #[error("{file}: {source}")]
    Sops {
        /// The file, relative to the artifact.
        file: String,
        /// What went wrong.
        source: sops::SopsError,
    },
    /// A decrypted file that cannot be written in its own format.
    #[error("{file}: {message}")]
    Emit {
        /// The file.
        file: String,
        /// Why.
        message: String,
    },
}

impl SecretsError {
    /// Stable CamelCase reason for conditions, events, metrics and JSON output.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::IdentityFile { .. } => "AgeIdentityInvalid",
            Self::NoIdentity { .. } => "AgeIdentityMissing",
            Self::Sops { source, .. } => source.reason(),
            Self::Emit { .. } => "SopsOutputInvalid",
        }
    }
}

/// Whether `bytes` may be a SOPS file: every one holds at least its encrypted MAC.
pub fn may_be_sops(bytes: &[u8]) -> bool {
    let marker = sops::ENC_PREFIX.as_bytes();
    bytes.windows(marker.len()).any(|w| w == marker)
}

/// The identities of one sync and what to tell the user when there are none.
#[derive(Debug, Clone)]
pub struct Decryption {
    identities: Identities,
    hint: String,
}

impl Decryption {
    /// Decrypts with `identities`; `hint` names the flag or field that gives identities
    /// (`--age-identity FILE`, `spec.decryption.secretRef`).
    pub fn new(identities: Identities, hint: impl Into<String>) -> Self {
        Self {
            identities,
            hint: hint.into(),
        }
    }

    /// No identities: SOPS files fail closed with `hint` in the error.
    pub fn none(hint: impl Into<String>) -> Self {
        Self::new(Identities::none(), hint)
    }

    /// The identities.
    pub fn identities(&self) -> &Identities {
        &self.identities
    }

    /// Decrypts `bytes` if they are a SOPS file (by the name `file`, as sops picks the
    /// format), verifying the MAC; `Ok(None)` for any other file. The plaintext is
    /// zeroed when dropped.
    pub fn decrypt_file(
        &self,
        file: &str,
        bytes: &[u8],
    ) -> Result<Option<Zeroizing<Vec<u8>>>, SecretsError> {
        if !may_be_sops(bytes) {
            return Ok(None);
        }
        let sops_err = |source| SecretsError::Sops {
            file: file.to_string(),
            source,
        };
        let Some(mut loaded) = format::load(Format::of(file), bytes).map_err(sops_err)? else {
            return Ok(None);
        };
        if self.identities.is_empty() {
            return Err(SecretsError::NoIdentity {
                file: file.to_string(),
                hint: self.hint.clone(),
            });
        }
        sops::decrypt(&mut loaded.documents, &loaded.metadata, &self.identities)
            .map_err(sops_err)?;
        let out = format::emit(loaded.format, &loaded.documents).map_err(|message| {
            SecretsError::Emit {
                file: file.to_string(),
                message,
            }
        })?;
        Ok(Some(Zeroizing::new(out)))
    }
}
