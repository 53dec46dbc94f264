//! The idle puller: `cargo bench --bench puller_idle` (or `scripts/bench-puller.sh`).
//!
//! Starts the in-process API double (tests/common/kube_api.rs) with the CRDs, pushes one
//! artifact per ArtifactSync (a Namespace, a ConfigMap, a Service and a Deployment) to the
//! local plain registry (127.0.0.1:5001, `TRESOR_REGISTRY_PLAIN`) with the `tresor` binary,
//! puts a counting HTTP proxy in front of that registry, runs the real `tresor-puller`
//! release binary as a child process (kubeconfig pointing at the double) and creates
//! `SYNCS` ArtifactSyncs (`interval` `INTERVAL`, unsigned allowed). Once all are Ready and
//! have settled, it counts over `IDLE_CYCLES` intervals the registry requests (by method
//! and endpoint) and API requests (by verb), divides by the cycles the puller ran (from its
//! `/metrics`), and reads the puller's RSS (`VmRSS`, `VmHWM` from /proc/PID/status) and CPU
//! time (/proc/PID/stat). RSS is the puller process alone: the double and the proxy live in
//! this process.
//!
//! Environment: `SYNCS` (default 100), `INTERVAL` seconds (default 10), `IDLE_CYCLES`
//! (default 3), `WATCH_DRIFT=0` runs the puller with `--no-watch-drift` for comparison.
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

mod common;

use common::{cpu_ticks, cycles, env_or, free_port, proc_status, push_tree, start_proxy, tally};

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use serde_json::json;
use tresor::api::ArtifactSync;

fn push(work: &std::path::Path, host: &str, repo: &str, i: u64) {
    let tree = work.join(format!("tree-{i}"));
    std::fs::create_dir_all(&tree).unwrap();
    let ns = format!("app-{i}");
    std::fs::write(
        tree.join("app.yaml"),
        format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n---\n\
             apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\n  namespace: {ns}\ndata:\n  LOG_LEVEL: info\n  config.yaml: |\n    listen: :8080\n    id: {i}\n---\n\
             apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: {ns}\nspec:\n  selector:\n    app: web\n  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n---\n\
             apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: {ns}\nspec:\n  replicas: 2\n  selector:\n    matchLabels:\n      app: web\n  template:\n    metadata:\n      labels:\n        app: web\n    spec:\n      containers:\n      - name: web\n        image: ghcr.io/acme/web:1.{i}\n        ports:\n        - containerPort: 8080\n        resources:\n          requests:\n            cpu: 100m\n            memory: 64Mi\n          limits:\n            memory: 128Mi\n"
        ),
    )
    .unwrap();
    push_tree(work, &tree, &format!("{host}/{repo}:v1"), &[]);
}

/// An API request as `verb resource`: get, list, watch, or the write verbs.
fn api_verb(request: &str) -> String {
    let (method, rest) = request.split_once(' ').unwrap_or((request, ""));
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let after_version = match segs.first() {
        Some(&"api") => 2,
        _ => 3,
    };
    let tail: Vec<&str> = segs.iter().skip(after_version).copied().collect();
    let (resource, named) = match tail.as_slice() {
        ["namespaces", _, r, name @ ..] => (*r, !name.is_empty()),
        [r, name @ ..] => (*r, !name.is_empty()),
        [] => ("discovery", false),
    };
    let verb = match method {
        "GET" if query.contains("watch=true") || query.contains("watch=1") => "watch",
        "GET" if named => "get",
        "GET" => "list",
        "PATCH" => "patch",
        "PUT" => "update",
        "POST" => "create",
        "DELETE" => "delete",
        other => other,
    };
    format!("{verb} {resource}")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let syncs = env_or("SYNCS", 100);
    let interval = env_or("INTERVAL", 10);
    let idle_cycles = env_or("IDLE_CYCLES", 3);
    let watch_drift = std::env::var("WATCH_DRIFT").map_or(true, |v| v != "0");
    let registry =
        std::env::var("TRESOR_REGISTRY_PLAIN").unwrap_or_else(|_| "127.0.0.1:5001".into());

    let api = kube_api::KubeApi::start(Duration::from_millis(10));
    let client = api.client();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in tresor::api::crdgen::crds() {
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
    let sync_api: Api<ArtifactSync> = Api::namespaced(client.clone(), "default");
    while sync_api.list(&Default::default()).await.is_err() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let work = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let prefix = format!("tresor-bench/puller-{}", std::process::id());
    for i in 0..syncs {
        push(work.path(), &registry, &format!("{prefix}-{i}"), i);
    }
    println!(
        "puller_idle: pushed {syncs} artifacts in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let (proxy, registry_log) = start_proxy(registry.clone());

    let kubeconfig = api.kubeconfig(work.path());
    let metrics = format!("127.0.0.1:{}", free_port());
    // PULLER_LOG keeps the puller's log (text) after the run.
    let log = std::env::var("PULLER_LOG")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| work.path().join("puller.log"));
    let mut puller = Command::new(env!("CARGO_BIN_EXE_tresor-puller"));
    puller
        .env("KUBECONFIG", &kubeconfig)
        .args(["--cache-dir", work.path().join("cache").to_str().unwrap()])
        .args(["--metrics-addr", &metrics])
        .args(["--health-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--log-format", "text", "--concurrency", "4"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    if !watch_drift {
        puller.arg("--no-watch-drift");
    }
    let mut child = puller.spawn().unwrap();
    let pid = child.id();

    let started = Instant::now();
    for i in 0..syncs {
        let sync: ArtifactSync = serde_json::from_value(json!({
            "apiVersion": "tresor.dev/v1alpha1", "kind": "ArtifactSync",
            "metadata": {"name": format!("app-{i}"), "namespace": "default"},
            "spec": {"url": format!("oci://{proxy}/{prefix}-{i}"), "ref": {"tag": "v1"},
                "interval": format!("{interval}s"), "insecure": true,
                "verify": {"allowUnsigned": true}},
        }))
        .unwrap();
        sync_api
            .create(&PostParams::default(), &sync)
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let list = sync_api.list(&Default::default()).await.unwrap();
        let ready = list
            .items
            .iter()
            .filter(|s| {
                s.status.as_ref().is_some_and(|st| {
                    st.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status.as_str() == "True")
                })
            })
            .count();
        if ready as u64 == syncs {
            break;
        }
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            let _ = child.kill();
            panic!("only {ready}/{syncs} Ready; puller log (last lines, newest first):\n{tail:#?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "puller_idle: {syncs} ArtifactSyncs Ready {:.1} s after creation (puller pid {pid}, watch drift {})",
        started.elapsed().as_secs_f64(),
        if watch_drift { "on" } else { "off" }
    );

    // Settle: every sync's next cycle records Unchanged (one status write each).
    tokio::time::sleep(Duration::from_secs(interval * 2 + 2)).await;
    api.clear_log();
    registry_log.lock().unwrap().clear();
    let cycles_before = cycles(&metrics).await;
    let cpu_before = cpu_ticks(pid);
    tokio::time::sleep(Duration::from_secs(interval * idle_cycles)).await;
    let ran = cycles(&metrics).await - cycles_before;
    let cpu = cpu_ticks(pid) - cpu_before;
    let status = proc_status(pid);
    let registry_requests = registry_log.lock().unwrap().clone();
    let api_requests: Vec<String> = api.requests().iter().map(|r| api_verb(r)).collect();
    let writes = api.writes();
    let _ = child.kill();
    let _ = child.wait();

    let per = |n: usize| n as f64 / ran.max(1) as f64;
    println!(
        "puller_idle: idle window {}s = {idle_cycles} intervals of {interval}s: {ran} cycles ({:.2} per sync per interval)",
        interval * idle_cycles,
        ran as f64 / (syncs * idle_cycles) as f64
    );
    println!(
        "puller_idle: RSS {} (peak {}) with {syncs} ArtifactSyncs; CPU {:.1} ms per idle cycle",
        status.get("VmRSS").map_or("?", String::as_str),
        status.get("VmHWM").map_or("?", String::as_str),
        cpu as f64 * 10.0 / ran.max(1) as f64
    );
    println!(
        "puller_idle: registry requests per idle cycle per ArtifactSync: {:.2} ({} in total)",
        per(registry_requests.len()),
        registry_requests.len()
    );
    for (what, n) in tally(&registry_requests) {
        println!("puller_idle:   registry {what}: {:.2}", per(n));
    }
    println!(
        "puller_idle: API requests per idle cycle per ArtifactSync: {:.2}; writes: {} in total",
        per(api_requests.len()),
        writes.len()
    );
    for (what, n) in tally(&api_requests) {
        println!("puller_idle:   API {what}: {:.2} ({n})", per(n));
    }
    for w in writes.iter().take(10) {
        println!("puller_idle:   write: {w}");
    }
}
