//! Provenance annotations of a push: source, revision and creation time, with defaults from
//! the CI environment (GitHub Actions, GitLab CI) or the local git checkout.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// When the artifact says it was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// `--reproducible`: the Unix epoch, so the same inputs give the same manifest digest.
    Epoch,
    /// `SOURCE_DATE_EPOCH` if set, otherwise now.
    FromEnvironment,
}

impl Created {
    /// The RFC 3339 timestamp for the annotation, or an error naming a bad `SOURCE_DATE_EPOCH`.
    pub fn timestamp(self) -> Result<String, String> {
        let time = match self {
            Self::Epoch => UNIX_EPOCH,
            Self::FromEnvironment => match std::env::var("SOURCE_DATE_EPOCH") {
                Ok(v) if !v.trim().is_empty() => {
                    let secs: u64 = v.trim().parse().map_err(|_| {
                        format!("SOURCE_DATE_EPOCH={v:?} is not a whole number of seconds")
                    })?;
                    UNIX_EPOCH + Duration::from_secs(secs)
                }
                _ => SystemTime::now(),
            },
        };
        Ok(humantime::format_rfc3339_seconds(time).to_string())
    }
}

/// Source and revision, and where they were found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Provenance {
    /// Repository URL, e.g. `https://github.com/acme/app`.
    pub source: Option<String>,
    /// Revision in Flux's form, `main@sha1:<sha>`.
    pub revision: Option<String>,
    /// Where the defaults came from (`GitHub Actions`, `GitLab CI`, `git checkout`).
    pub origin: Option<&'static str>,
}

/// Source and revision of the current build: from GitHub Actions or GitLab CI variables in
/// `env`, else from the git checkout that contains `dir`.
pub fn detect(env: &BTreeMap<String, String>, dir: &Path) -> Provenance {
    let get = |k: &str| env.get(k).filter(|v| !v.is_empty()).cloned();
    if get("GITHUB_ACTIONS").as_deref() == Some("true") {
        let source = match (get("GITHUB_SERVER_URL"), get("GITHUB_REPOSITORY")) {
            (Some(server), Some(repo)) => Some(format!("{server}/{repo}")),
            _ => None,
        };
        let revision = get("GITHUB_SHA").map(|sha| match get("GITHUB_REF_NAME") {
            Some(r) => format!("{r}@sha1:{sha}"),
            None => format!("sha1:{sha}"),
        });
        return Provenance {
            source,
            revision,
            origin: Some("GitHub Actions"),
        };
    }
    if get("GITLAB_CI").as_deref() == Some("true") {
        let revision = get("CI_COMMIT_SHA").map(|sha| match get("CI_COMMIT_REF_NAME") {
            Some(r) => format!("{r}@sha1:{sha}"),
            None => format!("sha1:{sha}"),
        });
        return Provenance {
            source: get("CI_PROJECT_URL"),
            revision,
            origin: Some("GitLab CI"),
        };
    }
    from_git(dir)
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn from_git(dir: &Path) -> Provenance {
    let Some(sha) = git(dir, &["rev-parse", "HEAD"]) else {
        return Provenance::default();
    };
    let branch = git(dir, &["symbolic-ref", "--short", "-q", "HEAD"]);
    let revision = Some(match branch {
        Some(b) => format!("{b}@sha1:{sha}"),
        None => format!("sha1:{sha}"),
    });
    let source = git(dir, &["remote", "get-url", "origin"]).map(|url| strip_userinfo(&url));
    Provenance {
        source,
        revision,
        origin: Some("git checkout"),
    }
}

/// Removes `user:password@` from a URL so a token in a remote URL never lands in an artifact.
fn strip_userinfo(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((userinfo, host)) if !userinfo.contains('/') => format!("{scheme}://{host}"),
            _ => url.to_string(),
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn github_actions_variables_give_flux_style_revision() {
        let p = detect(
            &env(&[
                ("GITHUB_ACTIONS", "true"),
                ("GITHUB_SERVER_URL", "https://github.com"),
                ("GITHUB_REPOSITORY", "acme/app"),
                ("GITHUB_SHA", "abc123"),
                ("GITHUB_REF_NAME", "main"),
            ]),
            Path::new("/nonexistent"),
        );
        assert_eq!(p.source.as_deref(), Some("https://github.com/acme/app"));
        assert_eq!(p.revision.as_deref(), Some("main@sha1:abc123"));
        assert_eq!(p.origin, Some("GitHub Actions"));
    }

    #[test]
    fn gitlab_variables_are_used() {
        let p = detect(
            &env(&[
                ("GITLAB_CI", "true"),
                ("CI_PROJECT_URL", "https://gitlab.com/acme/app"),
                ("CI_COMMIT_SHA", "def456"),
                ("CI_COMMIT_REF_NAME", "release"),
            ]),
            Path::new("/nonexistent"),
        );
        assert_eq!(p.source.as_deref(), Some("https://gitlab.com/acme/app"));
        assert_eq!(p.revision.as_deref(), Some("release@sha1:def456"));
    }

    #[test]
    fn local_checkout_is_read_and_credentials_stripped() {
        let dir = tempfile::tempdir().unwrap();
        let run = |args: &[&str]| {
            let ok = Command::new("git")
                .arg("-C")
                .arg(dir.path())
                .args(args)
                .env("GIT_AUTHOR_NAME", "t")
                .env("GIT_AUTHOR_EMAIL", "t@example.com")
                .env("GIT_COMMITTER_NAME", "t")
                .env("GIT_COMMITTER_EMAIL", "t@example.com")
                .status()
                .unwrap()
                .success();
            assert!(ok, "git {args:?}");
        };
        run(&["init", "-q", "-b", "trunk"]);
        run(&["commit", "-q", "--allow-empty", "-m", "x"]);
        run(&[
            "remote",
            "add",
            "origin",
            "https://user:secret@example.com/acme/app.git",
        ]);
        let p = detect(&BTreeMap::new(), dir.path());
        assert_eq!(
            p.source.as_deref(),
            Some("https://example.com/acme/app.git")
        );
        let rev = p.revision.unwrap();
        assert!(
            rev.starts_with("trunk@sha1:") && rev.len() == "trunk@sha1:".len() + 40,
            "{rev}"
        );
    }

    #[test]
    fn reproducible_created_is_the_epoch() {
        assert_eq!(Created::Epoch.timestamp().unwrap(), "1970-01-01T00:00:00Z");
    }
}
