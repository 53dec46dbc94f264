//! Signing and verification end to end: keygen, sign, verify, pull's trust gate, on an OCI
//! layout and the real local registries; cosign's own vectors; bad input.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use common::{fixture_tree, json_of, stderr_of_failure, stdout_of, tresor, TestRegistry};
use tresor::artifact::format::{
    Descriptor, ImageManifest, DOCKER_MANIFEST_MEDIA_TYPE, OCI_MANIFEST_MEDIA_TYPE,
};
use tresor::digest::Digest;
use tresor::registry::layout::LayoutRepository;
use tresor::registry::ManifestRef;
use tresor::signing::keys::{self, PrivateKey};
use tresor::signing::legacy::{signature_tag, SIGNATURE_ANNOTATION};
use tresor::signing::payload::{self, SIMPLE_SIGNING_MEDIA_TYPE};

const PASSWORD: &str = "test-password";

fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(rel)
}

/// `tresor` with COSIGN_PASSWORD set.
fn tresor_pw(args: &[&str]) -> assert_cmd::Command {
    let mut cmd = tresor();
    cmd.env("COSIGN_PASSWORD", PASSWORD).args(args);
    cmd
}

/// A key pair in `dir/name/` (cosign.key, cosign.pub), written by the library.
fn keypair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    let files = keys::write_key_pair(&d, PASSWORD.as_bytes()).unwrap();
    (files.private_key, files.public_key)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Pushes the fixture tree to `reference` (extra flags appended); returns the digest.
fn push(reference: &str, flags: &[String]) -> String {
    let mut cmd = tresor();
    cmd.args(["push", s(&fixture_tree()), reference, "--format", "json"])
        .args(["--source", "https://example.com/acme/app"])
        .args([
            "--revision",
            "main@sha1:0123456789abcdef0123456789abcdef01234567",
        ])
        .args(flags);
    json_of(cmd)["digest"].as_str().unwrap().to_string()
}

fn layout_ref(dir: &Path, tag: &str) -> String {
    format!("oci-layout:{}:{tag}", dir.display())
}

/// Layers of the `.sig` manifest of `digest` in a layout.
fn sig_layers(layout: &Path, digest: &str) -> Vec<Descriptor> {
    let repo = LayoutRepository::new(layout);
    let digest: Digest = digest.parse().unwrap();
    let tag = signature_tag(&digest);
    let fetched = repo.fetch_manifest(ManifestRef::Tag(&tag)).unwrap();
    let manifest: ImageManifest = serde_json::from_slice(&fetched.bytes).unwrap();
    manifest.layers
}

/// Writes a `.sig` manifest for `digest` holding exactly `layers` (payload, signature).
fn put_sig(layout: &Path, digest: &Digest, layers: &[(Vec<u8>, Option<String>)]) {
    let repo = LayoutRepository::new(layout);
    let mut descriptors = Vec::new();
    for (payload, signature) in layers {
        let mut d = Descriptor::for_bytes(SIMPLE_SIGNING_MEDIA_TYPE, payload);
        if let Some(sig) = signature {
            d.annotations
                .insert(SIGNATURE_ANNOTATION.to_string(), sig.clone());
        }
        repo.push_blob(&d.digest, payload).unwrap();
        descriptors.push(d);
    }
    let config = Descriptor::for_bytes("application/vnd.oci.image.config.v1+json", b"{}");
    repo.push_blob(&config.digest, b"{}").unwrap();
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST_MEDIA_TYPE.into()),
        artifact_type: None,
        config,
        layers: descriptors,
        subject: None,
        annotations: BTreeMap::new(),
    };
    repo.push_manifest(
        OCI_MANIFEST_MEDIA_TYPE,
        &manifest.to_bytes(),
        Some(&signature_tag(digest)),
    )
    .unwrap();
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

#[test]
fn keygen_creates_a_missing_output_directory() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("new/keys");
    stdout_of(tresor_pw(&["keygen", "--output-dir", s(&dir)]));
    assert!(dir.join("cosign.key").is_file());
    assert!(dir.join("cosign.pub").is_file());
}

#[test]
fn apply_and_sync_refuse_to_start_without_trust_material() {
    let work = tempfile::tempdir().unwrap();
    let reference = format!("oci-layout:{}:v1", work.path().join("layout").display());
    for args in [
        vec!["apply", reference.as_str()],
        vec![
            "sync",
            reference.as_str(),
            "--dir",
            s(work.path()),
            "--once",
        ],
    ] {
        let err = stderr_of_failure(tresor().args(&args), 1);
        assert!(
            err.contains("no trust material") && err.contains("--trust-policy"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn keygen_writes_cosign_key_files_and_refuses_to_overwrite() {
    let work = tempfile::tempdir().unwrap();
    let out = json_of(tresor_pw(&[
        "keygen",
        "--output-dir",
        s(work.path()),
        "--format",
        "json",
    ]));
    let private = work.path().join("cosign.key");
    let public = work.path().join("cosign.pub");
    let key_text = std::fs::read_to_string(&private).unwrap();
    assert!(key_text.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----"));
    assert_eq!(
        std::fs::metadata(&private).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(std::fs::read_to_string(&public)
        .unwrap()
        .starts_with("-----BEGIN PUBLIC KEY-----"));
    // The files load, and the printed fingerprint is the public key's.
    let key = PrivateKey::from_file(&private, PASSWORD.as_bytes()).unwrap();
    let pubkey = keys::PublicKey::from_file(&public).unwrap();
    assert_eq!(key.public_key().fingerprint(), pubkey.fingerprint());
    assert_eq!(out["fingerprint"], pubkey.fingerprint());

    let err = stderr_of_failure(tresor_pw(&["keygen", "--output-dir", s(work.path())]), 2);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(std::fs::read_to_string(&private).unwrap(), key_text);

    // Without COSIGN_PASSWORD and without a terminal there is no password: a clear error.
    let other = tempfile::tempdir().unwrap();
    let mut cmd = tresor();
    cmd.env_remove("COSIGN_PASSWORD")
        .args(["keygen", "--output-dir", s(other.path())]);
    let err = stderr_of_failure(cmd, 2);
    assert!(err.contains("COSIGN_PASSWORD"), "{err}");
    assert!(!other.path().join("cosign.key").exists());
}

#[test]
fn sign_and_verify_on_a_layout() {
    let work = tempfile::tempdir().unwrap();
    let (key_a, pub_a) = keypair(work.path(), "a");
    let (_, pub_b) = keypair(work.path(), "b");
    let layout = work.path().join("layout");
    let reference = layout_ref(&layout, "v1");
    let digest = push(&reference, &[]);

    let signed = json_of(tresor_pw(&[
        "sign",
        &reference,
        "--key",
        s(&key_a),
        "--format",
        "json",
    ]));
    assert_eq!(signed["digest"], digest.as_str());
    assert_eq!(signed["added"], true);

    let v = json_of(tresor().args(["verify", &reference, "--key", s(&pub_a), "--format", "json"]));
    assert_eq!(v["verified"], true);
    assert_eq!(v["digest"], digest.as_str());
    let fingerprint = keys::PublicKey::from_file(&pub_a).unwrap();
    assert_eq!(
        v["signatures"][0]["signer"]["fingerprint"],
        fingerprint.fingerprint()
    );
    assert_eq!(v["provenance"]["source"], "https://example.com/acme/app");
    assert_eq!(
        v["provenance"]["revision"],
        "main@sha1:0123456789abcdef0123456789abcdef01234567"
    );
    assert!(v["provenance"]["created"].as_str().unwrap().ends_with('Z'));

    let text = stdout_of(tresor().args(["verify", &reference, "--key", s(&pub_a)]));
    assert!(
        text.contains(&format!("key sha256:{}", fingerprint.fingerprint())),
        "{text}"
    );
    assert!(text.contains("https://example.com/acme/app"), "{text}");

    // Another key: not verified, exit 1, JSON says why.
    let err = stderr_of_failure(tresor().args(["verify", &reference, "--key", s(&pub_b)]), 1);
    assert!(
        err.contains("no valid signature from a trusted authority"),
        "{err}"
    );
    let out = tresor()
        .args(["verify", &reference, "--key", s(&pub_b), "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["verified"], false);
    assert_eq!(doc["reason"], "SignatureInvalid");

    // The payload tresor stored is cosign's layout for this digest.
    let layers = sig_layers(&layout, &digest);
    assert_eq!(layers.len(), 1);
    let stored = std::fs::read(layout.join("blobs/sha256").join(layers[0].digest.hex())).unwrap();
    let expected = payload::simple_signing("localhost/layout", &digest.parse().unwrap());
    assert_eq!(stored, expected);
}

#[test]
fn two_signers_append_and_require_all() {
    let work = tempfile::tempdir().unwrap();
    let (key_a, pub_a) = keypair(work.path(), "a");
    let (key_b, pub_b) = keypair(work.path(), "b");
    let layout = work.path().join("layout");
    let reference = layout_ref(&layout, "v1");
    let digest = push(&reference, &[]);

    stdout_of(tresor_pw(&["sign", &reference, "--key", s(&key_a)]));
    let both = ["verify", &reference, "--key", s(&pub_a), "--key", s(&pub_b)];
    // Only A signed: `all` fails with a policy error naming B, `any` passes.
    let mut cmd = tresor();
    cmd.args(both).args(["--require", "all"]);
    let err = stderr_of_failure(cmd, 1);
    assert!(
        err.contains("trust policy not satisfied: requires all (2), satisfied by 1"),
        "{err}"
    );
    assert!(err.contains(&format!("{}", pub_b.display())), "{err}");
    stdout_of(tresor().args(both).args(["--require", "any"]));

    stdout_of(tresor_pw(&["sign", &reference, "--key", s(&key_b)]));
    let layers = sig_layers(&layout, &digest);
    assert_eq!(layers.len(), 2, "the first signature survives the second");
    let v = json_of(
        tresor()
            .args(both)
            .args(["--require", "all", "--format", "json"]),
    );
    assert_eq!(v["satisfied"].as_array().unwrap().len(), 2);
    stdout_of(tresor().args(both).args(["--require", "2"]));

    // Signing again with the same key adds nothing (deterministic signature, same layer).
    let again = json_of(tresor_pw(&[
        "sign",
        &reference,
        "--key",
        s(&key_a),
        "--format",
        "json",
    ]));
    assert_eq!(again["added"], false);
    assert_eq!(sig_layers(&layout, &digest), layers);

    // `--require 3` with two keys is a usage error (exit 2), not "unverified".
    let mut cmd = tresor();
    cmd.args(both).args(["--require", "3"]);
    let err = stderr_of_failure(cmd, 2);
    assert!(err.contains("require: 3 but there are 2"), "{err}");
}

#[test]
fn push_with_sign_key_signs_and_pull_verifies_before_download() {
    let work = tempfile::tempdir().unwrap();
    let (key_a, pub_a) = keypair(work.path(), "a");
    let (_, pub_b) = keypair(work.path(), "b");
    let layout = work.path().join("layout");
    let reference = layout_ref(&layout, "v1");
    let mut cmd = tresor_pw(&[]);
    cmd.args([
        "push",
        s(&fixture_tree()),
        &reference,
        "--sign-key",
        s(&key_a),
    ])
    .args(["--format", "json"]);
    let pushed = json_of(cmd);
    assert_eq!(pushed["signature"]["added"], true);

    let out = work.path().join("out");
    stdout_of(tresor().args(["pull", &reference, "-o", s(&out), "--key", s(&pub_a)]));
    assert_eq!(common::read_tree(&out), common::read_tree(&fixture_tree()));

    let out_b = work.path().join("out-b");
    let err = stderr_of_failure(
        tresor().args(["pull", &reference, "-o", s(&out_b), "--key", s(&pub_b)]),
        1,
    );
    assert!(err.contains("no valid signature"), "{err}");
    assert!(!out_b.exists());
}

#[test]
fn unsigned_artifact_pull_fails_closed_and_writes_nothing() {
    let work = tempfile::tempdir().unwrap();
    let (_, pub_a) = keypair(work.path(), "a");
    let layout = work.path().join("layout");
    let reference = layout_ref(&layout, "v1");
    push(&reference, &[]);
    let out = work.path().join("out");

    let err = stderr_of_failure(tresor().args(["pull", &reference, "-o", s(&out)]), 1);
    assert!(err.contains("no trust material"), "{err}");
    let err = stderr_of_failure(
        tresor().args(["pull", &reference, "-o", s(&out), "--key", s(&pub_a)]),
        1,
    );
    assert!(err.contains("is not signed"), "{err}");
    // Trust material wins over --allow-unsigned.
    stderr_of_failure(
        tresor().args([
            "pull",
            &reference,
            "-o",
            s(&out),
            "--key",
            s(&pub_a),
            "--allow-unsigned",
        ]),
        1,
    );
    assert!(!out.exists());
    let err = stderr_of_failure(tresor().args(["verify", &reference, "--key", s(&pub_a)]), 1);
    assert!(err.contains("is not signed"), "{err}");
    // verify without trust material is a usage error.
    stderr_of_failure(tresor().args(["verify", &reference]), 2);
}

#[test]
fn sign_verify_pull_on_the_registries() {
    let work = tempfile::tempdir().unwrap();
    let (key_a, pub_a) = keypair(work.path(), "a");
    let (key_b, pub_b) = keypair(work.path(), "b");
    for registry in TestRegistry::all() {
        let reference = format!("{}:v1", registry.repo("signing"));
        let digest = push(&reference, &registry.flags);
        let unsigned_out = work.path().join(format!("unsigned-{}", registry.name));
        stderr_of_failure(
            registry.tresor(&[
                "pull",
                &reference,
                "-o",
                s(&unsigned_out),
                "--key",
                s(&pub_a),
            ]),
            1,
        );
        assert!(!unsigned_out.exists());

        let mut sign = registry.tresor(&["sign", &reference, "--key", s(&key_a)]);
        sign.env("COSIGN_PASSWORD", PASSWORD);
        stdout_of(sign);
        stdout_of(registry.tresor(&["verify", &reference, "--key", s(&pub_a)]));
        stderr_of_failure(
            registry.tresor(&["verify", &reference, "--key", s(&pub_b)]),
            1,
        );

        let all = [
            "verify",
            &reference,
            "--key",
            s(&pub_a),
            "--key",
            s(&pub_b),
            "--require",
            "all",
        ];
        stderr_of_failure(registry.tresor(&all), 1);
        let mut sign = registry.tresor(&["sign", &reference, "--key", s(&key_b)]);
        sign.env("COSIGN_PASSWORD", PASSWORD);
        stdout_of(sign);
        let v = json_of(registry.tresor(&all).args(["--format", "json"]));
        assert_eq!(v["digest"], digest.as_str(), "{}", registry.name);
        assert_eq!(v["signatures"].as_array().unwrap().len(), 2);
        // Identical re-sign: still two layers.
        let mut sign =
            registry.tresor(&["sign", &reference, "--key", s(&key_b), "--format", "json"]);
        sign.env("COSIGN_PASSWORD", PASSWORD);
        assert_eq!(json_of(sign)["signatures"], 2);

        let out = work.path().join(format!("out-{}", registry.name));
        stdout_of(registry.tresor(&[
            "pull",
            &reference,
            "-o",
            s(&out),
            "--key",
            s(&pub_a),
            "--key",
            s(&pub_b),
            "--require",
            "all",
        ]));
        assert_eq!(common::read_tree(&out), common::read_tree(&fixture_tree()));
    }
}

/// Builds an OCI layout from a containers/image cosign fixture: the signed manifest (its
/// blobs absent) tagged `signed`, and a `.sig` manifest holding the fixture layers.
fn cosign_fixture_layout(dir: &Path, manifest: &Path, signatures: &[PathBuf]) -> String {
    let repo = LayoutRepository::new(dir);
    let manifest_bytes = std::fs::read(manifest).unwrap();
    let digest = repo
        .push_manifest(DOCKER_MANIFEST_MEDIA_TYPE, &manifest_bytes, Some("signed"))
        .unwrap();
    let mut layers = Vec::new();
    for path in signatures {
        let raw = std::fs::read(path).unwrap();
        let json = raw.strip_prefix(b"\x00sigstore-json\n".as_slice()).unwrap();
        let doc: serde_json::Value = serde_json::from_slice(json).unwrap();
        assert_eq!(doc["mimeType"], SIMPLE_SIGNING_MEDIA_TYPE);
        let payload = base64::engine::general_purpose::STANDARD
            .decode(doc["payload"].as_str().unwrap())
            .unwrap();
        let signature = doc["annotations"][SIGNATURE_ANNOTATION]
            .as_str()
            .unwrap()
            .to_string();
        layers.push((payload, Some(signature)));
    }
    put_sig(dir, &digest, &layers);
    layout_ref(dir, "signed")
}

#[test]
fn cosign_legacy_vectors_give_the_expected_results() {
    let legacy = testdata("cosign/legacy");
    let cosign_pub = legacy.join("cosign.pub");
    let work = tempfile::tempdir().unwrap();
    let verify = |reference: &str| {
        let mut cmd = tresor();
        cmd.args(["verify", reference, "--key", s(&cosign_pub)]);
        cmd
    };

    let valid = cosign_fixture_layout(
        &work.path().join("valid"),
        &legacy.join("valid/manifest.json"),
        &[legacy.join("valid/signature-1")],
    );
    assert!(valid.ends_with(":signed"));
    let v = json_of(verify(&valid).args(["--format", "json"]));
    assert_eq!(
        v["digest"],
        "sha256:634a8f35b5f16dcf4aaa0822adc0b1964bb786fca12f6831de8ddc45e5986a00"
    );
    assert_eq!(v["signatures"].as_array().unwrap().len(), 1);

    let valid2 = cosign_fixture_layout(
        &work.path().join("valid-2"),
        &legacy.join("valid-2/manifest.json"),
        &[
            legacy.join("valid-2/signature-1"),
            legacy.join("valid-2/signature-2"),
        ],
    );
    let v = json_of(verify(&valid2).args(["--format", "json"]));
    let sources: Vec<&str> = v["signatures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources.len(), 2, "both layers valid: {sources:?}");

    let modified = cosign_fixture_layout(
        &work.path().join("modified"),
        &legacy.join("modified-manifest/manifest.json"),
        &[legacy.join("modified-manifest/signature-1")],
    );
    let err = stderr_of_failure(verify(&modified), 1);
    assert!(
        err.contains("signature payload digest does not match"),
        "{err}"
    );
    assert!(err.contains("sha256:d9dcafdb"), "{err}");
    assert!(err.contains("sha256:634a8f35"), "{err}");

    let unknown = cosign_fixture_layout(
        &work.path().join("unknown"),
        &legacy.join("valid/manifest.json"),
        &[legacy.join("unknown-key.signature")],
    );
    let err = stderr_of_failure(verify(&unknown), 1);
    assert!(
        err.contains("no valid signature from a trusted authority"),
        "{err}"
    );

    // The signed image's own blobs are absent: verification did not need them.
    assert!(!work
        .path()
        .join("valid/blobs/sha256/9d16cba9fb961d1aafec9542f2bf7cb64acfc55245f9e4eb5abecd4cdc38d749")
        .exists());
}

#[test]
fn cosign_key_vectors_load_sign_and_verify() {
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let reference = layout_ref(&layout, "v1");
    push(&reference, &[]);
    for (file, password) in [
        ("cosign-generated-empty-password.key", ""),
        ("ecdsa-password-123.key", "123"),
    ] {
        let path = testdata("cosign/keys").join(file);
        let key = PrivateKey::from_file(&path, password.as_bytes()).unwrap();
        let public = work.path().join(format!("{file}.pub"));
        std::fs::write(&public, key.public_key().to_pem()).unwrap();

        let mut cmd = tresor();
        cmd.env("COSIGN_PASSWORD", password)
            .args(["sign", &reference, "--key", s(&path)]);
        stdout_of(cmd);
        stdout_of(tresor().args(["verify", &reference, "--key", s(&public)]));

        // Wrong password: a clear error, nothing signed.
        let mut cmd = tresor();
        cmd.env("COSIGN_PASSWORD", "not-the-password").args([
            "sign",
            &reference,
            "--key",
            s(&path),
        ]);
        let err = stderr_of_failure(cmd, 2);
        assert!(err.contains("wrong password"), "{err}");
        assert!(!err.contains("not-the-password"), "password leaked: {err}");
    }
}

#[test]
fn bad_keys_give_clear_errors() {
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let reference = layout_ref(&layout, "v1");
    push(&reference, &[]);
    let sign_with = |key: &Path| {
        let mut cmd = tresor_pw(&["sign", &reference, "--key", s(key)]);
        cmd.env("COSIGN_PASSWORD", PASSWORD);
        stderr_of_failure(cmd, 2)
    };

    // Corrupt: truncated ciphertext, not PEM, a public key where a private key belongs.
    let good = keys::generate(PASSWORD.as_bytes()).unwrap();
    let corrupt = work.path().join("corrupt.key");
    let text = good.private_pem.to_string();
    let lines: Vec<&str> = text.lines().collect();
    let damaged = [&lines[..2], &lines[lines.len() - 1..]].concat().join("\n");
    std::fs::write(&corrupt, damaged).unwrap();
    let err = sign_with(&corrupt);
    assert!(err.contains("not a usable key file"), "{err}");
    std::fs::write(&corrupt, "hello").unwrap();
    assert!(sign_with(&corrupt).contains("not PEM"));
    let public = work.path().join("p.pub");
    std::fs::write(&public, good.public.to_pem()).unwrap();
    assert!(sign_with(&public).contains("this is a public key"));

    // Ed25519, RSA, P-384 in cosign's encrypted format: named in the error.
    for (name, found) in [
        ("ed25519", "Ed25519"),
        ("rsa", "RSA"),
        ("p384", "ECDSA P-384"),
    ] {
        let pem_text =
            std::fs::read_to_string(testdata(&format!("signing/{name}.pkcs8.pem"))).unwrap();
        let der = pem::parse(pem_text).unwrap().into_contents();
        let sealed = keys::encrypt_pkcs8(&der, PASSWORD.as_bytes()).unwrap();
        let path = work.path().join(format!("{name}.key"));
        std::fs::write(&path, sealed.as_bytes()).unwrap();
        let err = sign_with(&path);
        assert!(
            err.contains(&format!("{found} keys are not supported")) && err.contains("P-256"),
            "{err}"
        );
        let public = testdata(&format!("signing/{name}.pub"));
        let err = stderr_of_failure(
            tresor().args(["verify", &reference, "--key", s(&public)]),
            2,
        );
        assert!(
            err.contains(&format!("{found} keys are not supported")),
            "{err}"
        );
    }
}

#[test]
fn tampered_foreign_and_malformed_signatures_are_rejected() {
    let work = tempfile::tempdir().unwrap();
    let (key_path, pub_path) = keypair(work.path(), "a");
    let key = PrivateKey::from_file(&key_path, PASSWORD.as_bytes()).unwrap();
    let layout = work.path().join("layout");
    let reference = layout_ref(&layout, "v1");
    let digest: Digest = push(&reference, &[]).parse().unwrap();
    let verify = || {
        let mut cmd = tresor();
        cmd.args([
            "verify",
            &reference,
            "--key",
            s(&pub_path),
            "--format",
            "json",
        ]);
        cmd
    };
    let reason = |cmd: assert_cmd::Command| {
        let mut cmd = cmd;
        let out = cmd.output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (
            doc["reason"].as_str().unwrap().to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let good = payload::simple_signing("localhost/layout", &digest);

    // Tampered payload: the signature was over other bytes.
    let mut tampered = good.clone();
    tampered.push(b' ');
    put_sig(&layout, &digest, &[(tampered, Some(b64(&key.sign(&good))))]);
    assert_eq!(reason(verify()).0, "SignatureInvalid");

    // A valid signature by the trusted key, but for another digest.
    let other = Digest::of(b"another manifest");
    let foreign = payload::simple_signing("localhost/layout", &other);
    put_sig(
        &layout,
        &digest,
        &[(foreign.clone(), Some(b64(&key.sign(&foreign))))],
    );
    let (r, err) = reason(verify());
    assert_eq!(r, "PayloadDigestMismatch");
    assert!(
        err.contains(&other.to_string()) && err.contains(&digest.to_string()),
        "{err}"
    );

    // The annotation is not base64 / missing.
    put_sig(
        &layout,
        &digest,
        &[(good.clone(), Some("!!not base64!!".into()))],
    );
    let (r, err) = reason(verify());
    assert_eq!(r, "BadSignatureEncoding");
    assert!(err.contains("not base64"), "{err}");
    put_sig(&layout, &digest, &[(good.clone(), None)]);
    assert_eq!(reason(verify()).0, "BadSignatureEncoding");

    // A signed payload that is not a simple-signing document.
    let junk = b"{\"hello\":1}".to_vec();
    put_sig(
        &layout,
        &digest,
        &[(junk.clone(), Some(b64(&key.sign(&junk))))],
    );
    assert_eq!(reason(verify()).0, "InvalidPayload");

    // One bad layer does not hide a good one.
    put_sig(
        &layout,
        &digest,
        &[
            (b"junk".to_vec(), Some("!!".into())),
            (good.clone(), Some(b64(&key.sign(&good)))),
        ],
    );
    stdout_of(verify());

    // 5,000 layers: refused, bounded.
    let layers: Vec<(Vec<u8>, Option<String>)> = (0..5000)
        .map(|i| (format!("{i}").into_bytes(), Some("AAAA".to_string())))
        .collect();
    put_sig(&layout, &digest, &layers);
    let (r, err) = reason(verify());
    assert_eq!(r, "TooManySignatures");
    assert!(err.contains("5000 signature layers"), "{err}");
}

#[test]
fn verify_and_pull_with_a_policy_file() {
    let work = tempfile::tempdir().unwrap();
    let (key_a, pub_a) = keypair(work.path(), "a");
    let (key_b, _) = keypair(work.path(), "b");
    let layout = work.path().join("layout");
    let reference = layout_ref(&layout, "v1");
    push(&reference, &[]);
    let pub_b_pem = std::fs::read_to_string(work.path().join("b/cosign.pub")).unwrap();
    let indented: String = pub_b_pem
        .lines()
        .map(|l| format!("          {l}\n"))
        .collect();
    let policy = work.path().join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "apiVersion: tresor.dev/v1alpha1\nkind: TrustPolicy\nmetadata:\n  name: prod\nspec:\n  \
             authorities:\n    - name: ci\n      key:\n        path: a/cosign.pub\n    - name: \
             security\n      key:\n        data: |\n{indented}  require: all\n"
        ),
    )
    .unwrap();
    assert!(pub_a.exists());

    stdout_of(tresor_pw(&["sign", &reference, "--key", s(&key_a)]));
    let mut cmd = tresor();
    cmd.args(["verify", &reference, "--policy", s(&policy)]);
    let err = stderr_of_failure(cmd, 1);
    assert!(err.contains("security (key sha256:"), "{err}");
    assert!(err.contains("no valid signature"), "{err}");

    stdout_of(tresor_pw(&["sign", &reference, "--key", s(&key_b)]));
    let v = json_of(tresor().args([
        "verify",
        &reference,
        "--policy",
        s(&policy),
        "--format",
        "json",
    ]));
    assert_eq!(v["satisfied"], serde_json::json!(["ci", "security"]));
    let out = work.path().join("out");
    stdout_of(tresor().args([
        "pull",
        &reference,
        "-o",
        s(&out),
        "--trust-policy",
        s(&policy),
    ]));
    assert!(out.join("namespace.yaml").exists());

    // --policy and --key do not mix.
    stderr_of_failure(
        tresor().args([
            "verify",
            &reference,
            "--policy",
            s(&policy),
            "--key",
            s(&pub_a),
        ]),
        2,
    );
    // A keyless authority whose trusted root does not exist: exit 2, naming the file.
    let keyless = work.path().join("keyless.yaml");
    std::fs::write(
        &keyless,
        "apiVersion: tresor.dev/v1alpha1\nkind: TrustPolicy\nspec:\n  authorities:\n    - name: \
         gha\n      keyless:\n        identity: https://github.com/acme/app/.github/workflows/r.yml@refs/heads/main\n        \
         issuer: https://token.actions.githubusercontent.com\n        trustedRoot: root.json\n  require: any\n",
    )
    .unwrap();
    let err = stderr_of_failure(
        tresor().args(["verify", &reference, "--policy", s(&keyless)]),
        2,
    );
    assert!(
        err.contains("trusted root") && err.contains("root.json") && err.contains("cannot read"),
        "{err}"
    );

    // The same from flags; identity and issuer are both required, and a trusted root.
    let gha = [
        "verify",
        &reference,
        "--certificate-identity",
        "https://github.com/acme/app/.github/workflows/r.yml@refs/heads/main",
    ];
    let mut cmd = tresor();
    cmd.args(gha).args([
        "--certificate-oidc-issuer",
        "https://token.actions.githubusercontent.com",
        "--trusted-root",
        "root.json",
    ]);
    let err = stderr_of_failure(cmd, 2);
    assert!(
        err.contains("trusted root") && err.contains("root.json") && err.contains("cannot read"),
        "{err}"
    );
    let mut cmd = tresor();
    cmd.args(gha).args(["--trusted-root", "root.json"]);
    let err = stderr_of_failure(cmd, 2);
    assert!(err.contains("issuer or issuerRegexp is required"), "{err}");
    let mut cmd = tresor();
    cmd.args(gha)
        .args(["--certificate-oidc-issuer-regexp", ".*"]);
    let err = stderr_of_failure(cmd, 2);
    assert!(err.contains("needs --trusted-root"), "{err}");
}

#[test]
fn provenance_round_trip_on_a_layout_and_a_registry() {
    let work = tempfile::tempdir().unwrap();
    let (key_a, pub_a) = keypair(work.path(), "a");
    let (_, pub_b) = keypair(work.path(), "b");
    let layout = work.path().join("layout");
    let targets = [
        (layout_ref(&layout, "v1"), Vec::new()),
        (
            format!("{}:v1", TestRegistry::plain().repo("provenance")),
            vec!["--plain-http".to_string()],
        ),
    ];
    for (reference, flags) in targets {
        let mut cmd = tresor_pw(&[]);
        cmd.env("GITHUB_ACTIONS", "true")
            .env("GITHUB_SERVER_URL", "https://github.com")
            .env("GITHUB_REPOSITORY", "acme/app")
            .env(
                "GITHUB_WORKFLOW_REF",
                "acme/app/.github/workflows/release.yml@refs/heads/main",
            )
            .env("GITHUB_RUN_ID", "4242")
            .env("GITHUB_REF_NAME", "main")
            .env("GITHUB_SHA", "0123456789abcdef0123456789abcdef01234567")
            .args(["push", s(&fixture_tree()), &reference, "--format", "json"])
            .args(["--sign-key", s(&key_a), "--provenance"])
            .args(&flags);
        let pushed = json_of(cmd);
        assert_eq!(pushed["provenance"]["added"], true);
        let digest = pushed["digest"].as_str().unwrap().to_string();

        let mut cmd = tresor();
        cmd.args(["verify", &reference, "--key", s(&pub_a), "--attestation"])
            .args(["--format", "json"])
            .args(&flags);
        let v = json_of(cmd);
        assert_eq!(v["digest"], digest.as_str());
        let st = &v["statements"][0];
        assert_eq!(st["predicateType"], "https://slsa.dev/provenance/v1");
        assert_eq!(
            st["subject"][0]["digest"]["sha256"],
            &digest["sha256:".len()..]
        );
        let predicate = &st["predicate"];
        assert_eq!(
            predicate["runDetails"]["builder"]["id"],
            "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main"
        );
        assert_eq!(
            predicate["runDetails"]["metadata"]["invocationId"],
            "https://github.com/acme/app/actions/runs/4242/attempts/1"
        );
        assert_eq!(
            predicate["buildDefinition"]["resolvedDependencies"][0]["uri"],
            "git+https://github.com/acme/app"
        );
        assert_eq!(
            predicate["buildDefinition"]["resolvedDependencies"][0]["digest"]["gitCommit"],
            "0123456789abcdef0123456789abcdef01234567"
        );

        let mut cmd = tresor();
        cmd.args(["verify", &reference, "--key", s(&pub_b), "--attestation"])
            .args(&flags);
        let err = stderr_of_failure(cmd, 1);
        assert!(err.contains("no valid signature"), "{err}");
    }

    // An artifact without provenance: not verified.
    let bare = layout_ref(&work.path().join("bare"), "v1");
    push(&bare, &[]);
    let err = stderr_of_failure(
        tresor().args(["verify", &bare, "--key", s(&pub_a), "--attestation"]),
        1,
    );
    assert!(err.contains(".att"), "{err}");
    // --provenance needs --sign-key.
    stderr_of_failure(
        tresor().args(["push", s(&fixture_tree()), &bare, "--provenance"]),
        2,
    );
}

/// Issue 12 point 1: N-of-M counts distinct signers. A policy whose two authorities hold the
/// same public key (once by path, once inline with other line breaks) used to be satisfied
/// by one signature, crediting both authorities with the same `.sig` layer. Such a policy is
/// now refused when loaded (exit 2, reason `DuplicateSigner`), for `--policy` and `--key`.
#[test]
fn regression_issue12_same_key_twice_is_refused_not_counted_twice() {
    let registry = TestRegistry::plain();
    let work = tempfile::tempdir().unwrap();
    let (key_a, pub_a) = keypair(work.path(), "a");
    let reference = format!("{}:v1", registry.repo("issue12-nofm"));
    push(&reference, &registry.flags);
    let mut sign = tresor_pw(&["sign", &reference, "--key", s(&key_a)]);
    sign.args(&registry.flags);
    stdout_of(sign);

    let pem = std::fs::read_to_string(&pub_a).unwrap();
    // The same key material, written differently: one long base64 line.
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    let policy = work.path().join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "apiVersion: tresor.dev/v1alpha1\nkind: TrustPolicy\nspec:\n  authorities:\n    \
             - name: ci\n      key:\n        path: a/cosign.pub\n    - name: security-team\n      \
             key:\n        data: |\n          -----BEGIN PUBLIC KEY-----\n          {body}\n          \
             -----END PUBLIC KEY-----\n  require: 2\n"
        ),
    )
    .unwrap();
    let mut cmd = tresor();
    cmd.args(["verify", &reference, "--policy", s(&policy)])
        .args(&registry.flags);
    let stderr = stderr_of_failure(cmd, 2);
    assert!(
        stderr
            .contains("authorities \"ci\" and \"security-team\" are the same signer (key sha256:"),
        "{stderr}"
    );

    // The same file twice on the command line, too.
    let mut cmd = tresor();
    cmd.args(["verify", &reference, "--key", s(&pub_a), "--key"])
        .arg(work.path().join("a/../a/cosign.pub"))
        .args(["--require", "2"])
        .args(&registry.flags);
    let err = stderr_of_failure(cmd, 2);
    assert!(err.contains("same signer"), "{err}");
}
