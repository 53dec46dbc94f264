//! The SOPS file format, as getsops/sops v3 writes it: the tree, its metadata, which values
//! are encrypted, the per-value cipher and the MAC.
//!
//! - **Values.** Each encrypted leaf is `ENC[AES256_GCM,data:…,iv:…,tag:…,type:…]`:
//!   AES-256-GCM under the file's 32-byte data key, a 32-byte IV, and the leaf's path as
//!   additional data (the mapping keys from the root, each followed by `:`; list indexes
//!   are not part of the path). `type` is `str`, `int`, `float`, `bool`, `bytes`, `time`
//!   or `comment`. The empty string is stored as the empty string.
//! - **Which values.** Every leaf, unless the metadata says otherwise with one of
//!   `unencrypted_suffix` (the default, `_unencrypted`), `encrypted_suffix`,
//!   `unencrypted_regex` or `encrypted_regex`, matched against every key on the leaf's
//!   path. The comment rules (`*_comment_regex`) need the file's comments, which a YAML
//!   parser does not keep: such files are refused ([`SopsError::Unsupported`]).
//! - **The MAC.** SHA-512 over the plaintext of every leaf in document order (ints in
//!   decimal, floats in Go's shortest `%f` form, bools as `True`/`False`, nulls skipped;
//!   with `mac_only_encrypted` only the encrypted leaves, after a fixed prefix), as upper
//!   case hex, stored encrypted like a value with `lastmodified` (RFC 3339) as additional
//!   data. A file whose MAC does not match is refused: nothing of it is used.
//! - **The data key.** Wrapped for each recipient; tresor unwraps the `age` entries with
//!   the identities it was given ([`super::age`]). Shamir key groups are refused.

use std::fmt;

use aes_gcm::aead::consts::{U12, U32};
use aes_gcm::aead::{Aead, Payload};
use aes_gcm::aes::Aes256;
use aes_gcm::{AesGcm, KeyInit};
use base64::Engine as _;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use sha2::{Digest as _, Sha512};
use zeroize::Zeroizing;

use super::age::Identities;

/// The marker every encrypted value starts with.
pub const ENC_PREFIX: &str = "ENC[AES256_GCM,";

/// What sops hashes first when `mac_only_encrypted` is set.
const MAC_ONLY_ENCRYPTED_INIT: [u8; 32] = [
    0x8a, 0x3f, 0xd2, 0xad, 0x54, 0xce, 0x66, 0x52, 0x7b, 0x10, 0x34, 0xf3, 0xd1, 0x47, 0xbe, 0x0b,
    0x0b, 0x97, 0x5b, 0x3b, 0xf4, 0x4f, 0x72, 0xc6, 0xfd, 0xad, 0xec, 0x81, 0x76, 0xf2, 0x7d, 0x69,
];

/// What went wrong with a SOPS file (the caller adds the file name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SopsError {
    /// The `sops` metadata is missing a field or malformed.
    #[error("invalid sops metadata: {0}")]
    Metadata(String),
    /// The file uses a SOPS feature tresor does not implement.
    #[error("{0} is not supported")]
    Unsupported(String),
    /// No identity was given.
    #[error("no age identity was given")]
    NoIdentity,
    /// None of the identities is a recipient of the file.
    #[error(
        "none of the {given} age identities given is a recipient of this file (its age \
         recipients: {recipients})"
    )]
    NoMatchingIdentity {
        /// How many identities were tried.
        given: usize,
        /// The file's age recipients.
        recipients: String,
    },
    /// The wrapped data key could not be unwrapped.
    #[error("cannot unwrap the data key for {recipient}: {message}")]
    DataKey {
        /// The age recipient.
        recipient: String,
        /// Why.
        message: String,
    },
    /// A value did not decrypt (tampered, or not written by sops with this data key).
    #[error("value at {path} does not decrypt: {message}")]
    Value {
        /// The value's path, `a.b.c`.
        path: String,
        /// Why (never the value).
        message: String,
    },
    /// The MAC does not match the values: the file was changed after sops wrote it.
    #[error("MAC mismatch: the values were changed after sops encrypted them")]
    MacMismatch,
}

impl SopsError {
    /// Stable CamelCase reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Metadata(_) => "SopsMetadataInvalid",
            Self::Unsupported(_) => "SopsUnsupported",
            Self::NoIdentity => "AgeIdentityMissing",
            Self::NoMatchingIdentity { .. } => "AgeIdentityNotRecipient",
            Self::DataKey { .. } => "SopsDataKeyInvalid",
            Self::Value { .. } => "SopsValueTampered",
            Self::MacMismatch => "SopsMacMismatch",
        }
    }
}

/// A value of a SOPS tree, mappings in document order (the MAC depends on it).
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    /// A mapping with string keys, in order.
    Map(Vec<(String, Node)>),
    /// A sequence.
    Seq(Vec<Node>),
    /// A string.
    Str(String),
    /// Decrypted bytes that are not UTF-8 (binary files).
    Bytes(Vec<u8>),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// Null (not hashed, never encrypted).
    Null,
}

impl Node {
    /// The value under `key` of a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Node::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The same value from a parsed YAML value (what the lint sees); `None` for a
    /// mapping with a key that is not a string.
    pub fn from_yaml(value: &serde_norway::Value) -> Option<Node> {
        use serde_norway::Value;
        Some(match value {
            Value::Null => Node::Null,
            Value::Bool(b) => Node::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Node::Int(i),
                None => Node::Float(n.as_f64()?),
            },
            Value::String(s) => Node::Str(s.clone()),
            Value::Sequence(items) => {
                Node::Seq(items.iter().map(Node::from_yaml).collect::<Option<_>>()?)
            }
            Value::Mapping(map) => Node::Map(
                map.iter()
                    .map(|(k, v)| Some((k.as_str()?.to_string(), Node::from_yaml(v)?)))
                    .collect::<Option<_>>()?,
            ),
            Value::Tagged(tagged) => Node::from_yaml(&tagged.value)?,
        })
    }

    /// The YAML value of this node (decrypted output); fails naming the path of a value
    /// that is not UTF-8.
    pub fn to_yaml(&self, path: &mut Vec<String>) -> Result<serde_norway::Value, String> {
        use serde_norway::Value;
        Ok(match self {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(*b),
            Node::Int(i) => Value::Number((*i).into()),
            Node::Float(f) => Value::Number((*f).into()),
            Node::Str(s) => Value::String(s.clone()),
            Node::Bytes(_) => return Err(not_text(path)),
            Node::Seq(items) => Value::Sequence(
                items
                    .iter()
                    .map(|v| v.to_yaml(path))
                    .collect::<Result<_, _>>()?,
            ),
            Node::Map(entries) => {
                let mut map = serde_norway::Mapping::new();
                for (k, v) in entries {
                    path.push(k.clone());
                    let value = v.to_yaml(path);
                    path.pop();
                    map.insert(Value::String(k.clone()), value?);
                }
                Value::Mapping(map)
            }
        })
    }
}

fn not_text(path: &[String]) -> String {
    format!(
        "the value at {} is not UTF-8 text; only sops's binary format can hold bytes",
        path.join(".")
    )
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML or JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        // sops (Go) reads integers as int64 and falls back to float64, like this.
        Ok(i64::try_from(v).map_or(Node::Float(v as f64), Node::Int))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        Node::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries: Vec<(String, Node)> = Vec::new();
        while let Some(key) = map.next_key::<Node>()? {
            let Node::Str(key) = key else {
                return Err(de::Error::custom(
                    "a mapping key is not a string; sops supports only string keys",
                ));
            };
            let value = map.next_value::<Node>()?;
            entries.push((key, value));
        }
        Ok(Node::Map(entries))
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<Node, A::Error> {
        // A YAML tag (`!custom value`): sops (go-yaml) reads the value under it.
        use de::VariantAccess as _;
        let (_tag, contents) = data.variant::<de::IgnoredAny>()?;
        contents.newtype_variant::<Node>()
    }
}

/// The rule deciding which leaves are encrypted (exactly one, as sops allows).
#[derive(Clone, Debug)]
pub enum Rule {
    /// Leaves with a key on their path ending in this are not encrypted.
    UnencryptedSuffix(String),
    /// Only leaves with a key on their path ending in this are encrypted.
    EncryptedSuffix(String),
    /// Leaves with a key on their path matching this are not encrypted.
    UnencryptedRegex(regex::Regex),
    /// Only leaves with a key on their path matching this are encrypted.
    EncryptedRegex(regex::Regex),
}

impl Rule {
    /// Whether sops encrypts the leaf at `path` (mapping keys from the root).
    pub fn encrypts<S: AsRef<str>>(&self, path: &[S]) -> bool {
        let any = |f: &dyn Fn(&str) -> bool| path.iter().any(|k| f(k.as_ref()));
        match self {
            Rule::UnencryptedSuffix(s) => !any(&|k| k.ends_with(s.as_str())),
            Rule::EncryptedSuffix(s) => any(&|k| k.ends_with(s.as_str())),
            Rule::UnencryptedRegex(r) => !any(&|k| r.is_match(k)),
            Rule::EncryptedRegex(r) => any(&|k| r.is_match(k)),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::UnencryptedSuffix(s) => write!(f, "unencrypted_suffix {s:?}"),
            Rule::EncryptedSuffix(s) => write!(f, "encrypted_suffix {s:?}"),
            Rule::UnencryptedRegex(r) => write!(f, "unencrypted_regex {:?}", r.as_str()),
            Rule::EncryptedRegex(r) => write!(f, "encrypted_regex {:?}", r.as_str()),
        }
    }
}

/// One age recipient of the data key.
#[derive(Clone, Debug)]
pub struct AgeEntry {
    /// `age1…`.
    pub recipient: String,
    /// The data key, encrypted to the recipient (armored age file).
    pub enc: String,
}

/// The `sops` metadata of a file.
#[derive(Clone, Debug)]
pub struct Metadata {
    /// `lastmodified` as written.
    pub last_modified: String,
    /// The encrypted MAC.
    pub mac: String,
    /// Which leaves are encrypted.
    pub rule: Rule,
    /// Whether the MAC covers only the encrypted leaves.
    pub mac_only_encrypted: bool,
    /// The age recipients.
    pub age: Vec<AgeEntry>,
    /// Other kinds of master keys present (pgp, kms, …), for messages.
    pub others: Vec<String>,
}

fn text(node: Option<&Node>) -> Option<String> {
    match node? {
        Node::Str(s) => Some(s.clone()),
        Node::Int(i) => Some(i.to_string()),
        Node::Bool(b) => Some(b.to_string()),
        _ => None,
    }
    .filter(|s| !s.is_empty())
}

impl Metadata {
    /// Reads the `sops` mapping (for dotenv files: already unflattened).
    pub fn from_node(sops: &Node) -> Result<Self, SopsError> {
        let bad = |m: &str| SopsError::Metadata(m.to_string());
        if !matches!(sops, Node::Map(_)) {
            return Err(bad("the sops entry is not a mapping"));
        }
        if sops.get("key_groups").is_some_and(|g| g != &Node::Null) {
            return Err(SopsError::Unsupported(
                "key_groups (Shamir secret sharing of the data key)".into(),
            ));
        }
        let last_modified = text(sops.get("lastmodified"))
            .ok_or_else(|| bad("lastmodified is missing: not a file sops encrypted"))?;
        let mac = text(sops.get("mac")).ok_or_else(|| bad("mac is missing"))?;
        let rule = Self::rule(sops)?;
        let mac_only_encrypted = match sops.get("mac_only_encrypted") {
            None | Some(Node::Null) => false,
            Some(Node::Bool(b)) => *b,
            Some(Node::Str(s)) => matches!(s.as_str(), "true" | "True" | "TRUE" | "1" | "t" | "T"),
            Some(_) => return Err(bad("mac_only_encrypted is not a boolean")),
        };
        let mut age = Vec::new();
        if let Some(Node::Seq(entries)) = sops.get("age") {
            for entry in entries {
                let (Some(recipient), Some(enc)) =
                    (text(entry.get("recipient")), text(entry.get("enc")))
                else {
                    return Err(bad("an age entry lacks recipient or enc"));
                };
                age.push(AgeEntry { recipient, enc });
            }
        }
        let others = ["pgp", "kms", "gcp_kms", "azure_kv", "hc_vault", "hckms"]
            .into_iter()
            .filter(|k| matches!(sops.get(k), Some(Node::Seq(s)) if !s.is_empty()))
            .map(String::from)
            .collect();
        Ok(Self {
            last_modified,
            mac,
            rule,
            mac_only_encrypted,
            age,
            others,
        })
    }

    /// The encryption rule of `sops`, the default when none is set.
    pub fn rule(sops: &Node) -> Result<Rule, SopsError> {
        let mut rules = Vec::new();
        for name in ["unencrypted_comment_regex", "encrypted_comment_regex"] {
            if text(sops.get(name)).is_some() {
                return Err(SopsError::Unsupported(format!(
                    "{name} (it depends on YAML comments, which tresor does not read)"
                )));
            }
        }
        let regex = |s: &str| {
            regex::Regex::new(s).map_err(|e| SopsError::Metadata(format!("bad regex {s:?}: {e}")))
        };
        if let Some(s) = text(sops.get("unencrypted_suffix")) {
            rules.push(Rule::UnencryptedSuffix(s));
        }
        if let Some(s) = text(sops.get("encrypted_suffix")) {
            rules.push(Rule::EncryptedSuffix(s));
        }
        if let Some(s) = text(sops.get("unencrypted_regex")) {
            rules.push(Rule::UnencryptedRegex(regex(&s)?));
        }
        if let Some(s) = text(sops.get("encrypted_regex")) {
            rules.push(Rule::EncryptedRegex(regex(&s)?));
        }
        if rules.len() > 1 {
            return Err(SopsError::Metadata(
                "more than one of unencrypted_suffix, encrypted_suffix, unencrypted_regex and \
                 encrypted_regex is set"
                    .into(),
            ));
        }
        Ok(rules
            .pop()
            .unwrap_or_else(|| Rule::UnencryptedSuffix("_unencrypted".into())))
    }

    /// The data key, unwrapped with one of `identities`.
    pub fn data_key(&self, identities: &Identities) -> Result<Zeroizing<Vec<u8>>, SopsError> {
        if identities.is_empty() {
            return Err(SopsError::NoIdentity);
        }
        if self.age.is_empty() {
            return Err(SopsError::Unsupported(format!(
                "a file without age recipients (its data key is wrapped only for: {})",
                if self.others.is_empty() {
                    "nothing".to_string()
                } else {
                    self.others.join(", ")
                }
            )));
        }
        for entry in &self.age {
            match identities.unwrap(entry.enc.as_bytes()) {
                Ok(Some(key)) if key.len() == 32 => return Ok(key),
                Ok(Some(key)) => {
                    return Err(SopsError::DataKey {
                        recipient: entry.recipient.clone(),
                        message: format!("it is {} bytes, not 32", key.len()),
                    })
                }
                Ok(None) => {}
                Err(message) => {
                    return Err(SopsError::DataKey {
                        recipient: entry.recipient.clone(),
                        message,
                    })
                }
            }
        }
        Err(SopsError::NoMatchingIdentity {
            given: identities.len(),
            recipients: self
                .age
                .iter()
                .map(|e| e.recipient.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    /// `lastmodified` as Go's `time.Format(time.RFC3339)` prints it after parsing (no
    /// fraction, `Z` for UTC): the MAC's additional data.
    fn mac_aad(&self) -> Result<String, SopsError> {
        let s = self.last_modified.as_str();
        let bad = || SopsError::Metadata(format!("lastmodified {s:?} is not RFC 3339"));
        let (date_time, rest) = s.split_at_checked(19).ok_or_else(bad)?;
        let b = date_time.as_bytes();
        let shape = b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            _ => c.is_ascii_digit(),
        });
        if !shape {
            return Err(bad());
        }
        let rest = match rest.strip_prefix('.') {
            Some(frac) => {
                let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
                if digits == 0 {
                    return Err(bad());
                }
                frac.get(digits..).ok_or_else(bad)?
            }
            None => rest,
        };
        let zone = match rest {
            "Z" | "+00:00" | "-00:00" => "Z",
            z if z.len() == 6
                && (z.starts_with('+') || z.starts_with('-'))
                && z.as_bytes().get(3) == Some(&b':') =>
            {
                z
            }
            _ => return Err(bad()),
        };
        Ok(format!("{date_time}{zone}"))
    }
}

/// A decrypted leaf, before it is put back in the tree.
fn decrypt_value(text: &str, key: &[u8], aad: &str) -> Result<Node, String> {
    if text.is_empty() {
        return Ok(Node::Str(String::new()));
    }
    let inner = text
        .strip_prefix(ENC_PREFIX)
        .and_then(|t| t.strip_suffix(']'))
        .ok_or("not an ENC[AES256_GCM,…] value")?;
    let field = |s: &str, name: &str| -> Result<Vec<u8>, String> {
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|_| format!("{name} is not base64"))
    };
    let (data, rest) = inner
        .strip_prefix("data:")
        .and_then(|r| r.split_once(",iv:"))
        .ok_or("no data field")?;
    let (iv, rest) = rest.split_once(",tag:").ok_or("no iv field")?;
    let (tag, kind) = rest.split_once(",type:").ok_or("no tag or type field")?;
    let mut sealed = field(data, "data")?;
    let tag = field(tag, "tag")?;
    if tag.len() != 16 {
        return Err("the tag is not 16 bytes".into());
    }
    sealed.extend_from_slice(&tag);
    let iv = field(iv, "iv")?;
    let payload = Payload {
        msg: &sealed,
        aad: aad.as_bytes(),
    };
    let failed = |_| "authentication failed (tampered, or another data key)".to_string();
    let plain = Zeroizing::new(match iv.len() {
        32 => AesGcm::<Aes256, U32>::new_from_slice(key)
            .map_err(|_| "bad data key")?
            .decrypt(iv.as_slice().try_into().map_err(|_| "bad iv")?, payload)
            .map_err(failed)?,
        12 => AesGcm::<Aes256, U12>::new_from_slice(key)
            .map_err(|_| "bad data key")?
            .decrypt(iv.as_slice().try_into().map_err(|_| "bad iv")?, payload)
            .map_err(failed)?,
        n => return Err(format!("an iv of {n} bytes is not supported")),
    });
    let as_text = || std::str::from_utf8(&plain).map_err(|_| format!("a {kind} that is not text"));
    Ok(match kind {
        "str" => match std::str::from_utf8(&plain) {
            Ok(s) => Node::Str(s.to_string()),
            Err(_) => Node::Bytes(plain.to_vec()),
        },
        "bytes" => Node::Bytes(plain.to_vec()),
        "int" => Node::Int(
            as_text()?
                .parse()
                .map_err(|_| "an int that does not parse")?,
        ),
        "float" => Node::Float(
            as_text()?
                .parse()
                .map_err(|_| "a float that does not parse")?,
        ),
        "bool" => Node::Bool(match as_text()? {
            "1" | "t" | "T" | "TRUE" | "true" | "True" => true,
            "0" | "f" | "F" | "FALSE" | "false" | "False" => false,
            _ => return Err("a bool that does not parse".into()),
        }),
        "time" => Node::Str(as_text()?.to_string()),
        other => return Err(format!("unknown type {other:?}")),
    })
}

/// Go's `strconv.FormatFloat(f, 'f', -1, 64)`: the shortest digits that read back as `f`,
/// without exponent.
fn go_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{f}")
    }
}

/// Feeds a plaintext leaf to the MAC the way sops's `ToBytes` does.
fn hash_leaf(hash: &mut Sha512, leaf: &Node) {
    match leaf {
        Node::Str(s) => hash.update(s.as_bytes()),
        Node::Bytes(b) => hash.update(b),
        Node::Int(i) => hash.update(i.to_string().as_bytes()),
        Node::Float(f) => hash.update(go_float(*f).as_bytes()),
        Node::Bool(true) => hash.update(b"True"),
        Node::Bool(false) => hash.update(b"False"),
        Node::Null | Node::Map(_) | Node::Seq(_) => {}
    }
}

struct Walk<'a> {
    key: &'a [u8],
    rule: &'a Rule,
    mac_only_encrypted: bool,
    hash: Sha512,
}

impl Walk<'_> {
    fn node(&mut self, node: &mut Node, path: &mut Vec<String>) -> Result<(), SopsError> {
        match node {
            Node::Map(entries) => {
                for (k, v) in entries.iter_mut() {
                    path.push(k.clone());
                    let walked = self.node(v, path);
                    path.pop();
                    walked?;
                }
            }
            // List items share the list's path, as in sops.
            Node::Seq(items) => {
                for item in items.iter_mut() {
                    self.node(item, path)?;
                }
            }
            Node::Null => {}
            leaf => {
                let encrypted = self.rule.encrypts(path);
                if encrypted {
                    let Node::Str(text) = &*leaf else {
                        return Err(SopsError::Value {
                            path: path.join("."),
                            message: "it should be encrypted but is not a string".into(),
                        });
                    };
                    let aad = format!("{}:", path.join(":"));
                    *leaf = decrypt_value(text, self.key, &aad).map_err(|message| {
                        SopsError::Value {
                            path: path.join("."),
                            message,
                        }
                    })?;
                }
                if encrypted || !self.mac_only_encrypted {
                    hash_leaf(&mut self.hash, leaf);
                }
            }
        }
        Ok(())
    }
}

/// Decrypts `documents` (the file's documents without their `sops` entries) in place with
/// the data key unwrapped by `identities`, and checks the MAC. On any error nothing
/// decrypted is returned.
pub fn decrypt(
    documents: &mut [Node],
    metadata: &Metadata,
    identities: &Identities,
) -> Result<(), SopsError> {
    let key = metadata.data_key(identities)?;
    let mut walk = Walk {
        key: &key,
        rule: &metadata.rule,
        mac_only_encrypted: metadata.mac_only_encrypted,
        hash: Sha512::new(),
    };
    if metadata.mac_only_encrypted {
        walk.hash.update(MAC_ONLY_ENCRYPTED_INIT);
    }
    for document in documents.iter_mut() {
        walk.node(document, &mut Vec::new())?;
    }
    let computed = hex::encode_upper(walk.hash.finalize());
    let stored = decrypt_value(&metadata.mac, &key, &metadata.mac_aad()?)
        .map_err(|_| SopsError::MacMismatch)?;
    use subtle::ConstantTimeEq as _;
    match stored {
        Node::Str(s) if bool::from(s.as_bytes().ct_eq(computed.as_bytes())) => Ok(()),
        _ => Err(SopsError::MacMismatch),
    }
}

/// The leaves of a document that the metadata's rule says are encrypted but hold plaintext:
/// their paths (`data.password`). Empty strings and nulls are skipped (sops stores them as
/// they are).
pub fn plaintext_leaves(document: &Node, rule: &Rule) -> Vec<String> {
    fn walk(node: &Node, rule: &Rule, path: &mut Vec<String>, out: &mut Vec<String>) {
        match node {
            Node::Map(entries) => {
                for (k, v) in entries {
                    if path.is_empty() && k == "sops" {
                        continue;
                    }
                    path.push(k.clone());
                    walk(v, rule, path, out);
                    path.pop();
                }
            }
            Node::Seq(items) => items.iter().for_each(|i| walk(i, rule, path, out)),
            Node::Null => {}
            Node::Str(s) if s.is_empty() || s.starts_with(ENC_PREFIX) => {}
            _ if rule.encrypts(path) => out.push(path.join(".")),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(document, rule, &mut Vec::new(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_float_formatting() {
        assert_eq!(go_float(1.0), "1");
        assert_eq!(go_float(1.5), "1.5");
        assert_eq!(go_float(1e21), "1000000000000000000000");
        assert_eq!(go_float(1e-7), "0.0000001");
        assert_eq!(go_float(f64::INFINITY), "+Inf");
    }

    #[test]
    fn rules_match_keys_anywhere_on_the_path() {
        let regex = Rule::EncryptedRegex(regex::Regex::new("^(data|stringData)$").unwrap());
        assert!(regex.encrypts(&["data", "password"]));
        assert!(!regex.encrypts(&["metadata", "name"]));
        let suffix = Rule::UnencryptedSuffix("_unencrypted".into());
        assert!(suffix.encrypts(&["a", "b"]));
        assert!(!suffix.encrypts(&["a_unencrypted", "b"]));
        let enc = Rule::EncryptedSuffix("_enc".into());
        assert!(enc.encrypts(&["x_enc", "y"]));
        assert!(!enc.encrypts(&["x"]));
    }

    #[test]
    fn lastmodified_is_reformatted_like_go() {
        let meta = |s: &str| Metadata {
            last_modified: s.into(),
            mac: String::new(),
            rule: Rule::UnencryptedSuffix("_unencrypted".into()),
            mac_only_encrypted: false,
            age: vec![],
            others: vec![],
        };
        assert_eq!(
            meta("2026-12-02T23:00:00Z").mac_aad().unwrap(),
            "2026-12-02T23:00:00Z"
        );
        assert_eq!(
            meta("2026-12-02T23:00:00.123+00:00").mac_aad().unwrap(),
            "2026-12-02T23:00:00Z"
        );
        assert_eq!(
            meta("2026-12-02T23:00:00+02:00").mac_aad().unwrap(),
            "2026-12-02T23:00:00+02:00"
        );
        assert!(meta("yesterday").mac_aad().is_err());
    }

    #[test]
    fn values_decrypt_only_under_their_own_path() {
        // Encrypted here the way sops's aes.Cipher does it (32-byte iv, path as AAD).
        let key = [3u8; 32];
        let iv = [9u8; 32];
        let cipher = AesGcm::<Aes256, U32>::new_from_slice(&key).unwrap();
        let sealed = cipher
            .encrypt(
                &iv.into(),
                Payload {
                    msg: b"hunter2",
                    aad: b"data:password:",
                },
            )
            .unwrap();
        let (data, tag) = sealed.split_at(sealed.len() - 16);
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let value = format!(
            "ENC[AES256_GCM,data:{},iv:{},tag:{},type:str]",
            b64(data),
            b64(&iv),
            b64(tag)
        );
        assert_eq!(
            decrypt_value(&value, &key, "data:password:").unwrap(),
            Node::Str("hunter2".into())
        );
        let moved = decrypt_value(&value, &key, "data:other:").unwrap_err();
        assert!(moved.contains("authentication failed"), "{moved}");
        assert!(!moved.contains("hunter2"));
        assert_eq!(decrypt_value("", &key, "x:").unwrap(), Node::Str("".into()));
    }

    #[test]
    fn plaintext_leaves_honour_the_rule() {
        let doc: Node = serde_norway::from_str(
            "kind: Secret\ndata:\n  a: ENC[AES256_GCM,data:x,iv:y,tag:z,type:str]\n  b: plain\n  c: ''\n  d_unencrypted: fine\n",
        )
        .unwrap();
        let rule = Rule::UnencryptedSuffix("_unencrypted".into());
        assert_eq!(plaintext_leaves(&doc, &rule), ["kind", "data.b"]);
        let rule = Rule::EncryptedRegex(regex::Regex::new("^data$").unwrap());
        assert_eq!(
            plaintext_leaves(&doc, &rule),
            ["data.b", "data.d_unencrypted"]
        );
    }
}
