//! The real peer tools of `scripts/peers.sh` (cosign v2 and v3, oras, crane, flux-oci),
//! built from their Go modules at pinned versions and cached outside the repository.
//!
//! [`peer`] runs `scripts/peers.sh path NAME` once per name and process (the first call may
//! build the tool for minutes; the script's lock makes parallel tests wait for one build).
//! A peer that cannot be built fails the test: interop tests never skip.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The absolute path of peer `name`'s binary, building it on first use.
pub fn peer(name: &str) -> PathBuf {
    static PATHS: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    // Held across the build: one `peers.sh` per name and process is enough.
    let mut paths = PATHS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = paths.get(name) {
        return path.clone();
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/peers.sh");
    let out = Command::new(&script)
        .args(["path", name])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "`scripts/peers.sh path {name}` failed ({:?}); it needs Go and the Go module proxy:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    let path = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    assert!(
        path.is_file(),
        "`scripts/peers.sh path {name}` printed {}, which is not a file",
        path.display()
    );
    paths.insert(name.to_string(), path.clone());
    path
}

/// Runs peer `name` with `args`, which must succeed; its stdout.
pub fn run(name: &str, args: &[&str]) -> String {
    let out = Command::new(peer(name)).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{name} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
