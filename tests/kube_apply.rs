//! The Kubernetes apply step against the in-process API double (tests/common/kube_api.rs)
//! through a real `kube::Client`: staged apply, CRDs, update, prune and its guard, drift,
//! field-manager conflicts, health, rollback, impersonation, verification failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::fake_registry::{Content, FakeRegistry};
use common::kube_api::{KubeApi, Rule};
use kube::api::{DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::Api;
use serde_json::{json, Value};
use tresor::artifact::archive::Limits;
use tresor::artifact::fetch::ResolvedArtifact;
use tresor::digest::Digest;
use tresor::kube::{
    ApplyError, ApplyOptions, Cluster, DiscoveryResolver, KubeApplier, KubeDrift, ObjectRef, Owner,
    ResourceResolver, StaticResolver, LABEL_NAME,
};
use tresor::reconcile::cache::Cache;
use tresor::reconcile::source::Source;
use tresor::reconcile::{
    Applier, BoxFuture, Cancel, Engine, NoPolicy, Outcome, Step, StepError, VerifiedBy, Verifier,
    VerifyRejected,
};
use tresor::registry::{RegistryOptions, Repository};

fn owner() -> Owner {
    Owner {
        name: "shop".into(),
        namespace: "default".into(),
    }
}

fn options() -> ApplyOptions {
    let mut o = ApplyOptions::new(owner());
    o.target_namespace = Some("shop".into());
    o.prune = true;
    o.poll = Duration::from_millis(20);
    o.api_timeout = Duration::from_secs(5);
    o.crd_timeout = Duration::from_secs(5);
    o.health_timeout = Duration::from_millis(400);
    o
}

struct Setup {
    api: KubeApi,
    _staging: tempfile::TempDir,
    applier: KubeApplier,
}

fn setup_with(delay: Duration, user: Option<&str>, tweak: impl FnOnce(&mut ApplyOptions)) -> Setup {
    let api = KubeApi::start(delay);
    let staging = tempfile::tempdir().unwrap();
    let client = api.client(user);
    let resolver = Arc::new(DiscoveryResolver::new(
        client.clone(),
        Duration::from_secs(5),
    ));
    let cluster = Cluster::new(client, resolver, user.map(str::to_string));
    let mut o = options();
    tweak(&mut o);
    let applier = KubeApplier::new(cluster, o, staging.path());
    Setup {
        api,
        _staging: staging,
        applier,
    }
}

fn setup() -> Setup {
    setup_with(Duration::from_millis(300), None, |_| {})
}

fn digest(n: u8) -> Digest {
    Digest::of(&[n])
}

fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

fn config_map(name: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data})
}

fn deployment(name: &str, image: &str, replicas: i64) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}]}}}})
}

fn widget_crd() -> Value {
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.acme.dev"},
        "spec": {"group": "acme.dev", "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}})
}

fn widget(name: &str) -> Value {
    json!({"apiVersion": "acme.dev/v1", "kind": "Widget", "metadata": {"name": name},
        "spec": {"size": 3}})
}

/// What the engine does after a successful apply: prune the previous version, then health.
async fn deploy(
    a: &mut KubeApplier,
    d: &Digest,
    manifests: Vec<Value>,
) -> Result<Vec<String>, StepError> {
    let previous = a.apply_objects(d, manifests).await?;
    let mut warnings = Vec::new();
    if let Some(p) = previous {
        warnings.extend(Applier::prune(a, &p).await?);
    }
    if a.checks_health() {
        warnings.extend(a.health().await?);
    }
    Ok(warnings)
}

fn kube_error(e: StepError) -> ApplyError {
    match e {
        StepError::Kube(e) => e,
        other => panic!("not a Kubernetes error: {other:?}"),
    }
}

fn write_index(api: &KubeApi, needle: &str) -> usize {
    api.writes()
        .iter()
        .position(|w| w.contains(needle))
        .unwrap_or_else(|| panic!("no write of {needle} in {:?}", api.writes()))
}

#[tokio::test]
async fn first_apply_puts_namespace_and_crd_first_and_waits_until_established() {
    let mut s = setup();
    let manifests = vec![
        widget("blue"),
        deployment("web", "app:1", 2),
        config_map("settings", json!({"mode": "fast"})),
        widget_crd(),
        namespace("shop"),
    ];
    deploy(&mut s.applier, &digest(1), manifests).await.unwrap();

    let ns = write_index(&s.api, "PATCH /api/v1/namespaces/shop");
    let crd = write_index(&s.api, "customresourcedefinitions/widgets.acme.dev");
    let cr = write_index(&s.api, "/apis/acme.dev/v1/namespaces/shop/widgets/blue");
    assert!(ns < crd && crd < cr, "{:?}", s.api.writes());
    // The CR was sent only after the CRD was established (it would have got 404 before).
    let crd_obj = s
        .api
        .get(
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            None,
            "widgets.acme.dev",
        )
        .unwrap();
    assert_eq!(crd_obj["status"]["conditions"][1]["status"], "True");

    let cm = s
        .api
        .get("", "configmaps", Some("shop"), "settings")
        .unwrap();
    assert_eq!(cm["data"]["mode"], "fast");
    assert_eq!(cm["metadata"]["labels"][LABEL_NAME], "shop");
    assert_eq!(cm["metadata"]["labels"]["tresor.dev/namespace"], "default");
    assert_eq!(cm["metadata"]["managedFields"][0]["manager"], "tresor");
    assert_eq!(
        s.api
            .get("acme.dev", "widgets", Some("shop"), "blue")
            .unwrap()["spec"]["size"],
        3
    );

    let mut inventory: Vec<String> = s
        .applier
        .inventory()
        .iter()
        .map(ToString::to_string)
        .collect();
    inventory.sort();
    assert_eq!(
        inventory,
        [
            "ConfigMap/shop/settings",
            "CustomResourceDefinition.apiextensions.k8s.io/widgets.acme.dev",
            "Deployment.apps/shop/web",
            "Namespace/shop",
            "Widget.acme.dev/shop/blue",
        ]
    );
}

#[tokio::test]
async fn custom_resource_without_its_crd_is_unknown_and_nothing_of_its_stage_is_written() {
    let mut s = setup();
    let err = deploy(
        &mut s.applier,
        &digest(1),
        vec![
            namespace("shop"),
            widget("blue"),
            config_map("a", json!({})),
        ],
    )
    .await
    .unwrap_err();
    let err = kube_error(err);
    assert_eq!(err.reason(), "UnknownKind", "{err}");
    assert!(err.to_string().contains("Widget"), "{err}");
    assert_eq!(s.api.count("", "configmaps"), 0);
}

#[tokio::test]
async fn update_changes_fields_and_removes_fields_left_out() {
    let mut s = setup();
    let v1 = vec![
        namespace("shop"),
        config_map("settings", json!({"a": "1", "b": "2"})),
        deployment("web", "app:1", 2),
    ];
    deploy(&mut s.applier, &digest(1), v1).await.unwrap();
    let before = s
        .api
        .get("apps", "deployments", Some("shop"), "web")
        .unwrap();

    let v2 = vec![
        namespace("shop"),
        config_map("settings", json!({"a": "10"})),
        deployment("web", "app:2", 2),
    ];
    deploy(&mut s.applier, &digest(2), v2).await.unwrap();
    let cm = s
        .api
        .get("", "configmaps", Some("shop"), "settings")
        .unwrap();
    assert_eq!(cm["data"], json!({"a": "10"}));
    let after = s
        .api
        .get("apps", "deployments", Some("shop"), "web")
        .unwrap();
    assert_eq!(
        after["spec"]["template"]["spec"]["containers"][0]["image"],
        "app:2"
    );
    assert_eq!(after["metadata"]["generation"], 2);
    assert_ne!(
        before["metadata"]["resourceVersion"],
        after["metadata"]["resourceVersion"]
    );

    // The same version again writes nothing (server-side apply is idempotent).
    s.api.clear_log();
    let v2 = vec![
        namespace("shop"),
        config_map("settings", json!({"a": "10"})),
        deployment("web", "app:2", 2),
    ];
    s.applier.apply_objects(&digest(2), v2).await.unwrap();
    let stored: Vec<String> = s
        .api
        .writes()
        .into_iter()
        .filter(|w| !w.contains("tresor-inventory"))
        .collect();
    assert!(stored.is_empty(), "{stored:?}");
}

#[tokio::test]
async fn prune_deletes_objects_that_left_unless_they_lost_tresors_labels() {
    let mut s = setup();
    let v1 = vec![
        namespace("shop"),
        config_map("keep", json!({})),
        config_map("gone", json!({})),
        config_map("adopted", json!({})),
        deployment("old-web", "app:1", 1),
    ];
    deploy(&mut s.applier, &digest(1), v1).await.unwrap();
    // Someone takes over "adopted": tresor's labels removed.
    let cms: Api<DynamicObject> = Api::namespaced_with(
        s.api.client(None),
        "shop",
        &ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(&()),
    );
    cms.patch(
        "adopted",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"tresor.dev/name": null, "tresor.dev/namespace": null}}})),
    )
    .await
    .unwrap();

    let warnings = deploy(
        &mut s.applier,
        &digest(2),
        vec![namespace("shop"), config_map("keep", json!({}))],
    )
    .await
    .unwrap();
    assert!(s.api.get("", "configmaps", Some("shop"), "keep").is_some());
    assert!(s.api.get("", "configmaps", Some("shop"), "gone").is_none());
    assert!(s
        .api
        .get("apps", "deployments", Some("shop"), "old-web")
        .is_none());
    assert!(s
        .api
        .get("", "configmaps", Some("shop"), "adopted")
        .is_some());
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("ConfigMap/shop/adopted") && warnings[0].contains("labels"),
        "{warnings:?}"
    );
    // Reverse order: the Deployment (stage 2, rank 7) before the ConfigMaps.
    let deleted: Vec<String> = s
        .applier
        .last_prune()
        .unwrap()
        .deleted
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        deleted,
        ["Deployment.apps/shop/old-web", "ConfigMap/shop/gone"]
    );
}

#[tokio::test]
async fn prune_guard_refuses_an_empty_artifact_unless_allowed() {
    let mut s = setup();
    deploy(
        &mut s.applier,
        &digest(1),
        vec![namespace("shop"), config_map("a", json!({}))],
    )
    .await
    .unwrap();
    s.api.clear_log();
    let err = kube_error(
        deploy(&mut s.applier, &digest(2), vec![])
            .await
            .unwrap_err(),
    );
    assert!(
        matches!(err, ApplyError::PruneGuard { previous: 2 }),
        "{err:?}"
    );
    assert!(s.api.writes().is_empty(), "{:?}", s.api.writes());
    assert_eq!(s.applier.current(), Some(&digest(1)));

    let mut s2 = setup_with(Duration::from_millis(10), None, |o| o.allow_empty = true);
    deploy(
        &mut s2.applier,
        &digest(1),
        vec![namespace("shop"), config_map("a", json!({}))],
    )
    .await
    .unwrap();
    deploy(&mut s2.applier, &digest(2), vec![]).await.unwrap();
    assert!(s2.api.get("", "namespaces", None, "shop").is_none());
    assert!(s2.api.get("", "configmaps", Some("shop"), "a").is_none());
}

#[tokio::test]
async fn drift_is_found_and_reapplied() {
    let mut s = setup();
    deploy(
        &mut s.applier,
        &digest(1),
        vec![
            namespace("shop"),
            config_map("a", json!({"k": "v"})),
            deployment("web", "app:1", 2),
        ],
    )
    .await
    .unwrap();
    assert!(s.applier.check_drift().await.unwrap().is_none());

    // kubectl edit (a merge patch by another manager) and kubectl delete.
    let client = s.api.client(None);
    let deployments: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "shop",
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("apps", "v1", "Deployment"),
            "deployments",
        ),
    );
    let pp = PatchParams {
        field_manager: Some("kubectl-edit".into()),
        ..Default::default()
    };
    deployments
        .patch("web", &pp, &Patch::Merge(json!({"spec": {"replicas": 5}})))
        .await
        .unwrap();
    let cms: Api<DynamicObject> = Api::namespaced_with(
        client,
        "shop",
        &ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(&()),
    );
    cms.delete("a", &Default::default()).await.unwrap();

    let Some(KubeDrift::Objects(drifted)) = s.applier.check_drift().await.unwrap() else {
        panic!("no drift found")
    };
    let mut found: Vec<(String, String)> = drifted
        .iter()
        .map(|(o, p)| (o.id.to_string(), p.clone()))
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            ("ConfigMap/shop/a".to_string(), "deleted".to_string()),
            (
                "Deployment.apps/shop/web".to_string(),
                ".spec.replicas".to_string()
            ),
        ]
    );
    // The watch hook re-applies what drifted (forcing ownership back from kubectl-edit).
    let restored: Vec<String> = s
        .applier
        .correct_drift()
        .await
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(restored, ["ConfigMap/shop/a", "Deployment.apps/shop/web"]);
    assert_eq!(
        s.api
            .get("apps", "deployments", Some("shop"), "web")
            .unwrap()["spec"]["replicas"],
        2
    );
    assert_eq!(
        s.api.get("", "configmaps", Some("shop"), "a").unwrap()["data"]["k"],
        "v"
    );
    assert!(s.applier.check_drift().await.unwrap().is_none());
}

#[tokio::test]
async fn conflict_with_another_field_manager_is_a_409_naming_it() {
    let mut s = setup();
    deploy(&mut s.applier, &digest(1), vec![namespace("shop")])
        .await
        .unwrap();
    // An autoscaler owns spec.replicas of an existing Deployment.
    let deployments: Api<DynamicObject> = Api::namespaced_with(
        s.api.client(None),
        "shop",
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("apps", "v1", "Deployment"),
            "deployments",
        ),
    );
    let mut theirs = deployment("web", "app:1", 3);
    theirs["metadata"]["namespace"] = json!("shop");
    deployments
        .patch(
            "web",
            &PatchParams::apply("hpa-controller"),
            &Patch::Apply(&theirs),
        )
        .await
        .unwrap();
    s.api.clear_log();

    let err = kube_error(
        deploy(
            &mut s.applier,
            &digest(2),
            vec![namespace("shop"), deployment("web", "app:1", 2)],
        )
        .await
        .unwrap_err(),
    );
    match err.root() {
        ApplyError::Conflict {
            object,
            manager,
            fields,
        } => {
            assert_eq!(object, "Deployment.apps/shop/web");
            assert_eq!(manager, "hpa-controller");
            assert_eq!(fields, &vec![".spec.replicas".to_string()]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(err.reason(), "Conflict");
    assert!(err.to_string().contains("\"hpa-controller\""), "{err}");
    assert!(s.api.writes().is_empty(), "{:?}", s.api.writes());
    assert_eq!(
        s.api
            .get("apps", "deployments", Some("shop"), "web")
            .unwrap()["spec"]["replicas"],
        3
    );

    // With force, tresor takes the field.
    let mut forced = setup_with(Duration::from_millis(10), None, |o| o.force = true);
    forced.applier = {
        let client = s.api.client(None);
        let resolver = Arc::new(DiscoveryResolver::new(
            client.clone(),
            Duration::from_secs(5),
        ));
        let mut o = options();
        o.force = true;
        KubeApplier::new(
            Cluster::new(client, resolver, None),
            o,
            forced._staging.path(),
        )
    };
    deploy(
        &mut forced.applier,
        &digest(2),
        vec![namespace("shop"), deployment("web", "app:1", 2)],
    )
    .await
    .unwrap();
    let live = s
        .api
        .get("apps", "deployments", Some("shop"), "web")
        .unwrap();
    assert_eq!(live["spec"]["replicas"], 2);
}

#[tokio::test]
async fn health_timeout_names_the_deployment_that_never_becomes_available() {
    let mut s = setup_with(Duration::from_millis(10), None, |o| o.wait = true);
    s.api.never_ready("web");
    let err = kube_error(
        deploy(
            &mut s.applier,
            &digest(1),
            vec![
                namespace("shop"),
                config_map("a", json!({})),
                deployment("web", "app:1", 2),
            ],
        )
        .await
        .unwrap_err(),
    );
    match &err {
        ApplyError::HealthTimeout { objects, .. } => {
            assert_eq!(
                objects,
                &vec!["Deployment.apps/shop/web: 0 of 2 updated replicas available".to_string()]
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(err.reason(), "HealthTimeout");
}

#[tokio::test]
async fn failed_job_is_unhealthy_at_once_and_complete_job_is_healthy() {
    let mut s = setup_with(Duration::from_millis(10), None, |o| {
        o.wait = true;
        o.health_timeout = Duration::from_secs(5);
    });
    let job = |name: &str, image: &str| {
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "m", "image": image}]}}}})
    };
    deploy(
        &mut s.applier,
        &digest(1),
        vec![namespace("shop"), job("migrate", "m:1")],
    )
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let err = kube_error(
        deploy(
            &mut s.applier,
            &digest(2),
            vec![
                namespace("shop"),
                job("migrate", "m:1"),
                job("seed", "m:broken"),
            ],
        )
        .await
        .unwrap_err(),
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "waited for the timeout"
    );
    match &err {
        ApplyError::Unhealthy { objects } => assert_eq!(
            objects,
            &vec!["Job.batch/shop/seed: BackoffLimitExceeded: Job has reached the specified backoff limit".to_string()]
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn rollback_applies_the_last_healthy_version_again() {
    let mut s = setup_with(Duration::from_millis(10), None, |o| {
        o.wait = true;
        o.rollback = true;
    });
    deploy(
        &mut s.applier,
        &digest(1),
        vec![namespace("shop"), deployment("web", "app:1", 2)],
    )
    .await
    .unwrap();
    let err = kube_error(
        deploy(
            &mut s.applier,
            &digest(2),
            vec![
                namespace("shop"),
                deployment("web", "app:broken", 2),
                config_map("new", json!({})),
            ],
        )
        .await
        .unwrap_err(),
    );
    assert!(
        matches!(&err, ApplyError::RolledBack { digest, .. } if *digest == digest_str(1)),
        "{err:?}"
    );
    assert_eq!(err.reason(), "HealthTimeout");
    assert_eq!(s.applier.current(), Some(&digest(1)));
    let live = s
        .api
        .get("apps", "deployments", Some("shop"), "web")
        .unwrap();
    assert_eq!(
        live["spec"]["template"]["spec"]["containers"][0]["image"],
        "app:1"
    );
    assert!(
        s.api.get("", "configmaps", Some("shop"), "new").is_none(),
        "objects of the failed version are pruned"
    );
}

fn digest_str(n: u8) -> String {
    digest(n).to_string()
}

#[tokio::test]
async fn impersonated_account_without_rights_fails_cleanly_with_nothing_applied() {
    let user = "system:serviceaccount:shop:deployer";
    let mut s = setup_with(Duration::from_millis(10), Some(user), |o| {
        o.target_namespace = Some("default".into())
    });
    s.api.set_rbac(
        user,
        vec![Rule::new(
            &["get", "list", "patch", "create"],
            &["configmaps"],
        )],
    );
    let err = kube_error(
        deploy(
            &mut s.applier,
            &digest(1),
            vec![
                config_map("a", json!({})),
                config_map("b", json!({})),
                deployment("web", "app:1", 1),
            ],
        )
        .await
        .unwrap_err(),
    );
    match &err {
        ApplyError::Stage {
            stage,
            applied,
            source,
        } => {
            assert_eq!(*stage, "objects");
            assert!(applied.is_empty(), "{applied:?}");
            match source.as_ref() {
                ApplyError::Forbidden {
                    object,
                    verb,
                    account,
                    ..
                } => {
                    assert_eq!(object, "Deployment.apps/default/web");
                    assert_eq!(verb, "patch");
                    assert_eq!(account, user);
                }
                other => panic!("{other:?}"),
            }
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(err.reason(), "Forbidden");
    assert!(
        s.api.writes().is_empty(),
        "the dry run stopped the stage: {:?}",
        s.api.writes()
    );
    assert_eq!(s.api.count("", "configmaps"), 0);
    assert!(s.applier.current().is_none());
}

#[tokio::test]
async fn immutable_field_and_missing_namespace_are_reported_by_name() {
    let mut s = setup_with(Duration::from_millis(10), None, |o| {
        o.target_namespace = Some("default".into())
    });
    let svc = |ip: &str| {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"},
        "spec": {"clusterIP": ip, "ports": [{"port": 5432}]}})
    };
    deploy(&mut s.applier, &digest(1), vec![svc("10.96.0.5")])
        .await
        .unwrap();
    let err = kube_error(
        deploy(&mut s.applier, &digest(2), vec![svc("10.96.0.6")])
            .await
            .unwrap_err(),
    );
    match err.root() {
        ApplyError::ImmutableField { object, field, .. } => {
            assert_eq!(object, "Service/default/db");
            assert_eq!(field, "spec.clusterIP");
        }
        other => panic!("{other:?}"),
    }

    let mut in_missing = config_map("x", json!({}));
    in_missing["metadata"]["namespace"] = json!("nowhere");
    let err = kube_error(
        deploy(
            &mut s.applier,
            &digest(3),
            vec![in_missing, svc("10.96.0.5")],
        )
        .await
        .unwrap_err(),
    );
    assert!(
        matches!(err.root(), ApplyError::NamespaceMissing { namespace, .. } if namespace == "nowhere"),
        "{err:?}"
    );
}

#[tokio::test]
async fn crd_that_is_not_established_in_time_stops_before_its_resources() {
    let mut s = setup_with(Duration::from_secs(30), None, |o| {
        o.crd_timeout = Duration::from_millis(300)
    });
    let err = kube_error(
        deploy(
            &mut s.applier,
            &digest(1),
            vec![namespace("shop"), widget_crd(), widget("blue")],
        )
        .await
        .unwrap_err(),
    );
    match &err {
        ApplyError::CrdNotEstablished { crds, .. } => {
            assert_eq!(crds, &vec!["widgets.acme.dev".to_string()])
        }
        other => panic!("{other:?}"),
    }
    assert!(err.is_transient());
    assert_eq!(s.api.count("acme.dev", "widgets"), 0);
}

#[tokio::test]
async fn static_resolver_learns_established_crds() {
    let resolver = StaticResolver::builtin();
    let gvk = GroupVersionKind::gvk("acme.dev", "v1", "Widget");
    assert!(matches!(
        resolver.resolve(&gvk, "w").await,
        Err(ApplyError::UnknownKind { .. })
    ));
    resolver.crd_established(&widget_crd());
    let r = resolver.resolve(&gvk, "w").await.unwrap();
    assert_eq!(r.resource.plural, "widgets");
    assert!(r.namespaced);

    // And it drives an apply just as discovery does.
    let api = KubeApi::start(Duration::from_millis(50));
    let staging = tempfile::tempdir().unwrap();
    let cluster = Cluster::new(api.client(None), Arc::new(StaticResolver::builtin()), None);
    let mut a = KubeApplier::new(cluster, options(), staging.path());
    deploy(
        &mut a,
        &digest(1),
        vec![namespace("shop"), widget_crd(), widget("blue")],
    )
    .await
    .unwrap();
    assert!(api
        .get("acme.dev", "widgets", Some("shop"), "blue")
        .is_some());
}

#[tokio::test]
async fn stale_resource_version_on_update_is_a_conflict() {
    let api = KubeApi::start(Duration::from_millis(10));
    let cms: Api<DynamicObject> = Api::namespaced_with(
        api.client(None),
        "default",
        &ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(&()),
    );
    let created = cms.patch("a", &PatchParams::apply("tresor"), &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "1"}}))).await.unwrap();
    let mut stale = created.clone();
    stale.data["data"]["k"] = json!("2");
    cms.replace("a", &Default::default(), &stale).await.unwrap();
    let mut again = created;
    again.data["data"]["k"] = json!("3");
    let err = cms
        .replace("a", &Default::default(), &again)
        .await
        .unwrap_err();
    let err = ApplyError::from_kube(err, "ConfigMap/default/a", "update", Some("default"), None);
    assert_eq!(err.reason(), "StaleObject", "{err}");
    // Changing the name of an object is refused as an immutable field.
    let mut renamed = cms.get("a").await.unwrap();
    renamed.metadata.name = Some("b".into());
    let err = cms
        .replace("a", &Default::default(), &renamed)
        .await
        .unwrap_err();
    let err = ApplyError::from_kube(err, "ConfigMap/default/a", "update", Some("default"), None);
    assert!(
        matches!(&err, ApplyError::ImmutableField { field, .. } if field == "metadata.name"),
        "{err:?}"
    );
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

/// Accepts every artifact as signed by "ci".
struct AcceptAll;

impl Verifier for AcceptAll {
    fn verify<'a>(
        &'a self,
        _: &'a Repository,
        _: &'a ResolvedArtifact,
    ) -> BoxFuture<'a, Result<VerifiedBy, VerifyRejected>> {
        Box::pin(std::future::ready(Ok(VerifiedBy::Signers(vec![
            "ci".into()
        ]))))
    }

    fn trust(&self) -> String {
        "ci".into()
    }
}

fn serve(fake: &FakeRegistry, files: &[(&str, &str)]) -> Digest {
    let files: Vec<(&str, &[u8])> = files.iter().map(|(n, d)| (*n, d.as_bytes())).collect();
    let artifact = common::tarball::artifact(&files);
    fake.serve_artifact("live", &artifact);
    artifact.digest
}

fn kube_engine(
    fake: &FakeRegistry,
    api: &KubeApi,
    work: &std::path::Path,
    verifier: Arc<dyn Verifier>,
) -> Engine<KubeApplier> {
    let reference: tresor::reference::Reference =
        format!("{}:live", fake.repo("acme/shop")).parse().unwrap();
    let options = RegistryOptions {
        plain_http: true,
        retries: 0,
        timeout: Duration::from_secs(5),
        ..Default::default()
    };
    let client = api.client(None);
    let cluster = Cluster::new(
        client.clone(),
        Arc::new(DiscoveryResolver::new(client, Duration::from_secs(5))),
        None,
    );
    Engine::new(
        Source::new(reference.clone(), None).unwrap(),
        Repository::open(&reference, &options).unwrap(),
        verifier,
        Arc::new(NoPolicy),
        Cache::open(&work.join("cache")).unwrap(),
        KubeApplier::new(cluster, options_for_engine(), work),
        Limits::default(),
    )
}

fn options_for_engine() -> ApplyOptions {
    options()
}

const SHOP_V1: &[(&str, &str)] = &[
    ("ns.yaml", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n"),
    ("app.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  v: '1'\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\n"),
];

#[tokio::test]
async fn verification_failure_leaves_the_cluster_untouched() {
    let fake = FakeRegistry::start(Content::default());
    let api = KubeApi::start(Duration::from_millis(10));
    let work = tempfile::tempdir().unwrap();
    serve(&fake, SHOP_V1);
    let mut engine = kube_engine(&fake, &api, work.path(), Arc::new(RejectAll));
    let s = engine.reconcile(&Cancel::never()).await;
    assert_eq!(s.outcome, Outcome::Rejected, "{s:?}");
    let error = s.error.unwrap();
    assert_eq!(
        (error.step, error.reason.as_str()),
        (Step::Verify, "UntrustedSigner")
    );
    assert!(api.writes().is_empty(), "{:?}", api.writes());
    assert!(
        api.requests().is_empty(),
        "not even a read: {:?}",
        api.requests()
    );
    assert!(
        fake.requests().iter().all(|r| !r.contains("/blobs/")),
        "{:?}",
        fake.requests()
    );
}

#[tokio::test]
async fn engine_applies_prunes_and_corrects_drift_in_a_cluster() {
    let fake = FakeRegistry::start(Content::default());
    let api = KubeApi::start(Duration::from_millis(10));
    let work = tempfile::tempdir().unwrap();
    let v1 = serve(&fake, SHOP_V1);
    let mut engine = kube_engine(&fake, &api, work.path(), Arc::new(AcceptAll));
    let cancel = Cancel::never();
    let s = engine.reconcile(&cancel).await;
    assert_eq!(s.outcome, Outcome::Applied, "{s:?}");
    assert_eq!(s.applied, Some(v1));
    assert_eq!(
        api.get("", "configmaps", Some("shop"), "a").unwrap()["data"]["v"],
        "1"
    );

    // Idle: no writes.
    api.clear_log();
    let s = engine.reconcile(&cancel).await;
    assert_eq!(s.outcome, Outcome::Unchanged, "{s:?}");
    assert!(api.writes().is_empty(), "{:?}", api.writes());

    // Drift: deleted object restored by the next cycle.
    let cms: Api<DynamicObject> = Api::namespaced_with(
        api.client(None),
        "shop",
        &ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(&()),
    );
    cms.delete("b", &Default::default()).await.unwrap();
    let s = engine.reconcile(&cancel).await;
    assert_eq!(s.outcome, Outcome::DriftCorrected, "{s:?}");
    assert_eq!(s.restored, ["ConfigMap/shop/b"]);

    // v2 drops b: pruned.
    let v2 = serve(
        &fake,
        &[
            SHOP_V1[0],
            (
                "app.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  v: '2'\n",
            ),
        ],
    );
    let s = engine.reconcile(&cancel).await;
    assert_eq!(s.outcome, Outcome::Applied, "{s:?}");
    assert_eq!(s.applied, Some(v2));
    assert!(api.get("", "configmaps", Some("shop"), "b").is_none());
    let names: Vec<Step> = s.steps.iter().map(|t| t.step).collect();
    assert!(names.contains(&Step::Prune), "{names:?}");
    let inventory: Vec<&ObjectRef> = engine.target().inventory().iter().collect();
    assert_eq!(inventory.len(), 2);
}

#[test]
fn tresor_apply_applies_prunes_and_dry_runs_from_a_kubeconfig() {
    let api = KubeApi::start(Duration::from_millis(10));
    let work = tempfile::tempdir().unwrap();
    let kubeconfig = api.kubeconfig(work.path());
    let layout = work.path().join("layout");
    let push = |files: &[(&str, &str)], tag: &str| {
        let tree = work.path().join(format!("tree-{tag}"));
        std::fs::create_dir_all(&tree).unwrap();
        for (name, text) in files {
            std::fs::write(tree.join(name), text).unwrap();
        }
        common::stdout_of(common::tresor().args([
            "push",
            tree.to_str().unwrap(),
            &format!("oci-layout:{}:{tag}", layout.display()),
        ]))
    };
    let apply = |tag: &str, extra: &[&str]| {
        let mut cmd = common::tresor();
        cmd.args([
            "apply",
            &format!("oci-layout:{}:{tag}", layout.display()),
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--namespace",
            "shop",
            "--name",
            "shop",
            "--allow-unsigned",
            "--prune",
            "--cache-dir",
            work.path().join("cache").to_str().unwrap(),
        ])
        .args(extra);
        cmd
    };
    push(SHOP_V1, "v1");
    let out = common::stdout_of(apply("v1", &["--wait"]));
    assert!(out.starts_with("applied sha256:"), "{out}");
    assert!(out.contains("  ConfigMap/shop/b"), "{out}");
    assert_eq!(
        api.get("", "configmaps", Some("shop"), "b").unwrap()["metadata"]["labels"][LABEL_NAME],
        "shop"
    );
    let inventory = api
        .get("", "configmaps", Some("shop"), "tresor-inventory-shop")
        .unwrap();
    assert!(
        inventory["data"]["objects"]
            .as_str()
            .unwrap()
            .contains("\"name\":\"b\""),
        "{inventory}"
    );

    // The same again: unchanged, nothing written.
    api.clear_log();
    let out = common::stdout_of(apply("v1", &[]));
    assert!(out.starts_with("unchanged sha256:"), "{out}");
    assert!(api.writes().is_empty(), "{:?}", api.writes());

    // v2 without b: a dry run reports the prune and changes nothing; the real run prunes.
    push(
        &[
            SHOP_V1[0],
            (
                "app.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n",
            ),
        ],
        "v2",
    );
    let out = common::stdout_of(apply("v2", &["--dry-run"]));
    assert!(out.starts_with("would apply sha256:"), "{out}");
    assert!(out.contains("would prune ConfigMap/shop/b"), "{out}");
    assert!(api.writes().is_empty(), "{:?}", api.writes());
    let out = common::stdout_of(apply("v2", &[]));
    assert!(out.contains("pruned ConfigMap/shop/b"), "{out}");
    assert!(api.get("", "configmaps", Some("shop"), "b").is_none());

    // A service account without rights: exit 2, Forbidden, nothing written.
    api.clear_log();
    push(
        &[
            SHOP_V1[0],
            (
                "app.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n",
            ),
        ],
        "v3",
    );
    let stdout = {
        let out = apply("v3", &["--service-account", "deployer"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(stdout.contains("error [Forbidden at apply]"), "{stdout}");
    assert!(
        stdout.contains("system:serviceaccount:shop:deployer"),
        "{stdout}"
    );
    assert!(api.writes().is_empty(), "{:?}", api.writes());
}

#[tokio::test]
async fn dry_run_checks_everything_it_can_and_writes_nothing() {
    let mut s = setup_with(Duration::from_millis(10), None, |o| o.dry_run = true);
    let previous = s
        .applier
        .apply_objects(
            &digest(1),
            vec![
                namespace("shop"),
                widget_crd(),
                widget("blue"),
                config_map("a", json!({})),
            ],
        )
        .await
        .unwrap();
    assert_eq!(previous, None);
    assert!(s.api.writes().is_empty(), "{:?}", s.api.writes());
    assert!(s.applier.current().is_none());
    let checked: Vec<String> = s
        .applier
        .last_report()
        .unwrap()
        .inventory
        .iter()
        .map(ToString::to_string)
        .collect();
    // The custom resource cannot be checked before its CRD exists; everything else was
    // sent with dryRun=All (the ConfigMap's namespace is the artifact's own). Sorted by
    // group, version, kind.
    assert_eq!(
        checked,
        [
            "ConfigMap/shop/a",
            "Namespace/shop",
            "CustomResourceDefinition.apiextensions.k8s.io/widgets.acme.dev",
        ]
    );
    assert!(
        s.api
            .requests()
            .iter()
            .any(|r| r.contains("configmaps/a?") && r.contains("dryRun=All")),
        "{:?}",
        s.api.requests()
    );
}
