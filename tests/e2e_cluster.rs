//! End-to-end tests against a real cluster with the puller installed (`kubectl apply -k
//! deploy/`). Ignored by default: no API server runs on the dev machines. CI runs them on kind
//! (`.github/workflows/e2e-kind.yml`):
//!
//! ```sh
//! KUBECONFIG=~/.kube/config TRESOR_E2E_URL=oci://kind-registry:5000/e2e/app \
//! TRESOR_E2E_TAG=v1 TRESOR_E2E_KEY_SECRET=e2e-cosign \
//!   cargo test --test e2e_cluster -- --ignored --test-threads=1
//! ```
//!
//! `TRESOR_E2E_URL` is the artifact as the *cluster* sees it; `TRESOR_E2E_KEY_SECRET` names
//! a Secret with `cosign.pub` in `TRESOR_E2E_NAMESPACE` (default `tresor-e2e`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::{Duration, Instant};

use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::Client;
use tresor::api::{
    ArtifactSync, ArtifactSyncSpec, Authority, ConditionStatus, InventoryEntry, KeyAuthority,
    SecretKeyRef, SourceRef, Verify,
};

fn env(name: &str, default: Option<&str>) -> String {
    std::env::var(name)
        .ok()
        .or(default.map(str::to_string))
        .unwrap_or_else(|| panic!("set {name} (see the module docs)"))
}

fn namespace() -> String {
    env("TRESOR_E2E_NAMESPACE", Some("tresor-e2e"))
}

fn sync(name: &str, tag: &str, verify: Verify) -> ArtifactSync {
    ArtifactSync {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace()),
            ..Default::default()
        },
        spec: ArtifactSyncSpec {
            url: env("TRESOR_E2E_URL", None),
            source_ref: SourceRef {
                tag: Some(tag.into()),
                ..Default::default()
            },
            interval: "30s".into(),
            verify: Some(verify),
            prune: true,
            insecure: std::env::var("TRESOR_E2E_INSECURE").is_ok_and(|v| v == "1"),
            target_namespace: Some(namespace()),
            ..Default::default()
        },
        status: None,
    }
}

fn signed_by_e2e_key() -> Verify {
    Verify {
        authorities: vec![Authority {
            name: "e2e".into(),
            key: Some(KeyAuthority {
                data: None,
                secret_ref: Some(SecretKeyRef {
                    name: env("TRESOR_E2E_KEY_SECRET", Some("e2e-cosign")),
                    namespace: None,
                    key: None,
                }),
            }),
            keyless: None,
        }],
        ..Default::default()
    }
}

async fn create(api: &Api<ArtifactSync>, s: &ArtifactSync) {
    let name = s.metadata.name.clone().unwrap();
    let _ = api.delete(&name, &DeleteParams::default()).await;
    // Wait for a previous run's object to be gone (finalizers prune first).
    let deadline = Instant::now() + Duration::from_secs(60);
    while api.get_opt(&name).await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "{name} was not deleted");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    api.create(&PostParams::default(), s).await.unwrap();
}

/// Polls until the Ready condition has `want`, returning the object.
async fn wait_ready(api: &Api<ArtifactSync>, name: &str, want: ConditionStatus) -> ArtifactSync {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let s = api.get(name).await.unwrap();
        let ready = s.status.as_ref().and_then(|st| st.ready().cloned());
        if let Some(c) = &ready {
            if c.status == want
                && s.status.as_ref().unwrap().observed_generation == s.metadata.generation
            {
                return s;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{name}: Ready is {ready:?}, wanted {want:?}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[tokio::test]
#[ignore = "needs a cluster with the puller installed (KUBECONFIG)"]
async fn signed_artifact_becomes_ready_and_is_applied() {
    let client = Client::try_default().await.unwrap();
    let api: Api<ArtifactSync> = Api::namespaced(client.clone(), &namespace());
    let s = sync(
        "e2e-signed",
        &env("TRESOR_E2E_TAG", Some("v1")),
        signed_by_e2e_key(),
    );
    create(&api, &s).await;
    let done = wait_ready(&api, "e2e-signed", ConditionStatus::True).await;
    let status = done.status.unwrap();
    let digest = status.last_applied_digest.expect("lastAppliedDigest");
    assert!(digest.starts_with("sha256:"), "{digest}");
    assert!(
        !status.inventory.is_empty(),
        "inventory lists the applied objects"
    );
    assert_eq!(status.history[0].digest, digest);
    // Every inventory object exists in the cluster.
    for entry in &status.inventory {
        assert!(
            live(&client, entry).await.is_some(),
            "{entry:?} is in the inventory but not in the cluster"
        );
    }
}

/// The live object of an inventory entry, if it exists.
async fn live(client: &Client, entry: &InventoryEntry) -> Option<kube::api::DynamicObject> {
    let gvk = kube::api::GroupVersionKind::gvk(&entry.group, &entry.version, &entry.kind);
    let (ar, caps) = kube::discovery::pinned_kind(client, &gvk).await.unwrap();
    let api: Api<kube::api::DynamicObject> = if caps.scope == kube::discovery::Scope::Namespaced {
        Api::namespaced_with(client.clone(), &entry.namespace, &ar)
    } else {
        Api::all_with(client.clone(), &ar)
    };
    api.get_opt(&entry.name).await.unwrap()
}

#[tokio::test]
#[ignore = "needs a cluster with the puller installed (KUBECONFIG)"]
async fn deleting_a_pruning_sync_deletes_what_it_applied() {
    let client = Client::try_default().await.unwrap();
    let api: Api<ArtifactSync> = Api::namespaced(client.clone(), &namespace());
    let s = sync(
        "e2e-delete",
        &env("TRESOR_E2E_TAG", Some("v1")),
        signed_by_e2e_key(),
    );
    create(&api, &s).await;
    let done = wait_ready(&api, "e2e-delete", ConditionStatus::True).await;
    assert_eq!(
        done.metadata.finalizers,
        Some(vec![tresor::puller::FINALIZER.to_string()])
    );
    let inventory = done.status.unwrap().inventory;
    assert!(!inventory.is_empty());
    api.delete("e2e-delete", &DeleteParams::default())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while api.get_opt("e2e-delete").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "e2e-delete was not finalized");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for entry in &inventory {
        let object = live(&client, entry).await;
        assert!(
            object.is_none_or(|o| o.metadata.deletion_timestamp.is_some()),
            "{entry:?} survived its ArtifactSync"
        );
    }
}

#[tokio::test]
#[ignore = "needs a cluster with the puller installed (KUBECONFIG)"]
async fn unsigned_tag_is_stalled_and_touches_nothing() {
    let client = Client::try_default().await.unwrap();
    let api: Api<ArtifactSync> = Api::namespaced(client, &namespace());
    let tag = env("TRESOR_E2E_UNSIGNED_TAG", Some("unsigned"));
    let s = sync("e2e-unsigned", &tag, signed_by_e2e_key());
    create(&api, &s).await;
    let done = wait_ready(&api, "e2e-unsigned", ConditionStatus::False).await;
    let status = done.status.unwrap();
    assert!(status.last_applied_digest.is_none(), "nothing was applied");
    assert!(status.inventory.is_empty());
    let stalled = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Stalled")
        .expect("Stalled condition");
    assert_eq!(stalled.status, ConditionStatus::True);
}
