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

/// Every replica receives webhooks (the Service in front reaches any of them): a standby
/// passes a push on to the leader through the sync's `tresor.dev/reconcile-requested-at`
/// annotation. Here the standby's Lease (in the tenant's namespace, apart from other
/// tests) is held by someone else for an hour, and a puller without leader election
/// reconciles the tenant's syncs.
#[tokio::test]
async fn a_standby_passes_a_webhook_on_to_the_leader() {
    let t = Tenant::new("webhook-standby").await;
    let registry = common::TestRegistry::plain();
    use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
    let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
    kube::Api::<Lease>::namespaced(t.client.clone(), &t.ns)
        .create(
            &kube::api::PostParams::default(),
            &Lease {
                metadata: ObjectMeta {
                    name: Some("tresor-puller".into()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some("someone-else".into()),
                    lease_duration_seconds: Some(3600),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    ..LeaseSpec::default()
                }),
            },
        )
        .await
        .unwrap();
    let port = free_port();
    let secret_file = t.work.path().join("webhook-secret");
    std::fs::write(&secret_file, SECRET).unwrap();
    let standby = t.cluster.puller_leasing_in(
        &t.ns,
        &t.ns,
        &[
            "--leader-elect",
            "--webhook-addr",
            &format!("127.0.0.1:{port}"),
            "--webhook-secret-file",
            secret_file.to_str().unwrap(),
        ],
    );
    let leader = t.puller(&[]);
    let (repo, d1) = t.push(&registry, None, "v", &[("a.yaml", &config_map("a", "one"))]);
    t.create_sync("app", unsigned_spec(&repo, "v", "10m")).await;
    t.wait_sync(&leader, "app", SECONDS_60, "applied", |s| ready_at(s, &d1))
        .await;
    let (_, d2) = t.push(
        &registry,
        Some(&repo),
        "v",
        &[("a.yaml", &config_map("a", "two"))],
    );

    let pushed = Instant::now();
    let response = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/hooks/generic"))
        .header("Authorization", format!("Bearer {SECRET}"))
        .body(format!(r#"{{"repository":"{repo}","tag":"v"}}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        answer["triggered"],
        serde_json::json!([format!("{}/app", t.ns)])
    );
    let sync = t
        .wait_sync(
            &leader,
            "app",
            std::time::Duration::from_secs(15),
            "applied after the webhook",
            |s| ready_at(s, &d2),
        )
        .await;
    eprintln!("push → applied through a standby: {:?}", pushed.elapsed());
    assert!(
        sync.metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key("tresor.dev/reconcile-requested-at")),
        "the standby asked through the annotation"
    );
    assert!(
        !standby.logged("verified"),
        "the standby reconciled:\n{}",
        standby.log_tail()
    );
}
