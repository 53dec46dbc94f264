//! From one file's bytes to its documents and objects: UTF-8 and JSON checks, YAML split at
//! `---` into sections, read by the fast reader or libyaml (whole file or per section, for
//! errors with file lines), then each document checked as an object (or a `List` expanded).

use serde::Deserialize as _;
use serde_norway::Value;

use super::walk::Format;
use super::{fast, prune, ContentMode, Object, ObjectKey, ObjectsError};

/// How much of each document to keep.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Depth {
    /// The whole value.
    Full,
    /// Only the identity fields (see [`prune`]).
    Identity,
    /// Only the fields the policy rules read (see [`prune`]).
    Policy,
}

/// One parsed, non-empty document.
pub(super) struct Doc {
    pub(super) index: usize,
    pub(super) line: usize,
    pub(super) value: Value,
}

pub(super) fn parse_file(
    path: &str,
    bytes: &[u8],
    format: Format,
    depth: Depth,
) -> Result<Vec<Doc>, ObjectsError> {
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(err) => {
            let valid = bytes.get(..err.valid_up_to()).unwrap_or_default();
            let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
            let column = valid.iter().rev().take_while(|b| **b != b'\n').count() + 1;
            let file = path.to_string();
            let message = "the file is not valid UTF-8".to_string();
            return Err(match format {
                Format::Yaml => ObjectsError::InvalidYaml {
                    file,
                    line,
                    column,
                    message,
                },
                Format::Json => ObjectsError::InvalidJson {
                    file,
                    line,
                    column,
                    message,
                },
            });
        }
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    match format {
        Format::Yaml => parse_yaml(path, text, depth),
        Format::Json => parse_json(path, text),
    }
}

pub(super) fn parse_json(path: &str, text: &str) -> Result<Vec<Doc>, ObjectsError> {
    let value: Value = serde_json::from_str(text).map_err(|err| {
        let suffix = format!(" at line {} column {}", err.line(), err.column());
        let message = err.to_string();
        ObjectsError::InvalidJson {
            file: path.to_string(),
            line: err.line(),
            column: err.column(),
            message: message
                .strip_suffix(&suffix)
                .unwrap_or(&message)
                .to_string(),
        }
    })?;
    let line = text
        .lines()
        .position(|l| !l.trim().is_empty())
        .map_or(1, |i| i + 1);
    Ok(vec![Doc {
        index: 0,
        line,
        value,
    }])
}

/// Differential check of the fast YAML reader against libyaml (serde_norway) on `text`, for
/// the `yaml_fast_vs_libyaml` fuzz target (`fuzz/`) and the tests; not part of the API.
///
/// Returns whether the fast reader accepted the text (at every depth); an `Err` describes a
/// difference: the fast reader returned documents libyaml refuses, or other documents than
/// libyaml. Any `Err` is a bug, because the policy would see another document than `kubectl`.
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub fn fast_reader_agrees_with_libyaml(text: &str) -> Result<bool, String> {
    fast::compare_with_libyaml(text)
}

/// A `---`-delimited part of a YAML file.
pub(super) struct Section<'a> {
    pub(super) text: &'a str,
    /// 0-based line of the section's first line in the file.
    pub(super) first_line: usize,
    /// 1-based line of the first content line (not blank, comment, directive or bare `---`).
    pub(super) content_line: Option<usize>,
}

/// What YAML counts as white space on a line (Unicode spaces such as U+3000 are content).
const YAML_BLANKS: [char; 2] = [' ', '\t'];

/// Splits YAML text at document markers (`---` at column 0), keeping the marker line in the
/// section it starts so that the section parses on its own. A section without a marker and
/// without content (a leading comment block) is merged into the next one.
pub(super) fn split_sections(text: &str) -> Vec<Section<'_>> {
    let mut sections: Vec<Section<'_>> = Vec::new();
    let mut start = 0; // byte offset where the current section starts
    let mut start_line = 0;
    let mut has_marker = false;
    let mut content_line = None;
    let mut offset = 0;
    for (n, raw) in text.split_inclusive('\n').enumerate() {
        let line = raw.trim_end_matches(['\n', '\r']);
        let is_marker = line == "---"
            || line
                .strip_prefix("---")
                .is_some_and(|rest| rest.starts_with([' ', '\t']));
        if is_marker {
            if has_marker || content_line.is_some() {
                sections.push(Section {
                    text: text.get(start..offset).unwrap_or_default(),
                    first_line: start_line,
                    content_line,
                });
                start = offset;
                start_line = n;
                content_line = None;
            }
            has_marker = true;
        }
        let content = if is_marker {
            let rest = line.get(3..).unwrap_or_default().trim_matches(YAML_BLANKS);
            !rest.is_empty() && !rest.starts_with('#')
        } else {
            let trimmed = line.trim_matches(YAML_BLANKS);
            !trimmed.is_empty() && !trimmed.starts_with('#') && !line.starts_with('%')
        };
        if content && content_line.is_none() {
            content_line = Some(n + 1);
        }
        offset += raw.len();
    }
    if offset > start {
        sections.push(Section {
            text: text.get(start..).unwrap_or_default(),
            first_line: start_line,
            content_line,
        });
    }
    sections
}

/// Whether a document may have a YAML merge key: a `<<` key spelt out, or any escape
/// sequence, which a double-quoted key could use to spell it (`"\x3c<"`). Only plain,
/// quoted and block scalars make keys, and none of them can join two `<` without one of
/// these (line folding adds a space or a newline).
pub(super) fn may_merge(text: &str) -> bool {
    text.contains("<<") || text.contains('\\')
}

pub(super) fn parse_yaml(path: &str, text: &str, depth: Depth) -> Result<Vec<Doc>, ObjectsError> {
    let sections = split_sections(text);
    // The fast reader refuses escapes, so without a `<<` spelt out nothing it reads can
    // hold a merge key (backslashes elsewhere — scripts, regexps — are plain characters).
    if !text.contains("<<") {
        if let Some(docs) = fast::documents(text, &sections, depth) {
            return Ok(docs);
        }
    }
    // A merge key can supply any field, so the reduced views are read only without them.
    let depth = if may_merge(text) { Depth::Full } else { depth };
    let docs = match parse_whole(text, &sections, depth) {
        Some(docs) => docs,
        None => parse_sections(path, &sections, depth)?,
    };
    Ok(docs)
}

/// Whether a line starts with `...` (a document end marker, or something like one) or `%`
/// (a directive): both change how `---` sections map to documents.
pub(super) fn has_end_markers_or_directives(text: &str) -> bool {
    text.starts_with("...")
        || text.starts_with('%')
        || text.contains("\n...")
        || text.contains("\n%")
}

/// The fast path: one parser for the whole file. A parser per section costs more than a
/// small document itself (libyaml allocates its buffers per parser), so a file of many small
/// documents is read in one go when that gives exactly one document per section — always,
/// unless the file uses `...` end markers or `%` directives. Returns `None` (and the caller
/// takes the per-section path, which also reports errors with file-relative lines) on any
/// error or mismatch.
pub(super) fn parse_whole(text: &str, sections: &[Section<'_>], depth: Depth) -> Option<Vec<Doc>> {
    if has_end_markers_or_directives(text) {
        return None;
    }
    // Without a merge key there is nothing to resolve, and walking every value for them is
    // a measurable part of parsing.
    let merges = may_merge(text);
    let mut values = Vec::with_capacity(sections.len());
    for de in serde_norway::Deserializer::from_str(text) {
        let value = match depth {
            Depth::Full => {
                let mut value = Value::deserialize(de).ok()?;
                if merges {
                    value.apply_merge().ok()?;
                }
                value
            }
            Depth::Identity => prune::read_identity(de).ok()?,
            Depth::Policy => prune::read(de).ok()?,
        };
        values.push(value);
    }
    if values.len() != sections.len() {
        return None;
    }
    Some(
        values
            .into_iter()
            .zip(sections)
            .enumerate()
            .filter(|(_, (value, _))| !value.is_null())
            .map(|(index, (value, section))| Doc {
                index,
                line: section.content_line.unwrap_or(section.first_line + 1),
                value,
            })
            .collect(),
    )
}

/// The exact path: each `---` section parsed on its own, so errors carry file lines.
pub(super) fn parse_sections(
    path: &str,
    sections: &[Section<'_>],
    depth: Depth,
) -> Result<Vec<Doc>, ObjectsError> {
    let mut docs = Vec::new();
    for (index, section) in sections.iter().enumerate() {
        let line = section.content_line.unwrap_or(section.first_line + 1);
        let invalid = |err: serde_norway::Error| {
            let (line, column) = match err.location() {
                Some(loc) => (loc.line() + section.first_line, loc.column()),
                None => (line, 1),
            };
            ObjectsError::InvalidYaml {
                file: path.to_string(),
                line,
                column,
                message: shift_lines(&err.to_string(), section.first_line),
            }
        };
        // A section can still hold several documents after a `...` end marker; they share
        // the section's index and line.
        for de in serde_norway::Deserializer::from_str(section.text) {
            let value = match depth {
                Depth::Full => {
                    let mut value = Value::deserialize(de).map_err(invalid)?;
                    value.apply_merge().map_err(invalid)?;
                    value
                }
                Depth::Identity => prune::read_identity(de).map_err(invalid)?,
                Depth::Policy => prune::read(de).map_err(invalid)?,
            };
            if !value.is_null() {
                docs.push(Doc { index, line, value });
            }
        }
    }
    Ok(docs)
}

/// Adds `offset` to every `line N` in a parser message, which counts from the section start.
pub(super) fn shift_lines(message: &str, offset: usize) -> String {
    if offset == 0 {
        return message.to_string();
    }
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find("line ") {
        let (before, after) = rest.split_at(at + "line ".len());
        out.push_str(before);
        let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let (number, tail) = after.split_at(digits);
        match number.parse::<usize>() {
            Ok(n) => out.push_str(&(n + offset).to_string()),
            Err(_) => out.push_str(number),
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

pub(super) fn objects_of(
    path: &str,
    doc: Doc,
    mode: ContentMode,
) -> Result<Vec<Object>, ObjectsError> {
    if mode == ContentMode::Files {
        let name = if doc.index == 0 {
            path.to_string()
        } else {
            format!("{path}#{}", doc.index)
        };
        return Ok(vec![Object {
            key: ObjectKey {
                group: String::new(),
                kind: String::new(),
                namespace: None,
                name,
            },
            api_version: String::new(),
            file: path.to_string(),
            document: doc.index,
            item: None,
            line: doc.line,
            value: doc.value,
        }]);
    }
    let is_list = doc.value.get("kind").and_then(Value::as_str) == Some("List")
        && doc.value.get("items").is_some_and(Value::is_sequence);
    if !is_list {
        return Ok(vec![object(path, doc.index, None, doc.line, doc.value)?]);
    }
    let items = match doc.value {
        Value::Mapping(mut map) => match map.remove("items") {
            Some(Value::Sequence(items)) => items,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| object(path, doc.index, Some(i), doc.line, item))
        .collect()
}

pub(super) fn object(
    path: &str,
    document: usize,
    item: Option<usize>,
    line: usize,
    value: Value,
) -> Result<Object, ObjectsError> {
    if !value.is_mapping() {
        return Err(ObjectsError::NotAnObject {
            file: path.to_string(),
            document,
            item,
        });
    }
    let field = |field: &'static str, value: Option<&Value>, required: bool| match value {
        None | Some(Value::Null) if !required => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(Value::String(_)) if !required => Ok(None),
        None | Some(Value::Null) | Some(Value::String(_)) => Err(ObjectsError::MissingField {
            file: path.to_string(),
            document,
            item,
            field,
        }),
        Some(_) => Err(ObjectsError::NotAString {
            file: path.to_string(),
            document,
            item,
            field,
        }),
    };
    let metadata = value.get("metadata");
    let api_version = field("apiVersion", value.get("apiVersion"), true)?.unwrap_or_default();
    let kind = field("kind", value.get("kind"), true)?.unwrap_or_default();
    let name =
        field("metadata.name", metadata.and_then(|m| m.get("name")), true)?.unwrap_or_default();
    let namespace = field(
        "metadata.namespace",
        metadata.and_then(|m| m.get("namespace")),
        false,
    )?;
    let group = match api_version.split_once('/') {
        Some((group, _)) => group.to_string(),
        None => String::new(),
    };
    Ok(Object {
        key: ObjectKey {
            group,
            kind,
            namespace,
            name,
        },
        api_version,
        file: path.to_string(),
        document,
        item,
        line,
        value,
    })
}
