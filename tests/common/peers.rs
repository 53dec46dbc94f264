//! The real tools of the interop tests (cosign, oras, crane, Flux's OCI library), built
//! from testenv/peers/ by `scripts/peers.sh` and cached outside the repository.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

/// The binary of peer `name` (see `scripts/peers.sh list`), built on first use; once per
/// test process. Fails the test when it cannot be built: interop is not optional.
pub fn peer(name: &str) -> PathBuf {
    static PATHS: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);
    let mut paths = PATHS.lock().unwrap_or_else(|e| e.into_inner());
    let paths = paths.get_or_insert_with(HashMap::new);
    if let Some(path) = paths.get(name) {
        return path.clone();
    }
    let out = std::process::Command::new(super::cluster::repo_dir().join("scripts/peers.sh"))
        .args(["path", name])
        .output()
        .expect("scripts/peers.sh runs");
    assert!(
        out.status.success(),
        "scripts/peers.sh path {name} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    paths.insert(name.to_string(), path.clone());
    path
}
