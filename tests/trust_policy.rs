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

/// A TrustPolicy requiring a key for `repositories`, in every namespace.
fn covering(repositories: &[&str]) -> tresor::api::TrustPolicy {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "tresor.dev/v1alpha1", "kind": "TrustPolicy",
        "metadata": {"name": "acme"},
        "spec": {
            "repositories": repositories,
            "authorities": [{"name": "ci", "key": {"secretRef": {
                "name": "ci-key", "namespace": "tresor-system"}}}],
            "require": "any",
        },
    }))
    .unwrap()
}

/// An ArtifactSync in namespace `team` following `url` unsigned.
fn unsigned_sync(url: &str, insecure: bool) -> tresor::api::ArtifactSync {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "tresor.dev/v1alpha1", "kind": "ArtifactSync",
        "metadata": {"name": "app", "namespace": "team"},
        "spec": {"url": url, "ref": {"tag": "v1"}, "interval": "5m", "insecure": insecure,
            "verify": {"allowUnsigned": true}},
    }))
    .unwrap()
}

/// Issue 12 point 2: spelling the host differently (case, default port, a trailing dot, a
/// port with leading zeros, another name of Docker Hub) reached the same registry but
/// escaped `ghcr.io/acme/**`, so `allowUnsigned` was accepted. Every such spelling is now
/// refused; only the canonical one is admitted, and it is covered.
#[test]
fn regression_issue12_host_spellings_cannot_escape_trust_policy_coverage() {
    use tresor::api::effective_requirements;
    let labels = std::collections::BTreeMap::new();
    let policies = [covering(&[
        "ghcr.io/acme/**",
        "docker.io/acme/**",
        "reg.example/acme/**",
    ])];
    for (url, insecure) in [
        ("oci://GHCR.IO/acme/app", false),
        ("oci://Ghcr.io/acme/app", false),
        ("oci://ghcr.io:443/acme/app", false),
        ("oci://ghcr.io./acme/app", false),
        ("oci://ghcr.io:0443/acme/app", false),
        ("oci://index.docker.io/acme/app", false),
        ("oci://registry-1.docker.io/acme/app", false),
        ("oci://reg.example:80/acme/app", true),
    ] {
        let result = effective_requirements(&policies, &unsigned_sync(url, insecure), &labels);
        let Err(err) = result else {
            panic!("{url} (insecure: {insecure}) escaped the policy: {result:?}");
        };
        assert!(
            matches!(err.reason(), "NonCanonicalReference" | "InvalidSpec"),
            "{url}: {err}"
        );
        assert!(
            err.to_string()
                .contains(url.trim_start_matches("oci://").split('/').next().unwrap()),
            "{url}: {err}"
        );
    }
    // The canonical spellings are covered: allowUnsigned is refused as weakening the policy.
    for (url, insecure) in [
        ("oci://ghcr.io/acme/app", false),
        ("oci://docker.io/acme/app", false),
        ("oci://reg.example/acme/app", true),
    ] {
        let err =
            effective_requirements(&policies, &unsigned_sync(url, insecure), &labels).unwrap_err();
        assert_eq!(err.reason(), "WeakensTrustPolicy", "{url}: {err}");
    }
    // The message names the canonical spelling; nothing is rewritten silently.
    let err = effective_requirements(
        &policies,
        &unsigned_sync("oci://GHCR.IO:443/acme/app", false),
        &labels,
    )
    .unwrap_err();
    assert_eq!(err.reason(), "NonCanonicalReference");
    assert!(err.to_string().contains("oci://ghcr.io/acme/app"), "{err}");
}

/// Issue 12 point 2: leading zeros in a port and a trailing dot are refused by the reference
/// parser (the CLI too), with an error naming the reference.
#[test]
fn regression_issue12_ambiguous_host_spellings_are_refused() {
    use tresor::reference::Reference;
    for bad in [
        "oci://ghcr.io:05000/acme/app:v1",
        "oci://127.0.0.1:05001/acme/app",
        "oci://ghcr.io./acme/app:v1",
        "ghcr.io./acme/app:v1",
        "oci://ghcr.io..example/acme/app",
    ] {
        let err = bad.parse::<Reference>().unwrap_err();
        assert!(err.to_string().contains(bad), "{bad}: {err}");
    }
}
