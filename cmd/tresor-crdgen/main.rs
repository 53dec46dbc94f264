//! `tresor-crdgen`: prints tresor's CRDs as multi-document YAML, rendered from the Rust types.
//!
//! `tresor-crdgen > schemas/crds.yaml` regenerates the CRDs; `tresor-crdgen --write` (from the
//! repository root) writes every generated file: `schemas/crds.yaml`, `deploy/crds/crds.yaml`,
//! the JSON schemas, `docs/crd-reference.md` and `docs/cli-reference.md`. Exit codes: 0 ok,
//! 2 error.

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tresor-crdgen: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => {
            let yaml = tresor::api::crdgen::crds_yaml().map_err(|e| e.to_string())?;
            std::io::stdout()
                .write_all(yaml.as_bytes())
                .map_err(|e| format!("writing stdout: {e}"))
        }
        [flag] if flag == "--write" => {
            let mut files = tresor::api::crdgen::generated_files().map_err(|e| e.to_string())?;
            files.extend(tresor::cli::reference::generated_files());
            for (path, content) in files {
                std::fs::write(&path, content).map_err(|e| format!("writing {path}: {e}"))?;
                eprintln!("wrote {path}");
            }
            Ok(())
        }
        _ => Err("usage: tresor-crdgen [--write] (run --write from the repository root)".into()),
    }
}
