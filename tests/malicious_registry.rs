//! Registries that misbehave: bytes that do not match their digests (tresor must notice while
//! streaming and write nothing), `Location`, `Link` and token realms that point at another
//! origin (tresor's credentials must not go there), bodies that trickle (`--timeout` must
//! end the request) and tag lists that never end.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use common::fake_registry::{Behaviour, Content, FakeRegistry};
use common::recording_server::{respond, RecordingServer};
use common::tarball::{gzip, tar, Entry};
use common::{fixture_tree, stderr_of_failure, stdout_of, tresor};
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

const CREDS: &str = "alice:very-secret-pw";
const NAMESPACE: &[u8] = b"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n";

fn basic_header() -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(CREDS)
    )
}

/// A fake registry that demands basic credentials and serves one small artifact as `v1`.
fn basic_auth_registry(behaviour: Behaviour) -> (FakeRegistry, ImageManifest, Vec<u8>) {
    let layer = gzip(&tar(&[Entry::file(
        "a.yaml",
        b"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n",
    )]));
    let (manifest, bytes) = artifact(&layer);
    let mut content = Content::default();
    content
        .manifests
        .insert("v1".into(), (OCI_MANIFEST_MEDIA_TYPE.into(), bytes));
    content
        .blobs
        .insert(manifest.layers[0].digest.to_string(), layer.clone());
    content
        .blobs
        .insert(manifest.config.digest.to_string(), b"{}".to_vec());
    let behaviour = Behaviour {
        challenge: behaviour
            .challenge
            .clone()
            .or_else(|| Some(r#"Basic realm="fake""#.into())),
        ..behaviour
    };
    (
        FakeRegistry::start_with(content, behaviour),
        manifest,
        layer,
    )
}

/// Regression test for issue 12 point 5: an upload `Location` on another host got the
/// registry's basic credentials.
#[test]
fn credentials_do_not_follow_an_upload_location_to_another_origin() {
    let other = RecordingServer::start(|method, _| match method.as_str() {
        "PUT" => respond(201, &[], Vec::new()),
        _ => respond(404, &[], Vec::new()),
    });
    let (fake, _, _) = basic_auth_registry(Behaviour {
        upload_location: Some(other.url("/upload/session-1?state=abc")),
        ..Behaviour::default()
    });
    stdout_of(tresor().args([
        "push",
        fixture_tree().to_str().unwrap(),
        &format!("{}:v2", fake.repo("leak")),
        "--plain-http",
        "--creds",
        CREDS,
    ]));
    let puts = other.seen();
    assert!(
        puts.iter().any(|r| r.method == "PUT"),
        "the upload went elsewhere: {puts:?}"
    );
    assert!(
        puts.iter().all(|r| r.authorization.is_none()),
        "credentials sent to another origin: {puts:?}"
    );
    // The registry itself did get them (the POST that opened the upload).
    assert!(
        fake.seen()
            .iter()
            .any(|s| s.line.starts_with("POST") && s.authorization == Some(basic_header())),
        "{:?}",
        fake.requests()
    );
}

/// Regression test for issue 12 point 5: a tag-list `Link` to another host got the
/// registry's basic credentials.
#[test]
fn credentials_do_not_follow_a_tag_list_link_to_another_origin() {
    let other = RecordingServer::start(|_, _| {
        respond(
            200,
            &[("content-type", "application/json")],
            br#"{"name":"leak","tags":["v1"]}"#.to_vec(),
        )
    });
    let (fake, _, _) = basic_auth_registry(Behaviour {
        tags_link: Some(format!(
            r#"<{}>; rel="next""#,
            other.url("/v2/leak/tags/list?last=v1")
        )),
        ..Behaviour::default()
    });
    let listed =
        stdout_of(tresor().args(["list", &fake.repo("leak"), "--plain-http", "--creds", CREDS]));
    assert!(listed.contains("v1"), "{listed}");
    let seen = other.seen();
    assert!(
        seen.iter().any(|r| r.uri.starts_with("/v2/leak/tags/list")),
        "the Link was not followed: {seen:?}"
    );
    assert!(
        seen.iter().all(|r| r.authorization.is_none()),
        "credentials sent to another origin: {seen:?}"
    );
}

/// Issue 12 point 5: basic credentials go to a token realm only over https or on the
/// registry's own origin; a plain-http realm elsewhere is asked anonymously.
#[test]
fn basic_credentials_do_not_go_to_a_plain_http_token_realm_of_another_origin() {
    let other = RecordingServer::start(|_, _| {
        respond(
            200,
            &[("content-type", "application/json")],
            br#"{"token":"anonymous-token"}"#.to_vec(),
        )
    });
    let (fake, _, _) = basic_auth_registry(Behaviour {
        challenge: Some(format!(
            r#"Bearer realm="{}",service="fake""#,
            other.url("/token")
        )),
        ..Behaviour::default()
    });
    let work = tempfile::tempdir().unwrap();
    let dest = work.path().join("out");
    stdout_of(tresor().args([
        "pull",
        &format!("{}:v1", fake.repo("leak")),
        "-o",
        dest.to_str().unwrap(),
        "--allow-unsigned",
        "--plain-http",
        "--creds",
        CREDS,
    ]));
    let seen = other.seen();
    assert!(
        seen.iter().any(|r| r.uri.starts_with("/token")),
        "no token was asked for: {seen:?}"
    );
    assert!(
        seen.iter().all(|r| r.authorization.is_none()),
        "credentials sent to a plain-http realm of another origin: {seen:?}"
    );
    assert!(
        fake.seen()
            .iter()
            .any(|s| s.authorization.as_deref() == Some("Bearer anonymous-token")),
        "{:?}",
        fake.requests()
    );
}

/// Issue 12 point 5: a blob GET redirected to an object store (another origin) is followed,
/// without the registry's credentials.
#[test]
fn blob_redirect_to_another_origin_is_followed_without_credentials() {
    let layer = gzip(&tar(&[Entry::file("a.yaml", NAMESPACE)]));
    let (manifest, bytes) = artifact(&layer);
    let blobs = [
        (manifest.layers[0].digest.to_string(), layer),
        (manifest.config.digest.to_string(), b"{}".to_vec()),
    ];
    let store = RecordingServer::start(move |_, uri| {
        match blobs.iter().find(|(d, _)| uri.ends_with(d.as_str())) {
            Some((_, bytes)) => respond(200, &[], bytes.clone()),
            None => respond(404, &[], Vec::new()),
        }
    });
    let mut content = Content::default();
    content
        .manifests
        .insert("v1".into(), (OCI_MANIFEST_MEDIA_TYPE.into(), bytes));
    let fake = FakeRegistry::start_with(
        content,
        Behaviour {
            challenge: Some(r#"Basic realm="fake""#.into()),
            blob_redirect: Some(store.url("/bucket/")),
            ..Behaviour::default()
        },
    );
    let work = tempfile::tempdir().unwrap();
    let dest = work.path().join("out");
    stdout_of(tresor().args([
        "pull",
        &format!("{}:v1", fake.repo("s3")),
        "-o",
        dest.to_str().unwrap(),
        "--allow-unsigned",
        "--plain-http",
        "--creds",
        CREDS,
    ]));
    assert_eq!(std::fs::read(dest.join("a.yaml")).unwrap(), NAMESPACE);
    let seen = store.seen();
    assert!(
        seen.iter().any(|r| r.uri.starts_with("/bucket/")),
        "{seen:?}"
    );
    assert!(
        seen.iter().all(|r| r.authorization.is_none()),
        "credentials sent to the object store: {seen:?}"
    );
}

/// Regression test for issue 12 point 6: a blob sent one byte at a time kept
/// `tresor pull --timeout 5s` busy for minutes. The timeout covers the body too.
#[test]
fn a_trickling_blob_fails_at_the_timeout() {
    let layer = gzip(&tar(&[Entry::file("a.yaml", NAMESPACE)]));
    assert!(layer.len() > 60, "the layer must trickle for long");
    let (manifest, bytes) = artifact(&layer);
    let mut content = Content::default();
    content
        .manifests
        .insert("v1".into(), (OCI_MANIFEST_MEDIA_TYPE.into(), bytes));
    content
        .blobs
        .insert(manifest.layers[0].digest.to_string(), layer.clone());
    content
        .blobs
        .insert(manifest.config.digest.to_string(), b"{}".to_vec());
    let fake = FakeRegistry::start_with(
        content,
        Behaviour {
            // 2 bytes of config take 1 s; the layer would take over 30 s.
            trickle: Some(Duration::from_millis(500)),
            ..Behaviour::default()
        },
    );
    let work = tempfile::tempdir().unwrap();
    let dest = work.path().join("out");
    let started = Instant::now();
    let err = stderr_of_failure(
        tresor()
            .args([
                "pull",
                &format!("{}:v1", fake.repo("slow")),
                "-o",
                dest.to_str().unwrap(),
                "--allow-unsigned",
                "--plain-http",
                "--timeout",
                "3s",
            ])
            .timeout(Duration::from_secs(60)),
        2,
    );
    let elapsed = started.elapsed();
    // Generous: the point is "about 3 s", not "the minute the body would take".
    assert!(elapsed < Duration::from_secs(15), "took {elapsed:?}: {err}");
    let digest = manifest.layers[0].digest.to_string();
    assert!(err.contains(&digest), "{err}");
    assert!(err.contains("within 3s"), "{err}");
    assert!(err.contains("--timeout"), "{err}");
    assert!(!dest.exists());
}

/// Issue 12 point 6: the tag-list cap counts tags, as its message says, across pages.
#[test]
fn a_tag_list_that_never_ends_is_cut_at_the_tag_limit() {
    let fake = FakeRegistry::start_with(
        Content::default(),
        Behaviour {
            tags_per_page: Some(5000),
            ..Behaviour::default()
        },
    );
    let err = stderr_of_failure(
        tresor()
            .args(["list", &fake.repo("endless"), "--plain-http"])
            .timeout(Duration::from_secs(120)),
        2,
    );
    assert!(err.contains("more than 100000 tags"), "{err}");
    let pages = fake
        .requests()
        .iter()
        .filter(|r| r.contains("/tags/list"))
        .count();
    assert!(pages <= 21, "read {pages} pages of 5000 tags");
}
