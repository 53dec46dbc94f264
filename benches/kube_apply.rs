//! Apply throughput against the in-process API double: `cargo bench --bench kube_apply`
//! (or `scripts/bench-apply.sh`). Applies 1,000 objects (a Namespace, then ConfigMaps,
//! Services and Deployments) through a real `kube::Client` with the production code path
//! (discovery, dry run per stage, then the real apply, 8 requests in flight), then the
//! same artifact again (every object unchanged), and prints objects/s for both.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/kube_api.rs"]
#[allow(
    dead_code,
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]
mod kube_api;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tresor::digest::Digest;
use tresor::kube::{ApplyOptions, Cluster, DiscoveryResolver, KubeApplier, Owner};

const OBJECTS: usize = 1_000;

fn manifests() -> Vec<Value> {
    let mut out =
        vec![json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}})];
    for n in 1..OBJECTS {
        out.push(match n % 3 {
            0 => json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": format!("app-{n}")},
                "spec": {"replicas": 2, "selector": {"matchLabels": {"app": format!("app-{n}")}},
                    "template": {"metadata": {"labels": {"app": format!("app-{n}")}},
                        "spec": {"containers": [{"name": "app", "image": format!("ghcr.io/acme/app:1.{n}"),
                            "ports": [{"containerPort": 8080}], "resources": {"requests": {"cpu": "100m"}}}]}}}}),
            1 => json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": format!("svc-{n}")},
                "spec": {"selector": {"app": format!("app-{n}")}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}),
            _ => json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("cfg-{n}")},
                "data": {"LOG_LEVEL": "info", "config.yaml": format!("listen: :8080\nupstream: http://svc-{n}\n")}}),
        });
    }
    out
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` also runs bench binaries.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let api = kube_api::KubeApi::start(Duration::from_millis(10));
    let staging = tempfile::tempdir().unwrap();
    let client = api.client();
    let resolver = Arc::new(DiscoveryResolver::new(
        client.clone(),
        Duration::from_secs(10),
    ));
    let mut options = ApplyOptions::new(Owner {
        name: "bench".into(),
        namespace: "default".into(),
    });
    options.target_namespace = Some("bench".into());
    let mut applier = KubeApplier::new(
        Cluster::new(client, resolver, None),
        options,
        staging.path(),
    );

    let started = Instant::now();
    applier
        .apply_objects(&Digest::of(b"1"), manifests())
        .await
        .unwrap();
    let create = started.elapsed();
    assert_eq!(applier.inventory().len(), OBJECTS);
    let requests = api.requests().len();

    let started = Instant::now();
    applier
        .apply_objects(&Digest::of(b"2"), manifests())
        .await
        .unwrap();
    let again = started.elapsed();

    let rate = |d: Duration| OBJECTS as f64 / d.as_secs_f64();
    println!(
        "kube_apply: {OBJECTS} objects created in {:.2} s = {:.0} objects/s ({requests} requests: discovery, dry run, apply)",
        create.as_secs_f64(),
        rate(create)
    );
    println!(
        "kube_apply: {OBJECTS} unchanged objects re-applied in {:.2} s = {:.0} objects/s",
        again.as_secs_f64(),
        rate(again)
    );
}
