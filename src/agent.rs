//! The host agent loop behind `tresor sync`: run the engine every interval (jittered ±10%),
//! back off on transient failures, run `--exec` after each applied change, and record each
//! cycle's summary once — status file, metrics, log, notifications (`--notify`,
//! [`crate::notify`]) and the caller's printer. It sits above the engine, the notifications
//! and the webhook receivers it ties together (tests/layers.rs).
//!
//! Signals: SIGTERM or SIGINT during a cycle lets it finish local work or abandons it before
//! the switch (never a half switch), then the agent exits; SIGHUP, touching the
//! `--trigger-file` or an authenticated registry webhook about the followed repository
//! (`--webhook-addr`, [`crate::webhook`]) starts a cycle at once.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Notify;

use crate::reconcile::metrics::{self, Metrics};
use crate::reconcile::status::{self, Status};
use crate::reconcile::{Cancel, Engine, Failure, Outcome, Retry, Step, StepTiming, Summary};

/// How often the trigger file is looked at.
const TRIGGER_POLL: Duration = Duration::from_millis(250);
/// First retry delay after a transient failure (doubles up to the interval).
const BACKOFF_START: Duration = Duration::from_secs(1);
/// After a webhook, how often and how far apart the tag is looked at again while it still
/// points at the applied digest: a registry may notify before it moved the tag
/// (Distribution sends the manifest's push event before it writes the tag link).
const WEBHOOK_RECHECKS: u32 = 5;
const WEBHOOK_RECHECK_DELAY: Duration = Duration::from_secs(1);
/// How long an exiting agent waits for its last notifications to be delivered.
const DELIVERY_WAIT: Duration = Duration::from_secs(20);

/// Options of the agent loop.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// Time between cycles (jittered ±10%).
    pub interval: Duration,
    /// Run one cycle and return.
    pub once: bool,
    /// Shell command run (`sh -c`) after each applied change.
    pub exec: Option<String>,
    /// Longest the command may run.
    pub exec_timeout: Duration,
    /// JSON status file, rewritten atomically after each cycle.
    pub status_file: Option<PathBuf>,
    /// Address for the Prometheus endpoint (`/metrics`).
    pub metrics_addr: Option<String>,
    /// A file whose modification starts a cycle at once.
    pub trigger_file: Option<PathBuf>,
    /// Webhook receivers whose pushes to the followed repository start a cycle at once.
    pub webhook: Option<WebhookOptions>,
    /// Where each cycle that changed or failed something is told (`--notify`).
    pub notifier: Option<Arc<crate::notify::Notifier>>,
}

/// `--webhook-addr` and `--webhook-secret-file`.
#[derive(Debug, Clone)]
pub struct WebhookOptions {
    /// Where to listen, e.g. `127.0.0.1:9292` or `0.0.0.0:9292`.
    pub addr: String,
    /// The secret every request must prove (the same for every receiver kind).
    pub secret: crate::webhook::Secret,
    /// Whether the followed registry is reached over plain HTTP (its default port is 80).
    pub plain_http: bool,
}

/// The agent's side of the webhook server: a push to the followed repository wakes the
/// loop; every request is counted in the metrics.
struct AgentHooks {
    host: String,
    repository: String,
    plain_http: bool,
    wake: Arc<Notify>,
    metrics: Arc<Metrics>,
    name: String,
}

impl crate::webhook::Hooks for AgentHooks {
    async fn trigger(&self, push: &crate::webhook::Push) -> Vec<String> {
        if !crate::webhook::concerns(push, &self.host, &self.repository, self.plain_http) {
            return Vec::new();
        }
        self.wake.notify_one();
        vec![self.name.clone()]
    }

    fn counted(&self, kind: &str, code: u16) {
        self.metrics.count_webhook(kind, code);
    }
}

/// Errors starting the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The metrics address cannot be bound.
    #[error("cannot listen on --metrics-addr {addr}: {source}")]
    MetricsAddr {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// Signal handlers cannot be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    /// The webhook address cannot be bound.
    #[error("cannot listen on --webhook-addr {addr}: {source}")]
    WebhookAddr {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// Webhooks name registry repositories; an OCI layout has none to match.
    #[error("--webhook-addr needs an oci:// reference to match pushes against, not {reference}")]
    WebhookWithoutRegistry {
        /// The reference followed.
        reference: String,
    },
}

impl AgentError {
    /// Stable CamelCase reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MetricsAddr { .. } => "InvalidMetricsAddr",
            Self::Signals(_) => "SignalSetupFailed",
            Self::WebhookAddr { .. } => "InvalidWebhookAddr",
            Self::WebhookWithoutRegistry { .. } => "WebhookWithoutRegistry",
        }
    }
}

/// Runs the engine until SIGTERM/SIGINT (or after one cycle with `once`) and returns the
/// last summary. `report` is called once per cycle, after the status file and metrics were
/// updated.
pub async fn run(
    mut engine: Engine,
    options: AgentOptions,
    mut report: impl FnMut(&Summary),
) -> Result<Summary, AgentError> {
    let metrics = Arc::new(Metrics::default());
    if let Some(addr) = &options.metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr.as_str())
            .await
            .map_err(|source| AgentError::MetricsAddr {
                addr: addr.clone(),
                source,
            })?;
        if let Ok(local) = listener.local_addr() {
            tracing::info!(addr = %local, "serving metrics on /metrics");
        }
        tokio::spawn(metrics::serve(listener, metrics.clone()));
    }
    let wake = Arc::new(Notify::new());
    if let Some(webhook) = &options.webhook {
        let crate::reference::Reference::Registry(followed) = &engine.source().reference else {
            return Err(AgentError::WebhookWithoutRegistry {
                reference: engine.source().to_string(),
            });
        };
        let listener = tokio::net::TcpListener::bind(webhook.addr.as_str())
            .await
            .map_err(|source| AgentError::WebhookAddr {
                addr: webhook.addr.clone(),
                source,
            })?;
        if let Ok(local) = listener.local_addr() {
            tracing::info!(addr = %local, "serving webhooks on /hooks/<kind>");
        }
        let hooks = AgentHooks {
            host: followed.host.clone(),
            repository: followed.repository.clone(),
            plain_http: webhook.plain_http,
            wake: wake.clone(),
            metrics: metrics.clone(),
            name: engine.source().reference.repository(),
        };
        let receivers = crate::webhook::Receivers::all(webhook.secret.clone());
        tokio::spawn(crate::webhook::serve(listener, receivers, hooks));
    }
    let dir = engine.target().dir().to_path_buf();
    let mut status = Status::new(
        &engine.source().to_string(),
        &dir,
        options.status_file.as_deref().and_then(Status::load),
    );
    let mut term = signal(SignalKind::terminate()).map_err(AgentError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(AgentError::Signals)?;
    let mut hup = signal(SignalKind::hangup()).map_err(AgentError::Signals)?;
    let (cancel_tx, cancel) = Cancel::new();
    let mut trigger = options.trigger_file.as_deref().map(modified);
    let mut transient_failures = 0u32;
    let mut rechecks = 0u32;
    let mut deliveries: Vec<tokio::task::JoinHandle<()>> = Vec::new();

    loop {
        let mut stopping = false;
        let mut summary = {
            let cycle = engine.reconcile(&cancel);
            tokio::pin!(cycle);
            tokio::select! {
                s = &mut cycle => s,
                _ = term.recv() => { stopping = true; let _ = cancel_tx.send(true); cycle.await }
                _ = int.recv() => { stopping = true; let _ = cancel_tx.send(true); cycle.await }
            }
        };
        if summary.outcome == Outcome::Applied {
            if let (Some(command), Some(digest)) = (&options.exec, summary.applied.clone()) {
                let pinned = engine.source().reference.pinned(&digest);
                exec(
                    command,
                    options.exec_timeout,
                    &digest.to_string(),
                    &pinned,
                    &dir,
                    &mut summary,
                )
                .await;
            }
        }
        record(&summary, &mut status, &options, &metrics);
        if let Some(notifier) = &options.notifier {
            let origin = format!("tresor sync {}", dir.display());
            let time = status::rfc3339(SystemTime::now());
            if let Some(event) = crate::notify::Event::from_summary(&summary, &origin, &time) {
                deliveries.retain(|d| !d.is_finished());
                deliveries.extend(notifier.notify(event));
            }
        }
        report(&summary);
        if options.once || stopping {
            // The last events are not lost to the exit: their deliveries (retries
            // included) get a bounded wait.
            let all = futures_util::future::join_all(deliveries);
            if tokio::time::timeout(DELIVERY_WAIT, all).await.is_err() {
                tracing::warn!("notifications still undelivered at exit");
            }
            return Ok(summary);
        }
        let delay = match &summary.error {
            Some(f) if f.retry == Retry::Transient => {
                transient_failures = transient_failures.saturating_add(1);
                backoff(options.interval, transient_failures)
            }
            _ if summary.outcome == Outcome::Unchanged && rechecks > 0 => {
                rechecks -= 1;
                WEBHOOK_RECHECK_DELAY.min(options.interval)
            }
            _ => {
                transient_failures = 0;
                rechecks = 0;
                options.interval
            }
        };
        tokio::select! {
            () = tokio::time::sleep(jitter(delay)) => {}
            _ = hup.recv() => tracing::info!("SIGHUP: reconciling now"),
            () = wait_trigger(options.trigger_file.as_deref(), &mut trigger) => {
                tracing::info!("trigger file touched: reconciling now");
            }
            () = wake.notified() => {
                tracing::info!("webhook: reconciling now");
                rechecks = WEBHOOK_RECHECKS;
            }
            _ = term.recv() => return Ok(summary),
            _ = int.recv() => return Ok(summary),
        }
    }
}

/// Status file, metrics and log: the one place a summary is recorded.
fn record(summary: &Summary, status: &mut Status, options: &AgentOptions, metrics: &Metrics) {
    let now = SystemTime::now();
    status.record(summary, now);
    if let Some(path) = &options.status_file {
        if let Err(e) = status.write(path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the status file");
        }
    }
    metrics.observe(summary, now);
    let digest = summary.applied.as_ref().map(ToString::to_string);
    let digest = digest.as_deref().unwrap_or("none");
    match (&summary.error, summary.outcome) {
        (Some(f), _) => tracing::warn!(
            outcome = summary.outcome.name(),
            step = f.step.name(),
            reason = %f.reason,
            applied = digest,
            seconds = summary.seconds,
            "{}",
            f.message
        ),
        (None, Outcome::Unchanged) => {
            tracing::debug!(applied = digest, seconds = summary.seconds, "unchanged")
        }
        (None, outcome) => tracing::info!(
            outcome = outcome.name(),
            applied = digest,
            restored = summary.restored.len(),
            seconds = summary.seconds,
            "reconciled"
        ),
    }
    for w in &summary.warnings {
        tracing::warn!("{w}");
    }
}

/// Runs the `--exec` command; its outcome goes into the summary (as the exec step, and as
/// the error when it fails — the applied version stays).
async fn exec(
    command: &str,
    timeout: Duration,
    digest: &str,
    reference: &str,
    dir: &Path,
    summary: &mut Summary,
) {
    let since = Instant::now();
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .env("TRESOR_DIGEST", digest)
        .env("TRESOR_REFERENCE", reference)
        .env("TRESOR_DIR", dir)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    // The command's output is diagnostics: both streams go to tresor's stderr.
    if let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() {
        cmd.stdout(Stdio::from(fd));
    }
    let result = match cmd.spawn() {
        Err(e) => Err(format!("cannot start `sh -c {command:?}`: {e}")),
        Ok(mut child) => match tokio::time::timeout(timeout, child.wait()).await {
            Err(_) => {
                let _ = child.kill().await;
                Err(format!(
                    "--exec {command:?} did not finish within {}; it was killed",
                    humantime::format_duration(timeout)
                ))
            }
            Ok(Err(e)) => Err(format!("waiting for --exec {command:?} failed: {e}")),
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => Err(format!("--exec {command:?} failed: {status}")),
        },
    };
    let seconds = since.elapsed().as_secs_f64();
    summary.steps.push(StepTiming {
        step: Step::Exec,
        seconds,
        ok: result.is_ok(),
    });
    summary.seconds += seconds;
    if let Err(message) = result {
        summary.error = Some(Failure {
            step: Step::Exec,
            reason: "ExecFailed".to_string(),
            message,
            retry: Retry::Stalled,
            digest: summary.applied.clone(),
        });
    }
}

/// The delay after `failures` transient failures in a row: 1 s, 2 s, 4 s … up to `interval`.
fn backoff(interval: Duration, failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    BACKOFF_START.saturating_mul(1u32 << exp).min(interval)
}

/// ±10% random jitter, so many agents do not poll a registry in lockstep.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.9 + fastrand::f64() * 0.2)
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Returns when the trigger file's modification time changes (never without a file).
async fn wait_trigger(path: Option<&Path>, last: &mut Option<Option<SystemTime>>) {
    let Some(path) = path else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(TRIGGER_POLL).await;
        let now = modified(path);
        if last.as_ref() != Some(&now) {
            *last = Some(now);
            if now.is_some() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_interval() {
        let i = Duration::from_secs(60);
        assert_eq!(backoff(i, 1), Duration::from_secs(1));
        assert_eq!(backoff(i, 3), Duration::from_secs(4));
        assert_eq!(backoff(i, 30), i);
        assert_eq!(
            backoff(Duration::from_millis(500), 1),
            Duration::from_millis(500)
        );
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..100 {
            let j = jitter(Duration::from_secs(10));
            assert!(
                j >= Duration::from_secs(9) && j <= Duration::from_secs(11),
                "{j:?}"
            );
        }
    }
}
