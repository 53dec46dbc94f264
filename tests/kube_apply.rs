//! The Kubernetes apply step against the in-process API double (tests/common/kube_api.rs)
//! through a real `kube::Client`, for faults a real server does not produce on demand (issue
//! 11): a server slow to establish a CRD. Everything else the apply step does is tested
//! against the real API server in tests/cluster_apply.rs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::kube_api::KubeApi;
use serde_json::{json, Value};
use tresor::digest::Digest;
use tresor::kube::{ApplyError, ApplyOptions, Cluster, DiscoveryResolver, KubeApplier, Owner};

fn widget_crd() -> Value {
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.acme.dev"},
        "spec": {"group": "acme.dev", "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}})
}

/// The fault: the double establishes CRDs 30 s after they were created; the apply waits
/// 300 ms. A transient `CrdNotEstablished` naming the CRD, and no custom resource sent.
#[tokio::test]
async fn crd_stops_before_its_resources_when_the_server_is_slow_to_establish_it() {
    let api = KubeApi::start(Duration::from_secs(30));
    let staging = tempfile::tempdir().unwrap();
    let client = api.client();
    let resolver = Arc::new(DiscoveryResolver::new(
        client.clone(),
        Duration::from_secs(5),
    ));
    let mut options = ApplyOptions::new(Owner {
        name: "shop".into(),
        namespace: "default".into(),
    });
    options.target_namespace = Some("shop".into());
    options.poll = Duration::from_millis(20);
    options.api_timeout = Duration::from_secs(5);
    options.crd_timeout = Duration::from_millis(300);
    let mut applier = KubeApplier::new(
        Cluster::new(client, resolver, None),
        options,
        staging.path(),
    );
    let err = applier
        .apply_objects(
            &Digest::of(&[1]),
            vec![
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}),
                widget_crd(),
                json!({"apiVersion": "acme.dev/v1", "kind": "Widget",
                    "metadata": {"name": "blue"}, "spec": {"size": 3}}),
            ],
        )
        .await
        .unwrap_err();
    match &err {
        ApplyError::CrdNotEstablished { crds, .. } => {
            assert_eq!(crds, &vec!["widgets.acme.dev".to_string()])
        }
        other => panic!("{other:?}"),
    }
    assert!(err.is_transient());
    assert_eq!(api.count("acme.dev", "widgets"), 0);
}
