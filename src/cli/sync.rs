//! `tresor sync REF --dir DIR`: the host agent.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use crate::agent::{self, AgentOptions, WebhookOptions};
use crate::notify::{Notifier, Provider};
use crate::reconcile::source::Source;
use crate::reconcile::target::Target;
use crate::reconcile::{Engine, ImmutabilityPolicy, Outcome, Retry, Step, StepError, Summary};
use crate::reference::Reference;
use crate::registry::Repository;
use crate::webhook::Secret;

use super::{CliError, Format, LimitArgs, Printer, RegistryArgs, TrustArgs};

/// Arguments of `tresor sync`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  # Keep /etc/nginx/sites equal to the artifact, reload nginx after each change
  tresor sync oci://registry.example/acme/site:live --dir /etc/nginx/sites \\
    --key cosign.pub --interval 60s --exec 'systemctl reload nginx'

  # Follow the highest 1.x release, one cycle only (exit 0 in sync)
  tresor sync oci://registry.example/acme/site --semver '>=1 <2' --dir site --key cosign.pub --once")]
pub struct SyncArgs {
    /// What to follow: oci://host/repo:tag, oci://host/repo@sha256:… (fixed), or
    /// oci://host/repo with --semver; oci-layout:PATH… works the same way.
    pub reference: String,
    /// The directory to keep equal to the artifact (a symlink tresor switches atomically).
    #[arg(long)]
    pub dir: PathBuf,
    /// Follow the highest tag in this semver range, e.g. '>=1.2 <2' (other tags ignored).
    #[arg(long, value_name = "RANGE")]
    pub semver: Option<String>,
    /// Time between checks (jittered ±10%).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Shell command run (sh -c) after each applied change, with TRESOR_DIGEST,
    /// TRESOR_REFERENCE and TRESOR_DIR set.
    #[arg(long, value_name = "CMD")]
    pub exec: Option<String>,
    /// Longest --exec may run before it is killed.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    pub exec_timeout: Duration,
    /// Run one cycle and exit (0 in sync, 1 refused as unverified, 2 error).
    #[arg(long)]
    pub once: bool,
    /// Write a JSON status file after every cycle (atomically).
    #[arg(long, value_name = "FILE")]
    pub status_file: Option<PathBuf>,
    /// Serve Prometheus metrics on http://ADDR/metrics, e.g. 127.0.0.1:9090.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<String>,
    /// Content-addressed cache of verified manifests and layers
    /// [default: $XDG_CACHE_HOME/tresor or ~/.cache/tresor].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Reconcile at once whenever this file is touched (as SIGHUP does).
    #[arg(long, value_name = "PATH")]
    pub trigger_file: Option<PathBuf>,
    /// Receive registry webhooks on http://ADDR/hooks/<kind> (kind: distribution, github,
    /// harbor, dockerhub, quay, generic): a push to the followed repository reconciles at
    /// once. Needs --webhook-secret-file.
    #[arg(long, value_name = "ADDR", requires = "webhook_secret_file")]
    pub webhook_addr: Option<String>,
    /// The secret webhook requests must prove (HMAC signature or bearer token; see
    /// docs/webhooks.md).
    #[arg(long, value_name = "FILE", requires = "webhook_addr")]
    pub webhook_secret_file: Option<PathBuf>,
    /// Tell KIND=URL about every cycle that applied, corrected drift, was refused or failed
    /// (repeatable): generic=URL (JSON, signed with --notify-secret-file),
    /// cloudevents=URL, slack=URL, github[=API_URL] (commit status on the artifact's
    /// revision). See docs/notifications.md.
    #[arg(long, value_name = "KIND=URL")]
    pub notify: Vec<String>,
    /// HMAC key for generic notifications (X-Signature: sha256=…).
    #[arg(long, value_name = "FILE")]
    pub notify_secret_file: Option<PathBuf>,
    /// GitHub token for github notifications [default: GITHUB_TOKEN].
    #[arg(long, value_name = "FILE")]
    pub notify_token_file: Option<PathBuf>,
    /// Accept content without verifying a signature (explicit opt-out; ignored when trust
    /// material is given, which is then always checked).
    #[arg(long)]
    pub allow_unsigned: bool,
    #[command(flatten)]
    trust: TrustArgs,
    #[command(flatten)]
    policy: super::lint::PolicyArgs,
    /// Output format of the per-cycle results on stdout.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    #[command(flatten)]
    decrypt: super::args::DecryptArgs,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    registry: RegistryArgs,
}

/// `--webhook-addr` with the secret read from `--webhook-secret-file`.
fn webhook_options(args: &SyncArgs) -> Result<Option<WebhookOptions>, CliError> {
    let (Some(addr), Some(path)) = (&args.webhook_addr, &args.webhook_secret_file) else {
        return Ok(None);
    };
    let secret = read_secret(path, "--webhook-secret-file")?;
    Ok(Some(WebhookOptions {
        addr: addr.clone(),
        secret,
        plain_http: args.registry.plain_http,
    }))
}

/// The secret in `path`; `what` names the flag for the message.
fn read_secret(path: &std::path::Path, what: &str) -> Result<Secret, CliError> {
    Secret::read(path).map_err(|e| CliError::Usage(format!("{what}: {e}")))
}

/// The providers of `--notify`, or `None` without any.
fn notifier(args: &SyncArgs) -> Result<Option<Arc<Notifier>>, CliError> {
    if args.notify.is_empty() {
        return Ok(None);
    }
    let secret = match &args.notify_secret_file {
        Some(path) => Some(read_secret(path, "--notify-secret-file")?),
        None => None,
    };
    let token = match &args.notify_token_file {
        Some(path) => Some(read_secret(path, "--notify-token-file")?),
        None => std::env::var("GITHUB_TOKEN")
            .ok()
            .and_then(|t| Secret::new(t.as_bytes())),
    };
    let providers = args
        .notify
        .iter()
        .map(|value| Provider::parse(value, secret.as_ref(), token.as_ref()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let notifier = Notifier::new(providers).map_err(|e| CliError::Usage(e.to_string()))?;
    Ok(Some(Arc::new(notifier)))
}

pub(super) async fn run(args: SyncArgs) -> Result<ExitCode, CliError> {
    let printer = Printer::new(args.format);
    let reference: Reference = args.reference.parse()?;
    let verifier = args
        .trust
        .verifier(args.allow_unsigned, "sync", &reference)?;
    let (lint_policy, mode) = args.policy.load()?;
    if args.interval.is_zero() {
        return Err(CliError::Usage("--interval must be longer than 0s".into()));
    }
    let source = Source::new(reference.clone(), args.semver.as_deref())
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let repo = Repository::open(&reference, &args.registry.options()?)?;
    let cache = super::args::open_cache(args.cache_dir.as_deref())?;
    let decryption = args.decrypt.decryption()?;
    let target = Target::open(&args.dir).map_err(StepError::from)?;
    let engine = Engine::new(
        source,
        repo,
        verifier,
        Arc::new(ImmutabilityPolicy::new(lint_policy, mode)),
        cache,
        target,
        args.limits.limits(),
    )
    .with_decryption(decryption);
    let options = AgentOptions {
        interval: args.interval,
        once: args.once,
        exec: args.exec.clone(),
        exec_timeout: args.exec_timeout,
        status_file: args.status_file.clone(),
        metrics_addr: args.metrics_addr.clone(),
        trigger_file: args.trigger_file.clone(),
        webhook: webhook_options(&args)?,
        notifier: notifier(&args)?,
    };
    let once = args.once;
    let mut last_line = None;
    let last = agent::run(engine, options, |summary| {
        report(&printer, summary, once, &mut last_line)
    })
    .await?;
    Ok(if !once {
        ExitCode::SUCCESS
    } else {
        match &last.error {
            None => ExitCode::SUCCESS,
            // Refused content (untrusted, against the immutability policy, or a SOPS file
            // that does not decrypt) is a failed check, as in `pull`; transient trouble in
            // those steps is an error.
            Some(f)
                if matches!(f.step, Step::Verify | Step::Policy | Step::Decrypt)
                    && f.retry == Retry::Stalled =>
            {
                ExitCode::from(1)
            }
            Some(_) => ExitCode::from(2),
        }
    })
}

/// One line per cycle that did something (JSON: one document per cycle); a repeated failure
/// is printed once.
fn report(printer: &Printer, summary: &Summary, once: bool, last_line: &mut Option<String>) {
    let line = match printer.format() {
        Format::Json => serde_json::to_string(summary).unwrap_or_default(),
        Format::Text => text_line(summary),
    };
    let changed = matches!(summary.outcome, Outcome::Applied | Outcome::DriftCorrected);
    let quiet = summary.outcome == Outcome::Unchanged && summary.error.is_none();
    if once || changed || (!quiet && last_line.as_deref() != Some(line.as_str())) {
        let _ = writeln!(std::io::stdout().lock(), "{line}");
    }
    *last_line = Some(line);
}

fn text_line(s: &Summary) -> String {
    let digest = |d: &Option<crate::digest::Digest>| {
        d.as_ref()
            .map_or_else(|| "nothing".to_string(), ToString::to_string)
    };
    let mut line = match s.outcome {
        Outcome::Applied => format!(
            "applied {} ({}{})",
            digest(&s.applied),
            s.signer.as_deref().unwrap_or("unknown signer"),
            s.approval
                .as_ref()
                .map(|a| format!("; approved by {} at {}", a.approved_by(), a.record.time))
                .unwrap_or_default()
        ),
        Outcome::DriftCorrected => format!(
            "restored {} in {}: {}",
            s.restored.len(),
            digest(&s.applied),
            s.restored.join(", ")
        ),
        Outcome::Unchanged => format!("unchanged {}", digest(&s.applied)),
        Outcome::Rejected => format!(
            "rejected {}; keeping {}",
            digest(&s.digest),
            digest(&s.applied)
        ),
        Outcome::Failed => format!("failed; keeping {}", digest(&s.applied)),
        Outcome::Abandoned => format!("abandoned; keeping {}", digest(&s.applied)),
    };
    if let Some(f) = &s.error {
        line.push_str(&format!(
            " [{} at {}: {}]",
            f.reason,
            f.step.name(),
            f.message
        ));
    }
    line
}
