//! The file formats sops writes, chosen by file name as sops chooses them: YAML (`.yaml`,
//! `.yml`; several documents share one `sops` entry, the first one's), JSON (`.json`),
//! dotenv (`.env`; the metadata flattened into `sops_…` keys) and binary (any other name:
//! a JSON object whose `data` is the whole file). INI files are refused.
//!
//! [`load`] splits a file into its documents and metadata; [`emit`] writes the decrypted
//! documents back in the same format (comments are not kept: sops encrypts them and they
//! are not part of the MAC).

use super::sops::{Metadata, Node, SopsError};

/// A sops file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `.yaml`, `.yml`.
    Yaml,
    /// `.json`.
    Json,
    /// `.env`.
    Dotenv,
    /// `.ini` (not supported).
    Ini,
    /// Anything else: sops's binary store.
    Binary,
}

impl Format {
    /// The format sops uses for a file of this name.
    pub fn of(name: &str) -> Self {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".yaml") || lower.ends_with(".yml") {
            Self::Yaml
        } else if lower.ends_with(".json") {
            Self::Json
        } else if lower.ends_with(".env") {
            Self::Dotenv
        } else if lower.ends_with(".ini") {
            Self::Ini
        } else {
            Self::Binary
        }
    }
}

/// A sops file split up: the documents (without `sops` entries) and the metadata.
#[derive(Debug)]
pub struct Loaded {
    /// The format.
    pub format: Format,
    /// The documents, in order.
    pub documents: Vec<Node>,
    /// The metadata.
    pub metadata: Metadata,
}

/// Whether `bytes` has a top-level `sops` entry as `format` writes it (looked for in the
/// text, for files that do not parse).
fn mentions_sops(format: Format, bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    match format {
        Format::Yaml => text
            .lines()
            .any(|l| l.starts_with("sops:") || l.starts_with("\"sops\":")),
        Format::Json | Format::Binary => text.contains("\"sops\""),
        Format::Dotenv => text.lines().any(|l| l.starts_with("sops_")),
        Format::Ini => text.contains("[sops]"),
    }
}

/// Whether any leaf of `node` is an `ENC[AES256_GCM,…]` value.
fn has_encrypted_value(node: &Node) -> bool {
    match node {
        Node::Str(s) => s.starts_with(super::sops::ENC_PREFIX),
        Node::Map(entries) => entries.iter().any(|(_, v)| has_encrypted_value(v)),
        Node::Seq(items) => items.iter().any(has_encrypted_value),
        _ => false,
    }
}

/// Reads `bytes` as a sops file of `format`. `Ok(None)` when it is not one: no `sops`
/// metadata and no encrypted value, or not even the format (left to whoever reads it
/// next). Fails closed for what looks like a sops file but cannot be read or verified: one
/// that mentions `sops` but does not parse, and encrypted values without metadata (they
/// would otherwise be applied as `ENC[…]` strings).
pub fn load(format: Format, bytes: &[u8]) -> Result<Option<Loaded>, SopsError> {
    let unreadable = || {
        if mentions_sops(format, bytes) {
            Err(SopsError::Metadata(format!(
                "it has a sops entry but cannot be read as {format:?} as sops writes it"
            )))
        } else {
            Ok(None)
        }
    };
    let (documents, sops) = match format {
        Format::Yaml => {
            let Ok(text) = std::str::from_utf8(bytes) else {
                return unreadable();
            };
            let mut documents = Vec::new();
            for de in serde_norway::Deserializer::from_str(text) {
                match serde::Deserialize::deserialize(de) {
                    Ok(doc) => documents.push(doc),
                    // Not YAML sops can have written: the manifest checks report it.
                    Err(_) => return unreadable(),
                }
            }
            let sops = documents
                .first()
                .and_then(|d: &Node| d.get("sops"))
                .cloned();
            for doc in &mut documents {
                if let Node::Map(entries) = doc {
                    entries.retain(|(k, _)| k != "sops");
                }
            }
            // An empty document (`---` at the end) has no branch in sops.
            documents.retain(|d| !matches!(d, Node::Null));
            (documents, sops)
        }
        Format::Json | Format::Binary => {
            let Ok(mut doc) = serde_json::from_slice::<Node>(bytes) else {
                return unreadable();
            };
            let sops = doc.get("sops").cloned();
            if let Node::Map(entries) = &mut doc {
                entries.retain(|(k, _)| k != "sops");
            }
            (vec![doc], sops)
        }
        Format::Dotenv => {
            let Some((doc, sops)) = dotenv(bytes) else {
                return unreadable();
            };
            (vec![doc], sops)
        }
        Format::Ini => {
            let looks_encrypted = bytes.windows(6).any(|w| w == b"[sops]");
            return if looks_encrypted {
                Err(SopsError::Unsupported("the INI format".into()))
            } else {
                Ok(None)
            };
        }
    };
    let Some(sops) = sops else {
        return if documents.iter().any(has_encrypted_value) {
            Err(SopsError::Metadata(
                "it holds ENC[AES256_GCM,…] values but no sops metadata, so they can be \
                 neither decrypted nor verified; encrypt the file again with sops"
                    .into(),
            ))
        } else {
            Ok(None)
        };
    };
    let metadata = Metadata::from_node(&sops)?;
    if format == Format::Binary && documents.first().and_then(|d| d.get("data")).is_none() {
        return Err(SopsError::Metadata(
            "a binary sops file needs a data entry".into(),
        ));
    }
    Ok(Some(Loaded {
        format,
        documents,
        metadata,
    }))
}

/// A dotenv file: `KEY=value` lines (`\n` escapes newlines), `#` comments; the `sops_…`
/// keys unflattened into the metadata mapping. `None` when a line is not `KEY=value`.
fn dotenv(bytes: &[u8]) -> Option<(Node, Option<Node>)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut entries = Vec::new();
    let mut sops = Node::Map(Vec::new());
    let mut any_sops = false;
    for line in text.split('\n') {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line.split_once('=')?;
        let value = value.replace("\\n", "\n");
        match key.strip_prefix("sops_") {
            Some(flat) => {
                any_sops = true;
                unflatten(&mut sops, flat, Node::Str(value));
            }
            None => entries.push((key.to_string(), Node::Str(value))),
        }
    }
    Some((Node::Map(entries), any_sops.then_some(sops)))
}

/// Places `value` at the flattened path `flat` (`age__list_0__map_enc`) under `root`.
fn unflatten(root: &mut Node, flat: &str, value: Node) {
    enum Step {
        Key(String),
        Index(usize),
    }
    // sops's tokenizer: a token ends where the next separator starts.
    let mut steps = Vec::new();
    let mut kind_is_list = false;
    let mut start = 0;
    let mut i = 0;
    let bytes = flat.as_bytes();
    let finish = |from: usize, to: usize, list: bool, steps: &mut Vec<Step>| {
        let token = flat.get(from..to).unwrap_or_default();
        steps.push(if list {
            Step::Index(token.parse().unwrap_or(0))
        } else {
            Step::Key(token.to_string())
        });
    };
    while i < bytes.len() {
        let rest = flat.get(i..).unwrap_or_default();
        let separator = if rest.starts_with("__map_") {
            Some((6, false))
        } else if rest.starts_with("__list_") {
            Some((7, true))
        } else {
            None
        };
        match separator {
            Some((len, list)) => {
                finish(start, i, kind_is_list, &mut steps);
                kind_is_list = list;
                i += len;
                start = i;
            }
            None => i += 1,
        }
    }
    finish(start, flat.len(), kind_is_list, &mut steps);
    let mut node = root;
    for step in steps {
        node = match step {
            Step::Key(k) => {
                if !matches!(node, Node::Map(_)) {
                    *node = Node::Map(Vec::new());
                }
                let Node::Map(entries) = node else { return };
                let at = match entries.iter().position(|(key, _)| key == &k) {
                    Some(at) => at,
                    None => {
                        entries.push((k, Node::Null));
                        entries.len() - 1
                    }
                };
                match entries.get_mut(at) {
                    Some((_, v)) => v,
                    None => return,
                }
            }
            Step::Index(i) => {
                if !matches!(node, Node::Seq(_)) {
                    *node = Node::Seq(Vec::new());
                }
                let Node::Seq(items) = node else { return };
                if items.len() <= i {
                    items.resize(i + 1, Node::Null);
                }
                match items.get_mut(i) {
                    Some(v) => v,
                    None => return,
                }
            }
        };
    }
    *node = value;
}

/// Writes decrypted documents back in `format`. Fails (naming the path, never the value)
/// when a value cannot be written in that format.
pub fn emit(format: Format, documents: &[Node]) -> Result<Vec<u8>, String> {
    match format {
        Format::Yaml => {
            let mut out = String::new();
            for (i, doc) in documents.iter().enumerate() {
                if i > 0 {
                    out.push_str("---\n");
                }
                let value = doc.to_yaml(&mut Vec::new())?;
                out.push_str(
                    &serde_norway::to_string(&value)
                        .map_err(|e| format!("cannot write YAML: {e}"))?,
                );
            }
            Ok(out.into_bytes())
        }
        Format::Json => {
            let doc = documents.first().ok_or("no document")?;
            let mut out = String::new();
            json(doc, 0, &mut Vec::new(), &mut out)?;
            out.push('\n');
            Ok(out.into_bytes())
        }
        Format::Dotenv => {
            let Some(Node::Map(entries)) = documents.first() else {
                return Err("no dotenv entries".into());
            };
            let mut out = String::new();
            for (k, v) in entries {
                let value = match v {
                    Node::Str(s) => s.replace('\n', "\\n"),
                    Node::Int(i) => i.to_string(),
                    Node::Float(f) => format!("{f:?}"),
                    Node::Bool(b) => b.to_string(),
                    Node::Null => String::new(),
                    Node::Bytes(_) => return Err(format!("the value of {k} is not UTF-8 text")),
                    Node::Map(_) | Node::Seq(_) => {
                        return Err(format!("{k} holds a structure; dotenv holds only values"))
                    }
                };
                out.push_str(k);
                out.push('=');
                out.push_str(&value);
                out.push('\n');
            }
            Ok(out.into_bytes())
        }
        Format::Binary => match documents.first().and_then(|d| d.get("data")) {
            Some(Node::Str(s)) => Ok(s.as_bytes().to_vec()),
            Some(Node::Bytes(b)) => Ok(b.clone()),
            _ => Err("the data entry is not a string".into()),
        },
        Format::Ini => Err("the INI format is not supported".into()),
    }
}

fn json(
    node: &Node,
    indent: usize,
    path: &mut Vec<String>,
    out: &mut String,
) -> Result<(), String> {
    let pad = |n: usize| "    ".repeat(n);
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_default();
    match node {
        Node::Null => out.push_str("null"),
        Node::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Node::Int(i) => out.push_str(&i.to_string()),
        Node::Float(f) => out.push_str(
            &serde_json::Number::from_f64(*f)
                .map(|n| n.to_string())
                .unwrap_or_else(|| "null".into()),
        ),
        Node::Str(s) => out.push_str(&quote(s)),
        Node::Bytes(_) => {
            return Err(format!(
                "the value at {} is not UTF-8 text; only sops's binary format can hold bytes",
                path.join(".")
            ))
        }
        Node::Seq(items) if items.is_empty() => out.push_str("[]"),
        Node::Map(entries) if entries.is_empty() => out.push_str("{}"),
        Node::Seq(items) => {
            out.push_str("[\n");
            for (i, item) in items.iter().enumerate() {
                out.push_str(&pad(indent + 1));
                json(item, indent + 1, path, out)?;
                out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            out.push_str(&pad(indent));
            out.push(']');
        }
        Node::Map(entries) => {
            out.push_str("{\n");
            for (i, (k, v)) in entries.iter().enumerate() {
                out.push_str(&pad(indent + 1));
                out.push_str(&quote(k));
                out.push_str(": ");
                path.push(k.clone());
                let written = json(v, indent + 1, path, out);
                path.pop();
                written?;
                out.push_str(if i + 1 < entries.len() { ",\n" } else { "\n" });
            }
            out.push_str(&pad(indent));
            out.push('}');
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_by_name_as_sops_picks_them() {
        assert_eq!(Format::of("a/secret.YAML"), Format::Yaml);
        assert_eq!(Format::of("x.yml"), Format::Yaml);
        assert_eq!(Format::of("x.json"), Format::Json);
        assert_eq!(Format::of(".env"), Format::Dotenv);
        assert_eq!(Format::of("prod.env"), Format::Dotenv);
        assert_eq!(Format::of("tls.key"), Format::Binary);
    }

    #[test]
    fn what_looks_encrypted_but_cannot_be_verified_fails_closed() {
        let enc = "ENC[AES256_GCM,data:AA==,iv:AA==,tag:AA==,type:str]";
        let stripped = format!("kind: Secret\nstringData:\n  a: {enc}\n");
        let err = load(Format::Yaml, stripped.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("no sops metadata"), "{err}");
        let broken = format!("kind: Secret\nstringData: {{a: {enc}\nsops:\n  mac: x\n");
        let err = load(Format::Yaml, broken.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("cannot be read"), "{err}");
        assert!(load(Format::Yaml, b"kind: ConfigMap\ndata: {a: b}\n")
            .unwrap()
            .is_none());
        assert!(load(Format::Binary, b"# notes on ENC[AES256_GCM,\n")
            .unwrap()
            .is_none());
    }

    #[test]
    fn dotenv_metadata_unflattens() {
        let text = b"A=1\n#c\nsops_age__list_0__map_recipient=age1x\nsops_age__list_0__map_enc=-----BEGIN\\nX\nsops_age__list_1__map_recipient=age1y\nsops_mac=m\nsops_version=3.13.3\n";
        let (doc, sops) = dotenv(text).unwrap();
        assert_eq!(doc, Node::Map(vec![("A".into(), Node::Str("1".into()))]));
        let sops = sops.unwrap();
        let Some(Node::Seq(age)) = sops.get("age") else {
            panic!("{sops:?}")
        };
        assert_eq!(age.len(), 2);
        assert_eq!(age[0].get("recipient"), Some(&Node::Str("age1x".into())));
        assert_eq!(age[0].get("enc"), Some(&Node::Str("-----BEGIN\nX".into())));
        assert_eq!(age[1].get("recipient"), Some(&Node::Str("age1y".into())));
        assert_eq!(sops.get("mac"), Some(&Node::Str("m".into())));
    }

    #[test]
    fn emits_each_format() {
        let doc = Node::Map(vec![
            ("a".into(), Node::Str("x\ny".into())),
            ("n".into(), Node::Int(3)),
        ]);
        assert_eq!(
            emit(Format::Dotenv, std::slice::from_ref(&doc)).unwrap(),
            b"a=x\\ny\nn=3\n"
        );
        let json: serde_json::Value =
            serde_json::from_slice(&emit(Format::Json, std::slice::from_ref(&doc)).unwrap())
                .unwrap();
        assert_eq!(json, serde_json::json!({"a": "x\ny", "n": 3}));
        let yaml = String::from_utf8(emit(Format::Yaml, &[doc.clone(), doc]).unwrap()).unwrap();
        assert_eq!(yaml.matches("---").count(), 1, "{yaml}");
        let bin = Node::Map(vec![("data".into(), Node::Bytes(vec![0, 255]))]);
        assert_eq!(
            emit(Format::Binary, std::slice::from_ref(&bin)).unwrap(),
            [0, 255]
        );
        let err = emit(Format::Json, &[bin]).unwrap_err();
        assert!(err.contains("data"), "{err}");
    }
}
