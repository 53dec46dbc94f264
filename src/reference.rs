//! Where an artifact lives: `oci://host[:port]/repo[:tag][@sha256:…]` in a registry, or
//! `oci-layout:PATH[:tag|@sha256:…]` in a local OCI image layout directory.
//!
//! A bare `host/repo:tag` is accepted too when its first component looks like a host (it has
//! a dot or a port, or is `localhost`). Parsing is strict: repository components and tags
//! follow the OCI distribution grammar, so a typo fails here instead of at the registry.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use semver::{Version, VersionReq};

use crate::digest::{Digest, DigestError};

/// A reference that could not be parsed.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    /// The reference text is malformed; `reason` says which part.
    #[error("invalid reference {reference:?}: {reason}")]
    Invalid {
        /// The text as given.
        reference: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The digest part is malformed.
    #[error("invalid reference {reference:?}: {source}")]
    Digest {
        /// The text as given.
        reference: String,
        /// The digest error.
        source: DigestError,
    },
}

impl ReferenceError {
    /// Stable CamelCase reason.
    pub fn reason(&self) -> &'static str {
        "InvalidReference"
    }
}

/// A registry repository location: `host[:port]/repository`, plus an optional tag and digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryReference {
    /// Registry host with optional port, e.g. `ghcr.io` or `127.0.0.1:5000`.
    pub host: String,
    /// Repository path, e.g. `acme/manifests`.
    pub repository: String,
    /// Tag, if given.
    pub tag: Option<String>,
    /// Digest, if given; it wins over the tag for every read.
    pub digest: Option<Digest>,
}

/// A local OCI image layout directory plus an optional tag and digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutReference {
    /// The layout directory.
    pub path: PathBuf,
    /// Tag (`org.opencontainers.image.ref.name` in `index.json`), if given.
    pub tag: Option<String>,
    /// Digest, if given.
    pub digest: Option<Digest>,
}

/// An artifact reference in a registry or an OCI layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// `oci://host/repo[:tag][@digest]`.
    Registry(RegistryReference),
    /// `oci-layout:PATH[:tag|@digest]`.
    Layout(LayoutReference),
}

const LAYOUT_SCHEME: &str = "oci-layout:";
const REGISTRY_SCHEME: &str = "oci://";

impl Reference {
    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        match self {
            Self::Registry(r) => r.tag.as_deref(),
            Self::Layout(l) => l.tag.as_deref(),
        }
    }

    /// The digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        match self {
            Self::Registry(r) => r.digest.as_ref(),
            Self::Layout(l) => l.digest.as_ref(),
        }
    }

    /// The same location with `tag` and without a digest.
    pub fn with_tag(&self, tag: &str) -> Result<Self, ReferenceError> {
        check_tag(tag).map_err(|reason| ReferenceError::Invalid {
            reference: tag.to_string(),
            reason,
        })?;
        let mut out = self.clone();
        match &mut out {
            Self::Registry(r) => {
                r.tag = Some(tag.to_string());
                r.digest = None;
            }
            Self::Layout(l) => {
                l.tag = Some(tag.to_string());
                l.digest = None;
            }
        }
        Ok(out)
    }

    /// The same location pinned to `digest` (the tag is kept for display).
    pub fn with_digest(&self, digest: Digest) -> Self {
        let mut out = self.clone();
        match &mut out {
            Self::Registry(r) => r.digest = Some(digest),
            Self::Layout(l) => l.digest = Some(digest),
        }
        out
    }

    /// The repository without tag or digest: `oci://host/repo` or `oci-layout:PATH`.
    pub fn repository(&self) -> String {
        match self {
            Self::Registry(r) => format!("{REGISTRY_SCHEME}{}/{}", r.host, r.repository),
            Self::Layout(l) => format!("{LAYOUT_SCHEME}{}", l.path.display()),
        }
    }

    /// The digest-pinned form without tag: `oci://host/repo@sha256:…`.
    pub fn pinned(&self, digest: &Digest) -> String {
        format!("{}@{digest}", self.repository())
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.repository())?;
        if let Some(tag) = self.tag() {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = self.digest() {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: &str| ReferenceError::Invalid {
            reference: text.to_string(),
            reason: reason.to_string(),
        };
        if let Some(rest) = text.strip_prefix(LAYOUT_SCHEME) {
            return parse_layout(text, rest);
        }
        // skopeo's and docker's transports, which users copy from their scripts.
        if let Some(rest) = text.strip_prefix("oci:").filter(|r| !r.starts_with("//")) {
            return Err(invalid(&format!(
                "oci:PATH is skopeo's name for an OCI layout; tresor writes it \
                 oci-layout:{rest}"
            )));
        }
        if let Some(rest) = text.strip_prefix("docker://") {
            return Err(invalid(&format!(
                "docker:// is skopeo's name for a registry; tresor writes it oci://{rest}"
            )));
        }
        let (rest, explicit) = match text.strip_prefix(REGISTRY_SCHEME) {
            Some(rest) => (rest, true),
            None => (text, false),
        };
        if rest.contains("://") {
            return Err(invalid(
                "unknown scheme; use oci://host/repo:tag or oci-layout:PATH:tag",
            ));
        }
        let (rest, digest) = split_digest(text, rest)?;
        let (host, path) = rest
            .split_once('/')
            .ok_or_else(|| invalid("expected host/repository"))?;
        if !explicit && !looks_like_host(host) {
            return Err(invalid(
                "the first component is not a registry host; write oci://host/repo:tag \
                 (registries are never guessed) or oci-layout:PATH for a local layout",
            ));
        }
        check_host(host).map_err(|r| invalid(&r))?;
        // A ':' after the last '/' separates the tag.
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag)),
            _ => (path, None),
        };
        check_repository(repository).map_err(|r| invalid(&r))?;
        if let Some(tag) = tag {
            check_tag(tag).map_err(|r| invalid(&r))?;
        }
        Ok(Self::Registry(RegistryReference {
            host: host.to_string(),
            repository: repository.to_string(),
            tag: tag.map(str::to_string),
            digest,
        }))
    }
}

fn parse_layout(text: &str, rest: &str) -> Result<Reference, ReferenceError> {
    let invalid = |reason: String| ReferenceError::Invalid {
        reference: text.to_string(),
        reason,
    };
    let (rest, digest) = split_digest(text, rest)?;
    // PATH[:tag]: a ':' is a tag separator when what follows is a valid tag and no path.
    let (path, tag) = match rest.rsplit_once(':') {
        Some((path, tag)) if !tag.contains('/') && !path.is_empty() => {
            check_tag(tag).map_err(invalid)?;
            (path, Some(tag.to_string()))
        }
        _ => (rest, None),
    };
    if path.is_empty() {
        return Err(invalid("missing layout directory path".to_string()));
    }
    // The path is written again without a tag (`pinned`, `repository`, `Display` of a
    // digest-only reference); a ':' in its last component would then be read as a tag
    // separator and name another directory.
    if let Some((head, tail)) = path.rsplit_once(':') {
        if !head.is_empty() && !tail.contains('/') {
            return Err(invalid(format!(
                "layout directory {path:?} has a ':' in its last component, which reads as a \
                 tag separator; rename the directory or end the path with '/' ({path}/)"
            )));
        }
    }
    Ok(Reference::Layout(LayoutReference {
        path: PathBuf::from(path),
        tag,
        digest,
    }))
}

fn split_digest<'a>(
    text: &str,
    rest: &'a str,
) -> Result<(&'a str, Option<Digest>), ReferenceError> {
    match rest.split_once('@') {
        Some((before, digest)) => {
            let digest = digest.parse().map_err(|source| ReferenceError::Digest {
                reference: text.to_string(),
                source,
            })?;
            Ok((before, Some(digest)))
        }
        None => Ok((rest, None)),
    }
}

fn looks_like_host(host: &str) -> bool {
    host.contains('.') || host.contains(':') || host == "localhost"
}

/// Checks a registry host (`name[:port]`) as written: DNS-name characters, no empty label and
/// no trailing dot, a port of 1-65535 without leading zeros. Those two spellings reach the
/// same registry as the plain one but would escape policies that name it, so they are
/// refused instead of guessed at.
pub fn check_host(host: &str) -> Result<(), String> {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    let name_ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    if !name_ok {
        return Err(format!("invalid registry host {host:?}"));
    }
    if name.ends_with('.') {
        let trimmed = name.trim_end_matches('.');
        let plain = match port {
            Some(port) => format!("{trimmed}:{port}"),
            None => trimmed.to_string(),
        };
        return Err(format!(
            "registry host {host:?} ends with a dot: write {plain:?} (one registry, one spelling)"
        ));
    }
    if name.split('.').any(str::is_empty) {
        return Err(format!("registry host {host:?} has an empty label"));
    }
    if let Some(port) = port {
        match port.parse::<u16>() {
            Ok(0) | Err(_) => return Err(format!("invalid port in registry host {host:?}")),
            Ok(n) if port.starts_with('0') => {
                return Err(format!(
                    "port {port:?} in registry host {host:?} has leading zeros: write \
                     {name}:{n} (one registry, one spelling)"
                ))
            }
            Ok(_) => {}
        }
    }
    Ok(())
}

/// Docker Hub's canonical name; `index.docker.io` and `registry-1.docker.io` are the same
/// registry.
pub const DOCKER_HUB: &str = "docker.io";
/// Where Docker Hub's registry API answers (what docker itself talks to for `docker.io`).
const DOCKER_HUB_ENDPOINT: &str = "registry-1.docker.io";

/// The canonical spelling of a registry host, the one every policy matches against:
/// lower-case, without the transport's default port (443 for HTTPS, 80 for plain HTTP, so
/// `plain_http` matters: `host:80` over HTTPS is another endpoint than `host`), and Docker
/// Hub's names folded into [`DOCKER_HUB`]. `host` should have passed [`check_host`].
pub fn canonical_host(host: &str, plain_http: bool) -> String {
    let lower = host.to_ascii_lowercase();
    let default_port = if plain_http { ":80" } else { ":443" };
    let name = lower.strip_suffix(default_port).unwrap_or(&lower);
    match name {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
        other => other.to_string(),
    }
}

/// The host to connect to for a registry host as written: Docker Hub's canonical name is
/// not where its API answers, so [`DOCKER_HUB`] goes to `registry-1.docker.io`; everything
/// else is used as written.
pub fn endpoint_host(host: &str) -> &str {
    if host.eq_ignore_ascii_case(DOCKER_HUB) {
        DOCKER_HUB_ENDPOINT
    } else {
        host
    }
}

impl RegistryReference {
    /// `host/repository` in canonical form ([`canonical_host`]): what policies match.
    pub fn canonical_repository(&self, plain_http: bool) -> String {
        format!(
            "{}/{}",
            canonical_host(&self.host, plain_http),
            self.repository
        )
    }

    /// Whether the host is written in canonical form for this transport.
    pub fn is_canonical(&self, plain_http: bool) -> bool {
        canonical_host(&self.host, plain_http) == self.host
    }
}

/// Whether `component` is one valid `/`-separated part of a repository path: lower-case
/// letters and digits, separated by `.`, `_` or `-`, starting and ending alphanumeric.
pub(crate) fn is_path_component(component: &str) -> bool {
    !component.is_empty()
        && component
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && component
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && component
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric())
}

fn check_repository(repository: &str) -> Result<(), String> {
    if repository.is_empty() {
        return Err("missing repository".to_string());
    }
    for component in repository.split('/') {
        if !is_path_component(component) {
            return Err(format!(
                "invalid repository component {component:?}: use lower-case letters, digits \
                 and separators . _ -"
            ));
        }
    }
    Ok(())
}

/// Checks a tag against the OCI grammar `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub fn check_tag(tag: &str) -> Result<(), String> {
    let ok = (1..=128).contains(&tag.len())
        && tag
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid tag {tag:?}: at most 128 of A-Z a-z 0-9 . _ -, not starting with . or -"
        ))
    }
}

/// A semver range over tags that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid semver range {text:?}: {message} (example: '>=1.2 <2')")]
pub struct InvalidRange {
    /// The range as given.
    pub text: String,
    /// The parser's message.
    pub message: String,
}

/// Parses a semver range over tags like `>=1.2 <2` or `>=1.2, <2` (comparators separated by
/// spaces or commas).
pub fn parse_range(text: &str) -> Result<VersionReq, InvalidRange> {
    let mut parts: Vec<String> = Vec::new();
    for token in text.split([',', ' ']).filter(|t| !t.is_empty()) {
        // `>= 1.2` (operator separated from its version) joins the next token.
        match parts.last_mut() {
            Some(last) if last.chars().all(|c| "<>=~^".contains(c)) => last.push_str(token),
            _ => parts.push(token.to_string()),
        }
    }
    VersionReq::parse(&parts.join(", ")).map_err(|e| InvalidRange {
        text: text.to_string(),
        message: e.to_string(),
    })
}

/// A tag as a semantic version: `1.2.3`, `v1.2.3`, with pre-release and build metadata.
pub fn tag_version(tag: &str) -> Option<Version> {
    Version::parse(tag.strip_prefix('v').unwrap_or(tag)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn registry(text: &str) -> RegistryReference {
        match text.parse::<Reference>().unwrap() {
            Reference::Registry(r) => r,
            other => panic!("not a registry reference: {other:?}"),
        }
    }

    #[test]
    fn parses_oci_scheme_with_port_tag_and_digest() {
        let r = registry(&format!("oci://127.0.0.1:5000/team/app:v1.2@{D}"));
        assert_eq!(r.host, "127.0.0.1:5000");
        assert_eq!(r.repository, "team/app");
        assert_eq!(r.tag.as_deref(), Some("v1.2"));
        assert_eq!(r.digest.unwrap().to_string(), D);
    }

    #[test]
    fn port_is_not_mistaken_for_a_tag() {
        let r = registry("oci://localhost:5000/app");
        assert_eq!(r.host, "localhost:5000");
        assert_eq!(r.repository, "app");
        assert_eq!(r.tag, None);
    }

    #[test]
    fn bare_reference_needs_a_host_like_first_component() {
        assert_eq!(registry("ghcr.io/acme/app:1").repository, "acme/app");
        let err = "acme/app:1".parse::<Reference>().unwrap_err();
        assert!(err.to_string().contains("not a registry host"), "{err}");
    }

    #[test]
    fn rejects_bad_parts() {
        for bad in [
            "oci://ghcr.io/Acme/app:1",
            "oci://ghcr.io/acme/app:-bad",
            "oci://ghcr.io/acme//app",
            "oci://ghcr.io:99999/app",
            "oci://ghcr.io/app@sha256:xyz",
            "https://ghcr.io/app:1",
            "oci://ghcr.io",
        ] {
            assert!(bad.parse::<Reference>().is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn hosts_have_one_canonical_spelling() {
        for (host, plain, canonical) in [
            ("GHCR.IO", false, "ghcr.io"),
            ("ghcr.io:443", false, "ghcr.io"),
            ("Ghcr.Io:443", false, "ghcr.io"),
            ("ghcr.io:80", false, "ghcr.io:80"),
            ("reg.example:80", true, "reg.example"),
            ("reg.example:443", true, "reg.example:443"),
            ("127.0.0.1:5001", true, "127.0.0.1:5001"),
            ("index.docker.io", false, "docker.io"),
            ("registry-1.docker.io:443", false, "docker.io"),
            ("docker.io:5000", false, "docker.io:5000"),
        ] {
            assert_eq!(
                canonical_host(host, plain),
                canonical,
                "{host} plain={plain}"
            );
        }
        let r = registry("oci://GHCR.IO:443/acme/app:v1");
        assert!(!r.is_canonical(false));
        assert_eq!(r.canonical_repository(false), "ghcr.io/acme/app");
        assert!(registry("oci://ghcr.io/acme/app").is_canonical(false));
        assert_eq!(endpoint_host("docker.io"), "registry-1.docker.io");
        assert_eq!(endpoint_host("ghcr.io"), "ghcr.io");
    }

    #[test]
    fn leading_zeros_and_trailing_dots_are_refused_with_the_plain_spelling() {
        let err = "oci://ghcr.io:05000/app".parse::<Reference>().unwrap_err();
        assert!(err.to_string().contains("write ghcr.io:5000"), "{err}");
        let err = "oci://ghcr.io./app".parse::<Reference>().unwrap_err();
        assert!(err.to_string().contains("write \"ghcr.io\""), "{err}");
        let err = "oci://ghcr.io.:5000/app".parse::<Reference>().unwrap_err();
        assert!(err.to_string().contains("write \"ghcr.io:5000\""), "{err}");
        assert!("oci://ghcr.io:0/app".parse::<Reference>().is_err());
        assert!("oci://.ghcr.io/app".parse::<Reference>().is_err());
        assert!("oci://localhost:5000/app".parse::<Reference>().is_ok());
    }

    #[test]
    fn parses_layout_references() {
        let r: Reference = "oci-layout:./out/layout:v1".parse().unwrap();
        assert_eq!(
            r,
            Reference::Layout(LayoutReference {
                path: PathBuf::from("./out/layout"),
                tag: Some("v1".into()),
                digest: None
            })
        );
        let r: Reference = format!("oci-layout:/tmp/l@{D}").parse().unwrap();
        assert_eq!(r.digest().unwrap().to_string(), D);
        assert_eq!(r.tag(), None);
        let r: Reference = "oci-layout:/tmp/l".parse().unwrap();
        assert_eq!(r.tag(), None);
    }

    /// Found by the `reference` fuzz target: `oci-layout:dir:v1:v2` was the directory
    /// `dir:v1` with tag `v2`, but its pinned form `oci-layout:dir:v1@sha256:…` named the
    /// directory `dir` with tag `v1`, so a recorded digest-pinned reference pointed elsewhere.
    #[test]
    fn regression_fuzz_layout_path_with_a_tag_like_colon_is_refused() {
        for bad in [
            "oci-layout:dir:v1:v2",
            "oci-layout:./out/layoutoci-layout:./out/layout:v:v1",
            "oci-layout:dir:-x:v1",
            "oci-layout:a::v1",
        ] {
            let err = bad.parse::<Reference>().unwrap_err();
            assert!(err.to_string().contains("tag separator"), "{bad}: {err}");
        }
        // A ':' before the last '/' is part of the path, and survives being written again.
        for good in [
            format!("oci-layout:C:/layouts/app:v1@{D}"),
            "oci-layout:/tmp/a:b/layout:v1".to_string(),
            "oci-layout:/tmp/a:b/layout/".to_string(),
            "oci-layout:dir:v1/:v2".to_string(),
        ] {
            let r: Reference = good.parse().unwrap();
            assert_eq!(r.to_string().parse::<Reference>().unwrap(), r, "{good}");
            let d: crate::digest::Digest = D.parse().unwrap();
            let pinned: Reference = r.pinned(&d).parse().unwrap();
            assert_eq!(pinned.repository(), r.repository(), "{good}");
        }
    }

    #[test]
    fn display_round_trips_and_pinned_drops_the_tag() {
        let text = format!("oci://ghcr.io/acme/app:v1@{D}");
        let r: Reference = text.parse().unwrap();
        assert_eq!(r.to_string(), text);
        assert_eq!(
            r.pinned(r.digest().unwrap()),
            format!("oci://ghcr.io/acme/app@{D}")
        );
    }
}
