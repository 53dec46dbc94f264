//! The generated CLI reference (docs/cli-reference.md) must match the clap definitions; the
//! CRD reference is one of the files `tests/schemas_fresh.rs` checks.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;

#[test]
fn cli_reference_is_committed_and_fresh() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (path, generated) in tresor::cli::reference::generated_files() {
        let committed = std::fs::read_to_string(root.join(&path)).unwrap_or_default();
        assert!(
            committed == generated,
            "{path} is stale: regenerate it from the repository root with `{}`, then commit",
            tresor::api::crdgen::REGENERATE
        );
    }
}
