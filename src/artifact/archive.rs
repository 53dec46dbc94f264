//! PLACEHOLDER signatures until the archive branch merges (theirs wins on merge).
#![allow(missing_docs, unused_variables)]
use std::io::Read;
use std::path::Path;
use crate::digest::Digest;
#[derive(Debug, thiserror::Error)]
#[error("archive")]
pub struct ArchiveError;
impl ArchiveError { pub fn reason(&self) -> &'static str { "Archive" } }
pub struct PackOptions { pub resolve_symlinks: bool }
pub struct Packed { pub layer: Vec<u8>, pub digest: Digest, pub size: u64, pub files: Vec<String>, pub uncompressed_size: u64 }
pub fn pack(dir: &Path, opts: &PackOptions) -> Result<Packed, ArchiveError> { Err(ArchiveError) }
#[derive(Clone, Debug)] pub struct Limits { pub max_total_bytes: u64, pub max_files: u64, pub max_file_bytes: u64, pub max_ratio: u64 }
impl Default for Limits { fn default() -> Self { Self { max_total_bytes: 0, max_files: 0, max_file_bytes: 0, max_ratio: 0 } } }
pub struct ExtractedFile { pub path: String, pub data: Vec<u8> }
pub fn extract_to_dir(layer: impl Read, compressed_size: u64, dest: &Path, limits: &Limits) -> Result<Vec<String>, ArchiveError> { Err(ArchiveError) }
pub fn read_files(layer: impl Read, compressed_size: u64, limits: &Limits) -> Result<Vec<ExtractedFile>, ArchiveError> { Err(ArchiveError) }
pub fn list_files(layer: impl Read, compressed_size: u64, limits: &Limits) -> Result<Vec<(String,u64)>, ArchiveError> { Err(ArchiveError) }
