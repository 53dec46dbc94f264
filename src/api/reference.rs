//! The CRD reference (`docs/crd-reference.md`): every field of `ArtifactSync` and
//! `TrustPolicy`, rendered from the same `openAPIV3Schema` as `schemas/` and the CRDs, so the
//! documentation cannot drift from what the API server validates. It is one of
//! [`super::crdgen::generated_files`], checked by the same freshness test.

use std::fmt::Write as _;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;

use super::ApiError;

/// Where the CRD reference is committed, relative to the repository root.
pub const CRD_REFERENCE_PATH: &str = "docs/crd-reference.md";

/// The reference of `crds` as Markdown: per kind, its group, version and scope, then one row
/// per field (dotted path, type, required, description with allowed values and default).
pub fn crd_reference(crds: &[CustomResourceDefinition]) -> Result<String, ApiError> {
    let mut out = String::from(
        "# CRD reference\n\n<!-- Generated from src/api by `cargo run --bin tresor-crdgen -- \
         --write` (the same schema as schemas/); do not edit. -->\n\n\
         How the puller uses these resources: [puller.md](puller.md).\n",
    );
    for crd in crds {
        let names = &crd.spec.names;
        for version in &crd.spec.versions {
            let schema = version
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .ok_or_else(|| ApiError::Render {
                    message: format!("{} {} has no openAPIV3Schema", names.kind, version.name),
                })?;
            let schema = serde_json::to_value(schema).map_err(|e| ApiError::Render {
                message: e.to_string(),
            })?;
            let _ = write!(
                out,
                "\n## {kind}\n\n`{group}/{version}`, {scope}, plural `{plural}`{short}.\n\n",
                kind = names.kind,
                group = crd.spec.group,
                version = version.name,
                scope = crd.spec.scope.to_lowercase(),
                plural = names.plural,
                short = names
                    .short_names
                    .as_ref()
                    .filter(|s| !s.is_empty())
                    .map(|s| format!(", short names `{}`", s.join("`, `")))
                    .unwrap_or_default(),
            );
            if let Some(d) = schema.get("description").and_then(Value::as_str) {
                let _ = writeln!(out, "{}\n", one_line(d));
            }
            let _ = writeln!(
                out,
                "| field | type | required | description |\n|---|---|---|---|"
            );
            let mut rows = Vec::new();
            fields(&schema, "", &mut rows);
            for row in rows {
                let _ = writeln!(out, "{row}");
            }
        }
    }
    Ok(out)
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn cell(text: &str) -> String {
    one_line(text).replace('|', "\\|")
}

/// A schema's type as written in the table: `string`, `[]object`, `map[string]string`, ….
fn type_of(schema: &Value) -> String {
    let base = schema.get("type").and_then(Value::as_str).unwrap_or(
        if schema.get("x-kubernetes-int-or-string").is_some() {
            "int-or-string"
        } else {
            "any"
        },
    );
    match base {
        "array" => format!(
            "[]{}",
            schema
                .get("items")
                .map(type_of)
                .unwrap_or_else(|| "any".into())
        ),
        "object" => match schema.get("additionalProperties") {
            Some(v) if v.is_object() => format!("map[string]{}", type_of(v)),
            _ => "object".into(),
        },
        other => other.to_string(),
    }
}

/// One row per property below `schema`, depth first, in the schema's (sorted) order; the
/// `apiVersion`, `kind` and `metadata` every object has are left out.
fn fields(schema: &Value, prefix: &str, rows: &mut Vec<String>) {
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (name, property) in properties {
        if prefix.is_empty() && ["apiVersion", "kind", "metadata"].contains(&name.as_str()) {
            continue;
        }
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        let mut text = property
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let mut notes = Vec::new();
        if let Some(values) = property.get("enum").and_then(Value::as_array) {
            let values: Vec<String> = values.iter().map(|v| format!("`{v}`")).collect();
            notes.push(format!("one of {}", values.join(", ")));
        }
        if let Some(default) = property.get("default") {
            notes.push(format!("default `{default}`"));
        }
        if !notes.is_empty() {
            text = format!("{} ({})", text.trim_end_matches('.'), notes.join("; "));
        }
        rows.push(format!(
            "| `{path}` | {} | {} | {} |",
            cell(&type_of(property)),
            if required.contains(&name.as_str()) {
                "yes"
            } else {
                ""
            },
            cell(&text)
        ));
        fields(property, &path, rows);
        if let Some(items) = property.get("items") {
            fields(items, &format!("{path}[]"), rows);
        }
        if let Some(values) = property.get("additionalProperties") {
            fields(values, &format!("{path}.*"), rows);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spec_field_is_listed_with_its_type_and_requiredness() {
        let text = crd_reference(&super::super::crdgen::crds()).unwrap();
        assert!(text.contains("\n## ArtifactSync\n"), "{text}");
        assert!(text.contains("\n## TrustPolicy\n"), "{text}");
        assert!(text.contains("| `spec.url` | string | yes |"), "{text}");
        assert!(
            text.contains("| `spec.pullSecretRef.name` | string | yes |"),
            "{text}"
        );
        assert!(
            text.contains("| `status.conditions` | []object |"),
            "{text}"
        );
    }
}
