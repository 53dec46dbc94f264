//! A registry that serves bytes that do not match their digests: tresor must notice while
//! streaming and write nothing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::fake_registry::{Content, FakeRegistry};
use common::tarball::{gzip, tar, Entry};
use common::{stderr_of_failure, tresor};
use tresor::artifact::format::{
    Descriptor, ImageManifest, CONFIG_MEDIA_TYPE, CONTENT_MEDIA_TYPE, OCI_MANIFEST_MEDIA_TYPE,
};
use tresor::digest::Digest;

fn artifact(layer: &[u8]) -> (ImageManifest, Vec<u8>) {
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST_MEDIA_TYPE.into()),
        artifact_type: None,
        config: Descriptor::for_bytes(CONFIG_MEDIA_TYPE, b"{}"),
        layers: vec![Descriptor::for_bytes(CONTENT_MEDIA_TYPE, layer)],
        subject: None,
        annotations: Default::default(),
    };
    let bytes = manifest.to_bytes();
    (manifest, bytes)
}

#[test]
fn layer_bytes_that_do_not_match_the_digest_are_rejected() {
    let good = gzip(&tar(&[Entry::file(
        "a.yaml",
        b"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n",
    )]));
    let evil = gzip(&tar(&[Entry::file(
        "a.yaml",
        b"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: EVIL\n",
    )]));
    let (manifest, bytes) = artifact(&good);
    let mut content = Content::default();
    content
        .manifests
        .insert("v1".into(), (OCI_MANIFEST_MEDIA_TYPE.into(), bytes));
    content
        .blobs
        .insert(manifest.layers[0].digest.to_string(), evil);
    let fake = FakeRegistry::start(content);

    let work = tempfile::tempdir().unwrap();
    let dest = work.path().join("out");
    let err = stderr_of_failure(
        tresor().args([
            "pull",
            &format!("{}:v1", fake.repo("evil")),
            "-o",
            dest.to_str().unwrap(),
            "--allow-unsigned",
            "--plain-http",
        ]),
        2,
    );
    assert!(
        err.contains("digest mismatch") || err.contains("size mismatch"),
        "{err}"
    );
    assert!(
        err.contains(&manifest.layers[0].digest.to_string()),
        "{err}"
    );
    assert!(!dest.exists());
}

#[test]
fn manifest_that_does_not_match_the_pinned_digest_is_rejected() {
    let layer = gzip(&tar(&[Entry::file("a.yaml", b"x: 1\n")]));
    let (_, bytes) = artifact(&layer);
    let claimed = Digest::of(b"some other manifest");
    let mut content = Content::default();
    content
        .manifests
        .insert(claimed.to_string(), (OCI_MANIFEST_MEDIA_TYPE.into(), bytes));
    let fake = FakeRegistry::start(content);
    let work = tempfile::tempdir().unwrap();
    let dest = work.path().join("out");
    let err = stderr_of_failure(
        tresor().args([
            "pull",
            &format!("{}@{claimed}", fake.repo("evil")),
            "-o",
            dest.to_str().unwrap(),
            "--allow-unsigned",
            "--plain-http",
        ]),
        2,
    );
    assert!(
        err.contains("digest mismatch") && err.contains(&claimed.to_string()),
        "{err}"
    );
    assert!(!dest.exists());
    // Nothing but the manifest was requested: no blob is fetched for a bad manifest.
    assert!(
        fake.requests().iter().all(|r| !r.contains("/blobs/")),
        "{:?}",
        fake.requests()
    );
}
