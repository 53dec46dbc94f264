//! Local OCI image layouts (`oci-layout:PATH`), the embedded default: no registry needed.
//!
//! The on-disk format is the OCI image-layout spec, the same one `skopeo copy … oci:PATH:tag`
//! reads and writes: an `oci-layout` marker, `index.json` whose entries carry the tag in the
//! `org.opencontainers.image.ref.name` annotation, and `blobs/sha256/<hex>`. Blobs and
//! `index.json` are written to a temporary file and renamed into place, and writers hold an
//! exclusive lock on the `oci-layout` file, so readers never see half-written content.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde_json::{json, Value};

use super::{check_content, sniff_media_type, FetchedManifest, ManifestRef, RegistryError};
use crate::digest::{Digest, Hasher};
use crate::oci::{Descriptor, ANNOTATION_REF_NAME, MAX_MANIFEST_BYTES, OCI_INDEX_MEDIA_TYPE};

const MAX_INDEX_BYTES: u64 = 64 * 1024 * 1024;
const LAYOUT_MARKER: &str = "oci-layout";

/// An OCI image layout directory.
pub struct LayoutRepository {
    root: PathBuf,
}

impl LayoutRepository {
    /// A layout at `root`; nothing is read or created until used.
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }

    fn io(&self, path: &Path) -> impl Fn(io::Error) -> RegistryError {
        let path = path.to_path_buf();
        move |source| RegistryError::Io {
            path: path.clone(),
            source,
        }
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(digest.algorithm())
            .join(digest.hex())
    }

    fn display(&self, at: ManifestRef<'_>) -> String {
        match at {
            ManifestRef::Tag(t) => format!("oci-layout:{}:{t}", self.root.display()),
            ManifestRef::Digest(d) => format!("oci-layout:{}@{d}", self.root.display()),
        }
    }

    /// Fails with a clear message unless `root` is an OCI layout.
    fn check_layout(&self) -> Result<(), RegistryError> {
        let marker = self.root.join(LAYOUT_MARKER);
        if marker.is_file() {
            return Ok(());
        }
        Err(RegistryError::Invalid {
            what: self.root.display().to_string(),
            kind: "OCI layout".into(),
            message: if self.root.exists() {
                "no oci-layout file: this directory is not an OCI image layout".into()
            } else {
                "the directory does not exist".into()
            },
        })
    }

    /// Creates the layout skeleton if needed and takes the writer lock.
    fn lock_for_write(&self) -> Result<File, RegistryError> {
        let blobs = self.root.join("blobs").join("sha256");
        fs::create_dir_all(&blobs).map_err(self.io(&blobs))?;
        let marker = self.root.join(LAYOUT_MARKER);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&marker)
            .map_err(self.io(&marker))?;
        lock.lock().map_err(self.io(&marker))?;
        if lock.metadata().map_err(self.io(&marker))?.len() == 0 {
            write_atomic(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#)
                .map_err(self.io(&marker))?;
        }
        let index = self.root.join("index.json");
        if !index.exists() {
            let empty =
                json!({"schemaVersion": 2, "mediaType": OCI_INDEX_MEDIA_TYPE, "manifests": []});
            write_atomic(&index, empty.to_string().as_bytes()).map_err(self.io(&index))?;
        }
        Ok(lock)
    }

    fn read_index(&self) -> Result<Vec<Value>, RegistryError> {
        self.check_layout()?;
        let path = self.root.join("index.json");
        let bytes = read_limited(&path, MAX_INDEX_BYTES).map_err(|e| match e {
            LimitedRead::Io(source) => RegistryError::Io {
                path: path.clone(),
                source,
            },
            LimitedRead::TooLarge => RegistryError::TooLarge {
                what: path.display().to_string(),
                limit: MAX_INDEX_BYTES,
            },
        })?;
        let index: Value = serde_json::from_slice(&bytes).map_err(|e| RegistryError::Invalid {
            what: path.display().to_string(),
            kind: "index.json".into(),
            message: e.to_string(),
        })?;
        Ok(index
            .get("manifests")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default())
    }

    fn write_index(&self, manifests: Vec<Value>) -> Result<(), RegistryError> {
        let path = self.root.join("index.json");
        let index =
            json!({"schemaVersion": 2, "mediaType": OCI_INDEX_MEDIA_TYPE, "manifests": manifests});
        write_atomic(&path, index.to_string().as_bytes()).map_err(self.io(&path))
    }

    fn entry_for<'a>(manifests: &'a [Value], at: ManifestRef<'_>) -> Option<&'a Value> {
        manifests.iter().rev().find(|m| match at {
            ManifestRef::Tag(t) => ref_name(m) == Some(t),
            ManifestRef::Digest(d) => {
                m.get("digest").and_then(Value::as_str) == Some(&d.to_string())
            }
        })
    }

    /// The digest a tag points at, or the digest itself when that manifest is present.
    pub fn resolve(&self, at: ManifestRef<'_>) -> Result<Option<Digest>, RegistryError> {
        match at {
            ManifestRef::Digest(d) => {
                // Nor any manifest.
                if !self.root.exists() {
                    return Ok(None);
                }
                self.check_layout()?;
                Ok(self.blob_path(d).is_file().then(|| d.clone()))
            }
            ManifestRef::Tag(_) => {
                // A layout that does not exist yet has no tags (push creates it).
                if !self.root.exists() {
                    return Ok(None);
                }
                let manifests = self.read_index()?;
                let Some(entry) = Self::entry_for(&manifests, at) else {
                    return Ok(None);
                };
                entry_digest(entry, &self.display(at)).map(Some)
            }
        }
    }

    /// Reads a manifest (bounded) and checks its digest.
    pub fn fetch_manifest(&self, at: ManifestRef<'_>) -> Result<FetchedManifest, RegistryError> {
        let not_found = || RegistryError::ManifestNotFound {
            reference: self.display(at),
        };
        let manifests = self.read_index()?;
        let entry = Self::entry_for(&manifests, at);
        let digest = match (at, entry) {
            (ManifestRef::Digest(d), _) => d.clone(),
            (ManifestRef::Tag(_), Some(entry)) => entry_digest(entry, &self.display(at))?,
            (ManifestRef::Tag(_), None) => return Err(not_found()),
        };
        let path = self.blob_path(&digest);
        let bytes = match read_limited(&path, MAX_MANIFEST_BYTES) {
            Ok(b) => b,
            Err(LimitedRead::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
                return Err(not_found())
            }
            Err(LimitedRead::Io(source)) => return Err(RegistryError::Io { path, source }),
            Err(LimitedRead::TooLarge) => {
                return Err(RegistryError::TooLarge {
                    what: format!("manifest {}", self.display(at)),
                    limit: MAX_MANIFEST_BYTES,
                })
            }
        };
        digest
            .verify(&bytes)
            .map_err(|source| RegistryError::Digest {
                what: format!("manifest {}", self.display(at)),
                source,
            })?;
        let media_type = entry
            .and_then(|e| e.get("mediaType"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| sniff_media_type(&bytes))
            .unwrap_or_default();
        Ok(FetchedManifest {
            bytes: Bytes::from(bytes),
            digest,
            media_type,
        })
    }

    /// Whether the blob file exists.
    pub fn blob_exists(&self, digest: &Digest) -> Result<bool, RegistryError> {
        Ok(self.blob_path(digest).is_file())
    }

    /// Writes a blob (checked against `digest`) atomically.
    pub fn push_blob(&self, digest: &Digest, data: &[u8]) -> Result<(), RegistryError> {
        digest
            .verify(data)
            .map_err(|source| RegistryError::Digest {
                what: "blob to store".into(),
                source,
            })?;
        let _lock = self.lock_for_write()?;
        let path = self.blob_path(digest);
        write_atomic(&path, data).map_err(self.io(&path))
    }

    /// Stores a manifest blob and points `tag` at it in `index.json` (replacing the entry
    /// that carried the tag before).
    pub fn push_manifest(
        &self,
        media_type: &str,
        bytes: &[u8],
        tag: Option<&str>,
    ) -> Result<Digest, RegistryError> {
        let digest = Digest::of(bytes);
        let _lock = self.lock_for_write()?;
        let path = self.blob_path(&digest);
        if !path.is_file() {
            write_atomic(&path, bytes).map_err(self.io(&path))?;
        }
        let mut manifests = self.read_index()?;
        let digest_text = digest.to_string();
        match tag {
            Some(tag) => manifests.retain(|m| ref_name(m) != Some(tag)),
            None => {
                let present = manifests
                    .iter()
                    .any(|m| m.get("digest").and_then(Value::as_str) == Some(&digest_text));
                if present {
                    return Ok(digest);
                }
            }
        }
        let mut entry = json!({
            "mediaType": media_type,
            "digest": digest_text,
            "size": bytes.len(),
        });
        if let (Some(tag), Some(map)) = (tag, entry.as_object_mut()) {
            map.insert("annotations".into(), json!({ ANNOTATION_REF_NAME: tag }));
        }
        manifests.push(entry);
        self.write_index(manifests)?;
        Ok(digest)
    }

    /// Copies a blob into a temporary file, checking size and digest.
    pub fn fetch_blob(&self, descriptor: &Descriptor) -> Result<File, RegistryError> {
        self.check_layout()?;
        let what = format!("blob {}", descriptor.digest);
        let path = self.blob_path(&descriptor.digest);
        let mut source = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(RegistryError::BlobNotFound {
                    repository: format!("oci-layout:{}", self.root.display()),
                    digest: descriptor.digest.clone(),
                })
            }
            Err(source) => return Err(RegistryError::Io { path, source }),
        };
        let temp_io = self.io(Path::new("<temporary blob file>"));
        let mut out = tempfile::tempfile().map_err(&temp_io)?;
        let mut hasher = Hasher::default();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = source.read(&mut buf).map_err(self.io(&path))?;
            if n == 0 {
                break;
            }
            let chunk = buf.get(..n).unwrap_or_default();
            hasher.update(chunk);
            if hasher.len() > descriptor.size {
                return Err(RegistryError::SizeMismatch {
                    what,
                    expected: descriptor.size,
                    actual: hasher.len(),
                });
            }
            out.write_all(chunk).map_err(&temp_io)?;
        }
        let size = hasher.len();
        check_content(&what, descriptor, hasher.finish(), size)?;
        out.rewind().map_err(&temp_io)?;
        Ok(out)
    }

    /// Reads a small blob into memory, bounded to `limit` bytes (the caller checks the digest).
    pub fn fetch_blob_bytes(
        &self,
        descriptor: &Descriptor,
        limit: u64,
    ) -> Result<Bytes, RegistryError> {
        self.check_layout()?;
        let path = self.blob_path(&descriptor.digest);
        match read_limited(&path, limit) {
            Ok(bytes) => Ok(Bytes::from(bytes)),
            Err(LimitedRead::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
                Err(RegistryError::BlobNotFound {
                    repository: format!("oci-layout:{}", self.root.display()),
                    digest: descriptor.digest.clone(),
                })
            }
            Err(LimitedRead::Io(source)) => Err(RegistryError::Io { path, source }),
            Err(LimitedRead::TooLarge) => Err(RegistryError::TooLarge {
                what: format!("blob {}", descriptor.digest),
                limit,
            }),
        }
    }

    /// Every tag named in `index.json`.
    pub fn list_tags(&self) -> Result<Vec<String>, RegistryError> {
        Ok(self
            .read_index()?
            .iter()
            .filter_map(|m| ref_name(m).map(str::to_string))
            .collect())
    }
}

fn ref_name(entry: &Value) -> Option<&str> {
    entry
        .get("annotations")
        .and_then(|a| a.get(ANNOTATION_REF_NAME))
        .and_then(Value::as_str)
}

fn entry_digest(entry: &Value, what: &str) -> Result<Digest, RegistryError> {
    entry
        .get("digest")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .parse()
        .map_err(|e: crate::digest::DigestError| RegistryError::Invalid {
            what: what.to_string(),
            kind: "index.json entry".into(),
            message: e.to_string(),
        })
}

enum LimitedRead {
    Io(io::Error),
    TooLarge,
}

fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, LimitedRead> {
    let file = File::open(path).map_err(LimitedRead::Io)?;
    let mut out = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut out)
        .map_err(LimitedRead::Io)?;
    if out.len() as u64 > limit {
        return Err(LimitedRead::TooLarge);
    }
    Ok(out)
}

/// Writes `data` to a temporary file next to `path`, syncs it and renames it into place.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut temp = tempfile::Builder::new()
        .prefix(".tresor-tmp-")
        .tempfile_in(dir)?;
    temp.write_all(data)?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_then_resolve_fetch_and_retag() {
        let dir = tempfile::tempdir().unwrap();
        let layout = LayoutRepository::new(&dir.path().join("l"));
        let blob = b"{}";
        let blob_digest = Digest::of(blob);
        layout.push_blob(&blob_digest, blob).unwrap();
        assert!(layout.blob_exists(&blob_digest).unwrap());
        let manifest = br#"{"schemaVersion":2}"#;
        let d = layout
            .push_manifest(
                "application/vnd.oci.image.manifest.v1+json",
                manifest,
                Some("v1"),
            )
            .unwrap();
        assert_eq!(
            layout.resolve(ManifestRef::Tag("v1")).unwrap(),
            Some(d.clone())
        );
        assert_eq!(layout.resolve(ManifestRef::Tag("v2")).unwrap(), None);
        let fetched = layout.fetch_manifest(ManifestRef::Tag("v1")).unwrap();
        assert_eq!(&fetched.bytes[..], manifest);
        assert_eq!(
            fetched.media_type,
            "application/vnd.oci.image.manifest.v1+json"
        );
        // Re-tagging the same tag replaces the entry instead of adding a second one.
        let other = br#"{"schemaVersion":2,"x":1}"#;
        layout
            .push_manifest(
                "application/vnd.oci.image.manifest.v1+json",
                other,
                Some("v1"),
            )
            .unwrap();
        assert_eq!(layout.list_tags().unwrap(), vec!["v1".to_string()]);
        assert_eq!(
            layout.resolve(ManifestRef::Tag("v1")).unwrap(),
            Some(Digest::of(other))
        );
    }

    #[test]
    fn corrupted_blob_is_detected_on_read() {
        let dir = tempfile::tempdir().unwrap();
        let layout = LayoutRepository::new(dir.path());
        let data = b"hello";
        let digest = Digest::of(data);
        layout.push_blob(&digest, data).unwrap();
        fs::write(layout.blob_path(&digest), b"hellx").unwrap();
        let desc = Descriptor::for_bytes("x", data);
        let err = layout.fetch_blob(&desc).unwrap_err();
        assert_eq!(err.reason(), "DigestMismatch", "{err}");
    }

    #[test]
    fn not_a_layout_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = LayoutRepository::new(dir.path())
            .fetch_manifest(ManifestRef::Tag("v1"))
            .unwrap_err();
        assert!(err.to_string().contains("not an OCI image layout"), "{err}");
    }
}
