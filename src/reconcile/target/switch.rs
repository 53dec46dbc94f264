//! The switch: a staged version renamed into place and `DIR`'s symlink renamed over (one
//! atomic `rename(2)`), the previous version pruned after its late unmanaged files are
//! moved over, and the crash points the tests kill the agent at.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use super::carry::{carry, Carry};
use super::{io_err, Staged, Target, TargetError, CRASH_ENV, LINK_TMP};
use crate::digest::Digest;

impl Target {
    /// Switches `DIR` to the staged version: carries unmanaged files over, renames the
    /// staged tree into place, then renames a new symlink over `DIR`. Returns the previous
    /// digest (for [`Target::prune`]) and warnings about files that could not be carried.
    pub fn switch(
        &mut self,
        mut staged: Staged,
    ) -> Result<(Option<Digest>, Vec<String>), TargetError> {
        let digest = staged.list.artifact.clone();
        let version = self.version_dir(&digest);
        if self.current.as_ref() == Some(&digest) && version.is_dir() {
            return Ok((None, Vec::new()));
        }
        let mut warnings = Vec::new();
        if let Some(current) = self.current.clone() {
            match self.read_list(&current) {
                Some(old) => {
                    warnings = carry(
                        &self.version_dir(&current),
                        staged.path(),
                        &old,
                        &staged.list,
                        Carry::Copy,
                    )?;
                }
                None => warnings.push(format!(
                    "the file list of {current} is missing: unmanaged files were not carried over"
                )),
            }
        }
        staged.materialize()?;
        self.write_list(&staged.list)?;
        if version.exists() {
            fs::remove_dir_all(&version).map_err(io_err(&version))?;
        }
        let staged_path = staged.dir.keep();
        if let Err(e) = fs::rename(&staged_path, &version) {
            let _ = fs::remove_dir_all(&staged_path);
            return Err(io_err(&version)(e));
        }
        sync_dir(&self.state);
        self.crash_point("before-switch");
        self.link(&digest)?;
        self.crash_point("after-switch");
        let previous = self.current.replace(digest.clone());
        Ok((previous.filter(|p| p != &digest), warnings))
    }

    /// Removes a version `DIR` no longer points at, after moving unmanaged files created
    /// since the switch into the current version.
    pub fn prune(&self, previous: &Digest) -> Result<Vec<String>, TargetError> {
        if self.current.as_ref() == Some(previous) {
            return Ok(Vec::new());
        }
        let old_dir = self.version_dir(previous);
        let mut warnings = Vec::new();
        if old_dir.is_dir() {
            let current = self
                .current
                .as_ref()
                .and_then(|c| Some((c, self.read_list(c)?)));
            if let (Some(old), Some((current, new))) = (self.read_list(previous), current) {
                warnings = carry(
                    &old_dir,
                    &self.version_dir(current),
                    &old,
                    &new,
                    Carry::Move,
                )?;
            }
            fs::remove_dir_all(&old_dir).map_err(io_err(&old_dir))?;
        }
        let list = self.list_path(previous);
        match fs::remove_file(&list) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&list)(e)),
        }
        Ok(warnings)
    }

    pub(super) fn link(&self, digest: &Digest) -> Result<(), TargetError> {
        let tmp = self.state.join(LINK_TMP);
        match fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&tmp)(e)),
        }
        std::os::unix::fs::symlink(self.link_text(digest), &tmp).map_err(io_err(&tmp))?;
        fs::rename(&tmp, &self.dir).map_err(io_err(&self.dir))?;
        if let Some(parent) = self.dir.parent() {
            sync_dir(if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            });
        }
        Ok(())
    }

    pub(super) fn crash_point(&self, point: &str) {
        if self.crash_at.as_deref() == Some(point) {
            eprintln!("{CRASH_ENV}={point}: aborting (test hook)");
            std::process::abort();
        }
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

pub(super) fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}
