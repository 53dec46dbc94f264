//! Notifications from the host agent (`tresor sync --notify`, issue 14): every provider
//! against a local receiver that records what it gets — the generic payload and its HMAC,
//! CloudEvents, Slack, and a GitHub commit status (an HTTP double: the real API is not
//! reachable here; the request follows GitHub's documented "create a commit status"). A
//! refused artifact is reported as such, and a receiver failing with 503 gets the event again.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use common::recording_server::{respond, Recorded, RecordingServer};
use common::{fixture_tree, TestRegistry};
use serde_json::Value;
use tresor::webhook::Secret;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

fn json(r: &Recorded) -> Value {
    serde_json::from_slice(&r.body).unwrap()
}

/// Pushes the fixture tree with a GitHub source and a commit revision; the reference.
fn pushed(registry: &TestRegistry) -> String {
    let repo = registry.repo("notify");
    common::stdout_of(registry.tresor(&[
        "push",
        fixture_tree().to_str().unwrap(),
        &format!("{repo}:v1"),
        "--source",
        "https://github.com/acme/shop",
        "--revision",
        &format!("main@sha1:{COMMIT}"),
    ]));
    format!("{repo}:v1")
}

#[test]
fn every_provider_gets_the_applied_event() {
    let registry = TestRegistry::plain();
    let reference = pushed(&registry);
    let receiver = RecordingServer::start(|_, _| respond(201, &[], b"{}".to_vec()));
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("hmac"), "notify-secret\n").unwrap();
    std::fs::write(work.path().join("token"), "gh-token\n").unwrap();
    let dir = work.path().join("site");
    let out = registry
        .tresor(&[
            "sync",
            &reference,
            "--dir",
            dir.to_str().unwrap(),
            "--once",
            "--allow-unsigned",
            "--cache-dir",
            work.path().join("cache").to_str().unwrap(),
            "--notify",
            &format!("generic={}", receiver.url("/generic")),
            "--notify",
            &format!("cloudevents={}", receiver.url("/ce")),
            "--notify",
            &format!("slack={}", receiver.url("/slack/T000/B000/XXXX")),
            "--notify",
            &format!("github={}", receiver.url("/api")),
            "--notify-secret-file",
            work.path().join("hmac").to_str().unwrap(),
            "--notify-token-file",
            work.path().join("token").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen = receiver.seen();
    let by_path = |path: &str| -> Recorded {
        let hits: Vec<&Recorded> = seen.iter().filter(|r| r.uri.starts_with(path)).collect();
        assert_eq!(hits.len(), 1, "one request to {path}: {seen:?}");
        hits[0].clone()
    };

    let generic = by_path("/generic");
    let event = json(&generic);
    assert_eq!(event["reason"], "Applied");
    assert_eq!(event["severity"], "info");
    assert_eq!(event["reference"], reference);
    assert_eq!(event["source"], "https://github.com/acme/shop");
    assert_eq!(event["revision"], format!("main@sha1:{COMMIT}"));
    assert!(event["digest"].as_str().unwrap().starts_with("sha256:"));
    let secret = Secret::new(b"notify-secret").unwrap();
    assert_eq!(
        generic.header("x-signature"),
        Some(secret.sign(&generic.body).as_str())
    );

    let ce = by_path("/ce");
    assert_eq!(
        ce.header("content-type"),
        Some("application/cloudevents+json")
    );
    let ce = json(&ce);
    assert_eq!(ce["specversion"], "1.0");
    assert_eq!(ce["type"], "dev.tresor.applied");
    assert_eq!(ce["id"], event["id"]);
    assert_eq!(ce["data"]["digest"], event["digest"]);

    let slack = json(&by_path("/slack/"));
    let text = slack["text"].as_str().unwrap();
    assert!(
        text.contains("*Applied*") && text.contains(&reference),
        "{text}"
    );

    // GitHub: POST /repos/{owner}/{repo}/statuses/{sha}, bearer token, API version header,
    // {state, description, context} as documented.
    let status = by_path("/api/");
    assert_eq!(status.method, "POST");
    assert_eq!(
        status.uri,
        format!("/api/repos/acme/shop/statuses/{COMMIT}")
    );
    assert_eq!(status.authorization.as_deref(), Some("Bearer gh-token"));
    assert_eq!(status.header("accept"), Some("application/vnd.github+json"));
    assert_eq!(status.header("x-github-api-version"), Some("2022-11-28"));
    let body = json(&status);
    assert_eq!(body["state"], "success");
    assert!(
        body["context"].as_str().unwrap().starts_with("tresor/"),
        "{body}"
    );
    assert!(body["description"].as_str().unwrap().chars().count() <= 140);
}

/// A refused artifact (no signature where a key is required) is a `Rejected` error event and
/// a GitHub `failure`; a receiver answering 503 gets the same event again (retry with
/// backoff), the same event id both times.
#[test]
fn a_refusal_is_reported_and_a_failing_receiver_is_retried() {
    let registry = TestRegistry::plain();
    let reference = pushed(&registry);
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let receiver = RecordingServer::start(move |_, uri| {
        if uri.starts_with("/flaky") && counter.fetch_add(1, Ordering::SeqCst) == 0 {
            respond(503, &[], b"busy".to_vec())
        } else {
            respond(200, &[], b"{}".to_vec())
        }
    });
    let work = tempfile::tempdir().unwrap();
    let keys = work.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    tresor::signing::keys::write_key_pair(&keys, b"pw").unwrap();
    std::fs::write(work.path().join("token"), "gh-token").unwrap();
    let out = registry
        .tresor(&[
            "sync",
            &reference,
            "--dir",
            work.path().join("site").to_str().unwrap(),
            "--once",
            "--key",
            keys.join("cosign.pub").to_str().unwrap(),
            "--cache-dir",
            work.path().join("cache").to_str().unwrap(),
            "--notify",
            &format!("generic={}", receiver.url("/flaky")),
            "--notify",
            &format!("github={}", receiver.url("/api")),
            "--notify-token-file",
            work.path().join("token").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen = receiver.seen();
    let flaky: Vec<&Recorded> = seen.iter().filter(|r| r.uri == "/flaky").collect();
    assert_eq!(flaky.len(), 2, "retried once after the 503: {seen:?}");
    let (first, second) = (json(flaky[0]), json(flaky[1]));
    assert_eq!(first, second);
    assert_eq!(first["reason"], "Rejected");
    assert_eq!(first["severity"], "error");
    assert!(
        first["message"].as_str().unwrap().contains("NoSignatures"),
        "{first}"
    );
    let status = seen.iter().find(|r| r.uri.starts_with("/api/")).unwrap();
    assert_eq!(json(status)["state"], "failure");
}

#[test]
fn bad_notify_values_are_refused_before_anything_runs() {
    let work = tempfile::tempdir().unwrap();
    for (value, why) in [
        ("teams=https://x", "unknown kind"),
        ("slack", "needs a URL"),
        ("github", "needs a token"),
    ] {
        let out = common::tresor()
            .env_remove("GITHUB_TOKEN")
            .args([
                "sync",
                "oci://127.0.0.1:1/a:v",
                "--once",
                "--allow-unsigned",
                "--dir",
            ])
            .arg(work.path().join("d"))
            .args(["--notify", value])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(why), "{value}: {stderr}");
    }
}
