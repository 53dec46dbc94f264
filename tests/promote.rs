//! `tresor promote` (issue 15) against the real local registry and OCI layouts: the source
//! must satisfy the target's trust policy without the approver, the approver's signature and
//! a signed promotion record are added, content is copied across repositories and layouts
//! with its digest and signatures, the tag moves last, and a dry run writes nothing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::{fixture_tree, json_of, stderr_of_failure, stdout_of, TestRegistry};
use tresor::signing::keys::{self, PublicKey};

const PASSWORD: &str = "promote-password";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A key pair in `dir/name/`: (private, public).
fn keypair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    let files = keys::write_key_pair(&d, PASSWORD.as_bytes()).unwrap();
    (files.private_key, files.public_key)
}

fn fingerprint(public: &Path) -> String {
    format!(
        "sha256:{}",
        PublicKey::from_file(public).unwrap().fingerprint()
    )
}

/// The world of one test: a CI key, an approver key and the prod policy (`require: all`
/// over both).
struct World {
    work: tempfile::TempDir,
    registry: TestRegistry,
    ci: (PathBuf, PathBuf),
    approver: (PathBuf, PathBuf),
    policy: PathBuf,
}

impl World {
    fn new() -> Self {
        let work = tempfile::tempdir().unwrap();
        let ci = keypair(work.path(), "ci");
        let approver = keypair(work.path(), "approver");
        let policy = work.path().join("prod-trust.yaml");
        std::fs::write(
            &policy,
            format!(
                "apiVersion: tresor.dev/v1alpha1\nkind: TrustPolicy\nmetadata:\n  name: prod\n\
                 spec:\n  authorities:\n    - name: ci\n      key:\n        path: {}\n    \
                 - name: approver\n      key:\n        path: {}\n  require: all\n",
                s(&ci.1),
                s(&approver.1)
            ),
        )
        .unwrap();
        Self {
            work,
            registry: TestRegistry::plain(),
            ci,
            approver,
            policy,
        }
    }

    /// `tresor ARGS` with the registry's flags and the key password.
    fn tresor(&self, args: &[&str]) -> assert_cmd::Command {
        let mut cmd = self.registry.tresor(args);
        cmd.env("COSIGN_PASSWORD", PASSWORD);
        cmd
    }

    /// Pushes `tree` to `reference`, signed by CI with provenance unless `signed` is false;
    /// returns the digest.
    fn push(&self, tree: &Path, reference: &str, signed: bool) -> String {
        let mut args = vec!["push", s(tree), reference, "--format", "json"];
        if signed {
            args.extend(["--sign-key", s(&self.ci.0), "--provenance"]);
        }
        json_of(self.tresor(&args))["digest"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// `tresor promote SRC --to TO --key approver --policy prod` plus `extra`.
    fn promote(&self, source: &str, to: &str, extra: &[&str]) -> assert_cmd::Command {
        let mut args = vec![
            "promote",
            source,
            "--to",
            to,
            "--key",
            s(&self.approver.0),
            "--policy",
            s(&self.policy),
        ];
        args.extend(extra);
        self.tresor(&args)
    }

    /// `tresor verify REF --policy prod [--attestation] --format json`.
    fn verify(&self, reference: &str, attestation: bool) -> assert_cmd::Command {
        let mut args = vec![
            "verify",
            reference,
            "--policy",
            s(&self.policy),
            "--format",
            "json",
        ];
        if attestation {
            args.push("--attestation");
        }
        self.tresor(&args)
    }

    /// Every tag of `repository` with its digest (cosign's included), or `None` when the
    /// repository does not exist.
    fn tags(&self, repository: &str) -> Option<Vec<(String, String)>> {
        let out = self
            .tresor(&["list", repository, "--all", "--format", "json"])
            .output()
            .unwrap();
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains("not found") || stderr.contains("no such"),
                "{stderr}"
            );
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        Some(
            v.as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    (
                        e["tag"].as_str().unwrap().to_string(),
                        e["digest"].as_str().unwrap().to_string(),
                    )
                })
                .collect(),
        )
    }

    /// The digest `tag` points at in `repository`, if any.
    fn tag(&self, repository: &str, tag: &str) -> Option<String> {
        self.tags(repository)?
            .into_iter()
            .find(|(t, _)| t == tag)
            .map(|(_, d)| d)
    }

    /// A second manifest tree (another digest than the fixture).
    fn other_tree(&self) -> PathBuf {
        let tree = self.work.path().join("tree-v2");
        common::copy_tree(&fixture_tree(), &tree);
        std::fs::write(
            tree.join("extra.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\ndata:\n  k: v2\n",
        )
        .unwrap();
        tree
    }
}

/// The recipe of docs/promotion.md on one repository: CI pushes `:staging` signed (with
/// provenance); prod's policy (`require: all` over CI and the approver) refuses it until the
/// approver promotes it; then `:prod` exists at the same digest, `tresor verify --policy`
/// passes with both signers, and the promotion record says who, from, to, when and why.
#[test]
fn promote_with_ci_and_approver_satisfies_require_all_and_records_the_promotion() {
    let w = World::new();
    let repo = w.registry.repo("promote");
    let staging = format!("{repo}:staging");
    let prod = format!("{repo}:prod");
    let digest = w.push(&fixture_tree(), &staging, true);

    // CI alone does not satisfy prod.
    let err = stderr_of_failure(w.verify(&staging, false), 1);
    assert!(err.contains("requires all (2), satisfied by 1"), "{err}");

    let before = SystemTime::now() - Duration::from_secs(5);
    let out = w
        .promote(
            &staging,
            &prod,
            &["--reason", "CAB-1234", "--format", "json"],
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("Resolved {staging} to {digest}")),
        "{stderr}"
    );
    let o: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(o["digest"], digest.as_str());
    assert_eq!(o["target"], format!("{prod}@{digest}"));
    assert_eq!(o["tag_moved"], true);
    assert_eq!(o["dry_run"], false);
    assert_eq!(o["cross_repository"], false);
    assert!(o["previous_digest"].is_null());
    assert_eq!(o["verified_require"], "all (1)");
    assert_eq!(o["verified_by"], serde_json::json!(["ci"]));
    assert_eq!(o["approver_authority"], "approver");
    assert_eq!(o["approver_key"], fingerprint(&w.approver.1).as_str());
    assert_eq!(o["signature"]["signatures"], 2, "CI's and the approver's");
    assert_eq!(
        o["attestation"]["predicate_type"],
        "https://tresor.dev/promotion/v1"
    );
    assert_eq!(w.tag(&repo, "prod").as_deref(), Some(digest.as_str()));

    // prod's policy now holds, with both signers.
    let v = json_of(w.verify(&prod, false));
    assert_eq!(v["digest"], digest.as_str());
    assert_eq!(v["satisfied"], serde_json::json!(["ci", "approver"]));

    // The promotion record: CI's provenance and the approver's record both verify.
    let a = json_of(w.verify(&prod, true));
    let promotions = a["promotions"].as_array().unwrap();
    assert_eq!(promotions.len(), 1, "{a}");
    let p = &promotions[0];
    assert_eq!(p["authority"], "approver");
    assert_eq!(p["from"]["reference"], staging.as_str());
    assert_eq!(p["from"]["digest"], digest.as_str());
    assert_eq!(p["to"]["reference"], prod.as_str());
    assert!(p["to"]["previousDigest"].is_null());
    assert_eq!(p["approver"]["key"], fingerprint(&w.approver.1).as_str());
    assert_eq!(p["reason"], "CAB-1234");
    let time = humantime::parse_rfc3339(p["time"].as_str().unwrap()).unwrap();
    assert!(time >= before && time <= SystemTime::now() + Duration::from_secs(5));
    let types: Vec<&str> = a["statements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["predicateType"].as_str().unwrap())
        .collect();
    assert!(
        types.contains(&"https://slsa.dev/provenance/v1"),
        "{types:?}"
    );
    assert!(
        types.contains(&"https://tresor.dev/promotion/v1"),
        "{types:?}"
    );
    let subject = &a["statements"][types
        .iter()
        .position(|t| *t == "https://tresor.dev/promotion/v1")
        .unwrap()]["subject"][0];
    assert_eq!(
        format!("sha256:{}", subject["digest"]["sha256"].as_str().unwrap()),
        digest
    );

    // The same in text.
    let text = stdout_of(w.tresor(&["verify", &prod, "--policy", s(&w.policy), "--attestation"]));
    assert!(
        text.contains(&format!(
            "approved by approver (key {})",
            fingerprint(&w.approver.1)
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("from       {staging} ({digest})")),
        "{text}"
    );
    assert!(text.contains(&format!("to         {prod}")), "{text}");
    assert!(text.contains("reason     CAB-1234"), "{text}");

    // Promoting a new version moves the tag and records the one it replaced.
    let v2 = w.push(&w.other_tree(), &format!("{repo}:v2"), true);
    let o = json_of(w.promote(&format!("{repo}@{v2}"), &prod, &["--format", "json"]));
    assert_eq!(o["previous_digest"], digest.as_str());
    assert_eq!(o["record"]["to"]["previousDigest"], digest.as_str());
    assert!(o["record"].get("reason").is_none());
    assert_eq!(w.tag(&repo, "prod").as_deref(), Some(v2.as_str()));
}

/// The tag never moves when the policy is not met: without CI's signature (unsigned, or
/// signed only by the approver) the promotion is refused with exit code 1, the error names
/// what is missing, nothing is signed and `:prod` stays where it was (or absent).
#[test]
fn promote_without_the_ci_signature_is_refused_and_the_tag_is_not_moved() {
    let w = World::new();
    let repo = w.registry.repo("promote-refused");
    let unsigned = w.push(&fixture_tree(), &format!("{repo}:staging"), false);
    let err = stderr_of_failure(
        w.promote(&format!("{repo}:staging"), &format!("{repo}:prod"), &[]),
        1,
    );
    assert!(err.contains("without the approver"), "{err}");
    assert!(err.contains("is not signed"), "{err}");
    let tags = w.tags(&repo).unwrap();
    assert_eq!(
        tags,
        vec![("staging".to_string(), unsigned.clone())],
        "no prod tag, no signature or attestation written"
    );

    // A good version in prod, then one signed only by the approver: refused, prod unchanged.
    let good = w.push(&w.other_tree(), &format!("{repo}:good"), true);
    stdout_of(w.promote(&format!("{repo}:good"), &format!("{repo}:prod"), &[]));
    assert_eq!(w.tag(&repo, "prod").as_deref(), Some(good.as_str()));
    stdout_of(w.tresor(&[
        "sign",
        &format!("{repo}@{unsigned}"),
        "--key",
        s(&w.approver.0),
    ]));
    let err = stderr_of_failure(
        w.promote(&format!("{repo}:staging"), &format!("{repo}:prod"), &[]),
        1,
    );
    assert!(err.contains("no valid signature"), "{err}");
    assert!(err.contains("ci (key sha256:"), "{err}");
    assert_eq!(w.tag(&repo, "prod").as_deref(), Some(good.as_str()));

    // Without --policy or --verify-key nothing is checked, so nothing happens (exit 2).
    let err = stderr_of_failure(
        w.tresor(&[
            "promote",
            &format!("{repo}:good"),
            "--to",
            &format!("{repo}:prod2"),
            "--key",
            s(&w.approver.0),
        ]),
        2,
    );
    assert!(
        err.contains("--policy FILE") && err.contains("--verify-key"),
        "{err}"
    );
    // --verify-key with only the approver's own key: nobody else vouches (exit 2).
    let err = stderr_of_failure(
        w.tresor(&[
            "promote",
            &format!("{repo}:good"),
            "--to",
            &format!("{repo}:prod2"),
            "--key",
            s(&w.approver.0),
            "--verify-key",
            s(&w.approver.1),
        ]),
        2,
    );
    assert!(err.contains("no authority besides the approver"), "{err}");
    // The target must be a tag, and not the source's own.
    let err = stderr_of_failure(
        w.promote(&format!("{repo}:good"), &format!("{repo}@{good}"), &[]),
        2,
    );
    assert!(err.contains("give the target as a tag"), "{err}");
    let err = stderr_of_failure(
        w.promote(&format!("{repo}:good"), &format!("{repo}:good"), &[]),
        2,
    );
    assert!(err.contains("is the source itself"), "{err}");
    // --verify-key with CI's key works like the policy without the approver.
    stdout_of(w.tresor(&[
        "promote",
        &format!("{repo}:good"),
        "--to",
        &format!("{repo}:prod2"),
        "--key",
        s(&w.approver.0),
        "--verify-key",
        s(&w.ci.1),
    ]));
    assert_eq!(w.tag(&repo, "prod2").as_deref(), Some(good.as_str()));
}

/// Across repositories and into an OCI layout: manifest, config, layer, signatures and
/// attestations are copied with the digest kept, the approver signs in the target, and the
/// prod policy verifies there; the layout can be pulled from.
#[test]
fn promote_to_another_repository_and_to_a_layout_keeps_digest_and_signatures() {
    let w = World::new();
    let staging_repo = w.registry.repo("promote-src");
    let prod_repo = w.registry.repo("promote-dst");
    let staging = format!("{staging_repo}:staging");
    let digest = w.push(&fixture_tree(), &staging, true);

    let o = json_of(w.promote(
        &staging,
        &format!("{prod_repo}:prod"),
        &["--format", "json"],
    ));
    assert_eq!(o["cross_repository"], true);
    assert_eq!(o["copied"]["manifests"], 1);
    assert_eq!(o["copied"]["blobs_copied"], 2, "config and layer");
    assert_eq!(o["copied"]["signatures"], 1);
    assert_eq!(o["copied"]["attestations"], 1);
    assert_eq!(w.tag(&prod_repo, "prod").as_deref(), Some(digest.as_str()));
    let v = json_of(w.verify(&format!("{prod_repo}:prod"), false));
    assert_eq!(v["satisfied"], serde_json::json!(["ci", "approver"]));
    // The source repository got nothing new.
    let src_tags = w.tags(&staging_repo).unwrap();
    assert_eq!(
        src_tags.iter().filter(|(t, _)| t.ends_with(".sig")).count(),
        1
    );
    assert!(!src_tags.iter().any(|(t, _)| t == "prod"));

    // Registry -> layout.
    let layout = w.work.path().join("prod-layout");
    let to = format!("oci-layout:{}:prod", layout.display());
    let o = json_of(w.promote(
        &staging,
        &to,
        &["--format", "json", "--reason", "offline site"],
    ));
    assert_eq!(o["digest"], digest.as_str());
    assert_eq!(o["tag_moved"], true);
    let v = json_of(w.verify(&to, false));
    assert_eq!(v["digest"], digest.as_str());
    assert_eq!(v["satisfied"], serde_json::json!(["ci", "approver"]));
    let a = json_of(w.verify(&to, true));
    assert_eq!(a["promotions"][0]["to"]["reference"], to.as_str());
    assert_eq!(a["promotions"][0]["reason"], "offline site");
    let dest = w.work.path().join("pulled");
    stdout_of(w.tresor(&[
        "pull",
        &to,
        "--trust-policy",
        s(&w.policy),
        "--output",
        s(&dest),
    ]));
    assert_eq!(common::read_tree(&dest), common::read_tree(&fixture_tree()));

    // The host agent records who approved what it applied (from the verified record).
    let site = w.work.path().join("site");
    let status_file = w.work.path().join("status.json");
    let line = stdout_of(w.tresor(&[
        "sync",
        &to,
        "--dir",
        s(&site),
        "--trust-policy",
        s(&w.policy),
        "--once",
        "--status-file",
        s(&status_file),
        "--cache-dir",
        s(&w.work.path().join("cache")),
    ]));
    assert!(
        line.contains(&format!(
            "; approved by approver (key {}) at ",
            fingerprint(&w.approver.1)
        )),
        "{line}"
    );
    let status: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&status_file).unwrap()).unwrap();
    assert_eq!(status["approval"]["authority"], "approver");
    assert_eq!(status["approval"]["reason"], "offline site");
    assert_eq!(status["approval"]["from"]["digest"], digest.as_str());

    // Layout -> another layout, by digest (what an air-gapped site does next).
    let second = w.work.path().join("second-layout");
    let to2 = format!("oci-layout:{}:prod", second.display());
    stdout_of(w.promote(
        &format!("oci-layout:{}@{digest}", layout.display()),
        &to2,
        &[],
    ));
    let v = json_of(w.verify(&to2, false));
    assert_eq!(v["digest"], digest.as_str());
}

/// `--dry-run` verifies and reports, and writes nothing: no tag, no signature, no
/// attestation, no copied blob, in the same repository and across repositories.
#[test]
fn dry_run_reports_and_writes_nothing() {
    let w = World::new();
    let repo = w.registry.repo("promote-dry");
    let other = w.registry.repo("promote-dry-dst");
    let digest = w.push(&fixture_tree(), &format!("{repo}:staging"), true);
    let before = w.tags(&repo).unwrap();

    let text = stdout_of(w.promote(
        &format!("{repo}:staging"),
        &format!("{repo}:prod"),
        &["--dry-run", "--reason", "try"],
    ));
    assert!(
        text.starts_with(&format!("Would promote {repo}:staging ({digest})")),
        "{text}"
    );
    assert!(text.contains("dry run: nothing was written"), "{text}");
    assert_eq!(w.tags(&repo).unwrap(), before);

    let o = json_of(w.promote(
        &format!("{repo}:staging"),
        &format!("{other}:prod"),
        &["--dry-run", "--format", "json"],
    ));
    assert_eq!(o["dry_run"], true);
    assert_eq!(o["tag_moved"], false);
    assert!(o["signature"].is_null() && o["attestation"].is_null());
    assert_eq!(o["copied"]["blobs_copied"], 2);
    assert_eq!(o["copied"]["signatures"], 1);
    assert_eq!(o["record"]["to"]["reference"], format!("{other}:prod"));
    assert_eq!(
        w.tags(&other),
        None,
        "the target repository was not created"
    );
    assert_eq!(w.tags(&repo).unwrap(), before);

    // Into a layout: the directory is not even created.
    let layout = w.work.path().join("dry-layout");
    stdout_of(w.promote(
        &format!("{repo}:staging"),
        &format!("oci-layout:{}:prod", layout.display()),
        &["--dry-run"],
    ));
    assert!(!layout.exists());

    // A dry run is refused like a real one when the policy is not met (exit 1).
    w.push(&w.other_tree(), &format!("{repo}:unsigned"), false);
    stderr_of_failure(
        w.promote(
            &format!("{repo}:unsigned"),
            &format!("{repo}:prod"),
            &["--dry-run"],
        ),
        1,
    );
}

/// Across registries: from the plain registry to the one with basic auth (credentials from
/// `--creds`, sent where they are asked for), digest and signatures kept.
#[test]
fn promote_across_registries_keeps_digest_and_signatures() {
    let w = World::new();
    let auth = TestRegistry::auth();
    let source = format!("{}:staging", w.registry.repo("promote-xreg-src"));
    let target = format!("{}:prod", auth.repo("promote-xreg-dst"));
    let digest = w.push(&fixture_tree(), &source, true);
    let with_auth = |args: &[&str]| {
        let mut cmd = auth.tresor(args);
        cmd.env("COSIGN_PASSWORD", PASSWORD);
        cmd
    };
    let o = json_of(with_auth(&[
        "promote",
        &source,
        "--to",
        &target,
        "--key",
        s(&w.approver.0),
        "--policy",
        s(&w.policy),
        "--format",
        "json",
    ]));
    assert_eq!(o["digest"], digest.as_str());
    assert_eq!(o["copied"]["blobs_copied"], 2);
    assert_eq!(o["tag_moved"], true);
    let v = json_of(with_auth(&[
        "verify",
        &target,
        "--policy",
        s(&w.policy),
        "--format",
        "json",
    ]));
    assert_eq!(v["digest"], digest.as_str());
    assert_eq!(v["satisfied"], serde_json::json!(["ci", "approver"]));
}
