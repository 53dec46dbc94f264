//! `tresor status` against an in-process HTTP double of the Kubernetes list endpoints.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

const DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

fn sync(ns: &str, name: &str, ready: Option<(&str, &str, &str)>, suspend: bool) -> Value {
    let mut v = json!({
        "apiVersion": "tresor.dev/v1alpha1",
        "kind": "ArtifactSync",
        "metadata": {
            "name": name, "namespace": ns, "generation": 2,
            "creationTimestamp": "2020-01-01T00:00:00Z"
        },
        "spec": {
            "url": format!("oci://registry.example/{name}"),
            "ref": {"tag": "v1"},
            "interval": "5m",
            "suspend": suspend
        }
    });
    if let Some((status, reason, message)) = ready {
        v["status"] = json!({
            "observedGeneration": 2,
            "lastAppliedDigest": DIGEST,
            "conditions": [{
                "type": "Ready", "status": status, "reason": reason, "message": message,
                "lastTransitionTime": "2020-01-01T00:01:00Z", "observedGeneration": 2
            }]
        });
    }
    v
}

/// The API double: serves the cluster-wide and namespaced ArtifactSync lists, records paths.
struct Double {
    addr: SocketAddr,
    paths: Arc<Mutex<Vec<String>>>,
}

#[derive(Clone)]
struct AppState {
    items: Arc<Vec<Value>>,
    paths: Arc<Mutex<Vec<String>>>,
    installed: bool,
}

fn list(state: &AppState, ns: Option<&str>) -> axum::response::Response {
    if !state.installed {
        let body = json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure",
            "reason": "NotFound", "code": 404, "message": "the server could not find the requested resource"
        });
        return (StatusCode::NOT_FOUND, Json(body)).into_response();
    }
    let items: Vec<Value> = state
        .items
        .iter()
        .filter(|i| ns.is_none_or(|ns| i["metadata"]["namespace"] == ns))
        .cloned()
        .collect();
    Json(json!({
        "apiVersion": "tresor.dev/v1alpha1",
        "kind": "ArtifactSyncList",
        "metadata": {"resourceVersion": "42"},
        "items": items
    }))
    .into_response()
}

async fn start(items: Vec<Value>, installed: bool) -> Double {
    let paths = Arc::new(Mutex::new(Vec::new()));
    let state = AppState {
        items: Arc::new(items),
        paths: paths.clone(),
        installed,
    };
    let app = Router::new()
        .route(
            "/apis/tresor.dev/v1alpha1/artifactsyncs",
            get(|State(s): State<AppState>| async move {
                s.paths.lock().unwrap().push("all".into());
                list(&s, None)
            }),
        )
        .route(
            "/apis/tresor.dev/v1alpha1/namespaces/{ns}/artifactsyncs",
            get(
                |State(s): State<AppState>, Path(ns): Path<String>| async move {
                    s.paths.lock().unwrap().push(format!("ns/{ns}"));
                    list(&s, Some(&ns))
                },
            ),
        )
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Double { addr, paths }
}

fn kubeconfig(addr: SocketAddr) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: double\n  cluster:\n    server: http://{addr}\n\
         users:\n- name: tester\n  user:\n    token: not-a-secret\n\
         contexts:\n- name: double\n  context:\n    cluster: double\n    user: tester\n\
         current-context: double\n"
    )
}

fn items() -> Vec<Value> {
    vec![
        sync(
            "team-b",
            "web",
            Some(("False", "SignatureInvalid", "verify: no valid signature")),
            false,
        ),
        sync(
            "team-a",
            "api",
            Some(("True", "Applied", "applied sha256:1111")),
            false,
        ),
        sync("team-a", "batch", None, true),
    ]
}

#[tokio::test]
async fn list_reads_all_namespaces_through_a_custom_kubeconfig() {
    let double = start(items(), true).await;
    let kc = kube::config::Kubeconfig::from_yaml(&kubeconfig(double.addr)).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let listed = tresor::cli::status::list(client, None).await.unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!(double.paths.lock().unwrap().as_slice(), ["all"]);

    let rows = tresor::cli::status::rows(&listed, SystemTime::now());
    let names: Vec<_> = rows
        .iter()
        .map(|r| format!("{}/{}", r.namespace, r.name))
        .collect();
    assert_eq!(
        names,
        ["team-a/api", "team-a/batch", "team-b/web"],
        "sorted"
    );
    assert_eq!(rows[0].ready, "True");
    assert_eq!(rows[0].reason, "Applied");
    assert_eq!(rows[0].last_applied_digest.as_deref(), Some(DIGEST));
    assert_eq!(rows[0].source_ref, "tag:v1");
    assert_eq!(rows[1].ready, "Unknown", "no status yet");
    assert_eq!(rows[1].reason, "Suspended");
    assert!(rows[1].suspended);
    assert_eq!(rows[2].ready, "False");
    assert_eq!(rows[2].reason, "SignatureInvalid");
    assert!(
        rows[2].age.ends_with('y') || rows[2].age.ends_with('d'),
        "{}",
        rows[2].age
    );
}

/// Issue 17: one ArtifactSync the Rust types cannot read (written under a CRD without the
/// CEL rules; the API double stands in for such a server) does not hide the others: it is
/// listed with Ready False, reason InvalidSpec, naming the field.
#[tokio::test]
async fn an_unreadable_sync_is_listed_as_invalid_and_hides_nothing() {
    let mut bad = sync("team-c", "bad", None, false);
    bad["spec"]["verify"] = json!({"authorities": [{"name": "k", "key": {"data": "x"}}],
        "require": 0});
    let mut all = items();
    all.push(bad);
    let double = start(all, true).await;
    let kc = kube::config::Kubeconfig::from_yaml(&kubeconfig(double.addr)).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let listed = tresor::cli::status::list(client, None).await.unwrap();
    let rows = tresor::cli::status::rows(&listed, SystemTime::now());
    assert_eq!(rows.len(), 4);
    let bad = rows.iter().find(|r| r.name == "bad").unwrap();
    assert_eq!(
        (
            bad.namespace.as_str(),
            bad.ready.as_str(),
            bad.reason.as_str()
        ),
        ("team-c", "False", "InvalidSpec")
    );
    assert_eq!(bad.url, "oci://registry.example/bad");
    assert!(
        bad.message.contains("spec.verify.require"),
        "{}",
        bad.message
    );
}

/// Runs the real binary against the double with KUBECONFIG pointing at it.
async fn tresor_status(double: &Double, args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, kubeconfig(double.addr)).unwrap();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = assert_cmd::Command::cargo_bin("tresor")
            .unwrap()
            .arg("status")
            .args(&args)
            .env("KUBECONFIG", &path)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .output()
            .unwrap();
        drop(dir);
        out
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_text_for_one_namespace() {
    let double = start(items(), true).await;
    let out = tresor_status(&double, &["-n", "team-a"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(double.paths.lock().unwrap().as_slice(), ["ns/team-a"]);
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<_> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    let header: Vec<_> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAMESPACE",
            "NAME",
            "URL",
            "REF",
            "READY",
            "REASON",
            "DIGEST",
            "AGE"
        ]
    );
    let api: Vec<_> = lines[1].split_whitespace().collect();
    assert_eq!(
        &api[..7],
        [
            "team-a",
            "api",
            "oci://registry.example/api",
            "tag:v1",
            "True",
            "Applied",
            "sha256:111111111111"
        ]
    );
    let batch: Vec<_> = lines[2].split_whitespace().collect();
    assert_eq!(&batch[4..7], ["Unknown", "Suspended", "-"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_lists_every_namespace() {
    let double = start(items(), true).await;
    let out = tresor_status(&double, &["--format", "json"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(items[2]["namespace"], "team-b");
    assert_eq!(items[2]["ready"], "False");
    assert_eq!(items[2]["reason"], "SignatureInvalid");
    assert_eq!(items[2]["message"], "verify: no valid signature");
    assert_eq!(items[2]["lastAppliedDigest"], DIGEST);
    assert_eq!(items[2]["ref"], "tag:v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_without_the_crd_says_how_to_install_it() {
    let double = start(vec![], false).await;
    let out = tresor_status(&double, &[]).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CRD is not installed"), "{err}");
    assert!(err.contains("kubectl apply -k deploy/"), "{err}");
    assert!(
        !err.contains("not-a-secret"),
        "the token must never be printed"
    );
}
