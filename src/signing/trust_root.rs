//! Sigstore trust material: the Fulcio CAs and Rekor keys of a `trusted_root.json`.
//!
//! The file is parsed with the Sigstore protobuf types (`sigstore_protobuf_specs`, the same
//! ones the `sigstore` crate uses). Unlike `sigstore::trust::sigstore::SigstoreTrustRoot`,
//! which filters keys by the wall clock, tresor keeps every entry with its validity window and
//! selects by the time a signature was logged, so verification is offline and reproducible.
//! CT logs and timestamp authorities are not used (see the module docs of `signing`).

use sigstore::crypto::CosignVerificationKey;
use sigstore_protobuf_specs::dev::sigstore::common::v1::TimeRange;
use sigstore_protobuf_specs::dev::sigstore::trustroot::v1::TrustedRoot;

use super::keyless::KeylessError;

/// Largest `trusted_root.json` accepted (the public-good root is about 10 KiB).
pub const MAX_TRUSTED_ROOT_BYTES: usize = 1024 * 1024;

/// A validity window in Unix seconds; `None` means open-ended.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Window {
    start: Option<i64>,
    end: Option<i64>,
}

impl Window {
    fn from_proto(range: Option<&TimeRange>) -> Self {
        Window {
            start: range.and_then(|r| r.start.as_ref()).map(|t| t.seconds),
            end: range.and_then(|r| r.end.as_ref()).map(|t| t.seconds),
        }
    }

    fn contains(&self, at: i64) -> bool {
        self.start.is_none_or(|s| at >= s) && self.end.is_none_or(|e| at <= e)
    }
}

/// One Fulcio certificate authority: its chain (leaf-most first, root last) and window.
#[derive(Debug, Clone)]
pub(super) struct FulcioAuthority {
    pub(super) chain: Vec<Vec<u8>>,
    window: Window,
}

/// One transparency log (Rekor): log id (SHA-256 of its key) and key.
#[derive(Debug, Clone)]
pub(super) struct TransparencyLog {
    pub(super) log_id: Vec<u8>,
    pub(super) key: CosignVerificationKey,
    window: Window,
}

/// Trust material for keyless verification, loaded from a Sigstore `trusted_root.json`.
///
/// Load it with [`TrustRoot::from_json`]; the caller decides where the file comes from (it is
/// trusted as given: tresor does not fetch or update it through TUF).
#[derive(Debug, Clone)]
pub struct TrustRoot {
    fulcio: Vec<FulcioAuthority>,
    rekor: Vec<TransparencyLog>,
    /// Where it came from, as errors name it (`--trusted-root FILE`, the puller's
    /// `keyless.trustedRootRef`).
    origin: String,
}

impl TrustRoot {
    /// Names where the root came from, for errors that suggest checking it (e.g.
    /// `--trusted-root trusted_root.json`, or `keyless.trustedRootRef (Secret ns/name)`).
    pub fn with_origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = origin.into();
        self
    }

    /// Where the root came from, as given to [`TrustRoot::with_origin`].
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Parses a `trusted_root.json` (`application/vnd.dev.sigstore.trustedroot+json`).
    ///
    /// Fails with [`KeylessError::TrustRootInvalid`] when the file is larger than
    /// [`MAX_TRUSTED_ROOT_BYTES`], is not a trusted root, or holds no usable Fulcio CA or
    /// Rekor key. Log keys of a type tresor cannot use are skipped.
    pub fn from_json(json: &[u8]) -> Result<Self, KeylessError> {
        if json.len() > MAX_TRUSTED_ROOT_BYTES {
            return Err(KeylessError::trust_root(format!(
                "file is {} bytes, more than the limit of {MAX_TRUSTED_ROOT_BYTES}",
                json.len()
            )));
        }
        let root: TrustedRoot = serde_json::from_slice(json)
            .map_err(|e| KeylessError::trust_root(format!("not a sigstore trusted root: {e}")))?;

        let fulcio: Vec<FulcioAuthority> = root
            .certificate_authorities
            .iter()
            .filter_map(|ca| {
                let chain: Vec<Vec<u8>> = ca
                    .cert_chain
                    .as_ref()?
                    .certificates
                    .iter()
                    .map(|c| c.raw_bytes.clone())
                    .collect();
                (!chain.is_empty()).then(|| FulcioAuthority {
                    chain,
                    window: Window::from_proto(ca.valid_for.as_ref()),
                })
            })
            .collect();
        let rekor: Vec<TransparencyLog> = root
            .tlogs
            .iter()
            .filter_map(|log| {
                let public_key = log.public_key.as_ref()?;
                let key = CosignVerificationKey::try_from_der(public_key.raw_bytes.as_ref()?);
                let key = match key {
                    Ok(key) => key,
                    Err(e) => {
                        tracing::debug!(error = %e, "skipping transparency log key");
                        return None;
                    }
                };
                Some(TransparencyLog {
                    log_id: log.log_id.as_ref()?.key_id.clone(),
                    key,
                    window: Window::from_proto(public_key.valid_for.as_ref()),
                })
            })
            .collect();
        if fulcio.is_empty() {
            return Err(KeylessError::trust_root("no fulcio certificate authority"));
        }
        if rekor.is_empty() {
            return Err(KeylessError::trust_root(
                "no usable rekor transparency log key",
            ));
        }
        Ok(TrustRoot {
            fulcio,
            rekor,
            origin: "the trusted root".into(),
        })
    }

    /// Fulcio CAs whose validity window contains `at`.
    pub(super) fn fulcio_authorities_at(&self, at: i64) -> impl Iterator<Item = &FulcioAuthority> {
        self.fulcio.iter().filter(move |ca| ca.window.contains(at))
    }

    /// The Rekor log with this id, if its key was valid at `at`.
    pub(super) fn rekor_log(&self, log_id: &[u8], at: i64) -> Option<&TransparencyLog> {
        self.rekor
            .iter()
            .find(|log| log.log_id == log_id && log.window.contains(at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &[u8] = include_bytes!("../../testdata/cosign/bundles/trusted_root.json");

    #[test]
    fn loads_public_good_root_with_windows() {
        let root = TrustRoot::from_json(ROOT).unwrap();
        // Two Fulcio CAs: one valid 2021-03-07..2022-12-31, the current one since 2022-04-13.
        assert_eq!(root.fulcio.len(), 2);
        assert_eq!(root.fulcio_authorities_at(1_640_000_000).count(), 1); // 2021-12
        assert_eq!(root.fulcio_authorities_at(1_660_000_000).count(), 2); // 2022-08
        assert_eq!(root.fulcio_authorities_at(1_775_719_409).count(), 1); // 2026-04
        assert_eq!(root.fulcio_authorities_at(1_600_000_000).count(), 0); // 2020-09
        let rekor_id =
            hex::decode("c0d23d6ad406973f9559f3ba2d1ca01f84147d8ffc5b8445c224f98b9591801d")
                .unwrap();
        assert!(root.rekor_log(&rekor_id, 1_775_719_409).is_some());
        assert!(root.rekor_log(&rekor_id, 1_600_000_000).is_none());
    }

    #[test]
    fn rejects_non_root_and_oversized_input() {
        assert_eq!(
            TrustRoot::from_json(b"{\"nope\":1}").unwrap_err().reason(),
            "TrustRootInvalid"
        );
        let big = vec![b' '; MAX_TRUSTED_ROOT_BYTES + 1];
        assert_eq!(
            TrustRoot::from_json(&big).unwrap_err().reason(),
            "TrustRootInvalid"
        );
    }
}
