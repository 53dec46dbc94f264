//! Where events go, and the request each provider gets.
//!
//! | `--notify` | request |
//! |---|---|
//! | `generic=URL` | `POST URL`, the [`Event`] as JSON; `X-Signature: sha256=<HMAC-SHA256 of the body>` with a secret |
//! | `cloudevents=URL` | `POST URL`, CloudEvents 1.0 structured mode (`application/cloudevents+json`), type `dev.tresor.<reason>` |
//! | `slack=URL` | `POST URL` (an incoming webhook), `{"text": …}` |
//! | `github[=API]` | `POST API/repos/OWNER/REPO/statuses/SHA` (API: `https://api.github.com`), from the artifact's source (`https://github.com/OWNER/REPO`) and revision (`…@sha1:SHA`), bearer token |

use serde_json::json;

use super::Event;
use crate::webhook::Secret;

/// GitHub's API.
const GITHUB_API: &str = "https://api.github.com";

/// A notification target.
#[derive(Debug, Clone)]
pub enum Provider {
    /// JSON, signed with the secret when there is one.
    Generic {
        /// Where to post.
        url: url::Url,
        /// The HMAC key.
        secret: Option<Secret>,
    },
    /// CloudEvents 1.0 over HTTP, structured mode.
    CloudEvents {
        /// Where to post.
        url: url::Url,
    },
    /// A Slack-compatible incoming webhook.
    Slack {
        /// The webhook URL (a secret itself: never logged).
        url: url::Url,
    },
    /// GitHub commit statuses on the artifact's revision.
    Github {
        /// The API base, e.g. `https://api.github.com`.
        api: url::Url,
        /// The token (`repo:status` or a fine-grained token with commit statuses).
        token: Secret,
    },
}

/// A `--notify` value that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// Not `KIND=URL`, an unknown kind, a bad URL or a missing token.
    #[error("{what}: {why}")]
    Invalid {
        /// Where it was given: `--notify "slack"`, `spec.notify[0]`.
        what: String,
        /// What is wrong.
        why: String,
    },
    /// The HTTP client cannot be built.
    #[error("cannot build the notification client: {0}")]
    Client(String),
}

impl ProviderError {
    /// Stable CamelCase reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Invalid { .. } => "InvalidNotify",
            Self::Client(_) => "NotifyClient",
        }
    }
}

/// Where a provider was configured, for its errors.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// `--notify "slack"`, `spec.notify[0]`.
    pub what: &'a str,
    /// How to give the URL there.
    pub url_hint: &'a str,
    /// How to give GitHub's token there.
    pub token_hint: &'a str,
}

/// One request to send.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Where.
    pub url: url::Url,
    /// Headers besides the client's.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Provider {
    /// Parses `KIND=URL` (`github` alone means GitHub's API); `secret` signs generic
    /// payloads, `token` is GitHub's.
    pub fn parse(
        value: &str,
        secret: Option<&Secret>,
        token: Option<&Secret>,
    ) -> Result<Self, ProviderError> {
        let (kind, url) = match value.split_once('=') {
            Some((kind, url)) => (kind, Some(url)),
            None => (value, None),
        };
        let origin = Origin {
            what: &format!("--notify {value:?}"),
            url_hint: "KIND=URL",
            token_hint: "--notify-token-file FILE or GITHUB_TOKEN",
        };
        Self::new(kind, url, secret, token, &origin)
    }

    /// The provider of `kind` (`generic`, `cloudevents`, `slack`, `github`) posting to
    /// `address` (GitHub: the API base, default `https://api.github.com`); `origin` says
    /// where it was configured, for errors.
    pub fn new(
        kind: &str,
        address: Option<&str>,
        secret: Option<&Secret>,
        token: Option<&Secret>,
        origin: &Origin<'_>,
    ) -> Result<Self, ProviderError> {
        let what = origin.what;
        let invalid = |why: &str| ProviderError::Invalid {
            what: what.to_string(),
            why: why.to_string(),
        };
        let parse_url = |text: &str| -> Result<url::Url, ProviderError> {
            let url = url::Url::parse(text).map_err(|e| invalid(&format!("not a URL: {e}")))?;
            match url.scheme() {
                "https" | "http" => Ok(url),
                other => Err(invalid(&format!("scheme {other:?}: use https (or http)"))),
            }
        };
        let required =
            || address.ok_or_else(|| invalid(&format!("needs a URL: {}", origin.url_hint)));
        Ok(match kind {
            "generic" => Self::Generic {
                url: parse_url(required()?)?,
                secret: secret.cloned(),
            },
            "cloudevents" => Self::CloudEvents {
                url: parse_url(required()?)?,
            },
            "slack" => Self::Slack {
                url: parse_url(required()?)?,
            },
            "github" => Self::Github {
                api: parse_url(address.unwrap_or(GITHUB_API))?,
                token: token
                    .cloned()
                    .ok_or_else(|| invalid(&format!("needs a token: {}", origin.token_hint)))?,
            },
            _ => {
                return Err(invalid(
                    "unknown kind: generic, cloudevents, slack or github",
                ))
            }
        })
    }

    /// Its kind, for logs (never the URL: Slack's and others' carry secrets).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Generic { .. } => "generic",
            Self::CloudEvents { .. } => "cloudevents",
            Self::Slack { .. } => "slack",
            Self::Github { .. } => "github",
        }
    }

    /// The request for `event`, or `None` when this provider has nothing to say about it
    /// (GitHub, for an artifact without a GitHub source and commit revision).
    pub fn request(&self, event: &Event) -> Option<Outgoing> {
        let json_body = |value: serde_json::Value| serde_json::to_vec(&value).unwrap_or_default();
        match self {
            Self::Generic { url, secret } => {
                let body = serde_json::to_vec(event).unwrap_or_default();
                let mut headers = vec![("content-type".into(), "application/json".into())];
                if let Some(secret) = secret {
                    headers.push(("x-signature".into(), secret.sign(&body)));
                }
                Some(Outgoing {
                    url: url.clone(),
                    headers,
                    body,
                })
            }
            Self::CloudEvents { url } => Some(Outgoing {
                url: url.clone(),
                headers: vec![("content-type".into(), "application/cloudevents+json".into())],
                body: json_body(json!({
                    "specversion": "1.0",
                    "type": format!("dev.tresor.{}", event.reason.to_ascii_lowercase()),
                    "source": format!("tresor/{}", event.origin),
                    "id": event.id,
                    "time": event.time,
                    "subject": event.digest.as_deref().unwrap_or(&event.reference),
                    "datacontenttype": "application/json",
                    "data": event,
                })),
            }),
            Self::Slack { url } => {
                let icon = if event.is_success() {
                    ":white_check_mark:"
                } else {
                    ":x:"
                };
                let mut text = format!(
                    "{icon} *{}* {} — {}\n{}",
                    event.reason, event.reference, event.origin, event.message
                );
                if let Some(revision) = &event.revision {
                    text.push_str(&format!("\nrevision {revision}"));
                }
                Some(Outgoing {
                    url: url.clone(),
                    headers: vec![("content-type".into(), "application/json".into())],
                    body: json_body(json!({ "text": text })),
                })
            }
            Self::Github { api, token } => {
                let (owner, repo) = github_repository(event.source.as_deref()?)?;
                let sha = commit(event.revision.as_deref()?)?;
                let state = match event.reason.as_str() {
                    "Applied" | "DriftCorrected" => "success",
                    "Rejected" | "HealthFailed" | "RolledBack" => "failure",
                    _ => "error",
                };
                let mut url = api.clone();
                url.path_segments_mut()
                    .ok()?
                    .pop_if_empty()
                    .extend(["repos", &owner, &repo, "statuses", &sha]);
                let mut description = format!("{}: {}", event.reason, event.message);
                if description.chars().count() > 140 {
                    description = description.chars().take(139).collect::<String>() + "…";
                }
                Some(Outgoing {
                    url,
                    headers: vec![
                        ("accept".into(), "application/vnd.github+json".into()),
                        ("x-github-api-version".into(), "2022-11-28".into()),
                        ("authorization".into(), format!("Bearer {}", token.expose())),
                        ("content-type".into(), "application/json".into()),
                    ],
                    body: json_body(json!({
                        "state": state,
                        "description": description,
                        "context": format!("tresor/{}", event.origin),
                    })),
                })
            }
        }
    }
}

/// `OWNER/REPO` of `https://github.com/OWNER/REPO[.git]`.
fn github_repository(source: &str) -> Option<(String, String)> {
    let url = url::Url::parse(source).ok()?;
    if url.host_str()? != "github.com" {
        return None;
    }
    let mut parts = url.path_segments()?;
    let owner = parts.next().filter(|s| !s.is_empty())?;
    let repo = parts.next().filter(|s| !s.is_empty())?;
    Some((owner.to_string(), repo.trim_end_matches(".git").to_string()))
}

/// The commit of a revision: `main@sha1:<40 hex>`, `sha1:<hex>` or bare 40 hex.
fn commit(revision: &str) -> Option<String> {
    let sha = revision.rsplit(['@', ':']).next()?;
    (sha.len() == 40 && sha.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| sha.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(reason: &str, severity: &'static str) -> Event {
        Event {
            reason: reason.into(),
            severity,
            reference: "oci://ghcr.io/acme/shop:v1".into(),
            digest: Some("sha256:1".into()),
            applied: Some("sha256:1".into()),
            source: Some("https://github.com/acme/shop.git".into()),
            revision: Some("main@sha1:0123456789ABCDEF0123456789abcdef01234567".into()),
            message: "applied sha256:1".into(),
            origin: "ArtifactSync shop/web".into(),
            time: "2026-12-02T00:00:00Z".into(),
            id: "abc".into(),
        }
    }

    #[test]
    fn kinds_parse_and_bad_values_say_why() {
        let secret = Secret::new(b"s").unwrap();
        assert_eq!(
            Provider::parse("generic=https://x/h", None, None)
                .unwrap()
                .name(),
            "generic"
        );
        assert_eq!(
            Provider::parse("github", None, Some(&secret))
                .unwrap()
                .name(),
            "github"
        );
        for (value, why) in [
            ("slack", "needs a URL"),
            ("teams=https://x", "unknown kind"),
            ("generic=ftp://x", "scheme \"ftp\""),
            ("github", "needs a token"),
        ] {
            let e = Provider::parse(value, None, None).unwrap_err();
            assert!(e.to_string().contains(why), "{value}: {e}");
        }
    }

    #[test]
    fn github_status_goes_to_the_commit_of_the_revision() {
        let token = Secret::new(b"t0ken").unwrap();
        let p = Provider::parse("github=http://127.0.0.1:1/api/", None, Some(&token)).unwrap();
        let r = p.request(&event("Rejected", "error")).unwrap();
        assert_eq!(
            r.url.as_str(),
            "http://127.0.0.1:1/api/repos/acme/shop/statuses/0123456789abcdef0123456789abcdef01234567"
        );
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["state"], "failure");
        assert_eq!(body["context"], "tresor/ArtifactSync shop/web");
        assert!(r
            .headers
            .contains(&("authorization".into(), "Bearer t0ken".into())));
        // No GitHub source or no commit: nothing to send.
        let mut e = event("Applied", "info");
        e.source = Some("https://gitlab.com/acme/shop".into());
        assert!(p.request(&e).is_none());
        let mut e = event("Applied", "info");
        e.revision = Some("v1.2.3".into());
        assert!(p.request(&e).is_none());
    }

    #[test]
    fn generic_is_signed_and_cloudevents_is_structured() {
        let secret = Secret::new(b"k").unwrap();
        let p = Provider::parse("generic=https://x/h", Some(&secret), None).unwrap();
        let r = p.request(&event("Applied", "info")).unwrap();
        let signature = r.headers.iter().find(|(k, _)| k == "x-signature").unwrap();
        assert_eq!(signature.1, secret.sign(&r.body));
        let p = Provider::parse("cloudevents=https://x/ce", None, None).unwrap();
        let r = p.request(&event("Applied", "info")).unwrap();
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["specversion"], "1.0");
        assert_eq!(body["type"], "dev.tresor.applied");
        assert_eq!(body["data"]["reference"], "oci://ghcr.io/acme/shop:v1");
    }
}
