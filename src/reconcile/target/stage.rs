//! Staging: a content layer unpacked (hardened) into a new directory next to the versions,
//! its files listed with their digests; and the file lists (`<hex>.files.json`) that say
//! which files of a version tresor manages.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use super::carry::{walk, Kind};
use super::switch::write_atomic;
use super::{
    io_err, FileList, ManagedFile, Staged, Target, TargetError, MAX_FILE_LIST_BYTES, STAGE_PREFIX,
};
use crate::artifact::archive::{self, Limits};
use crate::digest::{Digest, Hasher};
use crate::reconcile::StepError;

impl Target {
    /// Unpacks the layer into a new staging directory (hardened, with `limits`) and lists
    /// its files with their digests.
    pub fn stage(
        &self,
        digest: &Digest,
        layer: File,
        size: u64,
        limits: &Limits,
    ) -> Result<Staged, StepError> {
        stage_in(&self.state, digest, layer, size, limits)
    }

    pub(super) fn read_list(&self, digest: &Digest) -> Option<FileList> {
        let path = self.list_path(digest);
        let file = File::open(&path).ok()?;
        let mut bytes = Vec::new();
        file.take(MAX_FILE_LIST_BYTES)
            .read_to_end(&mut bytes)
            .ok()?;
        let list: FileList = serde_json::from_slice(&bytes).ok()?;
        (&list.artifact == digest).then_some(list)
    }

    pub(super) fn write_list(&self, list: &FileList) -> Result<(), TargetError> {
        let path = self.list_path(&list.artifact);
        let bytes = serde_json::to_vec(list).map_err(|e| io_err(&path)(io::Error::other(e)))?;
        write_atomic(&path, &bytes).map_err(io_err(&path))
    }
}

/// Unpacks a content layer (hardened, with `limits`) into a new staging directory under
/// `parent` and lists its files; the directory is removed when the [`Staged`] is dropped.
pub fn stage_in(
    parent: &Path,
    digest: &Digest,
    layer: File,
    size: u64,
    limits: &Limits,
) -> Result<Staged, StepError> {
    let dir = tempfile::Builder::new()
        .prefix(STAGE_PREFIX)
        .tempdir_in(parent)
        .map_err(io_err(parent))?;
    archive::extract_to_dir(BufReader::new(layer), size, dir.path(), limits)?;
    let list = list_tree(dir.path(), digest)?;
    Ok(Staged { list, dir })
}

/// Lists a freshly unpacked tree: files with digests, and directories.
pub(super) fn list_tree(root: &Path, artifact: &Digest) -> Result<FileList, TargetError> {
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    for (rel, kind) in walk(root)? {
        let path = root.join(&rel);
        match kind {
            Kind::File => {
                let (digest, size) = hash_file(&path, u64::MAX).map_err(io_err(&path))?;
                files.push(ManagedFile {
                    path: rel,
                    digest,
                    size,
                });
            }
            Kind::Dir | Kind::EmptyDir => dirs.push(rel),
            Kind::Symlink | Kind::Other => {}
        }
    }
    Ok(FileList {
        artifact: artifact.clone(),
        files,
        dirs,
    })
}

pub(super) fn hash_file(path: &Path, limit: u64) -> io::Result<(Digest, u64)> {
    let file = File::open(path)?;
    let mut reader = file.take(limit);
    let mut hasher = Hasher::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(buf.get(..n).unwrap_or_default());
    }
    let size = hasher.len();
    Ok((hasher.finish(), size))
}
