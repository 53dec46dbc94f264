//! push, pull, inspect, diff, tag and list against the real local registries
//! (Distribution 2.8: plain HTTP, htpasswd basic auth, TLS with a self-signed CA + auth).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{
    copy_tree, fixture_tree, json_of, read_tree, stderr_of_failure, stdout_of, TestRegistry,
};

fn round_trip(registry: &TestRegistry) {
    let repo = registry.repo("roundtrip");
    let tagged = format!("{repo}:v1");
    let pushed = json_of(registry.tresor(&[
        "push",
        fixture_tree().to_str().unwrap(),
        &tagged,
        "--source",
        "https://example.com/acme/app",
        "--revision",
        "main@sha1:0123456789abcdef0123456789abcdef01234567",
        "--format",
        "json",
    ]));
    let digest = pushed["digest"].as_str().unwrap().to_string();
    assert!(digest.starts_with("sha256:"), "{pushed}");
    assert_eq!(pushed["reference"], format!("{repo}@{digest}"));
    assert_eq!(pushed["repository"], repo);
    assert_eq!(pushed["tag"], "v1");
    assert_eq!(
        pushed["files"],
        serde_json::json!([
            "README.md",
            "base/config.json",
            "base/deployment.yaml",
            "namespace.yaml"
        ])
    );

    // Pull by tag and by digest: identical files.
    let out = tempfile::tempdir().unwrap();
    for (i, reference) in [tagged.clone(), format!("{repo}@{digest}")]
        .iter()
        .enumerate()
    {
        let dest = out.path().join(format!("pull-{i}"));
        let printed = stdout_of(registry.tresor(&[
            "pull",
            reference,
            "--output",
            dest.to_str().unwrap(),
            "--allow-unsigned",
        ]));
        assert_eq!(printed.trim(), format!("{repo}@{digest}"));
        assert_eq!(read_tree(&dest), read_tree(&fixture_tree()));
    }

    // Inspect shows provenance and files.
    let info = json_of(registry.tresor(&["inspect", &tagged, "--format", "json"]));
    assert_eq!(info["digest"], digest);
    assert_eq!(info["source"], "https://example.com/acme/app");
    assert_eq!(
        info["revision"],
        "main@sha1:0123456789abcdef0123456789abcdef01234567"
    );
    assert_eq!(
        info["config_media_type"],
        "application/vnd.cncf.flux.config.v1+json"
    );
    assert_eq!(
        info["layer_media_type"],
        "application/vnd.cncf.flux.content.v1.tar+gzip"
    );
    assert_eq!(info["files"].as_array().unwrap().len(), 4);

    // Diff: same tree → exit 0; a changed replica count → exit 1 with the changed line.
    registry
        .tresor(&["diff", fixture_tree().to_str().unwrap(), &tagged])
        .assert()
        .code(0);
    let changed = tempfile::tempdir().unwrap();
    copy_tree(&fixture_tree(), changed.path());
    let deployment = changed.path().join("base/deployment.yaml");
    let text = std::fs::read_to_string(&deployment)
        .unwrap()
        .replace("replicas: 2", "replicas: 5");
    std::fs::write(&deployment, text).unwrap();
    let out = registry
        .tresor(&["diff", changed.path().to_str().unwrap(), &tagged])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("Deployment.apps/shop/web"), "{text}");
    assert!(
        text.contains("-  replicas: 2") && text.contains("+  replicas: 5"),
        "{text}"
    );

    // Tag and list.
    let tagged2 = stdout_of(registry.tresor(&["tag", &tagged, "stable"]));
    assert_eq!(tagged2.trim(), format!("{repo}:stable@{digest}"));
    let list = json_of(registry.tresor(&["list", &repo, "--format", "json"]));
    let tags: Vec<(&str, &str)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["tag"].as_str().unwrap(), e["digest"].as_str().unwrap()))
        .collect();
    assert_eq!(
        tags,
        vec![("stable", digest.as_str()), ("v1", digest.as_str())]
    );
}

#[test]
fn round_trip_on_plain_registry() {
    round_trip(&TestRegistry::plain());
}

#[test]
fn round_trip_on_registry_with_basic_auth() {
    round_trip(&TestRegistry::auth());
}

#[test]
fn round_trip_on_tls_registry_with_auth() {
    round_trip(&TestRegistry::tls());
}

#[test]
fn wrong_credentials_give_a_clear_401() {
    for registry in [TestRegistry::auth(), TestRegistry::tls()] {
        let mut flags: Vec<String> = registry.flags.clone();
        let pos = flags.iter().position(|f| f == "--creds").unwrap();
        flags[pos + 1] = "tresor:wrong-password".into();
        let repo = registry.repo("badcreds");
        let mut cmd = common::tresor();
        cmd.args([
            "push",
            fixture_tree().to_str().unwrap(),
            &format!("{repo}:v1"),
        ])
        .args(&flags);
        let err = stderr_of_failure(&mut cmd, 2);
        assert!(err.contains("unauthorized (401)"), "{err}");
        assert!(err.contains("--creds"), "{err}");
        assert!(!err.contains("wrong-password"), "credential leaked: {err}");

        // No credentials at all: the error says how to provide them.
        let mut cmd = common::tresor();
        let flags: Vec<&String> = registry
            .flags
            .iter()
            .take_while(|f| *f != "--creds")
            .collect();
        cmd.args(["list", &repo]).args(flags);
        let err = stderr_of_failure(&mut cmd, 2);
        assert!(err.contains("requires credentials"), "{err}");
    }
}

#[test]
fn tls_registry_without_the_ca_is_refused() {
    let registry = TestRegistry::tls();
    let repo = registry.repo("noca");
    let mut cmd = common::tresor();
    cmd.args([
        "push",
        fixture_tree().to_str().unwrap(),
        &format!("{repo}:v1"),
    ])
    .args(["--creds", "tresor:tresor-pass"]);
    let err = stderr_of_failure(&mut cmd, 2);
    assert!(
        err.contains(&format!(
            "the TLS certificate of {} is not trusted",
            registry.host
        )),
        "{err}"
    );
    assert!(err.contains("--ca-file CA.pem"), "{err}");

    // The same certificate comes back on every attempt: refused at once, not retried (a
    // puller sync with a short interval reported CycleTimeout instead, its 2 s spent in
    // the retries' backoff).
    let mut cmd = common::tresor();
    cmd.args(["inspect", &format!("{repo}:v1"), "-vv"])
        .env("NO_COLOR", "1");
    let err = stderr_of_failure(&mut cmd, 2);
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    assert!(!err.contains("retrying"), "{err}");
}

#[test]
fn tags_are_immutable_unless_overwritten_and_identical_pushes_are_no_ops() {
    let registry = TestRegistry::plain();
    let repo = registry.repo("immutable");
    let tagged = format!("{repo}:v1");
    let first = json_of(registry.tresor(&[
        "push",
        fixture_tree().to_str().unwrap(),
        &tagged,
        "--format",
        "json",
    ]));
    assert_eq!(first["unchanged"], false);
    assert_eq!(first["blobs_uploaded"], 2);

    // Same tree again (a new created time): no-op, same digest.
    let again = json_of(registry.tresor(&[
        "push",
        fixture_tree().to_str().unwrap(),
        &tagged,
        "--format",
        "json",
    ]));
    assert_eq!(again["unchanged"], true);
    assert_eq!(again["digest"], first["digest"]);

    // Different content under the same tag: refused.
    let changed = tempfile::tempdir().unwrap();
    copy_tree(&fixture_tree(), changed.path());
    std::fs::write(
        changed.path().join("extra.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\n",
    )
    .unwrap();
    let err = stderr_of_failure(
        &mut registry.tresor(&["push", changed.path().to_str().unwrap(), &tagged]),
        2,
    );
    assert!(
        err.contains("already points at") && err.contains("--overwrite"),
        "{err}"
    );
    let list = json_of(registry.tresor(&["list", &repo, "--format", "json"]));
    assert_eq!(
        list[0]["digest"], first["digest"],
        "the tag moved although the push was refused"
    );

    // With --overwrite it moves; the config blob is not sent again.
    let moved = json_of(registry.tresor(&[
        "push",
        changed.path().to_str().unwrap(),
        &tagged,
        "--overwrite",
        "--format",
        "json",
    ]));
    assert_ne!(moved["digest"], first["digest"]);
    assert_eq!(moved["blobs_uploaded"], 1);
}

#[test]
fn unknown_tag_and_unknown_host_are_clear_errors() {
    let registry = TestRegistry::plain();
    let repo = registry.repo("missing");
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("x");
    let err = stderr_of_failure(
        &mut registry.tresor(&[
            "pull",
            &format!("{repo}:nope"),
            "-o",
            dest.to_str().unwrap(),
            "--allow-unsigned",
        ]),
        2,
    );
    assert!(err.contains("manifest not found"), "{err}");
    assert!(!dest.exists());

    let mut cmd = common::tresor();
    cmd.args([
        "pull",
        "oci://registry.invalid/acme/app:v1",
        "-o",
        dest.to_str().unwrap(),
        "--allow-unsigned",
        "--retries",
        "0",
        "--timeout",
        "5s",
    ]);
    let err = stderr_of_failure(&mut cmd, 2);
    assert!(
        err.contains("cannot reach registry registry.invalid"),
        "{err}"
    );
    assert!(!dest.exists());
}

/// Issue 12 point 2: a port with leading zeros or a trailing-dot host reaches the same
/// registry under another spelling; the CLI refuses both (exit 2) before any request, with
/// the reference and the plain spelling in the error.
#[test]
fn regression_issue12_cli_refuses_leading_zero_ports_and_trailing_dots() {
    let registry = TestRegistry::plain();
    let (name, port) = registry.host.rsplit_once(':').unwrap();
    let repo = common::unique_repo("issue12-spelling");
    for (spelled, plain) in [
        (
            format!("oci://{name}:0{port}/{repo}:v1"),
            format!("{name}:{port}"),
        ),
        (
            format!("oci://localhost.:{port}/{repo}:v1"),
            format!("\"localhost:{port}\""),
        ),
    ] {
        let err = stderr_of_failure(registry.tresor(&["inspect", &spelled]), 2);
        assert!(err.contains(&spelled), "{spelled}: {err}");
        assert!(err.contains(&format!("write {plain}")), "{spelled}: {err}");
    }
}
