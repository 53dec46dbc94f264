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
    failures: BTreeMap<String, u64>,
    outcomes: BTreeMap<&'static str, u64>,
    restored: u64,
    corrupted: u64,
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
            m.last_applied = now.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs_f64());
        }
        m.restored += summary.restored.len() as u64;
        m.corrupted += summary.cache_corrupted.len() as u64;
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
        out
    }
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
