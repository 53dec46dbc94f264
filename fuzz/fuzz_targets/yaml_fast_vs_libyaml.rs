//! The fast YAML reader (`src/artifact/objects/fast.rs`) against libyaml (serde_norway).
//!
//! The fast reader may decline any input (libyaml then reads it); when it returns
//! documents, they must be exactly what libyaml returns for the same text — same document
//! indexes, lines and values, at every depth (full, identity, policy view). Any difference,
//! including the fast reader accepting what libyaml refuses, is a finding: the policy would
//! see another document than `kubectl`. The public tree parser is run too (it must not
//! panic, and Files mode must accept what the fast reader accepted).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tresor::artifact::objects::{fast_reader_agrees_with_libyaml, parse_tree, ContentMode};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let accepted = match fast_reader_agrees_with_libyaml(text) {
        Ok(accepted) => accepted,
        Err(difference) => panic!("{difference}"),
    };
    let files = vec![("f.yaml".to_string(), data.to_vec())];
    let parsed = parse_tree(&files, ContentMode::Files);
    if accepted {
        assert!(
            parsed.is_ok(),
            "fast reader accepted, parse_tree refused: {parsed:?}"
        );
    }
    let _ = parse_tree(&files, ContentMode::Kubernetes);
});
