//! Drift: the current version compared with its file list by content (and the symlink with
//! what it should be), and drifted files restored from a fresh unpack of the verified
//! layer. Unmanaged files are never touched here.

use std::fs::{self, File};
use std::io;
use std::path::Path;

use super::stage::{hash_file, unpack};
use super::{io_err, Drift, FileList, Target, TargetError, RESTORE_PREFIX};
use crate::artifact::archive::Limits;
use crate::reconcile::StepError;
use crate::secrets::Decryption;

impl Target {
    /// Compares the current version with its file list (by content) and the symlink with
    /// what it should be.
    pub fn check(&self) -> Result<Drift, TargetError> {
        let mut drift = Drift::default();
        let Some(current) = &self.current else {
            return Ok(drift);
        };
        let version = self.version_dir(current);
        match fs::symlink_metadata(&version) {
            Ok(m) if m.is_dir() => {}
            _ => {
                drift.version_missing = true;
                return Ok(drift);
            }
        }
        match fs::symlink_metadata(&self.dir) {
            Ok(m) if m.file_type().is_symlink() => {
                let text = fs::read_link(&self.dir).map_err(io_err(&self.dir))?;
                drift.relink = text != self.link_text(current);
            }
            Ok(m) if m.is_dir() => {
                return Err(TargetError::NotManaged {
                    path: self.dir.clone(),
                    what: "a directory that replaced tresor's symlink",
                })
            }
            Ok(_) => {
                return Err(TargetError::NotManaged {
                    path: self.dir.clone(),
                    what: "a file that replaced tresor's symlink",
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => drift.relink = true,
            Err(e) => return Err(io_err(&self.dir)(e)),
        }
        match self.read_list(current) {
            Some(list) => drift.files = drifted(&version, &list),
            None => drift.list_missing = true,
        }
        Ok(drift)
    }

    /// Forgets the current version (its directory is gone), so the next switch stages it
    /// from scratch.
    pub fn forget_current(&mut self) {
        self.current = None;
    }

    /// Restores drifted managed files (and the symlink) from the artifact's layer, which
    /// the caller read from the verified cache. Returns the restored paths.
    ///
    /// SOPS files are decrypted with `decryption` again (the restored copy is the plaintext,
    /// mode 0600, never the encrypted file).
    pub fn repair(
        &self,
        drift: &Drift,
        layer: File,
        size: u64,
        limits: &Limits,
        decryption: &Decryption,
    ) -> Result<Vec<String>, StepError> {
        let Some(current) = self.current.clone() else {
            return Ok(Vec::new());
        };
        let version = self.version_dir(&current);
        let mut restored = Vec::new();
        if !drift.files.is_empty() || drift.list_missing {
            let mut fresh = unpack(&self.state, RESTORE_PREFIX, &current, layer, size, limits)?;
            fresh.decrypt(decryption, |_| true)?;
            fresh.materialize()?;
            let files = if drift.list_missing {
                self.write_list(&fresh.list)?;
                drifted(&version, &fresh.list)
            } else {
                drift.files.clone()
            };
            for path in files {
                restore_file(fresh.path(), &version, &path)?;
                restored.push(path);
            }
        }
        if drift.relink {
            self.link(&current)?;
            tracing::info!(dir = %self.dir.display(), "symlink restored");
        }
        Ok(restored)
    }
}

/// Managed files of `list` that are not in `version` with the right content (also when a
/// directory on their path was replaced by a symlink or a file).
pub(super) fn drifted(version: &Path, list: &FileList) -> Vec<String> {
    let mut out = Vec::new();
    for file in &list.files {
        let ok = parents_are_dirs(version, &file.path) && {
            let path = version.join(&file.path);
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_file() && m.len() == file.size => {
                    matches!(hash_file(&path, file.size), Ok((d, _)) if d == file.digest)
                }
                _ => false,
            }
        };
        if !ok {
            out.push(file.path.clone());
        }
    }
    out
}

pub(super) fn parents_are_dirs(root: &Path, rel: &str) -> bool {
    let mut path = root.to_path_buf();
    let mut parts: Vec<&str> = rel.split('/').collect();
    parts.pop();
    parts.iter().all(|part| {
        path.push(part);
        matches!(fs::symlink_metadata(&path), Ok(m) if m.is_dir())
    })
}

/// Renames `from/rel` over `to/rel`, creating (or un-replacing) the directories on the way.
pub(super) fn restore_file(from: &Path, to: &Path, rel: &str) -> Result<(), TargetError> {
    let mut dir = to.to_path_buf();
    let mut parts: Vec<&str> = rel.split('/').collect();
    parts.pop();
    for part in parts {
        dir.push(part);
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                fs::remove_file(&dir).map_err(io_err(&dir))?;
                fs::create_dir(&dir).map_err(io_err(&dir))?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&dir).map_err(io_err(&dir))?;
            }
            Err(e) => return Err(io_err(&dir)(e)),
        }
    }
    let dst = to.join(rel);
    if let Ok(m) = fs::symlink_metadata(&dst) {
        if m.is_dir() {
            fs::remove_dir_all(&dst).map_err(io_err(&dst))?;
        }
    }
    let src = from.join(rel);
    fs::rename(&src, &dst).map_err(io_err(&dst))?;
    tracing::info!(file = rel, "restored drifted file");
    Ok(())
}
