//! Who may trigger: every receiver has a secret, and every request must prove it knows it,
//! in the way its sender can. Comparisons are constant-time.
//!
//! | kind | proof |
//! |---|---|
//! | `github` | `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>` (GitHub's) |
//! | `generic` | `X-Signature: sha256=<hex HMAC-SHA256 of the body>`, or the bearer token |
//! | `distribution`, `harbor` | `Authorization: Bearer <secret>` (their configurable headers) |
//! | `dockerhub`, `quay` | the bearer token, or `?token=<secret>` in the URL: they cannot set headers |

use hmac::{KeyInit, Mac};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

use super::Kind;

/// A receiver's shared secret (never printed).
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl Secret {
    /// A secret from the bytes of a secret file, without surrounding whitespace; `None`
    /// when nothing is left (an empty secret would let anyone in).
    pub fn new(bytes: &[u8]) -> Option<Self> {
        let text = bytes.trim_ascii();
        (!text.is_empty()).then(|| Self(text.to_vec()))
    }

    /// The secret in the file at `path` (a mounted Secret, a `--…-secret-file`), see
    /// [`Secret::new`].
    pub fn read(path: &std::path::Path) -> Result<Self, SecretFileError> {
        let bytes = std::fs::read(path).map_err(|source| SecretFileError::Unreadable {
            path: path.to_path_buf(),
            source,
        })?;
        Self::new(&bytes).ok_or_else(|| SecretFileError::Empty {
            path: path.to_path_buf(),
        })
    }

    /// Whether `given` is the secret, in time independent of where they differ (both
    /// sides are hashed first, so their lengths do not show either).
    fn matches(&self, given: &[u8]) -> bool {
        let a = Sha256::digest(&self.0);
        let b = Sha256::digest(given);
        a.as_slice().ct_eq(b.as_slice()).into()
    }

    /// Whether `header` (`sha256=<hex>`) is the HMAC-SHA256 of `body` under the secret.
    fn signed(&self, header: &str, body: &[u8]) -> bool {
        let Some(hex_mac) = header.trim().strip_prefix("sha256=") else {
            return false;
        };
        let Ok(given) = hex::decode(hex_mac) else {
            return false;
        };
        let Ok(mut mac) = hmac::Hmac::<Sha256>::new_from_slice(&self.0) else {
            return false;
        };
        mac.update(body);
        mac.verify_slice(&given).is_ok()
    }

    /// The secret as text, for a header that carries it (a bearer token); never log it.
    pub fn expose(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }

    /// `sha256=<hex>` for `body`: what a sender puts in the signature header.
    pub fn sign(&self, body: &[u8]) -> String {
        let mut mac = match hmac::Hmac::<Sha256>::new_from_slice(&self.0) {
            Ok(mac) => mac,
            // HMAC takes keys of any length; this arm is never taken.
            Err(_) => return String::new(),
        };
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }
}

/// A secret file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// It cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Nothing but whitespace in it.
    #[error("{} is empty: an empty secret would let anyone in", path.display())]
    Empty {
        /// The file.
        path: std::path::PathBuf,
    },
}

/// What a request offers as proof.
#[derive(Debug, Default)]
pub struct Credentials<'a> {
    /// `Authorization`.
    pub authorization: Option<&'a str>,
    /// `X-Hub-Signature-256` (GitHub) or `X-Signature` (generic).
    pub signature: Option<&'a str>,
    /// `token` from the query string.
    pub query_token: Option<&'a str>,
}

/// Whether `credentials` prove `secret` for a request of `kind` with `body` (see the
/// module docs for what each kind accepts).
pub fn authenticate(
    kind: Kind,
    secret: &Secret,
    credentials: &Credentials<'_>,
    body: &[u8],
) -> bool {
    let bearer = || {
        credentials
            .authorization
            .and_then(|a| a.strip_prefix("Bearer "))
            .is_some_and(|token| secret.matches(token.trim().as_bytes()))
    };
    let signed = || {
        credentials
            .signature
            .is_some_and(|s| secret.signed(s, body))
    };
    let query = || {
        credentials
            .query_token
            .is_some_and(|token| secret.matches(token.as_bytes()))
    };
    match kind {
        Kind::Github => signed(),
        Kind::Generic => signed() || bearer(),
        Kind::Distribution | Kind::Harbor => bearer(),
        Kind::Dockerhub | Kind::Quay => bearer() || query(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_accepts_its_proof_and_nothing_else() {
        let secret = Secret::new(b" s3cret\n").unwrap();
        let body = b"{\"repository\":\"r\"}";
        let signature = secret.sign(body);
        // GitHub's documented example: secret "It's a Secret to Everybody", body
        // "Hello, World!".
        let github = Secret::new(b"It's a Secret to Everybody").unwrap();
        assert_eq!(
            github.sign(b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
        let with = |authorization, signature, query_token| Credentials {
            authorization,
            signature,
            query_token,
        };
        let bearer = Some("Bearer s3cret");
        let cases = [
            (
                Kind::Github,
                with(None, Some(signature.as_str()), None),
                true,
            ),
            (Kind::Github, with(bearer, None, None), false),
            (
                Kind::Generic,
                with(None, Some(signature.as_str()), None),
                true,
            ),
            (Kind::Generic, with(bearer, None, None), true),
            (Kind::Distribution, with(bearer, None, None), true),
            (
                Kind::Distribution,
                with(None, Some(signature.as_str()), None),
                false,
            ),
            (Kind::Harbor, with(Some("Bearer s3cre"), None, None), false),
            (Kind::Dockerhub, with(None, None, Some("s3cret")), true),
            (Kind::Quay, with(None, None, Some("S3cret")), false),
            (Kind::Generic, with(None, Some("sha256=00"), None), false),
            (Kind::Generic, with(None, None, None), false),
        ];
        for (kind, credentials, expected) in cases {
            assert_eq!(
                authenticate(kind, &secret, &credentials, body),
                expected,
                "{kind:?} {credentials:?}"
            );
        }
        // A signature over another body fails.
        let other = with(None, Some(signature.as_str()), None);
        assert!(!authenticate(Kind::Github, &secret, &other, b"{}"));
    }

    #[test]
    fn an_empty_secret_is_refused() {
        assert!(Secret::new(b"  \n").is_none());
        assert_eq!(format!("{:?}", Secret::new(b"x").unwrap()), "Secret(…)");
    }
}
