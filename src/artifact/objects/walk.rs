//! Which files of a tree are manifests, and walking a directory for them: sorted, symlinks
//! not followed, each file's size checked before it is read.

use std::path::{Path, PathBuf};

use super::{ContentMode, ObjectsError, MAX_FILE_BYTES};

/// Collects the manifest files under `dir` (sorted by name at each level, symlinks not
/// followed, files over [`MAX_FILE_BYTES`] refused) as (path relative to the root, path).
pub(super) fn walk(
    dir: &Path,
    prefix: &str,
    mode: ContentMode,
    out: &mut Vec<(String, PathBuf)>,
) -> Result<(), ObjectsError> {
    let read_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ObjectsError::Read { path, source }
    };
    let mut entries = std::fs::read_dir(dir)
        .map_err(read_err(dir))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_err(dir))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let file_type = entry.file_type().map_err(read_err(&path))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        if file_type.is_dir() {
            walk(&path, &rel, mode, out)?;
        } else if file_type.is_file() && format_of(&rel, mode).is_some() {
            let size = entry.metadata().map_err(read_err(&path))?.len();
            if size > MAX_FILE_BYTES {
                return Err(ObjectsError::TooLarge {
                    file: rel,
                    size,
                    limit: MAX_FILE_BYTES,
                });
            }
            out.push((rel, path));
        }
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    Yaml,
    Json,
}

/// Which parser a file needs, or `None` when it is not a manifest.
pub(super) fn format_of(path: &str, mode: ContentMode) -> Option<Format> {
    let base = path.rsplit('/').next().unwrap_or(path);
    let is_kustomization = matches!(
        base,
        "kustomization.yaml" | "kustomization.yml" | "Kustomization"
    );
    if mode == ContentMode::Kubernetes && is_kustomization {
        return None;
    }
    if base.ends_with(".yaml") || base.ends_with(".yml") {
        Some(Format::Yaml)
    } else if base.ends_with(".json") {
        Some(Format::Json)
    } else {
        None
    }
}
