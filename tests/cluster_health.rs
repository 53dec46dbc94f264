//! Issue 12, point 8: the puller's `/readyz`, `/healthz` and `/metrics` tell the truth. The
//! puller runs as a process against the real API server of `scripts/cluster.sh` (see
//! tests/common/cluster.rs); the rules themselves are unit-tested in src/puller/health.rs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::{Duration, Instant};

use common::cluster::{config_map, http_get, unsigned_spec, PullerProcess, Tenant};
use common::TestRegistry;

/// A kubeconfig whose server is a port nothing listens on.
fn unreachable_kubeconfig(dir: &std::path::Path) -> std::path::PathBuf {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let path = dir.join("unreachable.kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:{port}\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: none\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\n"
        ),
    )
    .unwrap();
    path
}

/// Polls `GET addr/path` until it answers `code`, for at most `within`; returns the body.
async fn wait_for(
    puller: &PullerProcess,
    addr: &str,
    path: &str,
    code: u16,
    within: Duration,
) -> String {
    let deadline = Instant::now() + within;
    loop {
        let (got, body) = http_get(addr, path);
        if got == code {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{path} answered {got} {body:?}, not {code}, within {within:?}; log:\n{}",
            puller.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// With the API server unreachable the puller stays up and live, but is not Ready: its
/// watches never listed.
#[tokio::test]
async fn readyz_is_not_ready_while_the_api_server_is_unreachable() {
    let tenant = Tenant::new("health-unreachable").await;
    let kubeconfig = unreachable_kubeconfig(tenant.work.path());
    let mut puller = tenant.cluster.puller_as(&kubeconfig, &tenant.ns, &[]);
    let (health, _) = puller.addrs();
    for _ in 0..15 {
        let (code, body) = http_get(&health, "/readyz");
        assert_eq!(code, 503, "/readyz: {body}\n{}", puller.log_tail());
        assert!(body.starts_with("SyncsNotListed: "), "{body}");
        assert_eq!(http_get(&health, "/healthz").0, 200);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(puller.alive(), "{}", puller.log_tail());
}

/// Ready (200, role `single`) once the ArtifactSync and trust watches have synced.
#[tokio::test]
async fn readyz_is_ready_once_the_watches_synced() {
    let tenant = Tenant::new("health-ready").await;
    let puller = tenant.puller(&[]);
    let (health, _) = puller.addrs();
    let body = wait_for(&puller, &health, "/readyz", 200, Duration::from_secs(30)).await;
    assert_eq!(body, "ok: single\n");
    assert_eq!(http_get(&health, "/healthz"), (200, "ok\n".to_string()));
    assert_eq!(http_get(&health, "/nothing").0, 404);
}

/// After a sync applied, `/metrics` has the reconcile metric families with real values,
/// and the last apply time of that sync under its namespace and name; a sync that fails
/// before its engine runs (its pull Secret is missing) is counted as failing, by name.
#[tokio::test]
async fn metrics_count_the_cycles_and_name_the_applied_sync() {
    let registry = TestRegistry::plain();
    let tenant = Tenant::new("health-metrics").await;
    let (repo, _, puller) = tenant
        .applied_unsigned(&registry, &[("cm.yaml", &config_map("m", "one"))], "1h")
        .await;
    let mut spec = unsigned_spec(&repo, "v", "1h");
    spec["pullSecretRef"] = serde_json::json!({"name": "missing"});
    tenant.create_sync("broken", spec).await;
    let (_, reason, _) = tenant
        .wait_not_ready(&puller, "broken", Duration::from_secs(30), "refused")
        .await;
    assert_eq!(reason, "SecretNotFound");
    let (_, metrics) = puller.addrs();
    let (code, text) = http_get(&metrics, "/metrics");
    assert_eq!(code, 200, "{text}");
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
    };
    for family in [
        "# TYPE tresor_reconcile_duration_seconds histogram",
        "# TYPE tresor_reconciles_total counter",
        "# TYPE tresor_reconcile_failures_total counter",
        "# TYPE tresor_last_applied_timestamp_seconds gauge",
        "# TYPE tresor_sync_failing gauge",
    ] {
        assert!(text.contains(family), "{family} missing:\n{text}");
    }
    assert!(value("tresor_reconcile_duration_seconds_count") >= 1.0);
    assert!(value("tresor_reconciles_total{outcome=\"Applied\"}") >= 1.0);
    let applied_at = value(&format!(
        "tresor_last_applied_timestamp_seconds{{namespace=\"{}\",name=\"app\"}}",
        tenant.ns
    ));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        applied_at > now - 300.0 && applied_at <= now + 1.0,
        "{applied_at}"
    );
    let failing = value(&format!(
        "tresor_sync_failing{{namespace=\"{}\",name=\"app\"}}",
        tenant.ns
    ));
    assert_eq!(failing, 0.0);
    let failing = value(&format!(
        "tresor_sync_failing{{namespace=\"{}\",name=\"broken\"}}",
        tenant.ns
    ));
    assert_eq!(failing, 1.0);
    assert!(value("tresor_reconcile_failures_total{reason=\"SecretNotFound\"}") >= 1.0);
}
