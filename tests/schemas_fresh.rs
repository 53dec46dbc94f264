//! The generated files under schemas/ and deploy/crds/ must match the Rust types.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;

#[test]
fn generated_crds_and_schemas_are_committed_and_fresh() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut stale = Vec::new();
    for (path, generated) in tresor::api::crdgen::generated_files().unwrap() {
        match std::fs::read_to_string(root.join(&path)) {
            Ok(committed) if committed == generated => {}
            Ok(_) => stale.push(format!("{path} (differs)")),
            Err(e) => stale.push(format!("{path} ({e})")),
        }
    }
    assert!(
        stale.is_empty(),
        "stale generated files: {}\nregenerate them from the repository root with `{}` \
         (just the CRDs: `cargo run --bin tresor-crdgen > schemas/crds.yaml`), then commit",
        stale.join(", "),
        tresor::api::crdgen::REGENERATE
    );
}

#[test]
fn crdgen_binary_prints_the_committed_crds() {
    let out = assert_cmd::Command::cargo_bin("tresor-crdgen")
        .unwrap()
        .output()
        .unwrap();
    assert!(out.status.success());
    let committed =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/crds.yaml"))
            .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), committed);
}
