//! The puller against the real API server of `scripts/cluster.sh`: `cargo bench --bench
//! puller_cluster` (or `scripts/bench-cluster.sh puller`).
//!
//! Pushes one artifact per ArtifactSync to the local plain registry (a Namespace, then
//! ConfigMaps, Services and Deployments: `OBJECTS` objects), puts a counting proxy in front
//! of the registry, runs the real `tresor-puller` release binary as a child process with the
//! admin kubeconfig, creates `SYNCS` ArtifactSyncs (`interval` `INTERVAL` s) and measures:
//!
//! - the time until all are Ready, and the puller's RSS (VmRSS, VmHWM) then and when idle;
//! - over `IDLE_CYCLES` intervals: API requests as the **server** counts them
//!   (`apiserver_request_total` from its /metrics, per verb and resource; the controller
//!   manager's own resources are left out), registry requests per cycle per sync (proxy);
//! - push → applied: a new version pushed under sync 0's tag, until its status names the
//!   new digest (`LATENCY_SAMPLES` times).
//!
//! Environment: `SYNCS` (100), `OBJECTS` (4), `INTERVAL` seconds (10), `IDLE_CYCLES` (3),
//! `LATENCY_SAMPLES` (3), `WATCH_DRIFT=0` (`--no-watch-drift`, for comparison),
//! `TRESOR_CLUSTER_KUBECONFIG`, `TRESOR_REGISTRY_PLAIN`. Run it on a
//! quiet cluster: the request counts are the whole server's.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{cpu_ticks, cycles, env_or, free_port, proc_status, push_tree, start_proxy, tally};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tresor::api::ArtifactSync;

/// Pushes artifact `i` (`objects` objects in Namespace `<prefix>-<i>`) as `repo:tag`;
/// returns its digest.
fn push(
    work: &std::path::Path,
    host: &str,
    repo: &str,
    tag: &str,
    i: u64,
    objects: u64,
    version: u32,
) -> String {
    let tree = work.join(format!("tree-{i}-{version}"));
    std::fs::create_dir_all(&tree).unwrap();
    let ns = repo.rsplit('/').next().unwrap();
    let mut docs = vec![format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"
    )];
    for n in 1..objects {
        docs.push(match n % 3 {
            1 => format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-{n}\n  namespace: {ns}\ndata:\n  LOG_LEVEL: info\n  version: \"{version}\"\n"
            ),
            2 => format!(
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: web-{n}\n  namespace: {ns}\nspec:\n  selector:\n    app: web-{n}\n  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n"
            ),
            _ => format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web-{n}\n  namespace: {ns}\nspec:\n  replicas: 2\n  selector:\n    matchLabels:\n      app: web-{n}\n  template:\n    metadata:\n      labels:\n        app: web-{n}\n    spec:\n      containers:\n      - name: web\n        image: ghcr.io/acme/web@sha256:{:064x}\n        resources:\n          requests:\n            cpu: 100m\n            memory: 64Mi\n",
                i
            ),
        });
    }
    std::fs::write(tree.join("app.yaml"), docs.join("---\n")).unwrap();
    push_tree(
        work,
        &tree,
        &format!("{host}/{repo}:{tag}"),
        &["--overwrite"],
    )
}

/// `apiserver_request_total` by `VERB resource`, from the server's /metrics.
async fn server_requests(client: &kube::Client) -> BTreeMap<String, f64> {
    let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = client.request_text(request).await.unwrap();
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let Some((labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(&format!("{name}=\""))
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("")
                .to_string()
        };
        let key = format!("{} {}", label("verb"), label("resource"));
        *out.entry(key).or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
    }
    out
}

/// Resources the controller manager reads and writes on its own at idle (leases,
/// discovery, its informers' relists): not the puller's.
fn puller_resource(key: &str) -> bool {
    let resource = key.split_once(' ').map_or("", |(_, r)| r);
    !matches!(
        resource,
        "" | "leases"
            | "subjectaccessreviews"
            | "tokenreviews"
            | "serviceaccounts"
            | "endpointslices"
    )
}

fn rss(pid: u32) -> String {
    let status = proc_status(pid);
    let field = |name| status.get(name).map_or("?", String::as_str);
    format!(
        "{} (peak {}; anonymous {}, file-backed {})",
        field("VmRSS"),
        field("VmHWM"),
        field("RssAnon"),
        field("RssFile")
    )
}

/// Stops the puller and whatever runs it (`PULLER_WRAPPER`): its whole process group, so a
/// profiler's puller does not outlive the run and go on calling the next run's server.
fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

async fn wait_all_ready(
    api: &Api<ArtifactSync>,
    syncs: u64,
    child: &mut Child,
    log: &std::path::Path,
) {
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let list = api.list(&Default::default()).await.unwrap();
        let ready = list
            .items
            .iter()
            .filter(|s| {
                s.status.as_ref().is_some_and(|st| {
                    st.last_applied_digest.is_some()
                        && st
                            .conditions
                            .iter()
                            .any(|c| c.type_ == "Ready" && c.status.as_str() == "True")
                })
            })
            .count() as u64;
        if ready == syncs {
            return;
        }
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            stop(child);
            panic!("only {ready}/{syncs} Ready; puller log (newest first):\n{tail:#?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let syncs = env_or("SYNCS", 100);
    let objects = env_or("OBJECTS", 4).max(1);
    let interval = env_or("INTERVAL", 10);
    let idle_cycles = env_or("IDLE_CYCLES", 3);
    let samples = env_or("LATENCY_SAMPLES", 3);
    let registry =
        std::env::var("TRESOR_REGISTRY_PLAIN").unwrap_or_else(|_| "127.0.0.1:5001".into());
    let kubeconfig = std::env::var("TRESOR_CLUSTER_KUBECONFIG").unwrap_or_else(|_| {
        format!(
            "{}/.tmp/cluster/admin.kubeconfig",
            env!("CARGO_MANIFEST_DIR")
        )
    });
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&kubeconfig).unwrap_or_else(|e| {
            panic!("{kubeconfig}: {e}; start the cluster with scripts/cluster.sh start")
        }),
        &Default::default(),
    )
    .await
    .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let version = client.apiserver_version().await.unwrap();

    let run = format!("b{}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": run}})).unwrap();
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let api: Api<ArtifactSync> = Api::namespaced(client.clone(), &run);

    let work = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let repo = |i: u64| format!("tresor-bench/{run}-{i}");
    let mut first_digest = String::new();
    for i in 0..syncs {
        let d = push(work.path(), &registry, &repo(i), "v1", i, objects, 1);
        if i == 0 {
            first_digest = d;
        }
    }
    println!(
        "puller_cluster: server {}; pushed {syncs} artifacts of {objects} objects in {:.1} s",
        version.git_version,
        started.elapsed().as_secs_f64()
    );
    let (proxy, registry_log) = start_proxy(registry.clone());

    let metrics = format!("127.0.0.1:{}", free_port());
    let log = std::env::var("PULLER_LOG")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| work.path().join("puller.log"));
    // PULLER_WRAPPER="heaptrack -o /tmp/puller" runs the puller under a profiler (the RSS
    // figures are then the wrapper's).
    let wrapper = std::env::var("PULLER_WRAPPER").unwrap_or_default();
    let mut words = wrapper.split_whitespace();
    let mut puller = match words.next() {
        Some(program) => {
            let mut c = Command::new(program);
            c.args(words).arg(env!("CARGO_BIN_EXE_tresor-puller"));
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_tresor-puller")),
    };
    if std::env::var("WATCH_DRIFT").is_ok_and(|v| v == "0") {
        puller.arg("--no-watch-drift");
    }
    let mut child = puller
        .env("KUBECONFIG", &kubeconfig)
        .args(["--cache-dir", work.path().join("cache").to_str().unwrap()])
        .args(["--metrics-addr", &metrics])
        .args(["--health-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--log-format", "text", "--concurrency", "4"])
        .args(["--watch-label-selector", &format!("tresor.bench/run={run}")])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .process_group(0)
        .spawn()
        .unwrap();
    let pid = child.id();

    let started = Instant::now();
    for i in 0..syncs {
        let sync: ArtifactSync = serde_json::from_value(json!({
            "apiVersion": "tresor.dev/v1alpha1", "kind": "ArtifactSync",
            "metadata": {"name": format!("app-{i}"), "namespace": run,
                "labels": {"tresor.bench/run": run}},
            "spec": {"url": format!("oci://{proxy}/{}", repo(i)), "ref": {"tag": "v1"},
                "interval": format!("{interval}s"), "insecure": true, "prune": true,
                "verify": {"allowUnsigned": true}},
        }))
        .unwrap();
        api.create(&PostParams::default(), &sync).await.unwrap();
    }
    wait_all_ready(&api, syncs, &mut child, &log).await;
    println!(
        "puller_cluster: {syncs} ArtifactSyncs ({} objects) Ready {:.1} s after creation; RSS {}",
        syncs * objects,
        started.elapsed().as_secs_f64(),
        rss(pid)
    );

    // Settle: every sync's next cycle records Unchanged (one status write each).
    tokio::time::sleep(Duration::from_secs(interval * 2 + 2)).await;
    registry_log.lock().unwrap().clear();
    let server_before = server_requests(&client).await;
    let cycles_before = cycles(&metrics).await;
    let cpu_before = cpu_ticks(pid);
    tokio::time::sleep(Duration::from_secs(interval * idle_cycles)).await;
    let ran = cycles(&metrics).await - cycles_before;
    let cpu = cpu_ticks(pid) - cpu_before;
    let server_after = server_requests(&client).await;
    let registry_requests = registry_log.lock().unwrap().clone();
    let per = |n: f64| n / ran.max(1) as f64;
    println!(
        "puller_cluster: idle {}s = {idle_cycles} intervals of {interval}s: {ran} cycles; RSS {}; CPU {:.1} ms per cycle",
        interval * idle_cycles,
        rss(pid),
        cpu as f64 * 10.0 / ran.max(1) as f64
    );
    println!(
        "puller_cluster: registry requests per idle cycle per ArtifactSync: {:.2}",
        per(registry_requests.len() as f64)
    );
    for (what, n) in tally(&registry_requests) {
        println!("puller_cluster:   registry {what}: {:.2}", per(n as f64));
    }
    let mut idle_requests = 0.0;
    for (key, after) in &server_after {
        let delta = after - server_before.get(key).copied().unwrap_or(0.0);
        if delta > 0.0 && puller_resource(key) {
            println!("puller_cluster:   server counted {key}: {delta}");
            if !key.starts_with("WATCH") {
                idle_requests += delta;
            }
        }
    }
    println!("puller_cluster: API requests in the idle window, watches aside (server-counted): {idle_requests}");

    // Push → applied.
    let mut latencies = Vec::new();
    for sample in 0..samples {
        let digest = push(
            work.path(),
            &registry,
            &repo(0),
            "v1",
            0,
            objects,
            sample as u32 + 2,
        );
        assert_ne!(digest, first_digest);
        let pushed = Instant::now();
        loop {
            let s = api.get("app-0").await.unwrap();
            if s.status.and_then(|st| st.last_applied_digest).as_deref() == Some(digest.as_str()) {
                break;
            }
            assert!(
                pushed.elapsed() < Duration::from_secs(interval * 3 + 30),
                "not applied"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        latencies.push(pushed.elapsed().as_secs_f64());
    }
    if !latencies.is_empty() {
        let max = latencies.iter().cloned().fold(0.0, f64::max);
        let mean = latencies.iter().sum::<f64>() / latencies.len() as f64;
        println!(
            "puller_cluster: push → applied at interval {interval}s: mean {mean:.1} s, max {max:.1} s ({samples} samples)"
        );
    }

    // Clean up: stop the puller, release the syncs, delete what they created.
    stop(&mut child);
    for i in 0..syncs {
        let _ = api
            .patch(
                &format!("app-{i}"),
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": null}})),
            )
            .await;
    }
    for i in 0..syncs {
        let _ = namespaces
            .delete(
                repo(i).rsplit('/').next().unwrap(),
                &DeleteParams::default(),
            )
            .await;
    }
    let _ = namespaces.delete(&run, &DeleteParams::default()).await;
}
