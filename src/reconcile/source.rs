//! What the engine follows: a tag, a semver range over the repository's tags, or a fixed
//! digest — and how each is resolved to a digest.
//!
//! Cost per cycle: a tag is one HEAD request; a semver range is one tag list plus one HEAD
//! of the picked tag; a fixed digest needs no request at all once applied.

use std::fmt;

use semver::VersionReq;

use super::StepError;
use crate::digest::Digest;
use crate::reference::{parse_range, tag_version, InvalidRange, Reference};
use crate::registry::{ManifestRef, Repository};

/// How the followed version is chosen.
#[derive(Debug, Clone)]
pub enum Follow {
    /// Whatever the tag points at.
    Tag(String),
    /// The highest tag that is a semantic version (optionally `v`-prefixed) in the range.
    Semver {
        /// The range as given.
        text: String,
        /// The parsed range.
        range: VersionReq,
    },
    /// Exactly this digest.
    Digest(Digest),
}

/// A repository and what to follow in it.
#[derive(Debug, Clone)]
pub struct Source {
    /// The reference as given (its tag or digest is what [`Follow`] says).
    pub reference: Reference,
    /// What to follow.
    pub follow: Follow,
}

/// Errors building a [`Source`].
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The semver range does not parse.
    #[error(transparent)]
    InvalidRange(#[from] InvalidRange),
    /// A semver range was combined with a tag or digest in the reference.
    #[error("{reference}: with --semver, give the repository without a tag or digest")]
    RangeWithTag {
        /// The reference.
        reference: String,
    },
    /// Neither a tag, a digest nor a range.
    #[error("{reference}: nothing to follow; add :tag, @sha256:… or --semver RANGE")]
    NothingToFollow {
        /// The reference.
        reference: String,
    },
}

impl SourceError {
    /// Stable CamelCase reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidRange(_) => "InvalidSemverRange",
            Self::RangeWithTag { .. } => "InvalidArguments",
            Self::NothingToFollow { .. } => "NoTagOrDigest",
        }
    }
}

/// The highest tag matching `range`; non-semver tags are ignored.
pub fn pick<'a>(tags: &'a [String], range: &VersionReq) -> Option<&'a str> {
    tags.iter()
        .filter_map(|t| tag_version(t).map(|v| (v, t)))
        .filter(|(v, _)| range.matches(v))
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, t)| t.as_str())
}

impl Source {
    /// Builds the source from a reference and an optional `--semver` range.
    pub fn new(reference: Reference, semver: Option<&str>) -> Result<Self, SourceError> {
        let follow = match (semver, reference.digest(), reference.tag()) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                return Err(SourceError::RangeWithTag {
                    reference: reference.to_string(),
                })
            }
            (Some(text), None, None) => Follow::Semver {
                text: text.to_string(),
                range: parse_range(text)?,
            },
            (None, Some(d), _) => Follow::Digest(d.clone()),
            (None, None, Some(t)) => Follow::Tag(t.to_string()),
            (None, None, None) => {
                return Err(SourceError::NothingToFollow {
                    reference: reference.to_string(),
                })
            }
        };
        Ok(Self { reference, follow })
    }

    /// Resolves to a digest (and the tag picked, for a semver range). A fixed digest needs
    /// no request.
    pub async fn resolve(&self, repo: &Repository) -> Result<(Digest, Option<String>), StepError> {
        match &self.follow {
            Follow::Digest(d) => Ok((d.clone(), None)),
            Follow::Tag(tag) => Ok((self.head(repo, tag).await?, None)),
            Follow::Semver { text, range } => {
                let tags = repo.list_tags().await?;
                let tag = pick(&tags, range).ok_or_else(|| StepError::NoMatchingVersion {
                    repository: self.reference.repository(),
                    range: text.clone(),
                })?;
                Ok((self.head(repo, tag).await?, Some(tag.to_string())))
            }
        }
    }

    async fn head(&self, repo: &Repository, tag: &str) -> Result<Digest, StepError> {
        repo.resolve(ManifestRef::Tag(tag))
            .await?
            .ok_or_else(|| StepError::TagNotFound {
                reference: format!("{}:{tag}", self.reference.repository()),
            })
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.follow {
            Follow::Semver { text, .. } => {
                write!(f, "{} (semver {text})", self.reference.repository())
            }
            _ => write!(f, "{}", self.reference),
        }
    }
}

#[cfg(test)]
mod tests {
    use semver::Version;

    use super::*;

    #[test]
    fn ranges_with_spaces_or_commas_parse() {
        let r = parse_range(">=1.2 <2").unwrap();
        assert!(r.matches(&Version::parse("1.9.0").unwrap()));
        assert!(!r.matches(&Version::parse("2.0.0").unwrap()));
        assert!(!r.matches(&Version::parse("1.1.9").unwrap()));
        assert_eq!(parse_range(">= 1.2, < 2").unwrap(), r);
        assert!(parse_range("banana").is_err());
    }

    #[test]
    fn the_highest_matching_semver_tag_wins_and_others_are_ignored() {
        let tags: Vec<String> = [
            "latest",
            "v1.2.0",
            "1.10.1",
            "1.3.0",
            "2.0.0",
            "1.11.0-rc.1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let range = parse_range(">=1.2 <2").unwrap();
        assert_eq!(pick(&tags, &range), Some("1.10.1"));
        assert_eq!(pick(&tags, &parse_range(">=3").unwrap()), None);
    }
}
