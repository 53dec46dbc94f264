//! Receiving registry webhooks: a push notification triggers an immediate reconcile of the
//! syncs that follow the pushed repository, instead of waiting for their interval.
//!
//! - [`payload`]: what each sender's JSON says was pushed (Distribution, GitHub, Harbor,
//!   Docker Hub, Quay, generic), host, repository and tag only.
//! - [`auth`]: the secret each request must prove (HMAC signature, bearer token, or a
//!   URL token for senders that cannot set headers), compared in constant time.
//! - [`server`]: `POST /hooks/<kind>`, the body bounded, each kind rate-limited, every
//!   answer counted.
//!
//! A webhook only says "look now": the reconcile resolves the tag and verifies the digest
//! as on every interval; no digest, tag or anything else from a payload is trusted.

pub mod auth;
pub mod payload;
pub mod server;

use crate::reference::canonical_host;

pub use auth::Secret;
pub use payload::Push;
pub use server::{serve, Hooks, Receivers};

/// Who sends the webhook, which decides its path (`/hooks/<name>`), payload and proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// CNCF Distribution (`registry`) notifications.
    Distribution,
    /// GitHub `package` and `registry_package` events (GHCR).
    Github,
    /// Harbor webhooks (`PUSH_ARTIFACT`).
    Harbor,
    /// Docker Hub webhooks.
    Dockerhub,
    /// Quay repository notifications.
    Quay,
    /// `{"repository": "[oci://]host/repo", "tag": "…"}` from anything else (a CI step).
    Generic,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 6] = [
        Kind::Distribution,
        Kind::Github,
        Kind::Harbor,
        Kind::Dockerhub,
        Kind::Quay,
        Kind::Generic,
    ];

    /// The name in the path: `distribution`, `github`, `harbor`, `dockerhub`, `quay`,
    /// `generic`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Distribution => "distribution",
            Self::Github => "github",
            Self::Harbor => "harbor",
            Self::Dockerhub => "dockerhub",
            Self::Quay => "quay",
            Self::Generic => "generic",
        }
    }

    /// Every name, comma-separated, for error messages.
    pub fn names() -> String {
        Self::ALL.map(Self::name).join(", ")
    }

    /// What a request of this kind must carry (for the 401's message).
    fn proof(self) -> &'static str {
        match self {
            Self::Github => "X-Hub-Signature-256 must be the HMAC-SHA256 of the body with the secret",
            Self::Generic => {
                "send X-Signature: sha256=<HMAC-SHA256 of the body> or Authorization: Bearer <secret>"
            }
            Self::Distribution | Self::Harbor => "send Authorization: Bearer <secret>",
            Self::Dockerhub | Self::Quay => {
                "send Authorization: Bearer <secret> or ?token=<secret> in the URL"
            }
        }
    }
}

impl std::str::FromStr for Kind {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        Self::ALL.into_iter().find(|k| k.name() == s).ok_or(())
    }
}

/// A payload that does not say what was pushed.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The body is not the kind's JSON, or lacks what locates the push.
    #[error("{} payload: {message}", kind.name())]
    Payload {
        /// Its kind.
        kind: Kind,
        /// What was wrong.
        message: String,
    },
}

impl WebhookError {
    /// Stable CamelCase reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Payload { .. } => "InvalidWebhookPayload",
        }
    }
}

/// Whether `push` is about the repository `host/repository` (a sync's, reached over plain
/// HTTP or not): both hosts in canonical form ([`canonical_host`]: case, default port,
/// Docker Hub's names), the repository paths equal. Tags are not compared: a push of any
/// tag may move a semver range, and the reconcile resolves what it follows itself.
pub fn concerns(push: &Push, host: &str, repository: &str, plain_http: bool) -> bool {
    canonical_host(&push.host, plain_http) == canonical_host(host, plain_http)
        && push.repository == repository
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_their_names() {
        for kind in Kind::ALL {
            assert_eq!(kind.name().parse::<Kind>(), Ok(kind));
        }
        assert!("gitlab".parse::<Kind>().is_err());
    }

    #[test]
    fn a_push_concerns_the_same_repository_in_any_spelling_of_its_host() {
        let push = |host: &str, repository: &str| Push {
            host: host.into(),
            repository: repository.into(),
            tag: Some("v1".into()),
        };
        assert!(concerns(
            &push("GHCR.io:443", "acme/app"),
            "ghcr.io",
            "acme/app",
            false
        ));
        assert!(concerns(
            &push("index.docker.io", "library/nginx"),
            "docker.io",
            "library/nginx",
            false
        ));
        assert!(concerns(&push("reg:80", "a"), "reg", "a", true));
        assert!(!concerns(&push("reg:80", "a"), "reg", "a", false));
        assert!(!concerns(
            &push("ghcr.io", "acme/app2"),
            "ghcr.io",
            "acme/app",
            false
        ));
        assert!(!concerns(
            &push("ghcr.io.evil", "acme/app"),
            "ghcr.io",
            "acme/app",
            false
        ));
    }
}
