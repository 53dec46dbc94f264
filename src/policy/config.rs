//! The policy file (`--policy-file`): mode, strictness, per-rule overrides, allow-lists.
//!
//! YAML or JSON, schema in `schemas/policy.schema.json`; unknown fields and unknown rule ids
//! are errors, so a typo cannot silently switch a rule off. The CLI reads it (`push`, `lint`,
//! `pull`, `sync`, `apply`); the puller does not: it checks every artifact with the default
//! rules in enforce mode.
//!
//! ```yaml
//! apiVersion: tresor.dev/v1alpha1
//! kind: Policy
//! mode: enforce          # enforce | warn | off (push and pull; --policy overrides it)
//! strict: true           # "can be moved" warnings become errors
//! rules:
//!   plaintext-secret: "off"   # quoted: YAML 1.1 tools read a bare off as false
//!   image-not-pinned: error
//! allow:
//!   images: [registry.internal.example:5000/base]   # registry or registry/path prefix
//!   objects:
//!     - selector: {matchLabels: {tresor.dev/allow-secret: "true"}}
//!       rules: [plaintext-secret]                    # empty or missing: every rule
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_norway::Value;

use super::image::ImageRef;
use super::rules::{self, RULES};
use super::{Finding, Mode, PolicyError, Severity};
use crate::artifact::objects::Object;

/// The `apiVersion` a policy file may declare.
pub const API_VERSION: &str = "tresor.dev/v1alpha1";
/// The `kind` a policy file may declare.
pub const KIND: &str = "Policy";
/// Largest policy file read.
pub const MAX_POLICY_BYTES: u64 = 1024 * 1024;

/// A policy: what `lint`, `push` and `pull` check and how strictly.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Policy {
    /// Optional; must be `tresor.dev/v1alpha1` when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Optional; must be `Policy` when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// What push and pull do with findings; `--policy` overrides it; default `enforce`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// Raise "can be moved" warnings (tags without digest, plaintext Secrets, …) to errors.
    #[serde(default)]
    pub strict: bool,
    /// Per-rule severity overrides, by rule id.
    #[serde(default)]
    pub rules: BTreeMap<String, RuleSetting>,
    /// Exemptions.
    #[serde(default)]
    pub allow: Allow,
}

/// A per-rule override.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleSetting {
    /// Report at error severity.
    Error,
    /// Report at warning severity.
    Warning,
    /// Do not report.
    Off,
}

/// Exemptions from rules.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Allow {
    /// Images exempt from the image rules: a registry (`registry.example.com:5000`) or a
    /// `registry/path` prefix (`ghcr.io/acme`), matched on whole path components against the
    /// normalised name (`docker.io/library/nginx` for `nginx`).
    #[serde(default)]
    pub images: Vec<String>,
    /// Objects exempt from some (or all) rules, chosen by label selector.
    #[serde(default)]
    pub objects: Vec<ObjectAllow>,
}

/// Objects matching `selector` are exempt from `rules` (every rule when empty).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ObjectAllow {
    /// Kubernetes label selector on `metadata.labels`.
    pub selector: LabelSelector,
    /// Rule ids the objects are exempt from; empty means every rule.
    #[serde(default)]
    pub rules: Vec<String>,
    /// Why (for reviewers; not used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A Kubernetes label selector (`matchLabels` and `matchExpressions`, ANDed).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabelSelector {
    /// Labels that must be present with these values.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    /// Set-based requirements.
    #[serde(default)]
    pub match_expressions: Vec<LabelRequirement>,
}

/// One set-based requirement of a label selector.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabelRequirement {
    /// The label key.
    pub key: String,
    /// The operator.
    pub operator: LabelOperator,
    /// Values for `In` and `NotIn`.
    #[serde(default)]
    pub values: Vec<String>,
}

/// Label selector operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LabelOperator {
    /// The label's value is one of `values`.
    In,
    /// The label is absent or its value is not one of `values`.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

impl LabelSelector {
    /// Whether `labels` satisfy the selector. An empty selector matches nothing (an
    /// exemption for everything should be written as `rules: {id: off}` instead).
    pub fn matches(&self, labels: &HashMap<&str, &str>) -> bool {
        if self.match_labels.is_empty() && self.match_expressions.is_empty() {
            return false;
        }
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k.as_str()) == Some(&v.as_str()))
            && self.match_expressions.iter().all(|r| {
                let value = labels.get(r.key.as_str());
                match r.operator {
                    LabelOperator::In => value.is_some_and(|v| r.values.iter().any(|x| x == v)),
                    LabelOperator::NotIn => !value.is_some_and(|v| r.values.iter().any(|x| x == v)),
                    LabelOperator::Exists => value.is_some(),
                    LabelOperator::DoesNotExist => value.is_none(),
                }
            })
    }
}

impl Policy {
    /// Reads and validates a policy file (YAML or JSON).
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let read_err = |source| PolicyError::ReadPolicy {
            path: path.to_path_buf(),
            source,
        };
        let size = std::fs::metadata(path).map_err(read_err)?.len();
        if size > MAX_POLICY_BYTES {
            return Err(PolicyError::InvalidPolicy {
                path: path.display().to_string(),
                message: format!("{size} bytes is more than the limit of {MAX_POLICY_BYTES}"),
            });
        }
        let text = std::fs::read_to_string(path).map_err(read_err)?;
        Self::parse(&text).map_err(|message| PolicyError::InvalidPolicy {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses and validates policy text (YAML or JSON).
    pub fn parse(text: &str) -> Result<Self, String> {
        let policy: Self = if text.trim().is_empty() {
            Self::default()
        } else {
            serde_norway::from_str(text).map_err(|e| e.to_string())?
        };
        policy.validate()?;
        Ok(policy)
    }

    fn validate(&self) -> Result<(), String> {
        if let Some(v) = self.api_version.as_deref().filter(|v| *v != API_VERSION) {
            return Err(format!("apiVersion {v:?} is not {API_VERSION:?}"));
        }
        if let Some(k) = self.kind.as_deref().filter(|k| *k != KIND) {
            return Err(format!("kind {k:?} is not {KIND:?}"));
        }
        let known = |id: &str| RULES.iter().any(|(r, _)| *r == id);
        let named = self
            .rules
            .keys()
            .chain(self.allow.objects.iter().flat_map(|o| o.rules.iter()));
        for id in named {
            if !known(id) {
                let ids: Vec<&str> = RULES.iter().map(|(r, _)| *r).collect();
                return Err(format!("unknown rule {id:?}; rules are {}", ids.join(", ")));
            }
        }
        for image in &self.allow.images {
            if image.trim().is_empty() || image.contains(['@', ' ']) {
                return Err(format!(
                    "allow.images entry {image:?} must be a registry or registry/path prefix"
                ));
            }
        }
        Ok(())
    }

    /// The mode for push and pull: `flag` (from `--policy`) if given, else the file's, else
    /// `enforce`.
    pub fn mode(&self, flag: Option<Mode>) -> Mode {
        flag.or(self.mode).unwrap_or_default()
    }

    /// Whether `image` (as written) is exempt from the image rules.
    pub fn image_allowed(&self, image: &str) -> bool {
        let name = match ImageRef::parse(image) {
            Ok(r) => r.name(),
            Err(_) => return false,
        };
        let written = image.split(['@']).next().unwrap_or(image);
        self.allow.images.iter().any(|entry| {
            let entry = entry.trim_end_matches('/');
            [name.as_str(), written].iter().any(|candidate| {
                candidate
                    .strip_prefix(entry)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with(['/', ':']))
            })
        })
    }

    /// Applies overrides and allow-lists to raw findings of the objects in `objects`.
    pub fn apply(&self, findings: Vec<Finding>, objects: &[Object]) -> Vec<Finding> {
        let by_place: HashMap<(&str, usize, Option<usize>), &Object> = objects
            .iter()
            .map(|o| ((o.file.as_str(), o.document, o.item), o))
            .collect();
        findings
            .into_iter()
            .filter_map(|mut finding| {
                let object = finding
                    .document
                    .and_then(|d| by_place.get(&(finding.file.as_str(), d, finding.item)))
                    .filter(|o| finding.object.as_deref() == Some(o.key.to_string().as_str()));
                if let Some(object) = object {
                    if self.exempt(&finding, object) {
                        return None;
                    }
                }
                match self.rules.get(&finding.rule) {
                    Some(RuleSetting::Off) => return None,
                    Some(RuleSetting::Error) => finding.severity = Severity::Error,
                    Some(RuleSetting::Warning) => finding.severity = Severity::Warning,
                    None => {}
                }
                Some(finding)
            })
            .collect()
    }

    fn exempt(&self, finding: &Finding, object: &Object) -> bool {
        let is_image_rule = [
            rules::IMAGE_LATEST,
            rules::IMAGE_NOT_PINNED,
            rules::IMAGE_INVALID,
        ]
        .contains(&finding.rule.as_str());
        if is_image_rule && !self.allow.images.is_empty() {
            let image = rules::pod_images(object)
                .into_iter()
                .find(|u| Some(u.path.as_str()) == finding.path.as_deref());
            if image.is_some_and(|u| self.image_allowed(&u.image)) {
                return true;
            }
        }
        if self.allow.objects.is_empty() {
            return false;
        }
        let labels: HashMap<&str, &str> = object
            .value
            .get("metadata")
            .and_then(|m| m.get("labels"))
            .and_then(Value::as_mapping)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.as_str()?, v.as_str()?)))
                    .collect()
            })
            .unwrap_or_default();
        self.allow.objects.iter().any(|allow| {
            (allow.rules.is_empty() || allow.rules.contains(&finding.rule))
                && allow.selector.matches(&labels)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_and_rules_are_errors() {
        assert!(Policy::parse("mode: enforce\nstrikt: true\n")
            .unwrap_err()
            .contains("strikt"));
        assert!(Policy::parse("rules:\n  image-pinned: off\n")
            .unwrap_err()
            .contains("unknown rule \"image-pinned\""));
        assert!(Policy::parse("mode: sometimes\n").is_err());
        assert!(Policy::parse("kind: Other\n").is_err());
        assert_eq!(Policy::parse("").unwrap(), Policy::default());
    }

    #[test]
    fn mode_flag_wins_over_file_and_default_is_enforce() {
        let p = Policy::parse("mode: warn\n").unwrap();
        assert_eq!(p.mode(None), Mode::Warn);
        assert_eq!(p.mode(Some(Mode::Off)), Mode::Off);
        assert_eq!(Policy::default().mode(None), Mode::Enforce);
    }

    #[test]
    fn image_allow_list_matches_whole_components() {
        let p = Policy::parse(
            "allow:\n  images: [\"127.0.0.1:5001\", ghcr.io/acme, docker.io/library/nginx]\n",
        )
        .unwrap();
        assert!(p.image_allowed("127.0.0.1:5001/x/img:1.0"));
        assert!(!p.image_allowed("127.0.0.1:50011/x/img:1.0"));
        assert!(p.image_allowed("ghcr.io/acme/web:1"));
        assert!(!p.image_allowed("ghcr.io/acmecorp/web:1"));
        assert!(p.image_allowed("nginx:1.27"));
        assert!(!p.image_allowed("nginxinc/nginx:1.27"));
    }

    #[test]
    fn label_selectors() {
        let s: LabelSelector = serde_norway::from_str(
            "matchLabels: {a: \"1\"}\nmatchExpressions:\n- {key: b, operator: In, values: [x, y]}\n- {key: c, operator: DoesNotExist}\n",
        )
        .unwrap();
        let labels = |pairs: &[(&'static str, &'static str)]| pairs.iter().copied().collect();
        assert!(s.matches(&labels(&[("a", "1"), ("b", "y")])));
        assert!(!s.matches(&labels(&[("a", "1"), ("b", "z")])));
        assert!(!s.matches(&labels(&[("a", "1"), ("b", "x"), ("c", "")])));
        assert!(!LabelSelector::default().matches(&labels(&[("a", "1")])));
    }
}
