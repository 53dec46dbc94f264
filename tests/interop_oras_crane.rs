//! Interop with oras (oras.land/oras) and crane (go-containerregistry), built by
//! `scripts/peers.sh` (issue 13): what they see of a tresor artifact agrees with `tresor
//! inspect`, oras copies tresor artifacts between a registry and OCI layouts both ways, and
//! an artifact oras pushes with Flux's media types is read by tresor.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::Path;

use common::peers::{peer, run};
use common::{fixture_tree, json_of, read_tree, stdout_of, tresor, TestRegistry};
use serde_json::Value;

/// `host/repo:tag` of an `oci://` repository, as the Go tools spell it.
fn go_ref(repo: &str, tag: &str) -> String {
    format!("{}:{tag}", repo.trim_start_matches("oci://"))
}

/// Pushes the fixture tree with tresor; `tresor inspect --format json` of it.
fn pushed(registry: &TestRegistry, repo: &str) -> Value {
    stdout_of(registry.tresor(&[
        "push",
        fixture_tree().to_str().unwrap(),
        &format!("{repo}:v1"),
        "--source",
        "https://git.example/acme/app",
        "--revision",
        "main@sha1:1111111111111111111111111111111111111111",
    ]));
    json_of(registry.tresor(&["inspect", &format!("{repo}:v1"), "--format", "json"]))
}

/// crane's digest and manifest, and oras's descriptor and manifest, agree with `tresor
/// inspect`: digest, size, media types, layer, annotations.
#[test]
fn crane_and_oras_see_what_tresor_inspect_shows() {
    let registry = TestRegistry::plain();
    let repo = registry.repo("crane-oras");
    let inspected = pushed(&registry, &repo);
    let reference = go_ref(&repo, "v1");

    let digest = run("crane", &["digest", "--insecure", &reference]);
    assert_eq!(digest.trim(), inspected["digest"]);
    let crane_manifest = run("crane", &["manifest", "--insecure", &reference]);
    let oras_manifest = run("oras", &["manifest", "fetch", "--plain-http", &reference]);
    assert_eq!(crane_manifest, oras_manifest, "the same bytes");
    for manifest in [&crane_manifest, &oras_manifest] {
        let m: Value = serde_json::from_str(manifest).unwrap();
        assert_eq!(m["mediaType"], inspected["media_type"]);
        assert_eq!(m["config"]["mediaType"], inspected["config_media_type"]);
        assert_eq!(m["layers"].as_array().unwrap().len(), 1, "{m}");
        assert_eq!(m["layers"][0]["mediaType"], inspected["layer_media_type"]);
        assert_eq!(m["layers"][0]["digest"], inspected["layer_digest"]);
        assert_eq!(m["annotations"], inspected["annotations"]);
        // tresor's size: manifest, config and layer together.
        let blobs =
            m["config"]["size"].as_u64().unwrap() + m["layers"][0]["size"].as_u64().unwrap();
        assert_eq!(inspected["size"], manifest.len() as u64 + blobs);
    }
    let descriptor: Value = serde_json::from_str(&run(
        "oras",
        &[
            "manifest",
            "fetch",
            "--plain-http",
            "--descriptor",
            &reference,
        ],
    ))
    .unwrap();
    assert_eq!(descriptor["digest"], inspected["digest"]);
    assert_eq!(descriptor["size"], oras_manifest.len());
    // `oras pull` writes only layers named by `org.opencontainers.image.title`, which
    // Flux's format (and so tresor's) does not set: it downloads the manifest and skips
    // the layer, saying so. `oras copy … --to-oci-layout` (below) takes everything.
    let work = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(peer("oras"))
        .args(["pull", "--plain-http", &reference, "-o"])
        .arg(work.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Skipped pulling layers without file name"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// `oras copy` of a tresor artifact from the registry into an OCI layout: tresor pulls it
/// from the layout with the same digest and files; and the other way, a layout tresor wrote
/// copied by oras into the registry keeps its digest and is pulled by tresor.
#[test]
fn oras_copies_tresor_artifacts_between_registry_and_layout() {
    let registry = TestRegistry::plain();
    let repo = registry.repo("oras-copy");
    let inspected = pushed(&registry, &repo);
    let digest = inspected["digest"].as_str().unwrap();
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("oras-layout");
    run(
        "oras",
        &[
            "cp",
            "--from-plain-http",
            &go_ref(&repo, "v1"),
            "--to-oci-layout",
            &format!("{}:v1", layout.display()),
        ],
    );
    let pull = |reference: &str, dir: &Path, flags: &[&str]| {
        let printed = stdout_of(
            tresor()
                .args([
                    "pull",
                    reference,
                    "-o",
                    dir.to_str().unwrap(),
                    "--allow-unsigned",
                ])
                .args(flags),
        );
        assert!(printed.contains(digest), "{printed}");
        assert_eq!(read_tree(dir), read_tree(&fixture_tree()));
    };
    pull(
        &format!("oci-layout:{}:v1", layout.display()),
        &work.path().join("from-layout"),
        &[],
    );

    // tresor's layout → oras → another repository: the same digest.
    let own = work.path().join("tresor-layout");
    stdout_of(tresor().args([
        "push",
        fixture_tree().to_str().unwrap(),
        &format!("oci-layout:{}:v1", own.display()),
        "--source",
        "https://git.example/acme/app",
        "--revision",
        "main@sha1:1111111111111111111111111111111111111111",
        "--reproducible",
    ]));
    let copied = registry.repo("oras-copy-back");
    let out = run(
        "oras",
        &[
            "cp",
            "--from-oci-layout",
            &format!("{}:v1", own.display()),
            "--to-plain-http",
            &go_ref(&copied, "v1"),
        ],
    );
    let layout_digest = json_of(tresor().args([
        "inspect",
        &format!("oci-layout:{}:v1", own.display()),
        "--format",
        "json",
    ]))["digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(out.contains(&layout_digest), "{out}");
    let printed = stdout_of(registry.tresor(&[
        "pull",
        &format!("{copied}:v1"),
        "-o",
        work.path().join("from-registry").to_str().unwrap(),
        "--allow-unsigned",
    ]));
    assert!(printed.contains(&layout_digest), "{printed}");
}

/// An artifact oras pushes with Flux's media types (a tarball GNU tar made, with `./`
/// entries; oras adds a title annotation and sets `artifactType`) is read by tresor: the
/// same files, the annotation oras was given.
#[test]
fn an_artifact_oras_pushes_with_flux_media_types_is_read_by_tresor() {
    let registry = TestRegistry::plain();
    let repo = registry.repo("oras-push");
    let work = tempfile::tempdir().unwrap();
    let layer = work.path().join("layer.tgz");
    let tar = std::process::Command::new("tar")
        .arg("-czf")
        .arg(&layer)
        .arg("-C")
        .arg(fixture_tree())
        .arg(".")
        .status()
        .unwrap();
    assert!(tar.success());
    std::fs::write(work.path().join("config.json"), "{}").unwrap();
    let out = std::process::Command::new(peer("oras"))
        .current_dir(work.path())
        .args([
            "push",
            "--plain-http",
            &go_ref(&repo, "v1"),
            "--config",
            "config.json:application/vnd.cncf.flux.config.v1+json",
            "layer.tgz:application/vnd.cncf.flux.content.v1.tar+gzip",
            "--annotation",
            "org.opencontainers.image.source=https://git.example/acme/oras",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let inspected =
        json_of(registry.tresor(&["inspect", &format!("{repo}:v1"), "--format", "json"]));
    assert_eq!(inspected["source"], "https://git.example/acme/oras");
    let dest = work.path().join("pulled");
    stdout_of(registry.tresor(&[
        "pull",
        &format!("{repo}:v1"),
        "-o",
        dest.to_str().unwrap(),
        "--allow-unsigned",
    ]));
    assert_eq!(read_tree(&dest), read_tree(&fixture_tree()));
}
