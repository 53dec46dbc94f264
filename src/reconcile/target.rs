//! The host agent's target: a directory kept equal to an artifact, switched atomically.
//!
//! # Layout
//!
//! ```text
//! PARENT/DIR -> .DIR.tresor/<hex>         a relative symlink: what users and tools read
//! PARENT/.DIR.tresor/<hex>/               the tree of artifact sha256:<hex> (one version)
//! PARENT/.DIR.tresor/<hex>.files.json     the files tresor manages in it, with their digests
//! PARENT/.DIR.tresor/stage-*/             a version being unpacked (removed on startup)
//! PARENT/.DIR.tresor/restore-*/           a copy unpacked for drift repair (removed on startup)
//! PARENT/.DIR.tresor/link.tmp             the next symlink, before it is renamed over DIR
//! PARENT/.DIR.tresor/lock                 held while an agent runs: one agent per DIR
//! ```
//!
//! # Why a symlink to versioned directories
//!
//! A new version is unpacked completely next to the current one, its file list written, and
//! then `DIR` is replaced by renaming a new symlink over it — one `rename(2)`, atomic on
//! POSIX. A reader resolving `DIR` sees the whole old tree or the whole new tree, and a crash
//! (even `kill -9`) at any moment leaves `DIR` pointing at one complete version: the staged
//! tree is renamed to `<hex>` only once fully written, and on startup everything `DIR` does
//! not point at is cleaned up. A real directory updated file by file can only promise this
//! with a journal and recovery, and readers would still see a mix while it runs.
//!
//! # What is managed, what is left alone
//!
//! - **Managed files** are the artifact's regular files, listed in `<hex>.files.json` with
//!   their sha256. Every cycle compares them by content; an edited, deleted or replaced one
//!   is restored from the verified cache by renaming a fresh copy over it.
//! - **Files that left the artifact** disappear with the old version directory.
//! - **Unmanaged files** — anything a user or another tool created inside `DIR` that is not
//!   in the artifact — are carried into each new version: copied into the staged tree before
//!   the switch, and anything created after that copy is moved over right after the switch,
//!   before the old version is removed. Regular files, symlinks (as links, never followed)
//!   and empty directories are carried; if the new artifact now contains the same path, the
//!   artifact wins and a warning says so. Drift correction never touches unmanaged files.
//! - `DIR` itself must be tresor's symlink, absent, or an empty directory on the first run;
//!   tresor refuses to take over a directory that already holds files.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::StepError;
use crate::artifact::archive::{self, Limits};
use crate::digest::{Digest, Hasher};
use crate::secrets::Decryption;
use zeroize::Zeroizing;

const LINK_TMP: &str = "link.tmp";
const LOCK: &str = "lock";
const STAGE_PREFIX: &str = "stage-";
const RESTORE_PREFIX: &str = "restore-";
const FILES_SUFFIX: &str = ".files.json";
const MAX_WALK_ENTRIES: usize = 200_000;
const MAX_WALK_DEPTH: usize = 64;
const MAX_FILE_LIST_BYTES: u64 = 64 * 1024 * 1024;

/// Test hook: `TRESOR_TEST_CRASH_AT=before-switch|after-switch` aborts the process right
/// before or after the rename of the symlink. Only for crash-consistency tests.
pub const CRASH_ENV: &str = "TRESOR_TEST_CRASH_AT";

/// Errors managing the target directory.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The directory exists and is not tresor's.
    #[error(
        "{path} exists and is not managed by tresor (it is {what}); move it away or choose \
         another --dir"
    )]
    NotManaged {
        /// The directory.
        path: PathBuf,
        /// What it is.
        what: &'static str,
    },
    /// Another agent holds the directory.
    #[error("{path} is synced by another tresor process; run one agent per directory")]
    Locked {
        /// The directory.
        path: PathBuf,
    },
    /// The path cannot be a target.
    #[error("invalid target directory {path}: {why}")]
    InvalidDir {
        /// The path.
        path: PathBuf,
        /// Why.
        why: &'static str,
    },
    /// A version directory holds more entries than tresor walks.
    #[error("{path} holds more than {limit} entries or is nested deeper than {depth} levels")]
    TooManyEntries {
        /// The directory.
        path: PathBuf,
        /// Entry limit.
        limit: usize,
        /// Depth limit.
        depth: usize,
    },
}

impl TargetError {
    /// Stable CamelCase reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Io { .. } => "TargetIoError",
            Self::NotManaged { .. } => "TargetNotManaged",
            Self::Locked { .. } => "TargetLocked",
            Self::InvalidDir { .. } => "InvalidTarget",
            Self::TooManyEntries { .. } => "TooManyEntries",
        }
    }
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> TargetError + '_ {
    move |source| TargetError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One managed file: path relative to the version directory, content digest and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagedFile {
    /// Relative, `/`-separated path.
    pub path: String,
    /// sha256 of the content.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
}

/// `<hex>.files.json`: what tresor manages in one version directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileList {
    /// The artifact digest.
    pub artifact: Digest,
    /// Managed regular files, sorted.
    pub files: Vec<ManagedFile>,
    /// Directories the artifact creates, sorted.
    pub dirs: Vec<String>,
}

impl FileList {
    fn file_set(&self) -> BTreeSet<&str> {
        self.files.iter().map(|f| f.path.as_str()).collect()
    }

    fn dir_set(&self) -> BTreeSet<&str> {
        self.dirs.iter().map(String::as_str).collect()
    }
}

/// A version unpacked into a staging directory, not yet switched in. Dropping it removes it.
///
/// After [`Staged::decrypt`] it also holds the plaintext of its SOPS files, in memory only:
/// the host agent writes them into the target directory with mode 0600 at the switch
/// ([`Target::switch`]); the cluster applier sends them to the API server and nowhere else.
#[derive(Debug)]
pub struct Staged {
    list: FileList,
    dir: tempfile::TempDir,
    decrypted: Decrypted,
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
    /// and keeps the plaintext in memory. Fails closed: a SOPS file without a usable identity, or one
    /// that does not verify, fails the whole version, naming the file.
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
    fn materialize(&mut self) -> Result<(), TargetError> {
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

    /// The staged tree (what the policy hook inspects).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The artifact digest.
    pub fn digest(&self) -> &Digest {
        &self.list.artifact
    }

    /// The managed files.
    pub fn files(&self) -> &[ManagedFile] {
        &self.list.files
    }
}

/// What the drift check found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Drift {
    /// `DIR` is missing or points elsewhere: the symlink must be recreated.
    pub relink: bool,
    /// Managed files that are missing, edited or replaced.
    pub files: Vec<String>,
    /// The file list is missing or unreadable: regenerate it from the artifact.
    pub list_missing: bool,
    /// The whole version directory is gone: the version must be staged again.
    pub version_missing: bool,
}

impl Drift {
    /// Whether nothing needs to be done.
    pub fn is_clean(&self) -> bool {
        !self.relink && self.files.is_empty() && !self.list_missing && !self.version_missing
    }
}

/// A directory kept equal to an artifact (see the module docs for the layout).
#[derive(Debug)]
pub struct Target {
    dir: PathBuf,
    state: PathBuf,
    state_name: OsString,
    current: Option<Digest>,
    crash_at: Option<String>,
    _lock: File,
}

impl Target {
    /// Takes over `dir`: locks it, finds the version it points at and removes what a
    /// crash may have left behind (staging directories, versions `dir` does not point at,
    /// after moving unmanaged files out of them).
    pub fn open(dir: &Path) -> Result<Self, TargetError> {
        let invalid = |why| TargetError::InvalidDir {
            path: dir.to_path_buf(),
            why,
        };
        let name = match dir.components().next_back() {
            Some(std::path::Component::Normal(n)) => n.to_os_string(),
            _ => return Err(invalid("it must end in a directory name")),
        };
        let parent = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&parent).map_err(io_err(&parent))?;
        let mut state_name = OsString::from(".");
        state_name.push(&name);
        state_name.push(".tresor");
        let state = parent.join(&state_name);
        fs::create_dir_all(&state).map_err(io_err(&state))?;
        let lock_path = state.join(LOCK);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(TargetError::Locked {
                    path: dir.to_path_buf(),
                })
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_err(&lock_path)(e)),
        }
        let mut target = Self {
            dir: dir.to_path_buf(),
            state,
            state_name,
            current: None,
            crash_at: std::env::var(CRASH_ENV).ok(),
            _lock: lock,
        };
        target.current = target.read_link()?;
        target.cleanup()?;
        Ok(target)
    }

    /// The directory users read (the symlink).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The digest `DIR` points at.
    pub fn current(&self) -> Option<&Digest> {
        self.current.as_ref()
    }

    fn version_dir(&self, digest: &Digest) -> PathBuf {
        self.state.join(digest.hex())
    }

    fn list_path(&self, digest: &Digest) -> PathBuf {
        self.state.join(format!("{}{FILES_SUFFIX}", digest.hex()))
    }

    fn link_text(&self, digest: &Digest) -> PathBuf {
        Path::new(&self.state_name).join(digest.hex())
    }

    /// The digest `DIR` points at, if it is tresor's symlink to an existing version.
    fn read_link(&self) -> Result<Option<Digest>, TargetError> {
        let meta = match fs::symlink_metadata(&self.dir) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&self.dir)(e)),
        };
        if meta.is_dir() {
            let mut entries = fs::read_dir(&self.dir).map_err(io_err(&self.dir))?;
            if entries.next().is_some() {
                return Err(TargetError::NotManaged {
                    path: self.dir.clone(),
                    what: "a directory with files",
                });
            }
            fs::remove_dir(&self.dir).map_err(io_err(&self.dir))?;
            return Ok(None);
        }
        if !meta.file_type().is_symlink() {
            return Err(TargetError::NotManaged {
                path: self.dir.clone(),
                what: "a file",
            });
        }
        let text = fs::read_link(&self.dir).map_err(io_err(&self.dir))?;
        let digest = text
            .strip_prefix(&self.state_name)
            .ok()
            .and_then(|rest| rest.to_str())
            .and_then(|hex| format!("sha256:{hex}").parse::<Digest>().ok());
        match digest {
            Some(d) if self.version_dir(&d).is_dir() => Ok(Some(d)),
            Some(_) => Ok(None),
            None => Err(TargetError::NotManaged {
                path: self.dir.clone(),
                what: "a symlink tresor did not create",
            }),
        }
    }

    /// Removes leftovers of interrupted work; versions `DIR` does not point at are pruned
    /// (their late unmanaged files moved into the current version first).
    fn cleanup(&mut self) -> Result<(), TargetError> {
        let entries = fs::read_dir(&self.state).map_err(io_err(&self.state))?;
        let mut orphans = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err(&self.state))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name.starts_with(STAGE_PREFIX) || name.starts_with(RESTORE_PREFIX) {
                tracing::info!(path = %path.display(), "removing half-written directory");
                fs::remove_dir_all(&path).map_err(io_err(&path))?;
            } else if name == LINK_TMP {
                fs::remove_file(&path).map_err(io_err(&path))?;
            } else if let Ok(digest) = format!("sha256:{name}").parse::<Digest>() {
                if Some(&digest) != self.current.as_ref() {
                    orphans.push(digest);
                }
            } else if let Some(hex) = name.strip_suffix(FILES_SUFFIX) {
                let current = self.current.as_ref().map(Digest::hex);
                if current != Some(hex) && !self.state.join(hex).exists() {
                    fs::remove_file(&path).map_err(io_err(&path))?;
                }
            }
        }
        for orphan in orphans {
            tracing::info!(digest = %orphan, "removing version the directory does not point at");
            self.prune(&orphan)?;
        }
        Ok(())
    }

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

    fn link(&self, digest: &Digest) -> Result<(), TargetError> {
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

    fn read_list(&self, digest: &Digest) -> Option<FileList> {
        let path = self.list_path(digest);
        let file = File::open(&path).ok()?;
        let mut bytes = Vec::new();
        file.take(MAX_FILE_LIST_BYTES)
            .read_to_end(&mut bytes)
            .ok()?;
        let list: FileList = serde_json::from_slice(&bytes).ok()?;
        (&list.artifact == digest).then_some(list)
    }

    fn write_list(&self, list: &FileList) -> Result<(), TargetError> {
        let path = self.list_path(&list.artifact);
        let bytes = serde_json::to_vec(list).map_err(|e| io_err(&path)(io::Error::other(e)))?;
        write_atomic(&path, &bytes).map_err(io_err(&path))
    }

    fn crash_point(&self, point: &str) {
        if self.crash_at.as_deref() == Some(point) {
            eprintln!("{CRASH_ENV}={point}: aborting (test hook)");
            std::process::abort();
        }
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

fn unpack(
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

impl super::Applier for Target {
    type Drift = Drift;

    fn current(&self) -> Option<&Digest> {
        Target::current(self)
    }

    fn stage(
        &self,
        digest: &Digest,
        layer: File,
        size: u64,
        limits: &Limits,
    ) -> Result<Staged, StepError> {
        Target::stage(self, digest, layer, size, limits)
    }

    async fn apply(&mut self, staged: Staged) -> Result<(Option<Digest>, Vec<String>), StepError> {
        let switched = self.switch(staged)?;
        tracing::info!(digest = ?self.current, dir = %self.dir.display(), "applied");
        Ok(switched)
    }

    async fn prune(&mut self, previous: &Digest) -> Result<Vec<String>, StepError> {
        Ok(Target::prune(self, previous)?)
    }

    async fn check_drift(&mut self) -> Result<Option<Drift>, StepError> {
        let drift = self.check()?;
        Ok((!drift.is_clean()).then_some(drift))
    }

    async fn repair(
        &mut self,
        drift: Drift,
        layer: File,
        size: u64,
        limits: &Limits,
        decryption: &Decryption,
    ) -> Result<(Vec<String>, Vec<String>), StepError> {
        let Some(current) = self.current.clone() else {
            return Ok((Vec::new(), Vec::new()));
        };
        if drift.version_missing {
            tracing::warn!(digest = %current, "the applied version's directory is gone; restoring it");
            self.forget_current();
            let mut staged = Target::stage(self, &current, layer, size, limits)?;
            staged.decrypt(decryption, |_| true)?;
            let restored = staged.files().iter().map(|f| f.path.clone()).collect();
            let (_, warnings) = self.switch(staged)?;
            return Ok((restored, warnings));
        }
        let mut restored = Target::repair(self, &drift, layer, size, limits, decryption)?;
        if drift.relink {
            restored.push(".".to_string());
        }
        Ok((restored, Vec::new()))
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

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Lists a freshly unpacked tree: files with digests, and directories.
fn list_tree(root: &Path, artifact: &Digest) -> Result<FileList, TargetError> {
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

fn hash_file(path: &Path, limit: u64) -> io::Result<(Digest, u64)> {
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

/// Managed files of `list` that are not in `version` with the right content (also when a
/// directory on their path was replaced by a symlink or a file).
fn drifted(version: &Path, list: &FileList) -> Vec<String> {
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

fn parents_are_dirs(root: &Path, rel: &str) -> bool {
    let mut path = root.to_path_buf();
    let mut parts: Vec<&str> = rel.split('/').collect();
    parts.pop();
    parts.iter().all(|part| {
        path.push(part);
        matches!(fs::symlink_metadata(&path), Ok(m) if m.is_dir())
    })
}

/// Renames `from/rel` over `to/rel`, creating (or un-replacing) the directories on the way.
fn restore_file(from: &Path, to: &Path, rel: &str) -> Result<(), TargetError> {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    EmptyDir,
    Symlink,
    Other,
}

/// Every entry below `root`, depth first, sorted, without following symlinks; directories
/// with entries are reported as `Dir`, empty ones as `EmptyDir`. Bounded.
fn walk(root: &Path) -> Result<Vec<(String, Kind)>, TargetError> {
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
enum Carry {
    Copy,
    Move,
}

/// Carries unmanaged entries of version `from` (managed by `old`) into `to` (managed by
/// `new`). Managed paths of `new` win; existing entries in `to` are kept.
fn carry(
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
fn ancestors(rel: &str) -> impl Iterator<Item = &str> {
    rel.char_indices()
        .filter(|(_, c)| *c == '/')
        .filter_map(move |(i, _)| rel.get(..i))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(files: &[(&str, &str)]) -> (File, u64) {
        let src = tempfile::tempdir().unwrap();
        for (path, data) in files {
            let p = src.path().join(path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, data).unwrap();
        }
        let packed = archive::pack(src.path(), &archive::PackOptions::default()).unwrap();
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&packed.layer).unwrap();
        std::io::Seek::rewind(&mut f).unwrap();
        (f, packed.layer.len() as u64)
    }

    fn apply(target: &mut Target, digest: &Digest, files: &[(&str, &str)]) -> Option<Digest> {
        let (f, size) = layer(files);
        let staged = target.stage(digest, f, size, &Limits::default()).unwrap();
        let (prev, _) = target.switch(staged).unwrap();
        if let Some(p) = &prev {
            target.prune(p).unwrap();
        }
        prev
    }

    #[test]
    fn switch_carries_unmanaged_files_and_drops_files_that_left() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("site");
        let mut target = Target::open(&dir).unwrap();
        let v1 = Digest::of(b"v1");
        let v2 = Digest::of(b"v2");
        apply(&mut target, &v1, &[("a.conf", "1"), ("old/x.conf", "x")]);
        assert_eq!(fs::read_to_string(dir.join("a.conf")).unwrap(), "1");
        fs::write(dir.join("local.conf"), "mine").unwrap();
        fs::create_dir(dir.join("empty")).unwrap();
        std::os::unix::fs::symlink("a.conf", dir.join("link")).unwrap();

        let prev = apply(&mut target, &v2, &[("a.conf", "2"), ("b.conf", "b")]);
        assert_eq!(prev, Some(v1.clone()));
        assert_eq!(fs::read_to_string(dir.join("a.conf")).unwrap(), "2");
        assert_eq!(fs::read_to_string(dir.join("b.conf")).unwrap(), "b");
        assert_eq!(fs::read_to_string(dir.join("local.conf")).unwrap(), "mine");
        assert!(dir.join("empty").is_dir());
        assert_eq!(
            fs::read_link(dir.join("link")).unwrap(),
            Path::new("a.conf")
        );
        assert!(
            !dir.join("old").exists(),
            "files that left the artifact are removed"
        );
        assert!(!root.path().join(".site.tresor").join(v1.hex()).exists());
        assert_eq!(
            fs::read_link(&dir).unwrap(),
            Path::new(".site.tresor").join(v2.hex())
        );
    }

    #[test]
    fn drift_is_detected_and_repaired_without_touching_unmanaged_files() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("site");
        let mut target = Target::open(&dir).unwrap();
        let v1 = Digest::of(b"v1");
        let files = [("a.conf", "1"), ("sub/b.conf", "b")];
        apply(&mut target, &v1, &files);
        assert!(target.check().unwrap().is_clean());

        fs::write(dir.join("a.conf"), "edited").unwrap();
        fs::remove_file(dir.join("sub/b.conf")).unwrap();
        fs::write(dir.join("mine.conf"), "mine").unwrap();
        let drift = target.check().unwrap();
        assert_eq!(drift.files, ["a.conf", "sub/b.conf"]);
        let (f, size) = layer(&files);
        let restored = target
            .repair(
                &drift,
                f,
                size,
                &Limits::default(),
                &Decryption::none("test"),
            )
            .unwrap();
        assert_eq!(restored, ["a.conf", "sub/b.conf"]);
        assert_eq!(fs::read_to_string(dir.join("a.conf")).unwrap(), "1");
        assert_eq!(fs::read_to_string(dir.join("sub/b.conf")).unwrap(), "b");
        assert_eq!(fs::read_to_string(dir.join("mine.conf")).unwrap(), "mine");
        assert!(target.check().unwrap().is_clean());

        // The symlink itself removed: recreated.
        fs::remove_file(&dir).unwrap();
        let drift = target.check().unwrap();
        assert!(drift.relink && drift.files.is_empty());
        let (f, size) = layer(&files);
        target
            .repair(
                &drift,
                f,
                size,
                &Limits::default(),
                &Decryption::none("test"),
            )
            .unwrap();
        assert_eq!(fs::read_to_string(dir.join("a.conf")).unwrap(), "1");
    }

    #[test]
    fn startup_removes_half_written_versions_and_keeps_the_current_one() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("site");
        let v1 = Digest::of(b"v1");
        {
            let mut target = Target::open(&dir).unwrap();
            apply(&mut target, &v1, &[("a.conf", "1")]);
        }
        let state = root.path().join(".site.tresor");
        fs::create_dir(state.join("stage-xyz")).unwrap();
        let stray = Digest::of(b"stray");
        fs::create_dir(state.join(stray.hex())).unwrap();
        fs::write(state.join(stray.hex()).join("half"), "x").unwrap();
        let target = Target::open(&dir).unwrap();
        assert_eq!(target.current(), Some(&v1));
        let mut names: Vec<String> = fs::read_dir(&state)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut expected = vec![
            v1.hex().to_string(),
            format!("{}{FILES_SUFFIX}", v1.hex()),
            LOCK.to_string(),
        ];
        expected.sort();
        assert_eq!(names, expected);
    }

    #[test]
    fn a_directory_with_files_is_not_taken_over_and_a_second_agent_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("site");
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("x"), "x").unwrap();
        let err = Target::open(&dir).unwrap_err();
        assert_eq!(err.reason(), "TargetNotManaged");

        let other = root.path().join("other");
        let _first = Target::open(&other).unwrap();
        assert_eq!(Target::open(&other).unwrap_err().reason(), "TargetLocked");
    }
}
