//! Staging: a content layer unpacked (hardened) into a new directory next to the versions,
//! its files listed with their digests; and the file lists (`<hex>.files.json`) that say
//! which files of a version tresor manages.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::Path;

use zeroize::Zeroizing;

use super::carry::{walk, Kind};
use super::switch::write_atomic;
use super::{
    io_err, FileList, ManagedFile, Staged, Target, TargetError, MAX_FILE_LIST_BYTES, STAGE_PREFIX,
};
use crate::artifact::archive::{self, Limits};
use crate::digest::{Digest, Hasher};
use crate::reconcile::StepError;
use crate::secrets::Decryption;

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
    unpack(parent, STAGE_PREFIX, digest, layer, size, limits)
}

/// Like [`stage_in`], into a directory named with `prefix` (staging or restoring).
pub(super) fn unpack(
    parent: &Path,
    prefix: &str,
    digest: &Digest,
    layer: File,
    size: u64,
    limits: &Limits,
) -> Result<Staged, StepError> {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(parent)
        .map_err(io_err(parent))?;
    archive::extract_to_dir(BufReader::new(layer), size, dir.path(), limits)?;
    let list = list_tree(dir.path(), digest)?;
    Ok(Staged {
        list,
        dir,
        decrypted: Decrypted::default(),
    })
}

/// Decrypted files by path relative to the artifact's root; zeroed when dropped.
#[derive(Default)]
pub struct Decrypted(BTreeMap<String, Zeroizing<Vec<u8>>>);

impl std::fmt::Debug for Decrypted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: the plaintext never reaches a log.
        f.debug_list().entries(self.0.keys()).finish()
    }
}

impl Decrypted {
    /// The plaintext of `path` (relative to the artifact's root), if it was a SOPS file.
    pub fn get(&self, path: &str) -> Option<&[u8]> {
        self.0.get(path).map(|p| p.as_slice())
    }

    /// The decrypted paths.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// Whether no file was decrypted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Staged {
    /// Decrypts the staged SOPS files that `used` accepts with `decryption` (MACs verified)
    /// and keeps the plaintext in memory. Fails closed: a SOPS file without a usable
    /// identity, or one that does not verify, fails the whole version, naming the file.
    pub fn decrypt(
        &mut self,
        decryption: &Decryption,
        used: impl Fn(&str) -> bool,
    ) -> Result<usize, StepError> {
        let mut decrypted = BTreeMap::new();
        for file in self.list.files.iter().filter(|f| used(&f.path)) {
            let path = self.dir.path().join(&file.path);
            let bytes = fs::read(&path).map_err(io_err(&path))?;
            if let Some(plain) = decryption.decrypt_file(&file.path, &bytes)? {
                decrypted.insert(file.path.clone(), plain);
            }
        }
        let count = decrypted.len();
        self.decrypted = Decrypted(decrypted);
        Ok(count)
    }

    /// The decrypted files (empty before [`Staged::decrypt`]).
    pub fn decrypted(&self) -> &Decrypted {
        &self.decrypted
    }

    /// Writes the decrypted files over their encrypted copies in the staged tree, each a
    /// new file with mode 0600, and lists them with their plaintext digests (the host
    /// agent's drift check compares those). Only for the host agent's own directory.
    pub(super) fn materialize(&mut self) -> Result<(), TargetError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        for (rel, plain) in &self.decrypted.0 {
            let path = self.dir.path().join(rel);
            fs::remove_file(&path).map_err(io_err(&path))?;
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(io_err(&path))?;
            file.write_all(plain).map_err(io_err(&path))?;
            file.sync_all().map_err(io_err(&path))?;
            let mut hasher = Hasher::default();
            hasher.update(plain);
            if let Some(entry) = self.list.files.iter_mut().find(|f| &f.path == rel) {
                entry.size = plain.len() as u64;
                entry.digest = hasher.finish();
            }
        }
        Ok(())
    }
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
