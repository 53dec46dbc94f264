//! The content-addressed on-disk cache: verified manifests and blobs by digest.
//!
//! ```text
//! CACHE/manifests/sha256/<hex>   manifest bytes, stored only after the verify step passed
//! CACHE/blobs/sha256/<hex>       content layers, stored after their digest was checked
//! CACHE/tmp/                     files being written (renamed into place when complete)
//! ```
//!
//! Entries are written to `tmp/` and renamed into place, so a crash never leaves a partial
//! entry under a digest. Every read hashes the entry again: a corrupted entry (disk error,
//! tampering, a truncated copy) is reported as [`Lookup::Corrupted`], deleted, and the
//! caller fetches it again. Because manifests are only stored once verified, the cache is
//! what the engine reconciles from when the registry is unreachable.

use std::fs::{self, File};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::artifact::format::{Descriptor, MAX_MANIFEST_BYTES};
use crate::digest::{Digest, Hasher};

const COPY_BUFFER: usize = 64 * 1024;

/// Errors of the on-disk cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A cache file or directory could not be read or written.
    #[error("cache {path}: {source}; check permissions and free space, or pass --cache-dir")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

impl CacheError {
    /// Stable CamelCase reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Io { .. } => "CacheIoError",
        }
    }
}

/// The result of a cache lookup.
#[derive(Debug)]
pub enum Lookup<T> {
    /// Found and verified.
    Hit(T),
    /// Not in the cache.
    Miss,
    /// Found, but it did not hash to its digest: it has been deleted.
    Corrupted,
}

/// A content-addressed cache directory.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    /// Opens (creating) the cache at `root`.
    pub fn open(root: &Path) -> Result<Self, CacheError> {
        for sub in ["manifests/sha256", "blobs/sha256", "tmp"] {
            let path = root.join(sub);
            fs::create_dir_all(&path).map_err(|source| CacheError::Io { path, source })?;
        }
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// `$XDG_CACHE_HOME/tresor`, else `$HOME/.cache/tresor`; `None` when neither is set.
    pub fn default_dir() -> Option<PathBuf> {
        let from = |var: &str| {
            std::env::var_os(var)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        from("XDG_CACHE_HOME")
            .map(|d| d.join("tresor"))
            .or_else(|| from("HOME").map(|h| h.join(".cache").join("tresor")))
    }

    /// The cache directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob `digest` is stored.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs").join("sha256").join(digest.hex())
    }

    /// Where the manifest `digest` is stored.
    pub fn manifest_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("manifests")
            .join("sha256")
            .join(digest.hex())
    }

    fn io(path: &Path) -> impl Fn(io::Error) -> CacheError + '_ {
        move |source| CacheError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Stores verified manifest bytes under `digest` (which the caller has checked).
    pub fn put_manifest(&self, digest: &Digest, bytes: &[u8]) -> Result<(), CacheError> {
        let target = self.manifest_path(digest);
        let tmp_dir = self.root.join("tmp");
        let mut tmp = tempfile::NamedTempFile::new_in(&tmp_dir).map_err(Self::io(&tmp_dir))?;
        tmp.write_all(bytes).map_err(Self::io(&target))?;
        tmp.as_file().sync_all().map_err(Self::io(&target))?;
        tmp.persist(&target)
            .map_err(|e| Self::io(&target)(e.error))?;
        Ok(())
    }

    /// Reads the manifest `digest` back, checking it hashes to `digest`.
    pub fn manifest(&self, digest: &Digest) -> Result<Lookup<Bytes>, CacheError> {
        let path = self.manifest_path(digest);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Lookup::Miss),
            Err(e) => return Err(Self::io(&path)(e)),
        };
        let mut bytes = Vec::new();
        file.take(MAX_MANIFEST_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(Self::io(&path))?;
        if bytes.len() as u64 > MAX_MANIFEST_BYTES || digest.verify(&bytes).is_err() {
            self.discard(&path, digest);
            return Ok(Lookup::Corrupted);
        }
        Ok(Lookup::Hit(Bytes::from(bytes)))
    }

    /// Copies a freshly fetched, checked blob into the cache (hashing the copy again) and
    /// returns the cached file, rewound.
    pub fn put_blob(&self, descriptor: &Descriptor, source: &mut File) -> Result<File, CacheError> {
        let target = self.blob_path(&descriptor.digest);
        let tmp_dir = self.root.join("tmp");
        let mut tmp = tempfile::NamedTempFile::new_in(&tmp_dir).map_err(Self::io(&tmp_dir))?;
        source.rewind().map_err(Self::io(&target))?;
        let (digest, size) =
            copy_hashing(source, tmp.as_file_mut(), descriptor.size).map_err(Self::io(&target))?;
        if digest != descriptor.digest || size != descriptor.size {
            return Err(CacheError::Io {
                path: target,
                source: io::Error::other(format!(
                    "the copy hashed to {digest} ({size} bytes), expected {} ({} bytes)",
                    descriptor.digest, descriptor.size
                )),
            });
        }
        tmp.as_file().sync_all().map_err(Self::io(&target))?;
        let mut file = tmp
            .persist(&target)
            .map_err(|e| Self::io(&target)(e.error))?;
        file.rewind().map_err(Self::io(&target))?;
        Ok(file)
    }

    /// Opens the blob `descriptor` names, after hashing it: a mismatch in size or digest
    /// deletes the entry and returns [`Lookup::Corrupted`].
    pub fn blob(&self, descriptor: &Descriptor) -> Result<Lookup<File>, CacheError> {
        let path = self.blob_path(&descriptor.digest);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Lookup::Miss),
            Err(e) => return Err(Self::io(&path)(e)),
        };
        let (digest, size) =
            copy_hashing(&mut file, &mut io::sink(), descriptor.size).map_err(Self::io(&path))?;
        if digest != descriptor.digest || size != descriptor.size {
            self.discard(&path, &descriptor.digest);
            return Ok(Lookup::Corrupted);
        }
        file.rewind().map_err(Self::io(&path))?;
        Ok(Lookup::Hit(file))
    }

    fn discard(&self, path: &Path, digest: &Digest) {
        tracing::warn!(%digest, path = %path.display(), "corrupted cache entry deleted; fetching it again");
        if let Err(e) = fs::remove_file(path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot delete corrupted cache entry");
        }
    }

    /// Deletes the cached manifest or blob with this digest, if any (best effort): the prune
    /// step drops the previous version's entries so the cache does not grow without bound.
    pub fn remove(&self, digest: &Digest) {
        for path in [self.manifest_path(digest), self.blob_path(digest)] {
            match fs::remove_file(&path) {
                Ok(()) => tracing::debug!(%digest, "cache entry removed"),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove cache entry")
                }
            }
        }
    }
}

/// Copies at most `limit + 1` bytes from `from` to `to`, returning the digest and size of
/// what was copied (one byte over the limit is enough to detect a size mismatch).
fn copy_hashing(from: &mut File, to: &mut impl Write, limit: u64) -> io::Result<(Digest, u64)> {
    let mut hasher = Hasher::default();
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut reader = from.take(limit.saturating_add(1));
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let chunk = buf.get(..n).unwrap_or_default();
        hasher.update(chunk);
        to.write_all(chunk)?;
    }
    to.flush()?;
    let size = hasher.len();
    Ok((hasher.finish(), size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::format::Descriptor;

    #[test]
    fn corrupted_blob_is_detected_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let data = b"layer bytes".to_vec();
        let desc = Descriptor::for_bytes("application/octet-stream", &data);
        let mut src = tempfile::tempfile().unwrap();
        src.write_all(&data).unwrap();
        cache.put_blob(&desc, &mut src).unwrap();
        assert!(matches!(cache.blob(&desc).unwrap(), Lookup::Hit(_)));

        fs::write(cache.blob_path(&desc.digest), b"layer bytez").unwrap();
        assert!(matches!(cache.blob(&desc).unwrap(), Lookup::Corrupted));
        assert!(!cache.blob_path(&desc.digest).exists());
        assert!(matches!(cache.blob(&desc).unwrap(), Lookup::Miss));
    }

    #[test]
    fn manifests_are_rehashed_when_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let bytes = br#"{"schemaVersion":2}"#;
        let digest = Digest::of(bytes);
        cache.put_manifest(&digest, bytes).unwrap();
        match cache.manifest(&digest).unwrap() {
            Lookup::Hit(b) => assert_eq!(&b[..], bytes),
            other => panic!("{other:?}"),
        }
        fs::write(cache.manifest_path(&digest), b"{}").unwrap();
        assert!(matches!(
            cache.manifest(&digest).unwrap(),
            Lookup::Corrupted
        ));
    }

    #[test]
    fn a_blob_that_does_not_match_is_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let desc = Descriptor::for_bytes("application/octet-stream", b"right");
        let mut src = tempfile::tempfile().unwrap();
        src.write_all(b"wrong").unwrap();
        assert!(cache.put_blob(&desc, &mut src).is_err());
        assert!(!cache.blob_path(&desc.digest).exists());
    }
}
