//! The policy view of a document: the full parse, cut down to the fields the policy rules
//! read, built straight from the parser's events.
//!
//! Linting (and `push`, which lints every tree it packages) needs only a few fields of each
//! object, but building a full [`Value`] for every document costs most of the parse: a
//! `String` for every scalar, an `IndexMap` entry for every key, and freeing it all again.
//! [`read`] walks the same events with the same calls into the deserializer as
//! `Value::deserialize`, so every error it reports is the one the full parse reports, at the
//! same position and path (syntax, tags, aliases, duplicate keys anywhere), and keeps:
//!
//! - `apiVersion`, `kind`, `metadata.name`, `metadata.namespace`, `metadata.labels`;
//! - `items` of a document, each item like a document (`kind: List`);
//! - the pod template container lists (`containers`, `initContainers`,
//!   `ephemeralContainers`, each container's `image`) under `spec`, `spec.template.spec`,
//!   `template.spec` and `spec.jobTemplate.spec.template.spec`;
//! - `spec.chart`, `spec.chartRef`, `spec.ref`, `spec.source`, `spec.sources` (Flux, Argo CD);
//! - `sops` (the SOPS metadata of an encrypted Secret) as it is;
//! - the keys of `data` and `stringData` with what the rules need of each value: a SOPS
//!   `ENC[AES256_GCM,…]` value, an empty string, null and non-string scalars as they are,
//!   any other string as `false` (plaintext: its text is not needed), a mapping or sequence
//!   empty; a sequence or scalar in place of the mapping as it is.
//!
//! A kept field holds exactly the value of the full parse (tags included); a mapping on the
//! way to one keeps only the entries on a kept path; a sequence that is not a document
//! list or container list is kept empty, so types stay as parsed. Kept paths do not depend
//! on `kind`, which may come after `spec` in a document. Documents with merge keys (`<<`)
//! are not read this way: a merge can supply any field, so the caller parses those in full.
//! `view` (test-only) cuts a fully parsed value the same way; the tests check that both
//! agree.

use std::fmt;

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};
use serde::Deserialize as _;
use serde_norway::value::{Tag, TaggedValue};
use serde_norway::{Mapping, Value};

/// Reads one document as its policy view.
pub(super) fn read<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Value, D::Error> {
    Prune(Keep::Document).deserialize(deserializer)
}

/// Reads one document keeping only what identifies an object: `apiVersion`, `kind`,
/// `metadata.name`, `metadata.namespace` and `items` (each item likewise); what `push`
/// checks when it runs no policy. Same checks and errors as [`read`].
pub(super) fn read_identity<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Value, D::Error> {
    Prune(Keep::IdDocument).deserialize(deserializer)
}

/// The policy view of a fully parsed document (what [`read`] builds from the events).
#[cfg(test)]
pub(super) fn view(value: &Value) -> Value {
    cut(value, Keep::Document)
}

/// The identity view of a fully parsed document (what [`read_identity`] builds).
#[cfg(test)]
pub(super) fn identity_view(value: &Value) -> Value {
    cut(value, Keep::IdDocument)
}

/// What to keep of a value, by where it is in the document.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Keep {
    /// The whole value, exactly as the full parse has it.
    All,
    /// A document or `List` item.
    Document,
    /// `metadata`.
    Metadata,
    /// `items`: a sequence of documents.
    Items,
    /// `data` / `stringData`: every key, each value as [`Keep::Leaf`].
    Values,
    /// A value of `data` / `stringData`: encrypted or not (see the module docs).
    Leaf,
    /// `spec`: a pod spec (`Pod`), a workload spec, a Flux or Argo CD spec.
    Spec,
    /// `template` of a workload or `PodTemplate`: `{spec: pod spec}`.
    Template,
    /// `spec.jobTemplate` of a `CronJob`: `{spec: job spec}`.
    JobTemplate,
    /// `spec.jobTemplate.spec`: `{template: …}`.
    JobSpec,
    /// A pod spec: its container lists.
    PodSpec,
    /// A container list.
    Containers,
    /// One container: its `image`.
    Container,
    /// A document or `List` item, identity only.
    IdDocument,
    /// `metadata`, identity only.
    IdMetadata,
    /// `items`, identity only.
    IdItems,
    /// Nothing: checked like the full parse, but not kept.
    Nothing,
}

impl Keep {
    /// What to keep of the value under `key` in a mapping kept at this level.
    fn entry(self, key: &str) -> Keep {
        match (self, key) {
            (Keep::Document, "apiVersion" | "kind") => Keep::All,
            (Keep::Document, "metadata") => Keep::Metadata,
            (Keep::Document, "items") => Keep::Items,
            (Keep::Document, "data" | "stringData") => Keep::Values,
            (Keep::Document, "sops") => Keep::All,
            (Keep::Values, _) => Keep::Leaf,
            (Keep::Document, "spec") => Keep::Spec,
            (Keep::Document | Keep::Spec | Keep::JobSpec, "template") => Keep::Template,
            (Keep::Metadata, "name" | "namespace" | "labels") => Keep::All,
            (Keep::Spec, "jobTemplate") => Keep::JobTemplate,
            (Keep::Spec, "chart" | "chartRef" | "ref" | "source" | "sources") => Keep::All,
            (
                Keep::Spec | Keep::PodSpec,
                "containers" | "initContainers" | "ephemeralContainers",
            ) => Keep::Containers,
            (Keep::Template, "spec") => Keep::PodSpec,
            (Keep::JobTemplate, "spec") => Keep::JobSpec,
            (Keep::Container, "image") => Keep::All,
            (Keep::IdDocument, "apiVersion" | "kind") => Keep::All,
            (Keep::IdDocument, "metadata") => Keep::IdMetadata,
            (Keep::IdDocument, "items") => Keep::IdItems,
            (Keep::IdMetadata, "name" | "namespace") => Keep::All,
            _ => Keep::Nothing,
        }
    }

    /// What to keep of the elements of a sequence kept at this level.
    fn element(self) -> Keep {
        match self {
            Keep::Items => Keep::Document,
            Keep::Containers => Keep::Container,
            Keep::IdItems => Keep::IdDocument,
            _ => Keep::Nothing,
        }
    }
}

/// The same cut on a parsed value (for the tests that compare both ways).
#[cfg(test)]
fn cut(value: &Value, keep: Keep) -> Value {
    match (keep, value) {
        (Keep::All, _) => value.clone(),
        (_, Value::Tagged(tagged)) => Value::Tagged(Box::new(TaggedValue {
            tag: tagged.tag.clone(),
            value: cut(&tagged.value, keep),
        })),
        (Keep::Values, Value::Mapping(map)) => Value::Mapping(
            map.iter()
                .map(|(k, v)| (k.clone(), cut(v, Keep::Leaf)))
                .collect(),
        ),
        (Keep::Leaf, Value::String(text)) => leaf(text),
        (_, Value::Mapping(map)) => Value::Mapping(
            map.iter()
                .filter_map(|(k, v)| {
                    let inner = keep.entry(k.as_str()?);
                    (inner != Keep::Nothing).then(|| (k.clone(), cut(v, inner)))
                })
                .collect(),
        ),
        (_, Value::Sequence(items)) => Value::Sequence(match keep.element() {
            Keep::Nothing => Vec::new(),
            element => items.iter().map(|v| cut(v, element)).collect(),
        }),
        (_, scalar) => scalar.clone(),
    }
}

/// Deserializes a value keeping what `Keep` says, with the checks of `Value::deserialize`.
struct Prune(Keep);

impl<'de> DeserializeSeed<'de> for Prune {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        if self.0 == Keep::All {
            return Value::deserialize(deserializer);
        }
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Prune {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(match self.0 {
            Keep::Nothing => Value::Null,
            Keep::Leaf => leaf(v),
            _ => Value::String(v.to_owned()),
        })
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(match self.0 {
            Keep::Leaf => leaf(&v),
            _ => Value::String(v),
        })
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let element = self.0.element();
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Prune(element))? {
            if element != Keep::Nothing {
                items.push(item);
            }
        }
        Ok(Value::Sequence(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut kept = Mapping::new();
        let mut keys = Keys::default();
        // Keys are read in full, as `Mapping::deserialize` does, and checked for duplicates
        // before the value is read, so the error and its position are the same.
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let keep = match (self.0, key.as_str()) {
                (Keep::Nothing, _) => Keep::Nothing,
                // Every key of `data`, whatever its type.
                (Keep::Values, _) => Keep::Leaf,
                (_, Some(name)) => self.0.entry(name),
                (_, None) => Keep::Nothing,
            };
            let kept_key = (keep != Keep::Nothing).then(|| key.to_value());
            if let Some(first) = keys.insert(key) {
                return Err(de::Error::custom(DuplicateKey(first)));
            }
            match (keep, kept_key) {
                (keep, Some(key)) => {
                    let value = map.next_value_seed(Prune(keep))?;
                    kept.insert(key, value);
                }
                (_, None) => {
                    map.next_value_seed(Prune(Keep::Nothing))?;
                }
            }
        }
        Ok(Value::Mapping(kept))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        let (tag, contents) = data.variant_seed(TagString)?;
        let value = contents.newtype_variant_seed(Prune(self.0))?;
        Ok(Value::Tagged(Box::new(TaggedValue { tag, value })))
    }
}

/// A string value of `data` / `stringData` in the view: SOPS values and empty strings as
/// they are, any other (plaintext) string as `false`.
fn leaf(text: &str) -> Value {
    if text.is_empty() || text.starts_with(crate::secrets::sops::ENC_PREFIX) {
        Value::String(text.to_owned())
    } else {
        Value::Bool(false)
    }
}

/// A mapping key: borrowed from the input when the parser can (a plain scalar that is
/// a string), else the `Value` that `Value::deserialize` makes of it. Most keys are plain, so
/// most cost no allocation.
enum Key<'de> {
    /// A string, as written in the input.
    Str(&'de str),
    /// Anything else.
    Value(Value),
}

impl Key<'_> {
    fn as_str(&self) -> Option<&str> {
        match self {
            Key::Str(s) => Some(s),
            Key::Value(v) => v.as_str(),
        }
    }

    fn to_value(&self) -> Value {
        match self {
            Key::Str(s) => Value::String((*s).to_owned()),
            Key::Value(v) => v.clone(),
        }
    }

    /// The equality of `Value` keys in a [`Mapping`].
    fn same(&self, other: &Key<'_>) -> bool {
        match (self, other) {
            (Key::Str(a), Key::Str(b)) => a == b,
            (Key::Str(a), Key::Value(Value::String(b)))
            | (Key::Value(Value::String(b)), Key::Str(a)) => a == b,
            (Key::Value(a), Key::Value(b)) => a == b,
            _ => false,
        }
    }
}

/// Reads a key with the calls `Value::deserialize` makes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Key<'de>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Key<'de>, E> {
        Ok(Key::Value(Value::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Key<'de>, E> {
        Ok(Key::Value(Value::Number(v.into())))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Key<'de>, E> {
        Ok(Key::Value(Value::Number(v.into())))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Key<'de>, E> {
        Ok(Key::Value(Value::Number(v.into())))
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
        Ok(Key::Str(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
        Ok(Key::Value(Value::String(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
        Ok(Key::Value(Value::String(v)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Key<'de>, E> {
        Ok(Key::Value(Value::Null))
    }

    fn visit_none<E: de::Error>(self) -> Result<Key<'de>, E> {
        Ok(Key::Value(Value::Null))
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Key<'de>, D::Error> {
        Value::deserialize(deserializer).map(Key::Value)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Key<'de>, A::Error> {
        let de = de::value::SeqAccessDeserializer::new(seq);
        serde_norway::Sequence::deserialize(de).map(|s| Key::Value(Value::Sequence(s)))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Key<'de>, A::Error> {
        let de = de::value::MapAccessDeserializer::new(map);
        Mapping::deserialize(de).map(|m| Key::Value(Value::Mapping(m)))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Key<'de>, A::Error> {
        let (tag, contents) = data.variant_seed(TagString)?;
        let value = contents.newtype_variant::<Value>()?;
        Ok(Key::Value(Value::Tagged(Box::new(TaggedValue {
            tag,
            value,
        }))))
    }
}

/// The keys of one mapping, to find duplicates with the equality of [`Mapping`].
#[derive(Default)]
struct Keys<'de> {
    /// Small mappings: compared one by one.
    few: Vec<Key<'de>>,
    /// Larger ones.
    many: std::collections::HashSet<Value>,
}

impl<'de> Keys<'de> {
    const FEW: usize = 16;

    /// Adds `key`; returns the equal key seen before, if any.
    fn insert(&mut self, key: Key<'de>) -> Option<Value> {
        if self.many.is_empty() {
            if let Some(first) = self.few.iter().find(|k| k.same(&key)) {
                return Some(first.to_value());
            }
            if self.few.len() < Self::FEW {
                self.few.push(key);
                return None;
            }
            self.many.extend(self.few.drain(..).map(|k| k.to_value()));
        }
        let key = key.to_value();
        match self.many.get(&key) {
            Some(first) => Some(first.clone()),
            None => {
                self.many.insert(key);
                None
            }
        }
    }
}

/// The message of serde_norway's duplicate key error, word for word.
struct DuplicateKey(Value);

impl fmt::Display for DuplicateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("duplicate entry ")?;
        match &self.0 {
            Value::Null => f.write_str("with null key"),
            Value::Bool(boolean) => write!(f, "with key `{boolean}`"),
            Value::Number(number) => write!(f, "with key {number}"),
            Value::String(string) => write!(f, "with key {string:?}"),
            Value::Sequence(_) | Value::Mapping(_) | Value::Tagged(_) => f.write_str("in YAML map"),
        }
    }
}

/// Reads a tag like serde_norway's own tag visitor: a non-empty string.
struct TagString;

impl<'de> DeserializeSeed<'de> for TagString {
    type Value = Tag;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Tag, D::Error> {
        deserializer.deserialize_string(self)
    }
}

impl<'de> Visitor<'de> for TagString {
    type Value = Tag;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML tag string")
    }

    fn visit_str<E: de::Error>(self, string: &str) -> Result<Tag, E> {
        self.visit_string(string.to_owned())
    }

    fn visit_string<E: de::Error>(self, string: String) -> Result<Tag, E> {
        if string.is_empty() {
            return Err(E::custom("empty YAML tag is not allowed"));
        }
        Ok(Tag::new(string))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every document of `text` read both ways: the full parse cut down with [`view`], and
    /// [`read`]. Both must succeed with the same view or fail with the same message.
    /// Returns how many documents failed.
    fn compare(text: &str) -> usize {
        let full = documents(text, |de| Value::deserialize(de));
        let pruned = documents(text, |de| read(de));
        let identity = documents(text, |de| read_identity(de));
        assert_eq!(full.len(), pruned.len(), "{text}");
        assert_eq!(
            identity
                .iter()
                .map(|r| r.as_ref().err())
                .collect::<Vec<_>>(),
            pruned.iter().map(|r| r.as_ref().err()).collect::<Vec<_>>(),
            "{text}"
        );
        let mut failed = 0;
        for ((full, pruned), identity) in full.into_iter().zip(pruned).zip(identity) {
            if let (Ok(full), Ok(identity)) = (&full, identity) {
                assert_eq!(identity_view(full), identity, "{text}");
            }
            match (full, pruned) {
                (Ok(full), Ok(pruned)) => assert_eq!(view(&full), pruned, "{text}"),
                (Err(a), Err(b)) => {
                    assert_eq!(a, b, "{text}");
                    failed += 1;
                }
                (a, b) => panic!("{text}\nfull: {a:?}\npolicy view: {b:?}"),
            }
        }
        failed
    }

    /// Reads the documents of `text` until the first error (after a syntax error the
    /// parser repeats it for ever, so callers stop there too).
    fn documents(
        text: &str,
        read: impl Fn(serde_norway::Deserializer<'_>) -> Result<Value, serde_norway::Error>,
    ) -> Vec<Result<Value, String>> {
        let mut out = Vec::new();
        for de in serde_norway::Deserializer::from_str(text) {
            let result = read(de).map_err(|e| e.to_string());
            let failed = result.is_err();
            out.push(result);
            if failed || out.len() > 100 {
                break;
            }
        }
        out
    }

    #[test]
    fn keeps_what_the_rules_read_and_drops_the_rest() {
        let text = "apiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: c\n  labels: {a: b}\n  annotations: {x: y}\nspec:\n  schedule: '* * * * *'\n  jobTemplate:\n    spec:\n      template:\n        metadata: {labels: {a: b}}\n        spec:\n          containers:\n          - name: c\n            image: !custom busybox\n            env: [{name: A, value: b}]\n          volumes: [{name: v}]\ndata: {a: 1, b: 2}\nstringData: ''\n";
        let kept = read(serde_norway::Deserializer::from_str(text)).unwrap();
        let expected: Value = serde_norway::from_str(
            "apiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: c\n  labels: {a: b}\nspec:\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          containers:\n          - image: !custom busybox\ndata: {a: 1, b: 2}\nstringData: ''\n",
        )
        .unwrap();
        assert_eq!(kept, expected);
        assert_eq!(compare(text), 0);
    }

    #[test]
    fn errors_are_those_of_the_full_parse() {
        let cases = [
            // Duplicate keys, deep in a dropped part, with string and other keys.
            "kind: A\nspec:\n  x:\n    y: 1\n    y: 2\n",
            "kind: A\nnotes:\n  1: a\n  1: b\n",
            "kind: A\nnotes: {? [a]: 1, ? [a]: 2}\n",
            "kind: A\nnotes: {null: 1, ~: 2}\n",
            "kind: A\nnotes: {true: 1, true: 2}\n",
            "kind: A\nkind: B\n",
            "data:\n  a: 1\n  a: 2\n",
            // Tags: empty, custom, core tags that do not fit their scalar.
            "kind: A\nnotes: !!int abc\n",
            "kind: A\nspec: {template: {spec: {containers: [{image: !!float x}]}}}\n",
            "kind: A\nnotes: ! x\n",
            "kind: !!binary zz\n",
            // Aliases.
            "kind: A\nnotes: *nowhere\n",
            "a: &x {k: 1}\nspec: *x\nother: *x\n",
        ];
        let failed: usize = cases.iter().map(|text| compare(text)).sum();
        assert!(failed >= 8, "only {failed} cases failed to parse");
    }

    #[test]
    fn agrees_with_the_full_parse_on_the_testdata() {
        let mut files = Vec::new();
        collect(
            std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata")),
            &mut files,
        );
        assert!(files.len() >= 10, "{files:?}");
        for path in files {
            let text = std::fs::read_to_string(&path).unwrap();
            compare(&text);
            // And with every line dropped once: broken indentation, missing keys, errors.
            let lines: Vec<&str> = text.lines().collect();
            for skip in 0..lines.len().min(40) {
                let cut: Vec<&str> = lines
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != skip)
                    .map(|(_, l)| *l)
                    .collect();
                compare(&cut.join("\n"));
            }
        }
    }

    fn collect(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                collect(&path, out);
            } else if path
                .extension()
                .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
            {
                out.push(path);
            }
        }
    }

    #[test]
    fn agrees_with_the_full_parse_on_generated_documents() {
        let mut rng = fastrand::Rng::with_seed(0x7e50);
        let mut failed = 0;
        for _ in 0..400 {
            let mut text = String::new();
            for _ in 0..rng.usize(1..4) {
                text.push_str("---\n");
                Gen { rng: &mut rng }.document(&mut text);
            }
            failed += compare(&text);
        }
        // The generator makes duplicate keys, bad tags and unknown aliases now and then.
        assert!(failed > 10, "only {failed} documents failed to parse");
    }

    /// Random YAML made mostly of the keys the view keeps, in block and flow style, with
    /// tags, anchors, aliases, odd keys and the occasional error.
    struct Gen<'a> {
        rng: &'a mut fastrand::Rng,
    }

    const KEYS: &[&str] = &[
        "apiVersion",
        "kind",
        "metadata",
        "name",
        "namespace",
        "labels",
        "items",
        "data",
        "stringData",
        "spec",
        "template",
        "jobTemplate",
        "containers",
        "initContainers",
        "ephemeralContainers",
        "image",
        "chart",
        "chartRef",
        "ref",
        "source",
        "sources",
        "sops",
        "env",
        "other",
    ];

    const SCALARS: &[&str] = &[
        "x",
        "nginx:1.2",
        "'quoted'",
        "\"double\"",
        "''",
        "1",
        "-3",
        "0x1f",
        "1.5",
        ".nan",
        "true",
        "no",
        "null",
        "~",
        "!custom value",
        "!!str 12",
        "!!int 7",
        "!!int seven",
        "!!null ''",
        "! x",
        "&a anchored",
        "*a",
        "*missing",
        "'ENC[AES256_GCM,data:a,iv:b,tag:c,type:str]'",
    ];

    impl Gen<'_> {
        fn document(&mut self, out: &mut String) {
            match self.rng.u8(0..20) {
                0 => out.push_str("just a scalar\n"),
                1 => out.push_str("- a\n- b\n"),
                _ => self.block_map(out, 0, 4),
            }
        }

        fn key(&mut self) -> String {
            match self.rng.u8(0..30) {
                0 => "1".into(),
                1 => "null".into(),
                2 => "? [a]".into(),
                3 => "!tag spec".into(),
                4 => "'spec'".into(),
                _ => KEYS[self.rng.usize(..KEYS.len())].into(),
            }
        }

        fn scalar(&mut self) -> &'static str {
            SCALARS[self.rng.usize(..SCALARS.len())]
        }

        fn block_map(&mut self, out: &mut String, indent: usize, depth: u8) {
            let n = self.rng.usize(1..6);
            let mut keys: Vec<String> = (0..n).map(|_| self.key()).collect();
            if self.rng.u8(0..25) != 0 {
                keys.sort();
                keys.dedup();
            }
            for key in keys {
                out.push_str(&" ".repeat(indent));
                out.push_str(&key);
                out.push(':');
                self.block_value(out, indent, depth);
            }
        }

        fn block_value(&mut self, out: &mut String, indent: usize, depth: u8) {
            let choice = if depth == 0 { 0 } else { self.rng.u8(0..8) };
            match choice {
                0 | 1 => {
                    out.push(' ');
                    out.push_str(self.scalar());
                    out.push('\n');
                }
                2 => {
                    out.push(' ');
                    self.flow(out, depth);
                    out.push('\n');
                }
                3 | 4 => {
                    out.push('\n');
                    self.block_map(out, indent + 2, depth - 1);
                }
                5 => out.push_str(" !custom\n  bare: scalar\n"),
                _ => {
                    out.push('\n');
                    for _ in 0..self.rng.usize(0..3) {
                        out.push_str(&" ".repeat(indent + 2));
                        out.push_str("- ");
                        if self.rng.bool() {
                            out.push_str(self.scalar());
                            out.push('\n');
                        } else {
                            // The first entry on the dash line, the rest indented under it.
                            let mut item = String::new();
                            self.block_map(&mut item, indent + 4, depth - 1);
                            out.push_str(item.trim_start());
                        }
                    }
                    if !out.ends_with("- ") && out.ends_with(":\n") {
                        out.pop();
                        out.push_str(" []\n");
                    }
                }
            }
        }

        fn flow(&mut self, out: &mut String, depth: u8) {
            if depth == 0 || self.rng.bool() {
                out.push_str(self.scalar());
                return;
            }
            if self.rng.bool() {
                out.push('{');
                for i in 0..self.rng.usize(0..4) {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    let key = self.key();
                    out.push_str(if key.starts_with('?') { "k" } else { &key });
                    out.push_str(": ");
                    self.flow(out, depth - 1);
                }
                out.push('}');
            } else {
                out.push('[');
                for i in 0..self.rng.usize(0..4) {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    self.flow(out, depth - 1);
                }
                out.push(']');
            }
        }
    }
}
