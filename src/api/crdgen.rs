//! The generated files: CRD YAML and JSON schemas, rendered from the Rust types.
//!
//! `tresor-crdgen` prints [`crds_yaml`]; `tresor-crdgen --write` writes every
//! [`generated_files`] entry (CRDs, JSON schemas, `docs/crd-reference.md`) and the CLI
//! reference. A test compares them with the committed copies.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use super::{ApiError, ArtifactSync, TrustPolicy};

/// The command that regenerates every file of [`generated_files`].
pub const REGENERATE: &str = "cargo run --bin tresor-crdgen -- --write";

/// tresor's CRDs, in a fixed order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![ArtifactSync::crd(), TrustPolicy::crd()]
}

fn render_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::Render {
        message: e.to_string(),
    }
}

/// All CRDs as multi-document YAML, with a header saying how to regenerate it.
pub fn crds_yaml() -> Result<String, ApiError> {
    let mut out = format!(
        "# Generated from src/api by tresor-crdgen; do not edit. Regenerate: {REGENERATE}\n"
    );
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_norway::to_string(&crd).map_err(render_error)?);
    }
    Ok(out)
}

/// The `openAPIV3Schema` of `crd` as a standalone JSON schema (for editors and linters).
pub fn json_schema(crd: &CustomResourceDefinition) -> Result<String, ApiError> {
    let version = crd
        .spec
        .versions
        .first()
        .ok_or_else(|| render_error("CRD without versions"))?;
    let schema = version
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .ok_or_else(|| render_error("CRD without openAPIV3Schema"))?;
    let mut value = serde_json::to_value(schema).map_err(render_error)?;
    if let Some(map) = value.as_object_mut() {
        map.insert(
            "$schema".into(),
            "http://json-schema.org/draft-07/schema#".into(),
        );
        map.insert(
            "title".into(),
            format!(
                "{} ({}/{})",
                crd.spec.names.kind, crd.spec.group, version.name
            )
            .into(),
        );
    }
    Ok(serde_json::to_string_pretty(&value).map_err(render_error)? + "\n")
}

/// Every generated file as (path relative to the repository root, content).
pub fn generated_files() -> Result<Vec<(String, String)>, ApiError> {
    let yaml = crds_yaml()?;
    let mut files = vec![
        ("schemas/crds.yaml".to_string(), yaml.clone()),
        ("deploy/crds/crds.yaml".to_string(), yaml),
    ];
    for crd in crds() {
        files.push((
            format!(
                "schemas/{}.crd.schema.json",
                crd.spec
                    .names
                    .singular
                    .as_deref()
                    .unwrap_or(&crd.spec.names.plural)
            ),
            json_schema(&crd)?,
        ));
    }
    files.push((
        super::reference::CRD_REFERENCE_PATH.to_string(),
        super::reference::crd_reference(&crds())?,
    ));
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crds_have_expected_names_and_scope() {
        let crds = crds();
        let a = &crds[0];
        assert_eq!(a.metadata.name.as_deref(), Some("artifactsyncs.tresor.dev"));
        assert_eq!(a.spec.scope, "Namespaced");
        let t = &crds[1];
        assert_eq!(t.metadata.name.as_deref(), Some("trustpolicies.tresor.dev"));
        assert_eq!(t.spec.scope, "Cluster");
        let cols: Vec<_> = a.spec.versions[0]
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(cols, ["URL", "Ready", "Status", "Age"]);
        assert!(a.spec.versions[0]
            .subresources
            .as_ref()
            .unwrap()
            .status
            .is_some());
    }

    #[test]
    fn ref_carries_a_cel_rule_and_require_is_int_or_string() {
        let yaml = crds_yaml().unwrap();
        assert!(yaml.contains("x-kubernetes-validations"));
        assert!(yaml.contains("set exactly one of tag, semver or digest"));
        assert!(yaml.contains("x-kubernetes-int-or-string: true"));
    }

    /// The validations of `property` (a dotted path from the root schema) in `crd`.
    fn rules_of(crd: &CustomResourceDefinition, property: &str) -> Vec<String> {
        let schema = serde_json::to_value(
            crd.spec.versions[0]
                .schema
                .as_ref()
                .unwrap()
                .open_api_v3_schema
                .as_ref()
                .unwrap(),
        )
        .unwrap();
        let mut node = &schema;
        for part in property.split('.').filter(|p| !p.is_empty()) {
            node = &node["properties"][part];
        }
        node["x-kubernetes-validations"]
            .as_array()
            .map(|rules| {
                rules
                    .iter()
                    .map(|r| r["rule"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Issue 17: the server refuses what the puller cannot read.
    #[test]
    fn the_server_refuses_what_the_puller_cannot_read() {
        let crds = crds();
        let (sync, policy) = (&crds[0], &crds[1]);
        let require = |crd, path| {
            let rules = rules_of(crd, path);
            assert!(
                rules.iter().any(|r| r.contains("4294967295")
                    && r.contains("'any'")
                    && r.contains("'all'")),
                "{path}: {rules:?}"
            );
        };
        require(sync, "spec.verify.require");
        require(policy, "spec.require");
        assert!(
            rules_of(sync, "")
                .iter()
                .any(|r| r.contains("self.metadata.name.size() <= 63")),
            "{:?}",
            rules_of(sync, "")
        );
        assert!(
            rules_of(sync, "spec.serviceAccountName")
                .iter()
                .any(|r| r.contains("[a-z0-9]([-a-z0-9]*[a-z0-9])?")),
            "{:?}",
            rules_of(sync, "spec.serviceAccountName")
        );
    }
}
