//! SOPS interop (issue 15): the real sops (getsops/sops v3, built by `scripts/peers.sh`)
//! encrypts fixtures at test time for keys made by Debian's `age-keygen`; tresor's
//! [`Decryption`] gets back the same values — YAML, JSON, dotenv and binary files, several
//! recipients, a rotated data key, `mac_only_encrypted` — and refuses tampered files,
//! naming them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::peers::peer;
use tresor::secrets::{Decryption, Identities, SecretsError};

/// A new age identity file in `dir` (Debian's age-keygen); its public recipient.
fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(&path)
        .output()
        .expect("age-keygen (Debian package age) must be installed");
    assert!(out.status.success(), "{out:?}");
    let recipient = Command::new("age-keygen")
        .arg("-y")
        .arg(&path)
        .output()
        .unwrap();
    (
        path,
        String::from_utf8(recipient.stdout)
            .unwrap()
            .trim()
            .to_string(),
    )
}

/// Runs sops in `dir` with `key` as its identity; stdout (which must succeed).
fn sops(dir: &Path, key: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new(peer("sops"))
        .args(args)
        .current_dir(dir)
        .env("SOPS_AGE_KEY_FILE", key)
        .env_remove("SOPS_AGE_RECIPIENTS")
        .env_remove("SOPS_AGE_KEY")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sops {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Writes `plain` to `dir/name` and encrypts it in place for `recipients`.
fn encrypt(dir: &Path, key: &Path, name: &str, plain: &[u8], extra: &[&str], recipients: &str) {
    std::fs::write(dir.join(name), plain).unwrap();
    let mut args = vec!["encrypt", "--in-place", "--age", recipients];
    args.extend_from_slice(extra);
    args.push(name);
    sops(dir, key, &args);
}

/// The YAML documents of `bytes` (sops and tresor indent YAML differently).
fn docs(bytes: &[u8]) -> Vec<serde_norway::Value> {
    serde_norway::Deserializer::from_slice(bytes)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

fn decryption(keys: &[&Path]) -> Decryption {
    let keys: Vec<PathBuf> = keys.iter().map(|k| k.to_path_buf()).collect();
    Decryption::new(
        Identities::read_files(&keys).unwrap(),
        "--age-identity FILE",
    )
}

fn decrypt(d: &Decryption, dir: &Path, name: &str) -> Result<Vec<u8>, SecretsError> {
    let bytes = std::fs::read(dir.join(name)).unwrap();
    d.decrypt_file(name, &bytes)
        .map(|plain| plain.expect("a sops file").to_vec())
}

const SECRET: &str = "apiVersion: v1
kind: Secret
metadata:
  name: db
  namespace: prod
  labels:
    app: db
type: Opaque
data:
  password: aHVudGVyMg==
  empty: ''
stringData:
  user: admin
  port: '5432'
  motd: |
    line one
    line two
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  replicas: '3'
";

#[test]
fn yaml_manifests_decrypt_to_what_sops_decrypts() {
    let dir = tempfile::tempdir().unwrap();
    let (key, recipient) = keygen(dir.path(), "key.txt");
    encrypt(
        dir.path(),
        &key,
        "secret.yaml",
        SECRET.as_bytes(),
        &["--encrypted-regex", "^(data|stringData)$"],
        &recipient,
    );
    let encrypted = std::fs::read_to_string(dir.path().join("secret.yaml")).unwrap();
    assert!(encrypted.contains("ENC[AES256_GCM,"), "{encrypted}");
    assert!(!encrypted.contains("aHVudGVyMg=="), "{encrypted}");
    // Identity fields stay readable for the manifest checks.
    assert!(encrypted.contains("name: db"), "{encrypted}");

    let ours = decrypt(&decryption(&[&key]), dir.path(), "secret.yaml").unwrap();
    let theirs = sops(dir.path(), &key, &["decrypt", "secret.yaml"]);
    let ours = docs(&ours);
    assert_eq!(ours, docs(&theirs));
    assert_eq!(ours, docs(SECRET.as_bytes()));
    assert_eq!(ours[0]["data"]["password"], "aHVudGVyMg==");
    assert_eq!(ours[0]["stringData"]["motd"], "line one\nline two\n");
    assert_eq!(ours[1]["data"]["replicas"], "3");
    assert!(ours[0].get("sops").is_none());
}

#[test]
fn json_with_every_value_type_decrypts() {
    let dir = tempfile::tempdir().unwrap();
    let (key, recipient) = keygen(dir.path(), "key.txt");
    let plain = serde_json::json!({
        "name": "api",
        "count": 3,
        "ratio": 0.25,
        "big": 1e21,
        "on": true,
        "off": false,
        "nothing": null,
        "list": ["a", 2, {"deep": "value"}],
        "nested": {"token": "s3cr3t", "note_unencrypted": "visible"},
    });
    encrypt(
        dir.path(),
        &key,
        "config.json",
        serde_json::to_string_pretty(&plain).unwrap().as_bytes(),
        &[],
        &recipient,
    );
    let encrypted = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
    assert!(encrypted.contains("\"visible\""), "{encrypted}");
    assert!(!encrypted.contains("s3cr3t"), "{encrypted}");
    let ours = decrypt(&decryption(&[&key]), dir.path(), "config.json").unwrap();
    let ours: serde_json::Value = serde_json::from_slice(&ours).unwrap();
    assert_eq!(ours, plain);
    let theirs: serde_json::Value =
        serde_json::from_slice(&sops(dir.path(), &key, &["decrypt", "config.json"])).unwrap();
    assert_eq!(ours, theirs);
}

#[test]
fn dotenv_and_binary_files_decrypt() {
    let dir = tempfile::tempdir().unwrap();
    let (key, recipient) = keygen(dir.path(), "key.txt");
    let env = "DB_PASSWORD=hunter2\n# a comment\nAPI_URL=https://api.example.com/v1?a=b\nMULTI=one\\ntwo\nEMPTY=\n";
    encrypt(dir.path(), &key, "app.env", env.as_bytes(), &[], &recipient);
    let encrypted = std::fs::read_to_string(dir.path().join("app.env")).unwrap();
    assert!(encrypted.contains("sops_mac="), "{encrypted}");
    assert!(!encrypted.contains("hunter2"));
    let d = decryption(&[&key]);
    let ours = String::from_utf8(decrypt(&d, dir.path(), "app.env").unwrap()).unwrap();
    assert_eq!(
        ours,
        "DB_PASSWORD=hunter2\nAPI_URL=https://api.example.com/v1?a=b\nMULTI=one\\ntwo\nEMPTY=\n"
    );
    let theirs = String::from_utf8(sops(dir.path(), &key, &["decrypt", "app.env"])).unwrap();
    // sops keeps the (decrypted) comment; values are the same.
    assert_eq!(theirs.replace("# a comment\n", ""), ours);

    // Not UTF-8, with every byte value: the binary store keeps them all.
    let blob: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    encrypt(dir.path(), &key, "tls.key", &blob, &[], &recipient);
    let wrapped = std::fs::read_to_string(dir.path().join("tls.key")).unwrap();
    assert!(wrapped.trim_start().starts_with('{'), "{wrapped}");
    assert_eq!(decrypt(&d, dir.path(), "tls.key").unwrap(), blob);
    assert_eq!(sops(dir.path(), &key, &["decrypt", "tls.key"]), blob);
}

#[test]
fn any_of_several_recipients_decrypts_and_a_stranger_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let (key1, r1) = keygen(dir.path(), "ci.txt");
    let (key2, r2) = keygen(dir.path(), "cluster.txt");
    let (stranger, _) = keygen(dir.path(), "stranger.txt");
    encrypt(
        dir.path(),
        &key1,
        "secret.yaml",
        SECRET.as_bytes(),
        &["--encrypted-regex", "^(data|stringData)$"],
        &format!("{r1},{r2}"),
    );
    let one = decrypt(&decryption(&[&key1]), dir.path(), "secret.yaml").unwrap();
    let two = decrypt(&decryption(&[&key2]), dir.path(), "secret.yaml").unwrap();
    assert_eq!(one, two);
    let both = decrypt(&decryption(&[&stranger, &key2]), dir.path(), "secret.yaml").unwrap();
    assert_eq!(both, one);

    let err = decrypt(&decryption(&[&stranger]), dir.path(), "secret.yaml").unwrap_err();
    assert_eq!(err.reason(), "AgeIdentityNotRecipient");
    let message = err.to_string();
    assert!(message.starts_with("secret.yaml: "), "{message}");
    assert!(message.contains(&r1) && message.contains(&r2), "{message}");

    let none = Decryption::none("--age-identity FILE");
    let err = decrypt(&none, dir.path(), "secret.yaml").unwrap_err();
    assert_eq!(err.reason(), "AgeIdentityMissing");
    assert!(err.to_string().contains("secret.yaml"), "{err}");
    assert!(err.to_string().contains("--age-identity FILE"), "{err}");
}

#[test]
fn a_rotated_data_key_decrypts_to_the_same_values() {
    let dir = tempfile::tempdir().unwrap();
    let (key, recipient) = keygen(dir.path(), "key.txt");
    encrypt(
        dir.path(),
        &key,
        "secret.yaml",
        SECRET.as_bytes(),
        &["--encrypted-regex", "^(data|stringData)$"],
        &recipient,
    );
    let before = std::fs::read_to_string(dir.path().join("secret.yaml")).unwrap();
    sops(dir.path(), &key, &["rotate", "--in-place", "secret.yaml"]);
    let after = std::fs::read_to_string(dir.path().join("secret.yaml")).unwrap();
    let enc = |text: &str| -> String {
        docs(text.as_bytes())[0]["sops"]["age"][0]["enc"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_ne!(
        enc(&before),
        enc(&after),
        "rotate changes the wrapped data key"
    );
    let d = decryption(&[&key]);
    let plain = decrypt(&d, dir.path(), "secret.yaml").unwrap();
    let docs = docs(&plain);
    assert_eq!(docs[0]["stringData"]["user"], "admin");
    assert_eq!(docs[0]["data"]["password"], "aHVudGVyMg==");
}

#[test]
fn mac_only_encrypted_files_decrypt() {
    let dir = tempfile::tempdir().unwrap();
    let (key, recipient) = keygen(dir.path(), "key.txt");
    std::fs::write(
        dir.path().join(".sops.yaml"),
        format!(
            "creation_rules:\n  - path_regex: .*\\.yaml$\n    encrypted_regex: ^(data|stringData)$\n    mac_only_encrypted: true\n    age: {recipient}\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("secret.yaml"), SECRET).unwrap();
    sops(dir.path(), &key, &["encrypt", "--in-place", "secret.yaml"]);
    let text = std::fs::read_to_string(dir.path().join("secret.yaml")).unwrap();
    assert!(text.contains("mac_only_encrypted: true"), "{text}");
    let plain = decrypt(&decryption(&[&key]), dir.path(), "secret.yaml").unwrap();
    assert_eq!(
        docs(&plain),
        docs(&sops(dir.path(), &key, &["decrypt", "secret.yaml"]))
    );
    assert_eq!(docs(&plain), docs(SECRET.as_bytes()));
    // Unencrypted fields are outside the MAC there: editing them is allowed, as in sops.
    std::fs::write(
        dir.path().join("secret.yaml"),
        text.replacen("app: db", "app: database", 1),
    )
    .unwrap();
    decrypt(&decryption(&[&key]), dir.path(), "secret.yaml").unwrap();
}

#[test]
fn tampered_values_and_macs_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (key, recipient) = keygen(dir.path(), "key.txt");
    encrypt(
        dir.path(),
        &key,
        "secret.yaml",
        SECRET.as_bytes(),
        &["--encrypted-regex", "^(data|stringData)$"],
        &recipient,
    );
    let good = std::fs::read_to_string(dir.path().join("secret.yaml")).unwrap();
    let d = decryption(&[&key]);
    let refused = |text: String, reason: &str| {
        std::fs::write(dir.path().join("secret.yaml"), text).unwrap();
        let err = decrypt(&d, dir.path(), "secret.yaml").unwrap_err();
        assert_eq!(err.reason(), reason, "{err}");
        assert!(err.to_string().starts_with("secret.yaml: "), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        err.to_string()
    };

    // One bit of one value's ciphertext.
    let at = good.find("password: ENC[AES256_GCM,data:").unwrap() + 30;
    let mut bytes = good.clone().into_bytes();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    let message = refused(String::from_utf8(bytes).unwrap(), "SopsValueTampered");
    assert!(message.contains("data.password"), "{message}");

    // Two encrypted values swapped: each is bound to its own path.
    let doc = &docs(good.as_bytes())[0];
    let user = doc["stringData"]["user"].as_str().unwrap().to_string();
    let port = doc["stringData"]["port"].as_str().unwrap().to_string();
    let swapped = good
        .replace(&user, "@USER@")
        .replace(&port, &user)
        .replace("@USER@", &port);
    refused(swapped, "SopsValueTampered");

    // A plaintext value in place of an encrypted one.
    let plain_in = good.replace(&user, "root");
    refused(plain_in, "SopsValueTampered");

    // A field outside the encrypted ones, but inside the MAC.
    refused(good.replacen("app: db", "app: evil", 1), "SopsMacMismatch");

    // The MAC itself.
    let mac_at = good.find("mac: ENC[AES256_GCM,data:").unwrap() + 26;
    let mut bytes = good.clone().into_bytes();
    bytes[mac_at] = if bytes[mac_at] == b'A' { b'B' } else { b'A' };
    refused(String::from_utf8(bytes).unwrap(), "SopsMacMismatch");

    // A document sops did not write, appended: it changes the MAC's input.
    refused(
        format!("{good}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: x}}\n"),
        "SopsMacMismatch",
    );

    std::fs::write(dir.path().join("secret.yaml"), &good).unwrap();
    decrypt(&d, dir.path(), "secret.yaml").unwrap();
}

/// Every file under `dir` (recursively), decompressing gzip blobs: what is on disk there,
/// as bytes.
fn contents_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                let bytes = std::fs::read(&path).unwrap();
                let mut plain = Vec::new();
                if bytes.starts_with(&[0x1f, 0x8b]) {
                    use std::io::Read as _;
                    flate2::read::GzDecoder::new(bytes.as_slice())
                        .read_to_end(&mut plain)
                        .unwrap();
                }
                out.push((path.clone(), bytes));
                if !plain.is_empty() {
                    out.push((path, plain));
                }
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// `tresor sync --age-identity` (issue 15): the host agent writes decrypted files with mode
/// 0600 into the target directory; the cache and tresor's state hold only ciphertext; an
/// edited decrypted file is restored decrypted; without an identity the version is refused
/// naming the file and the flag.
#[test]
fn host_sync_writes_decrypted_files_0600_and_keeps_the_cache_encrypted() {
    use std::os::unix::fs::PermissionsExt as _;
    let registry = common::TestRegistry::plain();
    let src = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let (key, recipient) = keygen(keys.path(), "host.txt");
    let env = "DB_PASSWORD=hunter2-host\nAPI_TOKEN=tok-4f9a\n";
    encrypt(src.path(), &key, "app.env", env.as_bytes(), &[], &recipient);
    std::fs::create_dir(src.path().join("tls")).unwrap();
    let pem = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----\n";
    encrypt(
        &src.path().join("tls"),
        &key,
        "server.key",
        pem.as_bytes(),
        &[],
        &recipient,
    );
    std::fs::write(
        src.path().join("compose.yaml"),
        "services: {web: {image: nginx}}\n",
    )
    .unwrap();
    let tagged = format!("{}:v1", registry.repo("sops-sync"));
    common::stdout_of(registry.tresor(&[
        "push",
        src.path().to_str().unwrap(),
        &tagged,
        "--content",
        "files",
    ]));

    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("site");
    let cache = work.path().join("cache");
    let sync = |extra: &[&str]| {
        let mut cmd = common::tresor();
        cmd.args(["sync", &tagged, "--dir", dir.to_str().unwrap(), "--once"])
            .args(["--allow-unsigned", "--cache-dir", cache.to_str().unwrap()])
            .args(&registry.flags)
            .args(extra);
        cmd.output().unwrap()
    };

    // Without an identity: refused, nothing switched in, the file and the flag named.
    let out = sync(&[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("app.env"), "{said}");
    assert!(said.contains("--age-identity"), "{said}");
    assert!(!dir.exists(), "nothing is switched in");

    let out = sync(&["--age-identity", key.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(std::fs::read_to_string(dir.join("app.env")).unwrap(), env);
    assert_eq!(
        std::fs::read_to_string(dir.join("tls/server.key")).unwrap(),
        pem
    );
    assert_eq!(mode(&dir.join("app.env")), 0o600);
    assert_eq!(mode(&dir.join("tls/server.key")), 0o600);
    assert_eq!(mode(&dir.join("compose.yaml")), 0o644);

    // The cache (blobs decompressed too) and everything but the decrypted files themselves
    // hold no plaintext.
    let secrets = ["hunter2-host", "tok-4f9a", "c2VjcmV0LWtleS1ieXRlcw=="];
    let cached = contents_under(&cache);
    assert!(
        cached.iter().any(|(_, b)| contains(b, "ENC[AES256_GCM,")),
        "the layer is cached"
    );
    for (path, bytes) in cached.iter().chain(&contents_under(work.path())) {
        let decrypted_copy = path.ends_with("app.env") || path.ends_with("tls/server.key");
        if path.starts_with(&cache) || !decrypted_copy {
            for secret in secrets {
                assert!(!contains(bytes, secret), "{secret} in {}", path.display());
            }
        }
    }

    // Drift: an edited decrypted file comes back decrypted, still 0600.
    std::fs::write(dir.join("app.env"), "DB_PASSWORD=changed\n").unwrap();
    let out = sync(&["--age-identity", key.to_str().unwrap(), "--format", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["outcome"], "DriftCorrected", "{summary}");
    assert_eq!(
        summary["restored"],
        serde_json::json!(["app.env"]),
        "{summary}"
    );
    assert_eq!(std::fs::read_to_string(dir.join("app.env")).unwrap(), env);
    assert_eq!(mode(&dir.join("app.env")), 0o600);
}

/// `tresor lint` (issue 15): a Secret sops encrypted is not `plaintext-secret`; one whose
/// metadata says a value is encrypted while it is in plain text is `sops-plaintext-value`,
/// honouring the file's encryption rule; a plain Secret is still `plaintext-secret`.
#[test]
fn lint_knows_sops_encrypted_secrets_and_plaintext_among_them() {
    let dir = tempfile::tempdir().unwrap();
    let (key, recipient) = keygen(dir.path(), "key.txt");
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    encrypt(
        &tree,
        &key,
        "secret.yaml",
        SECRET.as_bytes(),
        &["--encrypted-regex", "^(data|stringData)$"],
        &recipient,
    );
    let suffix = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: suffixed\nstringData:\n  token: t0k3n\n  note_unencrypted: visible\n";
    encrypt(
        &tree,
        &key,
        "suffixed.yaml",
        suffix.as_bytes(),
        &[
            "--unencrypted-regex",
            "^(apiVersion|kind|metadata|name|note_unencrypted)$",
        ],
        &recipient,
    );
    let lint = |tree: &Path| -> serde_json::Value {
        let out = common::tresor()
            .args(["lint", tree.to_str().unwrap(), "--format", "json"])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)))
    };
    let findings = |report: &serde_json::Value| -> Vec<(String, String, String)> {
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["rule"].as_str().unwrap().to_string(),
                    f["file"].as_str().unwrap().to_string(),
                    f["path"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    };
    let clean = lint(&tree);
    assert_eq!(findings(&clean), vec![], "{clean}");

    // A value added in plain text after encryption, one edited into plain text, and a value
    // the rule leaves unencrypted.
    let text = std::fs::read_to_string(tree.join("secret.yaml")).unwrap();
    let doc = &docs(text.as_bytes())[0];
    let user = doc["stringData"]["user"].as_str().unwrap().to_string();
    let edited =
        text.replace(&user, "root")
            .replacen("\ndata:\n", "\ndata:\n    added: c2VjcmV0\n", 1);
    std::fs::write(tree.join("secret.yaml"), edited).unwrap();
    std::fs::write(
        tree.join("plain.yaml"),
        "apiVersion: v1\nkind: Secret\nmetadata: {name: plain}\nstringData: {a: b}\n",
    )
    .unwrap();
    let report = lint(&tree);
    let mut got = findings(&report);
    got.sort();
    assert_eq!(
        got,
        vec![
            (
                "plaintext-secret".into(),
                "plain.yaml".into(),
                "stringData".into()
            ),
            (
                "sops-plaintext-value".into(),
                "secret.yaml".into(),
                "data.added".into()
            ),
            (
                "sops-plaintext-value".into(),
                "secret.yaml".into(),
                "stringData.user".into()
            ),
        ],
        "{report}"
    );
    let finding = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "stringData.user")
        .unwrap();
    let message = finding["message"].as_str().unwrap();
    assert!(message.contains("encrypted_regex"), "{message}");
    assert!(!message.contains("root"), "{message}");
    assert_eq!(finding["severity"], "error");
}
