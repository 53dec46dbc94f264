//! A fast, low-memory reading of a document that keeps only what identifies an object.
//!
//! `push` validates trees of hundreds of megabytes; building a full [`Value`] for every
//! document costs most of the parse time and all of the memory. This deserializer walks the
//! same YAML/JSON events but keeps only `apiVersion`, `kind`, `metadata.name`,
//! `metadata.namespace` and `List` items, as a small [`Value`] that the normal object checks
//! run on, so the errors are the same ones a full parse reports. It still rejects duplicate
//! mapping keys anywhere, as the full parse does. Documents using merge keys (`<<`) are
//! flagged with a `<<` entry so the caller can fall back to the full parse, which resolves
//! them.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_norway::{Mapping, Value};

/// The key that marks a reduced document as using YAML merge keys.
pub(super) const MERGE_KEY: &str = "<<";

/// Reads one document, reduced to its identity fields.
pub(super) fn read<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Value, D::Error> {
    Reduce(Level::Document).deserialize(deserializer)
}

/// Whether the reduced document (or one of its items) used a merge key.
pub(super) fn uses_merge(value: &Value) -> bool {
    match value {
        Value::Mapping(map) => map
            .iter()
            .any(|(k, v)| k.as_str() == Some(MERGE_KEY) || uses_merge(v)),
        Value::Sequence(items) => items.iter().any(uses_merge),
        _ => false,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    /// A whole document or a `List` item: keep identity fields.
    Document,
    /// `metadata`: keep `name` and `namespace`.
    Metadata,
    /// `items` of a document: a sequence of documents.
    Items,
    /// A kept scalar field: keep scalars, reduce collections to empty ones.
    Field,
    /// Anything else: keep nothing, but still check mapping keys are unique.
    Skip,
}

struct Reduce(Level);

impl<'de> DeserializeSeed<'de> for Reduce {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Reduce {
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
            Level::Skip => Value::Null,
            _ => Value::String(v.to_owned()),
        })
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let element = if self.0 == Level::Items {
            Level::Document
        } else {
            Level::Skip
        };
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Reduce(element))? {
            if self.0 == Level::Items {
                items.push(item);
            }
        }
        Ok(Value::Sequence(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut kept = Mapping::new();
        let mut seen: HashSet<String> = HashSet::new();
        while let Some(key) = map.next_key_seed(Reduce(Level::Field))? {
            let name = key.as_str().map(str::to_owned);
            if let Some(name) = &name {
                if !seen.insert(name.clone()) {
                    return Err(de::Error::custom(format_args!(
                        "duplicate entry with key \"{name}\""
                    )));
                }
            }
            let level = match (self.0, name.as_deref()) {
                (_, Some(MERGE_KEY)) => {
                    map.next_value_seed(Reduce(Level::Skip))?;
                    kept.insert(Value::String(MERGE_KEY.into()), Value::Null);
                    continue;
                }
                (Level::Document, Some("apiVersion" | "kind")) => Level::Field,
                (Level::Document, Some("metadata")) => Level::Metadata,
                (Level::Document, Some("items")) => Level::Items,
                (Level::Metadata, Some("name" | "namespace")) => Level::Field,
                _ => Level::Skip,
            };
            let value = map.next_value_seed(Reduce(level))?;
            if level != Level::Skip && self.0 != Level::Field {
                kept.insert(key, value);
            }
        }
        Ok(Value::Mapping(kept))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    fn reduce(yaml: &str) -> Result<Value, serde_norway::Error> {
        read(serde_norway::Deserializer::from_str(yaml))
    }

    #[test]
    fn keeps_identity_fields_and_drops_the_rest() {
        let v = reduce(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  namespace: b\n  labels: {x: y}\ndata:\n  k: v\n",
        )
        .unwrap();
        let expected: Value = serde_norway::from_str(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  namespace: b\n",
        )
        .unwrap();
        assert_eq!(v, expected);
    }

    #[test]
    fn non_string_identity_fields_stay_visible_as_such() {
        let v = reduce("apiVersion: v1\nkind: [a]\nmetadata:\n  name: 12\n").unwrap();
        assert!(v.get("kind").unwrap().is_sequence());
        assert_eq!(
            v.get("metadata").unwrap().get("name").unwrap(),
            &Value::from(12)
        );
    }

    #[test]
    fn duplicate_keys_are_rejected_at_any_depth_like_the_full_parse() {
        let deep = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  k: 1\n  k: 2\n";
        assert!(reduce(deep).is_err());
        assert!(Value::deserialize(serde_norway::Deserializer::from_str(deep)).is_err());
    }

    #[test]
    fn list_items_are_reduced_and_merge_keys_flagged() {
        let v = reduce("apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: A\n  metadata: {name: x}\n  spec: {big: 1}\n").unwrap();
        let items = v.get("items").unwrap().as_sequence().unwrap();
        assert_eq!(items.len(), 1);
        assert!(items[0].get("spec").is_none());
        assert!(!uses_merge(&v));
        let m =
            reduce("base: &b {name: x}\napiVersion: v1\nkind: A\nmetadata:\n  <<: *b\n").unwrap();
        assert!(uses_merge(&m));
    }
}
