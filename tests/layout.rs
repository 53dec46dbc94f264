//! Every command on the embedded default, a local OCI layout; reproducibility; bad input.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::tarball::{gzip, gzip_bomb, tar, Entry};
use common::{copy_tree, fixture_tree, json_of, read_tree, stderr_of_failure, stdout_of, tresor};
use tresor::artifact::format::{
    Descriptor, ImageManifest, CONFIG_MEDIA_TYPE, CONTENT_MEDIA_TYPE, OCI_MANIFEST_MEDIA_TYPE,
};
use tresor::digest::Digest;
use tresor::registry::layout::LayoutRepository;

fn layout_ref(dir: &Path, tag: &str) -> String {
    format!("oci-layout:{}:{tag}", dir.display())
}

#[test]
fn push_inspect_pull_tag_list_on_a_layout() {
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let reference = layout_ref(&layout, "v1");
    let pushed = json_of(tresor().args([
        "push",
        fixture_tree().to_str().unwrap(),
        &reference,
        "--format",
        "json",
    ]));
    let digest = pushed["digest"].as_str().unwrap();
    assert_eq!(
        pushed["reference"],
        format!("oci-layout:{}@{digest}", layout.display())
    );

    let info = json_of(tresor().args(["inspect", &reference, "--format", "json"]));
    assert_eq!(info["digest"], digest);
    let files: Vec<&str> = info["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        files,
        [
            "README.md",
            "base/",
            "base/config.json",
            "base/deployment.yaml",
            "namespace.yaml"
        ]
        .iter()
        .filter(|f| !f.ends_with('/'))
        .copied()
        .collect::<Vec<_>>()
    );

    let dest = work.path().join("out");
    let printed = stdout_of(tresor().args([
        "pull",
        &reference,
        "-o",
        dest.to_str().unwrap(),
        "--allow-unsigned",
    ]));
    assert!(printed.contains(digest));
    assert_eq!(read_tree(&dest), read_tree(&fixture_tree()));

    stdout_of(tresor().args(["tag", &reference, "prod"]));
    let list = json_of(tresor().args([
        "list",
        &format!("oci-layout:{}", layout.display()),
        "--format",
        "json",
    ]));
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(list[0]["tag"], "prod");
    assert_eq!(list[0]["digest"], digest);

    tresor()
        .args(["diff", fixture_tree().to_str().unwrap(), &reference])
        .assert()
        .code(0);
}

#[test]
fn pull_refuses_without_allow_unsigned_and_writes_nothing() {
    let work = tempfile::tempdir().unwrap();
    let reference = layout_ref(&work.path().join("layout"), "v1");
    stdout_of(tresor().args(["push", fixture_tree().to_str().unwrap(), &reference]));
    let dest = work.path().join("out");
    let err = stderr_of_failure(
        tresor().args(["pull", &reference, "-o", dest.to_str().unwrap()]),
        1,
    );
    assert!(err.contains("--allow-unsigned"), "{err}");
    assert!(!dest.exists());
}

/// Copies the fixture with other mtimes, permissions and creation order.
fn scrambled_copy(to: &Path) {
    let mut files = read_tree(&fixture_tree());
    files.reverse();
    for (rel, data) in files {
        let target = to.join(&rel);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(&target, data).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        let f = std::fs::File::options().write(true).open(&target).unwrap();
        f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_234_567))
            .unwrap();
    }
    std::fs::set_permissions(to.join("base"), std::fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn same_tree_gives_same_layer_and_reproducible_manifest_digest() {
    let work = tempfile::tempdir().unwrap();
    let copy = work.path().join("copy");
    scrambled_copy(&copy);
    let mut digests = Vec::new();
    let mut layers = Vec::new();
    for (i, dir) in [fixture_tree(), copy].iter().enumerate() {
        let reference = layout_ref(&work.path().join(format!("layout-{i}")), "v1");
        let pushed = json_of(tresor().args([
            "push",
            dir.to_str().unwrap(),
            &reference,
            "--reproducible",
            "--source",
            "https://example.com/acme/app",
            "--revision",
            "main@sha1:abc",
            "--format",
            "json",
        ]));
        digests.push(pushed["digest"].as_str().unwrap().to_string());
        let info = json_of(tresor().args(["inspect", &reference, "--format", "json"]));
        assert_eq!(info["created"], "1970-01-01T00:00:00Z");
        layers.push(info["layer_digest"].as_str().unwrap().to_string());
    }
    assert_eq!(
        layers[0], layers[1],
        "layer digest depends on mtimes/modes/order"
    );
    assert_eq!(
        digests[0], digests[1],
        "--reproducible manifest digest differs"
    );

    // SOURCE_DATE_EPOCH sets created.
    let reference = layout_ref(&work.path().join("layout-epoch"), "v1");
    stdout_of(tresor().env("SOURCE_DATE_EPOCH", "1700000000").args([
        "push",
        fixture_tree().to_str().unwrap(),
        &reference,
    ]));
    let info = json_of(tresor().args(["inspect", &reference, "--format", "json"]));
    assert_eq!(info["created"], "2023-11-14T22:13:20Z");
    assert_eq!(info["layer_digest"].as_str().unwrap(), layers[0]);
}

#[test]
fn manifest_has_exactly_fluxs_media_types_and_annotations() {
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let pushed = json_of(tresor().args([
        "push",
        fixture_tree().to_str().unwrap(),
        &layout_ref(&layout, "v1"),
        "--source",
        "https://github.com/acme/app",
        "--revision",
        "main@sha1:abc",
        "--annotation",
        "team=platform",
        "--format",
        "json",
    ]));
    let digest: Digest = pushed["digest"].as_str().unwrap().parse().unwrap();
    let raw = std::fs::read(layout.join("blobs/sha256").join(digest.hex())).unwrap();
    let m: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(m["schemaVersion"], 2);
    assert_eq!(m["mediaType"], OCI_MANIFEST_MEDIA_TYPE);
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.cncf.flux.config.v1+json"
    );
    assert_eq!(m["layers"].as_array().unwrap().len(), 1);
    assert_eq!(
        m["layers"][0]["mediaType"],
        "application/vnd.cncf.flux.content.v1.tar+gzip"
    );
    let annotations = m["annotations"].as_object().unwrap();
    let keys: Vec<&str> = annotations.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "org.opencontainers.image.created",
            "org.opencontainers.image.revision",
            "org.opencontainers.image.source",
            "team",
        ]
    );
    assert_eq!(
        annotations["org.opencontainers.image.source"],
        "https://github.com/acme/app"
    );
    assert_eq!(
        annotations["org.opencontainers.image.revision"],
        "main@sha1:abc"
    );
}

/// Writes an artifact with the given layer bytes (and config) straight into a layout.
fn write_artifact(
    layout: &Path,
    tag: &str,
    config: &[u8],
    layer: &[u8],
    layer_media_type: &str,
) -> Digest {
    let repo = LayoutRepository::new(layout);
    let config_desc = Descriptor::for_bytes(CONFIG_MEDIA_TYPE, config);
    let layer_desc = Descriptor::for_bytes(layer_media_type, layer);
    repo.push_blob(&config_desc.digest, config).unwrap();
    repo.push_blob(&layer_desc.digest, layer).unwrap();
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST_MEDIA_TYPE.into()),
        artifact_type: None,
        config: config_desc,
        layers: vec![layer_desc],
        subject: None,
        annotations: Default::default(),
    };
    repo.push_manifest(OCI_MANIFEST_MEDIA_TYPE, &manifest.to_bytes(), Some(tag))
        .unwrap()
}

#[test]
fn artifact_built_like_flux_push_artifact_pulls_and_diffs() {
    // `flux push artifact` writes go-containerregistry's empty image config and a tar.gz
    // made by its own tar writer (mtimes, modes and gzip header differ from tresor's).
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let status = std::process::Command::new("tar")
        .args([
            "-czf",
            work.path().join("flux.tgz").to_str().unwrap(),
            "-C",
            fixture_tree().to_str().unwrap(),
            ".",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let layer = std::fs::read(work.path().join("flux.tgz")).unwrap();
    let config = br#"{"architecture":"","created":"0001-01-01T00:00:00Z","os":"","rootfs":{"type":"layers","diff_ids":[]},"config":{}}"#;
    write_artifact(&layout, "flux", config, &layer, CONTENT_MEDIA_TYPE);
    let reference = layout_ref(&layout, "flux");
    let dest = work.path().join("out");
    stdout_of(tresor().args([
        "pull",
        &reference,
        "-o",
        dest.to_str().unwrap(),
        "--allow-unsigned",
    ]));
    assert_eq!(read_tree(&dest), read_tree(&fixture_tree()));
    tresor()
        .args(["diff", fixture_tree().to_str().unwrap(), &reference])
        .assert()
        .code(0);

    // The generic OCI tar+gzip layer type is the fallback.
    write_artifact(
        &layout,
        "generic",
        config,
        &layer,
        "application/vnd.oci.image.layer.v1.tar+gzip",
    );
    tresor()
        .args([
            "diff",
            fixture_tree().to_str().unwrap(),
            &layout_ref(&layout, "generic"),
        ])
        .assert()
        .code(0);
}

fn expect_push_error(dir: &Path, needle: &[&str]) {
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let err = stderr_of_failure(
        tresor().args(["push", dir.to_str().unwrap(), &layout_ref(&layout, "v1")]),
        2,
    );
    for n in needle {
        assert!(err.contains(n), "expected {n:?} in: {err}");
    }
    assert!(
        !layout.exists(),
        "push wrote a layout despite the error: {err}"
    );
}

#[test]
fn push_bad_input_is_refused_with_clear_errors() {
    let work = tempfile::tempdir().unwrap();
    expect_push_error(&work.path().join("missing"), &["missing"]);

    let empty = work.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    expect_push_error(&empty, &["empty"]);

    let cases: &[(&str, &str, &[&str])] = &[
        (
            "invalid",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [unclosed\n",
            &["bad.yaml", "line"],
        ),
        (
            "nokind",
            "apiVersion: v1\nmetadata:\n  name: x\n",
            &["bad.yaml", "kind"],
        ),
        (
            "noname",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n",
            &["bad.yaml", "metadata.name"],
        ),
    ];
    for (name, content, needles) in cases {
        let dir = work.path().join(name);
        copy_tree(&fixture_tree(), &dir);
        std::fs::write(dir.join("bad.yaml"), content).unwrap();
        expect_push_error(&dir, needles);
    }

    let dup = work.path().join("dup");
    copy_tree(&fixture_tree(), &dup);
    std::fs::write(
        dup.join("again.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n",
    )
    .unwrap();
    expect_push_error(&dup, &["again.yaml", "namespace.yaml"]);

    let link = work.path().join("link");
    copy_tree(&fixture_tree(), &link);
    std::os::unix::fs::symlink("namespace.yaml", link.join("alias.yaml")).unwrap();
    expect_push_error(&link, &["alias.yaml", "symlink"]);
}

fn expect_pull_error(layer: &[u8], needles: &[&str]) {
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    write_artifact(&layout, "bad", b"{}", layer, CONTENT_MEDIA_TYPE);
    let dest = work.path().join("out");
    let err = stderr_of_failure(
        tresor().args([
            "pull",
            &layout_ref(&layout, "bad"),
            "-o",
            dest.to_str().unwrap(),
            "--allow-unsigned",
        ]),
        2,
    );
    let lower = err.to_lowercase();
    assert!(
        needles.iter().any(|n| lower.contains(n)),
        "expected one of {needles:?} in: {err}"
    );
    assert!(
        !dest.exists(),
        "output directory was created despite: {err}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        1,
        "staging directory left behind: {leftovers:?}"
    );
}

#[test]
fn malicious_layers_are_rejected_and_nothing_is_written() {
    let ok = b"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n";
    expect_pull_error(
        &gzip(&tar(&[
            Entry::file("ok.yaml", ok),
            Entry::file("../evil.yaml", ok),
        ])),
        &[".."],
    );
    expect_pull_error(
        &gzip(&tar(&[Entry::file("/etc/evil.yaml", ok)])),
        &["absolute"],
    );
    expect_pull_error(
        &gzip(&tar(&[Entry::link("a.yaml", b'2', "/etc/passwd")])),
        &["symlink", "link"],
    );
    expect_pull_error(
        &gzip(&tar(&[
            Entry::file("a.yaml", ok),
            Entry::link("b.yaml", b'1', "a.yaml"),
        ])),
        &["hardlink", "link"],
    );
    expect_pull_error(&gzip(&tar(&[Entry::link("dev", b'3', "")])), &["device"]);
    expect_pull_error(&tar(&[Entry::file("a.yaml", ok)]), &["gzip"]);
    expect_pull_error(&gzip_bomb(1 << 30), &["ratio", "limit"]);
}
