//! Cosign key files: encrypted ECDSA P-256 private keys, PEM public keys, fingerprints.
//!
//! Private keys use cosign's format: a PEM block labelled `ENCRYPTED SIGSTORE PRIVATE KEY`
//! (or the older `ENCRYPTED COSIGN PRIVATE KEY`) whose body is JSON with scrypt parameters,
//! a nacl secretbox nonce and the sealed PKCS#8 key. The sigstore crate does the scrypt and
//! secretbox part; tresor checks the key type itself so that Ed25519 and RSA keys get a
//! clear error instead of a failed signature later. Only ECDSA P-256 (with SHA-256) is
//! supported, like cosign's default.
//!
//! The password comes from `COSIGN_PASSWORD` (which may be set to the empty string) or a
//! prompt on the terminal; it never appears in errors or logs.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{DerSignature, Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey};
use pkcs8::{ObjectIdentifier, PrivateKeyInfoRef, SubjectPublicKeyInfoRef};
use sha2::{Digest as _, Sha256};
use sigstore::crypto::signing_key::kdf;
use zeroize::Zeroizing;

/// PEM label of private keys written by current cosign (and `tresor keygen`).
pub const SIGSTORE_PRIVATE_KEY_LABEL: &str = "ENCRYPTED SIGSTORE PRIVATE KEY";
/// PEM label of private keys written by older cosign versions.
pub const COSIGN_PRIVATE_KEY_LABEL: &str = "ENCRYPTED COSIGN PRIVATE KEY";
/// Environment variable holding the private key password (may be empty).
pub const PASSWORD_ENV: &str = "COSIGN_PASSWORD";
/// File name of the private key `tresor keygen` writes.
pub const PRIVATE_KEY_FILE: &str = "cosign.key";
/// File name of the public key `tresor keygen` writes.
pub const PUBLIC_KEY_FILE: &str = "cosign.pub";

/// Key files are small; anything larger is not a key.
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const OID_P521: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_RSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");

/// Errors loading, decrypting or writing keys. Never carries the password.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The password does not decrypt the private key.
    #[error("{path}: wrong password for the private key (check COSIGN_PASSWORD)")]
    WrongPassword {
        /// The key file.
        path: PathBuf,
    },
    /// The file is not a cosign key file, or its content is damaged.
    #[error("{path}: not a usable key file: {reason}")]
    CorruptKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The key is valid but of a type tresor does not support.
    #[error(
        "{path}: {found} keys are not supported: tresor signs and verifies with ECDSA P-256 \
         keys only (create one with `tresor keygen` or `cosign generate-key-pair`)"
    )]
    UnsupportedKeyType {
        /// The key file.
        path: PathBuf,
        /// The key type found, e.g. `Ed25519`, `RSA`, `ECDSA P-384`.
        found: String,
    },
    /// No password is available: `COSIGN_PASSWORD` is unset and there is no terminal.
    #[error(
        "no password for {path}: set COSIGN_PASSWORD (it may be empty) or run on a terminal \
         to be prompted"
    )]
    NoPassword {
        /// The key file.
        path: PathBuf,
    },
    /// The two passwords typed at the prompt differ.
    #[error("the passwords do not match")]
    PasswordMismatch,
    /// `tresor keygen` would overwrite an existing file.
    #[error("{path} already exists; refusing to overwrite it (move it away or use --output-dir)")]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// Reading or writing a key file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Generating or encrypting a key failed.
    #[error("cannot generate the key pair: {0}")]
    Generate(String),
}

impl KeyError {
    /// Stable CamelCase reason for conditions, events, metrics and JSON output.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::WrongPassword { .. } => "WrongPassword",
            Self::CorruptKey { .. } => "CorruptKey",
            Self::UnsupportedKeyType { .. } => "UnsupportedKeyType",
            Self::NoPassword { .. } => "NoPassword",
            Self::PasswordMismatch => "PasswordMismatch",
            Self::Exists { .. } => "KeyFileExists",
            Self::Io { .. } => "IoError",
            Self::Generate(_) => "KeyGenerationFailed",
        }
    }
}

/// An ECDSA P-256 public key: what verifies signatures.
#[derive(Clone)]
pub struct PublicKey {
    key: VerifyingKey,
    spki_der: Vec<u8>,
    fingerprint: String,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

impl PublicKey {
    /// Reads a PEM public key file (`-----BEGIN PUBLIC KEY-----`, as `cosign.pub`).
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let data = read_key_file(path)?;
        Self::from_pem(&data, path)
    }

    /// Parses a PEM public key; `path` only names it in errors.
    pub fn from_pem(data: &[u8], path: &Path) -> Result<Self, KeyError> {
        let corrupt = |reason: String| KeyError::CorruptKey {
            path: path.to_path_buf(),
            reason,
        };
        let block = pem::parse(data).map_err(|e| corrupt(format!("not PEM: {e}")))?;
        match block.tag() {
            "PUBLIC KEY" => {}
            "RSA PUBLIC KEY" => return Err(unsupported(path, "RSA")),
            tag if tag.contains("PRIVATE KEY") => {
                return Err(corrupt(format!(
                    "this is a private key ({tag}); verification needs the public key \
                     (cosign.pub)"
                )))
            }
            tag => {
                return Err(corrupt(format!(
                    "expected a PUBLIC KEY PEM block, found {tag}"
                )))
            }
        }
        Self::from_spki_der(block.contents(), path)
    }

    /// Parses a DER SubjectPublicKeyInfo; `path` only names it in errors.
    pub fn from_spki_der(der: &[u8], path: &Path) -> Result<Self, KeyError> {
        let info = SubjectPublicKeyInfoRef::try_from(der).map_err(|e| KeyError::CorruptKey {
            path: path.to_path_buf(),
            reason: format!("invalid SubjectPublicKeyInfo: {e}"),
        })?;
        check_algorithm(info.algorithm.oids().ok(), path)?;
        let key = VerifyingKey::from_public_key_der(der).map_err(|e| KeyError::CorruptKey {
            path: path.to_path_buf(),
            reason: format!("invalid ECDSA P-256 public key: {e}"),
        })?;
        Ok(Self::from_verifying_key(key, der.to_vec()))
    }

    fn from_verifying_key(key: VerifyingKey, spki_der: Vec<u8>) -> Self {
        let fingerprint = hex::encode(Sha256::digest(&spki_der));
        Self {
            key,
            spki_der,
            fingerprint,
        }
    }

    /// Whether `other` is the same public key, compared as the curve point itself: two
    /// SubjectPublicKeyInfo encodings of one key (compressed and uncompressed point) have
    /// different fingerprints but are the same signer.
    pub fn same_key(&self, other: &PublicKey) -> bool {
        self.key == other.key
    }

    /// SHA-256 of the DER SubjectPublicKeyInfo, lower-case hex: how a key is shown.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The key as a `PUBLIC KEY` PEM block (what `cosign.pub` holds).
    pub fn to_pem(&self) -> String {
        pem::encode(&pem::Pem::new("PUBLIC KEY", self.spki_der.clone()))
    }

    /// Whether `signature` (ASN.1 DER ECDSA, as cosign stores it) is valid for `message`
    /// under this key (SHA-256).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match Signature::from_der(signature) {
            Ok(sig) => self.key.verify(message, &sig).is_ok(),
            Err(_) => false,
        }
    }
}

/// A decrypted ECDSA P-256 private key. Its `Debug` output shows only the public part.
pub struct PrivateKey {
    key: SigningKey,
    public: PublicKey,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("fingerprint", &self.public.fingerprint)
            .finish_non_exhaustive()
    }
}

impl PrivateKey {
    /// Reads and decrypts a cosign private key file.
    pub fn from_file(path: &Path, password: &[u8]) -> Result<Self, KeyError> {
        let data = read_key_file(path)?;
        Self::from_encrypted_pem(&data, password, path)
    }

    /// Decrypts a cosign private key (`ENCRYPTED SIGSTORE PRIVATE KEY` or
    /// `ENCRYPTED COSIGN PRIVATE KEY`); `path` only names it in errors.
    pub fn from_encrypted_pem(data: &[u8], password: &[u8], path: &Path) -> Result<Self, KeyError> {
        let corrupt = |reason: String| KeyError::CorruptKey {
            path: path.to_path_buf(),
            reason,
        };
        let block = pem::parse(data).map_err(|e| corrupt(format!("not PEM: {e}")))?;
        match block.tag() {
            SIGSTORE_PRIVATE_KEY_LABEL | COSIGN_PRIVATE_KEY_LABEL => {}
            "PUBLIC KEY" => {
                return Err(corrupt(
                    "this is a public key; signing needs the private key (cosign.key)".into(),
                ))
            }
            tag => {
                return Err(corrupt(format!(
                    "expected an {SIGSTORE_PRIVATE_KEY_LABEL} PEM block (cosign's format), \
                     found {tag}; convert it with `cosign import-key-pair`"
                )))
            }
        }
        let der = Zeroizing::new(decrypt(block.contents(), password, path)?);
        let info = PrivateKeyInfoRef::try_from(der.as_slice())
            .map_err(|e| corrupt(format!("the decrypted key is not PKCS#8: {e}")))?;
        check_algorithm(info.algorithm.oids().ok(), path)?;
        let key = SigningKey::from_pkcs8_der(&der)
            .map_err(|e| corrupt(format!("invalid ECDSA P-256 private key: {e}")))?;
        Ok(Self::from_signing_key(key))
    }

    fn from_signing_key(key: SigningKey) -> Self {
        let verifying = *key.verifying_key();
        let spki_der = verifying
            .to_public_key_der()
            .map(|d| d.as_bytes().to_vec())
            .unwrap_or_default();
        Self {
            key,
            public: PublicKey::from_verifying_key(verifying, spki_der),
        }
    }

    /// The matching public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// Signs `message`: ECDSA P-256 over SHA-256, ASN.1 DER encoded, deterministic
    /// (RFC 6979), so the same key and message give the same bytes.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let signature: Signature = self.key.sign(message);
        let der: DerSignature = signature.to_der();
        der.as_bytes().to_vec()
    }
}

/// Seals a PKCS#8 DER private key in cosign's format (scrypt + nacl secretbox), labelled
/// `ENCRYPTED SIGSTORE PRIVATE KEY`.
pub fn encrypt_pkcs8(der: &[u8], password: &[u8]) -> Result<Zeroizing<String>, KeyError> {
    let sealed = kdf::encrypt(der, password).map_err(|e| KeyError::Generate(e.to_string()))?;
    Ok(Zeroizing::new(pem::encode(&pem::Pem::new(
        SIGSTORE_PRIVATE_KEY_LABEL,
        sealed,
    ))))
}

/// A freshly generated key pair in cosign's file formats.
pub struct GeneratedKeyPair {
    /// The encrypted private key PEM (`cosign.key`).
    pub private_pem: Zeroizing<String>,
    /// The public key.
    pub public: PublicKey,
}

/// Generates an ECDSA P-256 key pair, the private key encrypted with `password`.
pub fn generate(password: &[u8]) -> Result<GeneratedKeyPair, KeyError> {
    use sigstore::crypto::signing_key::ecdsa::ec::EcdsaKeys;
    use sigstore::crypto::signing_key::ecdsa::EllipticCurve;
    use sigstore::crypto::signing_key::KeyPair as _;
    let keys =
        EcdsaKeys::new(EllipticCurve::P256).map_err(|e| KeyError::Generate(e.to_string()))?;
    let der = keys
        .private_key_to_der()
        .map_err(|e| KeyError::Generate(e.to_string()))?;
    let key = SigningKey::from_pkcs8_der(&der).map_err(|e| KeyError::Generate(e.to_string()))?;
    let private_pem = encrypt_pkcs8(&der, password)?;
    Ok(GeneratedKeyPair {
        private_pem,
        public: PrivateKey::from_signing_key(key).public,
    })
}

/// Paths and fingerprint of a key pair written by [`write_key_pair`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyPairFiles {
    /// `cosign.key`.
    pub private_key: PathBuf,
    /// `cosign.pub`.
    pub public_key: PathBuf,
    /// Fingerprint of the public key.
    pub fingerprint: String,
}

/// Writes `cosign.key` (mode 0600) and `cosign.pub` into `dir`. Refuses to overwrite
/// either file; nothing is written when one exists.
pub fn write_key_pair(dir: &Path, password: &[u8]) -> Result<KeyPairFiles, KeyError> {
    let private_path = dir.join(PRIVATE_KEY_FILE);
    let public_path = dir.join(PUBLIC_KEY_FILE);
    for path in [&private_path, &public_path] {
        if path.symlink_metadata().is_ok() {
            return Err(KeyError::Exists { path: path.clone() });
        }
    }
    let pair = generate(password)?;
    std::fs::create_dir_all(dir).map_err(|source| KeyError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    write_new(&private_path, pair.private_pem.as_bytes(), 0o600)?;
    if let Err(e) = write_new(&public_path, pair.public.to_pem().as_bytes(), 0o644) {
        let _ = std::fs::remove_file(&private_path);
        return Err(e);
    }
    Ok(KeyPairFiles {
        private_key: private_path,
        public_key: public_path,
        fingerprint: pair.public.fingerprint().to_string(),
    })
}

/// The private key password: `COSIGN_PASSWORD` when set (even empty), else a prompt on the
/// terminal (typed twice when `confirm`). `path` names the key in the prompt and errors.
pub fn password(path: &Path, confirm: bool) -> Result<Zeroizing<String>, KeyError> {
    if let Some(value) = std::env::var_os(PASSWORD_ENV) {
        return Ok(Zeroizing::new(value.to_string_lossy().into_owned()));
    }
    let no_password = || KeyError::NoPassword {
        path: path.to_path_buf(),
    };
    let first = Zeroizing::new(
        rpassword::prompt_password(format!("Enter password for {}: ", path.display()))
            .map_err(|_| no_password())?,
    );
    if confirm {
        let second = Zeroizing::new(
            rpassword::prompt_password("Enter password again: ").map_err(|_| no_password())?,
        );
        if *first != *second {
            return Err(KeyError::PasswordMismatch);
        }
    }
    Ok(first)
}

fn unsupported(path: &Path, found: &str) -> KeyError {
    KeyError::UnsupportedKeyType {
        path: path.to_path_buf(),
        found: found.to_string(),
    }
}

/// Accepts id-ecPublicKey on P-256; names every other algorithm in the error.
fn check_algorithm(
    oids: Option<(ObjectIdentifier, Option<ObjectIdentifier>)>,
    path: &Path,
) -> Result<(), KeyError> {
    match oids {
        Some((OID_EC_PUBLIC_KEY, Some(OID_P256))) => Ok(()),
        Some((OID_EC_PUBLIC_KEY, Some(OID_P384))) => Err(unsupported(path, "ECDSA P-384")),
        Some((OID_EC_PUBLIC_KEY, Some(OID_P521))) => Err(unsupported(path, "ECDSA P-521")),
        Some((OID_EC_PUBLIC_KEY, curve)) => Err(unsupported(
            path,
            &format!(
                "ECDSA on curve {}",
                curve.map_or_else(|| "(unnamed)".to_string(), |c| c.to_string())
            ),
        )),
        Some((OID_ED25519, _)) => Err(unsupported(path, "Ed25519")),
        Some((OID_RSA | OID_RSA_PSS, _)) => Err(unsupported(path, "RSA")),
        Some((other, _)) => Err(unsupported(path, &format!("algorithm {other}"))),
        None => Err(KeyError::CorruptKey {
            path: path.to_path_buf(),
            reason: "invalid algorithm identifier".into(),
        }),
    }
}

/// Opens the sealed box; a failed authentication means the password is wrong.
fn decrypt(sealed: &[u8], password: &[u8], path: &Path) -> Result<Vec<u8>, KeyError> {
    use sigstore::errors::SigstoreError;
    kdf::decrypt(sealed, password).map_err(|e| match e {
        // sigstore reports a failed secretbox open as an "encrypt" error.
        SigstoreError::PrivateKeyEncryptError(_) => KeyError::WrongPassword {
            path: path.to_path_buf(),
        },
        other => KeyError::CorruptKey {
            path: path.to_path_buf(),
            reason: format!("cannot read the encrypted key: {other}"),
        },
    })
}

fn read_key_file(path: &Path) -> Result<Vec<u8>, KeyError> {
    use std::io::Read;
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut data = Vec::new();
    file.take(MAX_KEY_FILE_BYTES + 1)
        .read_to_end(&mut data)
        .map_err(io)?;
    if data.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(KeyError::CorruptKey {
            path: path.to_path_buf(),
            reason: format!("larger than {MAX_KEY_FILE_BYTES} bytes; not a key file"),
        });
    }
    Ok(data)
}

fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), KeyError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                KeyError::Exists {
                    path: path.to_path_buf(),
                }
            } else {
                io(e)
            }
        })?;
    file.write_all(data).map_err(io)?;
    file.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector(rel: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/cosign")
            .join(rel)
    }

    #[test]
    fn cosign_vectors_decrypt_sign_and_verify() {
        for (file, password) in [
            ("keys/cosign-generated-empty-password.key", ""),
            ("keys/ecdsa-password-123.key", "123"),
        ] {
            let key = PrivateKey::from_file(&vector(file), password.as_bytes()).unwrap();
            let signature = key.sign(b"message");
            assert!(key.public_key().verify(b"message", &signature));
            assert!(!key.public_key().verify(b"other message", &signature));
            assert!(!key.public_key().verify(b"message", b"not der"));
            // Deterministic: the same message gives the same signature.
            assert_eq!(key.sign(b"message"), signature);
            let err = PrivateKey::from_file(&vector(file), b"wrong").unwrap_err();
            assert_eq!(err.reason(), "WrongPassword");
        }
    }

    #[test]
    fn fingerprint_is_sha256_of_the_spki() {
        let path = vector("legacy/cosign.pub");
        let key = PublicKey::from_file(&path).unwrap();
        let der = pem::parse(std::fs::read(&path).unwrap())
            .unwrap()
            .into_contents();
        assert_eq!(key.fingerprint(), hex::encode(Sha256::digest(&der)));
        assert_eq!(
            PublicKey::from_pem(key.to_pem().as_bytes(), &path)
                .unwrap()
                .fingerprint(),
            key.fingerprint()
        );
    }

    #[test]
    fn generated_keys_round_trip_and_are_unique() {
        let a = generate(b"pw").unwrap();
        let b = generate(b"pw").unwrap();
        assert_ne!(a.public.fingerprint(), b.public.fingerprint());
        let loaded =
            PrivateKey::from_encrypted_pem(a.private_pem.as_bytes(), b"pw", Path::new("a.key"))
                .unwrap();
        assert_eq!(loaded.public_key().fingerprint(), a.public.fingerprint());
        assert!(a
            .private_pem
            .starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----"));
        // Debug output never shows key material.
        assert!(!format!("{loaded:?}").contains("secret"));
    }

    #[test]
    fn write_key_pair_refuses_to_overwrite_either_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(PUBLIC_KEY_FILE), "keep").unwrap();
        let err = write_key_pair(dir.path(), b"").unwrap_err();
        assert_eq!(err.reason(), "KeyFileExists");
        assert!(!dir.path().join(PRIVATE_KEY_FILE).exists());
    }
}
