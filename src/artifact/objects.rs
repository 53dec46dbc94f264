//! Manifest objects: the Kubernetes objects (or plain config documents) in a tree.
//!
//! [`parse_tree`] reads the `.yaml`, `.yml` and `.json` files of a tree and returns one
//! [`Object`] per document, each remembering where it came from (file, document index, line)
//! so that lint findings, diffs and errors can point at it. Files with other extensions are
//! packaged but are not objects, and neither are kustomize config files
//! (`kustomization.yaml`, `kustomization.yml`, `Kustomization`).
//!
//! Two modes, see [`ContentMode`]:
//! - [`ContentMode::Kubernetes`]: every document must be a mapping with string `apiVersion`,
//!   `kind` and `metadata.name`; a `kind: List` document expands into its `items`; two objects
//!   with the same [`ObjectKey`] are an error.
//! - [`ContentMode::Files`]: host-agent content (docker compose files, app config). Syntax is
//!   still checked, but documents need no fields; each is keyed by its file and document index.
//!
//! Errors are reported for the first problem found, walking files in sorted path order and
//! documents in file order, so the same tree always gives the same error.
//!
//! How much of each document is kept depends on the caller, never what is checked: the
//! full parse ([`parse_tree`], [`load_dir`]: diff, apply, `--pin-images`), the policy view
//! ([`scan_tree`], [`scan_dir`]: lint, and push and pull with a policy) or only the identity
//! fields ([`check_dir`]: push without a policy). The reduced views walk the same parser
//! events with the same calls as the full parse, so they report the same errors; documents
//! that may use merge keys are always parsed in full (a merge can supply any field).
//!
//! Files are read by `fast` first, a reader for the block-YAML subset of rendered
//! manifests that gives exactly libyaml's result or declines; declined files (and every
//! error) go to libyaml through serde_norway.
//!
//! Document indexes are 0-based positions in the file: every `---` separator starts a new
//! document (empty ones included), and content before the first `---` is document 0 only if
//! there is any (a leading comment block is not a document).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_norway::Value;

mod fast;
mod parallel;
mod parse;
mod prune;
mod walk;

pub use parallel::leaving_cores;
use parallel::{parse_mapped, Source};
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub use parse::fast_reader_agrees_with_libyaml;
use parse::Depth;
use walk::walk;

/// Largest manifest file [`load_dir`] reads; bigger files fail with [`ObjectsError::TooLarge`].
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Errors found while reading or parsing the manifests of a tree.
#[derive(Debug, thiserror::Error)]
pub enum ObjectsError {
    /// A `.yaml`/`.yml` file is not valid YAML (or not UTF-8).
    #[error("{file}:{line}:{column}: invalid YAML: {message}; fix the syntax at that position")]
    InvalidYaml {
        /// Path of the file, relative to the tree.
        file: String,
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
        /// What the parser reported.
        message: String,
    },
    /// A `.json` file is not valid JSON (or not UTF-8).
    #[error("{file}:{line}:{column}: invalid JSON: {message}; fix the syntax at that position")]
    InvalidJson {
        /// Path of the file, relative to the tree.
        file: String,
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
        /// What the parser reported.
        message: String,
    },
    /// A Kubernetes object lacks `apiVersion`, `kind` or `metadata.name` (or it is empty).
    #[error(
        "{file}: document {document}{}: missing field `{field}`; every Kubernetes object needs \
         apiVersion, kind and metadata.name (use content mode `files` for non-Kubernetes content)",
        item_suffix(*item)
    )]
    MissingField {
        /// Path of the file, relative to the tree.
        file: String,
        /// 0-based document index in the file.
        document: usize,
        /// 0-based index in `items` when the document is a `kind: List`.
        item: Option<usize>,
        /// The missing field: `apiVersion`, `kind` or `metadata.name`.
        field: &'static str,
    },
    /// A field that identifies an object is present but not a string.
    #[error(
        "{file}: document {document}{}: field `{field}` must be a string",
        item_suffix(*item)
    )]
    NotAString {
        /// Path of the file, relative to the tree.
        file: String,
        /// 0-based document index in the file.
        document: usize,
        /// 0-based index in `items` when the document is a `kind: List`.
        item: Option<usize>,
        /// The field: `apiVersion`, `kind`, `metadata.name` or `metadata.namespace`.
        field: &'static str,
    },
    /// A document (or `List` item) is a scalar or a sequence instead of a mapping.
    #[error(
        "{file}: document {document}{}: not a Kubernetes object (expected a mapping with \
         apiVersion, kind and metadata); use content mode `files` for non-Kubernetes content",
        item_suffix(*item)
    )]
    NotAnObject {
        /// Path of the file, relative to the tree.
        file: String,
        /// 0-based document index in the file.
        document: usize,
        /// 0-based index in `items` when the document is a `kind: List`.
        item: Option<usize>,
    },
    /// Two objects have the same group, kind, namespace and name.
    #[error("duplicate object {key}: first in {first}, again in {second}; remove one of them")]
    Duplicate {
        /// The key both objects share (boxed to keep the error small).
        key: Box<ObjectKey>,
        /// Where the object was seen first (in sorted file order).
        first: Place,
        /// Where it was seen again.
        second: Place,
    },
    /// A file in the tree could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path that failed.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A manifest file is larger than [`MAX_FILE_BYTES`].
    #[error("{file}: {size} bytes is more than the limit of {limit} bytes for a manifest file; split it")]
    TooLarge {
        /// Path of the file, relative to the tree.
        file: String,
        /// Its size in bytes.
        size: u64,
        /// The limit in bytes.
        limit: u64,
    },
}

impl ObjectsError {
    /// Stable CamelCase reason for conditions, events, metrics and JSON output.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidYaml { .. } => "InvalidYaml",
            Self::InvalidJson { .. } => "InvalidJson",
            Self::MissingField { .. } => "MissingField",
            Self::NotAString { .. } => "FieldNotAString",
            Self::NotAnObject { .. } => "NotAnObject",
            Self::Duplicate { .. } => "DuplicateObject",
            Self::Read { .. } => "ReadFailed",
            Self::TooLarge { .. } => "ManifestTooLarge",
        }
    }
}

fn item_suffix(item: Option<usize>) -> String {
    item.map(|i| format!(" item {i}")).unwrap_or_default()
}

/// Where a document is: file, document index and, for `kind: List`, the item index.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Place {
    /// Path of the file, relative to the tree.
    pub file: String,
    /// 0-based document index in the file.
    pub document: usize,
    /// 0-based index in `items` when the document is a `kind: List`.
    pub item: Option<usize>,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} document {}{}",
            self.file,
            self.document,
            item_suffix(self.item)
        )
    }
}

/// What identifies an object in a cluster: group, kind, namespace and name (not the version).
///
/// Displayed as `Kind.group/namespace/name`, leaving out an empty group or a missing
/// namespace: `Deployment.apps/default/web`, `ConfigMap/default/app`, `Namespace/web`.
/// In [`ContentMode::Files`] kind and group are empty and the name is `file` (document 0)
/// or `file#N`, displayed as just that.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ObjectKey {
    /// API group: the part of `apiVersion` before `/`, empty for the core group (`v1`).
    pub group: String,
    /// `kind`.
    pub kind: String,
    /// `metadata.namespace`; `None` when not set (cluster-scoped, or defaulted at apply).
    pub namespace: Option<String>,
    /// `metadata.name`.
    pub name: String,
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.kind.is_empty() {
            f.write_str(&self.kind)?;
            if !self.group.is_empty() {
                write!(f, ".{}", self.group)?;
            }
            f.write_str("/")?;
        }
        if let Some(namespace) = &self.namespace {
            write!(f, "{namespace}/")?;
        }
        f.write_str(&self.name)
    }
}

/// One object (one document, or one item of a `kind: List`) and where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Object {
    /// Identity of the object.
    pub key: ObjectKey,
    /// `apiVersion` as written (empty in [`ContentMode::Files`]).
    pub api_version: String,
    /// Path of the file, relative to the tree, `/`-separated.
    pub file: String,
    /// 0-based document index in the file.
    pub document: usize,
    /// 0-based index in `items` when the document is a `kind: List`.
    pub item: Option<usize>,
    /// 1-based line where the document's content starts (for list items: the list's).
    pub line: usize,
    /// The parsed document, map keys in the order written; YAML merge keys (`<<`) applied.
    pub value: Value,
}

impl Object {
    /// Where this object is, for messages.
    pub fn place(&self) -> Place {
        Place {
            file: self.file.clone(),
            document: self.document,
            item: self.item,
        }
    }
}

/// What a tree holds, which decides how strictly documents are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentMode {
    /// Kubernetes manifests: identity fields required, `List` expanded, no duplicates.
    Kubernetes,
    /// Any declarative config (e.g. docker compose): syntax checked only.
    Files,
}

impl ContentMode {
    /// The mode an artifact was pushed with, from its manifest annotations
    /// ([`super::format::ANNOTATION_CONTENT`]); Kubernetes unless it says `files`.
    pub fn of_annotations(annotations: &BTreeMap<String, String>) -> Self {
        match annotations
            .get(super::format::ANNOTATION_CONTENT)
            .map(String::as_str)
        {
            Some("files") => Self::Files,
            _ => Self::Kubernetes,
        }
    }
}

/// Parses every manifest in `files` (relative `/`-separated path and content, any order).
///
/// Returns the objects sorted by [`ObjectKey`] (in [`ContentMode::Files`]: by file, then
/// document, which is the order a reader expects there). Fails with the first problem in
/// sorted path order; see [`ObjectsError`].
pub fn parse_tree(
    files: &[(String, Vec<u8>)],
    mode: ContentMode,
) -> Result<Vec<Object>, ObjectsError> {
    let (objects, errors) = parse_tree_all(files, mode);
    match errors.into_iter().next() {
        Some(first) => Err(first),
        None => Ok(objects),
    }
}

/// Like [`parse_tree`], but keeps going: returns every object that parsed and every problem
/// found (in sorted path order), so that `tresor lint` can report all of them at once.
///
/// A file that is not valid YAML/JSON contributes no objects; an invalid document or a
/// duplicate is left out and reported, the rest of the file is kept.
pub fn parse_tree_all(
    files: &[(String, Vec<u8>)],
    mode: ContentMode,
) -> (Vec<Object>, Vec<ObjectsError>) {
    let (mut objects, errors) = parse_mapped(bytes_sources(files), mode, Depth::Full, |o| o);
    if mode == ContentMode::Kubernetes {
        objects.sort_by(|a, b| a.key.cmp(&b.key));
    }
    (objects, errors)
}

fn bytes_sources(files: &[(String, Vec<u8>)]) -> Vec<(String, Source<'_>)> {
    files
        .iter()
        .map(|(path, bytes)| (path.clone(), Source::Bytes(bytes)))
        .collect()
}

fn first_error<T>((items, errors): (Vec<T>, Vec<ObjectsError>)) -> Result<Vec<T>, ObjectsError> {
    match errors.into_iter().next() {
        Some(first) => Err(first),
        None => Ok(items),
    }
}

/// Checks `files` exactly like [`parse_tree`] but keeps only each object's key and place,
/// reading only the identity fields (what [`check_dir`] does, from memory; the tests compare
/// it with the full parse).
#[cfg(test)]
fn check_tree(
    files: &[(String, Vec<u8>)],
    mode: ContentMode,
) -> Result<Vec<(ObjectKey, Place)>, ObjectsError> {
    first_error(parse_mapped(
        bytes_sources(files),
        mode,
        Depth::Identity,
        identity_of,
    ))
}

/// Checks the manifests under `dir` like [`parse_tree`] but keeps only each object's key and place,
/// reading only the identity fields of each document and each file only while it
/// is parsed, so memory stays at one file per core whatever the size of the tree.
pub fn check_dir(dir: &Path, mode: ContentMode) -> Result<Vec<(ObjectKey, Place)>, ObjectsError> {
    let mut files = Vec::new();
    walk(dir, "", mode, &mut files)?;
    let sources = files
        .iter()
        .map(|(rel, path)| (rel.clone(), Source::File(path)))
        .collect();
    first_error(parse_mapped(sources, mode, Depth::Identity, identity_of))
}

/// Reads every regular file under `dir` (sorted, symlinks not followed) and calls
/// [`parse_tree`] with paths relative to `dir`.
///
/// Only `.yaml`, `.yml` and `.json` files are read; each must be at most
/// [`MAX_FILE_BYTES`]. Fails with [`ObjectsError::Read`] when the walk or a read fails.
pub fn load_dir(dir: &Path, mode: ContentMode) -> Result<Vec<Object>, ObjectsError> {
    parse_tree(&read_dir_files(dir, mode)?, mode)
}

/// Parses `files` on all cores for the immutability policy and hands every object to `map`
/// as soon as it is parsed, so the caller keeps only what it derives (findings, keys) and
/// not the parse trees. Returns what `map` made, in path and document order, and every
/// problem found — the same problems, objects and keys as [`parse_tree_all`].
///
/// Each object's `value` is the policy view of the document: only the fields the policy
/// rules read (identity, labels, pod template images, Flux and Argo CD refs, the `sops`
/// metadata and which `data` values are encrypted), exactly as the full parse has them;
/// see `objects/prune.rs`. Skipping the rest makes this ~1.6 times as fast as a full parse
/// (`cargo bench --bench lint`).
pub fn scan_tree<T: Send>(
    files: &[(String, Vec<u8>)],
    mode: ContentMode,
    map: impl Fn(Object) -> T + Sync,
) -> (Vec<T>, Vec<ObjectsError>) {
    parse_mapped(bytes_sources(files), mode, Depth::Policy, map)
}

/// Like [`scan_tree`] for the manifests under `dir`, each file read only while it is parsed.
/// Fails only when the directory cannot be walked.
pub fn scan_dir<T: Send>(
    dir: &Path,
    mode: ContentMode,
    map: impl Fn(Object) -> T + Sync,
) -> Result<(Vec<T>, Vec<ObjectsError>), ObjectsError> {
    let mut files = Vec::new();
    walk(dir, "", mode, &mut files)?;
    let sources = files
        .iter()
        .map(|(rel, path)| (rel.clone(), Source::File(path)))
        .collect();
    Ok(parse_mapped(sources, mode, Depth::Policy, map))
}

/// The manifest files under `dir` that [`load_dir`] parses, as (relative path, bytes), sorted.
/// Fails like [`load_dir`] on unreadable or too large files.
pub fn read_dir_files(
    dir: &Path,
    mode: ContentMode,
) -> Result<Vec<(String, Vec<u8>)>, ObjectsError> {
    let mut paths = Vec::new();
    walk(dir, "", mode, &mut paths)?;
    let mut files = Vec::with_capacity(paths.len());
    for (rel, path) in paths {
        let bytes = std::fs::read(&path).map_err(|source| ObjectsError::Read { path, source })?;
        files.push((rel, bytes));
    }
    Ok(files)
}

fn identity_of(object: Object) -> (ObjectKey, Place) {
    let place = object.place();
    (object.key, place)
}

#[cfg(test)]
mod tests {
    use super::parallel::parser_threads;
    use super::parse::{parse_sections, parse_whole, split_sections};
    use super::*;

    fn tree(files: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        files
            .iter()
            .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
            .collect()
    }

    fn k8s(files: &[(&str, &str)]) -> Result<Vec<Object>, ObjectsError> {
        parse_tree(&tree(files), ContentMode::Kubernetes)
    }

    fn keys(objects: &[Object]) -> Vec<String> {
        objects.iter().map(|o| o.key.to_string()).collect()
    }

    const DEPLOY: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: default\nspec:\n  replicas: 1\n";

    #[test]
    fn multi_document_file_with_empty_and_comment_only_documents() {
        let text = "# leading comment\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\n  namespace: default\n---\n---\n# only a comment\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: web\n";
        let objects = k8s(&[("all.yaml", text)]).unwrap();
        assert_eq!(keys(&objects), ["ConfigMap/default/app", "Namespace/web"]);
        let places: Vec<_> = objects
            .iter()
            .map(|o| (o.file.as_str(), o.document, o.line))
            .collect();
        assert_eq!(places, [("all.yaml", 0, 3), ("all.yaml", 3, 12)]);
        assert_eq!(objects[0].api_version, "v1");
        assert_eq!(objects[0].key.group, "");
    }

    #[test]
    fn document_without_leading_marker_is_document_zero() {
        let text = format!("{DEPLOY}---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\n");
        let objects = k8s(&[("a.yml", &text)]).unwrap();
        // Sorted by key: group first, so the core group comes first.
        assert_eq!(
            keys(&objects),
            ["Service/web", "Deployment.apps/default/web"]
        );
        assert_eq!((objects[1].document, objects[1].line), (0, 1));
        assert_eq!((objects[0].document, objects[0].line), (1, 9));
        assert_eq!(objects[1].key.group, "apps");
    }

    #[test]
    fn key_order_as_written_is_kept() {
        let objects = k8s(&[("d.yaml", DEPLOY)]).unwrap();
        let keys: Vec<_> = objects[0]
            .value
            .as_mapping()
            .unwrap()
            .keys()
            .map(|k| k.as_str().unwrap())
            .collect();
        assert_eq!(keys, ["apiVersion", "kind", "metadata", "spec"]);
    }

    #[test]
    fn json_file_is_one_object() {
        let json = r#"{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "x"}}"#;
        let objects = k8s(&[("s.json", json)]).unwrap();
        assert_eq!(keys(&objects), ["Secret/x/s"]);
    }

    #[test]
    fn list_expands_into_items() {
        let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata:\n    name: a\n- apiVersion: v1\n  kind: ConfigMap\n  metadata:\n    name: b\n";
        let objects = k8s(&[("list.yaml", text)]).unwrap();
        assert_eq!(keys(&objects), ["ConfigMap/a", "ConfigMap/b"]);
        assert_eq!(objects[1].item, Some(1));
        assert_eq!(objects[1].document, 0);
    }

    #[test]
    fn missing_kind_names_file_and_document() {
        let text = format!("{DEPLOY}---\napiVersion: v1\nmetadata:\n  name: x\n");
        let err = k8s(&[("ok.yaml", DEPLOY), ("dir/bad.yaml", &text)]).unwrap_err();
        assert!(
            matches!(&err, ObjectsError::MissingField { file, document: 1, item: None, field: "kind" } if file == "dir/bad.yaml"),
            "{err:?}"
        );
        assert_eq!(err.reason(), "MissingField");
        assert!(
            err.to_string()
                .starts_with("dir/bad.yaml: document 1: missing field `kind`"),
            "{err}"
        );
    }

    #[test]
    fn missing_metadata_name() {
        let err = k8s(&[(
            "a.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  namespace: x\n",
        )])
        .unwrap_err();
        assert!(
            matches!(
                &err,
                ObjectsError::MissingField {
                    document: 0,
                    field: "metadata.name",
                    ..
                }
            ),
            "{err:?}"
        );
        let err = k8s(&[("a.yaml", "apiVersion: v1\nkind: ConfigMap\n")]).unwrap_err();
        assert!(
            matches!(
                &err,
                ObjectsError::MissingField {
                    field: "metadata.name",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn non_string_name_and_non_mapping_document() {
        let err = k8s(&[(
            "a.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: 12\n",
        )])
        .unwrap_err();
        assert!(
            matches!(
                &err,
                ObjectsError::NotAString {
                    field: "metadata.name",
                    ..
                }
            ),
            "{err:?}"
        );
        let err = k8s(&[("a.yaml", "---\n- a\n- b\n")]).unwrap_err();
        assert!(
            matches!(
                &err,
                ObjectsError::NotAnObject {
                    document: 0,
                    item: None,
                    ..
                }
            ),
            "{err:?}"
        );
        let err = k8s(&[("a.yaml", "just a string\n")]).unwrap_err();
        assert_eq!(err.reason(), "NotAnObject");
    }

    #[test]
    fn invalid_yaml_reports_line_in_file() {
        let text =
            format!("{DEPLOY}---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [unclosed\n");
        let err = k8s(&[("bad.yaml", &text)]).unwrap_err();
        match &err {
            ObjectsError::InvalidYaml {
                file,
                line,
                message,
                ..
            } => {
                assert_eq!(file, "bad.yaml");
                assert_eq!(*line, 13, "{err}");
                // Lines inside the message count from the file start too, not the document.
                assert!(
                    message.contains(
                        "at line 13 column 1, while parsing a flow sequence at line 12 column 9"
                    ),
                    "{message}"
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        let text = "a: 1\nb: c: d\n";
        match k8s(&[("x.yaml", text)]).unwrap_err() {
            ObjectsError::InvalidYaml { line, column, .. } => assert_eq!((line, column), (2, 5)),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn invalid_json_reports_line() {
        let err = k8s(&[("x.json", "{\n  \"a\": 1,\n  \"b\" 2\n}\n")]).unwrap_err();
        match &err {
            ObjectsError::InvalidJson {
                file,
                line,
                column,
                message,
            } => {
                assert_eq!((file.as_str(), *line, *column), ("x.json", 3, 7));
                assert_eq!(message, "expected `:`");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn invalid_utf8_is_reported_with_position() {
        let files = vec![("x.yaml".to_string(), b"a: 1\nb: \xff\n".to_vec())];
        match parse_tree(&files, ContentMode::Files).unwrap_err() {
            ObjectsError::InvalidYaml { line, column, .. } => assert_eq!((line, column), (2, 4)),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn duplicate_across_files_names_both_places() {
        let other = format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n---\n{DEPLOY}");
        let err = k8s(&[("b.yaml", &other), ("a.yaml", DEPLOY)]).unwrap_err();
        match &err {
            ObjectsError::Duplicate { key, first, second } => {
                assert_eq!(key.to_string(), "Deployment.apps/default/web");
                assert_eq!((first.file.as_str(), first.document), ("a.yaml", 0));
                assert_eq!((second.file.as_str(), second.document), ("b.yaml", 1));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            err.to_string(),
            "duplicate object Deployment.apps/default/web: first in a.yaml document 0, again in b.yaml document 1; remove one of them"
        );
    }

    #[test]
    fn same_name_in_other_namespace_or_group_is_not_a_duplicate() {
        let other_ns = DEPLOY.replace("namespace: default", "namespace: prod");
        let other_group = DEPLOY.replace("apps/v1", "example.com/v1");
        let other_version = DEPLOY.replace("apps/v1", "apps/v1beta1");
        let objects = k8s(&[
            ("a.yaml", DEPLOY),
            ("b.yaml", &other_ns),
            ("c.yaml", &other_group),
        ])
        .unwrap();
        assert_eq!(
            keys(&objects),
            [
                "Deployment.apps/default/web",
                "Deployment.apps/prod/web",
                "Deployment.example.com/default/web"
            ]
        );
        // The version is not part of the identity.
        let err = k8s(&[("a.yaml", DEPLOY), ("b.yaml", &other_version)]).unwrap_err();
        assert_eq!(err.reason(), "DuplicateObject");
    }

    #[test]
    fn kustomization_and_other_files_are_skipped() {
        let kustomization = "apiVersion: kustomize.config.k8s.io/v1beta1\nresources:\n- d.yaml\n";
        let objects = k8s(&[
            ("kustomization.yaml", kustomization),
            ("sub/kustomization.yml", kustomization),
            ("sub/Kustomization", kustomization),
            ("README.md", "# not yaml: [\n"),
            ("d.yaml", DEPLOY),
        ])
        .unwrap();
        assert_eq!(keys(&objects), ["Deployment.apps/default/web"]);
    }

    #[test]
    fn files_mode_accepts_docker_compose() {
        let compose = "services:\n  web:\n    image: nginx@sha256:abc\n    ports: [\"80:80\"]\n";
        let objects = parse_tree(
            &tree(&[("compose.yaml", compose), ("b.json", "[1, 2]")]),
            ContentMode::Files,
        )
        .unwrap();
        assert_eq!(keys(&objects), ["b.json", "compose.yaml"]);
        assert_eq!(
            objects[1].value["services"]["web"]["image"].as_str(),
            Some("nginx@sha256:abc")
        );
        // Syntax is still checked.
        let err = parse_tree(
            &tree(&[("compose.yaml", "services: [\n")]),
            ContentMode::Files,
        )
        .unwrap_err();
        assert_eq!(err.reason(), "InvalidYaml");
    }

    #[test]
    fn merge_keys_are_applied() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\nbase: &b\n  x: 1\ndata:\n  <<: *b\n  y: 2\n";
        let objects = k8s(&[("m.yaml", text)]).unwrap();
        assert_eq!(objects[0].value["data"]["x"].as_u64(), Some(1));
    }

    #[test]
    fn load_dir_reads_sorted_tree() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("apps")).unwrap();
        std::fs::write(dir.path().join("apps/web.yaml"), DEPLOY).unwrap();
        std::fs::write(
            dir.path().join("ns.yaml"),
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: default\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
        let objects = load_dir(dir.path(), ContentMode::Kubernetes).unwrap();
        let files: Vec<_> = objects.iter().map(|o| o.file.as_str()).collect();
        assert_eq!(files, ["ns.yaml", "apps/web.yaml"]);
        assert_eq!(
            keys(&objects),
            ["Namespace/default", "Deployment.apps/default/web"]
        );
    }

    fn places(text: &str) -> Vec<(String, usize, usize)> {
        k8s(&[("f.yaml", text)])
            .unwrap()
            .iter()
            .map(|o| (o.key.to_string(), o.document, o.line))
            .collect()
    }

    #[test]
    fn directives_end_markers_crlf_and_block_scalars() {
        let p = |k: &str, d, l| (k.to_string(), d, l);
        let directive = "%YAML 1.2\n---\napiVersion: v1\nkind: A\nmetadata:\n  name: a\n";
        assert_eq!(places(directive), [p("A/a", 0, 3)]);
        let end_marker = "apiVersion: v1\nkind: A\nmetadata:\n  name: a\n...\n--- # b\napiVersion: v1\nkind: B\nmetadata:\n  name: b\n";
        assert_eq!(places(end_marker), [p("A/a", 0, 1), p("B/b", 1, 7)]);
        let crlf = "apiVersion: v1\r\nkind: A\r\nmetadata:\r\n  name: a\r\n---\r\napiVersion: v1\r\nkind: B\r\nmetadata: {name: b}\r\n";
        assert_eq!(places(crlf), [p("A/a", 0, 1), p("B/b", 1, 6)]);
        let block =
            "apiVersion: v1\nkind: A\nmetadata:\n  name: a\ndata:\n  x: |\n    ---\n    text\n";
        assert_eq!(places(block), [p("A/a", 0, 1)]);
        assert_eq!(places("# only a comment\n"), []);
        assert_eq!(places(""), []);
    }

    #[test]
    fn leaving_cores_takes_parser_threads_off_while_it_runs() {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let all = parser_threads(1000);
        assert_eq!(all, cores.clamp(1, 8));
        let fewer = leaving_cores(1, || parser_threads(1000));
        assert_eq!(fewer, cores.saturating_sub(1).clamp(1, 8));
        // Never none, and nested calls restore what was there.
        assert_eq!(leaving_cores(cores + 5, || parser_threads(1000)), 1);
        leaving_cores(1, || {
            leaving_cores(cores, || {});
            assert_eq!(parser_threads(1000), fewer);
        });
        assert_eq!(parser_threads(1000), all);
        assert_eq!(parser_threads(3), 1);
    }

    #[test]
    fn only_spaces_and_tabs_are_blank_for_document_indexes() {
        // U+3000 is a scalar to libyaml, so the first document is not a comment block.
        let text = "\u{3000}\n---\na: 1\n";
        let docs = parse_tree(&tree(&[("f.yaml", text)]), ContentMode::Files).unwrap();
        let places: Vec<_> = docs.iter().map(|o| (o.document, o.line)).collect();
        assert_eq!(places, [(0, 1), (1, 3)]);
    }

    #[test]
    fn files_mode_keys_documents_by_file_and_index() {
        let objects = parse_tree(
            &tree(&[("c.yaml", "a: 1\n---\nb: 2\n")]),
            ContentMode::Files,
        )
        .unwrap();
        assert_eq!(keys(&objects), ["c.yaml", "c.yaml#1"]);
        assert_eq!(objects[1].document, 1);
    }

    #[test]
    fn check_tree_agrees_with_parse_tree() {
        let cases: &[&[(&str, &str)]] = &[
            &[("a.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  namespace: n\ndata: {x: '1'}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n")],
            &[("a.yaml", "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: A\n  metadata: {name: x}\n- apiVersion: v1\n  kind: A\n  metadata: {name: y}\n")],
            &[("a.yaml", "apiVersion: v1\nmetadata: {name: x}\n")],
            &[("a.yaml", "apiVersion: v1\nkind: A\nmetadata: {name: 12}\n")],
            &[("a.yaml", "- 1\n- 2\n")],
            &[("a.yaml", "apiVersion: v1\nkind: A\nmetadata: {name: x}\nspec: {k: 1, k: 2}\n")],
            &[("a.yaml", "base: &b {name: m}\napiVersion: v1\nkind: A\nmetadata:\n  <<: *b\n")],
            &[("a.yaml", "apiVersion: v1\nkind: A\nmetadata: {name: x}\n"), ("b.json", "{\"apiVersion\": \"v1\", \"kind\": \"A\", \"metadata\": {\"name\": \"x\"}}")],
            &[("a.yaml", "kind: [unclosed\n")],
        ];
        for files in cases {
            let files = tree(files);
            let full = parse_tree(&files, ContentMode::Kubernetes);
            let fast = check_tree(&files, ContentMode::Kubernetes);
            match (full, fast) {
                (Ok(full), Ok(fast)) => {
                    let mut a: Vec<_> = full.iter().map(|o| (o.key.clone(), o.place())).collect();
                    let mut b = fast;
                    a.sort();
                    b.sort();
                    assert_eq!(a, b, "{files:?}");
                }
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{files:?}"),
                (a, b) => panic!(
                    "{files:?}: full {:?} vs check {:?}",
                    a.map(|v| v.len()),
                    b.map(|v| v.len())
                ),
            }
        }
    }

    #[test]
    fn whole_file_fast_path_matches_the_per_section_parse() {
        let texts = [
            "# leading comment\n---\napiVersion: v1\nkind: A\nmetadata: {name: a}\n---\n---\n# only a comment\n---\napiVersion: v1\nkind: B\nmetadata: {name: b}\n",
            "apiVersion: v1\nkind: A\nmetadata: {name: a}\n---\napiVersion: v1\nkind: B\nmetadata: {name: b}\n",
            "---\nkey: |\n  ---\n  not a marker inside a block scalar\n---\nx: 1\n",
            "\n\n# nothing but comments\n",
        ];
        for text in texts {
            let sections = split_sections(text);
            let exact = parse_sections("f.yaml", &sections, Depth::Full).unwrap();
            let exact: Vec<_> = exact
                .iter()
                .map(|d| (d.index, d.line, d.value.clone()))
                .collect();
            match parse_whole(text, &sections, Depth::Full) {
                Some(fast) => {
                    let fast: Vec<_> = fast
                        .iter()
                        .map(|d| (d.index, d.line, d.value.clone()))
                        .collect();
                    assert_eq!(fast, exact, "{text:?}");
                }
                None => assert!(
                    exact.is_empty() || text.contains("..."),
                    "fast path declined {text:?}"
                ),
            }
        }
    }
}
