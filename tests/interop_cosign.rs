//! Interop with the real cosign, both directions: v2 (github.com/sigstore/cosign/v2) and v3
//! (…/v3), built by `scripts/peers.sh` at the versions testenv/peers/ pins, against the local
//! registries of `scripts/registry.sh`.
//!
//! cosign runs offline: no Rekor, Fulcio or TUF. Signing uses `--tlog-upload=false` (v3 also
//! `--use-signing-config=false`, or it fetches its signing config from TUF), verifying
//! `--insecure-ignore-tlog` and `--trusted-root` with an empty trusted root (or v2 and v3 try
//! the TUF repository first). HTTP(S)_PROXY points to a closed port, so anything but
//! 127.0.0.1 fails loudly instead of reaching the internet, and [`Cosign::run`] rejects a
//! run whose stderr shows it tried.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::peers::peer;
use common::{fixture_tree, json_of, stdout_of, tresor, TestRegistry};
use tresor::digest::Digest;
use tresor::reference::Reference;
use tresor::registry::{ManifestRef, RegistryOptions, Repository};
use tresor::signing::keys::PublicKey;

const PASSWORD: &str = "interop-password";
const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const BUNDLE_V03: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";

/// A trusted root with nothing in it: cosign reads it instead of asking TUF, and a key
/// verification needs nothing from it.
const EMPTY_TRUSTED_ROOT: &str =
    r#"{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1"}"#;

/// The SLSA provenance v1 predicate `cosign attest` signs in these tests.
const PREDICATE: &str = r#"{
  "buildDefinition": {
    "buildType": "https://example.com/cosign-interop/v1",
    "externalParameters": {
      "source": "https://example.com/acme/app",
      "revision": "main@sha1:89abcdef0123456789abcdef0123456789abcdef"
    }
  },
  "runDetails": {
    "builder": { "id": "https://example.com/builders/cosign-interop" },
    "metadata": { "invocationId": "https://example.com/runs/42" }
  }
}"#;

/// One cosign major version with a private, offline environment.
struct Cosign {
    name: &'static str,
    bin: PathBuf,
    home: tempfile::TempDir,
}

impl Cosign {
    fn v2() -> Self {
        Self::new("cosign")
    }

    fn v3() -> Self {
        Self::new("cosign-v3")
    }

    fn new(name: &'static str) -> Self {
        let home = tempfile::tempdir().unwrap();
        std::fs::write(home.path().join("trusted_root.json"), EMPTY_TRUSTED_ROOT).unwrap();
        std::fs::create_dir_all(home.path().join("docker")).unwrap();
        Self {
            name,
            bin: peer(name),
            home,
        }
    }

    fn is_v3(&self) -> bool {
        self.name == "cosign-v3"
    }

    fn trusted_root(&self) -> String {
        s(&self.home.path().join("trusted_root.json")).to_string()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .current_dir(self.home.path())
            .env("COSIGN_PASSWORD", PASSWORD)
            .env("TUF_ROOT", self.home.path().join("tuf"))
            .env("DOCKER_CONFIG", self.home.path().join("docker"))
            .env("HOME", self.home.path())
            // Only 127.0.0.1 is reachable: anything else goes to a closed proxy port.
            .env("HTTPS_PROXY", "http://127.0.0.1:9")
            .env("HTTP_PROXY", "http://127.0.0.1:9")
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env_remove("COSIGN_EXPERIMENTAL")
            .env_remove("SIGSTORE_ROOT_FILE")
            .env_remove("SIGSTORE_REKOR_PUBLIC_KEY");
        cmd
    }

    /// Runs cosign; returns its output whatever the exit code. Fails the test when cosign
    /// tried to reach anything but the local registry.
    fn run(&self, args: &[&str]) -> Output {
        let out = self.command(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("127.0.0.1:9") && !stderr.contains("tuf-repo-cdn"),
            "{} {args:?} tried to reach the network:\n{stderr}",
            self.name
        );
        out
    }

    /// Runs cosign, which must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{} {args:?} failed ({:?}):\nstdout: {}\nstderr: {}",
            self.name,
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `cosign generate-key-pair` in `dir`; returns (cosign.key, cosign.pub).
    fn generate_key_pair(&self, dir: &Path) -> (PathBuf, PathBuf) {
        std::fs::create_dir_all(dir).unwrap();
        let prefix = dir.join("cosign");
        self.ok(&["generate-key-pair", "--output-key-prefix", s(&prefix)]);
        (dir.join("cosign.key"), dir.join("cosign.pub"))
    }

    /// `cosign sign --key` with a legacy `.sig` signature (both versions).
    fn sign_legacy(&self, key: &Path, image: &str) {
        let mut args = vec!["sign", "--yes", "--key", s(key), "--tlog-upload=false"];
        if self.is_v3() {
            args.extend(["--new-bundle-format=false", "--use-signing-config=false"]);
        }
        args.push(image);
        self.ok(&args);
    }

    /// `cosign sign --key --new-bundle-format`: a Sigstore bundle as an OCI referrer.
    fn sign_bundle(&self, key: &Path, image: &str) {
        let mut args = vec![
            "sign",
            "--yes",
            "--key",
            s(key),
            "--tlog-upload=false",
            "--new-bundle-format",
        ];
        if self.is_v3() {
            args.push("--use-signing-config=false");
        }
        args.push(image);
        self.ok(&args);
    }

    /// `cosign verify --key` offline (whatever the exit code); stdout holds the verified
    /// payloads, one JSON array per line.
    fn verify(&self, public_key: &Path, image: &str) -> Output {
        let root = self.trusted_root();
        self.run(&[
            "verify",
            "--key",
            s(public_key),
            "--insecure-ignore-tlog",
            "--trusted-root",
            &root,
            image,
        ])
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `tresor` with COSIGN_PASSWORD set and the registry's flags.
fn tresor_at(registry: &TestRegistry, args: &[&str]) -> assert_cmd::Command {
    let mut cmd = registry.tresor(args);
    cmd.env("COSIGN_PASSWORD", PASSWORD);
    cmd
}

/// `tresor promote oci://IMAGE --to TARGET:prod` signed with the approver's key, the source
/// verified with the CI key (`keys`: approver key, CI public key), `extra` flags appended.
fn promote(
    registry: &TestRegistry,
    image: &str,
    target: &str,
    keys: (&Path, &Path),
    extra: &[&str],
) -> assert_cmd::Command {
    let (source, to) = (format!("oci://{image}"), format!("{target}:prod"));
    let mut args = vec![
        "promote",
        source.as_str(),
        "--to",
        to.as_str(),
        "--key",
        s(keys.0),
        "--verify-key",
        s(keys.1),
    ];
    args.extend_from_slice(extra);
    tresor_at(registry, &args)
}

/// Pushes the fixture tree to a new repository (extra flags appended); returns
/// (`host/repo@sha256:…` as cosign names it, the digest).
fn push(registry: &TestRegistry, prefix: &str, flags: &[&str]) -> (String, String) {
    let repo = registry.repo(prefix);
    let mut cmd = tresor_at(
        registry,
        &[
            "push",
            s(&fixture_tree()),
            &format!("{repo}:v1"),
            "--format",
            "json",
            "--source",
            "https://example.com/acme/app",
            "--revision",
            "main@sha1:0123456789abcdef0123456789abcdef01234567",
        ],
    );
    cmd.args(flags);
    let digest = json_of(cmd)["digest"].as_str().unwrap().to_string();
    let image = format!("{}@{digest}", repo.trim_start_matches("oci://"));
    (image, digest)
}

/// `tresor verify oci://IMAGE --format json` with `args` (keys, --require, --attestation).
fn tresor_verify(registry: &TestRegistry, image: &str, args: &[&str]) -> assert_cmd::Command {
    let mut cmd = tresor_at(
        registry,
        &["verify", &format!("oci://{image}"), "--format", "json"],
    );
    cmd.args(args);
    cmd
}

fn fingerprint(public_key: &Path) -> String {
    PublicKey::from_file(public_key)
        .unwrap()
        .fingerprint()
        .to_string()
}

/// The key fingerprints of a passed `tresor verify --format json`, sorted.
fn signers(verified: &serde_json::Value) -> Vec<String> {
    assert_eq!(verified["verified"], true, "{verified}");
    let mut out: Vec<String> = verified["signatures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|sig| {
            assert_eq!(sig["signer"]["kind"], "key", "{sig}");
            sig["signer"]["fingerprint"].as_str().unwrap().to_string()
        })
        .collect();
    out.sort();
    out
}

/// The payloads `cosign verify` printed (one JSON document per line) and the digests they
/// sign.
fn cosign_verified_digests(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .flat_map(|line| {
            let docs: Vec<serde_json::Value> = serde_json::from_str(line).unwrap();
            docs.into_iter().map(|d| {
                d["critical"]["image"]["docker-manifest-digest"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
        })
        .collect()
}

fn assert_cosign_verifies(cosign: &Cosign, public_key: &Path, image: &str, digest: &str) {
    let out = cosign.verify(public_key, image);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{} verify --key {} {image} failed ({:?}):\nstdout: {stdout}\nstderr: {}",
        cosign.name,
        public_key.display(),
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    let digests = cosign_verified_digests(&stdout);
    assert!(!digests.is_empty(), "no verified payload printed: {stdout}");
    assert!(
        digests.iter().all(|d| d == digest),
        "cosign verified payloads for {digests:?}, expected {digest}"
    );
}

/// The manifest `tag_or_digest` in the repository of `image` (`host/repo@sha256:…`) on the
/// plain registry, as stored.
fn manifest_at(image: &str, tag_or_digest: &str) -> serde_json::Value {
    let (repo, _) = image.split_once('@').unwrap();
    let reference: Reference = format!("oci://{repo}").parse().unwrap();
    let digest: Option<Digest> = tag_or_digest.parse().ok();
    let wanted = match &digest {
        Some(d) => ManifestRef::Digest(d),
        None => ManifestRef::Tag(tag_or_digest),
    };
    let options = RegistryOptions {
        plain_http: true,
        ..Default::default()
    };
    let repository = Repository::open(&reference, &options).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let fetched = runtime
        .block_on(repository.fetch_manifest(wanted))
        .unwrap_or_else(|e| panic!("no manifest {tag_or_digest} in {repo}: {e}"));
    serde_json::from_slice(&fetched.bytes).unwrap()
}

/// `sha256-<hex>` of `image`'s digest, with `suffix` (`.sig`, `.att`, or none: the referrers
/// fallback tag).
fn digest_tag(image: &str, suffix: &str) -> String {
    let (_, digest) = image.split_once('@').unwrap();
    format!("{}{suffix}", digest.replace(':', "-"))
}

// ---- keys -----------------------------------------------------------------------------

#[test]
fn a_cosign_generated_key_signs_with_tresor_and_both_cosigns_verify() {
    let registry = TestRegistry::plain();
    let v2 = Cosign::v2();
    let work = tempfile::tempdir().unwrap();
    let (key, public) = v2.generate_key_pair(&work.path().join("cosign-keys"));
    let text = std::fs::read_to_string(&key).unwrap();
    assert!(text.contains("ENCRYPTED SIGSTORE PRIVATE KEY"), "{text}");

    let (image, digest) = push(&registry, "cosign-key", &[]);
    stdout_of(tresor_at(
        &registry,
        &["sign", &format!("oci://{image}"), "--key", s(&key)],
    ));

    assert_cosign_verifies(&v2, &public, &image, &digest);
    assert_cosign_verifies(&Cosign::v3(), &public, &image, &digest);
    let verified = json_of(tresor_verify(&registry, &image, &["--key", s(&public)]));
    assert_eq!(signers(&verified), [fingerprint(&public)]);
    assert_eq!(verified["digest"], digest.as_str());
}

#[test]
fn a_tresor_keygen_key_signs_with_cosign_and_tresor_verifies() {
    let registry = TestRegistry::plain();
    let work = tempfile::tempdir().unwrap();
    let mut keygen = tresor();
    keygen
        .env("COSIGN_PASSWORD", PASSWORD)
        .args(["keygen", "--output-dir", s(work.path())]);
    stdout_of(keygen);
    let (key, public) = (
        work.path().join("cosign.key"),
        work.path().join("cosign.pub"),
    );

    for cosign in [Cosign::v2(), Cosign::v3()] {
        let (image, digest) = push(&registry, "tresor-key", &[]);
        cosign.sign_legacy(&key, &image);
        assert_cosign_verifies(&cosign, &public, &image, &digest);
        let verified = json_of(tresor_verify(&registry, &image, &["--key", s(&public)]));
        assert_eq!(
            signers(&verified),
            [fingerprint(&public)],
            "{}",
            cosign.name
        );
        let source = verified["signatures"][0]["source"].as_str().unwrap();
        assert!(source.contains(".sig"), "{}: {source}", cosign.name);
    }
    // and as a v3 bundle.
    let v3 = Cosign::v3();
    let (image, digest) = push(&registry, "tresor-key-bundle", &[]);
    v3.sign_bundle(&key, &image);
    assert_cosign_verifies(&v3, &public, &image, &digest);
    let verified = json_of(tresor_verify(&registry, &image, &["--key", s(&public)]));
    assert_eq!(signers(&verified), [fingerprint(&public)]);
    let source = verified["signatures"][0]["source"].as_str().unwrap();
    assert!(source.starts_with("referrer sha256:"), "{source}");
}

// ---- signatures -----------------------------------------------------------------------

#[test]
fn a_cosign_signature_does_not_verify_with_another_key() {
    let registry = TestRegistry::plain();
    let v2 = Cosign::v2();
    let work = tempfile::tempdir().unwrap();
    let (key, _) = v2.generate_key_pair(&work.path().join("signer"));
    let (_, other) = v2.generate_key_pair(&work.path().join("other"));
    let (image, _) = push(&registry, "cosign-other-key", &[]);
    v2.sign_legacy(&key, &image);

    let out = tresor_verify(&registry, &image, &["--key", s(&other)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["verified"], false);
    assert_eq!(doc["reason"], "SignatureInvalid", "{doc}");
}

#[test]
fn two_cosign_signers_satisfy_require_all_and_one_alone_does_not() {
    let registry = TestRegistry::plain();
    let v2 = Cosign::v2();
    let work = tempfile::tempdir().unwrap();
    let (ci_key, ci) = v2.generate_key_pair(&work.path().join("ci"));
    let (security_key, security) = v2.generate_key_pair(&work.path().join("security"));
    let (image, _) = push(&registry, "cosign-two", &[]);
    let both = ["--key", s(&ci), "--key", s(&security), "--require", "all"];

    v2.sign_legacy(&ci_key, &image);
    let out = tresor_verify(&registry, &image, &both).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["reason"], "PolicyNotSatisfied", "{doc}");

    // cosign appends the second signature to the same `.sig` manifest.
    Cosign::v3().sign_legacy(&security_key, &image);
    let verified = json_of(tresor_verify(&registry, &image, &both));
    let mut expected = vec![fingerprint(&ci), fingerprint(&security)];
    expected.sort();
    assert_eq!(signers(&verified), expected);
    assert_eq!(verified["require"], "all (2)");
}

#[test]
fn cosign_verifies_each_key_after_tresor_push_sign_key_and_an_appended_tresor_sign() {
    let registry = TestRegistry::plain();
    let work = tempfile::tempdir().unwrap();
    let v2 = Cosign::v2();
    let (first_key, first) = v2.generate_key_pair(&work.path().join("first"));
    let (second_key, second) = v2.generate_key_pair(&work.path().join("second"));
    let (image, digest) = push(&registry, "tresor-append", &["--sign-key", s(&first_key)]);
    stdout_of(tresor_at(
        &registry,
        &["sign", &format!("oci://{image}"), "--key", s(&second_key)],
    ));

    for cosign in [&v2, &Cosign::v3()] {
        assert_cosign_verifies(cosign, &first, &image, &digest);
        assert_cosign_verifies(cosign, &second, &image, &digest);
    }
    let tag = v2.ok(&["triangulate", &image]);
    assert!(tag.trim().ends_with(&digest_tag(&image, ".sig")), "{tag}");
    let manifest = manifest_at(&image, &digest_tag(&image, ".sig"));
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2, "{manifest}");
    assert!(layers.iter().all(|l| l["mediaType"] == SIMPLE_SIGNING));
    // `cosign tree` lists the signature manifest's two layers.
    let tree = v2.ok(&["tree", &image]);
    let sig_section = tree.split("Signatures for").nth(1).unwrap_or_default();
    let listed = sig_section
        .lines()
        .take_while(|l| !l.contains("for an image tag"))
        .filter(|l| l.contains("sha256:"))
        .count();
    assert_eq!(listed, 2, "{tree}");
}

// ---- attestations ---------------------------------------------------------------------

/// `cosign attest --type slsaprovenance1 --predicate FILE`: v2 appends a DSSE layer to the
/// `.att` manifest, v3 stores a bundle referrer.
fn cosign_attest(cosign: &Cosign, key: &Path, predicate: &Path, image: &str) {
    let mut args = vec![
        "attest",
        "--yes",
        "--key",
        s(key),
        "--tlog-upload=false",
        "--type",
        "slsaprovenance1",
        "--predicate",
        s(predicate),
    ];
    if cosign.is_v3() {
        args.push("--use-signing-config=false");
    }
    args.push(image);
    cosign.ok(&args);
}

#[test]
fn a_cosign_slsa_attestation_verifies_with_tresor_verify_attestation() {
    let registry = TestRegistry::plain();
    let v2 = Cosign::v2();
    let work = tempfile::tempdir().unwrap();
    let (key, public) = v2.generate_key_pair(&work.path().join("keys"));
    let predicate = work.path().join("provenance.json");
    std::fs::write(&predicate, PREDICATE).unwrap();
    let (image, digest) = push(&registry, "cosign-attest", &[]);
    cosign_attest(&v2, &key, &predicate, &image);

    let verified = json_of(tresor_verify(
        &registry,
        &image,
        &["--key", s(&public), "--attestation"],
    ));
    assert_eq!(signers(&verified), [fingerprint(&public)]);
    let statements = verified["statements"].as_array().unwrap();
    assert_eq!(statements.len(), 1, "{verified}");
    let statement = &statements[0];
    assert_eq!(statement["predicateType"], "https://slsa.dev/provenance/v1");
    assert_eq!(
        statement["subject"][0]["digest"]["sha256"],
        digest.trim_start_matches("sha256:")
    );
    assert_eq!(
        statement["predicate"]["runDetails"]["builder"]["id"],
        "https://example.com/builders/cosign-interop"
    );
    // The signatures of the same artifact are a different thing: there are none.
    let out = tresor_verify(&registry, &image, &["--key", s(&public)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn tresor_push_provenance_verifies_with_cosign_verify_attestation() {
    let registry = TestRegistry::plain();
    let v2 = Cosign::v2();
    let work = tempfile::tempdir().unwrap();
    let (key, public) = v2.generate_key_pair(&work.path().join("keys"));
    let (image, digest) = push(
        &registry,
        "tresor-provenance",
        &["--sign-key", s(&key), "--provenance"],
    );

    for cosign in [&v2, &Cosign::v3()] {
        let root = cosign.trusted_root();
        let mut args = vec![
            "verify-attestation",
            "--type",
            "slsaprovenance1",
            "--key",
            s(&public),
            "--insecure-ignore-tlog",
            "--trusted-root",
            &root,
        ];
        args.push(&image);
        let stdout = cosign.ok(&args);
        // One DSSE envelope per line; its payload is tresor's statement.
        let envelope: serde_json::Value =
            serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
        use base64::Engine as _;
        let payload = base64::engine::general_purpose::STANDARD
            .decode(envelope["payload"].as_str().unwrap())
            .unwrap();
        let statement: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(statement["predicateType"], "https://slsa.dev/provenance/v1");
        assert_eq!(
            statement["subject"][0]["digest"]["sha256"],
            digest.trim_start_matches("sha256:"),
            "{}",
            cosign.name
        );
    }
}

/// Issue 15: `tresor promote` of a cosign-signed (CI) artifact into another repository with
/// a cosign-generated approver key: both cosigns verify the approver's signature and CI's
/// copied one on the target tag, and check the promotion record with `cosign
/// verify-attestation --type https://tresor.dev/promotion/v1`.
#[test]
fn a_tresor_promotion_verifies_with_cosign_verify_and_verify_attestation() {
    let registry = TestRegistry::plain();
    let v2 = Cosign::v2();
    let work = tempfile::tempdir().unwrap();
    let (ci_key, ci_pub) = v2.generate_key_pair(&work.path().join("ci"));
    let (approver_key, approver_pub) = v2.generate_key_pair(&work.path().join("approver"));
    let (image, digest) = push(&registry, "promotion-src", &[]);
    v2.sign_legacy(&ci_key, &image);
    let target = registry.repo("promotion-dst");
    let prod = format!("{}:prod", target.trim_start_matches("oci://"));
    stdout_of(promote(
        &registry,
        &image,
        &target,
        (&approver_key, &ci_pub),
        &["--reason", "cosign interop"],
    ));
    for cosign in [&v2, &Cosign::v3()] {
        assert_cosign_verifies(cosign, &approver_pub, &prod, &digest);
        assert_cosign_verifies(cosign, &ci_pub, &prod, &digest);
        let root = cosign.trusted_root();
        let stdout = cosign.ok(&[
            "verify-attestation",
            "--type",
            "https://tresor.dev/promotion/v1",
            "--key",
            s(&approver_pub),
            "--insecure-ignore-tlog",
            "--trusted-root",
            &root,
            &prod,
        ]);
        let envelope: serde_json::Value =
            serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
        use base64::Engine as _;
        let payload = base64::engine::general_purpose::STANDARD
            .decode(envelope["payload"].as_str().unwrap())
            .unwrap();
        let statement: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(
            statement["predicateType"],
            "https://tresor.dev/promotion/v1"
        );
        assert_eq!(
            statement["subject"][0]["digest"]["sha256"],
            digest.trim_start_matches("sha256:"),
            "{}",
            cosign.name
        );
        let p = &statement["predicate"];
        assert_eq!(p["from"]["digest"], digest.as_str());
        assert_eq!(p["to"]["reference"], format!("{target}:prod"));
        assert_eq!(
            p["approver"]["key"],
            format!("sha256:{}", fingerprint(&approver_pub))
        );
        assert_eq!(p["reason"], "cosign interop");
        // CI's key did not sign the record.
        let out = cosign.run(&[
            "verify-attestation",
            "--type",
            "https://tresor.dev/promotion/v1",
            "--key",
            s(&ci_pub),
            "--insecure-ignore-tlog",
            "--trusted-root",
            &root,
            &prod,
        ]);
        assert!(
            !out.status.success(),
            "{}: CI's key verified the record",
            cosign.name
        );
    }
}

#[test]
fn a_cosign_v3_attestation_bundle_is_an_attestation_for_tresor_not_a_signature() {
    let registry = TestRegistry::plain();
    let v3 = Cosign::v3();
    let work = tempfile::tempdir().unwrap();
    let (key, public) = v3.generate_key_pair(&work.path().join("keys"));
    let predicate = work.path().join("provenance.json");
    std::fs::write(&predicate, PREDICATE).unwrap();
    let (image, digest) = push(&registry, "cosign-v3-attest", &[]);
    cosign_attest(&v3, &key, &predicate, &image);
    let index = manifest_at(&image, &digest_tag(&image, ""));
    assert_eq!(index["manifests"][0]["artifactType"], BUNDLE_V03, "{index}");

    let attested = json_of(tresor_verify(
        &registry,
        &image,
        &["--key", s(&public), "--attestation"],
    ));
    assert_eq!(signers(&attested), [fingerprint(&public)]);
    let statements = attested["statements"].as_array().unwrap();
    assert_eq!(statements.len(), 1, "{attested}");
    assert_eq!(
        statements[0]["predicateType"],
        "https://slsa.dev/provenance/v1"
    );
    assert_eq!(
        statements[0]["subject"][0]["digest"]["sha256"],
        digest.trim_start_matches("sha256:")
    );
    assert_eq!(
        statements[0]["predicate"]["runDetails"]["metadata"]["invocationId"],
        "https://example.com/runs/42"
    );
    let source = attested["signatures"][0]["source"].as_str().unwrap();
    assert!(source.starts_with("referrer sha256:"), "{source}");

    // The provenance is no signature of the artifact (cosign v3.1.3's `verify --key`
    // counts it as one; see docs/interop.md).
    let out = tresor_verify(&registry, &image, &["--key", s(&public)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["verified"], false, "{doc}");
    assert_eq!(doc["reason"], "NoSignatures", "{doc}");
    let message = doc["message"].as_str().unwrap();
    assert!(
        message.contains("1 attestation bundle(s)") && message.contains("--attestation"),
        "{message}"
    );

    // Signed as well: one signature, one attestation, each found as what it is.
    v3.sign_bundle(&key, &image);
    let index = manifest_at(&image, &digest_tag(&image, ""));
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2, "{index}");
    let verified = json_of(tresor_verify(&registry, &image, &["--key", s(&public)]));
    assert_eq!(
        verified["signatures"].as_array().unwrap().len(),
        1,
        "{verified}"
    );
    let attested = json_of(tresor_verify(
        &registry,
        &image,
        &["--key", s(&public), "--attestation"],
    ));
    assert_eq!(attested["statements"].as_array().unwrap().len(), 1);
    assert_ne!(
        verified["signatures"][0]["source"], attested["signatures"][0]["source"],
        "the signature and the attestation are different referrers"
    );
}

// ---- v3 bundles -----------------------------------------------------------------------

/// Checks that cosign stored its bundle under the fallback tag `sha256-<hex>` (Distribution
/// 2.8 has no referrers API) and that tresor verifies it there.
fn assert_bundle_verifies_with_tresor(registry: &TestRegistry, image: &str, public: &Path) {
    let index = manifest_at(image, &digest_tag(image, ""));
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1, "{index}");
    let referrer = manifest_at(image, manifests[0]["digest"].as_str().unwrap());
    assert_eq!(referrer["layers"][0]["mediaType"], BUNDLE_V03, "{referrer}");

    let verified = json_of(tresor_verify(registry, image, &["--key", s(public)]));
    assert_eq!(signers(&verified), [fingerprint(public)]);
    let source = verified["signatures"][0]["source"].as_str().unwrap();
    assert!(source.starts_with("referrer sha256:"), "{source}");
}

#[test]
fn a_cosign_v3_bundle_signature_verifies_with_tresor() {
    let registry = TestRegistry::plain();
    let v3 = Cosign::v3();
    let work = tempfile::tempdir().unwrap();
    let (key, public) = v3.generate_key_pair(&work.path().join("keys"));
    let (image, digest) = push(&registry, "cosign-v3-bundle", &[]);
    v3.sign_bundle(&key, &image);

    assert_bundle_verifies_with_tresor(&registry, &image, &public);
    // and cosign itself agrees.
    assert_cosign_verifies(&v3, &public, &image, &digest);
}

/// Issue 15: a CI signature that is a cosign v3 bundle (a referrer under the fallback tag)
/// travels with `tresor promote` to another repository: the target's fallback index lists
/// the copied referrer, and tresor and cosign v3 verify CI's bundle there.
#[test]
fn a_cosign_v3_bundle_signature_is_copied_by_tresor_promote() {
    let registry = TestRegistry::plain();
    let v3 = Cosign::v3();
    let work = tempfile::tempdir().unwrap();
    let (ci_key, ci_pub) = v3.generate_key_pair(&work.path().join("ci"));
    let (approver_key, _) = v3.generate_key_pair(&work.path().join("approver"));
    let (image, digest) = push(&registry, "promote-bundle-src", &[]);
    v3.sign_bundle(&ci_key, &image);
    let target = registry.repo("promote-bundle-dst");
    let out = json_of(promote(
        &registry,
        &image,
        &target,
        (&approver_key, &ci_pub),
        &["--format", "json"],
    ));
    assert_eq!(out["copied"]["referrers"], 1, "{out}");
    let copied = format!("{}@{digest}", target.trim_start_matches("oci://"));
    assert_bundle_verifies_with_tresor(&registry, &copied, &ci_pub);
    assert_cosign_verifies(&v3, &ci_pub, &copied, &digest);
}

#[test]
fn a_cosign_v2_new_bundle_format_signature_verifies_with_tresor() {
    let registry = TestRegistry::plain();
    let v2 = Cosign::v2();
    let work = tempfile::tempdir().unwrap();
    let (key, public) = v2.generate_key_pair(&work.path().join("keys"));
    let (image, _) = push(&registry, "cosign-v2-bundle", &[]);
    v2.sign_bundle(&key, &image);
    assert_bundle_verifies_with_tresor(&registry, &image, &public);
}

#[test]
fn a_cosign_bundle_for_another_key_does_not_verify_with_tresor() {
    let registry = TestRegistry::plain();
    let v3 = Cosign::v3();
    let work = tempfile::tempdir().unwrap();
    let (key, _) = v3.generate_key_pair(&work.path().join("signer"));
    let (_, other) = v3.generate_key_pair(&work.path().join("other"));
    let (image, _) = push(&registry, "cosign-v3-other", &[]);
    v3.sign_bundle(&key, &image);
    let out = tresor_verify(&registry, &image, &["--key", s(&other)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["reason"], "SignatureInvalid", "{doc}");
}

#[test]
fn cosign_and_tresor_sign_and_verify_on_the_tls_registry_with_credentials() {
    let registry = TestRegistry::tls();
    let ca = registry.flags[registry
        .flags
        .iter()
        .position(|f| f == "--ca-file")
        .unwrap()
        + 1]
    .clone();
    let (user, password) = (
        registry.user.clone().unwrap(),
        registry.password.clone().unwrap(),
    );
    let v3 = Cosign::v3();
    let work = tempfile::tempdir().unwrap();
    let (cosign_key, cosign_public) = v3.generate_key_pair(&work.path().join("cosign"));
    let (tresor_key, tresor_public) = v3.generate_key_pair(&work.path().join("tresor"));
    let (image, digest) = push(&registry, "cosign-tls", &["--sign-key", s(&tresor_key)]);
    let registry_flags = [
        "--registry-cacert",
        &ca,
        "--registry-username",
        &user,
        "--registry-password",
        &password,
    ];

    let mut sign = vec![
        "sign",
        "--yes",
        "--key",
        s(&cosign_key),
        "--tlog-upload=false",
        "--use-signing-config=false",
    ];
    sign.extend(registry_flags);
    sign.push(&image);
    v3.ok(&sign);
    let both = [
        "--key",
        s(&cosign_public),
        "--key",
        s(&tresor_public),
        "--require",
        "all",
    ];
    let verified = json_of(tresor_verify(&registry, &image, &both));
    let mut expected = vec![fingerprint(&cosign_public), fingerprint(&tresor_public)];
    expected.sort();
    assert_eq!(signers(&verified), expected);

    // cosign v3 verifies its own bundle; tresor's legacy `.sig` signature only with
    // `--new-bundle-format=false`: once a bundle referrer exists, v3.1.3 looks at bundles only
    // (docs/interop.md). If this changes with a new cosign, update the doc.
    let root = v3.trusted_root();
    let verify = |public: &Path, extra: &[&str]| {
        let mut args = vec![
            "verify",
            "--key",
            s(public),
            "--insecure-ignore-tlog",
            "--trusted-root",
            &root,
        ];
        args.extend(registry_flags);
        args.extend(extra);
        args.push(&image);
        v3.run(&args)
    };
    let out = verify(&cosign_public, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = verify(&tresor_public, &["--new-bundle-format=false"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(cosign_verified_digests(&stdout), [digest]);
    let out = verify(&tresor_public, &[]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "cosign v3 now finds legacy signatures next to bundles: update docs/interop.md"
    );
}
