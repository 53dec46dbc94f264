//! Interop with a client tresor did not write: skopeo (containers/image) reads tresor's
//! OCI layouts and registry artifacts, and tresor reads what skopeo writes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::process::Command;

use common::{fixture_tree, json_of, read_tree, stdout_of, tresor, TestRegistry};

fn skopeo(args: &[&str]) -> String {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo is installed (.ci/run installs it)");
    assert!(
        out.status.success(),
        "skopeo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn skopeo_copies_a_tresor_artifact_to_a_layout_that_tresor_pulls() {
    let registry = TestRegistry::plain();
    let repo = registry.repo("skopeo");
    let pushed = json_of(registry.tresor(&[
        "push",
        fixture_tree().to_str().unwrap(),
        &format!("{repo}:v1"),
        "--format",
        "json",
    ]));
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("skopeo-layout");
    let source = format!("docker://{}:v1", repo.trim_start_matches("oci://"));
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &source,
        &format!("oci:{}:v1", layout.display()),
    ]);

    let dest = work.path().join("out");
    let printed = stdout_of(tresor().args([
        "pull",
        &format!("oci-layout:{}:v1", layout.display()),
        "-o",
        dest.to_str().unwrap(),
        "--allow-unsigned",
    ]));
    assert!(
        printed.contains(pushed["digest"].as_str().unwrap()),
        "skopeo changed the manifest: {printed}"
    );
    assert_eq!(read_tree(&dest), read_tree(&fixture_tree()));
}

#[test]
fn skopeo_reads_a_layout_tresor_wrote_and_copies_it_to_a_registry() {
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let pushed = json_of(tresor().args([
        "push",
        fixture_tree().to_str().unwrap(),
        &format!("oci-layout:{}:v1", layout.display()),
        "--format",
        "json",
    ]));
    let raw = skopeo(&["inspect", "--raw", &format!("oci:{}:v1", layout.display())]);
    let digest = tresor::digest::Digest::of(raw.as_bytes());
    assert_eq!(digest.to_string(), pushed["digest"].as_str().unwrap());

    // And the other way: skopeo pushes the layout to the registry, tresor pulls it.
    let registry = TestRegistry::plain();
    let repo = registry.repo("skopeo-up");
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", layout.display()),
        &format!("docker://{}:v1", repo.trim_start_matches("oci://")),
    ]);
    let dest = work.path().join("out");
    stdout_of(registry.tresor(&[
        "pull",
        &format!("{repo}:v1"),
        "-o",
        dest.to_str().unwrap(),
        "--allow-unsigned",
    ]));
    assert_eq!(read_tree(&dest), read_tree(&fixture_tree()));
}
