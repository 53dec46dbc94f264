//! Lint throughput on a generated 10,000-object tree: `cargo bench --bench lint`
//! (or `scripts/bench-lint.sh`). Prints objects/s for the whole lint and for its parts:
//! the policy-view parse the lint uses (`objects::scan_tree`), the full parse
//! (`objects::parse_tree_all`, what diff and apply use) and the rules plus policy. The
//! parsers use every core; the CPU column is objects per CPU-second (one core).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

// The allocator of the `tresor` binary, so the figures are those of `tresor lint`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use tresor::artifact::objects::{self, ContentMode};
use tresor::policy::{self, rules, Policy};

const OBJECTS: usize = 10_000;
const PER_FILE: usize = 100;

/// Realistic rendered manifests: Deployments (two containers, an init container, probes,
/// resources), Services and ConfigMaps, a third each.
fn tree() -> Vec<(String, Vec<u8>)> {
    let digest = "sha256:4f5f7f5d8b1e0d5c0a6b7e3c2d1f0e9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e";
    let mut files = Vec::new();
    let mut n = 0;
    while n < OBJECTS {
        let mut text = String::new();
        for _ in 0..PER_FILE.min(OBJECTS - n) {
            let doc = match n % 3 {
                0 => format!(
                    "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app-{n}\n  namespace: team-{t}\n  labels: {{app: app-{n}, tier: web}}\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {{app: app-{n}}}\n  template:\n    metadata:\n      labels: {{app: app-{n}}}\n    spec:\n      initContainers:\n        - name: migrate\n          image: ghcr.io/acme/migrate:1.{n}@{digest}\n      containers:\n        - name: app\n          image: ghcr.io/acme/app-{n}:1.2.{n}\n          ports: [{{containerPort: 8080}}]\n          resources:\n            requests: {{cpu: 100m, memory: 128Mi}}\n          readinessProbe:\n            httpGet: {{path: /healthz, port: 8080}}\n        - name: proxy\n          image: envoyproxy/envoy:v1.31.0@{digest}\n",
                    t = n % 17
                ),
                1 => format!(
                    "apiVersion: v1\nkind: Service\nmetadata:\n  name: svc-{n}\n  namespace: team-{t}\nspec:\n  selector: {{app: app-{n}}}\n  ports:\n    - {{name: http, port: 80, targetPort: 8080}}\n",
                    t = n % 17
                ),
                _ => format!(
                    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg-{n}\n  namespace: team-{t}\ndata:\n  LOG_LEVEL: info\n  FEATURE_X: \"true\"\n  config.yaml: |\n    listen: :8080\n    upstream: http://svc-{n}\n",
                    t = n % 17
                ),
            };
            text.push_str("---\n");
            text.push_str(&doc);
            n += 1;
        }
        files.push((
            format!("apps/part-{:04}.yaml", files.len()),
            text.into_bytes(),
        ));
    }
    files
}

/// CPU time of this (single-threaded) process: on a shared machine, wall time also counts
/// the time other processes had the core. Linux only; `None` elsewhere.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses): utime is the 12th, stime 13th.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10)) // USER_HZ is 100 on Linux
}

/// Runs `f` `iterations` times and prints its rates, unless the command line names other
/// parts (`cargo bench --bench lint -- policy`: only the parts whose name contains `policy`,
/// e.g. to profile one of them).
fn measure(name: &str, iterations: u32, mut f: impl FnMut() -> usize) -> f64 {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
        return 0.0;
    }
    f(); // warm-up
    let cpu_start = cpu_time();
    let start = Instant::now();
    let mut objects = 0;
    for _ in 0..iterations {
        objects += f();
    }
    let elapsed = start.elapsed().max(Duration::from_nanos(1));
    let cpu = cpu_start
        .zip(cpu_time())
        .map(|(a, b)| b.saturating_sub(a).max(Duration::from_millis(10)));
    let rate = objects as f64 / elapsed.as_secs_f64();
    let cpu_rate = cpu.map_or(String::from("-"), |c| {
        format!("{:.0}", objects as f64 / c.as_secs_f64())
    });
    println!(
        "{name:<22} {:>8.1} ms/run  {:>10.0} objects/s wall  {:>10} objects/s CPU",
        elapsed.as_secs_f64() * 1000.0 / f64::from(iterations),
        rate,
        cpu_rate
    );
    rate
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` and nextest's `--list` also
    // run bench binaries: there is nothing to test here, so do nothing for them.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let files = tree();
    let bytes: usize = files.iter().map(|(_, b)| b.len()).sum();
    println!(
        "tree: {OBJECTS} objects in {} files, {:.1} MiB YAML",
        files.len(),
        bytes as f64 / (1 << 20) as f64
    );
    let policy = Policy::default();
    let iterations = 10;
    measure("lint (parse + rules)", iterations, || {
        let report = policy::lint_files(black_box(&files), ContentMode::Kubernetes, &policy);
        assert_eq!(report.objects, OBJECTS);
        report.objects
    });
    measure("parse, policy view", iterations, || {
        let (scanned, errors) =
            objects::scan_tree(black_box(&files), ContentMode::Kubernetes, |o| o.line);
        assert!(errors.is_empty());
        scanned.len()
    });
    let (parsed, errors) = objects::parse_tree_all(&files, ContentMode::Kubernetes);
    assert!(errors.is_empty());
    measure("parse, full (YAML)", iterations, || {
        objects::parse_tree_all(black_box(&files), ContentMode::Kubernetes)
            .0
            .len()
    });
    measure("rules + policy only", iterations * 10, || {
        let mut findings = Vec::new();
        for object in black_box(&parsed) {
            rules::check(object, false, &mut findings);
        }
        black_box(policy.apply(findings, &parsed));
        parsed.len()
    });
}
