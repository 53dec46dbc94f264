//! Prometheus metrics of the reconcile loop, served as text on `GET /metrics`.
//!
//! A tiny HTTP/1.1 responder on tokio (no framework): it reads at most 8 KiB of request
//! head within 5 s, answers `/metrics` (200) or anything else (404), and closes the
//! connection; at most 16 connections are served at once.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::{Outcome, Summary};

/// Upper bounds (seconds) of the reconcile duration histogram.
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const MAX_REQUEST_HEAD: usize = 8 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_CONNECTIONS: usize = 16;

#[derive(Debug, Default)]
struct Inner {
    bucket_counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
    last_applied: Option<f64>,
    /// By rendered label set (`namespace="a",name="b"`), for one metrics endpoint serving
    /// several syncs.
    last_applied_by: BTreeMap<String, f64>,
    /// Whether the last cycle that got to an end failed or was refused (the host agent's, and
    /// by label set the puller's syncs').
    failing: Option<bool>,
    failing_by: BTreeMap<String, bool>,
    failures: BTreeMap<String, u64>,
    outcomes: BTreeMap<&'static str, u64>,
    restored: u64,
    corrupted: u64,
    /// Webhook requests by (receiver kind, HTTP status).
    webhooks: BTreeMap<(String, u16), u64>,
}

/// The agent's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one cycle.
    pub fn observe(&self, summary: &Summary, now: SystemTime) {
        self.observe_labelled(summary, now, &[]);
    }

    /// Counts one cycle of the sync named by `labels` (e.g. `[("namespace", "a"), ("name",
    /// "b")]`): the totals as [`Self::observe`], and the last apply time and whether the sync
    /// is failing per label set. Without labels those are the unlabelled series.
    pub fn observe_labelled(&self, summary: &Summary, now: SystemTime, labels: &[(&str, &str)]) {
        let mut m = self.lock();
        let seconds = summary.seconds;
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                if let Some(c) = m.bucket_counts.get_mut(i) {
                    *c += 1;
                }
            }
        }
        m.sum += seconds;
        m.count += 1;
        *m.outcomes.entry(summary.outcome.name()).or_default() += 1;
        if let Some(f) = &summary.error {
            *m.failures.entry(f.reason.clone()).or_default() += 1;
        }
        if summary.outcome == Outcome::Applied {
            let at = now.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs_f64());
            match (labels.is_empty(), at) {
                (true, _) => m.last_applied = at,
                (false, Some(at)) => {
                    m.last_applied_by.insert(label_set(labels), at);
                }
                (false, None) => {}
            }
        }
        // A cycle abandoned at shutdown says nothing about the sync's health.
        let failing = match summary.outcome {
            Outcome::Rejected | Outcome::Failed => Some(true),
            Outcome::Applied | Outcome::Unchanged | Outcome::DriftCorrected => Some(false),
            Outcome::Abandoned => None,
        };
        if let Some(failing) = failing {
            if labels.is_empty() {
                m.failing = Some(failing);
            } else {
                m.failing_by.insert(label_set(labels), failing);
            }
        }
        m.restored += summary.restored.len() as u64;
        m.corrupted += summary.cache_corrupted.len() as u64;
    }

    /// Counts a cycle of the sync named by `labels` that failed before the engine ran (an
    /// invalid spec, a missing Secret, trust that cannot be read): a failure with `reason`,
    /// and the sync is failing. Its duration is not observed: no engine cycle ran.
    pub fn observe_failure(&self, reason: &str, labels: &[(&str, &str)]) {
        let mut m = self.lock();
        *m.failures.entry(reason.to_string()).or_default() += 1;
        *m.outcomes.entry(Outcome::Failed.name()).or_default() += 1;
        if labels.is_empty() {
            m.failing = Some(true);
        } else {
            m.failing_by.insert(label_set(labels), true);
        }
    }

    /// Drops the per-sync series of `labels` (the sync is gone).
    pub fn forget(&self, labels: &[(&str, &str)]) {
        let mut m = self.lock();
        let labels = label_set(labels);
        m.last_applied_by.remove(&labels);
        m.failing_by.remove(&labels);
    }

    /// Counts one webhook request of receiver `kind` answered with `code` (401: not
    /// authenticated, 429: rate-limited, 202: accepted …).
    pub fn count_webhook(&self, kind: &str, code: u16) {
        *self
            .lock()
            .webhooks
            .entry((kind.to_string(), code))
            .or_default() += 1;
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let m = self.lock();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP tresor_reconcile_duration_seconds Duration of reconcile cycles.\n\
             # TYPE tresor_reconcile_duration_seconds histogram"
        );
        for (bound, count) in BUCKETS.iter().zip(m.bucket_counts.iter()) {
            let _ = writeln!(
                out,
                "tresor_reconcile_duration_seconds_bucket{{le=\"{bound}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "tresor_reconcile_duration_seconds_bucket{{le=\"+Inf\"}} {}\n\
             tresor_reconcile_duration_seconds_sum {}\n\
             tresor_reconcile_duration_seconds_count {}",
            m.count, m.sum, m.count
        );
        let _ = writeln!(
            out,
            "# HELP tresor_reconciles_total Reconcile cycles by outcome.\n\
             # TYPE tresor_reconciles_total counter"
        );
        for (outcome, n) in &m.outcomes {
            let _ = writeln!(out, "tresor_reconciles_total{{outcome=\"{outcome}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP tresor_reconcile_failures_total Failed reconcile cycles by reason.\n\
             # TYPE tresor_reconcile_failures_total counter"
        );
        for (reason, n) in &m.failures {
            // Reasons are CamelCase identifiers; nothing to escape.
            let _ = writeln!(
                out,
                "tresor_reconcile_failures_total{{reason=\"{reason}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP tresor_last_applied_timestamp_seconds When a new version was last applied \
             (Unix time).\n# TYPE tresor_last_applied_timestamp_seconds gauge"
        );
        if let Some(t) = m.last_applied {
            let _ = writeln!(out, "tresor_last_applied_timestamp_seconds {t}");
        }
        for (labels, t) in &m.last_applied_by {
            let _ = writeln!(out, "tresor_last_applied_timestamp_seconds{{{labels}}} {t}");
        }
        let _ = writeln!(
            out,
            "# HELP tresor_sync_failing 1 when the last cycle failed or refused a version (the \
             last good one stays), else 0.\n# TYPE tresor_sync_failing gauge"
        );
        if let Some(failing) = m.failing {
            let _ = writeln!(out, "tresor_sync_failing {}", u8::from(failing));
        }
        for (labels, failing) in &m.failing_by {
            let _ = writeln!(
                out,
                "tresor_sync_failing{{{labels}}} {}",
                u8::from(*failing)
            );
        }
        let _ = writeln!(
            out,
            "# HELP tresor_drift_restored_files_total Managed files restored after drift.\n\
             # TYPE tresor_drift_restored_files_total counter\n\
             tresor_drift_restored_files_total {}\n\
             # HELP tresor_cache_corrupted_total Corrupted cache entries detected.\n\
             # TYPE tresor_cache_corrupted_total counter\n\
             tresor_cache_corrupted_total {}",
            m.restored, m.corrupted
        );
        if !m.webhooks.is_empty() {
            let _ = writeln!(
                out,
                "# HELP tresor_webhook_requests_total Webhook requests by receiver and HTTP \
                 status (401: not authenticated).\n# TYPE tresor_webhook_requests_total counter"
            );
            // Kinds are the receivers' fixed names (or "unknown"): nothing to escape.
            for ((kind, code), n) in &m.webhooks {
                let _ = writeln!(
                    out,
                    "tresor_webhook_requests_total{{kind=\"{kind}\",code=\"{code}\"}} {n}"
                );
            }
        }
        out
    }
}

/// `k1="v1",k2="v2"` with the values escaped as the text format wants.
fn label_set(labels: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (key, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let value = value
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let _ = write!(out, "{key}=\"{value}\"");
    }
    out
}

/// Serves `metrics` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            continue; // over the limit: drop the connection
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, answer(socket, &metrics)).await;
            drop(permit);
        });
    }
}

async fn answer(mut socket: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST_HEAD {
        let n = socket.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(buf.get(..n).unwrap_or_default());
    }
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next(), parts.next());
    let (status, body) = match (method, path.map(|p| p.split('?').next().unwrap_or(p))) {
        (Some("GET"), Some("/metrics")) => ("200 OK", metrics.render()),
        (Some("GET"), Some("/healthz")) => ("200 OK", "ok\n".to_string()),
        _ => ("404 Not Found", "not found\n".to_string()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4; charset=utf-8\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(response.as_bytes()).await?;
    socket.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::{Failure, Retry, Step};

    fn applied() -> Summary {
        Summary {
            seconds: 0.2,
            ..Summary::for_test(Outcome::Applied, None)
        }
    }

    #[test]
    fn last_applied_is_kept_per_sync_and_forgotten_with_it() {
        let metrics = Metrics::default();
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let a = [("namespace", "team-a"), ("name", "app")];
        let b = [("namespace", "team-b"), ("name", "we\"ird")];
        metrics.observe_labelled(&applied(), at, &a);
        metrics.observe_labelled(&applied(), at + Duration::from_secs(5), &b);
        let text = metrics.render();
        assert!(text.contains(
            "tresor_last_applied_timestamp_seconds{namespace=\"team-a\",name=\"app\"} 1700000000\n"
        ));
        assert!(text.contains(
            "tresor_last_applied_timestamp_seconds{namespace=\"team-b\",name=\"we\\\"ird\"} 1700000005\n"
        ));
        assert!(text.contains("tresor_reconciles_total{outcome=\"Applied\"} 2\n"));
        assert!(text.contains("tresor_reconcile_duration_seconds_bucket{le=\"0.25\"} 2\n"));
        // No unlabelled series when every cycle named its sync.
        assert!(!text.contains("tresor_last_applied_timestamp_seconds 1"));
        metrics.forget(&a);
        assert!(!metrics.render().contains("team-a"));
    }

    fn failure(step: Step, reason: &str, retry: Retry) -> Failure {
        Failure {
            step,
            reason: reason.into(),
            message: "test".into(),
            retry,
            digest: None,
        }
    }

    #[test]
    fn a_sync_is_failing_from_a_failed_or_refused_cycle_until_one_succeeds() {
        let metrics = Metrics::default();
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let a = [("namespace", "team-a"), ("name", "app")];
        let b = [("namespace", "team-b"), ("name", "web")];
        let failed = Summary::for_test(
            Outcome::Failed,
            Some(failure(
                Step::Resolve,
                "RegistryUnreachable",
                Retry::Transient,
            )),
        );
        let rejected = Summary::for_test(
            Outcome::Rejected,
            Some(failure(Step::Verify, "SignatureInvalid", Retry::Stalled)),
        );
        metrics.observe_labelled(&applied(), now, &a);
        metrics.observe_labelled(&failed, now, &b);
        let text = metrics.render();
        assert!(text.contains("# TYPE tresor_sync_failing gauge\n"));
        assert!(text.contains("tresor_sync_failing{namespace=\"team-a\",name=\"app\"} 0\n"));
        assert!(text.contains("tresor_sync_failing{namespace=\"team-b\",name=\"web\"} 1\n"));
        // Shutting down changes nothing; a refused version fails; an unchanged cycle heals.
        metrics.observe_labelled(&Summary::for_test(Outcome::Abandoned, None), now, &b);
        metrics.observe_labelled(&rejected, now, &a);
        let text = metrics.render();
        assert!(text.contains("tresor_sync_failing{namespace=\"team-a\",name=\"app\"} 1\n"));
        assert!(text.contains("tresor_sync_failing{namespace=\"team-b\",name=\"web\"} 1\n"));
        metrics.observe_labelled(&Summary::for_test(Outcome::Unchanged, None), now, &b);
        assert!(metrics
            .render()
            .contains("tresor_sync_failing{namespace=\"team-b\",name=\"web\"} 0\n"));
        // A cycle that failed before the engine ran (a missing Secret) counts too.
        metrics.observe_failure("SecretNotFound", &b);
        let text = metrics.render();
        assert!(text.contains("tresor_sync_failing{namespace=\"team-b\",name=\"web\"} 1\n"));
        assert!(text.contains("tresor_reconcile_failures_total{reason=\"SecretNotFound\"} 1\n"));
        assert!(text.contains("tresor_reconciles_total{outcome=\"Failed\"} 2\n"));
        metrics.forget(&b);
        assert!(!metrics.render().contains("team-b"));
        // The host agent's series has no labels.
        let host = Metrics::default();
        host.observe(&failed, now);
        assert!(host.render().contains("\ntresor_sync_failing 1\n"));
    }
}
