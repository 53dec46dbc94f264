//! Container image references as written in pod specs: `[registry[:port]/]path[:tag][@digest]`.
//!
//! The grammar is Docker's (distribution/reference): the first path component is a registry
//! when it contains a `.` or a `:`, or is `localhost`; otherwise the image is on Docker Hub
//! (`docker.io`), and a single-component path gets the `library/` prefix. The tag is what
//! follows the last `:` after the last `/`, so `127.0.0.1:5000/app` has no tag and
//! `127.0.0.1:5000/app:1.0` has tag `1.0`. A digest after `@` wins over the tag.

use std::fmt;

/// Docker Hub's name in references.
pub const DOCKER_HUB: &str = "docker.io";
/// The host Docker Hub's registry API is served from.
pub const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";

/// A parsed image reference.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImageRef {
    /// Registry host with optional port as it appears in the reference, or `docker.io`.
    pub registry: String,
    /// Repository path in the registry (`library/nginx` for `nginx`).
    pub repository: String,
    /// Tag, if written.
    pub tag: Option<String>,
    /// Digest (`algorithm:hex`), if written.
    pub digest: Option<String>,
}

/// Why an image reference does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {image:?}: {reason}")]
pub struct ImageRefError {
    /// The reference as written.
    pub image: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ImageRefError {
    /// Stable CamelCase reason.
    pub fn reason(&self) -> &'static str {
        "InvalidImageReference"
    }
}

impl ImageRef {
    /// Parses an image reference as written in a pod spec.
    pub fn parse(text: &str) -> Result<Self, ImageRefError> {
        let invalid = |reason: &str| ImageRefError {
            image: text.to_string(),
            reason: reason.to_string(),
        };
        if text.is_empty() {
            return Err(invalid("it is empty"));
        }
        let (name_tag, digest) = match text.split_once('@') {
            Some((n, d)) => (n, Some(d)),
            None => (text, None),
        };
        if let Some(digest) = digest {
            check_digest(digest).map_err(|r| invalid(&r))?;
        }
        let (name, tag) = match name_tag.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, Some(t)),
            _ => (name_tag, None),
        };
        if let Some(tag) = tag {
            let ok = !tag.is_empty()
                && tag.len() <= 128
                && tag
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
            if !ok {
                return Err(invalid(&format!(
                    "tag {tag:?} must match [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}"
                )));
            }
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        if registry.is_empty()
            || !registry
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
        {
            return Err(invalid(&format!("registry host {registry:?} is not valid")));
        }
        for component in path.split('/') {
            if !crate::reference::is_path_component(component) {
                return Err(invalid(&format!(
                    "path component {component:?} must be lowercase letters and digits, \
                     separated by '.', '_' or '-'"
                )));
            }
        }
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        Ok(Self {
            registry,
            repository,
            tag: tag.map(str::to_string),
            digest: digest.map(str::to_string),
        })
    }

    /// Whether the reference carries a digest.
    pub fn is_pinned(&self) -> bool {
        self.digest.is_some()
    }

    /// The tag, `latest` when none is written (what a container runtime pulls).
    pub fn effective_tag(&self) -> &str {
        self.tag.as_deref().unwrap_or("latest")
    }

    /// `registry/repository`, normalised (`docker.io/library/nginx`): what allow-lists match.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The host to send registry API requests to (`registry-1.docker.io` for Docker Hub).
    pub fn api_host(&self) -> &str {
        match self.registry.as_str() {
            DOCKER_HUB | "index.docker.io" | "registry.hub.docker.com" => DOCKER_HUB_API_HOST,
            other => other,
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

fn check_digest(digest: &str) -> Result<(), String> {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Err(format!("digest {digest:?} must be algorithm:hex"));
    };
    let expected = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        other => return Err(format!("unknown digest algorithm {other:?}")),
    };
    if hex.len() != expected
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(format!(
            "digest {digest:?} must have {expected} lowercase hex digits"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn parts(text: &str) -> (String, String, Option<String>, Option<String>) {
        let r = ImageRef::parse(text).unwrap();
        (r.registry, r.repository, r.tag, r.digest)
    }

    fn p(
        registry: &str,
        repository: &str,
        tag: Option<&str>,
        digest: Option<&str>,
    ) -> (String, String, Option<String>, Option<String>) {
        (
            registry.into(),
            repository.into(),
            tag.map(Into::into),
            digest.map(Into::into),
        )
    }

    #[test]
    fn docker_hub_defaults() {
        assert_eq!(parts("nginx"), p("docker.io", "library/nginx", None, None));
        assert_eq!(
            parts("nginx:1.27"),
            p("docker.io", "library/nginx", Some("1.27"), None)
        );
        assert_eq!(
            parts("bitnami/redis:7"),
            p("docker.io", "bitnami/redis", Some("7"), None)
        );
        let hub = ImageRef::parse("docker.io/nginx").unwrap();
        assert_eq!(hub.repository, "library/nginx");
        assert_eq!(hub.api_host(), "registry-1.docker.io");
        assert_eq!(hub.effective_tag(), "latest");
    }

    #[test]
    fn registries_with_ports_and_nested_paths() {
        assert_eq!(
            parts("127.0.0.1:5001/x/img"),
            p("127.0.0.1:5001", "x/img", None, None)
        );
        assert_eq!(
            parts("127.0.0.1:5001/x/img:1.0"),
            p("127.0.0.1:5001", "x/img", Some("1.0"), None)
        );
        assert_eq!(
            parts("localhost/a/b/c:v1"),
            p("localhost", "a/b/c", Some("v1"), None)
        );
        assert_eq!(
            parts("registry.example.com:443/team/sub/app:2.0-rc.1"),
            p(
                "registry.example.com:443",
                "team/sub/app",
                Some("2.0-rc.1"),
                None
            )
        );
        let r = ImageRef::parse("ghcr.io/acme/web:1").unwrap();
        assert_eq!(r.api_host(), "ghcr.io");
        assert_eq!(r.name(), "ghcr.io/acme/web");
    }

    #[test]
    fn tag_and_digest_and_digest_only() {
        assert_eq!(
            parts(&format!("ghcr.io/acme/web:1.4@{D}")),
            p("ghcr.io", "acme/web", Some("1.4"), Some(D))
        );
        assert_eq!(
            parts(&format!("127.0.0.1:5001/x/img@{D}")),
            p("127.0.0.1:5001", "x/img", None, Some(D))
        );
        assert_eq!(
            parts(&format!("nginx@{D}")),
            p("docker.io", "library/nginx", None, Some(D))
        );
        assert!(ImageRef::parse(&format!("nginx@{D}")).unwrap().is_pinned());
        assert!(!ImageRef::parse("nginx:1").unwrap().is_pinned());
    }

    #[test]
    fn invalid_references() {
        for bad in [
            "",
            "nginx@sha256:abc",
            "nginx@md5:0123",
            "Nginx:1",
            "nginx:",
            "nginx:-x",
            "a//b",
            "ghcr.io/acme/web:1@",
            "$(IMAGE)",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} should be invalid");
        }
    }
}
