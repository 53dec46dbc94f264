//! Trust on the real API server (issue 12): N-of-M counts distinct signers in TrustPolicies
//! and `spec.verify`, references are canonical before any TrustPolicy matches them, and the
//! `dev.tresor.content: files` annotation does not switch the immutability policy off for
//! what the puller applies. Each test has its own namespace, puller and (cluster-scoped)
//! TrustPolicy restricted to that namespace, deleted when the test ends.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::cluster::{condition, config_map, has, unsigned_spec, Tenant, SECONDS_60};
use common::TestRegistry;
use kube::api::{Api, PostParams};
use serde_json::{json, Value};
use tresor::api::{ArtifactSync, TrustPolicy};

/// A TrustPolicy that lives as long as the test: deleted on drop.
struct PolicyGuard {
    cluster: &'static common::cluster::Cluster,
    name: String,
}

impl PolicyGuard {
    /// Creates TrustPolicy `name` with `spec`, limited to the tenant's namespace.
    async fn create(tenant: &Tenant, name: &str, mut spec: Value) -> Self {
        spec["namespaces"] = json!({"names": [tenant.ns]});
        let policy: TrustPolicy = serde_json::from_value(json!({
            "apiVersion": "tresor.dev/v1alpha1", "kind": "TrustPolicy",
            "metadata": {"name": name}, "spec": spec,
        }))
        .unwrap();
        let api: Api<TrustPolicy> = Api::all(tenant.client.clone());
        api.create(&PostParams::default(), &policy).await.unwrap();
        Self {
            cluster: tenant.cluster,
            name: name.to_string(),
        }
    }
}

impl Drop for PolicyGuard {
    /// Deletes the policy with kubectl: the test's kube client needs the test's runtime,
    /// which is not running while this drops.
    fn drop(&mut self) {
        let _ = self.cluster.kubectl(&[
            "delete",
            "trustpolicy",
            &self.name,
            "--ignore-not-found",
            "--wait=false",
        ]);
    }
}

/// Waits until `name` is Stalled; returns its Stalled (reason, message).
async fn stalled(
    tenant: &Tenant,
    puller: &common::cluster::PullerProcess,
    name: &str,
) -> (ArtifactSync, String, String) {
    let sync = tenant
        .wait_sync(puller, name, SECONDS_60, "stalled", |s| {
            condition(s, "Stalled").is_some_and(|c| c.0 == "True")
        })
        .await;
    let (_, reason, message) = condition(&sync, "Stalled").unwrap();
    (sync, reason, message)
}

/// Issue 12 point 2: `oci://LOCALHOST:5001/…` reaches the registry `localhost:5001/**`
/// names, but was not covered by a TrustPolicy for it, so `allowUnsigned` was accepted and
/// the artifact applied. A non-canonical spelling is refused when the sync is admitted:
/// Stalled, reason `NonCanonicalReference`, the message names the canonical spelling, and
/// nothing is applied (the URL is not rewritten behind the policy's back).
#[tokio::test]
async fn non_canonical_url_is_stalled_and_cannot_escape_a_trust_policy() {
    let registry = TestRegistry::plain();
    let tenant = Tenant::new("trust-canon").await;
    let port = registry.host.rsplit_once(':').unwrap().1.to_string();
    let (repo, _) = tenant.push(
        &registry,
        None,
        "v",
        &[("cm.yaml", &config_map("canon", "one"))],
    );
    let path = repo.split_once(&registry.host).unwrap().1.to_string();
    let _policy = PolicyGuard::create(
        &tenant,
        &format!("{}-localhost", tenant.ns),
        json!({
            "repositories": [format!("localhost:{port}/**")],
            "authorities": [{"name": "ci", "key": {"secretRef": {
                "name": "ci-key", "namespace": tenant.ns}}}],
            "require": "any",
        }),
    )
    .await;
    let spelled = format!("oci://LOCALHOST:{port}{path}");
    let puller = tenant.puller(&[]);
    tenant
        .create_sync("app", unsigned_spec(&spelled, "v", "1h"))
        .await;
    let (sync, reason, message) = stalled(&tenant, &puller, "app").await;
    assert_eq!(reason, "NonCanonicalReference", "{message}");
    assert!(
        message.contains(&format!("oci://localhost:{port}{path}")),
        "{message}"
    );
    assert!(has(&sync, "Ready", "False", "NonCanonicalReference"));
    assert_eq!(sync.spec.url, spelled, "the spec is not rewritten");
    assert!(
        tenant.config_map("canon").await.is_none(),
        "nothing applied"
    );
}

/// Issue 12 point 1: a TrustPolicy whose two authorities hold the same public key (in two
/// Secrets, so only the key material shows it) with `require: 2` was satisfied by one
/// signature. The puller now refuses the policy when it loads it (Stalled, reason
/// `DuplicateSigner`) and applies nothing; an ArtifactSync listing one key twice in
/// `spec.verify` is refused as an invalid spec.
#[tokio::test]
async fn the_same_key_twice_never_counts_as_two_signers() {
    let registry = TestRegistry::plain();
    let tenant = Tenant::new("trust-nofm").await;
    let key = tenant.key("ci-key").await;
    // The same public key in a second Secret.
    let pem = std::fs::read_to_string(key.with_file_name("cosign.pub")).unwrap();
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "security-key", "namespace": tenant.ns},
        "stringData": {"cosign.pub": pem},
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(tenant.client.clone(), &tenant.ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let (repo, digest) = tenant.push(
        &registry,
        None,
        "v",
        &[("cm.yaml", &config_map("nofm", "one"))],
    );
    tenant.sign(&registry, &repo, &digest, &key);
    let _policy = PolicyGuard::create(
        &tenant,
        &format!("{}-two", tenant.ns),
        json!({
            "authorities": [
                {"name": "ci", "key": {"secretRef": {"name": "ci-key", "namespace": tenant.ns}}},
                {"name": "security-team", "key": {"secretRef": {
                    "name": "security-key", "namespace": tenant.ns}}},
            ],
            "require": 2,
        }),
    )
    .await;
    let puller = tenant.puller(&[]);
    tenant
        .create_sync(
            "app",
            json!({"url": repo, "ref": {"tag": "v"}, "interval": "1h", "insecure": true,
                "prune": true}),
        )
        .await;
    let (_, reason, message) = stalled(&tenant, &puller, "app").await;
    assert_eq!(reason, "DuplicateSigner", "{message}");
    assert!(
        message.contains("\"ci\" and \"security-team\" are the same signer"),
        "{message}"
    );
    assert!(tenant.config_map("nofm").await.is_none(), "nothing applied");

    // The same inline key twice in spec.verify: an invalid spec.
    tenant
        .create_sync(
            "twice",
            json!({"url": repo, "ref": {"tag": "v"}, "interval": "1h", "insecure": true,
            "verify": {"require": 2, "authorities": [
                {"name": "a", "key": {"data": pem}},
                {"name": "b", "key": {"data": pem.replace('\n', "\n\n")}},
            ]}}),
        )
        .await;
    let (_, reason, message) = stalled(&tenant, &puller, "twice").await;
    assert_eq!(reason, "InvalidSpec", "{message}");
    assert!(message.contains("same signer"), "{message}");
}

/// Issue 12 point 4: an artifact pushed with `--content files` was linted as plain files,
/// so a Deployment with `image: nginx:latest` passed the immutability policy, and the puller
/// applied it as Kubernetes objects. The puller lints what it applies as Kubernetes objects
/// whatever the annotation says: refused (reason `PolicyViolation`), nothing applied.
#[tokio::test]
async fn files_content_annotation_does_not_switch_the_policy_off() {
    let registry = TestRegistry::plain();
    let tenant = Tenant::new("trust-files").await;
    let tree = tenant.work.path().join("files-tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("cm.yaml"), config_map("files", "one")).unwrap();
    std::fs::write(
        tree.join("deploy.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  selector:\n    \
         matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    \
         spec:\n      containers:\n        - name: web\n          image: nginx:latest\n",
    )
    .unwrap();
    let repo = registry.repo(&tenant.ns);
    common::json_of(registry.tresor(&[
        "push",
        tree.to_str().unwrap(),
        &format!("{repo}:v"),
        "--content",
        "files",
        "--format",
        "json",
    ]));
    let puller = tenant.puller(&[]);
    tenant
        .create_sync("app", unsigned_spec(&repo, "v", "1h"))
        .await;
    let (_, reason, message) = tenant
        .wait_not_ready(&puller, "app", SECONDS_60, "refused by the policy")
        .await;
    assert_eq!(reason, "PolicyViolation", "{message}");
    assert!(message.contains("nginx:latest"), "{message}");
    assert!(
        tenant.config_map("files").await.is_none(),
        "nothing applied"
    );
    assert!(tenant.get("apps/v1", "Deployment", "web").await.is_none());

    // `tresor apply` runs the same engine once: refused too (exit 1), nothing applied.
    let kubeconfig = tenant.cluster.kubeconfig.to_str().unwrap().to_string();
    let out = registry
        .tresor(&[
            "apply",
            &format!("{repo}:v"),
            "--kubeconfig",
            &kubeconfig,
            "-n",
            &tenant.ns,
            "--name",
            "cli",
            "--allow-unsigned",
        ])
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(report.contains("PolicyViolation"), "{report}");
    assert!(report.contains("nginx:latest"), "{report}");
    assert!(
        tenant.config_map("files").await.is_none(),
        "nothing applied"
    );
}

/// A TrustPolicy added after a sync was applied refuses the same, unchanged sync on its
/// next cycle (the engine is kept, its trust is not): `allowUnsigned` now weakens a policy.
/// The applied objects stay; the generation did not change. (Ported from the API double,
/// issue 11.)
#[tokio::test]
async fn a_trust_policy_added_later_refuses_the_unchanged_sync_on_its_next_cycle() {
    let registry = TestRegistry::plain();
    let tenant = Tenant::new("trust-later").await;
    let (_, digest, puller) = tenant
        .applied_unsigned(&registry, &[("cm.yaml", &config_map("later", "one"))], "2s")
        .await;
    let generation = tenant.syncs().get("app").await.unwrap().metadata.generation;
    let _policy = PolicyGuard::create(
        &tenant,
        &format!("{}-later", tenant.ns),
        json!({
            "authorities": [{"name": "platform", "key": {"secretRef": {
                "name": "platform-key", "namespace": tenant.ns}}}],
            "require": "any",
        }),
    )
    .await;
    let (sync, reason, message) = stalled(&tenant, &puller, "app").await;
    assert_eq!(reason, "WeakensTrustPolicy", "{message}");
    assert!(has(&sync, "Ready", "False", "WeakensTrustPolicy"));
    assert_eq!(
        sync.metadata.generation, generation,
        "the spec did not change"
    );
    assert_eq!(
        sync.status.and_then(|s| s.last_applied_digest).as_deref(),
        Some(digest.as_str())
    );
    assert!(tenant.config_map("later").await.is_some());
}
