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

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::StepError;
use crate::artifact::archive::Limits;
use crate::digest::Digest;
use crate::secrets::Decryption;

mod carry;
mod drift;
mod lock;
mod stage;
mod switch;

pub use stage::{stage_in, Decrypted};
pub use switch::write_atomic;

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

impl Staged {
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
        let lock = lock::acquire(&state, dir)?;
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

#[cfg(test)]
mod tests {
    use std::io::Write;

    use crate::artifact::archive;

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
