//! Carry-over: files a user or another tool created inside `DIR` (not in the artifact) are
//! copied into each new version before the switch and moved over after it; the bounded,
//! sorted walk both this and staging use.

use std::fs;
use std::path::Path;

use super::{io_err, FileList, TargetError, MAX_WALK_DEPTH, MAX_WALK_ENTRIES};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    File,
    Dir,
    EmptyDir,
    Symlink,
    Other,
}

/// Every entry below `root`, depth first, sorted, without following symlinks; directories
/// with entries are reported as `Dir`, empty ones as `EmptyDir`. Bounded.
pub(super) fn walk(root: &Path) -> Result<Vec<(String, Kind)>, TargetError> {
    fn visit(
        root: &Path,
        dir: &Path,
        prefix: &str,
        depth: usize,
        out: &mut Vec<(String, Kind)>,
    ) -> Result<bool, TargetError> {
        let too_many = || TargetError::TooManyEntries {
            path: root.to_path_buf(),
            limit: MAX_WALK_ENTRIES,
            depth: MAX_WALK_DEPTH,
        };
        if depth > MAX_WALK_DEPTH {
            return Err(too_many());
        }
        let mut names = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            names.push((entry.file_name(), entry.file_type().map_err(io_err(dir))?));
            if names.len() + out.len() > MAX_WALK_ENTRIES {
                return Err(too_many());
            }
        }
        names.sort_by(|a, b| a.0.cmp(&b.0));
        let any = !names.is_empty();
        for (name, ty) in names {
            let Some(name) = name.to_str() else {
                tracing::warn!(dir = %dir.display(), "skipping a file name that is not UTF-8");
                continue;
            };
            let rel = if prefix.is_empty() {
                name.to_string()
            } else {
                format!("{prefix}/{name}")
            };
            if ty.is_dir() {
                let index = out.len();
                out.push((rel.clone(), Kind::Dir));
                let has_children = visit(root, &dir.join(name), &rel, depth + 1, out)?;
                if !has_children {
                    if let Some(slot) = out.get_mut(index) {
                        slot.1 = Kind::EmptyDir;
                    }
                }
            } else if ty.is_file() {
                out.push((rel, Kind::File));
            } else if ty.is_symlink() {
                out.push((rel, Kind::Symlink));
            } else {
                out.push((rel, Kind::Other));
            }
        }
        Ok(any)
    }
    let mut out = Vec::new();
    visit(root, root, "", 0, &mut out)?;
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Carry {
    Copy,
    Move,
}

/// Carries unmanaged entries of version `from` (managed by `old`) into `to` (managed by
/// `new`). Managed paths of `new` win; existing entries in `to` are kept.
pub(super) fn carry(
    from: &Path,
    to: &Path,
    old: &FileList,
    new: &FileList,
    mode: Carry,
) -> Result<Vec<String>, TargetError> {
    let old_files = old.file_set();
    let old_dirs = old.dir_set();
    let new_files = new.file_set();
    let new_dirs = new.dir_set();
    let mut warnings = Vec::new();
    for (rel, kind) in walk(from)? {
        let unmanaged = match kind {
            Kind::Dir => continue,
            Kind::EmptyDir => !old_dirs.contains(rel.as_str()),
            _ => !old_files.contains(rel.as_str()),
        };
        if !unmanaged {
            continue;
        }
        if kind == Kind::Other {
            warnings.push(format!(
                "{rel}: not a file, link or directory; not carried over"
            ));
            continue;
        }
        let clashes = new_files.contains(rel.as_str())
            || (kind != Kind::EmptyDir && new_dirs.contains(rel.as_str()))
            || ancestors(&rel).any(|a| new_files.contains(a));
        if clashes {
            warnings.push(format!(
                "{rel}: not managed by tresor, but the new version has this path; the \
                 artifact's version wins"
            ));
            continue;
        }
        let src = from.join(&rel);
        let dst = to.join(&rel);
        if fs::symlink_metadata(&dst).is_ok() {
            continue;
        }
        if let Some(parent) = dst.parent() {
            if let Err(e) = fs::create_dir_all(parent) {
                warnings.push(format!("{rel}: cannot create its directory: {e}"));
                continue;
            }
        }
        let result = match (mode, kind) {
            (Carry::Move, _) => fs::rename(&src, &dst),
            (Carry::Copy, Kind::File) => fs::copy(&src, &dst).map(|_| ()),
            (Carry::Copy, Kind::Symlink) => {
                fs::read_link(&src).and_then(|target| std::os::unix::fs::symlink(target, &dst))
            }
            (Carry::Copy, _) => fs::create_dir(&dst),
        };
        match result {
            Ok(()) => tracing::debug!(file = %rel, "carried unmanaged entry into the new version"),
            Err(e) => warnings.push(format!("{rel}: cannot carry it over: {e}")),
        }
    }
    Ok(warnings)
}

/// `a/b/c` → `a/b`, `a`.
pub(super) fn ancestors(rel: &str) -> impl Iterator<Item = &str> {
    rel.char_indices()
        .filter(|(_, c)| *c == '/')
        .filter_map(move |(i, _)| rel.get(..i))
}
