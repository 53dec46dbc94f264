//! Interop with Flux's own OCI library (issue 13): `flux-oci`, a helper on
//! `github.com/fluxcd/pkg/oci` (what `flux push artifact` / `flux pull artifact` run), built
//! by `scripts/peers.sh`. Both directions against the plain registry of
//! `scripts/registry.sh`; the apply direction against the cluster of `scripts/cluster.sh`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::Read;
use std::path::Path;

use common::cluster::{config_map, Tenant};
use common::peers::{peer, run};
use common::{json_of, read_tree, stdout_of, TestRegistry};

const CREATED: &str = "2026-01-01T00:00:00Z";
const SOURCE: &str = "https://git.example/acme/shop";
const REVISION: &str = "main@sha1:0123456789abcdef0123456789abcdef01234567";

/// A small tree with a subdirectory: two ConfigMaps.
fn tree(dir: &Path) {
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("a.yaml"), config_map("flux-a", "one")).unwrap();
    std::fs::write(dir.join("sub/b.yaml"), config_map("flux-b", "two")).unwrap();
}

/// `flux-oci ARGS…`, which must succeed; its stdout.
fn flux_oci(args: &[&str]) -> String {
    run("flux-oci", args)
}

/// Pushes `dir` with Flux's library to `repo` (oci://host/path) as `tag`; the digest.
fn flux_push(repo: &str, tag: &str, dir: &Path) -> String {
    let url = format!("{}:{tag}", repo.trim_start_matches("oci://"));
    let pushed = flux_oci(&[
        "push",
        &url,
        dir.to_str().unwrap(),
        "--insecure",
        "--source",
        SOURCE,
        "--revision",
        REVISION,
        "--created",
        CREATED,
    ]);
    let digest = pushed.trim().rsplit_once('@').unwrap().1.to_string();
    assert!(digest.starts_with("sha256:"), "{pushed}");
    digest
}

/// Flux pushes; `tresor pull`, `tresor sync --once` and `tresor inspect` read the artifact:
/// the same files, the same digest, Flux's annotations as source, revision and created.
#[test]
fn flux_pushed_artifact_is_pulled_synced_and_inspected_by_tresor() {
    let registry = TestRegistry::plain();
    let repo = registry.repo("flux-push");
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    tree(&src);
    let digest = flux_push(&repo, "v1", &src);

    let inspected =
        json_of(registry.tresor(&["inspect", &format!("{repo}:v1"), "--format", "json"]));
    assert_eq!(inspected["digest"], digest);
    assert_eq!(inspected["source"], SOURCE);
    assert_eq!(inspected["revision"], REVISION);
    assert_eq!(inspected["created"], CREATED);
    assert_eq!(
        inspected["layer_media_type"],
        "application/vnd.cncf.flux.content.v1.tar+gzip"
    );

    let pulled = work.path().join("pulled");
    let printed = stdout_of(registry.tresor(&[
        "pull",
        &format!("{repo}:v1"),
        "-o",
        pulled.to_str().unwrap(),
        "--allow-unsigned",
    ]));
    assert!(printed.contains(&digest), "{printed}");
    assert_eq!(read_tree(&pulled), read_tree(&src));

    let synced = work.path().join("synced");
    stdout_of(registry.tresor(&[
        "sync",
        &format!("{repo}:v1"),
        "--dir",
        synced.to_str().unwrap(),
        "--once",
        "--allow-unsigned",
        "--cache-dir",
        work.path().join("cache").to_str().unwrap(),
    ]));
    assert_eq!(read_tree(&synced), read_tree(&src));
}

/// Flux pushes; `tresor apply` applies its objects to the real API server.
#[tokio::test]
async fn flux_pushed_artifact_is_applied_by_tresor() {
    let t = Tenant::new("flux-apply").await;
    let registry = TestRegistry::plain();
    let repo = registry.repo("flux-apply");
    let src = t.work.path().join("src");
    tree(&src);
    let digest = flux_push(&repo, "v1", &src);
    let out = stdout_of(registry.tresor(&[
        "apply",
        &format!("{repo}:v1"),
        "--kubeconfig",
        t.cluster.kubeconfig.to_str().unwrap(),
        "--namespace",
        &t.ns,
        "--allow-unsigned",
        "--cache-dir",
        t.work.path().join("cache").to_str().unwrap(),
    ]));
    assert!(out.starts_with(&format!("applied {digest}")), "{out}");
    assert_eq!(t.config_map("flux-a").await.unwrap()["data"]["k"], "one");
    assert_eq!(t.config_map("flux-b").await.unwrap()["data"]["k"], "two");
}

/// tresor pushes; Flux's library pulls the same files and reads tresor's annotations as
/// its metadata (what source-controller shows as the artifact's revision and origin).
#[test]
fn tresor_pushed_artifact_is_pulled_by_flux() {
    let registry = TestRegistry::plain();
    let repo = registry.repo("tresor-push");
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    tree(&src);
    let pushed = json_of(
        registry
            .tresor(&[
                "push",
                src.to_str().unwrap(),
                &format!("{repo}:v1"),
                "--source",
                SOURCE,
                "--revision",
                REVISION,
                "--format",
                "json",
            ])
            .env("SOURCE_DATE_EPOCH", "1767225600"),
    );
    let pulled = work.path().join("pulled");
    let meta: serde_json::Value = serde_json::from_str(&flux_oci(&[
        "pull",
        &format!("{}:v1", repo.trim_start_matches("oci://")),
        pulled.to_str().unwrap(),
        "--insecure",
    ]))
    .unwrap();
    assert_eq!(read_tree(&pulled), read_tree(&src));
    assert!(
        meta["digest"]
            .as_str()
            .unwrap()
            .ends_with(pushed["digest"].as_str().unwrap()),
        "{meta}"
    );
    assert_eq!(meta["source_url"], SOURCE);
    assert_eq!(meta["source_revision"], REVISION);
    assert_eq!(meta["created"], CREATED);
}

/// One tar entry: path as written, mode, type byte, contents as text.
type Entry = (String, u32, u8, String);

/// The entries of a tar+gzip layer and its ustar magic.
fn entries(layer: &[u8]) -> (Vec<Entry>, Vec<u8>) {
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(layer)
        .read_to_end(&mut tar)
        .unwrap();
    let magic = tar[257..265].to_vec();
    let mut archive = tar::Archive::new(tar.as_slice());
    let mut out = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let header = entry.header().clone();
        let mut data = String::new();
        entry.read_to_string(&mut data).unwrap();
        out.push((
            entry.path().unwrap().to_string_lossy().into_owned(),
            header.mode().unwrap(),
            header.entry_type().as_byte(),
            data,
        ));
        assert_eq!(header.mtime().unwrap(), 0);
        assert_eq!((header.uid().unwrap(), header.gid().unwrap()), (0, 0));
    }
    (out, magic)
}

/// The same tree pushed by both: the files, modes, owners and mtimes agree, but the layer
/// digests differ, for the reasons docs/interop.md "The same tree, other digests" gives — Flux's tar has an
/// entry for the root directory, directory names without a trailing `/` and POSIX ustar
/// headers (tresor: no root entry, `dir/`, GNU headers), and the two gzip implementations
/// (Go's compress/flate, tresor's pinned flate2) compress differently. Should Flux's
/// layer ever become tresor's, this test says so.
#[test]
fn the_same_tree_gives_the_same_files_and_documented_digest_differences() {
    let registry = TestRegistry::plain();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    tree(&src);
    let flux_repo = registry.repo("same-tree-flux");
    flux_push(&flux_repo, "v1", &src);
    let tresor_repo = registry.repo("same-tree-tresor");
    stdout_of(registry.tresor(&["push", src.to_str().unwrap(), &format!("{tresor_repo}:v1")]));
    let layer = |repo: &str| {
        let inspected =
            json_of(registry.tresor(&["inspect", &format!("{repo}:v1"), "--format", "json"]));
        let digest = inspected["layer_digest"].as_str().unwrap().to_string();
        let crane = std::process::Command::new(peer("crane"))
            .args([
                "blob",
                "--insecure",
                &format!("{}@{digest}", repo.trim_start_matches("oci://")),
            ])
            .output()
            .unwrap();
        assert!(crane.status.success());
        (digest, crane.stdout)
    };
    let (flux_digest, flux_layer) = layer(&flux_repo);
    let (tresor_digest, tresor_layer) = layer(&tresor_repo);
    assert_ne!(flux_digest, tresor_digest);

    let (flux_entries, flux_magic) = entries(&flux_layer);
    let (tresor_entries, tresor_magic) = entries(&tresor_layer);
    assert_eq!(flux_magic, b"ustar\x0000", "Flux: POSIX ustar");
    assert_eq!(tresor_magic, b"ustar  \x00", "tresor: GNU tar headers");
    let root = flux_entries
        .iter()
        .position(|(path, ..)| path == "./" || path == ".")
        .expect("Flux writes an entry for the root directory");
    let mut flux_entries = flux_entries;
    flux_entries.remove(root);
    let dirs = |entries: &[Entry]| -> Vec<String> {
        let dirs = entries.iter().filter(|e| e.2 == b'5');
        dirs.map(|e| e.0.clone()).collect()
    };
    assert_eq!(dirs(&flux_entries), ["sub"]);
    assert_eq!(dirs(&tresor_entries), ["sub/"]);
    let normalised = |entries: Vec<Entry>| -> Vec<Entry> {
        let entries = entries.into_iter();
        entries
            .map(|(path, mode, kind, data)| {
                (path.trim_end_matches('/').to_string(), mode, kind, data)
            })
            .collect()
    };
    assert_eq!(
        normalised(flux_entries),
        normalised(tresor_entries),
        "same paths, modes, types, contents"
    );
    // Byte-identical tars still compress differently.
    assert_ne!(flux_layer, tresor_layer);
    // tresor is reproducible: the same tree again gives its layer digest again.
    let again = registry.repo("same-tree-tresor-again");
    stdout_of(registry.tresor(&["push", src.to_str().unwrap(), &format!("{again}:v1")]));
    assert_eq!(layer(&again).0, tresor_digest);
}
