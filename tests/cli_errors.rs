//! Issue 16's error messages, as a user meets them: each names what was wrong and the
//! setting that fixes it, once, without terminal colours when stderr is not a terminal.
//! Against the real local registries (`scripts/registry.sh`): plain HTTP on 5001, basic auth
//! on 5002, TLS with the project's own CA on 5003.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{stderr_of_failure, stdout_of, tresor, TestRegistry};

#[test]
fn a_plain_http_registry_spoken_to_in_tls_names_plain_http() {
    let registry = TestRegistry::plain();
    let mut cmd = tresor();
    cmd.args(["list", &registry.repo("issue16-plain")]);
    let stderr = stderr_of_failure(cmd, 2);
    assert!(
        stderr.contains(&format!(
            "{} speaks plain HTTP, not HTTPS; if that is intended and you trust the network \
             path to it (a local or test registry), use --plain-http",
            registry.host
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("InvalidContentType"), "{stderr}");
    assert_eq!(stderr.matches("speaks plain HTTP").count(), 1, "{stderr}");
}

#[test]
fn an_unknown_certificate_authority_names_ca_file_once_and_without_colour() {
    let registry = TestRegistry::tls();
    let mut cmd = tresor();
    cmd.args(["list", &registry.repo("issue16-tls")]);
    let stderr = stderr_of_failure(cmd, 2);
    assert!(
        stderr.contains(&format!(
            "the TLS certificate of {} is not trusted: it is signed by a certificate authority \
             tresor does not know; if the registry uses a private certificate authority, trust \
             it with --ca-file CA.pem",
            registry.host
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("UnknownIssuer"), "{stderr}");
    assert_eq!(stderr.matches("is not trusted").count(), 1, "{stderr}");
    // With -vv every diagnostic goes to stderr: no retry of a certificate error, and no
    // colour codes in a pipe.
    let mut cmd = tresor();
    cmd.args(["-vv", "list", &registry.repo("issue16-tls")]);
    let stderr = stderr_of_failure(cmd, 2);
    assert!(stderr.contains("DEBUG"), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "ANSI escape in piped stderr: {stderr:?}"
    );
    assert!(!stderr.contains("transient failure, retrying"), "{stderr}");
}

#[test]
fn skopeo_spellings_of_a_reference_suggest_tresors() {
    let mut cmd = tresor();
    cmd.args(["inspect", "oci:./out/layout:v1"]);
    let stderr = stderr_of_failure(cmd, 2);
    assert!(
        stderr.contains(
            "oci:PATH is skopeo's name for an OCI layout; tresor writes it \
             oci-layout:./out/layout:v1"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("invalid port"), "{stderr}");
    let mut cmd = tresor();
    cmd.args(["inspect", "docker://registry.example/acme/app:v1"]);
    let stderr = stderr_of_failure(cmd, 2);
    assert!(
        stderr.contains("tresor writes it oci://registry.example/acme/app:v1"),
        "{stderr}"
    );
}

#[test]
fn the_credentials_hint_of_the_cli_names_cli_settings_only() {
    let registry = TestRegistry::auth();
    let mut cmd = tresor();
    cmd.args(["list", &registry.repo("issue16-creds"), "--plain-http"]);
    let stderr = stderr_of_failure(cmd, 2);
    assert!(
        stderr.contains(
            "the registry requires credentials: pass --creds USER:PASSWORD or run `docker \
             login HOST`"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("pullSecretRef"), "{stderr}");
}

#[test]
fn a_policy_refusal_on_pull_suggests_pull_options() {
    let tree = tempfile::tempdir().unwrap();
    std::fs::write(
        tree.path().join("web.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  template:\n    \
         spec:\n      containers:\n        - name: web\n          image: nginx:latest\n",
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let layout = format!("oci-layout:{}:v1", out.path().join("layout").display());
    let mut push = tresor();
    push.args([
        "push",
        tree.path().to_str().unwrap(),
        &layout,
        "--policy",
        "warn",
    ]);
    stdout_of(push);
    let mut pull = tresor();
    pull.args(["pull", &layout, "--allow-unsigned", "--output"])
        .arg(out.path().join("pulled"));
    let stderr = stderr_of_failure(pull, 1);
    assert!(
        stderr.contains(
            "policy refused the pull: 1 error finding(s) (mode enforce; --policy warn to pull \
             it anyway and only report them, --policy-file to allow specific images or rules; \
             the artifact itself is fixed where it is pushed)"
        ),
        "{stderr}"
    );
    assert!(!out.path().join("pulled").exists());
}
