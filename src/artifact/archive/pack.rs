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
/// The layer is built in memory and hashed while it is written. Fails when `dir` is missing
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
