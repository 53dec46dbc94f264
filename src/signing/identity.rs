//! Who may sign keylessly, and who did: identity policy and the verified signer.
//!
//! A keyless (Fulcio) certificate names a signer by its subject alternative name (a URI such
//! as a CI workflow, or an e-mail address) and the OIDC issuer that vouched for it. tresor
//! never accepts "any identity": a [`KeylessIdentity`] needs both an identity and an issuer
//! matcher, each either exact or a fully anchored regular expression.

use std::fmt;

use regex::Regex;

use super::keyless::KeylessError;

/// How a certificate field (identity or issuer) must match.
///
/// Regular expressions are **fully anchored**: `Matcher::regexp("https://github.com/org/.*")`
/// must match the whole value. cosign's `--certificate-identity-regexp` uses Go's unanchored
/// `MatchString`, where `org/repo` would also match `https://evil.example/org/repo`; tresor is
/// stricter on purpose, so a pattern written for cosign may need a leading/trailing `.*`.
#[derive(Debug, Clone)]
pub enum Matcher {
    /// The value must equal this string byte for byte.
    Exact(String),
    /// The whole value must match this pattern (see [`Matcher::regexp`]).
    Regexp(AnchoredRegex),
}

/// A regular expression that only matches a whole value; built by [`Matcher::regexp`].
#[derive(Debug, Clone)]
pub struct AnchoredRegex {
    pattern: String,
    regex: Regex,
}

impl AnchoredRegex {
    /// The pattern as the user wrote it (without the anchors tresor adds).
    pub fn pattern(&self) -> &str {
        &self.pattern
    }
}

impl Matcher {
    /// An exact matcher.
    pub fn exact(value: impl Into<String>) -> Self {
        Matcher::Exact(value.into())
    }

    /// A regular-expression matcher, anchored as `^(?:pattern)$`.
    ///
    /// Fails with [`KeylessError::InvalidRegexp`] when the pattern does not compile.
    pub fn regexp(pattern: &str) -> Result<Self, KeylessError> {
        let regex =
            Regex::new(&format!("^(?:{pattern})$")).map_err(|e| KeylessError::InvalidRegexp {
                pattern: pattern.to_owned(),
                message: e.to_string(),
            })?;
        Ok(Matcher::Regexp(AnchoredRegex {
            pattern: pattern.to_owned(),
            regex,
        }))
    }

    /// Whether two matchers are written the same: both exact with the same value, or both
    /// regexps with the same pattern. (Different patterns may still overlap; verification
    /// counts distinct signers for that.)
    pub fn same_as(&self, other: &Matcher) -> bool {
        match (self, other) {
            (Matcher::Exact(a), Matcher::Exact(b)) => a == b,
            (Matcher::Regexp(a), Matcher::Regexp(b)) => a.pattern == b.pattern,
            _ => false,
        }
    }

    /// Whether `value` satisfies this matcher.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Matcher::Exact(expected) => expected == value,
            Matcher::Regexp(r) => r.regex.is_match(value),
        }
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Matcher::Exact(s) => write!(f, "{s}"),
            Matcher::Regexp(r) => write!(f, "regexp {}", r.pattern),
        }
    }
}

/// A keyless authority: the certificate identity and the OIDC issuer a signature must carry.
///
/// Both are required; there is deliberately no "any identity" default.
#[derive(Debug, Clone)]
pub struct KeylessIdentity {
    /// Matches the certificate's subject alternative name (URI or e-mail).
    pub identity: Matcher,
    /// Matches the Fulcio OIDC issuer extension (1.3.6.1.4.1.57264.1.8, or the legacy .1.1).
    pub issuer: Matcher,
}

/// How a verified signature was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignerKind {
    /// A short-lived Fulcio certificate bound to an OIDC identity.
    Keyless,
    /// A long-lived public key the caller trusts.
    Key,
}

/// Who produced a signature that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSigner {
    /// Keyless certificate or public key.
    pub kind: SignerKind,
    /// Keyless: the certificate SAN that matched. Key: the key fingerprint,
    /// `sha256:<hex>` of the DER SubjectPublicKeyInfo.
    pub identity: String,
    /// Keyless: the certificate's OIDC issuer. Key: `None`.
    pub issuer: Option<String>,
    /// Unix time at which the transparency log integrated the entry, when one was verified.
    pub integrated_time: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_matcher_compares_whole_value() {
        let m = Matcher::exact("a@example.com");
        assert!(m.matches("a@example.com"));
        assert!(!m.matches("xa@example.com"));
    }

    #[test]
    fn regexp_matcher_is_anchored() {
        let m = Matcher::regexp("https://github.com/org/[a-z]+").unwrap();
        assert!(m.matches("https://github.com/org/repo"));
        // cosign (Go MatchString) would accept these; tresor does not.
        assert!(!m.matches("https://evil.example/https://github.com/org/repo"));
        assert!(!m.matches("https://github.com/org/repo/../other@x"));
    }

    #[test]
    fn regexp_alternation_is_anchored_as_a_whole() {
        let m = Matcher::regexp("a|b").unwrap();
        assert!(m.matches("a"));
        assert!(!m.matches("ab"));
        assert!(!m.matches("xb"));
    }

    #[test]
    fn invalid_regexp_is_an_error() {
        let err = Matcher::regexp("(").unwrap_err();
        assert_eq!(err.reason(), "InvalidRegexp");
    }
}
