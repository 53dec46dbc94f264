//! Key-based verification cost: CPU time per `signing::verify` of one artifact on an OCI
//! layout (no network), and of the pure policy evaluation (signature checks only).
//!
//! Run: `cargo bench --bench verify` (prints ms per verification; target ≤ 20 ms).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;
use std::time::Instant;

use tresor::artifact::metadata::Created;
use tresor::artifact::objects::ContentMode;
use tresor::artifact::push::{self, PushOptions};
use tresor::reference::Reference;
use tresor::registry::{RegistryOptions, Repository};
use tresor::signing::{keys, legacy, subject, verify, PrivateKey, Require, TrustPolicy};

/// CPU time of this thread in nanoseconds (Linux schedstat); falls back to 0.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` and nextest's `--list` also
    // run bench binaries: there is nothing to test here, so do nothing for them.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let iterations: u32 = std::env::var("BENCH_ITERATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let reference: Reference = format!("oci-layout:{}:v1", work.path().join("layout").display())
        .parse()
        .unwrap();
    let repo = Repository::open(&reference, &RegistryOptions::default()).unwrap();
    let tree = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/manifests/app");
    let package = push::package(
        &tree,
        &PushOptions {
            source: Some("https://example.com/acme/app".into()),
            revision: Some("main@sha1:0123".into()),
            annotations: Default::default(),
            created: Created::Epoch,
            overwrite: false,
            resolve_symlinks: false,
            content: ContentMode::Kubernetes,
        },
    )
    .unwrap();
    rt.block_on(push::upload(&repo, &reference, &package, false))
        .unwrap();
    // Two signers, so the loop checks 2 candidates × 2 authorities.
    let dir = work.path();
    let mut pubs = Vec::new();
    for name in ["a", "b"] {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        let files = keys::write_key_pair(&d, b"").unwrap();
        let key = PrivateKey::from_file(&files.private_key, b"").unwrap();
        rt.block_on(legacy::sign(&repo, &reference, &package.digest, &key))
            .unwrap();
        pubs.push(files.public_key);
    }
    let policy = TrustPolicy::for_keys(&pubs, Require::All).unwrap();

    let run = |label: &str, f: &mut dyn FnMut()| {
        f(); // warm up
        let (cpu0, wall0) = (thread_cpu_ns(), Instant::now());
        for _ in 0..iterations {
            f();
        }
        let cpu = (thread_cpu_ns() - cpu0) as f64 / 1e6 / f64::from(iterations);
        let wall = wall0.elapsed().as_secs_f64() * 1e3 / f64::from(iterations);
        println!(
            "{label}: {cpu:.3} ms CPU, {wall:.3} ms wall per verification ({iterations} runs)"
        );
    };

    run(
        "resolve + verify (layout: manifest, .sig manifest, 2 payloads; 2 keys, require all)",
        &mut || {
            rt.block_on(async {
                let subject = subject::resolve(&repo, &reference).await.unwrap();
                let v = verify(&repo, &subject, &policy).await.unwrap();
                assert_eq!(v.signatures.len(), 2);
            });
        },
    );
    let subject = rt.block_on(subject::resolve(&repo, &reference)).unwrap();
    let candidates = rt
        .block_on(tresor::signing::verify::collect_candidates(
            &repo,
            &subject.digest,
        ))
        .unwrap();
    let prepared = tresor::signing::verify::PreparedPolicy::load(&policy).unwrap();
    run("policy evaluation only (4 signature checks)", &mut || {
        let v = tresor::signing::verify::evaluate(
            &subject,
            &prepared,
            &candidates,
            std::time::SystemTime::now(),
        )
        .unwrap();
        assert_eq!(v.signatures.len(), 2);
    });
}
