//! The example trust policy parses, and the JSON schema describes exactly the fields the
//! parser accepts.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;

use serde_json::Value;
use tresor::signing::policy::{Authority, PolicyDocument, Require, TrustPolicy};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn schema() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(root().join("schemas/trust-policy.schema.json")).unwrap(),
    )
    .unwrap()
}

#[test]
fn example_policy_parses() {
    let policy = TrustPolicy::from_file(&root().join("testdata/policy/trust-policy.yaml")).unwrap();
    assert_eq!(policy.require, Require::AtLeast(2));
    let names: Vec<&str> = policy.authorities.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["ci", "security-team", "release-workflow"]);
    let (Authority::Key { key: ci }, Authority::Key { key: team }) = (
        &policy.authorities[0].authority,
        &policy.authorities[1].authority,
    ) else {
        panic!("expected two keys");
    };
    // Two different keys (issue 12: the example used to list one key twice, which one
    // signature satisfied as "2 of 3"): one from a path relative to the file, one inline.
    assert_ne!(ci.fingerprint(), team.fingerprint());
    let Authority::Keyless {
        trusted_root: tresor::signing::TrustedRootSource::File(trusted_root),
        ..
    } = &policy.authorities[2].authority
    else {
        panic!("expected keyless");
    };
    assert_eq!(
        trusted_root,
        &root().join("testdata/policy/trusted_root.json")
    );
}

/// Every property of every object in `value` must be declared at the matching place in the
/// schema (`properties`, following `items` and local `$ref`s).
fn check_declared(schema: &Value, node: &Value, value: &Value, path: &str) {
    let node = match node.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.trim_start_matches("#/$defs/");
            &schema["$defs"][name]
        }
        None => node,
    };
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let child = &node["properties"][k];
                assert!(!child.is_null(), "{path}.{k} is not in the schema");
                check_declared(schema, child, v, &format!("{path}.{k}"));
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                check_declared(schema, &node["items"], v, &format!("{path}[{i}]"));
            }
        }
        _ => {}
    }
}

#[test]
fn schema_declares_what_the_parser_reads() {
    let schema = schema();
    let text = std::fs::read_to_string(root().join("testdata/policy/trust-policy.yaml")).unwrap();
    let doc: PolicyDocument = serde_norway::from_str(&text).unwrap();
    let mut value = serde_json::to_value(&doc).unwrap();
    check_declared(&schema, &schema, &value, "");
    // Regexp matchers too, and the schema's own example parses with the parser.
    value["spec"]["authorities"][2]["keyless"] = serde_json::json!({
        "identityRegexp": "x", "issuerRegexp": "y", "trustedRoot": "r.json"
    });
    check_declared(&schema, &schema, &value, "");
    for example in schema["examples"].as_array().unwrap() {
        let _: PolicyDocument = serde_json::from_value(example.clone()).unwrap();
    }
    assert_eq!(
        schema["properties"]["apiVersion"]["const"],
        "tresor.dev/v1alpha1"
    );
    assert_eq!(schema["properties"]["kind"]["const"], "TrustPolicy");
}
