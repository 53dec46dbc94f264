//! The puller's reconcile against the API double (tests/common/kube_api.rs) through a real
//! `kube::Client`, with artifacts in the local plain registry (127.0.0.1:5001): one
//! `tresor::puller::reconcile` call per step, not the whole Controller, so each test is
//! deterministic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::fake_registry::{Behaviour, Content, FakeRegistry};
use common::kube_api::KubeApi;
use common::puller::{create_covering_policy, Puller};
use common::TestRegistry;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use serde_json::{json, Value};
use tresor::api::ArtifactSync;
use tresor::kube::LABEL_NAME;
use tresor::puller::LeaseLock;

const PASSWORD: &str = "test-password";

/// The shared harness (tests/common/puller.rs) with the plain registry.
struct Setup {
    puller: Puller,
    registry: TestRegistry,
}

impl std::ops::Deref for Setup {
    type Target = Puller;
    fn deref(&self) -> &Puller {
        &self.puller
    }
}

async fn setup() -> Setup {
    Setup {
        puller: Puller::start().await,
        registry: TestRegistry::plain(),
    }
}

impl Setup {
    /// Pushes two ConfigMaps as `repo:v1`; returns (`oci://host/repo`, digest).
    fn push(&self, prefix: &str) -> (String, String) {
        self.puller.push(
            &self.registry,
            prefix,
            &[
                (
                    "a.yaml",
                    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  k: one\n",
                ),
                (
                    "b.yaml",
                    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\ndata:\n  k: two\n",
                ),
            ],
        )
    }

    async fn get(&self, name: &str) -> ArtifactSync {
        self.puller.get(name).await.unwrap()
    }

    /// (type, reason) of the Events in `default`.
    async fn events(&self) -> Vec<(String, String)> {
        Api::<k8s_openapi::api::events::v1::Event>::namespaced(self.api.client(None), "default")
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|e| (e.type_.unwrap_or_default(), e.reason.unwrap_or_default()))
            .collect()
    }
}

/// (status, reason) of condition `type_`.
fn condition(sync: &ArtifactSync, type_: &str) -> (String, String) {
    let (status, reason, _) = common::puller::condition(sync, type_);
    (status, reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puller_applies_an_unsigned_opt_in_sync_and_reports_ready() {
    let s = setup().await;
    let (repo, digest) = s.push("puller-ready");
    s.create(
        "shop",
        json!({"url": repo, "ref": {"tag": "v1"}, "interval": "5m", "insecure": true,
            "verify": {"allowUnsigned": true}}),
    )
    .await;
    s.reconcile("shop").await;

    let a = s.api.get("", "configmaps", Some("default"), "a").unwrap();
    assert_eq!(a["data"]["k"], "one");
    assert_eq!(a["metadata"]["labels"][LABEL_NAME], "shop");
    assert!(s.api.get("", "configmaps", Some("default"), "b").is_some());

    let sync = s.get("shop").await;
    assert_eq!(condition(&sync, "Ready"), ("True".into(), "Applied".into()));
    let status = sync.status.clone().unwrap();
    assert_eq!(status.last_applied_digest.as_deref(), Some(digest.as_str()));
    assert_eq!(
        status.last_attempted_digest.as_deref(),
        Some(digest.as_str())
    );
    assert_eq!(status.signer.as_deref(), Some("unsigned"));
    assert_eq!(status.observed_generation, sync.metadata.generation);
    assert_eq!(status.history.len(), 1);
    assert_eq!(status.history[0].tag.as_deref(), Some("v1"));
    let names: Vec<&str> = status.inventory.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(s.events().await, [("Normal".into(), "Applied".into())]);
    let metrics = s.ctx.metrics().render();
    assert!(
        metrics.contains("tresor_reconciles_total{outcome=\"Applied\"} 1"),
        "{metrics}"
    );

    // The next cycle finds nothing new: no object written, the status only says Unchanged.
    s.api.clear_log();
    s.reconcile("shop").await;
    let writes = s.api.writes();
    assert!(
        writes
            .iter()
            .all(|w| w.ends_with("/artifactsyncs/shop/status")),
        "{writes:?}"
    );
    let sync = s.get("shop").await;
    assert_eq!(
        condition(&sync, "Ready"),
        ("True".into(), "Unchanged".into())
    );
    // And once the status says so, an idle cycle writes nothing at all.
    s.api.clear_log();
    s.reconcile("shop").await;
    assert!(s.api.writes().is_empty(), "{:?}", s.api.writes());

    // The manual trigger: a cycle runs and the status records the request it handled.
    Api::<ArtifactSync>::namespaced(s.api.client(None), "default")
        .patch(
            "shop",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"annotations":
                {"tresor.dev/reconcile-requested-at": "2026-11-25T23:00:00Z"}}})),
        )
        .await
        .unwrap();
    s.reconcile("shop").await;
    let status = s.get("shop").await.status.unwrap();
    assert_eq!(
        status.last_handled_reconcile_at.as_deref(),
        Some("2026-11-25T23:00:00Z")
    );
    assert_eq!(status.last_applied_digest.as_deref(), Some(digest.as_str()));
}

async fn key_secret(s: &Setup, name: &str) -> std::path::PathBuf {
    let dir = s.work.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let files = tresor::signing::keys::write_key_pair(&dir, PASSWORD.as_bytes()).unwrap();
    let pem = std::fs::read_to_string(&files.public_key).unwrap();
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": "default"},
        "stringData": {},
        "data": {"cosign.pub": base64_encode(pem.as_bytes())},
    }))
    .unwrap();
    Api::<Secret>::namespaced(s.api.client(None), "default")
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    files.private_key
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn keyed_spec(repo: &str, secret: &str) -> Value {
    json!({"url": repo, "ref": {"tag": "v1"}, "interval": "5m", "insecure": true,
        "verify": {"authorities": [{"name": "release",
            "key": {"secretRef": {"name": secret}}}]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puller_refuses_an_unsigned_artifact_when_a_key_is_required_and_applies_nothing() {
    let s = setup().await;
    let (repo, digest) = s.push("puller-unsigned");
    key_secret(&s, "release-key").await;
    s.create("shop", keyed_spec(&repo, "release-key")).await;
    s.reconcile("shop").await;

    assert!(s.api.get("", "configmaps", Some("default"), "a").is_none());
    assert_eq!(s.api.count("", "configmaps"), 0, "nothing applied");
    let sync = s.get("shop").await;
    assert_eq!(
        condition(&sync, "Stalled"),
        ("True".into(), "NoSignatures".into())
    );
    assert_eq!(condition(&sync, "Ready").0, "False");
    assert_eq!(
        s.events().await,
        [("Warning".into(), "NoSignatures".into())]
    );
    let status = sync.status.unwrap();
    assert_eq!(status.last_applied_digest, None);
    assert_eq!(
        status.last_attempted_digest.as_deref(),
        Some(digest.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puller_applies_an_artifact_signed_with_the_key_from_the_secret() {
    let s = setup().await;
    let (repo, digest) = s.push("puller-signed");
    let key = key_secret(&s, "release-key").await;
    let mut sign = s.registry.tresor(&[
        "sign",
        &format!("{repo}@{digest}"),
        "--key",
        key.to_str().unwrap(),
    ]);
    sign.env("COSIGN_PASSWORD", PASSWORD);
    common::stdout_of(sign);
    s.create("shop", keyed_spec(&repo, "release-key")).await;
    s.reconcile("shop").await;

    assert!(s.api.get("", "configmaps", Some("default"), "a").is_some());
    let sync = s.get("shop").await;
    assert_eq!(condition(&sync, "Ready"), ("True".into(), "Applied".into()));
    let status = sync.status.unwrap();
    assert_eq!(status.last_applied_digest.as_deref(), Some(digest.as_str()));
    assert!(
        status.signer.as_deref().unwrap().contains("release"),
        "{:?}",
        status.signer
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puller_does_nothing_for_a_suspended_sync() {
    let s = setup().await;
    let (repo, _) = s.push("puller-suspend");
    s.create(
        "shop",
        json!({"url": repo, "ref": {"tag": "v1"}, "interval": "5m", "insecure": true,
            "verify": {"allowUnsigned": true}, "suspend": true}),
    )
    .await;
    s.api.clear_log();
    s.reconcile("shop").await;
    assert!(s.api.writes().is_empty(), "{:?}", s.api.writes());
    assert_eq!(s.api.count("", "configmaps"), 0);
    assert!(s.get("shop").await.status.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puller_refuses_allow_unsigned_under_a_covering_trust_policy() {
    let s = setup().await;
    let (repo, _) = s.push("puller-weaken");
    create_covering_policy(&s.api).await;
    s.create(
        "shop",
        json!({"url": repo, "ref": {"tag": "v1"}, "interval": "5m", "insecure": true,
            "verify": {"allowUnsigned": true}}),
    )
    .await;
    s.reconcile("shop").await;
    assert_eq!(s.api.count("", "configmaps"), 0);
    let sync = s.get("shop").await;
    assert_eq!(
        condition(&sync, "Stalled"),
        ("True".into(), "WeakensTrustPolicy".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puller_rereads_trust_policies_every_cycle_without_a_spec_change() {
    let s = setup().await;
    let (repo, _) = s.push("puller-reread");
    s.create(
        "shop",
        json!({"url": repo, "ref": {"tag": "v1"}, "interval": "5m", "insecure": true,
            "verify": {"allowUnsigned": true}}),
    )
    .await;
    s.reconcile("shop").await;
    assert_eq!(condition(&s.get("shop").await, "Ready").0, "True");
    // A platform admin adds a policy covering the namespace: the same, unchanged sync is
    // refused on its next cycle (its engine is kept, its trust is not).
    create_covering_policy(&s.api).await;
    s.reconcile("shop").await;
    let sync = s.get("shop").await;
    assert_eq!(
        condition(&sync, "Stalled"),
        ("True".into(), "WeakensTrustPolicy".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_has_one_holder_and_is_taken_over_only_after_it_expired() {
    let api = KubeApi::start(Duration::from_millis(10));
    let lock = |id: &str| {
        LeaseLock::new(
            api.client(None),
            "default",
            "tresor-puller",
            id,
            Duration::from_secs(1),
            Duration::from_secs(5),
        )
    };
    let (a, b) = (lock("a"), lock("b"));
    assert!(
        a.try_acquire_or_renew().await.unwrap(),
        "a creates the lease"
    );
    assert!(!b.try_acquire_or_renew().await.unwrap(), "b must wait");
    assert!(a.try_acquire_or_renew().await.unwrap(), "a renews");
    let lease = api
        .get(
            "coordination.k8s.io",
            "leases",
            Some("default"),
            "tresor-puller",
        )
        .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "a");
    // a stops renewing: after the duration b takes over and a no longer holds it.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(
        b.try_acquire_or_renew().await.unwrap(),
        "b takes the expired lease"
    );
    assert!(!a.try_acquire_or_renew().await.unwrap(), "a lost it");
    let lease = api
        .get(
            "coordination.k8s.io",
            "leases",
            Some("default"),
            "tresor-puller",
        )
        .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "b");
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
}

/// A registry whose blobs arrive one byte every 300 ms (a layer of about 30 s), serving
/// `v1`.
fn trickling_registry() -> FakeRegistry {
    let artifact = common::tarball::artifact(&[(
        "a.yaml",
        b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: slow\n",
    )]);
    assert!(artifact.layer.len() > 80, "the layer must trickle for long");
    let mut content = Content::default();
    content.insert_artifact("v1", &artifact);
    FakeRegistry::start_with(
        content,
        Behaviour {
            trickle: Some(Duration::from_millis(300)),
            ..Behaviour::default()
        },
    )
}

/// Regression test for issue 12 point 6: the puller's `--timeout` (here 5 s) ends a
/// registry request whose body trickles, instead of waiting for the whole body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puller_timeout_ends_a_trickling_blob_download() {
    let s = setup().await;
    let fake = trickling_registry();
    s.create(
        "slow",
        json!({"url": fake.repo("slow"), "ref": {"tag": "v1"}, "interval": "5m",
            "insecure": true, "verify": {"allowUnsigned": true}}),
    )
    .await;
    let started = std::time::Instant::now();
    s.reconcile("slow").await;
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");
    let (status, reason, message) = common::puller::condition(&s.get("slow").await, "Ready");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "RegistryTimeout"),
        "{message}"
    );
    assert!(message.contains("within 5s"), "{message}");
    assert!(s
        .api
        .get("", "configmaps", Some("default"), "slow")
        .is_none());
}

/// Issue 12 point 6: an ArtifactSync's `spec.timeout` bounds its registry requests too,
/// also when the puller's own `--timeout` is longer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_timeout_ends_a_trickling_blob_download() {
    let s = Setup {
        puller: Puller::start_with(|o| o.call_timeout = Duration::from_secs(120)).await,
        registry: TestRegistry::plain(),
    };
    let fake = trickling_registry();
    s.create(
        "slow",
        json!({"url": fake.repo("slow"), "ref": {"tag": "v1"}, "interval": "5m",
            "timeout": "2s", "insecure": true, "verify": {"allowUnsigned": true}}),
    )
    .await;
    let started = std::time::Instant::now();
    s.reconcile("slow").await;
    let elapsed = started.elapsed();
    // The body alone would take about 30 s.
    assert!(elapsed < Duration::from_secs(15), "took {elapsed:?}");
    let (status, reason, message) = common::puller::condition(&s.get("slow").await, "Ready");
    assert_eq!(status, "False", "{reason}: {message}");
    assert!(
        reason == "RegistryTimeout" || reason == "CycleTimeout",
        "{reason}: {message}"
    );
    assert!(s
        .api
        .get("", "configmaps", Some("default"), "slow")
        .is_none());
}
