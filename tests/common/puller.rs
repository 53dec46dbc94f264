//! A harness for the puller's reconcile against the API double: CRDs installed, a
//! [`Context`] talking to the double, artifacts pushed with the CLI to the local registries,
//! one `tresor::puller::reconcile` call per step.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use serde_json::{json, Value};
use tresor::api::{ArtifactSync, TrustPolicy};
use tresor::puller::{reconcile, Context, PullerOptions};

use super::kube_api::KubeApi;
use super::TestRegistry;

pub struct Puller {
    pub api: KubeApi,
    pub work: tempfile::TempDir,
    pub ctx: Arc<Context>,
}

impl Puller {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Like [`Puller::start`], with `adjust` changing the options first.
    pub async fn start_with(adjust: impl FnOnce(&mut PullerOptions)) -> Self {
        let api = KubeApi::start(Duration::from_millis(10));
        let client = api.client(None);
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        for crd in tresor::api::crdgen::crds() {
            crds.create(&PostParams::default(), &crd).await.unwrap();
        }
        let syncs: Api<ArtifactSync> = Api::namespaced(client.clone(), "default");
        for _ in 0..100 {
            if syncs.list(&Default::default()).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let work = tempfile::tempdir().unwrap();
        let mut options = PullerOptions {
            cache_dir: work.path().join("cache"),
            concurrency: 1,
            call_timeout: Duration::from_secs(5),
            poll: Duration::from_millis(20),
            ..PullerOptions::default()
        };
        adjust(&mut options);
        let config = kube::Config::new(api.url().parse().unwrap());
        let ctx = Arc::new(Context::new(config, options).unwrap());
        Self { api, work, ctx }
    }

    /// Pushes `files` (relative path, YAML) to `registry` as `repo:v1`; returns
    /// (`oci://host/repo`, digest).
    pub fn push(
        &self,
        registry: &TestRegistry,
        prefix: &str,
        files: &[(&str, &str)],
    ) -> (String, String) {
        let tree = self.work.path().join(format!("tree-{prefix}"));
        for (rel, text) in files {
            let path = tree.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let repo = registry.repo(prefix);
        let out = super::json_of(registry.tresor(&[
            "push",
            tree.to_str().unwrap(),
            &format!("{repo}:v1"),
            "--format",
            "json",
        ]));
        (repo, out["digest"].as_str().unwrap().to_string())
    }

    pub async fn create(&self, name: &str, spec: Value) -> ArtifactSync {
        let api: Api<ArtifactSync> = Api::namespaced(self.api.client(None), "default");
        let sync: ArtifactSync = serde_json::from_value(json!({
            "apiVersion": "tresor.dev/v1alpha1", "kind": "ArtifactSync",
            "metadata": {"name": name, "namespace": "default"},
            "spec": spec,
        }))
        .unwrap();
        api.create(&PostParams::default(), &sync).await.unwrap()
    }

    pub async fn get(&self, name: &str) -> Option<ArtifactSync> {
        Api::<ArtifactSync>::namespaced(self.api.client(None), "default")
            .get_opt(name)
            .await
            .unwrap()
    }

    pub async fn reconcile(&self, name: &str) {
        let sync = self.get(name).await.unwrap();
        reconcile(Arc::new(sync), self.ctx.clone()).await.unwrap();
    }

    /// Creates Secret `name` in `default` with `type_` and `data` (key → raw bytes).
    pub async fn secret(&self, name: &str, type_: &str, data: &[(&str, &[u8])]) {
        use base64::Engine as _;
        let data: serde_json::Map<String, Value> = data
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    json!(base64::engine::general_purpose::STANDARD.encode(v)),
                )
            })
            .collect();
        let secret: Secret = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": "default"},
            "type": type_, "data": data,
        }))
        .unwrap();
        let api = Api::<Secret>::namespaced(self.api.client(None), "default");
        if api.get_opt(name).await.unwrap().is_some() {
            api.delete(name, &Default::default()).await.unwrap();
        }
        api.create(&PostParams::default(), &secret).await.unwrap();
    }
}

/// (status, reason, message) of condition `type_`.
pub fn condition(sync: &ArtifactSync, type_: &str) -> (String, String, String) {
    let c = sync
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .unwrap_or_else(|| panic!("no {type_} condition: {:?}", sync.status));
    (
        c.status.as_str().to_string(),
        c.reason.clone(),
        c.message.clone(),
    )
}

/// A `.dockerconfigjson` for `host` with `user:password`.
pub fn docker_config(host: &str, user: &str, password: &str) -> Vec<u8> {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    serde_json::to_vec(&json!({"auths": {host: {"auth": auth}}})).unwrap()
}

/// Creates the TrustPolicy `platform`, which covers every namespace and requires a
/// signature by the key in Secret `kube-system/platform-key`.
pub async fn create_covering_policy(api: &KubeApi) {
    let policy: TrustPolicy = serde_json::from_value(json!({
        "apiVersion": "tresor.dev/v1alpha1", "kind": "TrustPolicy",
        "metadata": {"name": "platform"},
        "spec": {"authorities": [{"name": "platform", "key": {"secretRef":
            {"name": "platform-key", "namespace": "kube-system"}}}], "require": "any"},
    }))
    .unwrap();
    Api::<TrustPolicy>::all(api.client(None))
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
}
