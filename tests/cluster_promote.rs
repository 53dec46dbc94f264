//! Promotion on the real API server (issue 15): the recipe of docs/promotion.md. A
//! cluster-scoped TrustPolicy requires CI *and* the approver (`require: all`) in namespaces
//! labelled `env=prod`; what CI alone signed is refused there, `tresor promote` makes it
//! acceptable, and the ArtifactSync status and `tresor status` show who approved the applied
//! digest, when and why — from the verified promotion record only.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::cluster::{config_map, ready_at, Tenant, KEY_PASSWORD, RUN_LABEL, SECONDS_60};
use common::TestRegistry;
use kube::api::{Api, PostParams};
use serde_json::{json, Value};
use tresor::api::TrustPolicy;
use tresor::signing::keys::PublicKey;

/// The TrustPolicy of this test, deleted on drop (with kubectl: the test's runtime is gone
/// by then).
struct PolicyGuard {
    cluster: &'static common::cluster::Cluster,
    name: String,
}

impl Drop for PolicyGuard {
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

#[tokio::test]
async fn prod_needs_ci_and_approver_and_the_status_shows_who_approved() {
    let registry = TestRegistry::plain();
    let tenant = Tenant::new("promote").await;
    tenant
        .cluster
        .kubectl_ok(&["label", "namespace", &tenant.ns, "env=prod"]);
    let ci = tenant.key("ci-key").await;
    let approver = tenant.key("approver-key").await;
    let approver_pub = approver.with_file_name("cosign.pub");
    let fingerprint = PublicKey::from_file(&approver_pub)
        .unwrap()
        .fingerprint()
        .to_string();

    // The platform team's policy: prod namespaces need CI and the approver. (The run label
    // keeps it to this test's namespace on the shared cluster.)
    let name = format!("{}-prod", tenant.ns);
    let policy: TrustPolicy = serde_json::from_value(json!({
        "apiVersion": "tresor.dev/v1alpha1", "kind": "TrustPolicy",
        "metadata": {"name": name},
        "spec": {
            "authorities": [
                {"name": "ci", "key": {"secretRef": {"name": "ci-key", "namespace": tenant.ns}}},
                {"name": "approver", "key": {"secretRef": {
                    "name": "approver-key", "namespace": tenant.ns}}},
            ],
            "require": "all",
            "namespaces": {"selector": {"matchLabels": {"env": "prod", RUN_LABEL: tenant.ns}}},
        },
    }))
    .unwrap();
    Api::<TrustPolicy>::all(tenant.client.clone())
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    let _guard = PolicyGuard {
        cluster: tenant.cluster,
        name,
    };

    // CI pushes and signs :staging.
    let (repo, digest) = tenant.push(
        &registry,
        None,
        "staging",
        &[("cm.yaml", &config_map("promoted", "one"))],
    );
    tenant.sign(&registry, &repo, &digest, &ci);
    let puller = tenant.puller(&[]);
    let follow = |tag: &str| {
        json!({"url": repo, "ref": {"tag": tag}, "interval": "2s", "insecure": true,
            "prune": true})
    };

    // CI alone is not enough in prod.
    tenant.create_sync("staging", follow("staging")).await;
    let (_, reason, message) = tenant
        .wait_not_ready(&puller, "staging", SECONDS_60, "refused")
        .await;
    assert_eq!(reason, "PolicyNotSatisfied", "{message}");
    assert!(message.contains("approver"), "{message}");
    assert!(tenant.config_map("promoted").await.is_none());
    // (Signatures are on the digest: once promoted, :staging would pass too.)
    tenant
        .syncs()
        .delete("staging", &kube::api::DeleteParams::default())
        .await
        .unwrap();

    // The approver promotes :staging to :prod, checked against the same two keys.
    let policy_file = tenant.work.path().join("prod-trust.yaml");
    std::fs::write(
        &policy_file,
        format!(
            "apiVersion: tresor.dev/v1alpha1\nkind: TrustPolicy\nspec:\n  authorities:\n    \
             - name: ci\n      key:\n        path: {}\n    - name: approver\n      key:\n        \
             path: {}\n  require: all\n",
            ci.with_file_name("cosign.pub").display(),
            approver_pub.display()
        ),
    )
    .unwrap();
    let mut promote = registry.tresor(&[
        "promote",
        &format!("{repo}:staging"),
        "--to",
        &format!("{repo}:prod"),
        "--key",
        approver.to_str().unwrap(),
        "--policy",
        policy_file.to_str().unwrap(),
        "--reason",
        "release 1 (CHG-7)",
    ]);
    promote.env("COSIGN_PASSWORD", KEY_PASSWORD);
    common::stdout_of(promote);

    // Following :prod, it is applied, and the status says who approved it.
    tenant.create_sync("prod", follow("prod")).await;
    let sync = tenant
        .wait_sync(&puller, "prod", SECONDS_60, "applied", |s| {
            ready_at(s, &digest)
        })
        .await;
    assert!(tenant.config_map("promoted").await.is_some());
    let status = sync.status.unwrap();
    let signer = status.signer.clone().unwrap();
    assert!(
        signer.contains("ci (key sha256:") && signer.contains("approver (key sha256:"),
        "{signer}"
    );
    let promotion = status.promotion.expect("status.promotion");
    assert_eq!(
        promotion.approved_by,
        format!("approver (key sha256:{fingerprint})")
    );
    assert_eq!(promotion.reason.as_deref(), Some("release 1 (CHG-7)"));
    assert_eq!(promotion.from, format!("{repo}:staging"));
    assert_eq!(
        promotion.policy,
        Some(format!("TrustPolicy/{}-prod", tenant.ns))
    );
    let when = humantime::parse_rfc3339(&promotion.time).unwrap();
    let age = std::time::SystemTime::now().duration_since(when).unwrap();
    assert!(age < std::time::Duration::from_secs(300), "{age:?}");

    // `tresor status`, in text and JSON.
    let kubeconfig = tenant.cluster.kubeconfig.to_str().unwrap().to_string();
    let status = |format: &str| {
        let mut cmd = common::tresor();
        cmd.args([
            "status",
            "-n",
            &tenant.ns,
            "--kubeconfig",
            &kubeconfig,
            "--format",
            format,
        ]);
        common::stdout_of(cmd)
    };
    let text = status("text");
    let header: Vec<&str> = text.lines().next().unwrap().split_whitespace().collect();
    let column = header.iter().position(|h| *h == "APPROVED").unwrap();
    let row = |name: &str| -> Vec<String> {
        text.lines()
            .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .find(|cells| cells.get(1).map(String::as_str) == Some(name))
            .unwrap_or_else(|| panic!("no row {name}: {text}"))
    };
    assert_eq!(row("prod")[column], "approver", "{text}");
    let v: Value = serde_json::from_str(&status("json")).unwrap();
    let prod = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "prod")
        .unwrap();
    assert_eq!(
        prod["promotion"]["approvedBy"],
        format!("approver (key sha256:{fingerprint})")
    );
    assert_eq!(prod["promotion"]["reason"], "release 1 (CHG-7)");
}
