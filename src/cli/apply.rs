//! `tresor apply REF`: one reconcile cycle into a Kubernetes cluster, from a shell.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::kube::{
    connect, service_account_user, ApplyOptions, Cluster, ConnectOptions, DiscoveryResolver,
    InventoryStore, KubeApplier, Owner,
};
use crate::reconcile::source::Source;
use crate::reconcile::{Cancel, Engine, ImmutabilityPolicy, Outcome, Step};
use crate::reference::Reference;
use crate::registry::Repository;

use super::{CliError, Format, LimitArgs, Printer, RegistryArgs, TrustArgs};

/// Arguments of `tresor apply`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  # Apply once to the current kube context, prune what left the artifact, wait for health
  tresor apply oci://ghcr.io/acme/shop:v1.4.0 --key cosign.pub --prune --wait

  # Only one directory of the artifact, into a namespace
  tresor apply oci://ghcr.io/acme/platform:v7 --key cosign.pub --path clusters/eu -n shop")]
pub struct ApplyArgs {
    /// The artifact: oci://host/repo:tag, oci://host/repo@sha256:…, or oci-layout:PATH….
    pub reference: String,
    /// Kubeconfig file [default: KUBECONFIG, ~/.kube/config, or the in-cluster config].
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Context of the kubeconfig [default: its current context].
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// Namespace for namespaced objects without one, and where the inventory is kept
    /// [default: the context's namespace].
    #[arg(long, short = 'n', value_name = "NS")]
    pub namespace: Option<String>,
    /// Name of this deployment: owner label `tresor.dev/name` on every object and the
    /// inventory ConfigMap `tresor-inventory-NAME` [default: the repository's last path
    /// component].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Delete objects a previous `tresor apply --name NAME` applied that left the artifact
    /// (only those still carrying tresor's labels).
    #[arg(long)]
    pub prune: bool,
    /// Apply only this directory of the artifact (relative to its root; `..` and absolute
    /// paths are refused). The immutability policy still checks the whole artifact.
    #[arg(long, value_name = "DIR", value_parser = parse_subdirectory)]
    pub path: Option<PathBuf>,
    /// With --prune: allow an empty artifact to delete everything applied before.
    #[arg(long)]
    pub allow_empty: bool,
    /// Wait until the applied objects are healthy (Deployments rolled out, Jobs complete …).
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits (the global --timeout bounds each API and registry call).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    pub wait_timeout: Duration,
    /// Take over fields another field manager owns instead of failing with a conflict.
    #[arg(long)]
    pub force_conflicts: bool,
    /// Apply as this service account ([NAMESPACE:]NAME; impersonation), so the apply can do
    /// only what the account may.
    #[arg(long, value_name = "[NS:]NAME")]
    pub service_account: Option<String>,
    /// Refuse, before anything is written, objects that name another namespace than
    /// --namespace, as the puller's `--no-cross-namespace` does for a tenant's syncs.
    #[arg(long)]
    pub no_cross_namespace: bool,
    /// Server-side dry run: everything is checked by the API server, nothing is written,
    /// pruned or recorded.
    #[arg(long)]
    pub dry_run: bool,
    /// Accept content without verifying a signature (explicit opt-out; ignored when trust
    /// material is given, which is then always checked).
    #[arg(long)]
    pub allow_unsigned: bool,
    #[command(flatten)]
    trust: TrustArgs,
    #[command(flatten)]
    policy: super::lint::PolicyArgs,
    /// Content-addressed cache of verified manifests and layers
    /// [default: $XDG_CACHE_HOME/tresor or ~/.cache/tresor].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    #[command(flatten)]
    decrypt: super::args::DecryptArgs,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    registry: RegistryArgs,
}

/// `--path`: a normalised directory inside the artifact (`.` is the whole artifact).
fn parse_subdirectory(text: &str) -> Result<PathBuf, String> {
    Ok(crate::artifact::subdirectory(text)?.unwrap_or_default())
}

pub(super) async fn run(args: ApplyArgs) -> Result<ExitCode, CliError> {
    let printer = Printer::new(args.format);
    let reference: Reference = args.reference.parse()?;
    let verifier = args
        .trust
        .verifier(args.allow_unsigned, "apply", &reference)?;
    let (lint_policy, mode) = args.policy.load()?;
    let decryption = args.decrypt.decryption()?;
    let source =
        Source::new(reference.clone(), None).map_err(|e| CliError::Usage(e.to_string()))?;
    let repo = Repository::open(&reference, &args.registry.options()?)?;
    let cache = super::args::open_cache(args.cache_dir.as_deref())?;

    let mut connect_options = ConnectOptions {
        kubeconfig: args.kubeconfig.clone(),
        context: args.context.clone(),
        impersonate: None,
        timeout: args.registry.timeout,
    };
    let (own_client, context_namespace) = connect(&connect_options).await?;
    let namespace = args.namespace.clone().unwrap_or(context_namespace);
    let account = args
        .service_account
        .as_deref()
        .map(|sa| match sa.split_once(':') {
            Some((ns, name)) => service_account_user(ns, name),
            None => service_account_user(&namespace, sa),
        });
    connect_options.impersonate = account.clone();
    let (client, _) = connect(&connect_options).await?;
    let name = match &args.name {
        Some(n) => n.clone(),
        None => default_name(&reference)?,
    };
    let owner = Owner {
        name,
        namespace: namespace.clone(),
    };
    let mut options = ApplyOptions::new(owner.clone());
    options.confine_to = args.no_cross_namespace.then(|| namespace.clone());
    options.target_namespace = Some(namespace);
    options.force = args.force_conflicts;
    options.dry_run = args.dry_run;
    options.path = args.path.clone().filter(|p| !p.as_os_str().is_empty());
    options.prune = args.prune;
    options.allow_empty = args.allow_empty;
    options.wait = args.wait;
    options.health_timeout = args.wait_timeout;
    options.api_timeout = args.registry.timeout;
    let resolver = Arc::new(DiscoveryResolver::new(
        client.clone(),
        args.registry.timeout,
    ));
    let cluster = Cluster::new(client, resolver.clone(), account);
    let store = InventoryStore {
        owner,
        cluster: Cluster::new(own_client, resolver, None),
    };
    let applier = KubeApplier::open(cluster, options, cache.root(), store).await?;
    let mut engine = Engine::new(
        source,
        repo,
        verifier,
        // Applied as Kubernetes objects, so linted as such whatever the artifact's
        // `dev.tresor.content` annotation says (issue 12).
        Arc::new(
            ImmutabilityPolicy::new(lint_policy, mode)
                .with_content(crate::artifact::objects::ContentMode::Kubernetes),
        ),
        cache,
        applier,
        args.limits.limits(),
    )
    .with_decryption(decryption);
    let summary = engine.reconcile(&Cancel::never()).await;
    let applier = engine.target();
    let report = applier.last_report();
    let pruned: Vec<String> = applier
        .last_prune()
        .map(|p| p.deleted.iter().map(ToString::to_string).collect())
        .unwrap_or_default();
    let objects: Vec<String> = match report {
        Some(r) => r.inventory.iter().map(ToString::to_string).collect(),
        None => Vec::new(),
    };
    let mut out = std::io::stdout().lock();
    match printer.format() {
        Format::Json => {
            let doc = json!({
                "summary": summary,
                "dry_run": args.dry_run,
                "objects": objects,
                "pruned": pruned,
            });
            let _ = writeln!(out, "{doc}");
        }
        Format::Text => {
            let digest = |d: &Option<crate::digest::Digest>| {
                d.as_ref()
                    .map_or_else(|| "nothing".to_string(), ToString::to_string)
            };
            let verb = if args.dry_run {
                "would apply"
            } else {
                "applied"
            };
            let prune_verb = if args.dry_run {
                "would prune"
            } else {
                "pruned"
            };
            let line = match summary.outcome {
                Outcome::Applied => format!(
                    "{verb} {} ({} objects, signer {})",
                    digest(&summary.digest),
                    objects.len(),
                    summary.signer.as_deref().unwrap_or("unknown")
                ),
                Outcome::Unchanged => format!("unchanged {}", digest(&summary.applied)),
                Outcome::DriftCorrected => format!(
                    "unchanged {}; restored {}",
                    digest(&summary.applied),
                    summary.restored.join(", ")
                ),
                Outcome::Rejected => format!("rejected {}", digest(&summary.digest)),
                Outcome::Failed | Outcome::Abandoned => {
                    format!("failed; cluster keeps {}", digest(&summary.applied))
                }
            };
            let _ = writeln!(out, "{line}");
            for o in &objects {
                let _ = writeln!(out, "  {o}");
            }
            for o in &pruned {
                let _ = writeln!(out, "{prune_verb} {o}");
            }
            if let Some(f) = &summary.error {
                let _ = writeln!(
                    out,
                    "error [{} at {}]: {}",
                    f.reason,
                    f.step.name(),
                    f.message
                );
            }
        }
    }
    for w in &summary.warnings {
        tracing::warn!("{w}");
    }
    Ok(match &summary.error {
        None => ExitCode::SUCCESS,
        Some(f) if matches!(f.step, Step::Verify | Step::Policy | Step::Decrypt) => {
            ExitCode::from(1)
        }
        Some(_) => ExitCode::from(2),
    })
}

/// The repository's last path component (`oci://h/acme/shop:v1` → `shop`), or the layout
/// directory's name.
fn default_name(reference: &Reference) -> Result<String, CliError> {
    let repository = reference.repository();
    let last = repository
        .trim_end_matches('/')
        .rsplit(['/', ':'])
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    if last.is_empty()
        || !last
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        return Err(CliError::Usage(format!(
            "cannot derive a name from {repository}; pass --name"
        )));
    }
    Ok(last)
}
