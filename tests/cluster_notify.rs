//! The puller's notifications (issue 14, `spec.notify`) on the real API server: events
//! derived from the status, the HMAC key read from a Secret in the sync's namespace, each
//! change sent once, and an event the puller could not deliver before it stopped sent by
//! the next puller.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::cluster::{
    config_map, eventually, ready_at, unsigned_spec, Tenant, SECONDS_30, SECONDS_60,
};
use common::own_registry::free_port;
use common::recording_server::{respond, Recorded, RecordingServer};
use common::TestRegistry;
use serde_json::{json, Value};
use tresor::api::ArtifactSync;
use tresor::webhook::Secret;

const HMAC_KEY: &str = "cluster-notify-secret";

fn body(r: &Recorded) -> Value {
    serde_json::from_slice(&r.body).unwrap()
}

fn notification(sync: &ArtifactSync) -> Value {
    serde_json::to_value(&sync.status.as_ref().unwrap().notification).unwrap()
}

/// A Secret `hooks` in the tenant's namespace with the HMAC key (and `address`, if given).
fn hooks_secret(t: &Tenant, address: Option<&str>) {
    let mut args = vec![
        "create".to_string(),
        "secret".into(),
        "generic".into(),
        "hooks".into(),
        "-n".into(),
        t.ns.clone(),
        format!("--from-literal=secret={HMAC_KEY}"),
    ];
    if let Some(a) = address {
        args.push(format!("--from-literal=address={a}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    t.cluster.kubectl_ok(&args);
}

#[tokio::test]
async fn applied_and_rejected_go_to_the_targets_once_each_signed_with_the_secret() {
    let t = Tenant::new("notify").await;
    let registry = TestRegistry::plain();
    let receiver = RecordingServer::start(|_, _| respond(200, &[], Vec::new()));
    let events = RecordingServer::start(|_, _| respond(202, &[], Vec::new()));
    hooks_secret(&t, Some(&receiver.url("/tresor")));
    let (repo, d1) = t.push(&registry, None, "v", &[("a.yaml", &config_map("a", "one"))]);
    let puller = t.puller(&[]);
    let mut spec = unsigned_spec(&repo, "v", "2s");
    spec["notify"] = json!([
        {"provider": "generic", "secretRef": {"name": "hooks"}},
        {"provider": "cloudevents", "address": events.url("/ce")},
    ]);
    t.create_sync("app", spec).await;
    t.wait_sync(&puller, "app", SECONDS_60, "applied and notified", |s| {
        ready_at(s, &d1) && notification(s)["delivered"] == true
    })
    .await;

    let seen = receiver.seen();
    assert_eq!(seen.len(), 1, "one event: {seen:?}");
    let applied = body(&seen[0]);
    assert_eq!(seen[0].uri, "/tresor", "the address from the Secret");
    assert_eq!(applied["reason"], "Applied");
    assert_eq!(applied["severity"], "info");
    assert_eq!(applied["digest"], d1);
    assert_eq!(applied["applied"], d1);
    assert_eq!(applied["origin"], format!("ArtifactSync {}/app", t.ns));
    assert_eq!(applied["reference"], format!("{repo}:v"));
    let key = Secret::new(HMAC_KEY.as_bytes()).unwrap();
    assert_eq!(
        seen[0].header("x-signature"),
        Some(key.sign(&seen[0].body).as_str()),
        "signed with the Secret's key"
    );
    let ce = events.seen();
    assert_eq!(ce.len(), 1, "{ce:?}");
    assert_eq!(body(&ce[0])["type"], "dev.tresor.applied");
    assert_eq!(
        body(&ce[0])["id"],
        applied["id"],
        "the same event everywhere"
    );

    // A version the immutability policy refuses: one Rejected event, however many cycles
    // refuse it again.
    let unpinned = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  \
        selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    \
        spec:\n      containers:\n      - name: web\n        image: nginx:latest\n";
    let tree = t.work.path().join("unpinned");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("web.yaml"), unpinned).unwrap();
    let pushed = common::json_of(registry.tresor(&[
        "push",
        tree.to_str().unwrap(),
        &format!("{repo}:v"),
        "--overwrite",
        "--policy",
        "warn",
        "--format",
        "json",
    ]));
    let d2 = pushed["digest"].as_str().unwrap().to_string();
    let sync = t
        .wait_sync(&puller, "app", SECONDS_60, "rejected and notified", |s| {
            notification(s)["digest"] == d2 && notification(s)["delivered"] == true
        })
        .await;
    assert_eq!(notification(&sync)["reason"], "Rejected");
    // Six more cycles at 2 s refuse the same digest for the same reason.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let seen = receiver.seen();
    assert_eq!(seen.len(), 2, "Applied, then Rejected once: {seen:?}");
    let rejected = body(&seen[1]);
    assert_eq!(rejected["reason"], "Rejected");
    assert_eq!(rejected["severity"], "error");
    assert_eq!(rejected["digest"], d2);
    assert_eq!(rejected["applied"], d1, "the last good version stays");
    assert!(
        rejected["message"]
            .as_str()
            .unwrap()
            .contains("nginx:latest"),
        "{rejected}"
    );
    assert_eq!(events.seen().len(), 2);
}

#[tokio::test]
async fn an_event_not_delivered_before_a_restart_is_sent_by_the_next_puller() {
    let t = Tenant::new("notify-restart").await;
    let registry = TestRegistry::plain();
    hooks_secret(&t, None);
    // Nobody listens there yet.
    let addr = format!("127.0.0.1:{}", free_port());
    let (repo, d1) = t.push(&registry, None, "v", &[("a.yaml", &config_map("a", "one"))]);
    let mut puller = t.puller(&[]);
    let mut spec = unsigned_spec(&repo, "v", "1h");
    spec["notify"] = json!([{
        "provider": "generic",
        "address": format!("http://{addr}/hook"),
        "secretRef": {"name": "hooks"},
    }]);
    t.create_sync("app", spec).await;
    let sync = t
        .wait_sync(&puller, "app", SECONDS_60, "applied", |s| ready_at(s, &d1))
        .await;
    let pending = notification(&sync);
    assert_eq!(pending["reason"], "Applied");
    assert_eq!(pending["delivered"], false, "{pending}");
    eventually(SECONDS_30, "the failed delivery reported", || async {
        puller.logged("notification not delivered")
    })
    .await;
    puller.kill();

    let receiver = RecordingServer::start_on(&addr, |_, _| respond(200, &[], Vec::new()));
    let puller = t.puller(&[]);
    let sync = t
        .wait_sync(
            &puller,
            "app",
            SECONDS_60,
            "notified after the restart",
            |s| notification(s)["delivered"] == true,
        )
        .await;
    let seen = receiver.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let event = body(&seen[0]);
    assert_eq!(event["reason"], "Applied");
    assert_eq!(event["digest"], d1);
    assert_eq!(
        event["id"], pending["id"],
        "the event recorded before the restart"
    );
    assert_eq!(notification(&sync)["id"], pending["id"]);
    // The NotifyFailed Warning told the tenant while nobody heard.
    let warnings = t.cluster.kubectl_ok(&[
        "get",
        "events",
        "-n",
        &t.ns,
        "--field-selector",
        "reason=NotifyFailed",
        "-o",
        "name",
    ]);
    assert!(!warnings.trim().is_empty(), "no NotifyFailed event");
}

#[tokio::test]
async fn a_target_without_an_address_is_refused_by_validation() {
    let t = Tenant::new("notify-invalid").await;
    let registry = TestRegistry::plain();
    let (repo, _) = t.push(&registry, None, "v", &[("a.yaml", &config_map("a", "one"))]);
    let puller = t.puller(&[]);
    let mut spec = unsigned_spec(&repo, "v", "1h");
    spec["notify"] = json!([{"provider": "slack"}]);
    t.create_sync("app", spec).await;
    let (_, reason, message) = t
        .wait_not_ready(&puller, "app", SECONDS_30, "refused")
        .await;
    assert_eq!(reason, "InvalidSpec", "{message}");
    assert!(
        message.contains("spec.notify[0]") && message.contains("address"),
        "{message}"
    );
}
