//! What tresor asks of the real kube-apiserver of `scripts/cluster.sh`, counted by the
//! server itself: each test's puller (or engine) runs as a ServiceAccount of its own with the
//! puller's roles, and FlowSchemas (API Priority and Fairness) sort that account's requests
//! into classes the server counts (`CountedIdentity` in tests/common/cluster.rs). Watches
//! are not counted. Ported from the API double's request log (issue 11).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::{
    config_map, eventually, has, http_get, ready_at, unsigned_spec, CountedIdentity, PullerProcess,
    Tenant, SECONDS_30, SECONDS_60,
};
use common::fake_registry::{Content, FakeRegistry};
use common::TestRegistry;
use kube::api::{Api, PostParams};
use serde_json::{json, Value};
use tresor::api::TrustPolicy;
use tresor::artifact::archive::Limits;
use tresor::artifact::fetch::ResolvedArtifact;
use tresor::kube::{ApplyOptions, Cluster, DiscoveryResolver, KubeApplier, Owner};
use tresor::reconcile::cache::Cache;
use tresor::reconcile::source::Source;
use tresor::reconcile::{
    BoxFuture, Cancel, Engine, NoPolicy, Outcome, Step, VerifiedBy, Verifier, VerifyRejected,
};
use tresor::registry::{RegistryOptions, Repository};

/// GETs of ConfigMaps in namespace `ns` (the applied objects and the inventory).
fn object_reads(ns: &str) -> (&'static str, Value) {
    (
        "object-reads",
        json!({"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"],
            "namespaces": [ns]}),
    )
}

/// GETs and LISTs of TrustPolicies.
fn policy_reads() -> (&'static str, Value) {
    (
        "policy-reads",
        json!({"verbs": ["get", "list"], "apiGroups": ["tresor.dev"],
            "resources": ["trustpolicies"], "clusterScope": true}),
    )
}

/// Waits until `puller` has logged `cycles` more finished reconciles (debug log).
async fn cycles(puller: &PullerProcess, cycles: usize) {
    let start = puller.log_count("reconciled");
    let deadline = Instant::now() + SECONDS_60;
    while puller.log_count("reconciled") < start + cycles {
        assert!(
            Instant::now() < deadline,
            "no {cycles} cycles within 60 s:\n{}",
            puller.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The requests (but watches) `id` sends over the next `n` cycles of `puller`.
async fn requests_over_cycles(id: &CountedIdentity, puller: &PullerProcess, n: usize) -> u64 {
    let before = id.total();
    cycles(puller, n).await;
    id.total() - before
}

/// Waits until `n` cycles in a row send nothing (the puller has settled).
async fn settled(id: &CountedIdentity, puller: &PullerProcess, n: usize) {
    let deadline = Instant::now() + SECONDS_60;
    while requests_over_cycles(id, puller, n).await > 0 {
        assert!(
            Instant::now() < deadline,
            "still sending requests after 60 s:\n{}",
            puller.log_tail()
        );
    }
}

/// Deletes a TrustPolicy when dropped (they are cluster-wide).
struct PolicyDeleted(&'static common::cluster::Cluster, String);

impl Drop for PolicyDeleted {
    fn drop(&mut self) {
        self.0.kubectl(&[
            "delete",
            "trustpolicy",
            &self.1,
            "--ignore-not-found",
            "--wait=false",
        ]);
    }
}

/// With its watches synced (drift of applied objects, TrustPolicies, Secrets), an idle
/// cycle sends the API server nothing. A deleted object is found in the watch cache and
/// re-applied without a GET of any object, and the puller settles again (its own
/// re-apply, seen through the watch, triggers nothing). A TrustPolicy added later refuses
/// the sync from the cache, without a GET or LIST of TrustPolicies.
#[tokio::test]
async fn an_idle_cycle_sends_nothing_and_drift_and_policies_come_from_the_watch_caches() {
    let t = Tenant::new("requests-idle").await;
    let registry = TestRegistry::plain();
    let id = t
        .cluster
        .counted_identity(&t.ns, &[object_reads(&t.ns), policy_reads()]);
    let (repo, digest) = t.push(
        &registry,
        None,
        "v",
        &[
            ("a.yaml", &config_map("a", "one")),
            ("b.yaml", &config_map("b", "two")),
        ],
    );
    // -v once more: debug, one "reconciled" line per cycle.
    let puller = t.cluster.puller_as(&id.kubeconfig, &t.ns, &["-v"]);
    t.create_sync("app", unsigned_spec(&repo, "v", "1s")).await;
    t.wait_sync(&puller, "app", SECONDS_60, "applied", |s| {
        ready_at(s, &digest)
    })
    .await;
    let (health, _) = puller.addrs();
    eventually(SECONDS_30, "the watches synced (/readyz)", || async {
        http_get(&health, "/readyz").0 == 200
    })
    .await;
    // The server counts this puller: its first cycle's requests, the watch caches' lists.
    assert!(id.total() > 0);
    assert!(
        id.requests("policy-reads") > 0,
        "TrustPolicies never listed"
    );
    settled(&id, &puller, 2).await;
    assert_eq!(
        requests_over_cycles(&id, &puller, 3).await,
        0,
        "requests in 3 idle cycles:\n{}",
        puller.log_tail()
    );

    // Someone deletes `a`: restored through the watch, without reading any object.
    let reads = id.requests("object-reads");
    t.cluster
        .kubectl_ok(&["-n", &t.ns, "delete", "configmap", "a", "--wait=false"]);
    eventually(SECONDS_30, "a is back", || async {
        t.config_map("a")
            .await
            .is_some_and(|a| a["data"]["k"] == "one")
    })
    .await;
    assert_eq!(id.requests("object-reads") - reads, 0, "objects were read");
    settled(&id, &puller, 3).await;

    // A TrustPolicy covering the namespace: the sync is refused from the cache.
    let policy_name = format!("{}-covering", t.ns);
    let policy: TrustPolicy = serde_json::from_value(json!({
        "apiVersion": "tresor.dev/v1alpha1", "kind": "TrustPolicy",
        "metadata": {"name": policy_name},
        "spec": {"authorities": [{"name": "platform", "key": {"secretRef":
            {"name": "platform-key", "namespace": t.ns}}}], "require": "any",
            "namespaces": {"names": [t.ns]}},
    }))
    .unwrap();
    let policy_reads = id.requests("policy-reads");
    Api::<TrustPolicy>::all(t.client.clone())
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    let _deleted = PolicyDeleted(t.cluster, policy_name);
    t.wait_sync(&puller, "app", SECONDS_30, "refused", |s| {
        has(s, "Stalled", "True", "WeakensTrustPolicy")
    })
    .await;
    assert_eq!(
        id.requests("policy-reads") - policy_reads,
        0,
        "TrustPolicies were read"
    );
}

/// With `--no-watch-drift`, every cycle reads every applied object (one GET each) and
/// writes nothing.
#[tokio::test]
async fn without_watches_every_cycle_reads_every_applied_object() {
    let t = Tenant::new("requests-nowatch").await;
    let registry = TestRegistry::plain();
    let id = t.cluster.counted_identity(&t.ns, &[object_reads(&t.ns)]);
    let (repo, digest) = t.push(
        &registry,
        None,
        "v",
        &[
            ("a.yaml", &config_map("a", "one")),
            ("b.yaml", &config_map("b", "two")),
        ],
    );
    let puller = t
        .cluster
        .puller_as(&id.kubeconfig, &t.ns, &["-v", "--no-watch-drift"]);
    t.create_sync("app", unsigned_spec(&repo, "v", "1s")).await;
    t.wait_sync(&puller, "app", SECONDS_60, "applied", |s| {
        ready_at(s, &digest)
    })
    .await;
    // Settled: the status says Unchanged, no more writes.
    let deadline = Instant::now() + SECONDS_60;
    loop {
        let other = id.requests("other");
        cycles(&puller, 2).await;
        if id.requests("other") == other {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never settled:\n{}",
            puller.log_tail()
        );
    }
    let (reads, other) = (id.requests("object-reads"), id.requests("other"));
    let start = puller.log_count("reconciled");
    cycles(&puller, 4).await;
    let (reads, other) = (
        id.requests("object-reads") - reads,
        id.requests("other") - other,
    );
    let n = (puller.log_count("reconciled") - start) as u64;
    // A cycle may be under way at either end of the window.
    assert!(
        (2 * (n - 1)..=2 * (n + 1)).contains(&reads),
        "{reads} object reads in {n} cycles"
    );
    assert_eq!(other, 0, "other requests in {n} idle cycles");
}

/// Rejects every artifact: "wrongly signed".
struct RejectAll;

impl Verifier for RejectAll {
    fn verify<'a>(
        &'a self,
        _: &'a Repository,
        a: &'a ResolvedArtifact,
    ) -> BoxFuture<'a, Result<VerifiedBy, VerifyRejected>> {
        let e = VerifyRejected::rejected(
            "UntrustedSigner",
            format!("{} is not signed by a trusted key", a.digest),
        );
        Box::pin(std::future::ready(Err(e)))
    }

    fn trust(&self) -> String {
        "nobody".into()
    }
}

/// An artifact that fails verification: the engine stops at verify, downloads no blob and
/// sends the API server nothing at all, not even a read.
#[tokio::test]
async fn verification_failure_leaves_the_cluster_untouched() {
    let t = Tenant::new("requests-verify").await;
    let id = t.cluster.counted_identity(&t.ns, &[]);
    let fake = FakeRegistry::start(Content::default());
    let artifact = common::tarball::artifact(&[("a.yaml", config_map("a", "one").as_bytes())]);
    fake.serve_artifact("live", &artifact);
    let reference: tresor::reference::Reference =
        format!("{}:live", fake.repo("acme/shop")).parse().unwrap();
    let options = RegistryOptions {
        plain_http: true,
        retries: 0,
        timeout: Duration::from_secs(10),
        ..Default::default()
    };
    let client = id.client().await;
    let cluster = Cluster::new(
        client.clone(),
        Arc::new(DiscoveryResolver::new(client, Duration::from_secs(10))),
        None,
    );
    let mut apply = ApplyOptions::new(Owner {
        name: "shop".into(),
        namespace: t.ns.clone(),
    });
    apply.target_namespace = Some(t.ns.clone());
    let work = tempfile::tempdir().unwrap();
    let mut engine = Engine::new(
        Source::new(reference.clone(), None).unwrap(),
        Repository::open(&reference, &options).unwrap(),
        Arc::new(RejectAll),
        Arc::new(NoPolicy),
        Cache::open(&work.path().join("cache")).unwrap(),
        KubeApplier::new(cluster, apply, work.path()),
        Limits::default(),
    );
    let before = id.total();
    let s = engine.reconcile(&Cancel::never()).await;
    assert_eq!(s.outcome, Outcome::Rejected, "{s:?}");
    let error = s.error.unwrap();
    assert_eq!(
        (error.step, error.reason.as_str()),
        (Step::Verify, "UntrustedSigner")
    );
    assert_eq!(id.total() - before, 0, "requests to the API server");
    // The same client's requests are counted.
    let client = id.client().await;
    let _ = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client, &t.ns)
        .get_opt("a")
        .await;
    assert!(id.total() > before, "the count does not see this identity");
    assert!(t.config_map("a").await.is_none());
    assert!(
        fake.requests().iter().all(|r| !r.contains("/blobs/")),
        "{:?}",
        fake.requests()
    );
}
