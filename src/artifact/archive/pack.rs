//! Deterministic packing of a directory tree into the content layer.

use std::fs::{self, File, FileType};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use flate2::{Compression, GzBuilder};

use super::{unportable_component, ArchiveError, DIR_MODE, FILE_MODE, GZIP_LEVEL, GZIP_OS_UNKNOWN};
use crate::digest::{Digest, HashingWriter};

/// Buffer between the tar writer and the compressor, so headers do not reach deflate one
/// 512-byte block at a time.
const WRITE_BUFFER: usize = 256 * 1024;

/// How many symlinks in a row are followed before a chain counts as a loop.
const MAX_SYMLINK_HOPS: usize = 40;

/// How to pack a tree.
#[derive(Clone, Debug, Default)]
pub struct PackOptions {
    /// Pack what symlinks point to (as regular files and directories) instead of failing.
    pub resolve_symlinks: bool,
}

/// A packed content layer and what went into it.
#[derive(Clone, Debug)]
pub struct Packed {
    /// The tar+gzip bytes.
    pub layer: Vec<u8>,
    /// Digest of [`Packed::layer`].
    pub digest: Digest,
    /// Length of [`Packed::layer`] in bytes.
    pub size: u64,
    /// The regular files, relative and `/`-separated, in the order they are in the layer.
    pub files: Vec<String>,
    /// Length of the tar stream before compression.
    pub uncompressed_size: u64,
}

/// Packs `dir` into a deterministic tar+gzip layer (see the module docs for the rules).
///
/// The layer is built in memory and hashed while it is written (one pass), so no output file
/// can end up inside the tree being packed. Nothing in the tree is skipped. Fails when `dir` is missing
/// or not a directory, when the tree holds no regular file, on symlinks (unless
/// [`PackOptions::resolve_symlinks`]), dangling or looping symlinks, sockets, fifos, devices,
/// unportable names, and on read errors — always naming the path.
pub fn pack(dir: &Path, opts: &PackOptions) -> Result<Packed, ArchiveError> {
    let meta = fs::metadata(dir).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => ArchiveError::MissingDirectory {
            path: dir.to_path_buf(),
        },
        _ => ArchiveError::Io {
            op: "read",
            path: dir.to_path_buf(),
            source,
        },
    })?;
    if !meta.is_dir() {
        return Err(ArchiveError::NotADirectory {
            path: dir.to_path_buf(),
        });
    }

    let gz = GzBuilder::new()
        .mtime(0)
        .operating_system(GZIP_OS_UNKNOWN)
        .write(HashingWriter::new(Vec::new()), Compression::new(GZIP_LEVEL));
    let counted = CountingWriter {
        inner: BufWriter::with_capacity(WRITE_BUFFER, gz),
        written: 0,
    };
    let mut walker = Walker {
        builder: tar::Builder::new(counted),
        resolve_symlinks: opts.resolve_symlinks,
        files: Vec::new(),
        buf: Vec::new(),
        rel: String::new(),
        ancestors: Vec::new(),
    };
    if opts.resolve_symlinks {
        walker.ancestors.push(canonical(dir)?);
    }
    let mut abs = dir.to_path_buf();
    walker.walk_dir(&mut abs)?;

    let Walker { builder, files, .. } = walker;
    if files.is_empty() {
        return Err(ArchiveError::EmptyDirectory {
            path: dir.to_path_buf(),
        });
    }
    let write = |source| ArchiveError::Write { source };
    let counted = builder.into_inner().map_err(write)?;
    let uncompressed_size = counted.written;
    let gz = counted
        .inner
        .into_inner()
        .map_err(|e| write(e.into_error()))?;
    let (layer, digest, size) = gz.finish().map_err(write)?.finish();
    tracing::debug!(
        dir = %dir.display(),
        %digest,
        size,
        uncompressed_size,
        files = files.len(),
        "packed content layer"
    );
    Ok(Packed {
        layer,
        digest,
        size,
        files,
        uncompressed_size,
    })
}

/// Counts the uncompressed tar bytes.
struct CountingWriter<W> {
    inner: W,
    written: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

type LayerWriter = CountingWriter<BufWriter<flate2::write::GzEncoder<HashingWriter<Vec<u8>>>>>;

/// State of one packing walk. `rel` and `buf` are reused for every entry.
struct Walker {
    builder: tar::Builder<LayerWriter>,
    resolve_symlinks: bool,
    files: Vec<String>,
    /// Contents of the current file.
    buf: Vec<u8>,
    /// Relative path of the directory being walked, with a trailing `/` unless it is the root.
    rel: String,
    /// Canonical paths of the directories being walked (only with `resolve_symlinks`).
    ancestors: Vec<PathBuf>,
}

enum Kind {
    File,
    Dir,
}

impl Walker {
    /// Packs the contents of `abs` (whose relative path is `self.rel`), sorted by name.
    fn walk_dir(&mut self, abs: &mut PathBuf) -> Result<(), ArchiveError> {
        let mut names = Vec::new();
        let entries = fs::read_dir(&*abs).map_err(|source| io_error("read", abs, source))?;
        for entry in entries {
            let entry = entry.map_err(|source| io_error("read", abs, source))?;
            let name = entry.file_name();
            let name = name
                .into_string()
                .map_err(|_| ArchiveError::UnportableName {
                    path: abs.join(entry.file_name()),
                    why: "the name is not valid UTF-8",
                })?;
            if let Some(why) = unportable_component(&name) {
                return Err(ArchiveError::UnportableName {
                    path: abs.join(&name),
                    why,
                });
            }
            names.push(name);
        }
        names.sort_unstable();

        for name in names {
            abs.push(&name);
            let parent_len = self.rel.len();
            self.rel.push_str(&name);
            let result = self.entry(abs);
            self.rel.truncate(parent_len);
            abs.pop();
            result?;
        }
        Ok(())
    }

    /// Packs one directory entry at `abs`, relative path `self.rel`.
    fn entry(&mut self, abs: &mut PathBuf) -> Result<(), ArchiveError> {
        let meta = fs::symlink_metadata(&*abs).map_err(|source| io_error("read", abs, source))?;
        let (kind, followed) = if meta.file_type().is_symlink() {
            if !self.resolve_symlinks {
                return Err(ArchiveError::Symlink { path: abs.clone() });
            }
            let target = follow(abs)?;
            (classify(target.file_type(), abs)?, true)
        } else {
            (classify(meta.file_type(), abs)?, false)
        };

        match kind {
            Kind::File => {
                self.buf.clear();
                File::open(&*abs)
                    .and_then(|mut f| f.read_to_end(&mut self.buf))
                    .map_err(|source| io_error("read", abs, source))?;
                let mut header = header(tar::EntryType::Regular, FILE_MODE, self.buf.len());
                self.builder
                    .append_data(&mut header, &self.rel, self.buf.as_slice())
                    .map_err(|source| ArchiveError::Write { source })?;
                self.files.push(self.rel.clone());
            }
            Kind::Dir => {
                self.rel.push('/');
                let mut header = header(tar::EntryType::Directory, DIR_MODE, 0);
                self.builder
                    .append_data(&mut header, &self.rel, io::empty())
                    .map_err(|source| ArchiveError::Write { source })?;
                if self.resolve_symlinks {
                    let real = canonical(abs)?;
                    if followed && self.ancestors.contains(&real) {
                        return Err(ArchiveError::SymlinkLoop { path: abs.clone() });
                    }
                    self.ancestors.push(real);
                    let result = self.walk_dir(abs);
                    self.ancestors.pop();
                    result?;
                } else {
                    self.walk_dir(abs)?;
                }
            }
        }
        Ok(())
    }
}

fn header(kind: tar::EntryType, mode: u32, size: usize) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(size as u64);
    header
}

/// What a (possibly followed) entry is; sockets, fifos and devices are errors.
fn classify(file_type: FileType, path: &Path) -> Result<Kind, ArchiveError> {
    if file_type.is_file() {
        return Ok(Kind::File);
    }
    if file_type.is_dir() {
        return Ok(Kind::Dir);
    }
    Err(ArchiveError::SpecialFile {
        path: path.to_path_buf(),
        kind: special_kind(file_type),
    })
}

#[cfg(unix)]
fn special_kind(file_type: FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_socket() {
        "socket"
    } else if file_type.is_fifo() {
        "fifo"
    } else if file_type.is_char_device() {
        "character device"
    } else if file_type.is_block_device() {
        "block device"
    } else {
        "special file"
    }
}

#[cfg(not(unix))]
fn special_kind(_: FileType) -> &'static str {
    "special file"
}

/// Metadata of what the symlink `link` finally points to.
fn follow(link: &Path) -> Result<fs::Metadata, ArchiveError> {
    match fs::metadata(link) {
        Ok(meta) => Ok(meta),
        Err(source) if source.kind() == io::ErrorKind::NotFound => {
            Err(ArchiveError::DanglingSymlink {
                path: link.to_path_buf(),
            })
        }
        Err(_) if is_link_loop(link) => Err(ArchiveError::SymlinkLoop {
            path: link.to_path_buf(),
        }),
        Err(source) => Err(io_error("follow symlink", link, source)),
    }
}

/// Whether following `link` keeps hitting symlinks (ELOOP without naming the errno).
fn is_link_loop(link: &Path) -> bool {
    let mut current = link.to_path_buf();
    for _ in 0..MAX_SYMLINK_HOPS {
        match fs::read_link(&current) {
            Ok(target) => {
                current = match current.parent() {
                    Some(parent) => parent.join(target),
                    None => target,
                }
            }
            Err(_) => return false,
        }
    }
    true
}

fn canonical(path: &Path) -> Result<PathBuf, ArchiveError> {
    fs::canonicalize(path).map_err(|source| io_error("resolve", path, source))
}

fn io_error(op: &'static str, path: &Path, source: io::Error) -> ArchiveError {
    ArchiveError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::artifact::archive::{list_files, Limits};

    fn write(root: &Path, rel: &str, content: &[u8]) {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, content).unwrap();
    }

    fn pack_default(dir: &Path) -> Result<Packed, ArchiveError> {
        pack(dir, &PackOptions::default())
    }

    /// (path, type, mode, uid, gid, mtime, user, group, size) of every raw tar entry.
    type RawEntry = (String, u8, u32, u64, u64, u64, Vec<u8>, Vec<u8>, u64);

    fn raw_entries(layer: &[u8]) -> Vec<RawEntry> {
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(layer));
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    String::from_utf8(e.path_bytes().into_owned()).unwrap(),
                    h.entry_type().as_byte(),
                    h.mode().unwrap(),
                    h.uid().unwrap(),
                    h.gid().unwrap(),
                    h.mtime().unwrap(),
                    h.username_bytes().unwrap_or_default().to_vec(),
                    h.groupname_bytes().unwrap_or_default().to_vec(),
                    h.size().unwrap(),
                )
            })
            .collect()
    }

    const GOLDEN_TREE: &[(&str, &str)] = &[
        (
            "deploy/app.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app\n",
        ),
        (
            "deploy/config.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata:\n  a: b\n",
        ),
        (
            "namespace.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n",
        ),
    ];

    /// Pinned: if this changes, every existing tree gets a new layer digest. Only update it
    /// together with a format version bump.
    const GOLDEN_DIGEST: &str =
        "sha256:90d700e7da8e4370bc2e11b9a8b1413e93ca460d92a6230e2d227cfb19fe8bc8";

    #[test]
    fn golden_digest_is_pinned() {
        let dir = tempfile::tempdir().unwrap();
        for (path, content) in GOLDEN_TREE {
            write(dir.path(), path, content.as_bytes());
        }
        let packed = pack_default(dir.path()).unwrap();
        assert_eq!(packed.digest.to_string(), GOLDEN_DIGEST);
        assert_eq!(packed.size, packed.layer.len() as u64);
        assert_eq!(packed.digest, Digest::of(&packed.layer));
        assert_eq!(
            packed.files,
            ["deploy/app.yaml", "deploy/config.yaml", "namespace.yaml"]
        );
    }

    #[test]
    fn headers_are_normalised_and_ordered() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a-c.yaml", b"x");
        write(dir.path(), "a/b.yaml", b"yy");
        write(dir.path(), "B.yaml", b"");
        fs::create_dir(dir.path().join("empty")).unwrap();
        let packed = pack_default(dir.path()).unwrap();

        let entries = raw_entries(&packed.layer);
        let names: Vec<_> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names, ["B.yaml", "a/", "a/b.yaml", "a-c.yaml", "empty/"]);
        for (path, kind, mode, uid, gid, mtime, user, group, _) in &entries {
            let (want_kind, want_mode) = if path.ends_with('/') {
                (b'5', 0o755)
            } else {
                (b'0', 0o644)
            };
            assert_eq!((*kind, *mode), (want_kind, want_mode), "{path}");
            assert_eq!((*uid, *gid, *mtime), (0, 0, 0), "{path}");
            assert!(user.is_empty() && group.is_empty(), "{path}");
        }
        assert_eq!(packed.files, ["B.yaml", "a/b.yaml", "a-c.yaml"]);

        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(packed.layer.as_slice())
            .read_to_end(&mut tar)
            .unwrap();
        assert_eq!(packed.uncompressed_size, tar.len() as u64);
        // gzip header: no flags (no file name), mtime 0, OS unknown.
        assert_eq!(packed.layer[..4], [0x1f, 0x8b, 8, 0]);
        assert_eq!(packed.layer[4..8], [0, 0, 0, 0]);
        assert_eq!(packed.layer[9], GZIP_OS_UNKNOWN);
    }

    #[cfg(unix)]
    #[test]
    fn same_tree_gives_same_digest_whatever_mtimes_modes_and_creation_order() {
        use std::os::unix::fs::PermissionsExt;

        let files = [
            ("z.yaml", "kind: Z\n"),
            ("a/b/c.yaml", "kind: C\n"),
            ("a/a.yaml", "kind: A\n"),
            ("m.json", "{}"),
        ];
        let build = |order: &mut dyn Iterator<Item = &(&str, &str)>,
                     mode: u32,
                     dir_mode: u32,
                     mtime: u64| {
            let dir = tempfile::tempdir().unwrap();
            for (path, content) in order {
                write(dir.path(), path, content.as_bytes());
                let full = dir.path().join(path);
                let file = File::options().write(true).open(&full).unwrap();
                file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(mtime))
                    .unwrap();
                fs::set_permissions(&full, fs::Permissions::from_mode(mode)).unwrap();
            }
            for sub in ["a", "a/b"] {
                fs::set_permissions(dir.path().join(sub), fs::Permissions::from_mode(dir_mode))
                    .unwrap();
            }
            dir
        };
        let first = build(&mut files.iter(), 0o600, 0o700, 1_000_000);
        let second = build(&mut files.iter().rev(), 0o777, 0o777, 2_000_000_000);

        let a = pack_default(first.path()).unwrap();
        let b = pack_default(second.path()).unwrap();
        assert_eq!(a.digest, b.digest);
        assert_eq!(a.layer, b.layer);
        assert_eq!(a.files, ["a/a.yaml", "a/b/c.yaml", "m.json", "z.yaml"]);
    }

    #[test]
    fn long_paths_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let long_dir = "d".repeat(60);
        let long_name = format!("{}.yaml", "f".repeat(85));
        let path = format!("{long_dir}/{long_name}");
        assert_eq!(path.len(), 151);
        let single = format!("{}.yaml", "s".repeat(145));
        write(dir.path(), &path, b"kind: Long\n");
        write(dir.path(), &single, b"kind: Single\n");

        let packed = pack_default(dir.path()).unwrap();
        assert_eq!(packed.files, [path.clone(), single.clone()]);
        let listed = list_files(packed.layer.as_slice(), packed.size, &Limits::default()).unwrap();
        assert_eq!(listed, [(path, 11), (single, 13)]);
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_are_refused_by_default() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "real.yaml", b"kind: A\n");
        std::os::unix::fs::symlink("real.yaml", dir.path().join("link.yaml")).unwrap();
        let err = pack_default(dir.path()).unwrap_err();
        assert_eq!(err.reason(), "Symlink");
        assert!(err.to_string().contains("--resolve-symlinks"), "{err}");
        assert!(err.to_string().contains("link.yaml"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn resolve_symlinks_packs_the_targets_content() {
        use std::os::unix::fs::symlink;

        let outside = tempfile::tempdir().unwrap();
        write(outside.path(), "shared/base.yaml", b"kind: Base\n");
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "real.yaml", b"kind: A\n");
        symlink("real.yaml", dir.path().join("link.yaml")).unwrap();
        symlink(outside.path().join("shared"), dir.path().join("shared")).unwrap();

        let opts = PackOptions {
            resolve_symlinks: true,
        };
        let packed = pack(dir.path(), &opts).unwrap();
        let entries = raw_entries(&packed.layer);
        let names: Vec<_> = entries.iter().map(|e| (e.0.as_str(), e.1)).collect();
        assert_eq!(
            names,
            [
                ("link.yaml", b'0'),
                ("real.yaml", b'0'),
                ("shared/", b'5'),
                ("shared/base.yaml", b'0')
            ]
        );
        let files = crate::artifact::archive::read_files(
            packed.layer.as_slice(),
            packed.size,
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(files[0].data, b"kind: A\n");
        assert_eq!(files[2].data, b"kind: Base\n");
    }

    #[cfg(unix)]
    #[test]
    fn resolve_symlinks_rejects_dangling_links_and_loops() {
        use std::os::unix::fs::symlink;
        let opts = PackOptions {
            resolve_symlinks: true,
        };

        let dangling = tempfile::tempdir().unwrap();
        write(dangling.path(), "a.yaml", b"a");
        symlink("missing.yaml", dangling.path().join("b.yaml")).unwrap();
        let err = pack(dangling.path(), &opts).unwrap_err();
        assert_eq!(err.reason(), "DanglingSymlink", "{err}");

        let self_loop = tempfile::tempdir().unwrap();
        write(self_loop.path(), "a.yaml", b"a");
        symlink("b.yaml", self_loop.path().join("b.yaml")).unwrap();
        let err = pack(self_loop.path(), &opts).unwrap_err();
        assert_eq!(err.reason(), "SymlinkLoop", "{err}");

        let dir_loop = tempfile::tempdir().unwrap();
        write(dir_loop.path(), "sub/a.yaml", b"a");
        symlink("..", dir_loop.path().join("sub/up")).unwrap();
        let err = pack(dir_loop.path(), &opts).unwrap_err();
        assert_eq!(err.reason(), "SymlinkLoop", "{err}");
        assert!(err.to_string().contains("sub/up"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn sockets_are_refused_with_their_path() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.yaml", b"a");
        let _listener =
            std::os::unix::net::UnixListener::bind(dir.path().join("agent.sock")).unwrap();
        let err = pack_default(dir.path()).unwrap_err();
        assert_eq!(err.reason(), "SpecialFile");
        assert!(err.to_string().contains("agent.sock"), "{err}");
        assert!(err.to_string().contains("socket"), "{err}");
    }

    #[test]
    fn missing_file_and_empty_trees_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let err = pack_default(&dir.path().join("nope")).unwrap_err();
        assert_eq!(err.reason(), "MissingDirectory");

        write(dir.path(), "file.yaml", b"a");
        let err = pack_default(&dir.path().join("file.yaml")).unwrap_err();
        assert_eq!(err.reason(), "NotADirectory");

        let empty = tempfile::tempdir().unwrap();
        fs::create_dir_all(empty.path().join("only/dirs")).unwrap();
        let err = pack_default(empty.path()).unwrap_err();
        assert_eq!(err.reason(), "EmptyDirectory");
        assert!(err.to_string().contains("no regular files"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn names_that_cannot_be_extracted_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a\\b.yaml", b"a");
        let err = pack_default(dir.path()).unwrap_err();
        assert_eq!(err.reason(), "UnportableName");
    }
}
