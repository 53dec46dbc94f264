//! age identities: the X25519 secret keys (`AGE-SECRET-KEY-1…`) that unwrap a SOPS file's
//! data key.
//!
//! Identities come from files in age's own format (what `age-keygen` writes: one key a
//! line, `#` comments; `tresor apply|sync --age-identity FILE`) or from the values of a
//! Kubernetes Secret (keys ending `.agekey`, like Flux's `decryption.secretRef`). Only
//! X25519 identities are accepted; plugin and SSH identities are refused by name. Key
//! material never appears in an error: a bad line is named by its number.

use std::io::Read as _;
use std::path::Path;
use std::str::FromStr as _;

use age::x25519;
use zeroize::Zeroizing;

use super::SecretsError;

/// Largest identity file read (age's own limit is 16 MiB; a key is 74 bytes).
const MAX_IDENTITY_BYTES: u64 = 1024 * 1024;

/// A set of age X25519 identities, in the order given.
#[derive(Clone, Default)]
pub struct Identities {
    keys: Vec<x25519::Identity>,
    sources: Vec<String>,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The keys themselves are never printed.
        f.debug_struct("Identities")
            .field("count", &self.keys.len())
            .field("sources", &self.sources)
            .finish()
    }
}

impl Identities {
    /// No identities: every SOPS file fails closed.
    pub fn none() -> Self {
        Self::default()
    }

    /// Reads every file in `paths` (age identity files). Fails naming the file when one
    /// cannot be read, holds no identity or holds a line that is not an X25519 identity.
    pub fn read_files(paths: &[std::path::PathBuf]) -> Result<Self, SecretsError> {
        let mut all = Self::none();
        for path in paths {
            all.extend(Self::read_file(path)?);
        }
        Ok(all)
    }

    /// Reads one age identity file.
    pub fn read_file(path: &Path) -> Result<Self, SecretsError> {
        let source = path.display().to_string();
        let bad = |message: String| SecretsError::IdentityFile {
            from: source.clone(),
            message,
        };
        let file = std::fs::File::open(path).map_err(|e| bad(format!("cannot open: {e}")))?;
        let mut text = Zeroizing::new(Vec::new());
        file.take(MAX_IDENTITY_BYTES + 1)
            .read_to_end(&mut text)
            .map_err(|e| bad(format!("cannot read: {e}")))?;
        if text.len() as u64 > MAX_IDENTITY_BYTES {
            return Err(bad(format!(
                "larger than {MAX_IDENTITY_BYTES} bytes: not an age identity file"
            )));
        }
        Self::parse(&source, &text)
    }

    /// Parses identities from `text` (age's identity file format); `source` names where
    /// it came from in errors (a file, or `Secret ns/name key k.agekey`).
    pub fn parse(source: &str, text: &[u8]) -> Result<Self, SecretsError> {
        let bad = |message: String| SecretsError::IdentityFile {
            from: source.to_string(),
            message,
        };
        let text = std::str::from_utf8(text).map_err(|_| bad("not UTF-8 text".into()))?;
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match x25519::Identity::from_str(line) {
                Ok(key) => keys.push(key),
                Err(_) if line.starts_with("AGE-PLUGIN-") => {
                    return Err(bad(format!(
                        "line {}: age plugin identities are not supported; use an X25519 \
                         identity (age-keygen)",
                        n + 1
                    )))
                }
                Err(_) => {
                    return Err(bad(format!(
                        "line {} is not an age X25519 identity (AGE-SECRET-KEY-1…, as \
                         age-keygen writes it)",
                        n + 1
                    )))
                }
            }
        }
        if keys.is_empty() {
            return Err(bad(
                "holds no age identity (AGE-SECRET-KEY-1…, as age-keygen writes it)".into(),
            ));
        }
        Ok(Self {
            keys,
            sources: vec![source.to_string()],
        })
    }

    /// Adds `other`'s identities after these.
    pub fn extend(&mut self, other: Identities) {
        self.keys.extend(other.keys);
        self.sources.extend(other.sources);
    }

    /// Whether there is no identity.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// How many identities there are.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Where the identities came from (files, Secret keys), for messages.
    pub fn sources(&self) -> &[String] {
        &self.sources
    }

    /// The public recipients (`age1…`) of these identities.
    pub fn recipients(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| k.to_public().to_string())
            .collect()
    }

    /// Decrypts one armored (or binary) age file with any of these identities: SOPS's
    /// wrapped data key. `Ok(None)` when none of the identities is a recipient.
    pub fn unwrap(&self, armored: &[u8]) -> Result<Option<Zeroizing<Vec<u8>>>, String> {
        let reader = age::armor::ArmoredReader::new(armored);
        let decryptor =
            age::Decryptor::new_buffered(reader).map_err(|e| format!("not an age file: {e}"))?;
        let identities = self.keys.iter().map(|k| k as &dyn age::Identity);
        let mut out = Zeroizing::new(Vec::new());
        match decryptor.decrypt(identities) {
            Ok(mut reader) => {
                (&mut reader)
                    .take(1024)
                    .read_to_end(&mut out)
                    .map_err(|e| format!("cannot decrypt the age payload: {e}"))?;
                Ok(Some(out))
            }
            Err(age::DecryptError::NoMatchingKeys) => Ok(None),
            Err(e) => Err(format!("cannot decrypt: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> String {
        let key = x25519::Identity::generate().to_string();
        age::secrecy::ExposeSecret::expose_secret(&key).to_string()
    }

    #[test]
    fn parses_age_keygen_files_and_names_bad_lines_without_echoing_them() {
        let key = key();
        let text = format!(
            "# created: 2026-01-01T00:00:00Z\n# public key: age1…\n{key}\n\n{}\n",
            key.to_lowercase()
        );
        let ids = Identities::parse("keys.txt", text.as_bytes()).unwrap();
        assert_eq!(ids.len(), 2);
        assert_eq!(ids.recipients()[0], ids.recipients()[1]);
        assert!(ids.recipients()[0].starts_with("age1"));
        assert!(!format!("{ids:?}").contains("AGE-SECRET"));

        let err = Identities::parse("k", format!("{key}\nsecret-looking-line\n").as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(!err.contains("secret-looking-line"), "{err}");
        let err = Identities::parse("k", b"# only a comment\n").unwrap_err();
        assert!(err.to_string().contains("holds no age identity"), "{err}");
        let err = Identities::parse("k", b"AGE-PLUGIN-YUBIKEY-1QQQ\n").unwrap_err();
        assert!(err.to_string().contains("plugin"), "{err}");
    }

    #[test]
    fn unwraps_what_age_encrypted_for_one_of_several_recipients() {
        let mine = x25519::Identity::generate();
        let other = x25519::Identity::generate();
        let recipients: Vec<Box<dyn age::Recipient + Send>> =
            vec![Box::new(other.to_public()), Box::new(mine.to_public())];
        let encryptor =
            age::Encryptor::with_recipients(recipients.iter().map(|r| r.as_ref() as _)).unwrap();
        let mut armored = vec![];
        let mut writer = encryptor
            .wrap_output(
                age::armor::ArmoredWriter::wrap_output(
                    &mut armored,
                    age::armor::Format::AsciiArmor,
                )
                .unwrap(),
            )
            .unwrap();
        std::io::Write::write_all(&mut writer, &[7u8; 32]).unwrap();
        writer.finish().unwrap().finish().unwrap();

        let key = mine.to_string();
        let ids = Identities::parse(
            "k",
            age::secrecy::ExposeSecret::expose_secret(&key).as_bytes(),
        )
        .unwrap();
        assert_eq!(
            ids.unwrap(&armored).unwrap().unwrap().as_slice(),
            &[7u8; 32]
        );
        let stranger = x25519::Identity::generate().to_string();
        let stranger = Identities::parse(
            "k",
            age::secrecy::ExposeSecret::expose_secret(&stranger).as_bytes(),
        )
        .unwrap();
        assert!(stranger.unwrap(&armored).unwrap().is_none());
    }
}
