//! Hardened layer extraction (`src/artifact/archive/extract.rs`) with small limits.
//!
//! The first input byte picks how the rest becomes a layer (a gzip stream as given; a tar
//! stream the target compresses; or a list of entries the target writes as raw tar headers,
//! so names with `..`, absolute paths, links, devices and GNU long names are easy to reach)
//! and which limits apply (a few KiB, or 16 MiB with a ratio of 4 so the ratio check runs).
//!
//! Checks:
//! - `extract_to_dir` never writes outside its directory: a sibling directory stays empty,
//!   and below the destination there are only regular files (0644) and directories (0755),
//!   never a link, whether extraction succeeded or not;
//! - on success: the files on disk are exactly the returned paths, and the limits held
//!   (file count, size of each file, total size);
//! - `read_files` and `list_files` agree with each other (same paths and sizes, or the same
//!   error reason) and with `extract_to_dir` (same files and contents; the directory sink may
//!   only fail additionally with an I/O error, e.g. a name longer than the file system
//!   allows).
#![no_main]

use std::collections::BTreeSet;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use flate2::write::GzEncoder;
use flate2::Compression;
use libfuzzer_sys::fuzz_target;
use tresor::artifact::archive::{extract_to_dir, list_files, read_files, Limits};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let layer = match mode & 0b11 {
        0 => rest.to_vec(),
        1 => gzip(rest),
        _ => gzip(&tar_of_entries(rest)),
    };
    let limits = if mode & 0b100 == 0 {
        Limits {
            max_total_bytes: 4096 + u64::from(mode >> 4) * 2048,
            max_files: u64::from(mode >> 5) + 1,
            max_file_bytes: 512 + u64::from(mode >> 3 & 1) * 4096,
            max_ratio: 200,
        }
    } else {
        Limits {
            max_total_bytes: 16 << 20,
            max_files: 64,
            max_file_bytes: 16 << 20,
            max_ratio: 4,
        }
    };
    // A declared size a little short of the real one now and then.
    let declared = if mode & 0b1000 != 0 && mode & 0b100 != 0 {
        (layer.len() as u64).saturating_sub(u64::from(mode >> 4))
    } else {
        layer.len() as u64
    };
    check(&layer, declared, &limits);
});

fn check(layer: &[u8], declared: u64, limits: &Limits) {
    let in_memory = read_files(layer, declared, limits);
    let listed = list_files(layer, declared, limits);
    match (&in_memory, &listed) {
        (Ok(files), Ok(list)) => {
            let from_memory: Vec<_> = files
                .iter()
                .map(|f| (f.path.clone(), f.data.len() as u64))
                .collect();
            assert_eq!(&from_memory, list, "read_files and list_files differ");
            check_limits(list, limits);
        }
        (Err(a), Err(b)) => assert_eq!(a.reason(), b.reason(), "{a} / {b}"),
        (a, b) => panic!("read_files: {a:?}, list_files: {b:?}"),
    }

    let root = tempfile::Builder::new()
        .prefix("tresor-fuzz-extract")
        .tempdir_in(scratch())
        .expect("scratch directory");
    let dest = root.path().join("dest");
    let outside = root.path().join("outside");
    fs::create_dir(&dest).expect("dest");
    fs::create_dir(&outside).expect("outside");

    let extracted = extract_to_dir(layer, declared, &dest, limits);

    // Nothing outside the destination, whatever happened.
    let siblings: BTreeSet<_> = fs::read_dir(root.path())
        .expect("root")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(
        siblings.len(),
        2,
        "extraction created {siblings:?} next to dest"
    );
    assert!(
        fs::read_dir(&outside).expect("outside").next().is_none(),
        "extraction wrote into a sibling directory"
    );
    let mut on_disk = Vec::new();
    walk(&dest, "", &mut on_disk);

    match (&extracted, &in_memory) {
        (Ok(paths), Ok(files)) => {
            let returned: BTreeSet<_> = paths.iter().cloned().collect();
            let found: BTreeSet<_> = on_disk.iter().map(|(p, _)| p.clone()).collect();
            assert_eq!(
                returned, found,
                "returned paths differ from the files on disk"
            );
            assert_eq!(returned.len(), paths.len(), "a path was returned twice");
            let memory: Vec<_> = files.iter().map(|f| f.path.clone()).collect();
            assert_eq!(paths, &memory, "extract_to_dir and read_files differ");
            for file in files {
                let content = fs::read(dest.join(&file.path)).expect("extracted file");
                assert_eq!(content, file.data, "content of {:?}", file.path);
            }
        }
        (Err(e), Ok(_)) => assert_eq!(
            e.reason(),
            "IoError",
            "only the directory sink failed, and not with an I/O error: {e}"
        ),
        (Ok(paths), Err(e)) => panic!("extract_to_dir accepted {paths:?}, read_files: {e}"),
        // The directory sink may hit an I/O error before the entry the scanner refuses.
        (Err(a), Err(b)) if a.reason() != "IoError" => {
            assert_eq!(a.reason(), b.reason(), "{a} / {b}")
        }
        (Err(_), Err(_)) => {}
    }
}

fn check_limits(files: &[(String, u64)], limits: &Limits) {
    assert!(
        files.len() as u64 <= limits.max_files,
        "{} files",
        files.len()
    );
    let mut total = 0u64;
    for (path, size) in files {
        assert!(*size <= limits.max_file_bytes, "{path:?}: {size} bytes");
        assert!(!path.is_empty() && !path.starts_with('/'), "path {path:?}");
        assert!(
            path.split('/')
                .all(|c| !c.is_empty() && c != "." && c != ".."),
            "path {path:?}"
        );
        total += size;
    }
    assert!(total <= limits.max_total_bytes, "{total} bytes in total");
}

/// Every regular file below `dir` (relative path, size); panics on anything but regular
/// files and directories with the format's modes.
fn walk(dir: &Path, prefix: &str, out: &mut Vec<(String, u64)>) {
    for entry in fs::read_dir(dir).expect("read_dir") {
        let entry = entry.expect("entry");
        let name = entry.file_name().into_string().expect("UTF-8 name");
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let meta = fs::symlink_metadata(entry.path()).expect("metadata");
        let mode = meta.permissions().mode() & 0o7777;
        if meta.is_dir() {
            assert_eq!(mode, 0o755, "directory {rel:?}");
            walk(&entry.path(), &rel, out);
        } else if meta.is_file() {
            assert_eq!(mode, 0o644, "file {rel:?}");
            out.push((rel, meta.len()));
        } else {
            panic!("extraction created {rel:?}, neither a file nor a directory: {meta:?}");
        }
    }
}

/// A RAM-backed directory when there is one: extraction runs once per input.
fn scratch() -> &'static Path {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm
    } else {
        Path::new("/tmp")
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(data).expect("gzip to memory");
    encoder.finish().expect("gzip to memory")
}

/// Raw tar entries from `input`: `[type][name length][name][link length][link][size: u16
/// LE][data]` repeated; the name and link bytes go into the header unchecked (the tar
/// crate's setters would refuse `..` and absolute paths). A size larger than the data left
/// makes a truncated entry.
fn tar_of_entries(mut input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some((&kind, rest)) = input.split_first() {
        let (name, rest) = take_counted(rest, 100);
        let (link, rest) = take_counted(rest, 100);
        let (size, rest) = match rest {
            [a, b, rest @ ..] => (usize::from(u16::from_le_bytes([*a, *b])) % 4096, rest),
            _ => (0, rest),
        };
        let (body, rest) = rest.split_at(size.min(rest.len()));
        input = rest;

        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.as_old_mut().linkname[..link.len()].copy_from_slice(link);
        header.set_entry_type(tar::EntryType::new(match kind % 8 {
            0..=3 => b'0',
            4 => b'5',
            5 => b'L',
            6 => b'2',
            _ => kind,
        }));
        header.set_mode(0o644);
        header.set_size(size as u64);
        header.set_cksum();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(body);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0; 1024]);
    out
}

fn take_counted(input: &[u8], max: usize) -> (&[u8], &[u8]) {
    match input.split_first() {
        Some((&n, rest)) => rest.split_at((usize::from(n) % (max + 1)).min(rest.len())),
        None => (&[], input),
    }
}
