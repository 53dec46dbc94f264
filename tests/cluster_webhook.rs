//! Registry webhooks in the cluster (issue 14): a real Distribution registry notifies
//! `tresor-puller --webhook-addr`, which reconciles the ArtifactSync following the pushed
//! repository at once — at interval 10m — and leaves the others alone.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Instant;

use common::cluster::{config_map, ready_at, unsigned_spec, Tenant, SECONDS_60};
use common::own_registry::{free_port, OwnRegistry};

const SECRET: &str = "cluster-webhook-secret";

#[tokio::test]
async fn a_distribution_notification_reconciles_the_following_sync_at_once() {
    let t = Tenant::new("webhook").await;
    let port = free_port();
    let own = OwnRegistry::with_config(&format!(
        "notifications:\n  endpoints:\n    - name: tresor-puller\n      url: http://127.0.0.1:{port}/hooks/distribution\n\
         \x20     headers:\n        Authorization: [Bearer {SECRET}]\n      timeout: 2s\n      threshold: 3\n      backoff: 1s\n"
    ));
    let registry = own.registry();
    let secret_file = t.work.path().join("webhook-secret");
    std::fs::write(&secret_file, SECRET).unwrap();
    let (repo, d1) = t.push(&registry, None, "v", &[("a.yaml", &config_map("a", "one"))]);
    let (other, o1) = t.push(&registry, None, "v", &[("b.yaml", &config_map("b", "one"))]);
    let puller = t.puller(&[
        "--webhook-addr",
        &format!("127.0.0.1:{port}"),
        "--webhook-secret-file",
        secret_file.to_str().unwrap(),
    ]);
    t.create_sync("app", unsigned_spec(&repo, "v", "10m")).await;
    t.create_sync("other", unsigned_spec(&other, "v", "10m"))
        .await;
    t.wait_sync(&puller, "app", SECONDS_60, "applied", |s| ready_at(s, &d1))
        .await;
    t.wait_sync(&puller, "other", SECONDS_60, "applied", |s| {
        ready_at(s, &o1)
    })
    .await;
    assert!(puller.logged("serving webhooks"), "{}", puller.log_tail());

    let (_, d2) = t.push(
        &registry,
        Some(&repo),
        "v",
        &[("a.yaml", &config_map("a", "two"))],
    );
    let pushed = Instant::now();
    t.wait_sync(
        &puller,
        "app",
        std::time::Duration::from_secs(15),
        "applied after the webhook",
        |s| ready_at(s, &d2),
    )
    .await;
    eprintln!(
        "push → applied through a Distribution notification: {:?}",
        pushed.elapsed()
    );
    assert_eq!(t.config_map("a").await.unwrap()["data"]["k"], "two");
    // The registry's events named only `app`'s repository: `other` was not triggered.
    assert!(puller.logged("syncs=1"), "{}", puller.log_tail());
    assert!(!puller.logged("syncs=2"), "{}", puller.log_tail());
}
