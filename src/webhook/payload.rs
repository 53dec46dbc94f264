//! What a registry's push notification says was pushed, for each kind of sender. Only the
//! location is read (host, repository, tag): a webhook triggers a reconcile, which resolves
//! and verifies the digest itself; nothing in a payload is trusted beyond "look now".

use serde_json::Value;

use super::{Kind, WebhookError};
use crate::reference::DOCKER_HUB;

/// A repository a payload says was pushed to: `host` as the sender spells it (the matcher
/// makes it canonical), the repository path, and the tag when the payload names one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// Registry host, with port when the sender gives one.
    pub host: String,
    /// Repository path, e.g. `acme/app`.
    pub repository: String,
    /// Tag, when named.
    pub tag: Option<String>,
}

impl std::fmt::Display for Push {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.host, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        Ok(())
    }
}

/// The pushes in `body`, a payload of `kind` (`event` is GitHub's `X-GitHub-Event`). An
/// event that is not a push (a pull, a ping, a deletion) gives none; a body that is not the
/// kind's JSON is an error naming what is missing.
pub fn parse(kind: Kind, event: Option<&str>, body: &[u8]) -> Result<Vec<Push>, WebhookError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| WebhookError::Payload {
        kind,
        message: format!("not JSON: {e}"),
    })?;
    let missing = |what: &str| WebhookError::Payload {
        kind,
        message: format!("{what} missing"),
    };
    match kind {
        Kind::Distribution => distribution(&value).ok_or_else(|| missing("events[]")),
        Kind::Github => match event {
            Some("ping") => Ok(Vec::new()),
            Some("package" | "registry_package") | None => {
                github(&value).ok_or_else(|| missing("package_version.package_url"))
            }
            Some(other) => Err(WebhookError::Payload {
                kind,
                message: format!(
                    "X-GitHub-Event {other:?} is not a package event (package, \
                     registry_package or ping)"
                ),
            }),
        },
        Kind::Harbor => {
            harbor(&value).ok_or_else(|| missing("event_data.resources[].resource_url"))
        }
        Kind::Dockerhub => dockerhub(&value).ok_or_else(|| missing("repository.repo_name")),
        Kind::Quay => quay(&value).ok_or_else(|| missing("docker_url")),
        Kind::Generic => generic(&value).ok_or_else(|| missing("repository")),
    }
}

/// CNCF Distribution's envelope: `events[]`, each with `action`, `target` (`repository`,
/// `mediaType`, `tag`, `url`) and `request.host`. Blob pushes and pulls are left out.
fn distribution(value: &Value) -> Option<Vec<Push>> {
    let events = value.get("events")?.as_array()?;
    let mut pushes = Vec::new();
    for event in events {
        if event.get("action").and_then(Value::as_str) != Some("push") {
            continue;
        }
        let Some(target) = event.get("target") else {
            continue;
        };
        let media_type = target
            .get("mediaType")
            .and_then(Value::as_str)
            .unwrap_or("");
        let is_manifest = media_type.contains("manifest") || media_type.contains("index");
        if !is_manifest {
            continue;
        }
        let Some(repository) = target.get("repository").and_then(Value::as_str) else {
            continue;
        };
        let host = event
            .pointer("/request/host")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| url_host(target.get("url")?.as_str()?));
        let Some(host) = host else {
            continue;
        };
        pushes.push(Push {
            host,
            repository: repository.to_string(),
            tag: target
                .get("tag")
                .and_then(Value::as_str)
                .map(str::to_string),
        });
    }
    Some(pushes)
}

/// GitHub's `package` and `registry_package` events: `package_version.package_url`
/// (`ghcr.io/owner/name:tag`), else the registry host, the owner and the name.
fn github(value: &Value) -> Option<Vec<Push>> {
    let package = value
        .get("registry_package")
        .or_else(|| value.get("package"))?;
    let version = package.get("package_version")?;
    if let Some(url) = version.get("package_url").and_then(Value::as_str) {
        // A tagless URL ends in ':' (GitHub writes `ghcr.io/o/n:` for untagged versions).
        return Some(location(url.trim_end_matches(':')).into_iter().collect());
    }
    let host = package
        .pointer("/registry/host")
        .and_then(Value::as_str)
        .unwrap_or("ghcr.io");
    let owner = package.pointer("/owner/login").and_then(Value::as_str)?;
    let name = package.get("name").and_then(Value::as_str)?;
    let tag = version
        .pointer("/container_metadata/tag/name")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty());
    Some(vec![Push {
        host: host.to_string(),
        repository: format!(
            "{}/{}",
            owner.to_ascii_lowercase(),
            name.to_ascii_lowercase()
        ),
        tag: tag.map(str::to_string),
    }])
}

/// Harbor's `PUSH_ARTIFACT`: `event_data.resources[].resource_url` (`host/project/repo:tag`).
fn harbor(value: &Value) -> Option<Vec<Push>> {
    let kind = value.get("type").and_then(Value::as_str)?;
    let resources = value.pointer("/event_data/resources")?.as_array()?;
    if kind != "PUSH_ARTIFACT" {
        return Some(Vec::new());
    }
    Some(
        resources
            .iter()
            .filter_map(|r| location(r.get("resource_url")?.as_str()?))
            .collect(),
    )
}

/// Docker Hub: `repository.repo_name` (`user/app`, or `app` for official images) and
/// `push_data.tag`, on `docker.io`.
fn dockerhub(value: &Value) -> Option<Vec<Push>> {
    let name = value.pointer("/repository/repo_name")?.as_str()?;
    let repository = if name.contains('/') {
        name.to_string()
    } else {
        format!("library/{name}")
    };
    Some(vec![Push {
        host: DOCKER_HUB.to_string(),
        repository,
        tag: value
            .pointer("/push_data/tag")
            .and_then(Value::as_str)
            .map(str::to_string),
    }])
}

/// Quay: `docker_url` (`quay.io/org/repo`) and `updated_tags[]` (one push per tag).
fn quay(value: &Value) -> Option<Vec<Push>> {
    let url = value.get("docker_url")?.as_str()?;
    let base = location(url)?;
    let tags: Vec<&str> = value
        .get("updated_tags")
        .and_then(Value::as_array)
        .map(|t| t.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if tags.is_empty() {
        return Some(vec![base]);
    }
    Some(
        tags.into_iter()
            .map(|tag| Push {
                tag: Some(tag.to_string()),
                ..base.clone()
            })
            .collect(),
    )
}

/// `{"repository": "[oci://]host/repo", "tag": "v1"}`.
fn generic(value: &Value) -> Option<Vec<Push>> {
    let repository = value.get("repository")?.as_str()?;
    let mut push = location(repository.trim_start_matches("oci://"))?;
    if let Some(tag) = value.get("tag").and_then(Value::as_str) {
        push.tag = Some(tag.to_string());
    }
    Some(vec![push])
}

/// `host/repo[:tag][@digest]` → a push (the digest is dropped: it is never trusted).
fn location(text: &str) -> Option<Push> {
    let text = text
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let text = text.split('@').next().unwrap_or(text);
    let (host, rest) = text.split_once('/')?;
    let (repository, tag) = match rest.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag)),
        _ => (rest, None),
    };
    (!host.is_empty() && !repository.is_empty()).then(|| Push {
        host: host.to_string(),
        repository: repository.to_string(),
        tag: tag.filter(|t| !t.is_empty()).map(str::to_string),
    })
}

/// The `host[:port]` of an `http(s)://host[:port]/…` URL.
fn url_host(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    let host = parsed.host_str()?;
    Some(match parsed.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(host: &str, repository: &str, tag: Option<&str>) -> Push {
        Push {
            host: host.into(),
            repository: repository.into(),
            tag: tag.map(Into::into),
        }
    }

    #[test]
    fn distribution_envelope_keeps_manifest_pushes_only() {
        let body = br#"{"events":[
          {"action":"push","target":{"mediaType":"application/octet-stream","repository":"acme/app","digest":"sha256:1"},"request":{"host":"127.0.0.1:5001"}},
          {"action":"push","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","repository":"acme/app","tag":"v1","url":"http://127.0.0.1:5001/v2/acme/app/manifests/sha256:2"},"request":{"host":"127.0.0.1:5001"}},
          {"action":"pull","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","repository":"acme/app"},"request":{"host":"127.0.0.1:5001"}},
          {"action":"push","target":{"mediaType":"application/vnd.oci.image.index.v1+json","repository":"acme/other","url":"https://reg.example:8443/v2/acme/other/manifests/sha256:3"}}
        ]}"#;
        assert_eq!(
            parse(Kind::Distribution, None, body).unwrap(),
            [
                push("127.0.0.1:5001", "acme/app", Some("v1")),
                push("reg.example:8443", "acme/other", None)
            ]
        );
    }

    #[test]
    fn github_package_events_read_the_package_url_or_owner_and_name() {
        let body =
            br#"{"action":"published","registry_package":{"name":"app","package_type":"CONTAINER",
          "owner":{"login":"Acme"},"package_version":{"version":"sha256:1",
          "container_metadata":{"tag":{"name":"v2","digest":"sha256:1"}},
          "package_url":"ghcr.io/acme/app:v2"},"registry":{"host":"ghcr.io"}}}"#;
        assert_eq!(
            parse(Kind::Github, Some("registry_package"), body).unwrap(),
            [push("ghcr.io", "acme/app", Some("v2"))]
        );
        let body = br#"{"action":"published","package":{"name":"App","owner":{"login":"Acme"},
          "package_version":{"container_metadata":{"tag":{"name":"","digest":"sha256:1"}}}}}"#;
        assert_eq!(
            parse(Kind::Github, Some("package"), body).unwrap(),
            [push("ghcr.io", "acme/app", None)]
        );
        assert_eq!(parse(Kind::Github, Some("ping"), b"{}").unwrap(), []);
        let e = parse(Kind::Github, Some("push"), b"{}").unwrap_err();
        assert!(e.to_string().contains("not a package event"), "{e}");
    }

    #[test]
    fn harbor_dockerhub_quay_and_generic() {
        let harbor = br#"{"type":"PUSH_ARTIFACT","event_data":{"resources":[
          {"digest":"sha256:1","tag":"v3","resource_url":"harbor.example/library/app:v3"}],
          "repository":{"repo_full_name":"library/app"}}}"#;
        assert_eq!(
            parse(Kind::Harbor, None, harbor).unwrap(),
            [push("harbor.example", "library/app", Some("v3"))]
        );
        let pull =
            br#"{"type":"PULL_ARTIFACT","event_data":{"resources":[{"resource_url":"h/r:t"}]}}"#;
        assert_eq!(parse(Kind::Harbor, None, pull).unwrap(), []);
        let hub = br#"{"push_data":{"tag":"latest"},"repository":{"repo_name":"nginx"}}"#;
        assert_eq!(
            parse(Kind::Dockerhub, None, hub).unwrap(),
            [push("docker.io", "library/nginx", Some("latest"))]
        );
        let quay = br#"{"docker_url":"quay.io/acme/app","updated_tags":["v1","latest"]}"#;
        assert_eq!(
            parse(Kind::Quay, None, quay).unwrap(),
            [
                push("quay.io", "acme/app", Some("v1")),
                push("quay.io", "acme/app", Some("latest"))
            ]
        );
        let generic = br#"{"repository":"oci://127.0.0.1:5001/acme/app","tag":"v1"}"#;
        assert_eq!(
            parse(Kind::Generic, None, generic).unwrap(),
            [push("127.0.0.1:5001", "acme/app", Some("v1"))]
        );
    }

    #[test]
    fn bad_payloads_name_what_is_missing() {
        let e = parse(Kind::Generic, None, b"{\"tag\":\"v1\"}").unwrap_err();
        assert_eq!(e.to_string(), "generic payload: repository missing");
        let e = parse(Kind::Distribution, None, b"not json").unwrap_err();
        assert!(
            e.to_string().starts_with("distribution payload: not JSON"),
            "{e}"
        );
        let e = parse(Kind::Quay, None, b"{\"docker_url\":\"nohost\"}").unwrap_err();
        assert_eq!(e.to_string(), "quay payload: docker_url missing");
    }
}
