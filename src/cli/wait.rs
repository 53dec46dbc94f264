//! `tresor wait REF --for applied`: a CI job pushes, then waits until the ArtifactSyncs that
//! follow REF report its digest applied and healthy — or refused, with the reason.
//!
//! REF's tag is resolved to a digest once (one HEAD), as everywhere; the syncs are read
//! every [`POLL`] with the kubeconfig. A sync *follows* REF when its `spec.url` names the same
//! repository (canonical host) and its ref is REF's tag, a semver range REF's tag satisfies,
//! or REF's digest; a REF given by digest alone matches every sync of the repository.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{CliError, Format, Printer};
use crate::api::conditions::{ConditionStatus, STALLED};
use crate::api::ArtifactSync;
use crate::reference::{parse_range, tag_version};
use crate::reference::{Reference, RegistryReference};
use crate::registry::{auth, RegistryError, RegistryOptions, Repository};

/// How often the ArtifactSyncs are read.
const POLL: Duration = Duration::from_secs(2);

/// What to wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WaitFor {
    /// The digest applied and `Ready` (healthy when the sync waits for health).
    Applied,
}

/// Arguments of `tresor wait`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  # In CI after the push: exit 0 when every ArtifactSync following it applied the digest
  tresor wait oci://ghcr.io/acme/shop:v1.4.0 --for applied -n shop --timeout 5m")]
pub struct WaitArgs {
    /// The artifact pushed: oci://host/repo:tag or oci://host/repo@sha256:….
    pub reference: String,
    /// What to wait for.
    #[arg(long = "for", value_enum, default_value = "applied")]
    pub wait_for: WaitFor,
    /// Only ArtifactSyncs in this namespace [default: all namespaces].
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Give up after this long (exit 1, naming the syncs still pending).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Kubeconfig file [default: KUBECONFIG, ~/.kube/config, or the in-cluster config].
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// Context of the kubeconfig [default: its current context].
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Use plain HTTP to resolve REF's tag (only for registries you trust on the network
    /// path).
    #[arg(long)]
    pub plain_http: bool,
    /// PEM file with CA certificates to trust for the registry, besides the system roots.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<std::path::PathBuf>,
    /// Registry credentials as USER:PASSWORD (default: docker's config.json and its
    /// credential helpers).
    #[arg(
        long,
        value_name = "USER:PASSWORD",
        env = "TRESOR_CREDS",
        hide_env_values = true
    )]
    pub creds: Option<String>,
}

impl WaitArgs {
    /// How to resolve REF's tag: the shared registry options, each request bounded by 30 s
    /// (`--timeout` is the whole wait here).
    fn registry(&self) -> Result<RegistryOptions, CliError> {
        Ok(RegistryOptions {
            plain_http: self.plain_http,
            ca_file: self.ca_file.clone(),
            creds: self
                .creds
                .as_deref()
                .map(auth::parse_creds)
                .transpose()
                .map_err(RegistryError::from)?,
            timeout: Duration::from_secs(30),
            ..RegistryOptions::default()
        })
    }
}

/// Where one sync stands with the digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum SyncState {
    /// The digest is applied and Ready.
    Applied,
    /// The digest was refused or rolled back (verification, policy, health …), and the
    /// sync waits for another digest: it will not be applied.
    Refused {
        /// The `Ready` condition's reason.
        reason: String,
        /// Its message.
        message: String,
    },
    /// Not yet: another digest, or this one still being applied or failing transiently.
    Pending {
        /// What the sync says now.
        now: String,
    },
}

/// Where `sync` stands with `digest`.
pub fn state(sync: &ArtifactSync, digest: &str) -> SyncState {
    let Some(status) = &sync.status else {
        return SyncState::Pending {
            now: "no status yet".into(),
        };
    };
    let current = status.observed_generation.is_some()
        && status.observed_generation == sync.metadata.generation;
    let ready = status.ready();
    let stalled = status
        .conditions
        .iter()
        .any(|c| c.type_ == STALLED && c.status == ConditionStatus::True);
    let applied = status.last_applied_digest.as_deref() == Some(digest);
    let attempted = status.last_attempted_digest.as_deref() == Some(digest);
    match ready {
        Some(r) if current && applied && r.status == ConditionStatus::True => SyncState::Applied,
        Some(r) if current && attempted && stalled && r.status == ConditionStatus::False => {
            SyncState::Refused {
                reason: r.reason.clone(),
                message: r.message.clone(),
            }
        }
        Some(r) => SyncState::Pending {
            now: format!(
                "Ready={} {}: applied {}",
                r.status.as_str(),
                r.reason,
                status.last_applied_digest.as_deref().unwrap_or("nothing")
            ),
        },
        None => SyncState::Pending {
            now: "no Ready condition yet".into(),
        },
    }
}

/// Whether `sync` follows `reference` (pinned to `digest`): see the module docs.
pub fn follows(
    sync: &ArtifactSync,
    reference: &RegistryReference,
    plain_http: bool,
    digest: &str,
) -> bool {
    let Ok(Reference::Registry(url)) = sync.spec.url.parse::<Reference>() else {
        return false;
    };
    if url.canonical_repository(sync.spec.insecure) != reference.canonical_repository(plain_http) {
        return false;
    }
    let r = &sync.spec.source_ref;
    let Some(tag) = &reference.tag else {
        return true;
    };
    r.tag.as_deref() == Some(tag.as_str())
        || r.digest.as_deref() == Some(digest)
        || r.semver.as_deref().is_some_and(|range| {
            let (Ok(range), Some(version)) = (parse_range(range), tag_version(tag)) else {
                return false;
            };
            range.matches(&version)
        })
}

#[derive(Serialize)]
struct WaitOutput<'a> {
    reference: &'a str,
    digest: &'a str,
    syncs: &'a BTreeMap<String, SyncState>,
}

pub(super) async fn run(args: WaitArgs) -> Result<ExitCode, CliError> {
    let printer = Printer::new(args.format);
    let reference: Reference = args.reference.parse()?;
    let Reference::Registry(registry_ref) = &reference else {
        return Err(CliError::Usage(format!(
            "tresor wait needs an oci:// reference, which ArtifactSyncs follow, not {reference}"
        )));
    };
    let repo = Repository::open(&reference, &args.registry()?)?;
    let digest = match reference.digest() {
        Some(d) => d.clone(),
        None => repo
            .resolve(Repository::manifest_ref(&reference)?)
            .await?
            .ok_or_else(|| {
                CliError::Usage(format!("{reference} does not exist in the registry"))
            })?,
    };
    let digest = digest.to_string();
    let client = super::status::client(args.kubeconfig.as_deref(), args.context.as_deref()).await?;
    let deadline = Instant::now() + args.timeout;
    let mut reported: BTreeMap<String, SyncState> = BTreeMap::new();
    loop {
        let syncs = super::status::list(client.clone(), args.namespace.as_deref()).await?;
        let states: BTreeMap<String, SyncState> = syncs
            .iter()
            .filter(|s| follows(s, registry_ref, args.plain_http, &digest))
            .map(|s| {
                let key = format!(
                    "{}/{}",
                    s.metadata.namespace.as_deref().unwrap_or_default(),
                    s.metadata.name.as_deref().unwrap_or_default()
                );
                (key, state(s, &digest))
            })
            .collect();
        if states.is_empty() {
            return Err(CliError::Usage(format!(
                "no ArtifactSync {}follows {reference}",
                args.namespace
                    .as_deref()
                    .map(|ns| format!("in namespace {ns} "))
                    .unwrap_or_default()
            )));
        }
        for (name, state) in &states {
            if printer.format() == Format::Text && reported.get(name) != Some(state) {
                printer.note(format!("{name}: {}", describe(state)));
            }
        }
        reported.clone_from(&states);
        let refused = states
            .values()
            .any(|s| matches!(s, SyncState::Refused { .. }));
        let done = states.values().all(|s| *s == SyncState::Applied);
        let timed_out = Instant::now() >= deadline;
        if refused || done || timed_out {
            let output = WaitOutput {
                reference: &args.reference,
                digest: &digest,
                syncs: &states,
            };
            printer.result(&output, || {
                let verdict = if done {
                    format!("applied {digest} in {} ArtifactSync(s)", states.len())
                } else if refused {
                    format!("refused {digest}")
                } else {
                    format!(
                        "timed out after {}: {digest} not applied everywhere",
                        humantime::format_duration(args.timeout)
                    )
                };
                let mut text = verdict;
                for (name, state) in &states {
                    text.push_str(&format!("\n  {name}: {}", describe(state)));
                }
                text
            });
            return Ok(if done {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        tokio::time::sleep(POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}

fn describe(state: &SyncState) -> String {
    match state {
        SyncState::Applied => "applied and ready".into(),
        SyncState::Refused { reason, message } => format!("refused: {reason}: {message}"),
        SyncState::Pending { now } => format!("pending ({now})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::conditions::{now_rfc3339, observe, Observation};
    use crate::api::{ArtifactSyncSpec, ArtifactSyncStatus};
    use crate::reconcile::Retry;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn sync(url: &str, tag: Option<&str>, semver: Option<&str>) -> ArtifactSync {
        let mut spec = ArtifactSyncSpec {
            url: url.into(),
            ..ArtifactSyncSpec::default()
        };
        spec.source_ref.tag = tag.map(Into::into);
        spec.source_ref.semver = semver.map(Into::into);
        let mut s = ArtifactSync::new("app", spec);
        s.metadata.generation = Some(3);
        s
    }

    fn with_status(
        mut s: ArtifactSync,
        applied: &str,
        attempted: &str,
        observation: &Observation,
    ) -> ArtifactSync {
        let mut status = ArtifactSyncStatus {
            last_applied_digest: Some(applied.into()),
            last_attempted_digest: Some(attempted.into()),
            ..ArtifactSyncStatus::default()
        };
        observe(&mut status, Some(3), observation, &now_rfc3339());
        s.status = Some(status);
        s
    }

    #[test]
    fn a_digest_is_applied_refused_or_pending() {
        let base = sync("oci://reg/acme/app", Some("v1"), None);
        let ok = Observation::Succeeded {
            reason: "Applied".into(),
            message: "applied".into(),
        };
        assert_eq!(
            state(&with_status(base.clone(), D1, D1, &ok), D1),
            SyncState::Applied
        );
        assert!(matches!(
            state(&with_status(base.clone(), D2, D2, &ok), D1),
            SyncState::Pending { .. }
        ));
        let refused = Observation::Failed {
            reason: "HealthTimeout".into(),
            message: "Deployment/web not available".into(),
            retry: Retry::Stalled,
        };
        assert_eq!(
            state(&with_status(base.clone(), D2, D1, &refused), D1),
            SyncState::Refused {
                reason: "HealthTimeout".into(),
                message: "Deployment/web not available".into()
            }
        );
        // A transient failure keeps it pending (the puller retries).
        let transient = Observation::Failed {
            reason: "RegistryUnavailable".into(),
            message: "connection refused".into(),
            retry: Retry::Transient,
        };
        assert!(matches!(
            state(&with_status(base.clone(), D2, D1, &transient), D1),
            SyncState::Pending { .. }
        ));
        // A status for an older generation says nothing yet.
        let mut old = with_status(base, D1, D1, &ok);
        old.metadata.generation = Some(4);
        assert!(matches!(state(&old, D1), SyncState::Pending { .. }));
    }

    #[test]
    fn syncs_follow_by_repository_and_tag_semver_or_digest() {
        let reference = |text: &str| match text.parse::<Reference>().unwrap() {
            Reference::Registry(r) => r,
            Reference::Layout(_) => unreachable!(),
        };
        let tagged = reference("oci://REG.example:443/acme/app:v1.2.0");
        let by_tag = sync("oci://reg.example/acme/app", Some("v1.2.0"), None);
        let by_range = sync("oci://reg.example/acme/app", None, Some(">=1.0.0 <2.0.0"));
        let other_range = sync("oci://reg.example/acme/app", None, Some(">=2.0.0"));
        let other_repo = sync("oci://reg.example/acme/web", Some("v1.2.0"), None);
        let other_tag = sync("oci://reg.example/acme/app", Some("v1.3.0"), None);
        assert!(follows(&by_tag, &tagged, false, D1));
        assert!(follows(&by_range, &tagged, false, D1));
        assert!(!follows(&other_range, &tagged, false, D1));
        assert!(!follows(&other_repo, &tagged, false, D1));
        assert!(!follows(&other_tag, &tagged, false, D1));
        let pinned = reference(&format!("oci://reg.example/acme/app@{D1}"));
        assert!(follows(&other_tag, &pinned, false, D1));
        assert!(!follows(&other_repo, &pinned, false, D1));
    }
}
