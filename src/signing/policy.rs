//! Trust policies: which authorities may sign, and how many of them must.
//!
//! A policy file (YAML or JSON) has the shape the cluster's `TrustPolicy` resource uses:
//!
//! ```yaml
//! apiVersion: tresor.dev/v1alpha1
//! kind: TrustPolicy
//! metadata:
//!   name: production
//! spec:
//!   authorities:
//!     - name: ci
//!       key:
//!         path: keys/ci.pub          # relative to the policy file; or `data:` with the PEM
//!     - name: security-team
//!       key:
//!         data: |
//!           -----BEGIN PUBLIC KEY-----
//!           …
//!           -----END PUBLIC KEY-----
//!     - name: release-workflow
//!       keyless:
//!         identity: https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main
//!         issuer: https://token.actions.githubusercontent.com
//!         trustedRoot: trusted_root.json
//!   require: all                      # any | all | N (at least N authorities)
//! ```
//!
//! The JSON schema is `schemas/trust-policy.schema.json`. `--key PUB --require …` builds the
//! same policy ad hoc ([`TrustPolicy::for_keys`]). Keyless authorities need an identity and an
//! issuer (exact, or a fully anchored regexp: there is no "any identity") and a trusted root;
//! they verify keyless `.sig` layers and sigstore bundles offline.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use super::identity::Matcher;
use super::keys::{KeyError, PublicKey};

/// `apiVersion` of policy documents.
pub const API_VERSION: &str = "tresor.dev/v1alpha1";
/// `kind` of policy documents.
pub const KIND: &str = "TrustPolicy";
/// Largest policy file tresor reads.
const MAX_POLICY_BYTES: u64 = 1024 * 1024;

/// A policy that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The policy file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The document does not parse or violates the schema.
    #[error("{path}: invalid trust policy: {message}")]
    Invalid {
        /// The file (or `<inline>`).
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Two authorities name the same signer: the same key material (however the PEM is
    /// written or wherever it is read from), or the same keyless identity and issuer.
    #[error(
        "{path}: authorities {first:?} and {second:?} are the same signer ({signer}); N-of-M \
         counts distinct signers, so list each key or keyless identity once"
    )]
    DuplicateSigner {
        /// The file (or `<command line>`, or the cluster object).
        path: PathBuf,
        /// The authority listed first.
        first: String,
        /// The authority that repeats it.
        second: String,
        /// The shared signer, e.g. `key sha256:…`.
        signer: String,
    },
    /// A key named by an authority could not be loaded.
    #[error("authority {authority:?}: {source}")]
    Key {
        /// The authority name.
        authority: String,
        /// The key error.
        source: KeyError,
    },
}

impl PolicyError {
    /// Stable CamelCase reason for conditions, events, metrics and JSON output.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Io { .. } => "IoError",
            Self::Invalid { .. } => "InvalidTrustPolicy",
            Self::DuplicateSigner { .. } => "DuplicateSigner",
            Self::Key { source, .. } => source.reason(),
        }
    }
}

/// How many authorities must have signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Require {
    /// At least one.
    Any,
    /// Every authority.
    All,
    /// At least N.
    AtLeast(usize),
}

impl Require {
    /// Authorities needed out of `total`.
    pub fn needed(self, total: usize) -> usize {
        match self {
            Self::Any => 1,
            Self::All => total,
            Self::AtLeast(n) => n,
        }
    }
}

impl fmt::Display for Require {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any"),
            Self::All => f.write_str("all"),
            Self::AtLeast(n) => write!(f, "{n}"),
        }
    }
}

impl std::str::FromStr for Require {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "any" => Ok(Self::Any),
            "all" => Ok(Self::All),
            n => match n.parse::<usize>() {
                Ok(0) | Err(_) => Err(format!(
                    "invalid rule {s:?}: expected any, all or a number of authorities (≥ 1)"
                )),
                Ok(n) => Ok(Self::AtLeast(n)),
            },
        }
    }
}

/// Builds a matcher from a policy's `X` / `XRegexp` pair: exactly one must be given, and
/// regexps are fully anchored ([`Matcher::regexp`]); there is no "any" default.
fn matcher_from_spec(
    exact: Option<String>,
    regexp: Option<String>,
    what: &str,
) -> Result<Matcher, String> {
    match (exact, regexp) {
        (Some(e), None) if !e.is_empty() => Ok(Matcher::exact(e)),
        (None, Some(r)) if !r.is_empty() => Matcher::regexp(&r).map_err(|e| match e {
            super::keyless::KeylessError::InvalidRegexp { message, .. } => {
                format!("invalid {what}Regexp: {message}")
            }
            other => format!("invalid {what}Regexp: {other}"),
        }),
        (Some(_), Some(_)) => Err(format!("give {what} or {what}Regexp, not both")),
        _ => Err(format!(
            "{what} or {what}Regexp is required (there is no \"any {what}\" default)"
        )),
    }
}

/// Who may sign.
#[derive(Debug, Clone)]
pub enum Authority {
    /// Holder of an ECDSA P-256 private key.
    Key {
        /// The public key.
        key: PublicKey,
    },
    /// A keyless (Fulcio certificate) signer, checked offline against a trusted root.
    Keyless {
        /// Certificate identity (SAN: e-mail or URI).
        identity: Matcher,
        /// OIDC issuer of the certificate.
        issuer: Matcher,
        /// Sigstore trusted root (`trusted_root.json`).
        trusted_root: TrustedRootSource,
    },
}

/// Where a keyless authority's Sigstore trusted root comes from.
#[derive(Debug, Clone)]
pub enum TrustedRootSource {
    /// A `trusted_root.json` file, read when the policy is prepared for a verification.
    File(PathBuf),
    /// A root already read and parsed (e.g. from a Kubernetes Secret by the puller).
    Loaded {
        /// Where it came from, for messages (e.g. `Secret tresor-system/sigstore-root`).
        origin: String,
        /// The root.
        root: super::trust_root::TrustRoot,
    },
}

impl From<PathBuf> for TrustedRootSource {
    fn from(path: PathBuf) -> Self {
        Self::File(path)
    }
}

impl fmt::Display for TrustedRootSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Loaded { origin, .. } => f.write_str(origin),
        }
    }
}

impl fmt::Display for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Key { key } => write!(f, "key sha256:{}", key.fingerprint()),
            Self::Keyless {
                identity, issuer, ..
            } => write!(f, "keyless {identity} from {issuer}"),
        }
    }
}

impl Authority {
    /// Whether `self` and `other` name the same signer: the same key material (compared as
    /// the public point, [`PublicKey::same_key`], whatever PEM text or file holds it), or the same keyless
    /// identity and issuer matchers (exact value or regexp pattern, as written). Two such
    /// authorities would be satisfied by one signature, so a policy may not list both.
    pub fn same_signer(&self, other: &Authority) -> bool {
        match (self, other) {
            (Self::Key { key: a }, Self::Key { key: b }) => a.same_key(b),
            (
                Self::Keyless {
                    identity: ia,
                    issuer: sa,
                    ..
                },
                Self::Keyless {
                    identity: ib,
                    issuer: sb,
                    ..
                },
            ) => ia.same_as(ib) && sa.same_as(sb),
            _ => false,
        }
    }

    /// A keyless authority from exact-or-regexp identity and issuer (one of each required).
    pub fn keyless(
        identity: Option<String>,
        identity_regexp: Option<String>,
        issuer: Option<String>,
        issuer_regexp: Option<String>,
        trusted_root: impl Into<TrustedRootSource>,
    ) -> Result<Self, String> {
        Ok(Self::Keyless {
            identity: matcher_from_spec(identity, identity_regexp, "identity")?,
            issuer: matcher_from_spec(issuer, issuer_regexp, "issuer")?,
            trusted_root: trusted_root.into(),
        })
    }
}

/// An authority with the name the policy gives it.
#[derive(Debug, Clone)]
pub struct NamedAuthority {
    /// Unique within the policy; shown in results.
    pub name: String,
    /// Who it is.
    pub authority: Authority,
}

/// A loaded, validated trust policy.
#[derive(Debug, Clone)]
pub struct TrustPolicy {
    /// The authorities (at least one, unique names).
    pub authorities: Vec<NamedAuthority>,
    /// How many of them must have signed.
    pub require: Require,
}

impl TrustPolicy {
    /// A policy of public key files (`--key`), each named by its path.
    pub fn for_keys(keys: &[PathBuf], require: Require) -> Result<Self, PolicyError> {
        Self::new(key_authorities(keys)?, require, Path::new("<command line>"))
    }

    /// Validates and builds a policy.
    ///
    /// Fails with [`PolicyError::Invalid`] for no authorities, a repeated name or a rule
    /// asking for more authorities than there are, and with [`PolicyError::DuplicateSigner`]
    /// when two authorities are the same signer ([`Authority::same_signer`]).
    pub fn new(
        authorities: Vec<NamedAuthority>,
        require: Require,
        origin: &Path,
    ) -> Result<Self, PolicyError> {
        let invalid = |message: String| PolicyError::Invalid {
            path: origin.to_path_buf(),
            message,
        };
        if authorities.is_empty() {
            return Err(invalid("no authorities: name at least one key".into()));
        }
        let mut names = BTreeSet::new();
        for (i, a) in authorities.iter().enumerate() {
            if !names.insert(a.name.as_str()) {
                return Err(invalid(format!("authority {:?} is listed twice", a.name)));
            }
            let earlier = authorities.iter().take(i);
            if let Some(first) = earlier
                .into_iter()
                .find(|b| b.authority.same_signer(&a.authority))
            {
                return Err(PolicyError::DuplicateSigner {
                    path: origin.to_path_buf(),
                    first: first.name.clone(),
                    second: a.name.clone(),
                    signer: a.authority.to_string(),
                });
            }
        }
        if let Require::AtLeast(n) = require {
            if n == 0 || n > authorities.len() {
                return Err(invalid(format!(
                    "require: {n} but there are {} authorities",
                    authorities.len()
                )));
            }
        }
        Ok(Self {
            authorities,
            require,
        })
    }

    /// Reads a policy file (YAML or JSON). Relative key and trusted-root paths are resolved
    /// against the file's directory.
    pub fn from_file(path: &Path) -> Result<Self, PolicyError> {
        use std::io::Read;
        let io = |source| PolicyError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut text = String::new();
        std::fs::File::open(path)
            .map_err(io)?
            .take(MAX_POLICY_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(io)?;
        if text.len() as u64 > MAX_POLICY_BYTES {
            return Err(PolicyError::Invalid {
                path: path.to_path_buf(),
                message: format!("larger than {MAX_POLICY_BYTES} bytes"),
            });
        }
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_document(&text, base, path)
    }

    /// Parses a policy document; `base` resolves relative paths, `origin` names it in errors.
    pub fn from_document(text: &str, base: &Path, origin: &Path) -> Result<Self, PolicyError> {
        let invalid = |message: String| PolicyError::Invalid {
            path: origin.to_path_buf(),
            message,
        };
        let doc: PolicyDocument =
            serde_norway::from_str(text).map_err(|e| invalid(e.to_string()))?;
        if doc.api_version != API_VERSION || doc.kind != KIND {
            return Err(invalid(format!(
                "expected apiVersion {API_VERSION} and kind {KIND}, found {} {}",
                doc.api_version, doc.kind
            )));
        }
        let require = match doc.spec.require {
            RequireSpec::Count(n) => Require::AtLeast(
                usize::try_from(n).map_err(|_| invalid("require too large".into()))?,
            ),
            RequireSpec::Word(w) => w.parse().map_err(invalid)?,
        };
        let mut authorities = Vec::new();
        for spec in doc.spec.authorities {
            let name = spec.name.clone();
            let authority = match (spec.key, spec.keyless) {
                (Some(key), None) => {
                    let loaded = match (key.path, key.data) {
                        (Some(p), None) => PublicKey::from_file(&base.join(p)),
                        (None, Some(data)) => PublicKey::from_pem(
                            data.as_bytes(),
                            Path::new(&format!("authority {name} (inline key)")),
                        ),
                        _ => {
                            return Err(invalid(format!(
                                "authority {name:?}: key needs exactly one of path or data"
                            )))
                        }
                    };
                    Authority::Key {
                        key: loaded.map_err(|source| PolicyError::Key {
                            authority: name.clone(),
                            source,
                        })?,
                    }
                }
                (None, Some(k)) => Authority::keyless(
                    k.identity,
                    k.identity_regexp,
                    k.issuer,
                    k.issuer_regexp,
                    base.join(k.trusted_root),
                )
                .map_err(|m| invalid(format!("authority {name:?}: {m}")))?,
                _ => {
                    return Err(invalid(format!(
                        "authority {name:?}: needs exactly one of key or keyless"
                    )))
                }
            };
            authorities.push(NamedAuthority { name, authority });
        }
        Self::new(authorities, require, origin)
    }

    /// The rule with its count, e.g. `all (2)`, `any (1 of 3)`, `2 of 3`.
    pub fn describe_rule(&self) -> String {
        let total = self.authorities.len();
        match self.require {
            Require::Any => format!("any (1 of {total})"),
            Require::All => format!("all ({total})"),
            Require::AtLeast(n) => format!("{n} of {total}"),
        }
    }
}

/// Key authorities for public key files (`--key`), each named by its path.
pub fn key_authorities(keys: &[PathBuf]) -> Result<Vec<NamedAuthority>, PolicyError> {
    let mut authorities = Vec::new();
    for path in keys {
        let name = path.display().to_string();
        let key = PublicKey::from_file(path).map_err(|source| PolicyError::Key {
            authority: name.clone(),
            source,
        })?;
        authorities.push(NamedAuthority {
            name,
            authority: Authority::Key { key },
        });
    }
    Ok(authorities)
}

/// The policy file as written (see the module docs and `schemas/trust-policy.schema.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyDocument {
    /// `tresor.dev/v1alpha1`.
    pub api_version: String,
    /// `TrustPolicy`.
    pub kind: String,
    /// Name and labels; informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    /// The policy.
    pub spec: PolicySpec,
}

/// `spec` of a policy document.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicySpec {
    /// Who may sign.
    pub authorities: Vec<AuthoritySpec>,
    /// `any`, `all` or a number.
    pub require: RequireSpec,
}

/// `any`/`all` or a count, as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RequireSpec {
    /// At least this many authorities.
    Count(u64),
    /// `any` or `all`.
    Word(String),
}

/// One authority as written: a name and exactly one of `key` or `keyless`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthoritySpec {
    /// Unique name, shown in results.
    pub name: String,
    /// A public key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<KeySpec>,
    /// A keyless identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyless: Option<KeylessSpec>,
}

/// A public key as written: a file path or the PEM itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeySpec {
    /// PEM file, relative to the policy file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// PEM text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

/// A keyless identity as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeylessSpec {
    /// Exact certificate identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// Certificate identity regular expression (anchored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_regexp: Option<String>,
    /// Exact OIDC issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// OIDC issuer regular expression (anchored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_regexp: Option<String>,
    /// Sigstore `trusted_root.json`, relative to the policy file.
    pub trusted_root: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEFNLqFhf4fiN6o/glAuYnq2jYUeL0
vRuLu/z39pmbVwS9ff5AYnlwaP9sxREajdLY9ynM6G1sy6AAmb7Z63TsLg==
-----END PUBLIC KEY-----
";

    fn doc(authorities: &str, require: &str) -> String {
        format!(
            "apiVersion: tresor.dev/v1alpha1\nkind: TrustPolicy\nspec:\n  authorities:\n{authorities}  require: {require}\n"
        )
    }

    /// Another key, so that two authorities are two signers.
    const KEY_B: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEOYZ90XgVgwYM2bBeFiy4jYLaiPnN
gmKFuNIOgpPuTxb50X0lz3rAUVQrNoi+zPU95SG0MKhFw2BHnP71AgRB7g==
-----END PUBLIC KEY-----
";

    fn inline_key(name: &str) -> String {
        inline_pem(name, KEY)
    }

    fn inline_pem(name: &str, pem: &str) -> String {
        let pem = pem
            .lines()
            .map(|l| format!("          {l}\n"))
            .collect::<String>();
        format!("    - name: {name}\n      key:\n        data: |\n{pem}")
    }

    fn parse(text: &str) -> Result<TrustPolicy, PolicyError> {
        TrustPolicy::from_document(text, Path::new("."), Path::new("policy.yaml"))
    }

    #[test]
    fn rules_parse() {
        let two = format!("{}{}", inline_key("a"), inline_pem("b", KEY_B));
        assert_eq!(parse(&doc(&two, "any")).unwrap().require, Require::Any);
        assert_eq!(parse(&doc(&two, "all")).unwrap().require, Require::All);
        assert_eq!(parse(&doc(&two, "2")).unwrap().require, Require::AtLeast(2));
        assert_eq!(
            parse(&doc(&two, "\"2\"")).unwrap().require,
            Require::AtLeast(2)
        );
        let p = parse(&doc(&two, "all")).unwrap();
        assert_eq!(p.describe_rule(), "all (2)");
        assert_eq!(p.authorities[0].name, "a");
    }

    #[test]
    fn invalid_policies_are_rejected_with_reasons() {
        let one = inline_key("a");
        let err = parse(&doc(&one, "3")).unwrap_err().to_string();
        assert!(err.contains("require: 3 but there are 1"), "{err}");
        assert!(parse(&doc(&one, "0")).is_err());
        assert!(parse(&doc(&one, "most"))
            .unwrap_err()
            .to_string()
            .contains("any, all"));
        let dup = format!("{}{}", inline_key("a"), inline_key("a"));
        assert!(parse(&doc(&dup, "any"))
            .unwrap_err()
            .to_string()
            .contains("twice"));
        let unknown = doc(&one, "any").replace("require", "requires");
        assert!(parse(&unknown).is_err());
        let wrong_kind = doc(&one, "any").replace("TrustPolicy", "Policy");
        assert!(parse(&wrong_kind).unwrap_err().to_string().contains("kind"));
    }

    #[test]
    fn the_same_key_twice_is_refused_however_it_is_written() {
        // One long base64 line instead of two: other text, the same SubjectPublicKeyInfo.
        let body: String = KEY.lines().filter(|l| !l.starts_with("-----")).collect();
        let rewrapped = format!(
            "    - name: b\n      key:\n        data: |\n          -----BEGIN PUBLIC KEY-----\n          {body}\n          -----END PUBLIC KEY-----\n"
        );
        let two = format!("{}{rewrapped}", inline_key("a"));
        let err = parse(&doc(&two, "2")).unwrap_err();
        assert_eq!(err.reason(), "DuplicateSigner", "{err}");
        let text = err.to_string();
        assert!(
            text.contains("\"a\" and \"b\" are the same signer (key sha256:"),
            "{text}"
        );
        // `any` does not make it acceptable: the policy is wrong whatever the rule.
        assert!(parse(&doc(&two, "any")).is_err());
    }

    #[test]
    fn the_same_keyless_identity_twice_is_refused() {
        let keyless = |name: &str, identity: &str| {
            format!(
                "    - name: {name}\n      keyless:\n        {identity}\n        issuer: https://token.actions.githubusercontent.com\n        trustedRoot: root.json\n"
            )
        };
        let same = format!(
            "{}{}",
            keyless("a", "identity: https://github.com/acme/app"),
            keyless("b", "identity: https://github.com/acme/app")
        );
        let err = parse(&doc(&same, "2")).unwrap_err();
        assert_eq!(err.reason(), "DuplicateSigner", "{err}");
        // Another identity, or the same text as a regexp, is another authority (overlaps
        // are handled when counting signers).
        let other = format!(
            "{}{}",
            keyless("a", "identity: https://github.com/acme/app"),
            keyless("b", "identityRegexp: https://github.com/acme/app")
        );
        assert!(parse(&doc(&other, "2")).is_ok());
    }

    #[test]
    fn keyless_needs_identity_and_issuer() {
        let keyless = "    - name: ci\n      keyless:\n        issuer: https://token.actions.githubusercontent.com\n        trustedRoot: root.json\n";
        let err = parse(&doc(keyless, "any")).unwrap_err().to_string();
        assert!(
            err.contains("identity or identityRegexp is required"),
            "{err}"
        );
        let ok = "    - name: ci\n      keyless:\n        identityRegexp: https://github.com/acme/.*\n        issuer: https://token.actions.githubusercontent.com\n        trustedRoot: root.json\n";
        let policy = parse(&doc(ok, "any")).unwrap();
        let Authority::Keyless { identity, .. } = &policy.authorities[0].authority else {
            panic!("expected keyless");
        };
        assert!(identity.matches("https://github.com/acme/app"));
        assert!(
            !identity.matches("xhttps://github.com/acme/app"),
            "anchored"
        );
    }
}
