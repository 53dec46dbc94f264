//! The immutability policy: `tresor lint` on the corpus (exact findings), policy files,
//! enforcement at push and pull, and `push --pin-images` against the real local registry.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};

use common::{
    fixture_tree, json_of, read_tree, stderr_of_failure, stdout_of, tresor, TestRegistry,
};

fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/lint")
        .join(rel)
}

/// Runs `tresor ARGS`, returns (exit code, stdout, stderr).
fn run(args: &[&str]) -> (i32, String, String) {
    let out = tresor().args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn lint_json(args: &[&str]) -> (i32, serde_json::Value) {
    let mut all = vec!["lint"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--format", "json"]);
    let (code, stdout, stderr) = run(&all);
    let json = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}{stderr}"));
    (code, json)
}

/// (rule, severity, file, path) of every finding.
fn summary(report: &serde_json::Value) -> Vec<(String, String, String, String)> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["rule"].as_str().unwrap().to_string(),
                f["severity"].as_str().unwrap().to_string(),
                f["file"].as_str().unwrap().to_string(),
                f["path"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn lint_corpus_matches_golden_findings_exactly() {
    let (code, report) = lint_json(&[testdata("corpus").to_str().unwrap()]);
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(testdata("expected.json")).unwrap()).unwrap();
    assert_eq!(
        report,
        expected,
        "findings differ from testdata/lint/expected.json; actual:\n{}",
        serde_json::to_string_pretty(&report).unwrap()
    );
    assert_eq!(code, 1, "error findings exit 1");
    // Spot checks that the golden file says what the issue asks for.
    let s = summary(&report);
    let has = |rule: &str, severity: &str, file: &str, path: &str| {
        s.contains(&(rule.into(), severity.into(), file.into(), path.into()))
    };
    assert!(has(
        "image-not-pinned",
        "warning",
        "workloads/batch.yaml",
        "spec.jobTemplate.spec.template.spec.initContainers[0].image"
    ));
    assert!(has(
        "image-not-pinned",
        "warning",
        "workloads/deployment.yaml",
        "spec.template.spec.initContainers[1].image"
    ));
    assert!(has(
        "image-latest",
        "error",
        "workloads/deployment.yaml",
        "spec.template.spec.containers[2].image"
    ));
    assert!(has(
        "image-not-pinned",
        "warning",
        "workloads/others.yaml",
        "spec.ephemeralContainers[0].image"
    ));
    // Pinned images (tag@digest, digest only, with ports) are never reported.
    for (_, _, file, path) in &s {
        assert!(
            !(file == "workloads/deployment.yaml"
                && (path.contains("containers[0]") || path.contains("containers[1]"))
                && !path.contains("initContainers")),
            "pinned image reported: {path}"
        );
    }
    assert_eq!(report["objects"], 36);
}

#[test]
fn lint_clean_tree_exits_zero_in_text_and_json() {
    let dir = testdata("clean");
    let (code, stdout, _) = run(&["lint", dir.to_str().unwrap()]);
    assert_eq!(
        (code, stdout.as_str()),
        (0, "0 errors, 0 warnings in 2 objects\n")
    );
    let (code, report) = lint_json(&[dir.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert_eq!(report["findings"], serde_json::json!([]));
}

#[test]
fn lint_text_output_names_rule_file_line_object_and_path() {
    let (code, stdout, _) = run(&["lint", testdata("corpus").to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stdout.contains(
        "warning[image-not-pinned]: workloads/batch.yaml:1 (document 0): CronJob.batch/shop/report: \
         spec.jobTemplate.spec.template.spec.initContainers[0].image: image \"alpine:3.20\" has a tag but no digest"
    ), "{stdout}");
    assert!(stdout.contains(
        "warning[image-not-pinned]: workloads/list.yaml:1 (document 0 item 1): Pod/shop/listed-pod:"
    ), "{stdout}");
    assert!(
        stdout.ends_with("21 errors, 11 warnings in 36 objects\n"),
        "{stdout}"
    );
}

#[test]
fn lint_strict_makes_warnings_errors() {
    let corpus = testdata("corpus");
    let (_, normal) = lint_json(&[corpus.to_str().unwrap()]);
    let (code, strict) = lint_json(&[corpus.to_str().unwrap(), "--strict"]);
    assert_eq!(code, 1);
    let normal = summary(&normal);
    let strict = summary(&strict);
    assert_eq!(normal.len(), strict.len());
    for ((rule, _, file, path), (rule2, severity, file2, path2)) in normal.iter().zip(&strict) {
        assert_eq!((rule, file, path), (rule2, file2, path2));
        assert_eq!(severity, "error");
    }
}

#[test]
fn lint_policy_file_overrides_and_allow_lists() {
    let dir = tempfile::tempdir().unwrap();
    common::copy_tree(&testdata("corpus"), dir.path());
    std::fs::write(
        dir.path().join("labelled.yaml"),
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: fixture\n  namespace: shop\n  labels: {tresor.dev/allow: plaintext-secret}\ndata: {a: YQ==}\n---\n\
         apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: old\n  namespace: shop\n  labels: {tier: legacy}\nspec:\n  template:\n    spec:\n      containers: [{name: a, image: nginx}]\n",
    )
    .unwrap();
    let policy = testdata("policy.yaml");
    let (code, report) = lint_json(&[
        dir.path().to_str().unwrap(),
        "--policy-file",
        policy.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    let s = summary(&report);
    let rules_in = |file: &str| -> Vec<String> {
        s.iter()
            .filter(|f| f.2 == file)
            .map(|f| f.0.clone())
            .collect()
    };
    // argocd-target-revision: off.
    assert!(rules_in("sources/argocd.yaml").is_empty(), "{s:?}");
    // duplicate-object: warning.
    assert!(s.contains(&(
        "duplicate-object".into(),
        "warning".into(),
        "dup-b.yaml".into(),
        "".into()
    )));
    // strict: true makes tags without digest errors.
    assert!(s.contains(&(
        "image-not-pinned".into(),
        "error".into(),
        "workloads/batch.yaml".into(),
        "spec.jobTemplate.spec.template.spec.initContainers[0].image".into()
    )));
    // Allowed images: the registry with a port, and a registry/path prefix.
    assert!(!s
        .iter()
        .any(|f| f.2 == "workloads/deployment.yaml" && f.3.contains("initContainers[1]")));
    assert!(!s.iter().any(|f| f.2 == "workloads/others.yaml"
        && f.0 == "image-not-pinned"
        && f.3.contains("spec.template")));
    // Objects allowed by label selector: only for the listed rule / for every rule.
    assert!(rules_in("labelled.yaml").is_empty(), "{s:?}");
    assert_eq!(
        rules_in("secrets.yaml"),
        ["plaintext-secret", "plaintext-secret"]
    );
}

#[test]
fn lint_policy_example_parses_and_schema_matches_rules() {
    let policy = tresor::policy::Policy::load(&testdata("policy.yaml")).unwrap();
    assert_eq!(policy.mode(None), tresor::policy::Mode::Warn);
    assert!(policy.strict);
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/policy.schema.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let ids: Vec<&str> = schema["$defs"]["ruleId"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let known: Vec<&str> = tresor::policy::rules::RULES
        .iter()
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(ids, known, "schema rule ids and RULES differ");
    // Every field the Rust type knows is in the schema, and nothing else.
    let serialised = serde_json::to_value(&policy).unwrap();
    let mut fields: Vec<&String> = serialised.as_object().unwrap().keys().collect();
    fields.sort();
    let mut props: Vec<&String> = schema["properties"].as_object().unwrap().keys().collect();
    props.sort();
    assert_eq!(fields, props);
    // The example as JSON parses too (the schema is for YAML and JSON alike).
    let as_json = serde_json::to_string(&serialised).unwrap();
    assert_eq!(tresor::policy::Policy::parse(&as_json).unwrap(), policy);
}

fn small_tree(image: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("deploy.yaml"),
        format!(
            "# a comment that must survive\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: shop\nspec:\n  template:\n    spec:\n      containers:\n        - name: web\n          image: {image}   # the app\n"
        ),
    )
    .unwrap();
    dir
}

#[test]
fn lint_push_enforce_refuses_warn_passes_off_is_silent() {
    let layout = tempfile::tempdir().unwrap();
    let target = format!("oci-layout:{}:v1", layout.path().join("l").display());
    let tree = small_tree("nginx:latest");
    let dir = tree.path().to_str().unwrap();

    // Default mode is enforce: refused, exit 1, findings listed, nothing pushed.
    let stderr = stderr_of_failure(tresor().args(["push", dir, &target, "--reproducible"]), 1);
    assert!(stderr.contains("policy refused the push"), "{stderr}");
    assert!(
        stderr.contains("error[image-latest]: deploy.yaml:2 (document 0): Deployment.apps/shop/web: spec.template.spec.containers[0].image"),
        "{stderr}"
    );
    assert!(!layout.path().join("l").join("index.json").exists());

    // Warn: pushed, findings on stderr.
    let out = tresor()
        .args(["push", dir, &target, "--reproducible", "--policy", "warn"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("error[image-latest]"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("@sha256:"));

    // Off: nothing reported. A warning-only tree passes enforce with the warning shown.
    let out = tresor()
        .args(["push", dir, &target, "--reproducible", "--policy", "off"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("image-latest"));
    let warn_only = small_tree("nginx:1.27");
    let out = tresor()
        .args([
            "push",
            warn_only.path().to_str().unwrap(),
            &format!("oci-layout:{}:v2", layout.path().join("l").display()),
            "--reproducible",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("warning[image-not-pinned]"));

    // A policy file's mode applies; --policy overrides it.
    let policy = testdata("policy.yaml");
    let out = tresor()
        .args([
            "push",
            dir,
            &target,
            "--policy-file",
            policy.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stderr_of_failure(
        tresor().args([
            "push",
            dir,
            &target,
            "--policy-file",
            policy.to_str().unwrap(),
            "--policy",
            "enforce",
        ]),
        1,
    );
}

#[test]
fn lint_pull_enforce_refuses_and_writes_nothing_and_lint_reads_artifacts() {
    let layout = tempfile::tempdir().unwrap();
    let target = format!("oci-layout:{}:v1", layout.path().join("l").display());
    let tree = small_tree("nginx");
    stdout_of(tresor().args([
        "push",
        tree.path().to_str().unwrap(),
        &target,
        "--policy",
        "off",
    ]));

    let out_dir = layout.path().join("out");
    let stderr = stderr_of_failure(
        tresor().args([
            "pull",
            &target,
            "--output",
            out_dir.to_str().unwrap(),
            "--allow-unsigned",
        ]),
        1,
    );
    assert!(stderr.contains("policy refused the pull"), "{stderr}");
    assert!(stderr.contains("error[image-latest]"), "{stderr}");
    assert!(
        !out_dir.exists(),
        "nothing may be written when the policy refuses"
    );
    let leftovers: Vec<_> = std::fs::read_dir(layout.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with(".tresor-pull-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    stdout_of(tresor().args([
        "pull",
        &target,
        "--output",
        out_dir.to_str().unwrap(),
        "--allow-unsigned",
        "--policy",
        "warn",
    ]));
    assert_eq!(read_tree(&out_dir), read_tree(tree.path()));

    // lint REF reads the artifact's files.
    let (code, report) = lint_json(&[&target]);
    assert_eq!(code, 1);
    assert_eq!(
        summary(&report),
        [(
            "image-latest".to_string(),
            "error".to_string(),
            "deploy.yaml".to_string(),
            "spec.template.spec.containers[0].image".to_string()
        )]
    );
}

#[test]
fn lint_files_content_is_not_linted_as_kubernetes_on_pull() {
    let layout = tempfile::tempdir().unwrap();
    let target = format!("oci-layout:{}:v1", layout.path().join("l").display());
    let tree = tempfile::tempdir().unwrap();
    std::fs::write(
        tree.path().join("compose.yaml"),
        "services:\n  web:\n    image: nginx:1.27\n",
    )
    .unwrap();
    stdout_of(tresor().args([
        "push",
        tree.path().to_str().unwrap(),
        &target,
        "--content",
        "files",
    ]));
    let out_dir = layout.path().join("out");
    stdout_of(tresor().args([
        "pull",
        &target,
        "--output",
        out_dir.to_str().unwrap(),
        "--allow-unsigned",
    ]));
}

#[test]
fn lint_pin_images_against_local_registry() {
    let registry = TestRegistry::plain();
    // Something with a digest to pin to: an artifact pushed by tresor itself.
    let image_repo = common::unique_repo("pin-img");
    let image = format!("{}/{image_repo}:1.0", registry.host);
    let pushed = json_of(registry.tresor(&[
        "push",
        fixture_tree().to_str().unwrap(),
        &format!("oci://{image}"),
        "--format",
        "json",
    ]));
    let digest = pushed["digest"].as_str().unwrap().to_string();

    // A tree using it in a Deployment and in a CronJob initContainer.
    let tree = small_tree(&image);
    std::fs::write(
        tree.path().join("cron.yaml"),
        format!(
            "apiVersion: batch/v1\nkind: CronJob\nmetadata: {{name: job, namespace: shop}}\nspec:\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          initContainers: [{{name: i, image: \"{image}\"}}]\n          containers: [{{name: c, image: \"{image}@{digest}\"}}]\n"
        ),
    )
    .unwrap();
    let before = read_tree(tree.path());

    let target = registry.repo("pinned");
    let out = registry
        .tresor(&[
            "push",
            tree.path().to_str().unwrap(),
            &format!("{target}:v1"),
            "--pin-images",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("pinned 2 image reference(s) (1 distinct images)"),
        "{stderr}"
    );
    assert!(!stderr.contains("image-not-pinned"), "{stderr}");
    assert_eq!(
        read_tree(tree.path()),
        before,
        "the source tree must not change"
    );

    // The packaged copy holds the digest the registry reports, comments kept.
    let pulled = tempfile::tempdir().unwrap();
    let out_dir = pulled.path().join("out");
    stdout_of(registry.tresor(&[
        "pull",
        &format!("{target}:v1"),
        "--output",
        out_dir.to_str().unwrap(),
        "--allow-unsigned",
    ]));
    let deploy = std::fs::read_to_string(out_dir.join("deploy.yaml")).unwrap();
    assert!(deploy.starts_with("# a comment that must survive\n"));
    assert!(
        deploy.contains(&format!("          image: {image}@{digest}   # the app\n")),
        "{deploy}"
    );
    let cron = std::fs::read_to_string(out_dir.join("cron.yaml")).unwrap();
    assert!(
        cron.contains(&format!(
            "initContainers: [{{name: i, image: \"{image}@{digest}\"}}]"
        )),
        "{cron}"
    );
    assert!(!cron.contains(&format!("{digest}@{digest}")), "{cron}");

    // Recorded in the artifact and shown by inspect.
    let info = json_of(registry.tresor(&["inspect", &format!("{target}:v1"), "--format", "json"]));
    assert_eq!(
        info["pinned_images"],
        serde_json::json!({ image.clone(): digest.clone() })
    );
    let text = stdout_of(registry.tresor(&["inspect", &format!("{target}:v1")]));
    assert!(
        text.contains(&format!("Pinned images (1):\n  {image}@{digest}\n")),
        "{text}"
    );

    // An image that does not exist fails the push with its name and the reason.
    let missing = format!("{}/{}:9.9", registry.host, common::unique_repo("missing"));
    let tree = small_tree(&missing);
    let stderr = stderr_of_failure(
        registry.tresor(&[
            "push",
            tree.path().to_str().unwrap(),
            &format!("{target}:v2"),
            "--pin-images",
        ]),
        2,
    );
    assert!(
        stderr.contains(&format!("cannot pin image {missing}: manifest not found")),
        "{stderr}"
    );
}
