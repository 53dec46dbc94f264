//! The generated CLI reference (docs/cli-reference.md) must match the clap definitions; the
//! CRD reference is one of the files `tests/schemas_fresh.rs` checks. The example alerts
//! (deploy/examples/alerts.yaml) name only metrics and reasons the code has.
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

/// Every `tresor_*` metric an example alert uses is a family the metrics endpoint renders, and
/// every reason its expressions list is a reason the code gives: an alert on a name that does
/// not exist never fires.
#[test]
fn example_alerts_name_real_metrics_and_reasons() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("deploy/examples/alerts.yaml")).unwrap();
    let rule: serde_json::Value = serde_norway::from_str(&text).unwrap();
    let rendered = tresor::reconcile::metrics::Metrics::default().render();
    let source = source_text(&root.join("src"));
    let mut checked = 0;
    for group in rule["spec"]["groups"].as_array().unwrap() {
        for alert in group["rules"].as_array().unwrap() {
            let name = alert["alert"].as_str().unwrap();
            let expr = alert["expr"].as_str().unwrap();
            for metric in identifiers(expr).filter(|i| i.starts_with("tresor_")) {
                let family = ["_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|s| metric.strip_suffix(s))
                    .unwrap_or(metric);
                assert!(
                    rendered.contains(&format!("# TYPE {family} ")),
                    "{name}: no metric {family} on /metrics"
                );
                checked += 1;
            }
            if let Some(at) = expr.find("reason=~\"") {
                let list = &expr[at + "reason=~\"".len()..];
                let list = &list[..list.find('"').unwrap()];
                for reason in list.split('|') {
                    assert!(
                        source.contains(&format!("\"{reason}\"")),
                        "{name}: no reason {reason} in src/"
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 10, "only {checked} names checked");
}

fn identifiers(expr: &str) -> impl Iterator<Item = &str> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|s| !s.is_empty())
}

fn source_text(dir: &Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            text.push_str(&source_text(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            text.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
    text
}
