//! The content layer of artifact format v1: a deterministic tar+gzip of a directory tree,
//! and hardened, bounded reading of such layers.
//!
//! # Format rules (part of artifact format v1)
//!
//! **The same tree gives the same layer digest on every machine.** To get there, [`pack()`]
//! writes:
//!
//! - only directories and regular files; directories are named with a trailing `/`, the root
//!   itself has no entry;
//! - relative, `/`-separated paths in lexical order of their path components (bytes), each
//!   directory before its contents, i.e. a pre-order walk with sorted siblings;
//! - GNU tar headers (`tar::Header::new_gnu`); names over 100 bytes use a GNU long-name
//!   (`././@LongLink`) entry;
//! - uid/gid 0, empty user and group names, mtime 0, mode `0644` for files and `0755` for
//!   directories whatever the permission bits on disk are (so umask does not matter);
//! - the usual two zero blocks at the end;
//! - gzip by flate2 with the zlib-rs backend at level [`GZIP_LEVEL`], header mtime 0, no file
//!   name, OS byte 255 ("unknown").
//!
//! Changing any of these — including the gzip level or the compression implementation —
//! changes digests of existing trees; a golden-digest test guards against that.
//!
//! Symlinks are an error unless the caller asks to resolve them ([`PackOptions`]); sockets,
//! fifos and devices are always an error. Names that could not be extracted everywhere
//! (backslashes, `C:`-style drive prefixes, non-UTF-8) are rejected at packing time already.
//!
//! # Reading layers
//!
//! [`extract_to_dir`], [`read_files`] and [`list_files`] accept only what the format allows:
//! relative paths without `..`, regular files and directories (GNU long names and pax
//! headers are understood), no links, devices or fifos, no duplicate paths. They stop as soon
//! as a [`Limits`] bound is crossed, counting the bytes the gzip decoder actually produced
//! rather than trusting tar headers, so a gzip bomb is rejected after a few MiB.
//!
//! On error, [`extract_to_dir`] leaves whatever it wrote so far in the destination: callers
//! extract into a fresh staging directory and remove it when extraction fails.

use std::cmp::Ordering;
use std::io;
use std::path::PathBuf;

mod extract;
mod pack;

pub use extract::{extract_to_dir, list_files, read_files, ExtractedFile, Limits};
pub use pack::{pack, PackOptions, Packed};

/// Compression level of the content layer's gzip stream.
///
/// Part of artifact format v1: changing it changes the layer digest of every tree.
pub const GZIP_LEVEL: u32 = 6;

/// The gzip header's OS byte: 255, "unknown", so layers do not depend on the packing OS.
pub const GZIP_OS_UNKNOWN: u8 = 255;

/// Mode written for every regular file, whatever its mode on disk.
pub const FILE_MODE: u32 = 0o644;

/// Mode written for every directory, whatever its mode on disk.
pub const DIR_MODE: u32 = 0o755;

/// Decompressed bytes below which the compression ratio limit is not enforced, so that
/// small, highly compressible layers (e.g. a few files of zeros) are fine.
pub const RATIO_CHECK_THRESHOLD: u64 = 8 * 1024 * 1024;

/// Errors from packing a directory into a layer and from reading a layer back.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The directory to pack (or extract into) does not exist.
    #[error("directory {path:?} does not exist: check the path")]
    MissingDirectory {
        /// The missing path.
        path: PathBuf,
    },
    /// The path to pack (or extract into) is not a directory.
    #[error("{path:?} is not a directory: pass the directory that holds the manifests")]
    NotADirectory {
        /// The offending path.
        path: PathBuf,
    },
    /// The tree to pack has no regular file at all.
    #[error("directory {path:?} contains no regular files: nothing to package")]
    EmptyDirectory {
        /// The directory that was packed.
        path: PathBuf,
    },
    /// A symlink was found while packing and symlinks were not to be resolved.
    #[error(
        "{path:?} is a symlink: artifacts contain no links; pass --resolve-symlinks to pack \
         the link target's content instead, or replace the link with the file"
    )]
    Symlink {
        /// The symlink.
        path: PathBuf,
    },
    /// A symlink points to nothing.
    #[error("symlink {path:?} points to a path that does not exist: fix or remove the link")]
    DanglingSymlink {
        /// The symlink.
        path: PathBuf,
    },
    /// Resolving a symlink leads back to itself or to a directory being packed.
    #[error("symlink {path:?} forms a loop: remove the link or point it elsewhere")]
    SymlinkLoop {
        /// The symlink.
        path: PathBuf,
    },
    /// A socket, fifo or device was found while packing.
    #[error("{path:?} is a {kind}: only regular files and directories can be packaged; remove it")]
    SpecialFile {
        /// The offending path.
        path: PathBuf,
        /// What it is: `socket`, `fifo`, `character device`, `block device` or `special file`.
        kind: &'static str,
    },
    /// A file name in the tree cannot be stored portably.
    #[error("cannot package {path:?}: {why}; rename it")]
    UnportableName {
        /// The offending path.
        path: PathBuf,
        /// What is wrong with the name.
        why: &'static str,
    },
    /// Reading the tree or writing extracted files failed.
    #[error("cannot {op} {path:?}: {source}")]
    Io {
        /// What was being done (`read`, `create`, …).
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Building the in-memory layer failed.
    #[error("cannot write the layer: {source}")]
    Write {
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The extraction destination already has content.
    #[error("destination {path:?} is not empty: extract into a new, empty directory")]
    DestinationNotEmpty {
        /// The destination.
        path: PathBuf,
    },
    /// The layer does not start with the gzip magic bytes `1f 8b`.
    #[error("layer is not gzip-compressed (no 1f 8b magic): expected a tar+gzip content layer")]
    NotGzip,
    /// The gzip stream is corrupt or truncated.
    #[error("layer has a corrupt or truncated gzip stream: {source}; fetch it again")]
    CorruptGzip {
        /// The decoder's error.
        #[source]
        source: io::Error,
    },
    /// The tar stream inside the gzip is corrupt or truncated.
    #[error("layer has a corrupt or truncated tar stream{}: {source}", at(.path))]
    CorruptTar {
        /// The entry being read, if any.
        path: Option<String>,
        /// What the tar reader reported.
        #[source]
        source: io::Error,
    },
    /// The layer is longer than the size it was declared with.
    #[error("layer is longer than its declared size of {declared} bytes: refusing to read on")]
    LayerSizeExceeded {
        /// The declared (descriptor) size.
        declared: u64,
    },
    /// An entry path is absolute.
    #[error("layer entry {path:?} has an absolute path: entries must be relative")]
    AbsolutePath {
        /// The entry path as stored.
        path: String,
    },
    /// An entry path has a `..` component.
    #[error("layer entry {path:?} contains '..': entries must stay inside the artifact")]
    ParentTraversal {
        /// The entry path as stored.
        path: String,
    },
    /// An entry path uses a backslash or a Windows drive prefix.
    #[error("layer entry {path:?} has a backslash or drive prefix: entries must use '/' only")]
    WindowsPath {
        /// The entry path as stored.
        path: String,
    },
    /// An entry path is not valid UTF-8.
    #[error("layer entry {path:?} has a name that is not UTF-8")]
    NonUtf8Path {
        /// The entry path, lossily decoded.
        path: String,
    },
    /// An entry path is empty (or only `.`) for something that is not a directory.
    #[error("layer has a {kind} entry with an empty path {path:?}")]
    EmptyPath {
        /// The entry path as stored.
        path: String,
        /// The entry type.
        kind: &'static str,
    },
    /// The layer contains a symbolic link.
    #[error("layer entry {path:?} is a symlink to {target:?}: artifacts must not contain links")]
    SymlinkEntry {
        /// The entry path.
        path: String,
        /// The link target as stored.
        target: String,
    },
    /// The layer contains a hard link.
    #[error("layer entry {path:?} is a hard link to {target:?}: artifacts must not contain links")]
    HardlinkEntry {
        /// The entry path.
        path: String,
        /// The link target as stored.
        target: String,
    },
    /// The layer contains a character or block device.
    #[error("layer entry {path:?} is a device node: artifacts must not contain devices")]
    DeviceEntry {
        /// The entry path.
        path: String,
    },
    /// The layer contains a fifo.
    #[error("layer entry {path:?} is a fifo: artifacts must not contain fifos")]
    FifoEntry {
        /// The entry path.
        path: String,
    },
    /// The layer contains an entry type other than file or directory.
    #[error(
        "layer entry {path:?} has unsupported tar type {kind:?}: only regular files and \
         directories are allowed"
    )]
    UnsupportedEntry {
        /// The entry path.
        path: String,
        /// The tar type flag.
        kind: char,
    },
    /// Two file entries have the same path.
    #[error("layer contains {path:?} twice: the artifact is malformed")]
    DuplicatePath {
        /// The duplicated path.
        path: String,
    },
    /// A path is used both as a file and as a directory.
    #[error("layer uses {path:?} both as a file and as a directory: the artifact is malformed")]
    FileDirectoryConflict {
        /// The conflicting path.
        path: String,
    },
    /// The layer has more entries than allowed.
    #[error("layer has more than {limit} entries: over the limit")]
    TooManyFiles {
        /// The entry limit.
        limit: u64,
    },
    /// One file is larger than allowed.
    #[error("layer entry {path:?} is {size} bytes, over the per-file limit of {limit} bytes")]
    FileTooLarge {
        /// The entry path.
        path: String,
        /// The entry's size.
        size: u64,
        /// The per-file limit.
        limit: u64,
    },
    /// The layer decompresses to more than allowed.
    #[error("layer decompresses to more than {limit} bytes{}: over the limit", at(.path))]
    TotalSizeExceeded {
        /// The total limit.
        limit: u64,
        /// The entry being read when the limit was crossed, if any.
        path: Option<String>,
    },
    /// The layer's compression ratio is suspiciously high (a gzip bomb).
    #[error(
        "layer expands more than {limit}x ({decompressed} bytes from {compressed}){}: \
         refusing a likely gzip bomb",
        at(.path)
    )]
    RatioExceeded {
        /// The ratio limit.
        limit: u64,
        /// Decompressed bytes when the limit was crossed.
        decompressed: u64,
        /// Compressed bytes read at that point.
        compressed: u64,
        /// The entry being read when the limit was crossed, if any.
        path: Option<String>,
    },
}

fn at(path: &Option<String>) -> String {
    match path {
        Some(path) => format!(" at entry {path:?}"),
        None => String::new(),
    }
}

impl ArchiveError {
    /// Stable CamelCase reason for conditions, events, metrics and JSON output.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingDirectory { .. } => "MissingDirectory",
            Self::NotADirectory { .. } => "NotADirectory",
            Self::EmptyDirectory { .. } => "EmptyDirectory",
            Self::Symlink { .. } => "Symlink",
            Self::DanglingSymlink { .. } => "DanglingSymlink",
            Self::SymlinkLoop { .. } => "SymlinkLoop",
            Self::SpecialFile { .. } => "SpecialFile",
            Self::UnportableName { .. } => "UnportableName",
            Self::Io { .. } => "IoError",
            Self::Write { .. } => "LayerWriteFailed",
            Self::DestinationNotEmpty { .. } => "DestinationNotEmpty",
            Self::NotGzip => "NotGzip",
            Self::CorruptGzip { .. } => "CorruptGzip",
            Self::CorruptTar { .. } => "CorruptTar",
            Self::LayerSizeExceeded { .. } => "LayerSizeExceeded",
            Self::AbsolutePath { .. } => "AbsolutePath",
            Self::ParentTraversal { .. } => "ParentTraversal",
            Self::WindowsPath { .. } => "WindowsPath",
            Self::NonUtf8Path { .. } => "NonUtf8Path",
            Self::EmptyPath { .. } => "EmptyPath",
            Self::SymlinkEntry { .. } => "SymlinkEntry",
            Self::HardlinkEntry { .. } => "HardlinkEntry",
            Self::DeviceEntry { .. } => "DeviceEntry",
            Self::FifoEntry { .. } => "FifoEntry",
            Self::UnsupportedEntry { .. } => "UnsupportedEntry",
            Self::DuplicatePath { .. } => "DuplicatePath",
            Self::FileDirectoryConflict { .. } => "FileDirectoryConflict",
            Self::TooManyFiles { .. } => "TooManyFiles",
            Self::FileTooLarge { .. } => "FileTooLarge",
            Self::TotalSizeExceeded { .. } => "TotalSizeExceeded",
            Self::RatioExceeded { .. } => "RatioExceeded",
        }
    }
}

/// Why a single path component cannot be stored, if it cannot.
///
/// Shared by packing and extraction so that tresor never packs what it refuses to extract.
fn unportable_component(component: &str) -> Option<&'static str> {
    if component.contains('\\') {
        return Some("the name contains a backslash");
    }
    let mut bytes = component.bytes();
    if let (Some(first), Some(b':')) = (bytes.next(), bytes.next()) {
        if first.is_ascii_alphabetic() {
            return Some("the name starts like a Windows drive (`C:`)");
        }
    }
    None
}

/// The order of entries in a layer: by path components, bytewise, so a directory sorts
/// before its contents and `a/b` before `a-c`.
fn path_order(a: &str, b: &str) -> Ordering {
    a.split('/').cmp(b.split('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_order_compares_components_not_strings() {
        let mut paths = vec!["a-c", "a/b", "a", "b", "a/b/c", "A"];
        paths.sort_by(|a, b| path_order(a, b));
        assert_eq!(paths, ["A", "a", "a/b", "a/b/c", "a-c", "b"]);
    }

    #[test]
    fn unportable_components_are_named() {
        assert!(unportable_component("a\\b").is_some());
        assert!(unportable_component("C:").is_some());
        assert!(unportable_component("c:evil").is_some());
        assert_eq!(unportable_component("1:x"), None);
        assert_eq!(unportable_component("rbac:admin.yaml"), None);
        assert_eq!(unportable_component("deploy.yaml"), None);
    }

    #[test]
    fn every_error_has_a_distinct_reason() {
        let reasons = [
            ArchiveError::NotGzip.reason(),
            ArchiveError::SymlinkEntry {
                path: String::new(),
                target: String::new(),
            }
            .reason(),
            ArchiveError::Symlink {
                path: PathBuf::new(),
            }
            .reason(),
        ];
        let unique: std::collections::BTreeSet<_> = reasons.iter().collect();
        assert_eq!(unique.len(), reasons.len());
    }
}
