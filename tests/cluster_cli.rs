//! `tresor apply` and `tresor status` against the real kube-apiserver of
//! `scripts/cluster.sh` with its admin kubeconfig (TRESOR_CLUSTER_KUBECONFIG), one
//! namespace per test (tests/common/cluster.rs). `tests/cluster.rs` has the scenario of
//! issue 11 (`apply --prune --wait`, `status --kubeconfig`); these are the rest, ported
//! from the API doubles (issue 11): an unchanged re-apply writes nothing, `--dry-run`,
//! `--service-account` without rights, `--path`, and the status listing in text and JSON.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::Path;
use std::time::SystemTime;

use common::cluster::{config_map, resource_version, Tenant};
use kube::api::{Patch, PatchParams};
use serde_json::{json, Value};
use tresor::kube::LABEL_NAME;

const DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

/// Pushes `files` to the OCI layout `layout` as `tag` (no registry needed).
fn push_layout(work: &Path, layout: &Path, tag: &str, files: &[(&str, &str)]) {
    let tree = work.join(format!("tree-{tag}"));
    for (name, text) in files {
        let path = tree.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    common::stdout_of(common::tresor().args([
        "push",
        tree.to_str().unwrap(),
        &format!("oci-layout:{}:{tag}", layout.display()),
    ]));
}

/// `tresor apply oci-layout:…:tag` into the tenant's namespace as sync `shop`, unsigned,
/// with the admin kubeconfig.
fn apply(t: &Tenant, layout: &Path, tag: &str, extra: &[&str]) -> assert_cmd::Command {
    let mut cmd = common::tresor();
    cmd.args([
        "apply",
        &format!("oci-layout:{}:{tag}", layout.display()),
        "--kubeconfig",
        t.cluster.kubeconfig.to_str().unwrap(),
        "--namespace",
        &t.ns,
        "--name",
        "shop",
        "--allow-unsigned",
        "--cache-dir",
        t.work.path().join("cache").to_str().unwrap(),
    ])
    .args(extra);
    cmd
}

/// The resourceVersions of ConfigMaps `names` in the tenant's namespace (None: absent).
async fn versions(t: &Tenant, names: &[&str]) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for name in names {
        out.push(t.config_map(name).await.as_ref().map(resource_version));
    }
    out
}

/// An unchanged re-apply writes nothing; `--dry-run` reports the prune and changes
/// nothing; a ServiceAccount without rights (`--service-account`) is refused with exit 2,
/// Forbidden naming it, and nothing is written.
#[tokio::test]
async fn tresor_apply_is_idempotent_dry_runs_and_refuses_an_account_without_rights() {
    let t = Tenant::new("cli-apply").await;
    let work = t.work.path().to_path_buf();
    let layout = work.join("layout");
    let (a, b, c) = (
        config_map("a", "one"),
        config_map("b", "two"),
        config_map("c", "three"),
    );
    push_layout(&work, &layout, "v1", &[("a.yaml", &a), ("b.yaml", &b)]);
    let out = common::stdout_of(apply(&t, &layout, "v1", &["--prune", "--wait"]));
    assert!(out.starts_with("applied sha256:"), "{out}");
    assert!(out.contains(&format!("  ConfigMap/{}/b", t.ns)), "{out}");
    assert_eq!(
        t.config_map("b").await.unwrap()["metadata"]["labels"][LABEL_NAME],
        "shop"
    );
    let inventory = t.config_map("tresor-inventory-shop").await.unwrap();
    assert!(
        inventory["data"]["objects"]
            .as_str()
            .unwrap()
            .contains("\"name\":\"b\""),
        "{inventory}"
    );

    // The same again: unchanged, nothing written.
    let names = ["a", "b", "tresor-inventory-shop"];
    let before = versions(&t, &names).await;
    let out = common::stdout_of(apply(&t, &layout, "v1", &["--prune"]));
    assert!(out.starts_with("unchanged sha256:"), "{out}");
    assert_eq!(versions(&t, &names).await, before, "written again");

    // v2 without b: a dry run reports the prune and changes nothing; the real run prunes.
    push_layout(&work, &layout, "v2", &[("a.yaml", &a)]);
    let out = common::stdout_of(apply(&t, &layout, "v2", &["--prune", "--dry-run"]));
    assert!(out.starts_with("would apply sha256:"), "{out}");
    assert!(
        out.contains(&format!("would prune ConfigMap/{}/b", t.ns)),
        "{out}"
    );
    assert_eq!(versions(&t, &names).await, before, "the dry run wrote");
    let out = common::stdout_of(apply(&t, &layout, "v2", &["--prune"]));
    assert!(
        out.contains(&format!("pruned ConfigMap/{}/b", t.ns)),
        "{out}"
    );
    assert!(t.config_map("b").await.is_none());

    // A ServiceAccount without rights: exit 2, Forbidden, nothing written.
    t.cluster
        .kubectl_ok(&["-n", &t.ns, "create", "serviceaccount", "deployer"]);
    push_layout(&work, &layout, "v3", &[("a.yaml", &a), ("c.yaml", &c)]);
    let names = ["a", "c", "tresor-inventory-shop"];
    let before = versions(&t, &names).await;
    let out = apply(
        &t,
        &layout,
        "v3",
        &["--prune", "--service-account", "deployer"],
    )
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("error [Forbidden at apply]"), "{stdout}");
    assert!(
        stdout.contains(&format!("system:serviceaccount:{}:deployer", t.ns)),
        "{stdout}"
    );
    assert_eq!(versions(&t, &names).await, before, "written without rights");
}

/// `tresor apply --path`: only that directory is applied; `..` is refused before anything
/// runs; a directory the artifact lacks fails with `PathNotFound`, writing nothing.
#[tokio::test]
async fn tresor_apply_path_applies_one_directory() {
    let t = Tenant::new("cli-path").await;
    let work = t.work.path().to_path_buf();
    let layout = work.join("layout");
    push_layout(
        &work,
        &layout,
        "v1",
        &[
            ("base/cm.yaml", &config_map("a", "base")),
            ("prod/cm.yaml", &config_map("b", "prod")),
        ],
    );
    let out = common::stdout_of(apply(&t, &layout, "v1", &["--path", "prod/"]));
    assert!(out.starts_with("applied sha256:"), "{out}");
    assert_eq!(t.config_map("b").await.unwrap()["data"]["k"], "prod");
    assert!(t.config_map("a").await.is_none());

    let names = ["a", "b", "tresor-inventory-shop"];
    let before = versions(&t, &names).await;
    let stderr =
        common::stderr_of_failure(apply(&t, &layout, "v1", &["--path", "prod/../base"]), 2);
    assert!(stderr.contains(".."), "{stderr}");
    let out = apply(&t, &layout, "v1", &["--path", "staging"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("PathNotFound"), "{text}");
    assert!(text.contains("top-level directories: base, prod"), "{text}");
    assert_eq!(versions(&t, &names).await, before, "written");
}

/// Creates ArtifactSync `name` in the tenant's namespace (no puller serves it) and, when
/// `ready` is given, writes its status as a puller would: (status, reason, message).
async fn sync_with_status(
    t: &Tenant,
    name: &str,
    ready: Option<(&str, &str, &str)>,
    suspend: bool,
) {
    let mut spec = json!({"url": format!("oci://registry.example/{name}"), "ref": {"tag": "v1"},
        "interval": "5m", "verify": {"allowUnsigned": true}});
    if suspend {
        spec["suspend"] = json!(true);
    }
    let sync = t.create_sync(name, spec).await;
    let generation = sync.metadata.generation.unwrap();
    if let Some((status, reason, message)) = ready {
        t.syncs()
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {
                    "observedGeneration": generation,
                    "lastAppliedDigest": DIGEST,
                    "conditions": [{
                        "type": "Ready", "status": status, "reason": reason, "message": message,
                        "lastTransitionTime": "2020-01-01T00:01:00Z",
                        "observedGeneration": generation
                    }]
                }})),
            )
            .await
            .unwrap();
    }
}

/// `tresor status` (the library's list and rows, and the binary in text for one namespace
/// and in JSON for all of them) shows what the syncs' status says, sorted by namespace and
/// name, with suspended syncs and syncs without a status.
#[tokio::test]
async fn status_lists_syncs_in_text_and_json_for_one_or_every_namespace() {
    let a = Tenant::new("cli-status-a").await;
    let b = Tenant::new("cli-status-b").await;
    sync_with_status(
        &b,
        "web",
        Some(("False", "SignatureInvalid", "verify: no valid signature")),
        false,
    )
    .await;
    sync_with_status(
        &a,
        "api",
        Some(("True", "Applied", "applied sha256:1111")),
        false,
    )
    .await;
    sync_with_status(&a, "batch", None, true).await;
    let ours = |ns: &str| ns == a.ns || ns == b.ns;

    // The library, across all namespaces (other tests' syncs are there too).
    let listed = tresor::cli::status::list(a.client.clone(), None)
        .await
        .unwrap();
    let rows: Vec<_> = tresor::cli::status::rows(&listed, SystemTime::now())
        .into_iter()
        .filter(|r| ours(&r.namespace))
        .collect();
    let names: Vec<_> = rows
        .iter()
        .map(|r| format!("{}/{}", r.namespace, r.name))
        .collect();
    assert_eq!(
        names,
        [
            format!("{}/api", a.ns),
            format!("{}/batch", a.ns),
            format!("{}/web", b.ns)
        ],
        "sorted"
    );
    assert_eq!(rows[0].ready, "True");
    assert_eq!(rows[0].reason, "Applied");
    assert_eq!(rows[0].last_applied_digest.as_deref(), Some(DIGEST));
    assert_eq!(rows[0].source_ref, "tag:v1");
    assert_eq!(rows[1].ready, "Unknown", "no status yet");
    assert_eq!(rows[1].reason, "Suspended");
    assert!(rows[1].suspended);
    assert_eq!(rows[2].ready, "False");
    assert_eq!(rows[2].reason, "SignatureInvalid");
    assert_eq!(rows[2].url, "oci://registry.example/web");

    let status = |args: &[&str]| {
        let mut cmd = common::tresor();
        cmd.arg("status")
            .args(args)
            .env("KUBECONFIG", &a.cluster.kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST");
        cmd
    };

    // Text, one namespace.
    let text = common::stdout_of(status(&["-n", &a.ns]));
    let lines: Vec<_> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    let header: Vec<_> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAMESPACE",
            "NAME",
            "URL",
            "REF",
            "READY",
            "REASON",
            "DIGEST",
            "APPROVED",
            "AGE"
        ]
    );
    let api: Vec<_> = lines[1].split_whitespace().collect();
    assert_eq!(
        &api[..7],
        [
            a.ns.as_str(),
            "api",
            "oci://registry.example/api",
            "tag:v1",
            "True",
            "Applied",
            "sha256:111111111111"
        ]
    );
    let batch: Vec<_> = lines[2].split_whitespace().collect();
    assert_eq!(&batch[4..7], ["Unknown", "Suspended", "-"]);

    // JSON, every namespace.
    let v: Value = serde_json::from_str(&common::stdout_of(status(&["--format", "json"]))).unwrap();
    let items: Vec<&Value> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| ours(i["namespace"].as_str().unwrap()))
        .collect();
    assert_eq!(items.len(), 3, "{items:?}");
    let web = items[2];
    assert_eq!(web["namespace"], b.ns.as_str());
    assert_eq!(web["name"], "web");
    assert_eq!(web["ready"], "False");
    assert_eq!(web["reason"], "SignatureInvalid");
    assert_eq!(web["message"], "verify: no valid signature");
    assert_eq!(web["lastAppliedDigest"], DIGEST);
    assert_eq!(web["ref"], "tag:v1");
}

/// `tresor apply --no-cross-namespace`: an artifact with an object in another namespace is
/// refused with exit 2, `CrossNamespace` naming object and namespace, and nothing of it is
/// written (not the object in the apply's own namespace either); without the flag the same
/// artifact applies.
#[tokio::test]
async fn tresor_apply_no_cross_namespace_refuses_other_namespaces_before_writing() {
    let t = Tenant::new("cli-xns").await;
    let other = Tenant::new("cli-xns-other").await;
    let work = t.work.path().to_path_buf();
    let layout = work.join("layout");
    let elsewhere = config_map("elsewhere", "x").replace(
        "metadata:\n",
        &format!("metadata:\n  namespace: {}\n", other.ns),
    );
    assert!(elsewhere.contains(&other.ns), "{elsewhere}");
    push_layout(
        &work,
        &layout,
        "v1",
        &[("a.yaml", &config_map("a", "one")), ("z.yaml", &elsewhere)],
    );
    let out = apply(&t, &layout, "v1", &["--no-cross-namespace"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(
        stdout.contains("error [CrossNamespace at apply]"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("ConfigMap {}/elsewhere", other.ns))
            && stdout.contains(&format!("outside \"{}\"", t.ns)),
        "{stdout}"
    );
    assert!(t.config_map("a").await.is_none(), "a was written");
    assert!(other.config_map("elsewhere").await.is_none());
    assert!(t.config_map("tresor-inventory-shop").await.is_none());

    let out = common::stdout_of(apply(&t, &layout, "v1", &[]));
    assert!(out.starts_with("applied sha256:"), "{out}");
    assert!(other.config_map("elsewhere").await.is_some());
}

/// `tresor wait REF --for applied`: exit 0 once the following sync applied REF's digest;
/// exit 1 naming the reason when the puller refuses it (here an object in another
/// namespace); exit 2 when no sync follows REF.
#[tokio::test]
async fn tresor_wait_reports_applied_refused_and_unfollowed() {
    let t = Tenant::new("cli-wait").await;
    let registry = common::TestRegistry::plain();
    let (repo, d1) = t.push(&registry, None, "v", &[("a.yaml", &config_map("a", "one"))]);
    let puller = t.puller(&[]);
    t.create_sync("app", common::cluster::unsigned_spec(&repo, "v", "2s"))
        .await;
    let wait = |reference: &str| {
        let mut cmd = registry.tresor(&[
            "wait",
            reference,
            "--for",
            "applied",
            "-n",
            &t.ns,
            "--timeout",
            "60s",
            "--kubeconfig",
            t.cluster.kubeconfig.to_str().unwrap(),
        ]);
        cmd.timeout(std::time::Duration::from_secs(90));
        cmd.output().unwrap()
    };
    let out = wait(&format!("{repo}:v"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", puller.log_tail());
    assert!(
        stdout.starts_with(&format!("applied {d1} in 1 ArtifactSync(s)")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("{}/app: applied and ready", t.ns)),
        "{stdout}"
    );

    // v2 puts an object into another namespace: the confined puller refuses it (Stalled,
    // CrossNamespace) and `tresor wait` says so.
    let elsewhere =
        config_map("b", "two").replace("metadata:\n", "metadata:\n  namespace: kube-system\n");
    let (_, d2) = t.push(&registry, Some(&repo), "v", &[("b.yaml", &elsewhere)]);
    let out = wait(&format!("{repo}:v"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", puller.log_tail());
    assert!(stdout.starts_with(&format!("refused {d2}")), "{stdout}");
    assert!(stdout.contains("refused: CrossNamespace: "), "{stdout}");
    assert_eq!(t.config_map("a").await.unwrap()["data"]["k"], "one");

    // JSON: the digest and each sync's state.
    let out = registry
        .tresor(&[
            "wait",
            &format!("{repo}@{d1}"),
            "-n",
            &t.ns,
            "--timeout",
            "5s",
            "--format",
            "json",
            "--kubeconfig",
            t.cluster.kubeconfig.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["digest"], d1);
    assert_eq!(
        v["syncs"][format!("{}/app", t.ns)]["state"],
        "pending",
        "{v}"
    );
    assert_eq!(out.status.code(), Some(1), "{v}");

    let out = wait(&format!("{repo}-nobody:v"));
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("does not exist") || stderr.contains("no ArtifactSync"),
        "{stderr}"
    );
}
