//! Parsing many files at once: how many parser threads (one per core not kept free by
//! [`leaving_cores`], fewer for small trees), sharing the files among them, and merging
//! their results back in path order with the duplicate check, so the result never depends
//! on the thread count.

use std::path::{Path, PathBuf};

use super::parse::{objects_of, parse_file, Depth};
use super::walk::format_of;
use super::{ContentMode, Object, ObjectKey, ObjectsError, Place};

thread_local! {
    /// Cores that [`leaving_cores`] keeps free of parser threads started on this thread.
    static RESERVED_CORES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Runs `f` with parsing (on this thread) using `cores` fewer threads than there are cores,
/// for a caller that keeps those cores busy meanwhile: `push` packs the tree on one core
/// while it validates it, and a third thread on two cores would slow the packer, which is
/// the longer of the two.
pub fn leaving_cores<R>(cores: usize, f: impl FnOnce() -> R) -> R {
    let before = RESERVED_CORES.replace(cores);
    let result = f();
    RESERVED_CORES.set(before);
    result
}

/// Parser threads for `files` files: one per core not reserved by [`leaving_cores`] (at
/// least 1, at most 8), and no more than one per 8 files.
pub(super) fn parser_threads(files: usize) -> usize {
    std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1)
        .saturating_sub(RESERVED_CORES.get())
        .clamp(1, 8)
        .min(files.div_ceil(8).max(1))
}

/// Where a file's bytes come from.
pub(super) enum Source<'a> {
    /// Already in memory.
    Bytes(&'a [u8]),
    /// Read when parsed.
    File(&'a Path),
}

/// What one file yields, in document order: objects (with key and place for the
/// duplicate check) and problems.
enum Item<T> {
    Object(ObjectKey, Place, T),
    Problem(ObjectsError),
}

/// Parses the files on all cores (each worker takes the next file), maps each object right
/// away so a caller can drop the parsed value early, then merges in sorted path order,
/// checking duplicates. Problems come back in path and document order, exactly as a
/// sequential parse finds them; a file that does not parse yields no objects.
pub(super) fn parse_mapped<T: Send>(
    mut files: Vec<(String, Source<'_>)>,
    mode: ContentMode,
    depth: Depth,
    map: impl Fn(Object) -> T + Sync,
) -> (Vec<T>, Vec<ObjectsError>) {
    files.retain(|(path, _)| format_of(path, mode).is_some());
    files.sort_by(|a, b| a.0.cmp(&b.0));

    let parse_one = |(path, source): &(String, Source<'_>)| -> Vec<Item<T>> {
        let Some(format) = format_of(path, mode) else {
            return Vec::new();
        };
        let owned;
        let bytes = match source {
            Source::Bytes(bytes) => *bytes,
            Source::File(file) => match std::fs::read(file) {
                Ok(read) => {
                    owned = read;
                    &owned[..]
                }
                Err(source) => {
                    return vec![Item::Problem(ObjectsError::Read {
                        path: file.to_path_buf(),
                        source,
                    })]
                }
            },
        };
        let docs = match parse_file(path, bytes, format, depth) {
            Ok(docs) => docs,
            Err(err) => return vec![Item::Problem(err)],
        };
        let mut out = Vec::new();
        for doc in docs {
            match objects_of(path, doc, mode) {
                Ok(objects) => out.extend(
                    objects
                        .into_iter()
                        .map(|o| Item::Object(o.key.clone(), o.place(), map(o))),
                ),
                Err(err) => out.push(Item::Problem(err)),
            }
        }
        out
    };
    let threads = parser_threads(files.len());
    let parsed: Vec<Vec<Item<T>>> = if threads == 1 {
        files.iter().map(parse_one).collect()
    } else {
        let next = std::sync::atomic::AtomicUsize::new(0);
        let mut indexed: Vec<(usize, Vec<Item<T>>)> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        let mut done = Vec::new();
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(file) = files.get(i) else { break };
                            done.push((i, parse_one(file)));
                        }
                        done
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| {
                    w.join().unwrap_or_else(|_| {
                        vec![(
                            0,
                            vec![Item::Problem(ObjectsError::Read {
                                path: PathBuf::from("<parser thread>"),
                                source: std::io::Error::other("manifest parser thread failed"),
                            })],
                        )]
                    })
                })
                .collect()
        });
        indexed.sort_by_key(|(i, _)| *i);
        indexed.into_iter().map(|(_, r)| r).collect()
    };

    let mut objects = Vec::new();
    let mut problems = Vec::new();
    // A hash map: ordered lookups compare long shared prefixes (`team-a/app-…`) byte by
    // byte, which cost a tenth of a policy-view parse.
    let mut seen: std::collections::HashMap<ObjectKey, Place> = std::collections::HashMap::new();
    for item in parsed.into_iter().flatten() {
        match item {
            Item::Problem(err) => problems.push(err),
            Item::Object(key, place, object) => {
                if mode == ContentMode::Kubernetes {
                    if let Some(first) = seen.get(&key) {
                        problems.push(ObjectsError::Duplicate {
                            key: Box::new(key),
                            first: first.clone(),
                            second: place,
                        });
                        continue;
                    }
                    seen.insert(key, place);
                }
                objects.push(object);
            }
        }
    }
    (objects, problems)
}
