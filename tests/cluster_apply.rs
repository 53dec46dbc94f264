//! tresor's Kubernetes apply step (`tresor::kube::KubeApplier`) against the real
//! kube-apiserver of `scripts/cluster.sh` (tests/common/cluster.rs), through the admin
//! client (or impersonating a ServiceAccount), one namespace per test: server-side apply
//! and its field ownership, prune, drift, conflicts, health of Jobs, impersonation, immutable
//! fields, stale updates, dry runs and the static resolver. Ported from the API double
//! (issue 11); the double keeps only what a real server does not do on demand
//! (tests/kube_apply.rs).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::{resource_version, Tenant};
use kube::api::{DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::Api;
use serde_json::{json, Value};
use tresor::digest::Digest;
use tresor::kube::{
    ApplyError, ApplyOptions, Cluster, DiscoveryResolver, KubeApplier, KubeDrift, Owner,
    ResourceResolver, StaticResolver, LABEL_NAME,
};
use tresor::reconcile::{Applier, StepError};

/// One test's applier: its namespace is the target, the owner is sync `shop` in it.
struct Setup {
    t: Tenant,
    _staging: tempfile::TempDir,
    applier: KubeApplier,
}

fn options(ns: &str) -> ApplyOptions {
    let mut o = ApplyOptions::new(Owner {
        name: "shop".into(),
        namespace: ns.into(),
    });
    o.target_namespace = Some(ns.into());
    o.prune = true;
    o.poll = Duration::from_millis(100);
    o.api_timeout = Duration::from_secs(20);
    o.crd_timeout = Duration::from_secs(30);
    o.health_timeout = Duration::from_secs(30);
    o
}

impl Setup {
    /// A new namespace; the applier as the admin, or impersonating `account` (a
    /// ServiceAccount name in the namespace) when given.
    async fn new(
        prefix: &str,
        account: Option<&str>,
        tweak: impl FnOnce(&mut ApplyOptions),
    ) -> Self {
        let t = Tenant::new(prefix).await;
        let user = account.map(|a| format!("system:serviceaccount:{}:{a}", t.ns));
        let mut o = options(&t.ns);
        tweak(&mut o);
        let staging = tempfile::tempdir().unwrap();
        let applier = applier(&t, user, o, staging.path()).await;
        Self {
            t,
            _staging: staging,
            applier,
        }
    }

    fn ns(&self) -> &str {
        &self.t.ns
    }

    async fn get(&self, api_version: &str, kind: &str, name: &str) -> Option<Value> {
        self.t.get(api_version, kind, name).await
    }

    fn api(&self, group: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
        let gvk = GroupVersionKind::gvk(group, "v1", kind);
        Api::namespaced_with(
            self.t.client.clone(),
            &self.t.ns,
            &ApiResource::from_gvk_with_plural(&gvk, plural),
        )
    }
}

/// An applier as the admin, or impersonating `user` (as the puller does for
/// `spec.serviceAccountName`).
async fn applier(
    t: &Tenant,
    user: Option<String>,
    o: ApplyOptions,
    staging: &std::path::Path,
) -> KubeApplier {
    let client = match &user {
        None => t.client.clone(),
        Some(user) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(&t.cluster.kubeconfig).unwrap();
            let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .unwrap();
            tresor::kube::client_from_config(config, Some(user), Duration::from_secs(20)).unwrap()
        }
    };
    let resolver = Arc::new(DiscoveryResolver::new(
        client.clone(),
        Duration::from_secs(20),
    ));
    KubeApplier::new(Cluster::new(client, resolver, user), o, staging)
}

fn digest(n: u8) -> Digest {
    Digest::of(&[n])
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

/// A CRD of a group unique to this test (cluster-scoped: deleted by [`CrdDeleted`]).
fn widget_crd(group: &str) -> Value {
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("widgets.{group}")},
        "spec": {"group": group, "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object",
                    "x-kubernetes-preserve-unknown-fields": true}}}]}})
}

fn widget(group: &str, name: &str) -> Value {
    json!({"apiVersion": format!("{group}/v1"), "kind": "Widget", "metadata": {"name": name},
        "spec": {"size": 3}})
}

/// Deletes a CRD when dropped.
struct CrdDeleted(&'static common::cluster::Cluster, String);

impl Drop for CrdDeleted {
    fn drop(&mut self) {
        self.0.kubectl(&[
            "delete",
            "crd",
            &self.1,
            "--ignore-not-found",
            "--wait=false",
        ]);
    }
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
        StepError::Applier(e) => e
            .downcast::<ApplyError>()
            .unwrap_or_else(|e| panic!("not a Kubernetes error: {e:?}")),
        other => panic!("not a Kubernetes error: {other:?}"),
    }
}

#[tokio::test]
async fn custom_resource_without_its_crd_is_unknown_and_nothing_of_its_stage_is_written() {
    let mut s = Setup::new("apply-unknown", None, |_| {}).await;
    let group = format!("{}.example.com", s.ns());
    let err = deploy(
        &mut s.applier,
        &digest(1),
        vec![widget(&group, "blue"), config_map("a", json!({}))],
    )
    .await
    .unwrap_err();
    let err = kube_error(err);
    assert_eq!(err.reason(), "UnknownKind", "{err}");
    assert!(err.to_string().contains("Widget"), "{err}");
    assert!(s.get("v1", "ConfigMap", "a").await.is_none());
}

/// Server-side apply on the real server: changed fields change, fields left out are
/// removed, and the same version again writes nothing (no object's resourceVersion moves).
#[tokio::test]
async fn update_changes_fields_and_removes_fields_left_out() {
    let mut s = Setup::new("apply-update", None, |_| {}).await;
    let v1 = vec![
        config_map("settings", json!({"a": "1", "b": "2"})),
        deployment("web", "app:1", 2),
    ];
    deploy(&mut s.applier, &digest(1), v1).await.unwrap();
    let before = s.get("apps/v1", "Deployment", "web").await.unwrap();
    let v2 = || {
        vec![
            config_map("settings", json!({"a": "10"})),
            deployment("web", "app:2", 2),
        ]
    };
    deploy(&mut s.applier, &digest(2), v2()).await.unwrap();
    let cm = s.get("v1", "ConfigMap", "settings").await.unwrap();
    assert_eq!(cm["data"], json!({"a": "10"}));
    assert_eq!(cm["metadata"]["labels"][LABEL_NAME], "shop");
    assert_eq!(cm["metadata"]["labels"]["tresor.dev/namespace"], s.ns());
    let after = s.get("apps/v1", "Deployment", "web").await.unwrap();
    assert_eq!(
        after["spec"]["template"]["spec"]["containers"][0]["image"],
        "app:2"
    );
    assert_eq!(after["metadata"]["generation"], 2);
    assert_ne!(resource_version(&before), resource_version(&after));

    // The same version again writes nothing (server-side apply is idempotent).
    s.applier.apply_objects(&digest(2), v2()).await.unwrap();
    let again = [
        resource_version(&s.get("v1", "ConfigMap", "settings").await.unwrap()),
        resource_version(&s.get("apps/v1", "Deployment", "web").await.unwrap()),
    ];
    assert_eq!(
        [resource_version(&cm), resource_version(&after)],
        again,
        "an object was written again"
    );
}

#[tokio::test]
async fn prune_deletes_objects_that_left_unless_they_lost_tresors_labels() {
    let mut s = Setup::new("apply-prune", None, |_| {}).await;
    let v1 = vec![
        config_map("keep", json!({})),
        config_map("gone", json!({})),
        config_map("adopted", json!({})),
        deployment("old-web", "app:1", 1),
    ];
    deploy(&mut s.applier, &digest(1), v1).await.unwrap();
    // Someone takes over "adopted": tresor's labels removed.
    s.api("", "ConfigMap", "configmaps")
        .patch(
            "adopted",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"labels": {LABEL_NAME: null, "tresor.dev/namespace": null}}}),
            ),
        )
        .await
        .unwrap();

    let warnings = deploy(
        &mut s.applier,
        &digest(2),
        vec![config_map("keep", json!({}))],
    )
    .await
    .unwrap();
    assert!(s.get("v1", "ConfigMap", "keep").await.is_some());
    assert!(s.get("v1", "ConfigMap", "gone").await.is_none());
    assert!(s.get("apps/v1", "Deployment", "old-web").await.is_none());
    assert!(s.get("v1", "ConfigMap", "adopted").await.is_some());
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains(&format!("ConfigMap/{}/adopted", s.ns()))
            && warnings[0].contains("labels"),
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
        [
            format!("Deployment.apps/{}/old-web", s.ns()),
            format!("ConfigMap/{}/gone", s.ns())
        ]
    );
}

/// The real server's objects carry every defaulted field: right after an apply, nothing is
/// drift; `kubectl edit` of a field and a deletion are found (by path) and re-applied.
#[tokio::test]
async fn drift_is_found_and_reapplied() {
    let mut s = Setup::new("apply-drift", None, |_| {}).await;
    deploy(
        &mut s.applier,
        &digest(1),
        vec![
            config_map("a", json!({"k": "v"})),
            deployment("web", "app:1", 2),
        ],
    )
    .await
    .unwrap();
    assert!(s.applier.check_drift().await.unwrap().is_none());

    // kubectl edit (a merge patch by another manager) and kubectl delete.
    let pp = PatchParams {
        field_manager: Some("kubectl-edit".into()),
        ..Default::default()
    };
    s.api("apps", "Deployment", "deployments")
        .patch("web", &pp, &Patch::Merge(json!({"spec": {"replicas": 5}})))
        .await
        .unwrap();
    s.api("", "ConfigMap", "configmaps")
        .delete("a", &Default::default())
        .await
        .unwrap();

    let Some(KubeDrift::Objects(drifted)) = s.applier.check_drift().await.unwrap() else {
        panic!("no drift found")
    };
    let mut found: Vec<(String, String)> = drifted
        .iter()
        .map(|(o, p)| (o.id.to_string(), p.clone()))
        .collect();
    found.sort();
    let ns = s.ns().to_string();
    assert_eq!(
        found,
        [
            (format!("ConfigMap/{ns}/a"), "deleted".to_string()),
            (
                format!("Deployment.apps/{ns}/web"),
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
    assert_eq!(
        restored,
        [
            format!("ConfigMap/{ns}/a"),
            format!("Deployment.apps/{ns}/web")
        ]
    );
    let web = s.get("apps/v1", "Deployment", "web").await.unwrap();
    assert_eq!(web["spec"]["replicas"], 2);
    assert_eq!(
        s.get("v1", "ConfigMap", "a").await.unwrap()["data"]["k"],
        "v"
    );
    assert!(s.applier.check_drift().await.unwrap().is_none());
}

/// Another field manager (an autoscaler) owns `spec.replicas`: the server's 409 names it
/// and the field, nothing is written; with force, tresor takes the field.
#[tokio::test]
async fn conflict_with_another_field_manager_is_a_409_naming_it() {
    let mut s = Setup::new("apply-conflict", None, |_| {}).await;
    let mut theirs = deployment("web", "app:1", 3);
    theirs["metadata"]["namespace"] = json!(s.ns());
    let deployments = s.api("apps", "Deployment", "deployments");
    deployments
        .patch(
            "web",
            &PatchParams::apply("hpa-controller"),
            &Patch::Apply(&theirs),
        )
        .await
        .unwrap();
    let before = s.get("apps/v1", "Deployment", "web").await.unwrap();

    let err = kube_error(
        deploy(
            &mut s.applier,
            &digest(2),
            vec![deployment("web", "app:1", 2)],
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
            assert_eq!(object, &format!("Deployment.apps/{}/web", s.ns()));
            assert_eq!(manager, "hpa-controller");
            assert_eq!(fields, &vec![".spec.replicas".to_string()]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(err.reason(), "Conflict");
    assert!(err.to_string().contains("\"hpa-controller\""), "{err}");
    let live = s.get("apps/v1", "Deployment", "web").await.unwrap();
    assert_eq!(live["spec"]["replicas"], 3);
    assert_eq!(
        resource_version(&live),
        resource_version(&before),
        "written"
    );

    // With force, tresor takes the field.
    let staging = tempfile::tempdir().unwrap();
    let mut o = options(s.ns());
    o.force = true;
    let mut forced = applier(&s.t, None, o, staging.path()).await;
    deploy(&mut forced, &digest(2), vec![deployment("web", "app:1", 2)])
        .await
        .unwrap();
    let live = s.get("apps/v1", "Deployment", "web").await.unwrap();
    assert_eq!(live["spec"]["replicas"], 2);
    let managers: Vec<(&str, &str)> = live["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["manager"].as_str().unwrap(),
                f["operation"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(managers.contains(&("tresor", "Apply")), "{managers:?}");
}

/// Plays the Job controller (there is none here): once Job `name` exists, writes `status`.
fn job_status_when_created(
    t: &Tenant,
    name: &'static str,
    status: Value,
) -> tokio::task::JoinHandle<()> {
    let jobs: Api<DynamicObject> = Api::namespaced_with(
        t.client.clone(),
        &t.ns,
        &ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("batch", "v1", "Job"), "jobs"),
    );
    tokio::spawn(async move {
        loop {
            if jobs.get_opt(name).await.ok().flatten().is_some()
                && jobs
                    .patch_status(
                        name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"status": status})),
                    )
                    .await
                    .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

const T0: &str = "2026-01-01T00:00:00Z";

fn job_condition(type_: &str, reason: &str, message: &str) -> Value {
    json!({"type": type_, "status": "True", "reason": reason, "message": message,
        "lastTransitionTime": T0, "lastProbeTime": T0})
}

/// A Job whose status says Complete is healthy; one whose status says Failed is unhealthy
/// at once, with the Job's reason and message, long before the health timeout (30 s).
#[tokio::test]
async fn failed_job_is_unhealthy_at_once_and_complete_job_is_healthy() {
    let mut s = Setup::new("apply-jobs", None, |o| o.wait = true).await;
    let job = |name: &str, image: &str| {
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "m", "image": image}]}}}})
    };
    let complete = job_status_when_created(
        &s.t,
        "migrate",
        json!({"startTime": T0, "completionTime": T0, "succeeded": 1, "conditions": [
            job_condition("SuccessCriteriaMet", "CompletionsReached", "Reached expected number of succeeded pods"),
            job_condition("Complete", "CompletionsReached", "Reached expected number of succeeded pods")]}),
    );
    deploy(&mut s.applier, &digest(1), vec![job("migrate", "m:1")])
        .await
        .unwrap();
    complete.await.unwrap();

    let backoff = "Job has reached the specified backoff limit";
    let failed = job_status_when_created(
        &s.t,
        "seed",
        json!({"startTime": T0, "failed": 1, "conditions": [
            job_condition("FailureTarget", "BackoffLimitExceeded", backoff),
            job_condition("Failed", "BackoffLimitExceeded", backoff)]}),
    );
    let started = Instant::now();
    let err = kube_error(
        deploy(
            &mut s.applier,
            &digest(2),
            vec![job("migrate", "m:1"), job("seed", "m:2")],
        )
        .await
        .unwrap_err(),
    );
    failed.await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "waited for the timeout: {:?}",
        started.elapsed()
    );
    match &err {
        ApplyError::Unhealthy { objects } => assert_eq!(
            objects,
            &vec![format!(
                "Job.batch/{}/seed: BackoffLimitExceeded: {backoff}",
                s.ns()
            )]
        ),
        other => panic!("{other:?}"),
    }
}

/// Impersonating a ServiceAccount that may write ConfigMaps but not Deployments: the stage's
/// dry run stops it with Forbidden naming the object, verb and account; nothing is written.
#[tokio::test]
async fn impersonated_account_without_rights_fails_cleanly_with_nothing_applied() {
    let mut s = Setup::new("apply-sa", Some("deployer"), |_| {}).await;
    let ns = s.ns().to_string();
    for args in [
        vec!["create", "serviceaccount", "deployer"],
        vec![
            "create",
            "role",
            "deployer",
            "--verb",
            "get,list,patch,create",
            "--resource",
            "configmaps",
        ],
        vec![
            "create",
            "rolebinding",
            "deployer",
            "--role",
            "deployer",
            "--serviceaccount",
            &format!("{ns}:deployer"),
        ],
    ] {
        let mut all = vec!["-n", ns.as_str()];
        all.extend(args.iter().map(|a| a as &str));
        s.t.cluster.kubectl_ok(&all);
    }
    let user = format!("system:serviceaccount:{ns}:deployer");
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
                    assert_eq!(object, &format!("Deployment.apps/{ns}/web"));
                    assert_eq!(verb, "patch");
                    assert_eq!(account, &user);
                }
                other => panic!("{other:?}"),
            }
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(err.reason(), "Forbidden");
    assert!(s.get("v1", "ConfigMap", "a").await.is_none());
    assert!(s.get("v1", "ConfigMap", "b").await.is_none());
    assert!(s.applier.current().is_none());
}

/// A Service's allocated `spec.clusterIP` cannot change: the server's 422 names the field;
/// an object in a namespace that does not exist names that namespace.
#[tokio::test]
async fn immutable_field_and_missing_namespace_are_reported_by_name() {
    let mut s = Setup::new("apply-immutable", None, |_| {}).await;
    let svc = |ip: Option<&str>| {
        let mut svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"},
            "spec": {"ports": [{"port": 5432}]}});
        if let Some(ip) = ip {
            svc["spec"]["clusterIP"] = json!(ip);
        }
        svc
    };
    deploy(&mut s.applier, &digest(1), vec![svc(None)])
        .await
        .unwrap();
    let allocated = s.get("v1", "Service", "db").await.unwrap()["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    // Another address of the service range 10.96.0.0/12.
    let other = if allocated == "10.96.0.250" {
        "10.96.0.251"
    } else {
        "10.96.0.250"
    };
    let err = kube_error(
        deploy(&mut s.applier, &digest(2), vec![svc(Some(other))])
            .await
            .unwrap_err(),
    );
    match err.root() {
        ApplyError::ImmutableField { object, field, .. } => {
            assert_eq!(object, &format!("Service/{}/db", s.ns()));
            assert_eq!(field, "spec.clusterIPs[0]");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        s.get("v1", "Service", "db").await.unwrap()["spec"]["clusterIP"],
        allocated.as_str()
    );

    let nowhere = format!("{}-nowhere", s.ns());
    let mut in_missing = config_map("x", json!({}));
    in_missing["metadata"]["namespace"] = json!(nowhere);
    let err = kube_error(
        deploy(&mut s.applier, &digest(3), vec![in_missing, svc(None)])
            .await
            .unwrap_err(),
    );
    assert!(
        matches!(err.root(), ApplyError::NamespaceMissing { namespace, .. } if *namespace == nowhere),
        "{err:?}"
    );
}

/// The static resolver knows the built-in kinds and learns a CRD once it is established;
/// it drives an apply of a CRD and its custom resource as discovery does.
#[tokio::test]
async fn static_resolver_learns_established_crds() {
    let t = Tenant::new("apply-static").await;
    let group = format!("{}.example.com", t.ns);
    let resolver = StaticResolver::builtin();
    let gvk = GroupVersionKind::gvk(&group, "v1", "Widget");
    assert!(matches!(
        resolver.resolve(&gvk, "w").await,
        Err(ApplyError::UnknownKind { .. })
    ));
    resolver.crd_established(&widget_crd(&group));
    let r = resolver.resolve(&gvk, "w").await.unwrap();
    assert_eq!(r.resource.plural, "widgets");
    assert!(r.namespaced);

    let _crd = CrdDeleted(t.cluster, format!("widgets.{group}"));
    let staging = tempfile::tempdir().unwrap();
    let cluster = Cluster::new(t.client.clone(), Arc::new(StaticResolver::builtin()), None);
    let mut a = KubeApplier::new(cluster, options(&t.ns), staging.path());
    deploy(
        &mut a,
        &digest(1),
        vec![widget_crd(&group), widget(&group, "blue")],
    )
    .await
    .unwrap();
    let blue = t
        .get(&format!("{group}/v1"), "Widget", "blue")
        .await
        .unwrap();
    assert_eq!(blue["spec"]["size"], 3);
    assert_eq!(blue["metadata"]["labels"][LABEL_NAME], "shop");
}

/// An update with a stale resourceVersion is the server's 409: `StaleObject`. A PUT whose
/// body names another object is refused by the server as a bad request.
#[tokio::test]
async fn stale_resource_version_on_update_is_a_conflict() {
    let t = Tenant::new("apply-stale").await;
    let cms: Api<DynamicObject> = Api::namespaced_with(
        t.client.clone(),
        &t.ns,
        &ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(&()),
    );
    let created = cms
        .patch(
            "a",
            &PatchParams::apply("tresor"),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "a"}, "data": {"k": "1"}})),
        )
        .await
        .unwrap();
    let object = format!("ConfigMap/{}/a", t.ns);
    let mut stale = created.clone();
    stale.data["data"]["k"] = json!("2");
    cms.replace("a", &Default::default(), &stale).await.unwrap();
    let mut again = created;
    again.data["data"]["k"] = json!("3");
    let err = cms
        .replace("a", &Default::default(), &again)
        .await
        .unwrap_err();
    let err = ApplyError::from_kube(err, &object, "update", Some(&t.ns), None);
    assert_eq!(err.reason(), "StaleObject", "{err}");
    assert!(err.to_string().contains(&object), "{err}");
    let live = cms.get("a").await.unwrap();
    assert_eq!(live.data["data"]["k"], "2");

    let mut renamed = live;
    renamed.metadata.name = Some("b".into());
    let err = cms
        .replace("a", &Default::default(), &renamed)
        .await
        .unwrap_err();
    let err = ApplyError::from_kube(err, &object, "update", Some(&t.ns), None);
    assert!(matches!(&err, ApplyError::Api { code: 400, .. }), "{err:?}");
    assert!(err.to_string().contains(&object), "{err}");
}

/// `dry_run`: every object whose kind and namespace exist is sent with `dryRun=All`; the
/// custom resource of a CRD that is not there yet cannot be checked; nothing is stored.
#[tokio::test]
async fn dry_run_checks_everything_it_can_and_writes_nothing() {
    let t = Tenant::new("apply-dry").await;
    let group = format!("{}.example.com", t.ns);
    let child = format!("{}-child", t.ns);
    let _crd = CrdDeleted(t.cluster, format!("widgets.{group}"));
    let mut o = options(&t.ns);
    o.target_namespace = Some(child.clone());
    o.dry_run = true;
    let staging = tempfile::tempdir().unwrap();
    let mut a = applier(&t, None, o, staging.path()).await;
    let previous = a
        .apply_objects(
            &digest(1),
            vec![
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": child}}),
                widget_crd(&group),
                widget(&group, "blue"),
                config_map("a", json!({})),
            ],
        )
        .await
        .unwrap();
    assert_eq!(previous, None);
    assert!(a.current().is_none());
    let checked: Vec<String> = a
        .last_report()
        .unwrap()
        .inventory
        .iter()
        .map(ToString::to_string)
        .collect();
    // Sorted by group, version, kind.
    assert_eq!(
        checked,
        [
            format!("ConfigMap/{child}/a"),
            format!("Namespace/{child}"),
            format!("CustomResourceDefinition.apiextensions.k8s.io/widgets.{group}"),
        ]
    );
    // Nothing stored: no namespace, no CRD, no inventory.
    let namespaces = Api::<k8s_openapi::api::core::v1::Namespace>::all(t.client.clone());
    assert!(namespaces.get_opt(&child).await.unwrap().is_none());
    let crds = Api::<
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    >::all(t.client.clone());
    assert!(crds
        .get_opt(&format!("widgets.{group}"))
        .await
        .unwrap()
        .is_none());
    assert!(t.config_map("tresor-inventory-shop").await.is_none());
}
