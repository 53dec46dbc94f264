//! Arrows point down (STYLE.md rule 11): a lower layer of `src/` never names a higher one.
//!
//! The check reads the source text: any `crate::<module>` path (imports, qualified calls,
//! doc links) in a file of a lower layer that names a module above it fails the test, with
//! the file and line. Move what both need down to where both can see it (`oci`, `retry`,
//! `artifact::format`) instead of adding an exception.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};

/// (files of a layer, modules it must not name).
const RULES: &[(&str, &[&str])] = &[
    (
        "src/digest.rs",
        &[
            "reference",
            "oci",
            "registry",
            "artifact",
            "signing",
            "policy",
            "secrets",
            "webhook",
            "reconcile",
            "notify",
            "kube",
            "api",
            "agent",
            "puller",
            "cli",
            "promote",
        ],
    ),
    (
        "src/reference.rs",
        &[
            "oci",
            "registry",
            "artifact",
            "signing",
            "policy",
            "secrets",
            "webhook",
            "reconcile",
            "notify",
            "kube",
            "api",
            "agent",
            "puller",
            "cli",
            "promote",
        ],
    ),
    (
        "src/oci.rs",
        &[
            "registry",
            "artifact",
            "signing",
            "policy",
            "secrets",
            "webhook",
            "reconcile",
            "notify",
            "kube",
            "api",
            "agent",
            "puller",
            "cli",
            "promote",
        ],
    ),
    (
        "src/retry.rs",
        &[
            "registry",
            "artifact",
            "signing",
            "policy",
            "secrets",
            "webhook",
            "reconcile",
            "notify",
            "kube",
            "api",
            "agent",
            "puller",
            "cli",
            "promote",
        ],
    ),
    (
        "src/registry",
        &[
            "artifact",
            "signing",
            "policy",
            "secrets",
            "webhook",
            "reconcile",
            "notify",
            "kube",
            "api",
            "agent",
            "puller",
            "cli",
            "promote",
        ],
    ),
    (
        "src/artifact",
        &[
            "signing",
            "policy",
            "webhook",
            "reconcile",
            "notify",
            "kube",
            "api",
            "agent",
            "puller",
            "cli",
            "promote",
        ],
    ),
    (
        "src/signing",
        &[
            "policy",
            "promote",
            "webhook",
            "reconcile",
            "notify",
            "kube",
            "api",
            "agent",
            "puller",
            "cli",
        ],
    ),
    (
        "src/policy",
        &[
            "promote",
            "webhook",
            "reconcile",
            "notify",
            "kube",
            "api",
            "agent",
            "puller",
            "cli",
        ],
    ),
    // Promotion uses signing and the registry; nothing but the CLI uses it.
    (
        "src/promote",
        &[
            "policy",
            "webhook",
            "reconcile",
            "notify",
            "kube",
            "api",
            "agent",
            "puller",
            "cli",
        ],
    ),
    // SOPS (read by the lint rules and the engine) and the webhook receivers know nothing of
    // what uses them.
    (
        "src/secrets",
        &[
            "promote",
            "webhook",
            "reconcile",
            "notify",
            "kube",
            "api",
            "agent",
            "puller",
            "cli",
        ],
    ),
    (
        "src/webhook",
        &[
            "artifact",
            "signing",
            "policy",
            "promote",
            "secrets",
            "reconcile",
            "notify",
            "kube",
            "api",
            "agent",
            "puller",
            "cli",
        ],
    ),
    // The generic engine does not name Kubernetes, nor the agents or notifications around it.
    (
        "src/reconcile",
        &[
            "promote", "webhook", "notify", "kube", "api", "agent", "puller", "cli",
        ],
    ),
    // Notifications are built from the engine's summaries; the agents call them.
    (
        "src/notify",
        &["promote", "kube", "api", "agent", "puller", "cli"],
    ),
    // The custom resource types do not import the engine or the cluster code.
    (
        "src/api",
        &[
            "promote",
            "webhook",
            "reconcile",
            "notify",
            "kube",
            "agent",
            "puller",
            "cli",
        ],
    ),
    (
        "src/kube",
        &[
            "promote", "webhook", "notify", "api", "agent", "puller", "cli",
        ],
    ),
    // The two agents: the host agent and the puller, side by side above the engine.
    ("src/agent.rs", &["promote", "kube", "api", "puller", "cli"]),
    ("src/puller", &["promote", "agent", "cli"]),
];

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for entry in entries {
            rust_files(&entry, out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_path_buf());
    }
}

/// Every `crate::<forbidden>` in `text`, as `line: text`.
fn upward_mentions(text: &str, forbidden: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for (number, line) in text.lines().enumerate() {
        for (at, _) in line.match_indices("crate::") {
            let rest = &line[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if forbidden.contains(&name.as_str()) {
                found.push(format!("{}: {}", number + 1, line.trim()));
            }
        }
    }
    found
}

#[test]
fn no_layer_names_a_layer_above_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut violations = Vec::new();
    for (layer, forbidden) in RULES {
        let mut files = Vec::new();
        rust_files(&root.join(layer), &mut files);
        assert!(
            !files.is_empty(),
            "{layer}: no Rust files (moved? update RULES)"
        );
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for mention in upward_mentions(&text, forbidden) {
                violations.push(format!(
                    "{}:{mention}",
                    file.strip_prefix(root).unwrap().display()
                ));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "a lower layer names a higher one (move the shared piece down instead):\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_check_sees_imports_paths_and_doc_links() {
    let text = "use crate::artifact::format::Descriptor;\n\
                let x = crate::kube::artifact_subdirectory(p);\n\
                /// see [`crate::reconcile::Summary`]\n\
                use crate::digest::Digest;\n\
                use crate::artifacts_elsewhere::X;\n";
    let found = upward_mentions(text, &["artifact", "kube", "reconcile"]);
    assert_eq!(
        found,
        [
            "1: use crate::artifact::format::Descriptor;",
            "2: let x = crate::kube::artifact_subdirectory(p);",
            "3: /// see [`crate::reconcile::Summary`]",
        ]
    );
}
