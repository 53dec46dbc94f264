//! `tresor-puller`: the in-cluster controller reconciling `ArtifactSync`s (see `tresor::puller`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tresor::puller::{bind, run_elected, serve_health, Context, LeaseLock, PullerOptions};

// The system allocator, unlike `tresor`'s mimalloc: the puller is long-running and idle
// most of the time, and mimalloc's retained pages cost ~20 MiB of idle RSS with 100
// ArtifactSyncs (scripts/bench-puller.sh: 52 MiB against 31 MiB), more than its faster
// policy lint of a new revision is worth.

/// Reconciles ArtifactSyncs: pulls signed OCI artifacts and applies them to the cluster.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address of Prometheus `/metrics` (`:PORT`: every IPv6 and IPv4 address).
    #[arg(long, default_value = ":8080")]
    metrics_addr: String,
    /// Address of `/healthz` (fails when reconciles stall) and `/readyz` (fails until the
    /// watches have synced); see docs/puller-endpoints.md.
    #[arg(long, default_value = ":9440")]
    health_addr: String,
    /// Cache of verified artifacts.
    #[arg(long, default_value = "/var/cache/tresor")]
    cache_dir: PathBuf,
    /// Leader election with the Lease `tresor-puller` in POD_NAMESPACE (identity: POD_NAME or
    /// HOSTNAME), so only one replica reconciles.
    #[arg(long)]
    leader_elect: bool,
    /// `json` or `text`.
    #[arg(long, default_value = "json")]
    log_format: String,
    /// ArtifactSyncs reconciled at once.
    #[arg(long, default_value_t = 4)]
    concurrency: u16,
    /// Timeout of every API and registry call; a registry request end to end, body included
    /// (an ArtifactSync's shorter spec.timeout lowers it for that sync).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// How often each ArtifactSync's drift check reads every applied object with a GET
    /// instead of trusting the watch caches (the backstop for missed watch events).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    full_resync: Duration,
    /// Do not watch applied objects: drift is then found by the cycles alone (every
    /// `spec.interval`, one GET per applied object).
    #[arg(long)]
    no_watch_drift: bool,
    /// Reconcile only the ArtifactSyncs with these labels (a Kubernetes label selector, e.g.
    /// `shard=a`); default: all of them.
    #[arg(long)]
    watch_label_selector: Option<String>,
    /// `/healthz` fails when reconciles are running and none finished for this long; keep it
    /// above the longest `spec.timeout`.
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
    stall_timeout: Duration,
    /// ServiceAccount, in each ArtifactSync's own namespace, that syncs without
    /// `spec.serviceAccountName` apply, prune and delete as (impersonated); without it
    /// they use the puller's own identity. deploy/ passes `tresor-tenant`.
    #[arg(long, value_name = "NAME")]
    default_service_account: Option<String>,
    /// Apply each ArtifactSync only into its own namespace: another `spec.targetNamespace`
    /// or an object naming another namespace is refused (Stalled, `CrossNamespace`).
    #[arg(long)]
    no_cross_namespace: bool,
    /// Receive registry webhooks on ADDR (`:PORT`: every address) at `/hooks/<kind>`: a
    /// push reconciles the ArtifactSyncs following that repository at once
    /// (docs/webhooks.md). Needs --webhook-secret-file.
    #[arg(long, value_name = "ADDR", requires = "webhook_secret_file")]
    webhook_addr: Option<String>,
    /// The receivers' secret (a mounted Secret's file; HMAC key or bearer token).
    #[arg(long, value_name = "FILE", requires = "webhook_addr")]
    webhook_secret_file: Option<PathBuf>,
    /// More logging (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tresor::telemetry::init(args.verbose.max(1), args.log_format != "text");
    match start(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "tresor-puller failed");
            ExitCode::from(2)
        }
    }
}

async fn start(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let health = bind(&args.health_addr).await?;
    let metrics = bind(&args.metrics_addr).await?;
    tracing::info!(health = %health.local_addr()?, metrics = %metrics.local_addr()?, "serving /healthz /readyz and /metrics");
    tracing::info!(
        default_service_account = args
            .default_service_account
            .as_deref()
            .unwrap_or("(none: the puller's own identity)"),
        no_cross_namespace = args.no_cross_namespace,
        "tenancy"
    );
    let webhook_secret = match &args.webhook_secret_file {
        Some(path) => Some(tresor::webhook::Secret::read(path)?),
        None => None,
    };
    let webhooks = match &args.webhook_addr {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let config = kube::Config::infer().await?;
    let options = PullerOptions {
        cache_dir: args.cache_dir.clone(),
        concurrency: args.concurrency,
        call_timeout: args.timeout,
        watch_drift: !args.no_watch_drift,
        full_resync: args.full_resync,
        watch_label_selector: args.watch_label_selector,
        stall_timeout: args.stall_timeout,
        default_service_account: args.default_service_account,
        no_cross_namespace: args.no_cross_namespace,
        webhook_secret,
        ..PullerOptions::default()
    };
    let ctx = Arc::new(Context::new(config, options)?);
    if let Some(listener) = webhooks {
        tracing::info!(addr = %listener.local_addr()?, "serving webhooks on /hooks/<kind>");
        ctx.receive_webhooks(listener);
    }
    tokio::spawn(serve_health(health, ctx.clone()));
    tokio::spawn(tresor::reconcile::metrics::serve(metrics, ctx.metrics()));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let lease = args
        .leader_elect
        .then(|| LeaseLock::from_env(ctx.client().clone(), args.timeout));
    run_elected(ctx, lease, async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    })
    .await?;
    Ok(())
}
