//! Hardened, bounded reading of content layers.
//!
//! One scanner ([`scan`]) validates every entry and enforces [`Limits`]; three sinks decide
//! what happens to the accepted files: written below a directory, kept in memory, or only
//! listed.

use std::cell::Cell;
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use flate2::read::MultiGzDecoder;

use super::{
    path_order, unportable_component, ArchiveError, DIR_MODE, FILE_MODE, RATIO_CHECK_THRESHOLD,
};

const MIB: u64 = 1024 * 1024;

/// Chunk size for copying entry data.
const COPY_BUFFER: usize = 64 * 1024;

/// Most memory reserved up front for one file read into memory; a header's size is only a
/// claim, so larger files grow as their bytes actually arrive.
const MAX_PREALLOCATION: u64 = 8 * MIB;

/// Bounds on what reading one layer may cost.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Most bytes the gzip stream may decompress to (the whole tar stream: headers, data,
    /// padding).
    pub max_total_bytes: u64,
    /// Most entries (files and directories) in the layer.
    pub max_files: u64,
    /// Largest single file.
    pub max_file_bytes: u64,
    /// Largest ratio of decompressed to compressed bytes read so far, enforced once more
    /// than [`RATIO_CHECK_THRESHOLD`] bytes were decompressed.
    pub max_ratio: u64,
}

impl Default for Limits {
    /// 512 MiB in total, 100 000 entries, 128 MiB per file, ratio 200.
    fn default() -> Self {
        Self {
            max_total_bytes: 512 * MIB,
            max_files: 100_000,
            max_file_bytes: 128 * MIB,
            max_ratio: 200,
        }
    }
}

/// A regular file read from a layer into memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtractedFile {
    /// Relative, `/`-separated path.
    pub path: String,
    /// The file's content.
    pub data: Vec<u8>,
}

/// Extracts the layer into `dest`, which must exist and be empty.
///
/// Writes only regular files (mode 0644, created with `create_new`, never through a link)
/// and directories (0755) below `dest`, and returns the files' relative paths in layer
/// order (see [`super::pack()`]). `compressed_size` is the layer's declared size: reading more
/// than that is an error. On any error the files written so far stay in `dest`; extract into
/// a staging directory and remove it on failure.
pub fn extract_to_dir(
    layer: impl Read,
    compressed_size: u64,
    dest: &Path,
    limits: &Limits,
) -> Result<Vec<String>, ArchiveError> {
    check_destination(dest)?;
    let mut sink = DirSink {
        dest: dest.to_path_buf(),
        created_dirs: HashSet::new(),
        current: None,
        files: Vec::new(),
    };
    scan(layer, compressed_size, limits, &mut sink)?;
    let mut files = sink.files;
    files.sort_by(|a, b| path_order(a, b));
    Ok(files)
}

/// Reads every regular file of the layer into memory, with the same checks as
/// [`extract_to_dir`]; sorted by path.
pub fn read_files(
    layer: impl Read,
    compressed_size: u64,
    limits: &Limits,
) -> Result<Vec<ExtractedFile>, ArchiveError> {
    let mut sink = MemorySink { files: Vec::new() };
    scan(layer, compressed_size, limits, &mut sink)?;
    let mut files = sink.files;
    files.sort_by(|a, b| path_order(&a.path, &b.path));
    Ok(files)
}

/// Lists the layer's regular files and their sizes without keeping their data, with the
/// same checks as [`extract_to_dir`]; sorted by path.
pub fn list_files(
    layer: impl Read,
    compressed_size: u64,
    limits: &Limits,
) -> Result<Vec<(String, u64)>, ArchiveError> {
    let mut sink = ListSink { files: Vec::new() };
    scan(layer, compressed_size, limits, &mut sink)?;
    let mut files = sink.files;
    files.sort_by(|a, b| path_order(&a.0, &b.0));
    Ok(files)
}

fn check_destination(dest: &Path) -> Result<(), ArchiveError> {
    let meta = fs::metadata(dest).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => ArchiveError::MissingDirectory {
            path: dest.to_path_buf(),
        },
        _ => io_error("read", dest, source),
    })?;
    if !meta.is_dir() {
        return Err(ArchiveError::NotADirectory {
            path: dest.to_path_buf(),
        });
    }
    let mut entries = fs::read_dir(dest).map_err(|source| io_error("read", dest, source))?;
    if entries.next().is_some() {
        return Err(ArchiveError::DestinationNotEmpty {
            path: dest.to_path_buf(),
        });
    }
    Ok(())
}

/// Where accepted entries go. Paths are validated and normalised before they get here.
trait Sink {
    fn directory(&mut self, path: &str) -> Result<(), ArchiveError>;
    /// Starts a file; returns whether its data is wanted.
    fn start_file(&mut self, path: &str, size: u64) -> Result<bool, ArchiveError>;
    fn data(&mut self, chunk: &[u8]) -> Result<(), ArchiveError>;
    fn finish_file(&mut self) -> Result<(), ArchiveError>;
}

struct ListSink {
    files: Vec<(String, u64)>,
}

impl Sink for ListSink {
    fn directory(&mut self, _: &str) -> Result<(), ArchiveError> {
        Ok(())
    }

    fn start_file(&mut self, path: &str, size: u64) -> Result<bool, ArchiveError> {
        self.files.push((path.to_string(), size));
        Ok(false)
    }

    fn data(&mut self, _: &[u8]) -> Result<(), ArchiveError> {
        Ok(())
    }

    fn finish_file(&mut self) -> Result<(), ArchiveError> {
        Ok(())
    }
}

struct MemorySink {
    files: Vec<ExtractedFile>,
}

impl Sink for MemorySink {
    fn directory(&mut self, _: &str) -> Result<(), ArchiveError> {
        Ok(())
    }

    fn start_file(&mut self, path: &str, size: u64) -> Result<bool, ArchiveError> {
        let reserve = usize::try_from(size.min(MAX_PREALLOCATION)).unwrap_or(0);
        self.files.push(ExtractedFile {
            path: path.to_string(),
            data: Vec::with_capacity(reserve),
        });
        Ok(true)
    }

    fn data(&mut self, chunk: &[u8]) -> Result<(), ArchiveError> {
        if let Some(file) = self.files.last_mut() {
            file.data.extend_from_slice(chunk);
        }
        Ok(())
    }

    fn finish_file(&mut self) -> Result<(), ArchiveError> {
        Ok(())
    }
}

struct DirSink {
    dest: PathBuf,
    /// Relative paths of directories already created (or known to exist) below `dest`.
    created_dirs: HashSet<String>,
    current: Option<(File, PathBuf)>,
    files: Vec<String>,
}

impl DirSink {
    /// Creates `rel` and its parents below `dest` as real directories, never through links.
    fn ensure_dir(&mut self, rel: &str) -> Result<(), ArchiveError> {
        if rel.is_empty() || self.created_dirs.contains(rel) {
            return Ok(());
        }
        if let Some((parent, _)) = rel.rsplit_once('/') {
            self.ensure_dir(parent)?;
        }
        let path = self.dest.join(rel);
        match create_dir(&path) {
            Ok(()) => {}
            Err(source) if source.kind() == io::ErrorKind::AlreadyExists => {
                // The scanner never lets a path be both file and directory, so anything
                // but a real directory here was put there by someone else.
                let is_dir = fs::symlink_metadata(&path)
                    .map(|m| m.file_type().is_dir())
                    .unwrap_or(false);
                if !is_dir {
                    return Err(io_error("create directory", &path, source));
                }
            }
            Err(source) => return Err(io_error("create directory", &path, source)),
        }
        self.created_dirs.insert(rel.to_string());
        Ok(())
    }
}

#[cfg(unix)]
fn create_dir(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    fs::DirBuilder::new().mode(DIR_MODE).create(path)?;
    // The umask may have removed bits; the format says 0755.
    fs::set_permissions(path, fs::Permissions::from_mode(DIR_MODE))
}

#[cfg(not(unix))]
fn create_dir(path: &Path) -> io::Result<()> {
    let _ = DIR_MODE;
    fs::DirBuilder::new().create(path)
}

#[cfg(unix)]
fn create_file(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)?;
    file.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
    Ok(file)
}

#[cfg(not(unix))]
fn create_file(path: &Path) -> io::Result<File> {
    let _ = FILE_MODE;
    OpenOptions::new().write(true).create_new(true).open(path)
}

impl Sink for DirSink {
    fn directory(&mut self, path: &str) -> Result<(), ArchiveError> {
        self.ensure_dir(path)
    }

    fn start_file(&mut self, path: &str, _: u64) -> Result<bool, ArchiveError> {
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.ensure_dir(parent)?;
        }
        let abs = self.dest.join(path);
        let file = create_file(&abs).map_err(|source| io_error("create", &abs, source))?;
        self.current = Some((file, abs));
        self.files.push(path.to_string());
        Ok(true)
    }

    fn data(&mut self, chunk: &[u8]) -> Result<(), ArchiveError> {
        match &mut self.current {
            Some((file, abs)) => file
                .write_all(chunk)
                .map_err(|source| io_error("write", abs, source)),
            None => Ok(()),
        }
    }

    fn finish_file(&mut self) -> Result<(), ArchiveError> {
        // Dropping closes the file; write errors were already reported by write_all.
        self.current = None;
        Ok(())
    }
}

/// Which limit the byte counters tripped, remembered so the error can name it even after
/// the tar reader wrapped the I/O error.
#[derive(Clone, Copy)]
enum Trip {
    Total,
    Ratio,
    Declared,
}

/// Byte counts shared between the compressed and decompressed side of the stream.
#[derive(Default)]
struct Meter {
    compressed: Cell<u64>,
    decompressed: Cell<u64>,
    tripped: Cell<Option<Trip>>,
    /// The gzip decoder itself failed (as opposed to the tar reader).
    gzip_failed: Cell<bool>,
}

impl Meter {
    /// The error for an I/O failure of the layer stream while reading entry `path`.
    fn error(
        &self,
        source: io::Error,
        path: Option<&str>,
        limits: &Limits,
        declared: u64,
    ) -> ArchiveError {
        let path = path.map(str::to_string);
        match self.tripped.get() {
            Some(Trip::Total) => ArchiveError::TotalSizeExceeded {
                limit: limits.max_total_bytes,
                path,
            },
            Some(Trip::Ratio) => ArchiveError::RatioExceeded {
                limit: limits.max_ratio,
                decompressed: self.decompressed.get(),
                compressed: self.compressed.get(),
                path,
            },
            Some(Trip::Declared) => ArchiveError::LayerSizeExceeded { declared },
            None if self.gzip_failed.get() => ArchiveError::CorruptGzip { source },
            None => ArchiveError::CorruptTar { path, source },
        }
    }

    fn trip(&self, trip: Trip) -> io::Error {
        self.tripped.set(Some(trip));
        io::Error::other("layer limit exceeded")
    }
}

/// Counts compressed bytes and refuses to read past the declared size.
struct CompressedCounter<R> {
    inner: R,
    meter: Rc<Meter>,
    declared: u64,
}

impl<R: Read> Read for CompressedCounter<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let total = self.meter.compressed.get() + n as u64;
        self.meter.compressed.set(total);
        if total > self.declared {
            return Err(self.meter.trip(Trip::Declared));
        }
        Ok(n)
    }
}

/// Counts the bytes the decoder really produced and stops at the first limit crossed.
struct DecompressedCounter<R> {
    inner: R,
    meter: Rc<Meter>,
    max_total: u64,
    max_ratio: u64,
}

impl<R: Read> Read for DecompressedCounter<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.meter.tripped.get().is_some() {
            return Err(io::Error::other("layer limit exceeded"));
        }
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) => {
                if self.meter.tripped.get().is_none() {
                    self.meter.gzip_failed.set(true);
                }
                return Err(e);
            }
        };
        let total = self.meter.decompressed.get() + n as u64;
        self.meter.decompressed.set(total);
        if total > self.max_total {
            return Err(self.meter.trip(Trip::Total));
        }
        let compressed = self.meter.compressed.get().max(1);
        if total > RATIO_CHECK_THRESHOLD && total > compressed.saturating_mul(self.max_ratio) {
            return Err(self.meter.trip(Trip::Ratio));
        }
        Ok(n)
    }
}

/// Paths seen so far, to reject duplicates and file/directory conflicts.
#[derive(Default)]
struct Seen {
    files: HashSet<String>,
    dirs: HashSet<String>,
}

impl Seen {
    fn file(&mut self, path: &str) -> Result<(), ArchiveError> {
        if self.files.contains(path) {
            return Err(ArchiveError::DuplicatePath {
                path: path.to_string(),
            });
        }
        if self.dirs.contains(path) {
            return Err(conflict(path));
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent)?;
        }
        self.files.insert(path.to_string());
        Ok(())
    }

    /// Records `path` and its parents as directories.
    fn dir(&mut self, path: &str) -> Result<(), ArchiveError> {
        let mut current = path;
        loop {
            if self.dirs.contains(current) {
                return Ok(());
            }
            if self.files.contains(current) {
                return Err(conflict(current));
            }
            self.dirs.insert(current.to_string());
            match current.rsplit_once('/') {
                Some((parent, _)) => current = parent,
                None => return Ok(()),
            }
        }
    }
}

fn conflict(path: &str) -> ArchiveError {
    ArchiveError::FileDirectoryConflict {
        path: path.to_string(),
    }
}

/// Validates the stored path of an entry and normalises it to `a/b/c` (no `.`, no empty
/// components, no trailing `/`). The empty string stands for the root (`./`).
fn normalise(raw: &[u8]) -> Result<String, ArchiveError> {
    let stored = std::str::from_utf8(raw).map_err(|_| ArchiveError::NonUtf8Path {
        path: String::from_utf8_lossy(raw).into_owned(),
    })?;
    if stored.starts_with('/') {
        return Err(ArchiveError::AbsolutePath {
            path: stored.to_string(),
        });
    }
    let mut normal = String::with_capacity(stored.len());
    for component in stored.split('/') {
        match component {
            "" | "." => continue,
            ".." => {
                return Err(ArchiveError::ParentTraversal {
                    path: stored.to_string(),
                })
            }
            _ => {}
        }
        if unportable_component(component).is_some() {
            return Err(ArchiveError::WindowsPath {
                path: stored.to_string(),
            });
        }
        if !normal.is_empty() {
            normal.push('/');
        }
        normal.push_str(component);
    }
    Ok(normal)
}

/// Reads the whole layer, validating every entry and enforcing `limits`, and hands the
/// accepted directories and files to `sink`.
fn scan<R: Read, S: Sink>(
    mut layer: R,
    compressed_size: u64,
    limits: &Limits,
    sink: &mut S,
) -> Result<(), ArchiveError> {
    let mut magic = [0u8; 2];
    let mut got = 0;
    while got < magic.len() {
        let rest = magic.get_mut(got..).unwrap_or_default();
        match layer.read(rest) {
            Ok(0) => return Err(ArchiveError::NotGzip),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => return Err(ArchiveError::CorruptGzip { source }),
        }
    }
    if magic != [0x1f, 0x8b] {
        return Err(ArchiveError::NotGzip);
    }

    let meter = Rc::new(Meter::default());
    let input = CompressedCounter {
        inner: io::Cursor::new(magic).chain(layer),
        meter: Rc::clone(&meter),
        declared: compressed_size,
    };
    let output = DecompressedCounter {
        inner: MultiGzDecoder::new(input),
        meter: Rc::clone(&meter),
        max_total: limits.max_total_bytes,
        max_ratio: limits.max_ratio,
    };
    let fail = |source, path: Option<&str>| meter.error(source, path, limits, compressed_size);

    let mut archive = tar::Archive::new(output);
    let mut seen = Seen::default();
    let mut entry_count: u64 = 0;
    let mut claimed_total: u64 = 0;
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut last_path: Option<String> = None;

    let entries = archive.entries().map_err(|e| fail(e, None))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| fail(e, last_path.as_deref()))?;
        let kind = entry.header().entry_type();
        if kind == tar::EntryType::XGlobalHeader {
            // pax global headers (e.g. from `git archive`) carry no file; skipped.
            continue;
        }
        let raw_path = entry.path_bytes();
        let path = normalise(&raw_path)?;
        let shown = || String::from_utf8_lossy(&raw_path).into_owned();
        let link_target = || {
            entry
                .link_name_bytes()
                .map(|t| String::from_utf8_lossy(&t).into_owned())
                .unwrap_or_default()
        };
        match kind {
            tar::EntryType::Regular | tar::EntryType::Directory => {}
            tar::EntryType::Symlink => {
                return Err(ArchiveError::SymlinkEntry {
                    path: shown(),
                    target: link_target(),
                })
            }
            tar::EntryType::Link => {
                return Err(ArchiveError::HardlinkEntry {
                    path: shown(),
                    target: link_target(),
                })
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                return Err(ArchiveError::DeviceEntry { path: shown() })
            }
            tar::EntryType::Fifo => return Err(ArchiveError::FifoEntry { path: shown() }),
            other => {
                return Err(ArchiveError::UnsupportedEntry {
                    path: shown(),
                    kind: char::from(other.as_byte()),
                })
            }
        }
        drop(raw_path);

        if kind == tar::EntryType::Directory {
            if path.is_empty() {
                continue;
            }
            count_entry(&mut entry_count, limits)?;
            seen.dir(&path)?;
            sink.directory(&path)?;
            last_path = Some(path);
            continue;
        }

        if path.is_empty() {
            return Err(ArchiveError::EmptyPath {
                path: String::from_utf8_lossy(&entry.path_bytes()).into_owned(),
                kind: "file",
            });
        }
        count_entry(&mut entry_count, limits)?;
        seen.file(&path)?;
        // Header sizes are only claims; they allow an early "no", the meter has the last word.
        let size = entry.size();
        if size > limits.max_file_bytes {
            return Err(ArchiveError::FileTooLarge {
                path,
                size,
                limit: limits.max_file_bytes,
            });
        }
        claimed_total = claimed_total.saturating_add(size);
        if claimed_total > limits.max_total_bytes {
            return Err(ArchiveError::TotalSizeExceeded {
                limit: limits.max_total_bytes,
                path: Some(path),
            });
        }
        if sink.start_file(&path, size)? {
            let mut copied: u64 = 0;
            loop {
                let n = match entry.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(fail(e, Some(&path))),
                };
                copied += n as u64;
                sink.data(buf.get(..n).unwrap_or_default())?;
            }
            if copied != size {
                return Err(ArchiveError::CorruptTar {
                    path: Some(path),
                    source: io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("entry ended after {copied} of {size} bytes"),
                    ),
                });
            }
            sink.finish_file()?;
        }
        last_path = Some(path);
    }

    // Read to the end of the gzip stream: this checks its CRC and length, notices truncation
    // after the tar end marker, and keeps trailing data bounded by the same limits.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|e| fail(e, None))?;
    tracing::debug!(
        entries = entry_count,
        compressed = meter.compressed.get(),
        decompressed = meter.decompressed.get(),
        "read content layer"
    );
    Ok(())
}

fn count_entry(count: &mut u64, limits: &Limits) -> Result<(), ArchiveError> {
    *count += 1;
    if *count > limits.max_files {
        return Err(ArchiveError::TooManyFiles {
            limit: limits.max_files,
        });
    }
    Ok(())
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
    use std::io::Write;
    use std::time::{Duration, Instant};

    use flate2::write::GzEncoder;
    use flate2::Compression;

    use super::*;
    use crate::artifact::archive::{pack, PackOptions};

    /// One raw tar entry; the name bytes go into the header as they are, so `..` and
    /// absolute paths can be written (the tar crate's `set_path` refuses them).
    fn raw_entry(out: &mut Vec<u8>, name: &[u8], kind: tar::EntryType, data: &[u8], link: &[u8]) {
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.as_old_mut().linkname[..link.len()].copy_from_slice(link);
        header.set_entry_type(kind);
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        header.set_cksum();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }

    fn finish_tar(mut tar: Vec<u8>) -> Vec<u8> {
        tar.extend_from_slice(&[0; 1024]);
        tar
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(data).unwrap();
        gz.finish().unwrap()
    }

    /// Name, type and data of one raw tar entry.
    type RawEntry<'a> = (&'a [u8], tar::EntryType, &'a [u8]);

    fn layer_of(entries: &[RawEntry]) -> Vec<u8> {
        let mut tar = Vec::new();
        for (name, kind, data) in entries {
            raw_entry(&mut tar, name, *kind, data, b"");
        }
        gzip(&finish_tar(tar))
    }

    fn list(layer: &[u8]) -> Result<Vec<(String, u64)>, ArchiveError> {
        list_files(layer, layer.len() as u64, &Limits::default())
    }

    fn list_with(layer: &[u8], limits: &Limits) -> Result<Vec<(String, u64)>, ArchiveError> {
        list_files(layer, layer.len() as u64, limits)
    }

    const FILE: tar::EntryType = tar::EntryType::Regular;
    const DIR: tar::EntryType = tar::EntryType::Directory;

    #[test]
    fn traversal_and_absolute_paths_are_rejected_by_name() {
        for (name, reason) in [
            (&b"../x"[..], "ParentTraversal"),
            (b"a/../../x", "ParentTraversal"),
            (b"a/..", "ParentTraversal"),
            (b"/etc/x", "AbsolutePath"),
            (b"C:/x", "WindowsPath"),
            (b"a\\..\\..\\x", "WindowsPath"),
            (b"a/\xff.yaml", "NonUtf8Path"),
        ] {
            let layer = layer_of(&[(name, FILE, b"x")]);
            let err = list(&layer).map(|_| ()).unwrap_err();
            assert_eq!(err.reason(), reason, "{}", String::from_utf8_lossy(name));
            let shown = String::from_utf8_lossy(name).into_owned();
            assert!(
                err.to_string().contains(&shown.escape_debug().to_string()),
                "{err}"
            );

            // Every reader applies the same checks, and nothing escapes dest.
            let dest = tempfile::tempdir().unwrap();
            let dest_path = dest.path().join("dest");
            fs::create_dir(&dest_path).unwrap();
            let err = extract_to_dir(
                layer.as_slice(),
                layer.len() as u64,
                &dest_path,
                &Limits::default(),
            )
            .map(|_| ())
            .unwrap_err();
            assert_eq!(err.reason(), reason);
            assert_eq!(fs::read_dir(dest.path()).unwrap().count(), 1);
            assert!(read_files(layer.as_slice(), layer.len() as u64, &Limits::default()).is_err());
        }
    }

    #[test]
    fn links_devices_and_fifos_are_rejected_by_name() {
        for (kind, link, reason) in [
            (tar::EntryType::Symlink, &b"/etc/passwd"[..], "SymlinkEntry"),
            (tar::EntryType::Link, b"a.yaml", "HardlinkEntry"),
            (tar::EntryType::Char, b"", "DeviceEntry"),
            (tar::EntryType::Block, b"", "DeviceEntry"),
            (tar::EntryType::Fifo, b"", "FifoEntry"),
            (tar::EntryType::Continuous, b"", "UnsupportedEntry"),
        ] {
            let mut tar = Vec::new();
            raw_entry(&mut tar, b"a.yaml", FILE, b"a", b"");
            raw_entry(&mut tar, b"evil", kind, b"", link);
            let layer = gzip(&finish_tar(tar));
            let err = list(&layer).map(|_| ()).unwrap_err();
            assert_eq!(err.reason(), reason);
            assert!(err.to_string().contains("\"evil\""), "{err}");
            if !link.is_empty() {
                let target = String::from_utf8_lossy(link).into_owned();
                assert!(err.to_string().contains(&target), "{err}");
            }
        }
    }

    #[test]
    fn duplicates_and_file_directory_conflicts_are_rejected() {
        let cases: [(&[RawEntry], &str, &str); 4] = [
            (
                &[(b"a.yaml", FILE, b"1"), (b"./a.yaml", FILE, b"2")],
                "DuplicatePath",
                "a.yaml",
            ),
            (
                &[(b"a", FILE, b"1"), (b"a/b.yaml", FILE, b"2")],
                "FileDirectoryConflict",
                "a",
            ),
            (
                &[(b"a/", DIR, b""), (b"a", FILE, b"2")],
                "FileDirectoryConflict",
                "a",
            ),
            (
                &[(b"a/b/c", FILE, b"1"), (b"a/b", FILE, b"2")],
                "FileDirectoryConflict",
                "a/b",
            ),
        ];
        for (entries, reason, path) in cases {
            let err = list(&layer_of(entries)).map(|_| ()).unwrap_err();
            assert_eq!(err.reason(), reason, "{err}");
            assert!(err.to_string().contains(&format!("{path:?}")), "{err}");
        }
    }

    #[test]
    fn dot_slash_prefixes_root_entries_and_pax_globals_are_fine() {
        let mut tar = Vec::new();
        raw_entry(
            &mut tar,
            b"pax_global_header",
            tar::EntryType::XGlobalHeader,
            b"9 a=b\n",
            b"",
        );
        raw_entry(&mut tar, b"./", DIR, b"", b"");
        raw_entry(&mut tar, b"./b/", DIR, b"", b"");
        raw_entry(&mut tar, b"./b//c.yaml", FILE, b"c", b"");
        raw_entry(&mut tar, b"a.yaml", FILE, b"aa", b"");
        let layer = gzip(&finish_tar(tar));
        assert_eq!(
            list(&layer).unwrap(),
            [("a.yaml".to_string(), 2), ("b/c.yaml".to_string(), 1)]
        );
    }

    #[test]
    fn plain_tar_and_empty_input_are_not_gzip() {
        let tar = finish_tar({
            let mut tar = Vec::new();
            raw_entry(&mut tar, b"a.yaml", FILE, b"a", b"");
            tar
        });
        assert_eq!(list(&tar).map(|_| ()).unwrap_err().reason(), "NotGzip");
        assert_eq!(list(b"").map(|_| ()).unwrap_err().reason(), "NotGzip");
        assert_eq!(list(b"\x1f").map(|_| ()).unwrap_err().reason(), "NotGzip");
    }

    #[test]
    fn truncated_and_corrupt_layers_are_clear_errors() {
        let mut tar = Vec::new();
        // Incompressible content, so a cut lands inside the deflate data.
        let noise: Vec<u8> = (0..64 * 1024u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        raw_entry(&mut tar, b"a.yaml", FILE, &noise, b"");
        let layer = gzip(&finish_tar(tar));

        let truncated = &layer[..layer.len() / 2];
        let err = list(truncated).map(|_| ()).unwrap_err();
        assert_eq!(err.reason(), "CorruptGzip", "{err}");
        assert!(err.to_string().contains("truncated"), "{err}");
        // Cut inside the trailer: every tar block is there, only the CRC/length is missing.
        let err = list(&layer[..layer.len() - 4]).map(|_| ()).unwrap_err();
        assert_eq!(err.reason(), "CorruptGzip", "{err}");

        let mut flipped = layer.clone();
        let last = flipped.len() - 6;
        flipped[last] ^= 0xff; // CRC32
        assert_eq!(
            list(&flipped).map(|_| ()).unwrap_err().reason(),
            "CorruptGzip"
        );

        let garbage = gzip(&[0x55; 2048]);
        let err = list(&garbage).map(|_| ()).unwrap_err();
        assert_eq!(err.reason(), "CorruptTar", "{err}");

        // A tar cut in the middle of a file's data, inside a valid gzip stream.
        let mut tar = Vec::new();
        raw_entry(&mut tar, b"a.yaml", FILE, &[b'a'; 4096], b"");
        let cut = gzip(&tar[..1024]);
        let err = read_files(cut.as_slice(), cut.len() as u64, &Limits::default())
            .map(|_| ())
            .unwrap_err();
        assert_eq!(err.reason(), "CorruptTar", "{err}");
        assert!(err.to_string().contains("a.yaml"), "{err}");
    }

    /// `members` gzip members of 1 MiB of zeros each: a valid multi-member gzip stream that
    /// decodes to `members` MiB of zeros. Compressing 1 MiB once and repeating it keeps the
    /// test from doing a GiB of deflate work in a debug build.
    fn zeros_gzip(level: u32, members: usize) -> Vec<u8> {
        let mut member = GzEncoder::new(Vec::new(), Compression::new(level));
        member.write_all(&vec![0u8; 1024 * 1024]).unwrap();
        member.finish().unwrap().repeat(members)
    }

    fn expect_err<T>(result: Result<T, ArchiveError>) -> ArchiveError {
        match result {
            Ok(_) => panic!("expected an error, got Ok"),
            Err(err) => err,
        }
    }

    #[test]
    fn gzip_bomb_is_rejected_after_a_few_mib() {
        // 1 GiB of zeros, about 1 MiB compressed.
        let bomb = zeros_gzip(9, 1024);
        assert!(bomb.len() < 2 * 1024 * 1024, "{}", bomb.len());

        let started = Instant::now();
        let mut counted = CountingReader {
            inner: bomb.as_slice(),
            read: 0,
        };
        let err = expect_err(list_files(
            &mut counted,
            bomb.len() as u64,
            &Limits::default(),
        ));
        assert_eq!(err.reason(), "RatioExceeded", "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
        // Only a small prefix of the compressed input was consumed.
        assert!(
            counted.read < 256 * 1024,
            "read {} compressed bytes",
            counted.read
        );
        match err {
            ArchiveError::RatioExceeded { decompressed, .. } => {
                assert!(decompressed < 16 * MIB, "decompressed {decompressed}")
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn level_one_zeros_stop_at_the_total_limit() {
        // zlib-rs level 1 packs zeros only ~100:1, under the ratio limit: the total bound
        // must stop it, counted on decompressed bytes, not on any header.
        let bomb = zeros_gzip(1, 1024);
        let limits = Limits {
            max_total_bytes: 10 * MIB,
            ..Limits::default()
        };
        let mut counted = CountingReader {
            inner: bomb.as_slice(),
            read: 0,
        };
        let err = expect_err(list_files(&mut counted, bomb.len() as u64, &limits));
        assert_eq!(err.reason(), "TotalSizeExceeded", "{err}");
        assert!(
            counted.read < bomb.len() as u64 / 16,
            "read {}",
            counted.read
        );
    }

    #[test]
    fn zeros_inside_a_file_hit_the_ratio_limit_not_the_header_claim() {
        // A file that claims 100 MiB (under the per-file limit) and is all zeros.
        let mut header = tar::Header::new_gnu();
        header.set_path("big.yaml").unwrap();
        header.set_size(100 * MIB);
        header.set_cksum();
        let mut layer = gzip(header.as_bytes());
        layer.extend_from_slice(&zeros_gzip(9, 101));

        let err = expect_err(read_files(
            layer.as_slice(),
            layer.len() as u64,
            &Limits::default(),
        ));
        assert_eq!(err.reason(), "RatioExceeded", "{err}");
        assert!(err.to_string().contains("big.yaml"), "{err}");
    }

    #[test]
    fn small_compressible_layers_are_fine() {
        let layer = layer_of(&[(b"zeros.bin", FILE, &[0u8; 4 * 1024 * 1024])]);
        assert!(layer.len() < 16 * 1024);
        assert_eq!(list(&layer).unwrap(), [("zeros.bin".to_string(), 4 * MIB)]);
    }

    #[test]
    fn count_file_size_and_total_limits_are_enforced() {
        let layer = layer_of(&[
            (b"a.yaml", FILE, b"aaaa"),
            (b"b/", DIR, b""),
            (b"b/c.yaml", FILE, b"cccccccc"),
        ]);
        let limits = |f: &dyn Fn(&mut Limits)| {
            let mut l = Limits::default();
            f(&mut l);
            l
        };
        let err = list_with(&layer, &limits(&|l| l.max_files = 2))
            .map(|_| ())
            .unwrap_err();
        assert_eq!(err.reason(), "TooManyFiles");
        assert!(list_with(&layer, &limits(&|l| l.max_files = 3)).is_ok());

        let err = list_with(&layer, &limits(&|l| l.max_file_bytes = 7))
            .map(|_| ())
            .unwrap_err();
        assert_eq!(err.reason(), "FileTooLarge");
        assert!(err.to_string().contains("\"b/c.yaml\" is 8 bytes"), "{err}");

        let err = list_with(&layer, &limits(&|l| l.max_total_bytes = 1024))
            .map(|_| ())
            .unwrap_err();
        assert_eq!(err.reason(), "TotalSizeExceeded", "{err}");

        let err = list_files(layer.as_slice(), layer.len() as u64 - 1, &Limits::default())
            .map(|_| ())
            .unwrap_err();
        assert_eq!(err.reason(), "LayerSizeExceeded", "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn pack_then_extract_round_trips() {
        use std::os::unix::fs::PermissionsExt;

        let src = tempfile::tempdir().unwrap();
        let files = [
            ("namespace.yaml", "kind: Namespace\n".to_string()),
            ("apps/web/deploy.yaml", "kind: Deployment\n".repeat(1000)),
            (
                &*format!("deep/{}/x.yaml", "n".repeat(120)),
                "kind: X\n".to_string(),
            ),
        ];
        for (path, content) in &files {
            let full = src.path().join(path);
            fs::create_dir_all(full.parent().unwrap()).unwrap();
            fs::write(&full, content).unwrap();
            fs::set_permissions(&full, fs::Permissions::from_mode(0o600)).unwrap();
        }
        fs::create_dir(src.path().join("empty")).unwrap();
        let packed = pack(src.path(), &PackOptions::default()).unwrap();

        let dest = tempfile::tempdir().unwrap();
        let extracted = extract_to_dir(
            packed.layer.as_slice(),
            packed.size,
            dest.path(),
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(extracted, packed.files);
        for (path, content) in &files {
            let full = dest.path().join(path);
            assert_eq!(fs::read_to_string(&full).unwrap(), *content);
            assert_eq!(
                fs::metadata(&full).unwrap().permissions().mode() & 0o777,
                0o644
            );
        }
        let empty = fs::symlink_metadata(dest.path().join("empty")).unwrap();
        assert!(empty.is_dir());
        assert_eq!(empty.permissions().mode() & 0o777, 0o755);

        // Repacking the extracted tree gives the same layer.
        assert_eq!(
            pack(dest.path(), &PackOptions::default()).unwrap().digest,
            packed.digest
        );

        let in_memory =
            read_files(packed.layer.as_slice(), packed.size, &Limits::default()).unwrap();
        let paths: Vec<_> = in_memory.iter().map(|f| f.path.clone()).collect();
        assert_eq!(paths, packed.files);
        assert_eq!(in_memory[0].data, files[1].1.as_bytes());
    }

    #[test]
    fn destination_must_exist_and_be_empty() {
        let layer = layer_of(&[(b"a.yaml", FILE, b"a")]);
        let dest = tempfile::tempdir().unwrap();
        fs::write(dest.path().join("old.yaml"), b"old").unwrap();
        let extract = |dest: &Path| {
            extract_to_dir(
                layer.as_slice(),
                layer.len() as u64,
                dest,
                &Limits::default(),
            )
        };
        assert_eq!(
            extract(dest.path()).map(|_| ()).unwrap_err().reason(),
            "DestinationNotEmpty"
        );
        assert_eq!(
            extract(&dest.path().join("nope"))
                .map(|_| ())
                .unwrap_err()
                .reason(),
            "MissingDirectory"
        );
        assert_eq!(
            extract(&dest.path().join("old.yaml"))
                .map(|_| ())
                .unwrap_err()
                .reason(),
            "NotADirectory"
        );
    }

    struct CountingReader<R> {
        inner: R,
        read: u64,
    }

    impl<R: Read> Read for CountingReader<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.read += n as u64;
            Ok(n)
        }
    }
}
