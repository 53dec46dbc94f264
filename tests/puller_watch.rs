//! Drift through watches: the whole puller Controller (`tresor::puller::run`) against the API
//! double's watches (tests/common/kube_api.rs), artifacts in the local plain registry
//! (127.0.0.1:5001). Objects changed or deleted behind tresor's back are restored through
//! the watch of their kind, long before the sync's 1h interval; an idle cycle with synced
//! watches reads no applied object and writes nothing. Deadlines are generous and only
//! bound the wait; nothing here measures time.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::kube_api::KubeApi;
use common::TestRegistry;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use tresor::api::ArtifactSync;
use tresor::kube::LABEL_NAME;
use tresor::puller::{reconcile, run, Context, PullerOptions};

const DEADLINE: Duration = Duration::from_secs(30);

struct Setup {
    api: KubeApi,
    work: tempfile::TempDir,
    registry: TestRegistry,
}

async fn setup() -> Setup {
    let api = KubeApi::start(Duration::from_millis(10));
    let crds: Api<CustomResourceDefinition> = Api::all(api.client(None));
    for crd in tresor::api::crdgen::crds() {
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
    let syncs: Api<ArtifactSync> = Api::namespaced(api.client(None), "default");
    for _ in 0..100 {
        if syncs.list(&Default::default()).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Setup {
        api,
        work: tempfile::tempdir().unwrap(),
        registry: TestRegistry::plain(),
    }
}

impl Setup {
    fn context(&self, watch_drift: bool) -> Arc<Context> {
        let options = PullerOptions {
            cache_dir: self.work.path().join("cache"),
            concurrency: 2,
            call_timeout: Duration::from_secs(5),
            poll: Duration::from_millis(20),
            watch_drift,
            full_resync: Duration::from_secs(3600),
            watch_label_selector: None,
            ..PullerOptions::default()
        };
        let config = kube::Config::new(self.api.url().parse().unwrap());
        Arc::new(Context::new(config, options).unwrap())
    }

    /// Pushes ConfigMaps `a` and `b` as `repo:v1`; returns `oci://host/repo`.
    fn push(&self, prefix: &str) -> String {
        let tree = self.work.path().join(format!("tree-{prefix}"));
        std::fs::create_dir_all(&tree).unwrap();
        for (name, value) in [("a", "one"), ("b", "two")] {
            std::fs::write(
                tree.join(format!("{name}.yaml")),
                format!(
                    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  k: {value}\n"
                ),
            )
            .unwrap();
        }
        let repo = self.registry.repo(prefix);
        let out = common::json_of(self.registry.tresor(&[
            "push",
            tree.to_str().unwrap(),
            &format!("{repo}:v1"),
            "--format",
            "json",
        ]));
        assert!(out["digest"].as_str().unwrap().starts_with("sha256:"));
        repo
    }

    async fn create(&self, name: &str, repo: &str) {
        let api: Api<ArtifactSync> = Api::namespaced(self.api.client(None), "default");
        let sync: ArtifactSync = serde_json::from_value(json!({
            "apiVersion": "tresor.dev/v1alpha1", "kind": "ArtifactSync",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"url": repo, "ref": {"tag": "v1"}, "interval": "1h", "insecure": true,
                "verify": {"allowUnsigned": true}},
        }))
        .unwrap();
        api.create(&PostParams::default(), &sync).await.unwrap();
    }

    async fn ready_reason(&self, name: &str) -> Option<String> {
        let sync = Api::<ArtifactSync>::namespaced(self.api.client(None), "default")
            .get(name)
            .await
            .unwrap();
        sync.status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready" && c.status.as_str() == "True")
            .map(|c| c.reason)
    }

    fn data(&self, name: &str) -> Option<Value> {
        self.api
            .get("", "configmaps", Some("default"), name)
            .map(|o| o["data"]["k"].clone())
    }

    /// `GET`s of the applied ConfigMaps themselves (not lists or watches).
    fn object_reads(&self) -> Vec<String> {
        self.api
            .requests()
            .into_iter()
            .filter(|r| {
                r.starts_with("GET /api/v1/namespaces/default/configmaps/") && !r.contains("watch=")
            })
            .collect()
    }
}

/// Polls `check` until it holds or the deadline passes.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let until = Instant::now() + DEADLINE;
    while !check().await {
        assert!(Instant::now() < until, "not within {DEADLINE:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every watched kind is in sync.
async fn watches_synced(ctx: &Context) {
    eventually("watches in sync", async || {
        let stats = ctx.watches().stats();
        stats.kinds > 0 && stats.synced == stats.kinds
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_restores_changed_and_deleted_objects_through_watches_long_before_the_interval()
{
    let s = setup().await;
    let repo = s.push("watch-drift");
    s.create("shop", &repo).await;
    let ctx = s.context(true);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(run(ctx.clone(), async move {
        let _ = stopped.await;
    }));

    eventually("the sync is applied", async || {
        s.ready_reason("shop").await.is_some()
    })
    .await;
    assert_eq!(s.data("a"), Some(json!("one")));
    watches_synced(&ctx).await;
    let stats = ctx.watches().stats();
    assert_eq!((stats.kinds, stats.objects), (1, 2), "{stats:?}");

    // Someone edits `a` with another field manager: restored, and recorded as drift.
    let cms: Api<ConfigMap> = Api::namespaced(s.api.client(None), "default");
    cms.patch(
        "a",
        &PatchParams {
            field_manager: Some("kubectl-edit".into()),
            ..PatchParams::default()
        },
        &Patch::Merge(json!({"data": {"k": "changed"}})),
    )
    .await
    .unwrap();
    eventually("a is restored", async || s.data("a") == Some(json!("one"))).await;
    // The next status write starts one more (Unchanged) cycle, so look at what lasts: the
    // cycle's metric and its Event.
    eventually("a cycle reports the drift corrected", async || {
        ctx.metrics()
            .render()
            .contains("tresor_reconciles_total{outcome=\"DriftCorrected\"} 1")
    })
    .await;
    let events: Vec<String> =
        Api::<k8s_openapi::api::events::v1::Event>::namespaced(s.api.client(None), "default")
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|e| e.reason)
            .collect();
    assert!(events.contains(&"DriftCorrected".to_string()), "{events:?}");

    // Someone deletes `b`: created again.
    cms.delete("b", &DeleteParams::default()).await.unwrap();
    eventually("b is back", async || s.data("b") == Some(json!("two"))).await;
    let b = s.api.get("", "configmaps", Some("default"), "b").unwrap();
    assert_eq!(b["metadata"]["labels"][LABEL_NAME], "shop");

    // Someone removes tresor's owner label from `a`: the object leaves the watch's label
    // selection, which the puller takes as drift too.
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {LABEL_NAME: null}}})),
    )
    .await
    .unwrap();
    eventually("a's owner label is back", async || {
        s.api.get("", "configmaps", Some("default"), "a").unwrap()["metadata"]["labels"][LABEL_NAME]
            == "shop"
    })
    .await;

    // tresor's own re-applies are watch events too; they match what was applied, so they
    // trigger nothing: the puller settles and stops writing.
    eventually("no writes for a second", async || {
        s.api.clear_log();
        tokio::time::sleep(Duration::from_secs(1)).await;
        s.api.writes().is_empty()
    })
    .await;

    let _ = stop.send(());
    tokio::time::timeout(DEADLINE, controller)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_cycle_with_synced_watches_reads_no_applied_object_and_writes_nothing() {
    let s = setup().await;
    let repo = s.push("watch-idle");
    s.create("shop", &repo).await;
    let ctx = s.context(true);
    let cycle = async || {
        let sync = Api::<ArtifactSync>::namespaced(s.api.client(None), "default")
            .get("shop")
            .await
            .unwrap();
        reconcile(Arc::new(sync), ctx.clone()).await.unwrap();
    };
    cycle().await; // applies
    cycle().await; // Unchanged: the status changes once more
    watches_synced(&ctx).await;

    s.api.clear_log();
    cycle().await;
    assert_eq!(s.ready_reason("shop").await.as_deref(), Some("Unchanged"));
    assert!(s.api.writes().is_empty(), "{:?}", s.api.writes());
    assert_eq!(s.object_reads(), Vec::<String>::new());

    // A drift the cycle finds in the watch cache, without reading the object either.
    Api::<ConfigMap>::namespaced(s.api.client(None), "default")
        .delete("a", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the watch saw the deletion", async || {
        ctx.watches().stats().synced == 1 && s.data("a").is_none()
    })
    .await;
    s.api.clear_log();
    cycle().await;
    assert_eq!(s.data("a"), Some(json!("one")));
    assert_eq!(s.object_reads(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_trust_inputs_watched_an_idle_cycle_sends_the_api_server_nothing() {
    let s = setup().await;
    let repo = s.push("watch-trust");
    s.create("shop", &repo).await;
    let ctx = s.context(true);
    ctx.watch_trust_inputs();
    let get = async || {
        Api::<ArtifactSync>::namespaced(s.api.client(None), "default")
            .get("shop")
            .await
            .unwrap()
    };
    for _ in 0..2 {
        reconcile(Arc::new(get().await), ctx.clone()).await.unwrap();
    }
    watches_synced(&ctx).await;
    eventually("trust inputs watched", async || ctx.trust_inputs_watched()).await;

    let sync = get().await;
    s.api.clear_log();
    reconcile(Arc::new(sync), ctx.clone()).await.unwrap();
    assert_eq!(s.ready_reason("shop").await.as_deref(), Some("Unchanged"));
    let requests: Vec<String> = s
        .api
        .requests()
        .into_iter()
        .filter(|r| !r.contains("watch=") && !r.ends_with("/artifactsyncs/shop"))
        .collect();
    assert_eq!(requests, Vec::<String>::new());

    // A platform admin adds a TrustPolicy covering every namespace: the cache sees it and the
    // next cycle refuses the unsigned sync, still without listing TrustPolicies.
    common::puller::create_covering_policy(&s.api).await;
    s.api.clear_log();
    eventually("the cached TrustPolicy refuses the sync", async || {
        reconcile(Arc::new(get().await), ctx.clone()).await.unwrap();
        let sync = get().await;
        sync.status.is_some_and(|st| {
            st.conditions
                .iter()
                .any(|c| c.type_ == "Stalled" && c.reason == "WeakensTrustPolicy")
        })
    })
    .await;
    let listed: Vec<String> = s
        .api
        .requests()
        .into_iter()
        .filter(|r| r.contains("trustpolicies") && !r.contains("watch="))
        .collect();
    assert_eq!(listed, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_watches_every_cycle_reads_every_applied_object() {
    let s = setup().await;
    let repo = s.push("watch-off");
    s.create("shop", &repo).await;
    let ctx = s.context(false);
    for _ in 0..2 {
        let sync = Api::<ArtifactSync>::namespaced(s.api.client(None), "default")
            .get("shop")
            .await
            .unwrap();
        reconcile(Arc::new(sync), ctx.clone()).await.unwrap();
    }
    assert_eq!(ctx.watches().stats().kinds, 0);
    s.api.clear_log();
    let sync = Api::<ArtifactSync>::namespaced(s.api.client(None), "default")
        .get("shop")
        .await
        .unwrap();
    reconcile(Arc::new(sync), ctx.clone()).await.unwrap();
    assert!(s.api.writes().is_empty(), "{:?}", s.api.writes());
    // Read concurrently: in any order.
    let mut reads = s.object_reads();
    reads.sort();
    assert_eq!(
        reads,
        [
            "GET /api/v1/namespaces/default/configmaps/a",
            "GET /api/v1/namespaces/default/configmaps/b"
        ]
    );
}
