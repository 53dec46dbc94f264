//! Helpers shared by the puller benchmarks (`puller_idle` against the API double,
//! `puller_cluster` against the real API server of scripts/cluster.sh).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, Response};

/// `tresor push TREE oci://REFERENCE --plain-http` (extra `args`) with an empty docker
/// config in `work`; returns the pushed digest.
pub fn push_tree(
    work: &std::path::Path,
    tree: &std::path::Path,
    reference: &str,
    args: &[&str],
) -> String {
    let docker = work.join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tresor"))
        .args(["push", tree.to_str().unwrap()])
        .arg(format!("oci://{reference}"))
        .args(["--plain-http", "--format", "json"])
        .args(args)
        .env("DOCKER_CONFIG", &docker)
        .env_remove("TRESOR_CREDS")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tresor push failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    json.get("digest")
        .and_then(|d| d.as_str())
        .unwrap()
        .to_string()
}

/// A number from the environment, or `default`.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A plain-HTTP proxy to `upstream` that records `METHOD endpoint` of every request.
pub fn start_proxy(upstream: String) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = log.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let client = reqwest::Client::new();
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let app = axum::Router::new().fallback(move |req: Request<Body>| {
                let (client, seen, upstream) = (client.clone(), seen.clone(), upstream.clone());
                async move {
                    let (parts, body) = req.into_parts();
                    let path = parts.uri.path().to_string();
                    let endpoint = ["manifests", "blobs", "tags", "referrers"]
                        .into_iter()
                        .find(|e| path.contains(&format!("/{e}/")))
                        .unwrap_or(if path == "/v2/" { "ping" } else { "other" });
                    seen.lock()
                        .unwrap()
                        .push(format!("{} {endpoint}", parts.method));
                    let body = axum::body::to_bytes(body, 1 << 30)
                        .await
                        .unwrap_or_default();
                    let url = format!(
                        "http://{upstream}{}",
                        parts
                            .uri
                            .path_and_query()
                            .map(|p| p.as_str())
                            .unwrap_or("/")
                    );
                    let mut request = client.request(parts.method.clone(), url).body(body);
                    for (name, value) in &parts.headers {
                        if name != "host" {
                            request = request.header(name, value);
                        }
                    }
                    let answer = request.send().await.unwrap();
                    let mut response = Response::builder().status(answer.status());
                    for (name, value) in answer.headers() {
                        if name != "transfer-encoding" && name != "connection" {
                            response = response.header(name, value);
                        }
                    }
                    let bytes = answer.bytes().await.unwrap_or_default();
                    response.body(Body::from(bytes)).unwrap()
                }
            });
            axum::serve(listener, app).await.unwrap();
        });
    });
    (addr.to_string(), log)
}

pub fn proc_status(pid: u32) -> BTreeMap<String, String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// utime + stime of `pid`, in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the command: state is field 3 of stat; utime 14, stime 15 (1-based).
    let get = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(11) + get(12)
}

/// The sum of `tresor_reconciles_total` over outcomes, from the puller's `/metrics`.
pub async fn cycles(metrics: &str) -> u64 {
    let text = reqwest::get(format!("http://{metrics}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("tresor_reconciles_total{"))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .map(|v| v as u64)
        .sum()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn tally(lines: &[String]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for l in lines {
        *out.entry(l.clone()).or_insert(0) += 1;
    }
    out
}
