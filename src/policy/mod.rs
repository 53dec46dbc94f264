//! Immutability policy (OpenGitOps principle 2): does re-applying these manifests in a year
//! give the same result?
//!
//! [`lint_files`] (and [`lint_dir`]) run the [`rules`] over the objects of a tree and return a
//! [`Report`] of [`Finding`]s, each with a stable kebab-case rule id, a [`Severity`], the
//! file, document index, object and field path, and a message saying how to fix it. Parse
//! errors and duplicate objects are findings too (`parse-error`, `duplicate-object`), so one
//! run shows every problem instead of stopping at the first.
//!
//! A [`config::Policy`] (the `--policy-file`, schema in `schemas/policy.schema.json`) sets the
//! [`Mode`] used by `push` and `pull`, strictness, per-rule severity overrides and
//! allow-lists. [`image`] parses container image references, [`pin`] resolves image tags to
//! digests and rewrites them in a staged copy of a tree (`push --pin-images`).

pub mod config;
pub mod image;
pub mod pin;
pub mod rules;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::artifact::objects::{self, ContentMode, Object, ObjectsError};

pub use config::Policy;

/// How bad a finding is. Only `error` findings fail `lint` and refuse pushes and pulls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Reported, but does not fail anything.
    Warning,
    /// Fails `tresor lint` (exit 1) and, in `enforce` mode, refuses push and pull.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Warning => "warning",
            Self::Error => "error",
        })
    }
}

/// What `push` and `pull` do with findings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Refuse when there is a finding at error severity; print warnings.
    #[default]
    Enforce,
    /// Print every finding on stderr and carry on.
    Warn,
    /// Do not run the policy.
    Off,
}

/// One problem found in a tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Stable kebab-case rule id, e.g. `image-not-pinned`.
    pub rule: String,
    /// Severity after strictness and overrides.
    pub severity: Severity,
    /// File of the problem, relative to the tree, `/`-separated.
    pub file: String,
    /// 0-based document index in the file (`None` when the file could not be split).
    pub document: Option<usize>,
    /// 0-based index in `items` when the document is a `kind: List`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<usize>,
    /// 1-based line: where the document starts, or where a syntax error is.
    pub line: Option<usize>,
    /// The object, `Kind.group/namespace/name` (see [`objects::ObjectKey`]).
    pub object: Option<String>,
    /// Field path inside the object, e.g. `spec.template.spec.initContainers[0].image`.
    pub path: Option<String>,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl Finding {
    /// Sort key: file, document, item, path, rule.
    fn sort_key(&self) -> (&str, Option<usize>, Option<usize>, Option<&str>, &str) {
        (
            &self.file,
            self.document,
            self.item,
            self.path.as_deref(),
            &self.rule,
        )
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]: {}", self.severity, self.rule, self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        match (self.document, self.item) {
            (Some(document), Some(item)) => write!(f, " (document {document} item {item})")?,
            (Some(document), None) => write!(f, " (document {document})")?,
            _ => {}
        }
        if let Some(object) = &self.object {
            write!(f, ": {object}")?;
        }
        if let Some(path) = &self.path {
            write!(f, ": {path}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// The findings of one run, sorted by file, document, item, path and rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Every finding (warnings included).
    pub findings: Vec<Finding>,
    /// How many objects were checked.
    pub objects: usize,
}

impl Report {
    /// Number of findings at error severity.
    pub fn errors(&self) -> usize {
        self.count(Severity::Error)
    }

    /// Number of findings at warning severity.
    pub fn warnings(&self) -> usize {
        self.count(Severity::Warning)
    }

    fn count(&self, severity: Severity) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == severity)
            .count()
    }

    /// One line: `2 errors, 1 warning in 12 objects`.
    pub fn summary(&self) -> String {
        let plural = |n: usize, word: &str| {
            if n == 1 {
                format!("{n} {word}")
            } else {
                format!("{n} {word}s")
            }
        };
        format!(
            "{}, {} in {}",
            plural(self.errors(), "error"),
            plural(self.warnings(), "warning"),
            plural(self.objects, "object")
        )
    }

    /// Every finding on its own line, then the summary.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for finding in &self.findings {
            out.push_str(&finding.to_string());
            out.push('\n');
        }
        out.push_str(&self.summary());
        out.push('\n');
        out
    }
}

/// Errors of the policy itself (not findings): an unusable policy file, an unreadable tree,
/// an image that cannot be pinned.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The policy file could not be read.
    #[error("cannot read policy file {path}: {source}")]
    ReadPolicy {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The policy file is not valid (syntax, unknown field, unknown rule id, bad value).
    #[error("invalid policy file {path}: {message}; see schemas/policy.schema.json")]
    InvalidPolicy {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The tree could not be read (not a parse error: those are findings).
    #[error(transparent)]
    Tree(ObjectsError),
    /// Staging a copy of the tree for `--pin-images` failed.
    #[error("cannot stage {path} for --pin-images: {message}")]
    Stage {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// An image tag could not be resolved to a digest.
    #[error("cannot pin image {image}: {reason}")]
    Unresolvable {
        /// The image reference as written.
        image: String,
        /// Why (registry error, not found, …).
        reason: String,
    },
    /// A resolved image could not be written back into the YAML text.
    #[error("cannot pin images in {file}: {message}")]
    Rewrite {
        /// The file.
        file: String,
        /// What went wrong and what to do.
        message: String,
    },
}

impl PolicyError {
    /// Stable CamelCase reason for conditions, events, metrics and JSON output.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::ReadPolicy { .. } => "PolicyUnreadable",
            Self::InvalidPolicy { .. } => "InvalidPolicy",
            Self::Tree(e) => e.reason(),
            Self::Stage { .. } => "StageFailed",
            Self::Unresolvable { .. } => "ImageUnresolvable",
            Self::Rewrite { .. } => "PinRewriteFailed",
        }
    }
}

/// Lints the manifest files of a tree (relative path, bytes). Never fails: parse errors and
/// duplicates become findings.
pub fn lint_files(files: &[(String, Vec<u8>)], mode: ContentMode, policy: &Policy) -> Report {
    let scanned = objects::scan_tree(files, mode, |object| lint_object(&object, policy));
    report(scanned, policy)
}

/// Lints the tree under `dir` on all cores, reading each file only while it is parsed.
/// Fails only when the tree cannot be walked.
pub fn lint_dir(dir: &Path, mode: ContentMode, policy: &Policy) -> Result<Report, PolicyError> {
    let scanned = objects::scan_dir(dir, mode, |object| lint_object(&object, policy))
        .map_err(PolicyError::Tree)?;
    Ok(report(scanned, policy))
}

/// The findings for one object, with the policy's overrides and allow-lists applied.
pub fn lint_object(object: &Object, policy: &Policy) -> Vec<Finding> {
    let mut findings = Vec::new();
    rules::check(object, policy.strict, &mut findings);
    policy.apply(findings, std::slice::from_ref(object))
}

/// Builds the report from per-object findings and the tree's problems.
pub fn report(
    (per_object, errors): (Vec<Vec<Finding>>, Vec<ObjectsError>),
    policy: &Policy,
) -> Report {
    let problems: Vec<Finding> = errors.iter().filter_map(rules::object_error).collect();
    let objects = per_object.len();
    let mut findings = policy.apply(problems, &[]);
    findings.extend(per_object.into_iter().flatten());
    findings.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    Report { findings, objects }
}

/// What a gate decided: carry on (with warnings to show) or refuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to do (no findings, or mode `off`).
    Pass,
    /// Carry on, but show these findings on stderr.
    Warn(Vec<Finding>),
    /// Refuse: at least one finding at error severity in `enforce` mode. All findings.
    Refuse(Vec<Finding>),
}

/// Applies `mode` to `report`: `enforce` refuses on errors (warnings alone pass with a
/// notice), `warn` passes with every finding shown, `off` passes silently.
pub fn gate(report: Report, mode: Mode) -> Verdict {
    match mode {
        Mode::Off => Verdict::Pass,
        _ if report.findings.is_empty() => Verdict::Pass,
        Mode::Enforce if report.errors() > 0 => Verdict::Refuse(report.findings),
        _ => Verdict::Warn(report.findings),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lint as it was before the policy view: every object parsed in full.
    fn lint_full(files: &[(String, Vec<u8>)], mode: ContentMode, policy: &Policy) -> Report {
        let (objects, errors) = objects::parse_tree_all(files, mode);
        let per_object = objects.iter().map(|o| lint_object(o, policy)).collect();
        report((per_object, errors), policy)
    }

    /// A random but realistic object: one of the kinds the rules look at, its fields in
    /// random order, with pinned and unpinned images, labels the test policy allows, odd
    /// values and the occasional mistake.
    fn object(rng: &mut fastrand::Rng, n: usize) -> String {
        let pick = |rng: &mut fastrand::Rng, xs: &[&'static str]| xs[rng.usize(..xs.len())];
        let image = |rng: &mut fastrand::Rng| {
            pick(
                rng,
                &[
                    "nginx",
                    "nginx:latest",
                    "nginx:1.27",
                    "registry.example.com:5000/app:1",
                    "quay.io/prometheus/node:v1",
                    "ghcr.io/a/b:1@sha256:4f5f7f5d8b1e0d5c0a6b7e3c2d1f0e9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e",
                    "Not A Ref",
                    "12",
                    "!custom nginx:1",
                    "[a, b]",
                    "~",
                ],
            )
        };
        let containers = |rng: &mut fastrand::Rng, indent: &str| {
            let mut out = String::new();
            for list in ["containers", "initContainers", "ephemeralContainers"] {
                if rng.u8(0..3) == 0 {
                    continue;
                }
                out.push_str(&format!("{indent}{list}:\n"));
                for i in 0..rng.usize(1..3) {
                    out.push_str(&format!(
                        "{indent}- name: c{i}\n{indent}  image: {}\n{indent}  env: [{{name: A, value: b}}]\n",
                        image(rng)
                    ));
                }
            }
            out
        };
        let labels = pick(
            rng,
            &[
                "{}",
                "{tresor.dev/allow: plaintext-secret}",
                "{tier: legacy}",
                "{tier: web, app: x}",
            ],
        );
        let ns = pick(rng, &["", "  namespace: team\n"]);
        let (api, kind, spec) = match rng.u8(0..10) {
            0 => ("v1", "Pod", containers(rng, "  ")),
            1 => (
                "apps/v1",
                "Deployment",
                format!(
                    "  replicas: 2\n  template:\n    metadata: {{labels: {{a: b}}}}\n    spec:\n{}",
                    containers(rng, "      ")
                ),
            ),
            2 => (
                "batch/v1",
                "CronJob",
                format!(
                    "  jobTemplate:\n    spec:\n      template:\n        spec:\n{}",
                    containers(rng, "          ")
                ),
            ),
            3 => (
                "helm.toolkit.fluxcd.io/v2",
                "HelmRelease",
                pick(
                    rng,
                    &[
                        "  chart: {spec: {chart: a, version: 1.2.3}}\n",
                        "  chart: {spec: {chart: a, version: '>=1'}}\n",
                        "  chartRef: {kind: OCIRepository, name: x}\n",
                        "  interval: 1m\n",
                    ],
                )
                .to_string(),
            ),
            4 => (
                "source.toolkit.fluxcd.io/v1",
                pick(rng, &["OCIRepository", "GitRepository"]),
                pick(
                    rng,
                    &[
                        "  ref: {tag: v1}\n",
                        "  ref: {digest: 'sha256:00'}\n",
                        "  ref: {semver: '>=1'}\n",
                        "  ref: {branch: main}\n",
                        "  ref: {name: refs/tags/v1}\n",
                        "  ref: {commit: 0123456789012345678901234567890123456789}\n",
                        "  url: x\n",
                    ],
                )
                .to_string(),
            ),
            5 => (
                "argoproj.io/v1alpha1",
                "Application",
                pick(
                    rng,
                    &[
                        "  source: {repoURL: x, targetRevision: HEAD}\n",
                        "  source: {chart: c, targetRevision: 1.2.3}\n",
                        "  sources:\n  - {repoURL: x, targetRevision: main}\n  - {chart: c}\n",
                        "  source: {targetRevision: 0123456789012345678901234567890123456789}\n",
                    ],
                )
                .to_string(),
            ),
            6 => ("v1", "Secret", String::new()),
            7 => ("v1", "PodTemplate", String::new()),
            _ => ("v1", "ConfigMap", String::new()),
        };
        let mut fields = vec![
            format!("apiVersion: {api}\n"),
            format!("kind: {kind}\n"),
            format!("metadata:\n  name: o{n}\n{ns}  labels: {labels}\n"),
        ];
        if !spec.is_empty() {
            fields.push(format!("spec:\n{spec}"));
        }
        if kind == "PodTemplate" {
            fields.push(format!("template:\n  spec:\n{}", containers(rng, "    ")));
        }
        if matches!(kind, "Secret" | "ConfigMap") || rng.u8(0..5) == 0 {
            let data = pick(
                rng,
                &[
                    "{}",
                    "{a: b}",
                    "''",
                    "~",
                    "[x]",
                    "!!map {}",
                    "{a: 'ENC[AES256_GCM,data:a,iv:b,tag:c,type:str]', b: plain, c: '', d: 1}",
                    "{x_unencrypted: plain, y: 'ENC[AES256_GCM,data:a,iv:b,tag:c,type:str]'}",
                ],
            );
            fields.push(format!("{}: {data}\n", pick(rng, &["data", "stringData"])));
        }
        if kind == "Secret" && rng.bool() {
            let rule = pick(
                rng,
                &[
                    "{}",
                    "{encrypted_regex: '^(data|stringData)$'}",
                    "{unencrypted_suffix: _unencrypted}",
                    "{encrypted_suffix: _enc}",
                    "{unencrypted_regex: '^a$', encrypted_regex: x}",
                    "{encrypted_comment_regex: x}",
                ],
            );
            fields.push(format!("sops: {rule}\n"));
        }
        match rng.u8(0..40) {
            0 => fields.push("metadata: {name: again}\n".into()),
            1 => fields.push("status: {x: 1, x: 2}\n".into()),
            2 => fields.push("spec: !weird\n  template: {}\n".into()),
            _ => {}
        }
        rng.shuffle(&mut fields);
        fields.concat()
    }

    #[test]
    fn the_policy_view_finds_exactly_what_the_full_parse_finds() {
        let mut rng = fastrand::Rng::with_seed(0x11a7);
        let policies = [
            Policy::default(),
            Policy::parse(
                &std::fs::read_to_string(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/testdata/lint/policy.yaml"
                ))
                .unwrap(),
            )
            .unwrap(),
        ];
        let mut findings = 0;
        let mut sops = 0;
        for round in 0..25 {
            let files: Vec<(String, Vec<u8>)> = (0..rng.usize(1..6))
                .map(|f| {
                    let docs: Vec<String> = (0..rng.usize(1..8))
                        .map(|d| object(&mut rng, (round * 100 + f * 10 + d) % 150))
                        .collect();
                    (format!("d/f{f}.yaml"), docs.join("---\n").into_bytes())
                })
                .collect();
            for policy in &policies {
                let fast = lint_files(&files, ContentMode::Kubernetes, policy);
                let full = lint_full(&files, ContentMode::Kubernetes, policy);
                assert_eq!(fast, full, "{files:?}");
                findings += fast.findings.len();
                sops += fast
                    .findings
                    .iter()
                    .filter(|f| f.rule == rules::SOPS_PLAINTEXT_VALUE)
                    .count();
                let fast = lint_files(&files, ContentMode::Files, policy);
                assert_eq!(fast, lint_full(&files, ContentMode::Files, policy));
            }
        }
        assert!(findings > 200, "only {findings} findings");
        assert!(sops > 5, "only {sops} sops-plaintext-value findings");
    }

    #[test]
    fn merge_keys_spelt_any_way_are_seen_by_the_lint_as_by_apply() {
        let base = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n";
        let spec = "{spec: {template: {spec: {containers: [{name: a, image: nginx}]}}}}";
        let keys = [
            "<<: ",
            "\"\\x3c<\": ",
            "\"\\u003C\\u003c\": ",
            // An escaped line break joins the two lines; multi-line keys must be explicit.
            "? \"<\\\n  <\"\n: ",
        ];
        for key in keys {
            for end in ["", "...\n"] {
                let text = format!("{base}{key}{spec}\n{end}");
                let files = vec![("a.yaml".to_string(), text.clone().into_bytes())];
                let objects = objects::parse_tree(&files, ContentMode::Kubernetes).unwrap();
                assert!(objects[0].value.get("spec").is_some(), "not merged: {text}");
                let report = lint_files(&files, ContentMode::Kubernetes, &Policy::default());
                assert_eq!(
                    report,
                    lint_full(&files, ContentMode::Kubernetes, &Policy::default())
                );
                assert_eq!(
                    report
                        .findings
                        .iter()
                        .map(|f| f.rule.as_str())
                        .collect::<Vec<_>>(),
                    [rules::IMAGE_LATEST],
                    "{text}"
                );
            }
        }
    }
}
