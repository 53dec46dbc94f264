//! The cluster suite: `tresor-puller` (a process, with its own ServiceAccount's token) and
//! `tresor apply` against the real kube-apiserver of `scripts/cluster.sh`, with artifacts in
//! the real local registry. One scenario per test; each has its own namespace and puller
//! (tests/common/cluster.rs). scripts/test.sh starts the cluster.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::cluster::{
    applied, condition, config_map, eventually, has, http_get, ready_at, resource_version,
    signed_spec, unsigned_spec, Tenant, SECONDS_30, SECONDS_60,
};
use common::own_registry::OwnRegistry;
use common::recording_server::{respond, RecordingServer};
use common::TestRegistry;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use tresor::api::ArtifactSync;
use tresor::kube::LABEL_NAME;

const SECONDS_5: Duration = Duration::from_secs(5);

fn inventory_names(sync: &ArtifactSync) -> Vec<String> {
    sync.status
        .as_ref()
        .map(|s| s.inventory.iter().map(|e| e.name.clone()).collect())
        .unwrap_or_default()
}

fn data_k(cm: &Option<Value>) -> Option<String> {
    cm.as_ref()
        .and_then(|cm| cm["data"]["k"].as_str().map(str::to_string))
}

/// Scenario 1: deploy/ applies server-side, its CRDs are structural and established, and the
/// puller's ServiceAccount has exactly the rights deploy/rbac.yaml grants.
#[tokio::test]
async fn deploy_applies_server_side_and_rbac_is_what_the_puller_gets() {
    let cluster = common::cluster::cluster();
    for crd in ["artifactsyncs.tresor.dev", "trustpolicies.tresor.dev"] {
        let out = cluster.kubectl_ok(&["get", "crd", crd, "-o", "json"]);
        let crd: Value = serde_json::from_str(&out).unwrap();
        let conditions = crd["status"]["conditions"].as_array().unwrap();
        let status = |t: &str| {
            conditions
                .iter()
                .find(|c| c["type"] == t)
                .map(|c| c["status"].as_str().unwrap().to_string())
        };
        assert_eq!(status("Established").as_deref(), Some("True"), "{crd}");
        assert_eq!(status("NonStructuralSchema"), None, "{crd}");
    }
    // A client-side `kubectl apply -k` (what the README says) works on this server too.
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    cluster.kubectl_ok(&["apply", "--dry-run=server", "-k", deploy.to_str().unwrap()]);
    // The harness installs deploy/'s RBAC under its own names (tests/common/cluster.rs):
    // the plain names, server-side, as a dry run.
    cluster.kubectl_ok(&[
        "apply",
        "--server-side",
        "--dry-run=server",
        "--force-conflicts",
        "--field-manager",
        "tresor-tests",
        "-k",
        deploy.to_str().unwrap(),
    ]);
    // With the registry-port component (registries on :5000), as the docs show it.
    let overlay = deploy
        .parent()
        .unwrap()
        .join(format!(".tmp/overlay-{}", std::process::id()));
    std::fs::create_dir_all(&overlay).unwrap();
    std::fs::write(
        overlay.join("kustomization.yaml"),
        "resources:\n  - ../../deploy\ncomponents:\n  - ../../deploy/components/registry-port\n",
    )
    .unwrap();
    let rendered = cluster.kubectl_ok(&[
        "apply",
        "--dry-run=server",
        "-k",
        overlay.to_str().unwrap(),
        "-o",
        "json",
    ]);
    let rendered: Value = serde_json::from_str(&rendered).unwrap();
    let policy = rendered["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["kind"] == "NetworkPolicy")
        .unwrap();
    let ports: Vec<i64> = policy["spec"]["egress"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e["ports"].as_array().unwrap().iter())
        .map(|p| p["port"].as_i64().unwrap())
        .collect();
    assert_eq!(ports, [53, 53, 5353, 5353, 443, 6443, 5000]);
    std::fs::remove_dir_all(&overlay).unwrap();

    // The puller's rights as deploy/ grants them (the harness's copy of deploy/'s RBAC for a
    // ServiceAccount of its own: tests/common/cluster.rs `PullerIdentity`).
    let as_sa = |sa: &str, args: &[&str]| {
        let user = format!("system:serviceaccount:tresor-system:{sa}");
        let mut all = vec!["auth", "can-i", "--as", user.as_str()];
        all.extend_from_slice(args);
        let out = cluster.kubectl(&all);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let deployed = cluster.deployed.service_account.as_str();
    let can = |args: &[&str]| as_sa(deployed, args);
    assert_eq!(can(&["watch", "artifactsyncs.tresor.dev", "-A"]), "yes");
    assert_eq!(
        can(&[
            "patch",
            "artifactsyncs.tresor.dev",
            "--subresource",
            "status",
            "-A"
        ]),
        "yes"
    );
    assert_eq!(
        can(&["update", "artifactsyncs.tresor.dev", "-n", "default"]),
        "no"
    );
    assert_eq!(can(&["list", "secrets", "-A"]), "no");
    assert_eq!(can(&["get", "secrets", "-n", "default"]), "yes");
    assert_eq!(can(&["watch", "trustpolicies.tresor.dev"]), "yes");
    assert_eq!(can(&["create", "trustpolicies.tresor.dev"]), "no");
    assert_eq!(can(&["watch", "deployments.apps", "-A"]), "yes");
    assert_eq!(can(&["patch", "deployments.apps", "-A"]), "no");
    let lease = |name: &str, ns: &str| {
        can(&[
            "update",
            &format!("leases.coordination.k8s.io/{name}"),
            "-n",
            ns,
        ])
    };
    assert_eq!(lease("tresor-puller", "tresor-system"), "yes");
    assert_eq!(lease("another", "tresor-system"), "no");
    assert_eq!(lease("tresor-puller", "default"), "no");
    // Locked down: no apply rights of its own, impersonation and inventories only in
    // namespaces onboarded with deploy/examples/tenant.yaml.
    let onboarded = cluster.namespace("rbac-tenant").await;
    let impersonate = |sa: &str, ns: &str| {
        as_sa(
            sa,
            &["impersonate", "serviceaccounts/tresor-tenant", "-n", ns],
        )
    };
    assert_eq!(impersonate(deployed, &onboarded), "yes");
    assert_eq!(impersonate(deployed, "kube-system"), "no");
    assert_eq!(can(&["create", "configmaps", "-n", &onboarded]), "yes");
    assert_eq!(can(&["patch", "configmaps", "-n", "kube-system"]), "no");
    assert_eq!(can(&["create", "namespaces"]), "no");
    // The opt-out (deploy/components/unconfined) grants apply rights everywhere.
    let unconfined = cluster.unconfined.service_account.as_str();
    assert_eq!(
        as_sa(unconfined, &["patch", "deployments.apps", "-A"]),
        "yes"
    );
    assert_eq!(impersonate(unconfined, "kube-system"), "yes");
    assert!(cluster
        .deployed
        .args
        .contains(&"--no-cross-namespace".to_string()));
    assert!(
        cluster.unconfined.args.is_empty(),
        "{:?}",
        cluster.unconfined.args
    );
    cluster.kubectl(&["delete", "namespace", &onboarded, "--wait=false"]);
}

/// Scenarios 3: a signed sync is applied with its status filled in, follows its tag to a
/// new signed digest, and refuses an unsigned and a foreign-signed tag move, keeping the
/// last good version.
#[tokio::test]
async fn signed_sync_follows_its_tag_and_refuses_unsigned_or_foreign_moves() {
    let t = Tenant::new("signed").await;
    let registry = TestRegistry::plain();
    let key = t.key("release").await;
    let (repo, d1) = t.push(
        &registry,
        None,
        "stable",
        &[
            ("a.yaml", &config_map("a", "one")),
            ("b.yaml", &config_map("b", "two")),
        ],
    );
    t.sign(&registry, &repo, &d1, &key);
    let puller = t.puller(&[]);
    t.create_sync("app", signed_spec(&repo, "stable", "release", "2s"))
        .await;

    let sync = t
        .wait_sync(&puller, "app", SECONDS_60, "applied", |s| ready_at(s, &d1))
        .await;
    let status = sync.status.clone().unwrap();
    assert_eq!(status.last_applied_digest.as_deref(), Some(d1.as_str()));
    assert_eq!(status.last_attempted_digest.as_deref(), Some(d1.as_str()));
    assert!(
        status.signer.as_deref().unwrap().contains("release"),
        "{status:?}"
    );
    assert_eq!(inventory_names(&sync), ["a", "b"]);
    assert_eq!(condition(&sync, "Stalled").map(|c| c.0), None);
    let a = t.config_map("a").await.unwrap();
    assert_eq!(a["data"]["k"], "one");
    assert_eq!(a["metadata"]["labels"][LABEL_NAME], "app");
    assert!(a["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["manager"] == "tresor" && f["operation"] == "Apply"));

    // A new signed digest under the tag is applied.
    let (_, d2) = t.push(
        &registry,
        Some(&repo),
        "stable",
        &[
            ("a.yaml", &config_map("a", "uno")),
            ("b.yaml", &config_map("b", "two")),
        ],
    );
    t.sign(&registry, &repo, &d2, &key);
    t.wait_sync(&puller, "app", SECONDS_30, "at v2", |s| {
        applied(s) == Some(&d2)
    })
    .await;
    assert_eq!(data_k(&t.config_map("a").await).as_deref(), Some("uno"));

    // An unsigned tag move is refused with its reason; v2 stays.
    let (_, d3) = t.push(
        &registry,
        Some(&repo),
        "stable",
        &[("a.yaml", &config_map("a", "evil"))],
    );
    let sync = t
        .wait_sync(&puller, "app", SECONDS_30, "refusing v3", |s| {
            s.status
                .as_ref()
                .and_then(|st| st.last_attempted_digest.as_deref())
                == Some(&d3)
                && has(s, "Ready", "False", "NoSignatures")
        })
        .await;
    assert_eq!(applied(&sync), Some(d2.as_str()));
    assert_eq!(
        condition(&sync, "Stalled").map(|c| (c.0, c.1)),
        Some(("True".into(), "NoSignatures".into()))
    );
    assert_eq!(data_k(&t.config_map("a").await).as_deref(), Some("uno"));
    assert!(t.config_map("b").await.is_some(), "b was not pruned");

    // Signed, but by a key the sync does not trust: refused too.
    let mallory = t.key("mallory").await;
    let (_, d4) = t.push(
        &registry,
        Some(&repo),
        "stable",
        &[("a.yaml", &config_map("a", "mallory"))],
    );
    t.sign(&registry, &repo, &d4, &mallory);
    // Pushed before it is signed: a cycle in between sees it unsigned (`NoSignatures`), and
    // the next one verifies it again and finds the foreign signature.
    let sync = t
        .wait_sync(&puller, "app", SECONDS_30, "refusing v4", |s| {
            s.status
                .as_ref()
                .and_then(|st| st.last_attempted_digest.as_deref())
                == Some(&d4)
                && condition(s, "Ready").is_some_and(|c| c.1 != "NoSignatures")
        })
        .await;
    let (ready, reason, message) = condition(&sync, "Ready").unwrap();
    assert_eq!(ready, "False");
    assert_eq!(reason, "SignatureInvalid", "{message}");
    assert_eq!(applied(&sync), Some(d2.as_str()));
    assert_eq!(data_k(&t.config_map("a").await).as_deref(), Some("uno"));
}

/// Scenario 3: a TrustPolicy covering the namespace and repository refuses a sync that
/// opts out of verification.
#[tokio::test]
async fn covering_trust_policy_refuses_allow_unsigned() {
    let t = Tenant::new("covered").await;
    let registry = TestRegistry::plain();
    t.key("platform").await;
    let (repo, _) = t.push(
        &registry,
        None,
        "v1",
        &[("a.yaml", &config_map("a", "one"))],
    );
    let policy: tresor::api::TrustPolicy = serde_json::from_value(json!({
        "apiVersion": "tresor.dev/v1alpha1", "kind": "TrustPolicy",
        "metadata": {"name": t.ns},
        "spec": {
            "authorities": [{"name": "platform",
                "key": {"secretRef": {"name": "platform", "namespace": t.ns}}}],
            "require": "any",
            "namespaces": {"names": [t.ns]},
            "repositories": [repo.trim_start_matches("oci://")],
        },
    }))
    .unwrap();
    let policies: Api<tresor::api::TrustPolicy> = Api::all(t.client.clone());
    policies
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    let puller = t.puller(&[]);
    t.create_sync("app", unsigned_spec(&repo, "v1", "5m")).await;
    let (sync, reason, message) = t
        .wait_not_ready(&puller, "app", SECONDS_30, "refused")
        .await;
    assert_eq!(reason, "WeakensTrustPolicy", "{message}");
    assert!(message.contains(&t.ns), "names the policy: {message}");
    assert_eq!(applied(&sync), None);
    assert!(t.config_map("a").await.is_none());
    policies
        .delete(&t.ns, &DeleteParams::default())
        .await
        .unwrap();
}

/// Scenario 4: prune on upgrade, the empty-artifact guard, and deletion of the sync
/// (finalizer) pruning what it applied.
#[tokio::test]
async fn prune_on_upgrade_guard_on_empty_and_delete_prunes() {
    let t = Tenant::new("prune").await;
    let registry = TestRegistry::plain();
    let (repo, _, puller) = t
        .applied_unsigned(
            &registry,
            &[
                ("a.yaml", &config_map("a", "one")),
                ("b.yaml", &config_map("b", "two")),
            ],
            "2s",
        )
        .await;
    assert!(t.config_map("b").await.is_some());

    let (_, d2) = t.push(
        &registry,
        Some(&repo),
        "v",
        &[("a.yaml", &config_map("a", "one"))],
    );
    let sync = t
        .wait_sync(&puller, "app", SECONDS_30, "at v2", |s| {
            applied(s) == Some(&d2)
        })
        .await;
    assert_eq!(inventory_names(&sync), ["a"]);
    assert!(t.config_map("b").await.is_none(), "b was pruned");
    assert!(t.config_map("a").await.is_some());

    // An artifact with no objects would delete everything: refused unless allowEmpty.
    let (_, d3) = t.push(
        &registry,
        Some(&repo),
        "v",
        &[("README.md", "nothing here\n")],
    );
    let sync = t
        .wait_sync(&puller, "app", SECONDS_30, "guarded", |s| {
            s.status
                .as_ref()
                .and_then(|st| st.last_attempted_digest.as_deref())
                == Some(&d3)
                && condition(s, "Ready").is_some_and(|c| c.0 == "False")
        })
        .await;
    assert_eq!(condition(&sync, "Ready").unwrap().1, "PruneGuard");
    assert_eq!(applied(&sync), Some(d2.as_str()));
    assert!(t.config_map("a").await.is_some(), "the guard kept a");

    // Back to content, then delete the sync: its finalizer prunes a and the inventory.
    let (_, d4) = t.push(
        &registry,
        Some(&repo),
        "v",
        &[("a.yaml", &config_map("a", "four"))],
    );
    t.wait_sync(&puller, "app", SECONDS_30, "at v4", |s| {
        applied(s) == Some(&d4)
    })
    .await;
    t.syncs()
        .delete("app", &DeleteParams::default())
        .await
        .unwrap();
    eventually(SECONDS_30, "the sync is gone", || async {
        t.syncs().get_opt("app").await.unwrap().is_none()
    })
    .await;
    assert!(t.config_map("a").await.is_none(), "a was pruned on delete");
    assert!(t.config_map("tresor-inventory-app").await.is_none());
}

/// Scenario 4: a suspended sync applies nothing until resumed, and stops following its tag
/// when suspended again.
#[tokio::test]
async fn suspend_stops_applying() {
    let t = Tenant::new("suspend").await;
    let registry = TestRegistry::plain();
    let (repo, d1) = t.push(&registry, None, "v", &[("a.yaml", &config_map("a", "one"))]);
    let puller = t.puller(&[]);
    let mut spec = unsigned_spec(&repo, "v", "1s");
    spec["suspend"] = json!(true);
    t.create_sync("app", spec).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(t.config_map("a").await.is_none(), "applied while suspended");
    assert_eq!(applied(&t.syncs().get("app").await.unwrap()), None);

    t.patch_sync("app", json!({"suspend": false})).await;
    t.wait_sync(&puller, "app", SECONDS_30, "applied", |s| {
        applied(s) == Some(&d1)
    })
    .await;
    t.patch_sync("app", json!({"suspend": true})).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    t.push(
        &registry,
        Some(&repo),
        "v",
        &[("a.yaml", &config_map("a", "two"))],
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(data_k(&t.config_map("a").await).as_deref(), Some("one"));
    assert_eq!(
        applied(&t.syncs().get("app").await.unwrap()),
        Some(d1.as_str())
    );
}

/// Scenario 5: an owned object changed or deleted with kubectl, or stripped of tresor's
/// owner label, is restored by the watch within 5 s, although the interval is 10 minutes;
/// the sync reports it with a `DriftCorrected` Event.
#[tokio::test]
async fn drift_is_undone_within_seconds_through_watches() {
    let t = Tenant::new("drift").await;
    let registry = TestRegistry::plain();
    let (_, _, _puller) = t
        .applied_unsigned(
            &registry,
            &[
                ("a.yaml", &config_map("a", "one")),
                ("b.yaml", &config_map("b", "two")),
            ],
            "10m",
        )
        .await;
    // Let the first cycle's watches start before drifting.
    tokio::time::sleep(Duration::from_secs(2)).await;

    t.cluster.kubectl_ok(&[
        "-n",
        &t.ns,
        "patch",
        "configmap",
        "a",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"k":"changed"}}"#,
    ]);
    eventually(SECONDS_5, "a restored", || async {
        data_k(&t.config_map("a").await).as_deref() == Some("one")
    })
    .await;

    t.cluster
        .kubectl_ok(&["-n", &t.ns, "delete", "configmap", "b", "--wait=false"]);
    eventually(SECONDS_5, "b recreated", || async {
        data_k(&t.config_map("b").await).as_deref() == Some("two")
    })
    .await;
    let b = t.config_map("b").await.unwrap();
    assert_eq!(b["metadata"]["labels"][LABEL_NAME], "app");

    // Removing tresor's owner label takes the object out of the watch's label selection,
    // which is drift too.
    t.cluster.kubectl_ok(&[
        "-n",
        &t.ns,
        "label",
        "configmap",
        "a",
        &format!("{LABEL_NAME}-"),
    ]);
    eventually(SECONDS_5, "a's owner label back", || async {
        t.config_map("a")
            .await
            .is_some_and(|a| a["metadata"]["labels"][LABEL_NAME] == "app")
    })
    .await;

    // Each correction is reported as an Event of the sync.
    eventually(SECONDS_5, "a DriftCorrected Event", || async {
        Api::<k8s_openapi::api::events::v1::Event>::namespaced(t.client.clone(), &t.ns)
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("DriftCorrected")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("app")
            })
    })
    .await;
}

/// Scenario 6: a second sync that would take an object another sync owns reports a
/// conflict naming the owner, and neither takes it from the other: the object is not
/// written again.
#[tokio::test]
async fn second_sync_claiming_an_object_conflicts_without_flapping() {
    let t = Tenant::new("claim").await;
    let registry = TestRegistry::plain();
    let (repo1, d1) = t.push(
        &registry,
        None,
        "v",
        &[("s.yaml", &config_map("shared", "first"))],
    );
    let (repo2, _) = t.push(
        &registry,
        None,
        "v",
        &[("s.yaml", &config_map("shared", "second"))],
    );
    let puller = t.puller(&[]);
    t.create_sync("first", unsigned_spec(&repo1, "v", "1s"))
        .await;
    t.wait_sync(&puller, "first", SECONDS_60, "applied", |s| {
        ready_at(s, &d1)
    })
    .await;
    t.create_sync("second", unsigned_spec(&repo2, "v", "1s"))
        .await;
    let (_, reason, message) = t
        .wait_not_ready(&puller, "second", SECONDS_30, "in conflict")
        .await;
    assert_eq!(reason, "Conflict", "{message}");
    assert!(message.contains("first"), "names the owner: {message}");

    let shared = t.config_map("shared").await.unwrap();
    assert_eq!(shared["data"]["k"], "first");
    assert_eq!(shared["metadata"]["labels"][LABEL_NAME], "first");
    let before = resource_version(&shared);
    let first_status = t
        .syncs()
        .get("first")
        .await
        .unwrap()
        .metadata
        .resource_version;
    // Both syncs run a cycle every second: five cycles each, and nothing is written.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let shared = t.config_map("shared").await.unwrap();
    assert_eq!(
        resource_version(&shared),
        before,
        "the object flapped: {shared}"
    );
    assert_eq!(shared["data"]["k"], "first");
    let first = t.syncs().get("first").await.unwrap();
    assert!(ready_at(&first, &d1), "{:?}", first.status);
    assert_eq!(
        first.metadata.resource_version, first_status,
        "the owner's status was rewritten"
    );
}

/// Scenario 7: with `serviceAccountName`, objects are applied as that account; an account
/// without rights gets a Forbidden condition and nothing is applied.
#[tokio::test]
async fn service_account_without_rights_is_forbidden_and_applies_nothing() {
    let t = Tenant::new("impersonate").await;
    let registry = TestRegistry::plain();
    t.cluster
        .kubectl_ok(&["-n", &t.ns, "create", "serviceaccount", "deployer"]);
    let (repo, d1) = t.push(
        &registry,
        None,
        "v",
        &[
            ("a.yaml", &config_map("a", "one")),
            ("b.yaml", &config_map("b", "two")),
        ],
    );
    let puller = t.puller(&[]);
    let mut spec = unsigned_spec(&repo, "v", "2s");
    spec["serviceAccountName"] = json!("deployer");
    t.create_sync("app", spec).await;
    let (sync, reason, message) = t
        .wait_not_ready(&puller, "app", SECONDS_30, "refused")
        .await;
    assert_eq!(reason, "Forbidden", "{message}");
    assert!(message.contains("deployer"), "names the account: {message}");
    assert!(t.config_map("a").await.is_none());
    assert!(t.config_map("b").await.is_none());
    assert_eq!(applied(&sync), None);

    // Given the rights (the built-in `edit` role in its namespace), the same sync applies.
    t.cluster.kubectl_ok(&[
        "-n",
        &t.ns,
        "create",
        "rolebinding",
        "deployer-edit",
        "--clusterrole",
        "edit",
        "--serviceaccount",
        &format!("{}:deployer", t.ns),
    ]);
    t.wait_sync(&puller, "app", SECONDS_60, "applied", |s| ready_at(s, &d1))
        .await;
    let a = t.config_map("a").await.unwrap();
    let managers: Vec<&str> = a["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["manager"].as_str().unwrap())
        .collect();
    assert_eq!(managers, ["tresor"]);
}

/// Scenario 8: a CRD in the artifact is established before its custom resources are
/// applied, and a Namespace comes before the objects in it, in one cycle.
#[tokio::test]
async fn crds_and_namespaces_are_applied_before_what_needs_them() {
    let t = Tenant::new("order").await;
    let registry = TestRegistry::plain();
    let group = format!("{}.example.com", t.ns);
    let crd = format!(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  \
         name: widgets.{group}\nspec:\n  group: {group}\n  scope: Namespaced\n  names:\n    \
         plural: widgets\n    singular: widget\n    kind: Widget\n    listKind: WidgetList\n  \
         versions:\n  - name: v1\n    served: true\n    storage: true\n    schema:\n      \
         openAPIV3Schema:\n        type: object\n        properties:\n          spec:\n            \
         type: object\n            x-kubernetes-preserve-unknown-fields: true\n"
    );
    let child_ns = format!("{}-child", t.ns);
    // File names sort the custom resource and the namespaced object first: order comes from
    // the kinds, not from the files.
    let files = [
        (
            "0-widget.yaml",
            format!(
                "apiVersion: {group}/v1\nkind: Widget\nmetadata:\n  name: w\n  namespace: {child_ns}\nspec:\n  size: 3\n"
            ),
        ),
        (
            "1-cm.yaml",
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  namespace: {child_ns}\ndata:\n  k: v\n"),
        ),
        ("2-crd.yaml", crd),
        (
            "3-ns.yaml",
            format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {child_ns}\n"),
        ),
    ];
    let files: Vec<(&str, &str)> = files.iter().map(|(n, c)| (*n, c.as_str())).collect();
    let (repo, d1) = t.push(&registry, None, "v", &files);
    // Cluster-scoped objects and another namespace: the opt-out of tenant confinement.
    let puller = t.puller_unconfined(&[]);
    t.create_sync("app", unsigned_spec(&repo, "v", "10m")).await;
    let sync = t
        .wait_sync(&puller, "app", SECONDS_60, "applied", |s| {
            applied(s) == Some(&d1)
        })
        .await;
    assert_eq!(
        condition(&sync, "Ready").unwrap().0,
        "True",
        "{:?}",
        sync.status
    );
    // One cycle did it all: the first attempt was the one that applied.
    assert_eq!(sync.status.as_ref().unwrap().history.len(), 1);
    let widget: Value = serde_json::from_str(&t.cluster.kubectl_ok(&[
        "-n",
        &child_ns,
        "get",
        &format!("widgets.{group}"),
        "w",
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(widget["spec"]["size"], 3);
    t.cluster
        .kubectl_ok(&["-n", &child_ns, "get", "configmap", "c"]);

    // Clean up what is cluster-scoped.
    t.syncs()
        .delete("app", &DeleteParams::default())
        .await
        .unwrap();
    eventually(SECONDS_60, "the sync is gone", || async {
        t.syncs().get_opt("app").await.unwrap().is_none()
    })
    .await;
}

fn deployment(name: &str, image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: 1\n  \
         selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    \
         spec:\n      containers:\n      - name: app\n        image: {image}\n"
    )
}

const IMAGE_1: &str =
    "registry.example/app@sha256:1111111111111111111111111111111111111111111111111111111111111111";
const IMAGE_2: &str =
    "registry.example/app@sha256:2222222222222222222222222222222222222222222222222222222222222222";

/// Scenario 9: ConfigMaps and Services are healthy at once; a Deployment that never becomes
/// available (no kubelet here) times out and is rolled back to the previous version; once
/// its status says available, the sync is Ready.
#[tokio::test]
async fn health_timeout_rolls_back_and_an_available_deployment_is_ready() {
    let t = Tenant::new("health").await;
    let registry = TestRegistry::plain();
    let service =
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ports:\n  - port: 80\n";
    let (repo, d1) = t.push(
        &registry,
        None,
        "v",
        &[("cm.yaml", &config_map("a", "one")), ("svc.yaml", service)],
    );
    let puller = t.puller(&[]);
    // The events the puller reports (issue 14): Applied, then RolledBack.
    let receiver = RecordingServer::start(|_, _| respond(204, &[], Vec::new()));
    let mut spec = unsigned_spec(&repo, "v", "2s");
    spec["wait"] = json!(true);
    spec["rollback"] = json!(true);
    spec["timeout"] = json!("4s");
    spec["notify"] = json!([{"provider": "generic", "address": receiver.url("/events")}]);
    t.create_sync("app", spec).await;
    t.wait_sync(&puller, "app", SECONDS_60, "healthy at v1", |s| {
        ready_at(s, &d1)
    })
    .await;

    let dep = deployment("web", IMAGE_2);
    let (_, d2) = t.push(
        &registry,
        Some(&repo),
        "v",
        &[
            ("cm.yaml", &config_map("a", "two")),
            ("svc.yaml", service),
            ("dep.yaml", &dep),
        ],
    );
    let sync = t
        .wait_sync(&puller, "app", SECONDS_60, "rolled back", |s| {
            s.status
                .as_ref()
                .and_then(|st| st.last_attempted_digest.as_deref())
                == Some(&d2)
                && condition(s, "Ready").is_some_and(|c| c.0 == "False")
        })
        .await;
    let (_, reason, message) = condition(&sync, "Ready").unwrap();
    assert_eq!(reason, "HealthTimeout", "{message}");
    assert!(message.contains("web"), "names the Deployment: {message}");
    assert_eq!(
        applied(&sync),
        Some(d1.as_str()),
        "the last good version is recorded"
    );
    // Rolled back: v1's data again, and the Deployment v1 did not have is gone.
    eventually(SECONDS_30, "v1 restored", || async {
        data_k(&t.config_map("a").await).as_deref() == Some("one")
            && t.get("apps/v1", "Deployment", "web").await.is_none()
    })
    .await;
    let events = || -> Vec<Value> {
        receiver
            .seen()
            .iter()
            .map(|r| serde_json::from_slice(&r.body).unwrap())
            .collect()
    };
    let rolled_back = |events: &[Value]| -> Vec<Value> {
        events
            .iter()
            .filter(|e| e["reason"] == "RolledBack")
            .cloned()
            .collect()
    };
    eventually(SECONDS_30, "the rollback reported", || async {
        !rolled_back(&events()).is_empty()
    })
    .await;
    let all = events();
    assert_eq!(
        (&all[0]["reason"], &all[0]["digest"]),
        (&json!("Applied"), &json!(d1))
    );
    // Between them, a loaded machine may report a transient failure (a cycle timeout), and
    // the rollback again after it: always the same event.
    let rolled_back = rolled_back(&all);
    assert!(
        rolled_back.iter().all(|e| e["id"] == rolled_back[0]["id"]),
        "{all:?}"
    );
    assert_eq!(rolled_back[0]["digest"], d2);
    assert_eq!(
        rolled_back[0]["applied"], d1,
        "what is in place after the rollback"
    );
    assert!(
        rolled_back[0]["message"]
            .as_str()
            .unwrap()
            .contains("HealthTimeout"),
        "{}",
        rolled_back[0]
    );

    // The same Deployment, available: patch its status as a kubelet-backed controller would.
    let (_, d3) = t.push(
        &registry,
        Some(&repo),
        "v",
        &[
            ("svc.yaml", service),
            ("dep.yaml", &deployment("web", IMAGE_1)),
        ],
    );
    let deployments: Api<DynamicObject> = Api::namespaced_with(
        t.client.clone(),
        &t.ns,
        &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "apps",
            "v1",
            "Deployment",
        )),
    );
    eventually(SECONDS_60, "v3 applied and available", || async {
        if let Some(dep) = deployments.get_opt("web").await.unwrap() {
            let generation = dep.metadata.generation.unwrap_or(1);
            let status = json!({"status": {
                "observedGeneration": generation, "replicas": 1, "updatedReplicas": 1,
                "readyReplicas": 1, "availableReplicas": 1,
                "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                    "lastTransitionTime": "2026-01-01T00:00:00Z", "lastUpdateTime": "2026-01-01T00:00:00Z",
                    "message": "ok"},
                    {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                    "lastTransitionTime": "2026-01-01T00:00:00Z", "lastUpdateTime": "2026-01-01T00:00:00Z",
                    "message": "ok"}]}});
            let _ = deployments
                .patch_status("web", &PatchParams::default(), &Patch::Merge(status))
                .await;
        }
        let sync = t.syncs().get("app").await.unwrap();
        ready_at(&sync, &d3)
    })
    .await;
    assert!(t.config_map("a").await.is_none(), "v3 pruned the ConfigMap");
}

/// Scenario 10: two pullers with `--leader-elect` share one Lease; only the leader writes,
/// and when it is killed the other takes over within the lease duration.
#[tokio::test]
async fn leader_election_has_one_writer_and_a_takeover_after_a_kill() {
    let t = Tenant::new("leader").await;
    let registry = TestRegistry::plain();
    let (repo, d1) = t.push(&registry, None, "v", &[("a.yaml", &config_map("a", "one"))]);
    let mut first = t.puller(&["--leader-elect"]);
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(t.client.clone(), "tresor-system");
    // A Lease left by an earlier run must not be held by a live foreign process: start from
    // whoever holds it now, and wait until it is ours.
    let holder = || async {
        leases
            .get_opt("tresor-puller")
            .await
            .unwrap()
            .and_then(|l| l.spec?.holder_identity)
    };
    eventually(
        Duration::from_secs(90),
        "the first puller leads",
        || async { holder().await.as_deref() == Some(first.name.as_str()) },
    )
    .await;
    let second = t.puller(&["--leader-elect"]);
    // Both are Ready (issue 12): the standby too, as controller-runtime's; the body says
    // which one leads.
    for (puller, body) in [(&first, "ok: leading\n"), (&second, "ok: standby\n")] {
        let (health, _) = puller.addrs();
        eventually(
            SECONDS_30,
            &format!("{} answers {body:?}", puller.name),
            || async { http_get(&health, "/readyz") == (200, body.to_string()) },
        )
        .await;
    }
    t.create_sync("app", unsigned_spec(&repo, "v", "2s")).await;
    t.wait_sync(&first, "app", SECONDS_60, "applied", |s| {
        applied(s) == Some(&d1)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(first.logged("verified"), "{}", first.log_tail());
    assert!(
        !second.logged("verified"),
        "the follower reconciled:\n{}",
        second.log_tail()
    );
    assert_eq!(holder().await.as_deref(), Some(first.name.as_str()));

    first.kill();
    let lease = leases.get("tresor-puller").await.unwrap().spec.unwrap();
    let duration = Duration::from_secs(lease.lease_duration_seconds.unwrap() as u64);
    let killed = std::time::Instant::now();
    eventually(duration + SECONDS_5, "the second puller leads", || async {
        holder().await.as_deref() == Some(second.name.as_str())
    })
    .await;
    assert!(killed.elapsed() <= duration + SECONDS_5);
    let (_, d2) = t.push(
        &registry,
        Some(&repo),
        "v",
        &[("a.yaml", &config_map("a", "two"))],
    );
    t.wait_sync(
        &second,
        "app",
        SECONDS_30,
        "applied by the new leader",
        |s| applied(s) == Some(&d2),
    )
    .await;
    assert_eq!(data_k(&t.config_map("a").await).as_deref(), Some("two"));
}

/// Scenario 11: `tresor apply --prune --wait` and `tresor status` against the server.
#[tokio::test]
async fn cli_apply_prunes_and_waits_and_status_lists_syncs() {
    let t = Tenant::new("cli").await;
    let registry = TestRegistry::plain();
    let service =
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ports:\n  - port: 80\n";
    let (repo, _) = t.push(
        &registry,
        None,
        "v1",
        &[("a.yaml", &config_map("a", "one")), ("svc.yaml", service)],
    );
    let kubeconfig = t.cluster.kubeconfig.to_str().unwrap().to_string();
    let apply = |tag: &str| {
        registry.tresor(&[
            "apply",
            &format!("{repo}:{tag}"),
            "--kubeconfig",
            &kubeconfig,
            "-n",
            &t.ns,
            "--name",
            "cli",
            "--prune",
            "--wait",
            "--allow-unsigned",
        ])
    };
    let out = common::stdout_of(apply("v1"));
    assert!(out.contains("ConfigMap"), "{out}");
    assert_eq!(data_k(&t.config_map("a").await).as_deref(), Some("one"));
    assert!(t.get("v1", "Service", "web").await.is_some());

    t.push(&registry, Some(&repo), "v2", &[("svc.yaml", service)]);
    common::stdout_of(apply("v2"));
    assert!(t.config_map("a").await.is_none(), "pruned");
    let inventory = t.config_map("tresor-inventory-cli").await.unwrap();
    assert!(!inventory.to_string().contains("\"a\""), "{inventory}");

    // Another name may not take the Service `cli` applied, unless forced.
    let other = |force: bool| {
        let mut cmd = registry.tresor(&[
            "apply",
            &format!("{repo}:v2"),
            "--kubeconfig",
            &kubeconfig,
            "-n",
            &t.ns,
            "--name",
            "other",
            "--allow-unsigned",
        ]);
        if force {
            cmd.arg("--force-conflicts");
        }
        cmd
    };
    let out = other(false).output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{report}");
    assert!(
        report.contains(&format!("belongs to {}/cli", t.ns)),
        "names the owner: {report}"
    );
    let web = t.get("v1", "Service", "web").await.unwrap();
    assert_eq!(web["metadata"]["labels"][LABEL_NAME], "cli");
    common::stdout_of(other(true));
    let web = t.get("v1", "Service", "web").await.unwrap();
    assert_eq!(web["metadata"]["labels"][LABEL_NAME], "other");

    // `tresor status` lists what the puller reports.
    let (repo2, d) = t.push(&registry, None, "v", &[("b.yaml", &config_map("b", "two"))]);
    let puller = t.puller(&[]);
    t.create_sync("shop", unsigned_spec(&repo2, "v", "5m"))
        .await;
    t.wait_sync(&puller, "shop", SECONDS_60, "applied", |s| {
        applied(s) == Some(&d)
    })
    .await;
    let mut status = common::tresor();
    status.args([
        "status",
        "--kubeconfig",
        &kubeconfig,
        "-n",
        &t.ns,
        "--format",
        "json",
    ]);
    let json = common::json_of(status);
    let text = json.to_string();
    assert!(text.contains("shop") && text.contains(&d), "{json}");
}

/// Scenario 12: with the registry gone, the sync keeps its status and drift is still
/// corrected from the verified cache; with the registry back, new versions apply again.
#[tokio::test]
async fn registry_outage_keeps_status_and_drift_is_corrected_from_the_cache() {
    let t = Tenant::new("outage").await;
    let mut own = OwnRegistry::start();
    let registry = own.registry();
    let key = t.key("release").await;
    let (repo, d1) = t.push(&registry, None, "v", &[("a.yaml", &config_map("a", "one"))]);
    t.sign(&registry, &repo, &d1, &key);
    let puller = t.puller(&[]);
    let mut spec = signed_spec(&repo, "v", "release", "2s");
    spec["timeout"] = json!("20s");
    t.create_sync("app", spec).await;
    t.wait_sync(&puller, "app", SECONDS_60, "applied", |s| {
        applied(s) == Some(&d1)
    })
    .await;

    own.stop();
    // Cycles fail to resolve; the status keeps the last applied digest and says why.
    let sync = t
        .wait_sync(&puller, "app", SECONDS_30, "reporting the outage", |s| {
            condition(s, "Ready").is_some_and(|c| c.0 == "False")
        })
        .await;
    assert_eq!(applied(&sync), Some(d1.as_str()));
    assert_eq!(inventory_names(&sync), ["a"]);
    let (_, reason, message) = condition(&sync, "Ready").unwrap();
    assert_eq!(reason, "RegistryUnreachable", "{message}");

    t.cluster.kubectl_ok(&[
        "-n",
        &t.ns,
        "patch",
        "configmap",
        "a",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"k":"changed"}}"#,
    ]);
    eventually(SECONDS_5 * 2, "a restored from the cache", || async {
        data_k(&t.config_map("a").await).as_deref() == Some("one")
    })
    .await;

    own.resume();
    let (_, d2) = t.push(
        &registry,
        Some(&repo),
        "v",
        &[("a.yaml", &config_map("a", "two"))],
    );
    t.sign(&registry, &repo, &d2, &key);
    t.wait_sync(&puller, "app", SECONDS_30, "at v2", |s| ready_at(s, &d2))
        .await;
    assert_eq!(data_k(&t.config_map("a").await).as_deref(), Some("two"));
}

/// Scenario 2: a puller identity missing rights (here: no drift watches and no
/// tresor-puller-tenant in the namespace, only the puller's own ClusterRole) reports
/// Forbidden on the sync and keeps running.
#[tokio::test]
async fn puller_missing_a_right_reports_forbidden_and_keeps_running() {
    let t = Tenant::new("rights").await;
    let registry = TestRegistry::plain();
    let sa = format!("limited-{}", t.ns);
    t.cluster
        .kubectl_ok(&["-n", "tresor-system", "create", "serviceaccount", &sa]);
    t.cluster.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        &sa,
        "--clusterrole",
        &t.cluster.deployed.role("tresor-puller"),
        "--serviceaccount",
        &format!("tresor-system:{sa}"),
    ]);
    let kubeconfig = t.cluster.service_account_kubeconfig("tresor-system", &sa);
    // Without tresor-puller-tenant in the namespace, the puller may neither keep the
    // inventory there nor impersonate the tenant's account.
    let service =
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ports:\n  - port: 80\n";
    let (repo, _) = t.push(&registry, None, "v", &[("svc.yaml", service)]);
    let mut puller = t.cluster.puller_as(&kubeconfig, &t.ns, &[]);
    t.create_sync("app", unsigned_spec(&repo, "v", "2s")).await;
    let (_, reason, message) = t
        .wait_not_ready(&puller, "app", SECONDS_30, "forbidden")
        .await;
    assert_eq!(reason, "Forbidden", "{message}");
    assert!(
        message.contains("tresor-inventory-app"),
        "names the object: {message}"
    );
    assert!(
        message.contains("tresor-puller-tenant"),
        "says how to onboard the namespace: {message}"
    );
    assert!(t.get("v1", "Service", "web").await.is_none());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(puller.alive(), "the puller exited:\n{}", puller.log_tail());
    t.cluster
        .kubectl_ok(&["delete", "clusterrolebinding", &sa, "--wait=false"]);
}

/// How a sync's engine gets rebuilt from what the cluster records, in the tests below.
#[derive(Clone, Copy, Debug)]
enum Rebuild {
    /// The puller restarts.
    Restart,
    /// The sync's pull Secret changes (a new engine, same spec).
    PullSecret,
}

/// A pull Secret for `repo`'s registry with `password` (the plain registry ignores it).
fn pull_secret(repo: &str, password: &str) -> k8s_openapi::api::core::v1::Secret {
    let host = repo.trim_start_matches("oci://").split('/').next().unwrap();
    let config = json!({"auths": {host: {"username": "tenant", "password": password}}});
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "pull"},
        "type": "kubernetes.io/dockerconfigjson",
        "stringData": {".dockerconfigjson": config.to_string()},
    }))
    .unwrap()
}

/// Issue 12, point 3: the inventory ConfigMap lives in the tenant's namespace, so it is no
/// source of trust. Artifact X is unsigned; a lax sync (allowUnsigned) applies it, so X is
/// in the puller's shared cache. A strict sync pinned to X (key required) is refused. The
/// tenant then writes the strict sync's inventory to say X is applied, and the strict
/// engine is rebuilt from it (`rebuild`). Nothing of X may be applied for the strict sync:
/// it stays refused, with the verifier's reason, and X's object never appears in its target
/// namespace.
async fn forged_inventory_is_verified_again(rebuild: Rebuild) {
    let t = Tenant::new("forged").await;
    let strict_target = Tenant::new("forged-target").await;
    let registry = TestRegistry::plain();
    // The key Secret the strict sync names; nothing is signed with it.
    t.key("release").await;
    let (repo, x) = t.push(
        &registry,
        None,
        "v",
        &[("a.yaml", &config_map("payload", "x"))],
    );
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(t.client.clone(), &t.ns);
    secrets
        .create(&PostParams::default(), &pull_secret(&repo, "one"))
        .await
        .unwrap();

    // The strict sync applies into another namespace: the opt-out of tenant confinement.
    let mut puller = t.puller_unconfined(&[]);
    t.create_sync("lax", unsigned_spec(&repo, "v", "2s")).await;
    t.wait_sync(&puller, "lax", SECONDS_60, "applied", |s| ready_at(s, &x))
        .await;
    let mut strict = signed_spec(&repo, "v", "release", "2s");
    strict["ref"] = json!({"digest": x});
    strict["targetNamespace"] = json!(strict_target.ns);
    strict["pullSecretRef"] = json!({"name": "pull"});
    t.create_sync("strict", strict).await;
    let (_, reason, _) = t
        .wait_not_ready(&puller, "strict", SECONDS_30, "refused")
        .await;
    assert_eq!(reason, "NoSignatures");
    let observed = |s: &ArtifactSync| {
        s.status.as_ref().and_then(|st| st.observed_generation) == s.metadata.generation
    };
    t.wait_sync(&puller, "strict", SECONDS_30, "observed", observed)
        .await;

    let objects = json!([{"group": "", "version": "v1", "kind": "ConfigMap",
        "namespace": strict_target.ns, "name": "payload"}]);
    let forged: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "tresor-inventory-strict", "namespace": t.ns},
        "data": {"digest": x, "healthy": x, "objects": objects.to_string()},
    }))
    .unwrap();
    let config_maps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(t.client.clone(), &t.ns);
    config_maps
        .patch(
            "tresor-inventory-strict",
            &PatchParams::apply("tenant").force(),
            &Patch::Apply(&forged),
        )
        .await
        .unwrap();
    match rebuild {
        Rebuild::Restart => {
            puller.kill();
            puller = t.puller_unconfined(&[]);
        }
        Rebuild::PullSecret => {
            secrets
                .replace("pull", &PostParams::default(), &pull_secret(&repo, "two"))
                .await
                .unwrap();
        }
    }
    // Several cycles of the rebuilt engine: still refused, and X never applied for it.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let sync = t.syncs().get("strict").await.unwrap();
    let (status, reason, message) = condition(&sync, "Ready").unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "NoSignatures"),
        "{message}\npuller log:\n{}",
        puller.log_tail()
    );
    assert_eq!(
        strict_target.config_map("payload").await,
        None,
        "the unsigned artifact was applied for the strict sync\npuller log:\n{}",
        puller.log_tail()
    );
}

#[tokio::test]
async fn forged_inventory_after_a_restart_is_verified_again() {
    forged_inventory_is_verified_again(Rebuild::Restart).await;
}

#[tokio::test]
async fn forged_inventory_after_a_pull_secret_change_is_verified_again() {
    forged_inventory_is_verified_again(Rebuild::PullSecret).await;
}
