//! `TrustPolicy`: cluster-wide signing requirements that tenants cannot weaken.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::trust::{validate_authorities, Authority, Constraint, Require};
use super::ApiError;

/// Who must have signed artifacts from some repositories before they are applied in some
/// namespaces. Cluster-scoped, so only cluster admins write it; every ArtifactSync it covers
/// must satisfy it in addition to its own `spec.verify`.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "tresor.dev",
    version = "v1alpha1",
    kind = "TrustPolicy",
    category = "tresor",
    printcolumn = r#"{"name":"Require","type":"string","jsonPath":".spec.require"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    doc = "Who must have signed artifacts before tresor applies them (cluster-scoped)."
)]
#[serde(rename_all = "camelCase")]
pub struct TrustPolicySpec {
    /// Who may sign (names unique within the policy).
    pub authorities: Vec<Authority>,
    /// How many of the authorities must have signed: `any`, `all` or N.
    pub require: Require,
    /// The namespaces whose ArtifactSyncs it covers; empty: all namespaces.
    #[serde(default, skip_serializing_if = "NamespaceSelector::is_empty")]
    pub namespaces: NamespaceSelector,
    /// Repositories it covers, as `host/path` patterns: `*` matches within one path
    /// segment, `**` across segments (`registry.example/acme/**`); empty: all repositories.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repositories: Vec<String>,
}

/// Namespaces by name or by label; a namespace matching either is covered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceSelector {
    /// Namespace names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// A label selector over namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

impl NamespaceSelector {
    /// Whether it selects nothing in particular (which means: every namespace).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty() && self.selector.is_none()
    }

    /// Whether the namespace `name` with `labels` is selected.
    pub fn matches(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        self.is_empty()
            || self.names.iter().any(|n| n == name)
            || self.selector.as_ref().is_some_and(|s| s.matches(labels))
    }
}

/// A Kubernetes label selector (`matchLabels` and `matchExpressions`, all must hold).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    /// Labels that must have these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Expressions that must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<SelectorRequirement>,
}

/// One expression of a label selector.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SelectorRequirement {
    /// The label key.
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    /// Values for `In` and `NotIn`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

impl LabelSelector {
    /// Whether `labels` satisfy every part. An unknown operator matches nothing (fails
    /// closed: [`TrustPolicy::validate`] reports it).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|e| {
                let value = labels.get(&e.key);
                match e.operator.as_str() {
                    "In" => value.is_some_and(|v| e.values.contains(v)),
                    "NotIn" => value.is_none_or(|v| !e.values.contains(v)),
                    "Exists" => value.is_some(),
                    "DoesNotExist" => value.is_none(),
                    _ => false,
                }
            })
    }
}

/// Whether the canonical `repository` (`host/path`, see
/// [`crate::reference::canonical_host`]) matches `pattern` (`*` within a segment, `**`
/// across).
///
/// The pattern's host is read in every canonical form it can have, so a policy written
/// `GHCR.IO/**`, `ghcr.io:443/**` or `index.docker.io/**` covers what it names; where the
/// transport decides (`host:80` is the default port only over plain HTTP), both readings
/// count: coverage may be wider than meant, never narrower.
pub(crate) fn repository_matches(pattern: &str, repository: &str) -> bool {
    let (host, path) = pattern.split_once('/').unwrap_or((pattern, ""));
    let mut hosts = vec![host.to_ascii_lowercase()];
    if !host.contains('*') {
        for plain_http in [false, true] {
            hosts.push(crate::reference::canonical_host(host, plain_http));
        }
    }
    hosts.sort();
    hosts.dedup();
    hosts.iter().any(|h| {
        let pattern = if pattern.contains('/') {
            format!("{h}/{path}")
        } else {
            h.clone()
        };
        glob_matches(&pattern, repository)
    })
}

/// Whether `repository` matches the glob `pattern` as written.
fn glob_matches(pattern: &str, repository: &str) -> bool {
    let mut regex = String::from("^");
    let mut rest = pattern;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("**") {
            regex.push_str(".*");
            rest = r;
        } else if let Some(r) = rest.strip_prefix('*') {
            regex.push_str("[^/]*");
            rest = r;
        } else {
            let end = rest.find('*').unwrap_or(rest.len());
            let (literal, r) = rest.split_at(end);
            regex.push_str(&regex::escape(literal));
            rest = r;
        }
    }
    regex.push('$');
    regex::Regex::new(&regex).is_ok_and(|r| r.is_match(repository))
}

impl TrustPolicy {
    /// The policy's name.
    pub fn name(&self) -> String {
        self.metadata.name.clone().unwrap_or_default()
    }

    /// Whether it covers an ArtifactSync in `namespace` (with `labels`) pulling `repository`
    /// (`host/path`).
    pub fn covers(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
        repository: &str,
    ) -> bool {
        self.spec.namespaces.matches(namespace, labels)
            && (self.spec.repositories.is_empty()
                || self
                    .spec
                    .repositories
                    .iter()
                    .any(|p| repository_matches(p, repository)))
    }

    /// Checks what the API server's schema cannot: authorities, rule, selector operators.
    pub fn validate(&self) -> Result<(), ApiError> {
        let invalid = |field: &str, message: String| ApiError::InvalidSpec {
            object: format!("TrustPolicy {}", self.name()),
            field: field.to_string(),
            message,
        };
        validate_authorities(&self.spec.authorities, self.spec.require, None)
            .map_err(|m| invalid("spec.authorities", m))?;
        if let Some(s) = &self.spec.namespaces.selector {
            for e in &s.match_expressions {
                let needs_values = matches!(e.operator.as_str(), "In" | "NotIn");
                let known =
                    needs_values || matches!(e.operator.as_str(), "Exists" | "DoesNotExist");
                if !known || needs_values == e.values.is_empty() {
                    return Err(invalid(
                        "spec.namespaces.selector.matchExpressions",
                        format!(
                            "operator {:?} on {:?}: use In/NotIn with values or \
                             Exists/DoesNotExist without",
                            e.operator, e.key
                        ),
                    ));
                }
            }
        }
        if let Some(p) = self.spec.repositories.iter().find(|p| p.contains("://")) {
            return Err(invalid(
                "spec.repositories",
                format!("{p:?}: write host/path without a scheme"),
            ));
        }
        for p in &self.spec.repositories {
            let host = p.split('/').next().unwrap_or_default();
            if !host.contains('*') {
                crate::reference::check_host(host)
                    .map_err(|m| invalid("spec.repositories", format!("{p:?}: {m}")))?;
            }
        }
        Ok(())
    }

    /// The policy as one constraint.
    pub(super) fn constraint(&self) -> Constraint {
        Constraint {
            source: format!("TrustPolicy/{}", self.name()),
            authorities: self.spec.authorities.clone(),
            require: self.spec.require,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_globs() {
        assert!(repository_matches("ghcr.io/acme/*", "ghcr.io/acme/app"));
        assert!(!repository_matches(
            "ghcr.io/acme/*",
            "ghcr.io/acme/team/app"
        ));
        assert!(repository_matches(
            "ghcr.io/acme/**",
            "ghcr.io/acme/team/app"
        ));
        assert!(repository_matches("ghcr.io/acme/app", "ghcr.io/acme/app"));
        assert!(!repository_matches("ghcr.io/acme/app", "ghcr.io/acme/app2"));
        // Dots are literal, not "any character".
        assert!(!repository_matches("ghcr.io/acme/*", "ghcrxio/acme/app"));
    }

    #[test]
    fn pattern_hosts_are_read_in_canonical_form() {
        assert!(repository_matches("GHCR.IO/acme/**", "ghcr.io/acme/app"));
        assert!(repository_matches(
            "ghcr.io:443/acme/**",
            "ghcr.io/acme/app"
        ));
        assert!(repository_matches(
            "index.docker.io/acme/*",
            "docker.io/acme/app"
        ));
        // :80 is the default port of plain HTTP, so the insecure `reg.example` is covered.
        assert!(repository_matches("reg.example:80/**", "reg.example/app"));
        assert!(!repository_matches(
            "ghcr.io/acme/**",
            "ghcr.io:5000/acme/app"
        ));
        assert!(repository_matches("*.example/**", "reg.example/app"));
    }

    #[test]
    fn label_selector_operators() {
        let labels: BTreeMap<String, String> = [("env".to_string(), "prod".to_string())]
            .into_iter()
            .collect();
        let expr = |op: &str, values: &[&str]| LabelSelector {
            match_labels: BTreeMap::new(),
            match_expressions: vec![SelectorRequirement {
                key: "env".into(),
                operator: op.into(),
                values: values.iter().map(|v| v.to_string()).collect(),
            }],
        };
        assert!(expr("In", &["prod", "stage"]).matches(&labels));
        assert!(!expr("NotIn", &["prod"]).matches(&labels));
        assert!(expr("Exists", &[]).matches(&labels));
        assert!(!expr("DoesNotExist", &[]).matches(&labels));
        assert!(!expr("Bogus", &[]).matches(&labels));
        assert!(expr("NotIn", &["x"]).matches(&BTreeMap::new()));
    }
}
