//! Tenant lockdown on the real API server (issue 12 point 7, issue 17 "RBAC that matches
//! the code"): the puller as deploy/ runs it (`--default-service-account=tresor-tenant
//! --no-cross-namespace`, with a copy of deploy/'s RBAC; tests/common/cluster.rs), every
//! test namespace onboarded as deploy/examples/tenant.yaml shows.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::cluster::{
    applied, condition, config_map, eventually, has, ready_at, unsigned_spec, Tenant, SECONDS_30,
    SECONDS_60,
};
use common::TestRegistry;
use kube::api::DeleteParams;
use serde_json::json;

fn managers(object: &serde_json::Value) -> Vec<String> {
    object["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["manager"].as_str().unwrap().to_string())
        .collect()
}

/// `--default-service-account`: a sync without `serviceAccountName` applies as
/// `tresor-tenant` of its own namespace. Without rights it is Forbidden (naming that
/// account) and applies nothing; given `edit`, the same sync applies; deleting it prunes
/// as the same account (without the rights the finalizer stays and the objects too).
#[tokio::test]
async fn default_service_account_bounds_apply_and_delete() {
    let t = Tenant::without_rights("tenancy-default").await;
    let registry = TestRegistry::plain();
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
    t.create_sync("app", unsigned_spec(&repo, "v", "2s")).await;
    let (sync, reason, message) = t
        .wait_not_ready(&puller, "app", SECONDS_30, "refused")
        .await;
    assert_eq!(reason, "Forbidden", "{message}");
    let account = format!("system:serviceaccount:{}:tresor-tenant", t.ns);
    assert!(message.contains(&account), "names the account: {message}");
    assert!(t.config_map("a").await.is_none());
    assert!(t.config_map("b").await.is_none());
    assert_eq!(applied(&sync), None);

    let grant = || {
        t.cluster.kubectl_ok(&[
            "-n",
            &t.ns,
            "create",
            "rolebinding",
            "tresor-tenant",
            "--clusterrole",
            "edit",
            "--serviceaccount",
            &format!("{}:tresor-tenant", t.ns),
        ])
    };
    grant();
    t.wait_sync(&puller, "app", SECONDS_60, "applied", |s| ready_at(s, &d1))
        .await;
    assert_eq!(managers(&t.config_map("a").await.unwrap()), ["tresor"]);

    // Deletion prunes with the same identity: without its rights nothing is deleted.
    t.cluster
        .kubectl_ok(&["-n", &t.ns, "delete", "rolebinding", "tresor-tenant"]);
    t.syncs()
        .delete("app", &DeleteParams::default())
        .await
        .unwrap();
    let sync = t
        .wait_sync(&puller, "app", SECONDS_30, "refused to delete", |s| {
            condition(s, "Ready").is_some_and(|(_, _, m)| m.contains("cannot delete"))
        })
        .await;
    let (_, reason, message) = condition(&sync, "Ready").unwrap();
    assert_eq!(reason, "Forbidden", "{message}");
    assert!(message.contains(&account), "names the account: {message}");
    assert!(t.config_map("a").await.is_some(), "a was deleted anyway");
    grant();
    eventually(SECONDS_60, "the sync is gone", || async {
        t.syncs().get_opt("app").await.unwrap().is_none()
    })
    .await;
    assert!(t.config_map("a").await.is_none(), "a was pruned on delete");
    assert!(t.config_map("b").await.is_none(), "b was pruned on delete");
}

/// `--no-cross-namespace`: `targetNamespace` naming another namespace, and an object naming
/// another namespace, are Stalled `CrossNamespace` naming object and namespace, with
/// nothing applied — although the tenant's account could write there (the refusal is the
/// puller's, not the server's).
#[tokio::test]
async fn no_cross_namespace_refuses_other_namespaces_before_applying() {
    let t = Tenant::new("tenancy-xns").await;
    let other = Tenant::new("tenancy-xns-other").await;
    // The tenant's account may write in the other namespace too.
    t.cluster.kubectl_ok(&[
        "-n",
        &other.ns,
        "create",
        "rolebinding",
        "from-tenant",
        "--clusterrole",
        "edit",
        "--serviceaccount",
        &format!("{}:tresor-tenant", t.ns),
    ]);
    let registry = TestRegistry::plain();
    let puller = t.puller(&[]);

    let (repo, _) = t.push(&registry, None, "v", &[("a.yaml", &config_map("a", "one"))]);
    let mut spec = unsigned_spec(&repo, "v", "2s");
    spec["targetNamespace"] = json!(other.ns);
    t.create_sync("target", spec).await;
    let sync = t
        .wait_sync(&puller, "target", SECONDS_30, "stalled", |s| {
            has(s, "Stalled", "True", "CrossNamespace")
        })
        .await;
    let (status, _, message) = condition(&sync, "Ready").unwrap();
    assert_eq!(status, "False");
    assert!(
        message.contains(&other.ns),
        "names the namespace: {message}"
    );
    assert!(message.contains("targetNamespace"), "{message}");
    assert!(other.config_map("a").await.is_none());
    assert!(t.config_map("a").await.is_none());

    // One object of the artifact names the other namespace: none of it is applied.
    let elsewhere = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: elsewhere\n  namespace: {}\ndata:\n  k: v\n",
        other.ns
    );
    let (repo, _) = t.push(
        &registry,
        None,
        "v",
        &[
            ("a.yaml", &config_map("home", "one")),
            ("b.yaml", &elsewhere),
        ],
    );
    t.create_sync("objects", unsigned_spec(&repo, "v", "2s"))
        .await;
    let sync = t
        .wait_sync(&puller, "objects", SECONDS_30, "stalled", |s| {
            has(s, "Stalled", "True", "CrossNamespace")
        })
        .await;
    let (_, _, message) = condition(&sync, "Ready").unwrap();
    assert!(
        message.contains(&format!("ConfigMap {}/elsewhere", other.ns)),
        "names the object: {message}"
    );
    assert!(t.config_map("home").await.is_none(), "half-applied");
    assert!(other.config_map("elsewhere").await.is_none());
    assert_eq!(applied(&sync), None);
}

/// A cluster-scoped object (a Namespace) passes `--no-cross-namespace`, and the server
/// decides with the tenant's account: Forbidden (nothing of the artifact applied) until a
/// ClusterRole lets it, then applied; deleting the sync prunes it as that account.
#[tokio::test]
async fn cluster_scoped_objects_need_a_cluster_role_for_the_tenant() {
    let t = Tenant::new("tenancy-cluster").await;
    let registry = TestRegistry::plain();
    let extra = format!("{}-extra", t.ns);
    let (repo, d1) = t.push(
        &registry,
        None,
        "v",
        &[
            (
                "ns.yaml",
                &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {extra}\n"),
            ),
            ("a.yaml", &config_map("a", "one")),
        ],
    );
    let puller = t.puller(&[]);
    t.create_sync("app", unsigned_spec(&repo, "v", "2s")).await;
    let (_, reason, message) = t
        .wait_not_ready(&puller, "app", SECONDS_30, "refused")
        .await;
    assert_eq!(reason, "Forbidden", "{message}");
    assert!(message.contains(&format!("Namespace/{extra}")), "{message}");
    assert!(message.contains("tresor-tenant"), "{message}");
    assert!(t.get("v1", "Namespace", &extra).await.is_none());
    assert!(t.config_map("a").await.is_none(), "half-applied");

    let role = format!("{}-namespaces", t.ns);
    t.cluster.kubectl_ok(&[
        "create",
        "clusterrole",
        &role,
        "--verb=get,create,patch,delete",
        "--resource=namespaces",
    ]);
    t.cluster.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        &role,
        "--clusterrole",
        &role,
        "--serviceaccount",
        &format!("{}:tresor-tenant", t.ns),
    ]);
    t.wait_sync(&puller, "app", SECONDS_60, "applied", |s| ready_at(s, &d1))
        .await;
    assert!(t.get("v1", "Namespace", &extra).await.is_some());
    assert!(t.config_map("a").await.is_some());

    t.syncs()
        .delete("app", &DeleteParams::default())
        .await
        .unwrap();
    eventually(SECONDS_60, "the sync is gone", || async {
        t.syncs().get_opt("app").await.unwrap().is_none()
    })
    .await;
    let gone = t.get("v1", "Namespace", &extra).await;
    assert!(
        gone.is_none_or(|ns| ns["metadata"]["deletionTimestamp"].is_string()),
        "the Namespace was pruned"
    );
    for kind in ["clusterrolebinding", "clusterrole"] {
        t.cluster.kubectl(&["delete", kind, &role, "--wait=false"]);
    }
}

/// Issue 17: an artifact whose RBAC grants more than the tenant's account holds is refused
/// by the server's escalation check; the condition says `RbacEscalation` and names the
/// missing right (`escalate` for a Role, `bind` and the role for a RoleBinding). With the
/// rights docs/puller.md names, the same syncs apply.
#[tokio::test]
async fn rbac_escalation_names_the_missing_right() {
    let t = Tenant::new("tenancy-rbac").await;
    let account = format!("{}:tresor-tenant", t.ns);
    // `admin` in its namespace: it may write Roles and RoleBindings, within what it holds.
    t.cluster.kubectl_ok(&[
        "-n",
        &t.ns,
        "create",
        "rolebinding",
        "tresor-tenant-admin",
        "--clusterrole",
        "admin",
        "--serviceaccount",
        &account,
    ]);
    let registry = TestRegistry::plain();
    let role =
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: everything\n\
                rules:\n- apiGroups: [\"*\"]\n  resources: [\"*\"]\n  verbs: [\"*\"]\n";
    let binding = format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: root\n\
         roleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: cluster-admin\n\
         subjects:\n- kind: ServiceAccount\n  name: default\n  namespace: {}\n",
        t.ns
    );
    let (role_repo, role_digest) = t.push(&registry, None, "v", &[("role.yaml", role)]);
    let (binding_repo, binding_digest) =
        t.push(&registry, None, "v", &[("binding.yaml", &binding)]);
    let puller = t.puller(&[]);
    t.create_sync("role", unsigned_spec(&role_repo, "v", "2s"))
        .await;
    t.create_sync("binding", unsigned_spec(&binding_repo, "v", "2s"))
        .await;
    let (_, reason, message) = t
        .wait_not_ready(&puller, "role", SECONDS_30, "refused")
        .await;
    assert_eq!(reason, "RbacEscalation", "{message}");
    assert!(message.contains("`escalate` on roles"), "{message}");
    assert!(
        message.contains(&format!("system:serviceaccount:{account}")),
        "{message}"
    );
    let (_, reason, message) = t
        .wait_not_ready(&puller, "binding", SECONDS_30, "refused")
        .await;
    assert_eq!(reason, "RbacEscalation", "{message}");
    assert!(
        message.contains("`bind` on clusterroles/cluster-admin"),
        "{message}"
    );
    assert!(t
        .get("rbac.authorization.k8s.io/v1", "Role", "everything")
        .await
        .is_none());
    assert!(t
        .get("rbac.authorization.k8s.io/v1", "RoleBinding", "root")
        .await
        .is_none());

    // The rights docs/puller.md names: escalate on roles, bind on the one ClusterRole.
    let rights = format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: tresor-tenant-rbac\n  namespace: {ns}\n\
         rules:\n- apiGroups: [rbac.authorization.k8s.io]\n  resources: [roles]\n  verbs: [escalate]\n\
         - apiGroups: [rbac.authorization.k8s.io]\n  resources: [clusterroles]\n  resourceNames: [cluster-admin]\n  verbs: [bind]\n\
         ---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: tresor-tenant-rbac\n  namespace: {ns}\n\
         roleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: Role\n  name: tresor-tenant-rbac\n\
         subjects:\n- kind: ServiceAccount\n  name: tresor-tenant\n  namespace: {ns}\n",
        ns = t.ns
    );
    t.cluster.apply_yaml(&rights);
    t.wait_sync(&puller, "role", SECONDS_60, "applied", |s| {
        ready_at(s, &role_digest)
    })
    .await;
    t.wait_sync(&puller, "binding", SECONDS_60, "applied", |s| {
        ready_at(s, &binding_digest)
    })
    .await;
}

/// The Role of docs/puller.md "Adding a tenant" that lists the ServiceAccounts the puller
/// may impersonate (`resourceNames`), bound instead of `tresor-puller-tenant`: syncs
/// applying as a listed account work, a sync naming another account of the namespace —
/// one with rights of its own — is `Forbidden` by the server, saying the puller may not act
/// as it, and nothing of it is applied.
#[tokio::test]
async fn a_tenant_role_with_resource_names_limits_whom_the_puller_impersonates() {
    let t = Tenant::new("tenancy-named").await;
    let docs = std::fs::read_to_string(common::cluster::repo_dir().join("docs/puller.md")).unwrap();
    let start = docs
        .find("kind: Role            # in the tenant namespace")
        .expect("docs/puller.md shows the tenant Role");
    let block = &docs[start..];
    let block = &block[..block.find("```").unwrap()];
    let rules = &block[block.find("rules:").unwrap()..];
    assert!(
        rules.contains("resourceNames: [\"tresor-tenant\", \"deployer\"]"),
        "{rules}"
    );
    // The onboarding's RoleBinding to the ClusterRole goes; the documented Role replaces it.
    t.cluster
        .kubectl_ok(&["-n", &t.ns, "delete", "rolebinding", "tresor-puller"]);
    t.cluster.apply_yaml(&format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: tresor-puller-named\n  namespace: {ns}\n\
         {rules}---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: tresor-puller-named\n  namespace: {ns}\n\
         roleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: Role\n  name: tresor-puller-named\n\
         subjects:\n- kind: ServiceAccount\n  name: {puller}\n  namespace: tresor-system\n",
        ns = t.ns,
        puller = t.cluster.deployed.service_account,
    ));
    // Two more accounts, both with `edit`: only the listed one may be impersonated.
    for account in ["deployer", "operator"] {
        t.cluster
            .kubectl_ok(&["-n", &t.ns, "create", "serviceaccount", account]);
        t.cluster.kubectl_ok(&[
            "-n",
            &t.ns,
            "create",
            "rolebinding",
            account,
            "--clusterrole",
            "edit",
            "--serviceaccount",
            &format!("{}:{account}", t.ns),
        ]);
    }
    let registry = TestRegistry::plain();
    let mut digests = Vec::new();
    let puller = t.puller(&[]);
    for (sync, account) in [
        ("default", None),
        ("deployer", Some("deployer")),
        ("operator", Some("operator")),
    ] {
        let (repo, digest) = t.push(
            &registry,
            None,
            "v",
            &[("cm.yaml", &config_map(&format!("{sync}-cm"), "x"))],
        );
        let mut spec = unsigned_spec(&repo, "v", "2s");
        if let Some(account) = account {
            spec["serviceAccountName"] = json!(account);
        }
        t.create_sync(sync, spec).await;
        digests.push(digest);
    }
    for (sync, digest) in ["default", "deployer"].iter().zip(&digests) {
        t.wait_sync(&puller, sync, SECONDS_60, "applied", |s| {
            ready_at(s, digest)
        })
        .await;
        let cm = t.config_map(&format!("{sync}-cm")).await.unwrap();
        assert_eq!(managers(&cm), ["tresor"]);
    }
    let (sync, reason, message) = t
        .wait_not_ready(&puller, "operator", SECONDS_30, "refused")
        .await;
    assert_eq!(reason, "Forbidden", "{message}");
    let operator = format!("system:serviceaccount:{}:operator", t.ns);
    assert!(
        message.contains("may not act as") && message.contains(&operator),
        "says the puller may not impersonate {operator}: {message}"
    );
    assert_eq!(applied(&sync), None);
    assert!(t.config_map("operator-cm").await.is_none());
}
