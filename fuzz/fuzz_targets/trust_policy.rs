//! Trust-policy parsing: the CLI policy file (`src/signing/policy.rs`), the cluster's
//! `TrustPolicy` resource with the "cannot weaken" rule (`src/api/decode.rs`,
//! `src/api/trust_policy.rs`, `src/api/trust.rs`), and the immutability policy file
//! (`src/policy/config.rs`). The first input byte picks which; the rest is the document.
//!
//! Checks:
//! - a CLI policy that loads has at least one authority, unique names, no two authorities
//!   that are the same signer (issue 12 point 1), and a rule needing between 1 and all of
//!   them;
//! - a TrustPolicy that covers a sync makes `allowUnsigned` fail and never yields
//!   `Requirements::Unsigned`; a signed sync under it gets the policy's constraint, or an
//!   error; a TrustPolicy that cannot be read refuses every sync it might cover;
//! - the immutability policy parser and its image allow-list never panic.
#![no_main]

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use tresor::api::{
    check_unreadable_policies, effective_requirements, ArtifactSync, Requirements, TrustPolicy,
};
use tresor::policy::config::Policy;
use tresor::signing::policy::PolicyDocument;
use tresor::signing::TrustPolicy as CliTrustPolicy;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    match mode % 3 {
        0 => cli_policy(text),
        1 => cluster_policy(text),
        _ => immutability_policy(text),
    }
});

/// A directory with the key files testdata/policy/trust-policy.yaml names, created once.
fn base() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("tresor-fuzz-policy")
            .tempdir()
            .expect("policy directory")
            .keep();
        let files: [(&str, &[u8]); 3] = [
            ("ci.pub", include_bytes!("../../testdata/policy/ci.pub")),
            (
                "security-team.pub",
                include_bytes!("../../testdata/policy/security-team.pub"),
            ),
            (
                "trusted_root.json",
                include_bytes!("../../testdata/cosign/bundles/trusted_root.json"),
            ),
        ];
        for (name, bytes) in files {
            std::fs::write(dir.join(name), bytes).expect("policy fixture");
        }
        dir
    })
}

/// Whether `path` stays inside the fixture directory: the fuzzer must not make the policy
/// read arbitrary files of the machine (a fifo would block, a device never end).
fn contained(path: &Path) -> bool {
    path.components().all(|c| matches!(c, Component::Normal(_)))
}

fn cli_policy(text: &str) {
    if let Ok(doc) = serde_norway::from_str::<PolicyDocument>(text) {
        let paths_ok = doc.spec.authorities.iter().all(|a| {
            a.key
                .as_ref()
                .and_then(|k| k.path.as_deref())
                .is_none_or(contained)
                && a.keyless
                    .as_ref()
                    .is_none_or(|k| contained(&k.trusted_root))
        });
        if !paths_ok {
            return;
        }
    }
    let Ok(policy) = CliTrustPolicy::from_document(text, base(), Path::new("fuzz.yaml")) else {
        return;
    };
    let n = policy.authorities.len();
    assert!(n > 0, "a policy without authorities loaded");
    let needed = policy.require.needed(n);
    assert!((1..=n).contains(&needed), "require needs {needed} of {n}");
    for (i, a) in policy.authorities.iter().enumerate() {
        for b in policy.authorities.iter().skip(i + 1) {
            assert_ne!(a.name, b.name, "authority name listed twice");
            assert!(
                !a.authority.same_signer(&b.authority),
                "{} and {} are the same signer",
                a.name,
                b.name
            );
        }
    }
    let _ = policy.describe_rule();
}

const NAMESPACE: &str = "team";
const REPOSITORIES: [&str; 3] = [
    "ghcr.io/acme/app",
    "127.0.0.1:5000/app",
    "docker.io/library/x",
];

fn sync(url: &str, verify: Value) -> ArtifactSync {
    serde_json::from_value(json!({
        "apiVersion": "tresor.dev/v1alpha1", "kind": "ArtifactSync",
        "metadata": {"name": "app", "namespace": NAMESPACE},
        "spec": {"url": url, "ref": {"tag": "v1"}, "interval": "5m", "verify": verify},
    }))
    .expect("ArtifactSync")
}

fn cluster_policy(text: &str) {
    let Ok(value) = serde_norway::from_str::<Value>(text) else {
        return;
    };
    let labels: BTreeMap<String, String> = [("env".to_string(), "prod".to_string())].into();
    match TrustPolicy::decode(&value) {
        Ok(policy) => {
            let _ = policy.validate();
            let name = policy.name();
            for repository in REPOSITORIES {
                let url = format!("oci://{repository}");
                let unsigned = sync(&url, json!({"allowUnsigned": true}));
                let covers = policy.covers(NAMESPACE, &labels, repository);
                let result =
                    effective_requirements(std::slice::from_ref(&policy), &unsigned, &labels);
                if covers {
                    assert!(
                        result.is_err(),
                        "{policy:?} covers {repository} yet allowUnsigned was accepted: {result:?}"
                    );
                } else {
                    // Without coverage the policy changes nothing for an unsigned sync.
                    let alone = effective_requirements(&[], &unsigned, &labels);
                    assert_eq!(
                        matches!(result, Ok(Requirements::Unsigned)),
                        matches!(alone, Ok(Requirements::Unsigned)),
                        "{result:?} / {alone:?}"
                    );
                }
                let named = sync(&url, json!({"trustPolicy": name}));
                match effective_requirements(std::slice::from_ref(&policy), &named, &labels) {
                    Ok(Requirements::Signed(constraints)) => assert!(
                        constraints.iter().any(|c| c
                            .source
                            .split(", ")
                            .any(|s| s == format!("TrustPolicy/{name}"))),
                        "the named policy's constraint is missing: {constraints:?}"
                    ),
                    Ok(Requirements::Unsigned) => panic!("a sync naming a policy was unsigned"),
                    Err(_) => {}
                }
            }
        }
        Err(unreadable) => {
            for repository in REPOSITORIES {
                let unsigned = sync(
                    &format!("oci://{repository}"),
                    json!({"allowUnsigned": true}),
                );
                let refused = check_unreadable_policies(
                    std::slice::from_ref(&unreadable),
                    &unsigned,
                    &labels,
                )
                .is_err();
                assert_eq!(
                    refused,
                    unreadable.might_cover(NAMESPACE, &labels, repository),
                    "{unreadable:?} and {repository}"
                );
            }
        }
    }
}

fn immutability_policy(text: &str) {
    if let Ok(policy) = Policy::parse(text) {
        for image in [
            "nginx:1.27",
            "ghcr.io/acme/app@sha256:abc",
            "registry.example:5000/x/y:z",
        ] {
            let _ = policy.image_allowed(image);
        }
    }
}
