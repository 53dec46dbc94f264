//! The rules: what makes a manifest tree give a different result when applied again later.
//!
//! Each rule has a stable kebab-case id ([`RULES`]). Rules look at one parsed object at a
//! time and push [`Finding`]s with their default severity; `strict` raises the "can be moved"
//! warnings (a tag without digest, a plaintext Secret, …) to errors. Overrides and
//! allow-lists are applied afterwards by [`super::config::Policy::apply`].

use serde_norway::Value;

use super::image::ImageRef;
use super::{Finding, Severity};
use crate::artifact::objects::{Object, ObjectsError};

/// An image without a digest whose tag is not `latest`.
pub const IMAGE_NOT_PINNED: &str = "image-not-pinned";
/// An image without a digest with tag `latest` or no tag.
pub const IMAGE_LATEST: &str = "image-latest";
/// An image reference that does not parse.
pub const IMAGE_INVALID: &str = "image-invalid";
/// A Flux HelmRelease without an exact chart version.
pub const HELMRELEASE_CHART_VERSION: &str = "helmrelease-chart-version";
/// A Flux OCIRepository/GitRepository following a tag, branch or range.
pub const FLUX_SOURCE_REF_NOT_PINNED: &str = "flux-source-ref-not-pinned";
/// An Argo CD Application following HEAD, a branch, a tag or a range.
pub const ARGOCD_TARGET_REVISION: &str = "argocd-target-revision";
/// A Secret with `data` or `stringData` in the tree.
pub const PLAINTEXT_SECRET: &str = "plaintext-secret";
/// A Secret with SOPS metadata whose values are not all encrypted.
pub const SOPS_PLAINTEXT_VALUE: &str = "sops-plaintext-value";
/// A file or document that does not parse, or is not a Kubernetes object.
pub const PARSE_ERROR: &str = "parse-error";
/// Two objects with the same group, kind, namespace and name.
pub const DUPLICATE_OBJECT: &str = "duplicate-object";

/// Every rule id with a one-line description (the ids a policy file may name).
pub const RULES: &[(&str, &str)] = &[
    (IMAGE_NOT_PINNED, "container image with a tag but no digest (warning; error when strict)"),
    (IMAGE_LATEST, "container image with tag latest or no tag, and no digest (error)"),
    (IMAGE_INVALID, "container image reference that does not parse (error)"),
    (HELMRELEASE_CHART_VERSION, "Flux HelmRelease without an exact chart version (error)"),
    (
        FLUX_SOURCE_REF_NOT_PINNED,
        "Flux OCIRepository/GitRepository following a branch, range or tag instead of a digest or commit",
    ),
    (
        ARGOCD_TARGET_REVISION,
        "Argo CD Application following HEAD, a branch, a range or a tag instead of a commit or exact version",
    ),
    (
        PLAINTEXT_SECRET,
        "Secret with data or stringData in the tree, not SOPS-encrypted (warning; error when strict)",
    ),
    (
        SOPS_PLAINTEXT_VALUE,
        "Secret with SOPS metadata and a value its encryption rule says is encrypted, in plain text (error)",
    ),
    (PARSE_ERROR, "file or document that does not parse or is not a Kubernetes object (error)"),
    (DUPLICATE_OBJECT, "two objects with the same group, kind, namespace and name (error)"),
];

/// An image reference in a pod template: where it is and what it says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageUse {
    /// Field path, e.g. `spec.template.spec.containers[0].image`.
    pub path: String,
    /// The reference as written.
    pub image: String,
}

/// Where the pod spec of a workload kind is, or `None` when the object has none.
fn pod_spec_path(object: &Object) -> Option<&'static [&'static str]> {
    let group = object.key.group.as_str();
    Some(match (group, object.key.kind.as_str()) {
        ("", "Pod") => &["spec"],
        ("", "PodTemplate") => &["template", "spec"],
        ("", "ReplicationController")
        | ("apps" | "extensions", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet")
        | ("batch", "Job")
        | ("argoproj.io", "Rollout") => &["spec", "template", "spec"],
        ("batch", "CronJob") => &["spec", "jobTemplate", "spec", "template", "spec"],
        _ => return None,
    })
}

/// Every container image in the object's pod template (containers, initContainers,
/// ephemeralContainers), in that order. Empty for objects without a pod template.
pub fn pod_images(object: &Object) -> Vec<ImageUse> {
    let Some(prefix) = pod_spec_path(object) else {
        return Vec::new();
    };
    let mut spec = Some(&object.value);
    for key in prefix {
        spec = spec.and_then(|v| v.get(*key));
    }
    let Some(spec) = spec else {
        return Vec::new();
    };
    let base = prefix.join(".");
    let mut out = Vec::new();
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        let Some(containers) = spec.get(list).and_then(Value::as_sequence) else {
            continue;
        };
        for (i, container) in containers.iter().enumerate() {
            let path = format!("{base}.{list}[{i}].image");
            match container.get("image") {
                Some(Value::String(image)) => out.push(ImageUse {
                    path,
                    image: image.clone(),
                }),
                Some(other) if !other.is_null() => out.push(ImageUse {
                    path,
                    image: scalar_text(other),
                }),
                _ => {}
            }
        }
    }
    out
}

fn scalar_text(value: &Value) -> String {
    serde_norway::to_string(value)
        .map(|s| s.trim_end().to_string())
        .unwrap_or_default()
}

/// Turns a parse or duplicate problem into a finding (`None` for I/O problems, which are
/// errors of the run, not findings).
pub fn object_error(error: &ObjectsError) -> Option<Finding> {
    let finding = |rule: &str, file: &str, document: Option<usize>, item: Option<usize>| {
        // The error names the file (and document) first; the finding has fields for those.
        let message = error.to_string();
        let mut rest = message.as_str();
        for prefix in [format!("{file}:"), " ".to_string()] {
            rest = rest.strip_prefix(prefix.as_str()).unwrap_or(rest);
        }
        if let Some(document) = document {
            let prefix = format!("document {document}: ");
            rest = rest.strip_prefix(prefix.as_str()).unwrap_or(rest);
        }
        Finding {
            rule: rule.to_string(),
            severity: Severity::Error,
            file: file.to_string(),
            document,
            item,
            line: None,
            object: None,
            path: None,
            message: rest.to_string(),
        }
    };
    Some(match error {
        ObjectsError::InvalidYaml {
            file, line, column, ..
        }
        | ObjectsError::InvalidJson {
            file, line, column, ..
        } => {
            let found = finding(PARSE_ERROR, file, None, None);
            let position = format!("{line}:{column}: ");
            Finding {
                line: Some(*line),
                message: found
                    .message
                    .strip_prefix(position.as_str())
                    .unwrap_or(&found.message)
                    .to_string(),
                ..found
            }
        }
        ObjectsError::MissingField {
            file,
            document,
            item,
            ..
        }
        | ObjectsError::NotAString {
            file,
            document,
            item,
            ..
        }
        | ObjectsError::NotAnObject {
            file,
            document,
            item,
        } => finding(PARSE_ERROR, file, Some(*document), *item),
        ObjectsError::Duplicate { key, second, .. } => Finding {
            object: Some(key.to_string()),
            ..finding(
                DUPLICATE_OBJECT,
                &second.file,
                Some(second.document),
                second.item,
            )
        },
        ObjectsError::TooLarge { file, .. } => finding(PARSE_ERROR, file, None, None),
        ObjectsError::Read { .. } => return None,
    })
}

/// Runs every rule on `object`, pushing findings with default severities (`strict` raises
/// the "can be moved" warnings to errors).
pub fn check(object: &Object, strict: bool, out: &mut Vec<Finding>) {
    let movable = if strict {
        Severity::Error
    } else {
        Severity::Warning
    };
    let mut push = |rule: &str, severity: Severity, path: String, message: String| {
        out.push(Finding {
            rule: rule.to_string(),
            severity,
            file: object.file.clone(),
            document: Some(object.document),
            item: object.item,
            line: Some(object.line),
            object: Some(object.key.to_string()),
            path: Some(path),
            message,
        });
    };

    for ImageUse { path, image } in pod_images(object) {
        match ImageRef::parse(&image) {
            Err(e) => push(
                IMAGE_INVALID,
                Severity::Error,
                path,
                format!("{e}; write a full reference like registry.example.com/app:1.2.3@sha256:…"),
            ),
            Ok(r) if r.is_pinned() => {}
            Ok(r) if r.tag.is_none() || r.tag.as_deref() == Some("latest") => push(
                IMAGE_LATEST,
                Severity::Error,
                path,
                format!(
                    "image {image:?} follows {} and has no digest, so every pull may run \
                     different code; pin it to a version and digest (name:1.2.3@sha256:…), \
                     e.g. with `tresor push --pin-images`",
                    if r.tag.is_none() {
                        "no tag (latest)"
                    } else {
                        "the latest tag"
                    }
                ),
            ),
            Ok(_) => push(
                IMAGE_NOT_PINNED,
                movable,
                path,
                format!(
                    "image {image:?} has a tag but no digest, and tags can be moved; pin it as \
                     {image}@sha256:… (`tresor push --pin-images` does this in the pushed copy)"
                ),
            ),
        }
    }

    let group = object.key.group.as_str();
    let spec = object.value.get("spec");
    match (group, object.key.kind.as_str()) {
        ("helm.toolkit.fluxcd.io", "HelmRelease") => helm_release(spec, &mut push),
        ("source.toolkit.fluxcd.io", "OCIRepository") => oci_repository(spec, movable, &mut push),
        ("source.toolkit.fluxcd.io", "GitRepository") => git_repository(spec, movable, &mut push),
        ("argoproj.io", "Application") => argocd_application(spec, movable, &mut push),
        ("", "Secret") => match object.value.get("sops") {
            Some(sops) => sops_secret(object, sops, &mut push),
            None => plaintext_secret(object, movable, &mut push),
        },
        _ => {}
    }
}

fn plaintext_secret(object: &Object, movable: Severity, push: &mut Push<'_>) {
    for field in ["data", "stringData"] {
        let filled = match object.value.get(field) {
            Some(Value::Mapping(m)) => !m.is_empty(),
            Some(Value::Null) | None => false,
            Some(_) => true,
        };
        if filled {
            push(
                PLAINTEXT_SECRET,
                movable,
                field.to_string(),
                format!(
                    "Secret holds {field} in plain text (base64 is not encryption) and \
                     anyone who can pull the artifact can read it; use Sealed Secrets, \
                     External Secrets Operator or SOPS-encrypted files instead"
                ),
            );
        }
    }
}

/// A Secret that SOPS encrypted: every value its rule says is encrypted must be an
/// `ENC[AES256_GCM,…]` value (empty strings and nulls stay as they are in sops).
fn sops_secret(object: &Object, sops: &Value, push: &mut Push<'_>) {
    use crate::secrets::sops::{Metadata, Node, SopsError};
    let rule = match Node::from_yaml(sops).map(|node| Metadata::rule(&node)) {
        Some(Ok(rule)) => rule,
        // A comment rule needs the comments; decryption refuses those files by name.
        Some(Err(SopsError::Unsupported(_))) => return,
        Some(Err(e)) => {
            push(
                SOPS_PLAINTEXT_VALUE,
                Severity::Error,
                "sops".into(),
                format!("{e}; encrypt the file again with sops"),
            );
            return;
        }
        None => return,
    };
    for field in ["data", "stringData"] {
        let Some(Value::Mapping(values)) = object.value.get(field) else {
            continue;
        };
        for (key, value) in values {
            let Some(key) = key.as_str() else { continue };
            let encrypted = match value {
                Value::String(s) => s.is_empty() || s.starts_with(crate::secrets::sops::ENC_PREFIX),
                Value::Null | Value::Mapping(_) | Value::Sequence(_) => true,
                _ => false,
            };
            if !encrypted && rule.encrypts(&[field, key]) {
                push(
                    SOPS_PLAINTEXT_VALUE,
                    Severity::Error,
                    format!("{field}.{key}"),
                    format!(
                        "Secret carries sops metadata but {field}.{key} is in plain text, \
                         although its rule ({rule}) says sops encrypts it: it was added or \
                         edited after encryption; encrypt the file again with `sops \
                         --encrypt` (or edit it with `sops FILE`)"
                    ),
                );
            }
        }
    }
}

fn text_at<'a>(value: Option<&'a Value>, path: &[&str]) -> Option<&'a str> {
    let mut v = value;
    for key in path {
        v = v.and_then(|v| v.get(*key));
    }
    v.and_then(Value::as_str).filter(|s| !s.trim().is_empty())
}

/// `1.2.3`, `v1.2.3`, `=1.2.3`, with optional `-pre` and `+build`: one exact version.
pub fn is_exact_version(version: &str) -> bool {
    let v = version.trim();
    let v = v.strip_prefix('=').unwrap_or(v).trim_start();
    let v = v.strip_prefix('v').unwrap_or(v);
    let core = v.split(['-', '+']).next().unwrap_or_default();
    let rest = v.get(core.len()..).unwrap_or_default();
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'+' | b'.'))
}

fn is_commit(revision: &str) -> bool {
    revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Looks like a release tag (`v1.2.3`, `1.2`, `2024.01.15`) rather than a branch name.
fn looks_like_tag(revision: &str) -> bool {
    let r = revision.strip_prefix('v').unwrap_or(revision);
    r.bytes().next().is_some_and(|b| b.is_ascii_digit())
        && r.contains('.')
        && !r.contains(['*', '^', '~', '>', '<', ' ', '|'])
        && !r.split('.').any(|p| p == "x" || p == "X")
}

type Push<'a> = dyn FnMut(&str, Severity, String, String) + 'a;

fn helm_release(spec: Option<&Value>, push: &mut Push<'_>) {
    // A chartRef points at an OCIRepository/HelmChart object; that object is checked.
    if spec.and_then(|s| s.get("chartRef")).is_some() {
        return;
    }
    let path = "spec.chart.spec.version".to_string();
    match text_at(spec, &["chart", "spec", "version"]) {
        None => push(
            HELMRELEASE_CHART_VERSION,
            Severity::Error,
            path,
            "HelmRelease has no chart version, so it installs whatever chart version is newest \
             at reconcile time; set spec.chart.spec.version to an exact version like 1.2.3"
                .to_string(),
        ),
        Some(v) if !is_exact_version(v) => push(
            HELMRELEASE_CHART_VERSION,
            Severity::Error,
            path,
            format!(
                "HelmRelease chart version {v:?} is a range, so it follows new chart releases; \
                 set an exact version like 1.2.3"
            ),
        ),
        Some(_) => {}
    }
}

fn oci_repository(spec: Option<&Value>, movable: Severity, push: &mut Push<'_>) {
    let reference = spec.and_then(|s| s.get("ref"));
    if text_at(reference, &["digest"]).is_some() {
        return;
    }
    let fix = "set spec.ref.digest to the artifact's sha256 digest";
    if let Some(range) =
        text_at(reference, &["semver"]).or_else(|| text_at(reference, &["semverFilter"]))
    {
        push(
            FLUX_SOURCE_REF_NOT_PINNED,
            Severity::Error,
            "spec.ref.semver".into(),
            format!("OCIRepository follows the semver range {range:?}; {fix}"),
        );
        return;
    }
    match text_at(reference, &["tag"]) {
        Some(tag) if tag != "latest" => push(
            FLUX_SOURCE_REF_NOT_PINNED,
            movable,
            "spec.ref.tag".into(),
            format!("OCIRepository follows tag {tag:?}, which can be moved; {fix}"),
        ),
        Some(_) => push(
            FLUX_SOURCE_REF_NOT_PINNED,
            Severity::Error,
            "spec.ref.tag".into(),
            format!("OCIRepository follows the latest tag; {fix}"),
        ),
        None => push(
            FLUX_SOURCE_REF_NOT_PINNED,
            Severity::Error,
            "spec.ref".into(),
            format!("OCIRepository has no ref, so it follows the latest tag; {fix}"),
        ),
    }
}

fn git_repository(spec: Option<&Value>, movable: Severity, push: &mut Push<'_>) {
    let reference = spec.and_then(|s| s.get("ref"));
    if text_at(reference, &["commit"]).is_some() {
        return;
    }
    let fix = "set spec.ref.commit to a full commit SHA";
    if let Some(name) = text_at(reference, &["name"]) {
        if let Some(tag) = name.strip_prefix("refs/tags/") {
            push(
                FLUX_SOURCE_REF_NOT_PINNED,
                movable,
                "spec.ref.name".into(),
                format!("GitRepository follows tag {tag:?}, which can be moved; {fix}"),
            );
        } else {
            push(
                FLUX_SOURCE_REF_NOT_PINNED,
                Severity::Error,
                "spec.ref.name".into(),
                format!("GitRepository follows the moving ref {name:?}; {fix}"),
            );
        }
        return;
    }
    if let Some(range) = text_at(reference, &["semver"]) {
        push(
            FLUX_SOURCE_REF_NOT_PINNED,
            Severity::Error,
            "spec.ref.semver".into(),
            format!("GitRepository follows the semver range {range:?}; {fix}"),
        );
    } else if let Some(tag) = text_at(reference, &["tag"]) {
        push(
            FLUX_SOURCE_REF_NOT_PINNED,
            movable,
            "spec.ref.tag".into(),
            format!("GitRepository follows tag {tag:?}, which can be moved; {fix}"),
        );
    } else if let Some(branch) = text_at(reference, &["branch"]) {
        push(
            FLUX_SOURCE_REF_NOT_PINNED,
            Severity::Error,
            "spec.ref.branch".into(),
            format!("GitRepository follows branch {branch:?}; {fix}"),
        );
    } else {
        push(
            FLUX_SOURCE_REF_NOT_PINNED,
            Severity::Error,
            "spec.ref".into(),
            format!("GitRepository has no ref, so it follows the default branch; {fix}"),
        );
    }
}

fn argocd_application(spec: Option<&Value>, movable: Severity, push: &mut Push<'_>) {
    let mut sources: Vec<(String, &Value)> = Vec::new();
    if let Some(source) = spec.and_then(|s| s.get("source")) {
        sources.push(("spec.source".into(), source));
    }
    if let Some(list) = spec
        .and_then(|s| s.get("sources"))
        .and_then(Value::as_sequence)
    {
        for (i, source) in list.iter().enumerate() {
            sources.push((format!("spec.sources[{i}]"), source));
        }
    }
    for (base, source) in sources {
        let path = format!("{base}.targetRevision");
        let revision = text_at(Some(source), &["targetRevision"]);
        if source.get("chart").is_some() {
            match revision {
                Some(v) if is_exact_version(v) => {}
                Some(v) => push(
                    ARGOCD_TARGET_REVISION,
                    Severity::Error,
                    path,
                    format!(
                        "Application chart version {v:?} is a range; set targetRevision to an \
                         exact chart version like 1.2.3"
                    ),
                ),
                None => push(
                    ARGOCD_TARGET_REVISION,
                    Severity::Error,
                    path,
                    "Application has no chart version, so it follows the newest chart; set \
                     targetRevision to an exact version like 1.2.3"
                        .into(),
                ),
            }
            continue;
        }
        let fix = "set targetRevision to a full commit SHA (or an OCI digest sha256:…)";
        match revision {
            Some(r) if is_commit(r) || r.starts_with("sha256:") => {}
            None => push(
                ARGOCD_TARGET_REVISION,
                Severity::Error,
                path,
                format!("Application has no targetRevision, so it follows HEAD; {fix}"),
            ),
            Some("HEAD") => push(
                ARGOCD_TARGET_REVISION,
                Severity::Error,
                path,
                format!("Application follows HEAD; {fix}"),
            ),
            Some(r) if looks_like_tag(r) => push(
                ARGOCD_TARGET_REVISION,
                movable,
                path,
                format!("Application follows tag {r:?}, which can be moved; {fix}"),
            ),
            Some(r) => push(
                ARGOCD_TARGET_REVISION,
                Severity::Error,
                path,
                format!("Application follows {r:?}, a branch or range; {fix}"),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_versions_and_ranges() {
        for exact in ["1.2.3", "v1.2.3", "=1.2.3", "1.2.3-rc.1", "1.2.3+build.5"] {
            assert!(is_exact_version(exact), "{exact}");
        }
        for range in [
            "",
            "1.2",
            "10.1.x",
            "^1.2",
            "~1.2.3",
            ">=1",
            "1.2.*",
            "*",
            ">=1.0.0 <2.0.0",
            "1.2.3 || 1.2.4",
            "latest",
        ] {
            assert!(!is_exact_version(range), "{range}");
        }
    }

    #[test]
    fn every_rule_id_is_kebab_case() {
        for (id, _) in RULES {
            assert!(
                id.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'),
                "{id}"
            );
        }
    }
}
