//! Keyless and bundle verification end to end: cosign v3 Sigstore bundles found through the
//! referrers API or the `sha256-<hex>` fallback tag (cosign's own bundle at library level, a
//! key-based bundle through `tresor verify` on a layout, the real registry and a fake one),
//! keyless legacy `.sig` layers from a test PKI standing in for Fulcio and Rekor, and a trust
//! policy mixing a key and a keyless authority.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use common::fake_registry::{Content, FakeRegistry};
use common::pki::{ca, keyless_annotations, leaf, trusted_root_json, IDENTITY};
use common::tarball::{gzip, tar, Entry};
use common::{fixture_tree, json_of, stdout_of, tresor, TestRegistry};
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256};
use serde_json::{json, Value};
use tresor::artifact::format::{
    Descriptor, ImageIndex, ImageManifest, CONFIG_MEDIA_TYPE, CONTENT_MEDIA_TYPE,
    OCI_INDEX_MEDIA_TYPE, OCI_MANIFEST_MEDIA_TYPE,
};
use tresor::digest::Digest;
use tresor::reference::Reference;
use tresor::registry::{RegistryOptions, Repository};
use tresor::signing::bundle::BUNDLE_V03_MEDIA_TYPE;
use tresor::signing::keys::{self, PrivateKey};
use tresor::signing::legacy::signature_tag;
use tresor::signing::payload::{self, SIMPLE_SIGNING_MEDIA_TYPE};
use tresor::signing::referrers::fallback_tag;
use tresor::signing::verify::{self, Candidate, PreparedPolicy, Signer};
use tresor::signing::{Authority, NamedAuthority, Require, TrustPolicy, VerifyError};

const PASSWORD: &str = "test-password";
/// Subject of cosign's `bundle_v03.json`.
const KW_DIGEST: &str = "sha256:c811d58de79c92f03214e63aa339484e488d694ae8a6283b5f3f17a9faf50172";
const KW_IDENTITY: &str =
    "https://github.com/kubewarden/kubewarden-controller/.github/workflows/release.yml@refs/tags/v1.34.0";
const GHA_ISSUER: &str = "https://token.actions.githubusercontent.com";
const IN_TOTO: &str = "application/vnd.in-toto+json";
const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";

fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(rel)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Pushes the fixture tree to `reference` (extra flags appended); returns the digest.
fn push(reference: &str, flags: &[String]) -> Digest {
    let mut cmd = tresor();
    cmd.args(["push", s(&fixture_tree()), reference, "--format", "json"])
        .args(["--source", "https://example.com/acme/app"])
        .args(flags);
    json_of(cmd)["digest"].as_str().unwrap().parse().unwrap()
}

/// A cosign key pair in `dir/name/`: the private key and the public key file.
fn keypair(dir: &Path, name: &str) -> (PrivateKey, PathBuf) {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    let files = keys::write_key_pair(&d, PASSWORD.as_bytes()).unwrap();
    (
        PrivateKey::from_file(&files.private_key, PASSWORD.as_bytes()).unwrap(),
        files.public_key,
    )
}

/// Runs a command expected to exit with `code` and `--format json`; returns (reason, stderr).
fn failure(mut cmd: assert_cmd::Command, code: i32) -> (String, String) {
    let out = cmd.args(["--format", "json"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (
        doc["reason"].as_str().unwrap_or_default().to_string(),
        stderr,
    )
}

// --- sigstore bundles as referrers -------------------------------------------------------

fn pae(payload_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// A cosign v3 style bundle (DSSE in-toto statement naming `digest`) signed with `key`.
fn key_bundle(key: &PrivateKey, digest: &Digest) -> Vec<u8> {
    let statement = format!(
        r#"{{"_type":"https://in-toto.io/Statement/v1","subject":[{{"name":"app","digest":{{"sha256":"{}"}}}}],"predicateType":"https://sigstore.dev/cosign/sign/v1","predicate":{{}}}}"#,
        digest.hex()
    );
    let sig = key.sign(&pae(IN_TOTO, statement.as_bytes()));
    serde_json::to_vec(&json!({
        "mediaType": BUNDLE_V03_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": "test"}, "tlogEntries": []},
        "dsseEnvelope": {
            "payload": STANDARD.encode(statement),
            "payloadType": IN_TOTO,
            "signatures": [{"sig": STANDARD.encode(sig), "keyid": ""}]
        }
    }))
    .unwrap()
}

/// What cosign stores for a bundle: blobs (empty config, bundle), the referrer manifest
/// (subject = the artifact) and the fallback index tagged `sha256-<hex>`.
struct Attached {
    blobs: Vec<(Digest, Vec<u8>)>,
    referrer: Vec<u8>,
    index: Vec<u8>,
    bundle_digest: Digest,
}

fn attachment(subject: &Digest, bundle: &[u8]) -> Attached {
    attachment_listed_as(subject, bundle, Some(BUNDLE_V03_MEDIA_TYPE))
}

/// [`attachment`] with the fallback index entry's `artifactType` set to `listed`.
fn attachment_listed_as(subject: &Digest, bundle: &[u8], listed: Option<&str>) -> Attached {
    let config = Descriptor::for_bytes(EMPTY_MEDIA_TYPE, b"{}");
    let layer = Descriptor::for_bytes(BUNDLE_V03_MEDIA_TYPE, bundle);
    let referrer = ImageManifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST_MEDIA_TYPE.into()),
        artifact_type: Some(BUNDLE_V03_MEDIA_TYPE.into()),
        config: config.clone(),
        layers: vec![layer.clone()],
        subject: Some(Descriptor {
            media_type: OCI_MANIFEST_MEDIA_TYPE.into(),
            digest: subject.clone(),
            size: 0,
            annotations: BTreeMap::new(),
            artifact_type: None,
        }),
        annotations: BTreeMap::new(),
    }
    .to_bytes();
    let mut entry = Descriptor::for_bytes(OCI_MANIFEST_MEDIA_TYPE, &referrer);
    entry.artifact_type = listed.map(str::to_string);
    let index = serde_json::to_vec(&ImageIndex {
        schema_version: 2,
        media_type: Some(OCI_INDEX_MEDIA_TYPE.into()),
        manifests: vec![entry],
        annotations: BTreeMap::new(),
    })
    .unwrap();
    Attached {
        blobs: vec![
            (config.digest, b"{}".to_vec()),
            (layer.digest.clone(), bundle.to_vec()),
        ],
        referrer,
        index,
        bundle_digest: layer.digest,
    }
}

/// Stores `bundle` for `subject` in the repository the way cosign does without a referrers
/// API: referrer manifest by digest, fallback index under `sha256-<hex>`.
async fn attach(repo: &Repository, subject: &Digest, bundle: &[u8]) {
    let a = attachment(subject, bundle);
    for (digest, data) in a.blobs {
        repo.push_blob(&digest, data.into()).await.unwrap();
    }
    repo.push_manifest(OCI_MANIFEST_MEDIA_TYPE, &a.referrer, None)
        .await
        .unwrap();
    repo.push_manifest(OCI_INDEX_MEDIA_TYPE, &a.index, Some(&fallback_tag(subject)))
        .await
        .unwrap();
}

fn keyless_policy(identity: &str, issuer: &str, root: &Path) -> TrustPolicy {
    TrustPolicy::new(
        vec![NamedAuthority {
            name: "release".into(),
            authority: Authority::keyless(
                Some(identity.into()),
                None,
                Some(issuer.into()),
                None,
                root.to_path_buf(),
            )
            .unwrap(),
        }],
        Require::Any,
        Path::new("<test>"),
    )
    .unwrap()
}

/// cosign's own v3 bundle, found through the fallback tag of a layout that holds only the
/// referrer (the kubewarden image's manifest cannot be reproduced, so the artifact is given
/// as already resolved): verifies for its identity and issuer, not for others.
#[test]
fn cosign_v3_bundle_is_found_by_fallback_tag_and_verifies_for_its_identity_only() {
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let digest: Digest = KW_DIGEST.parse().unwrap();
    let reference: Reference = format!("oci-layout:{}@{KW_DIGEST}", layout.display())
        .parse()
        .unwrap();
    let repo = Repository::open(&reference, &RegistryOptions::default()).unwrap();
    let bundle = std::fs::read(testdata("cosign/bundles/bundle_v03.json")).unwrap();
    let rt = runtime();
    rt.block_on(attach(&repo, &digest, &bundle));
    let candidates = rt
        .block_on(verify::collect_candidates(&repo, &digest))
        .unwrap();
    assert_eq!(candidates.len(), 1);
    let Candidate::Bundle { bytes, source } = &candidates[0] else {
        panic!("expected a bundle candidate, got {:?}", candidates[0]);
    };
    assert_eq!(bytes.as_ref(), bundle.as_slice());
    assert!(source.starts_with("referrer sha256:"), "{source}");

    let artifact = common::pki::subject_at(reference, digest.clone());
    let root = testdata("cosign/bundles/trusted_root.json");
    let run = |identity: &str, issuer: &str| {
        let policy = keyless_policy(identity, issuer, &root);
        let prepared = PreparedPolicy::load(&policy).unwrap();
        verify::evaluate(&artifact, &prepared, &candidates, SystemTime::now())
    };
    let ok = run(KW_IDENTITY, GHA_ISSUER).unwrap();
    assert_eq!(
        ok.signatures[0].signer,
        Signer::Certificate {
            identity: KW_IDENTITY.into(),
            issuer: GHA_ISSUER.into()
        }
    );
    assert_eq!(ok.satisfied, vec!["release".to_string()]);

    let other_identity = KW_IDENTITY.replace("v1.34.0", "v1.35.0");
    let err = run(&other_identity, GHA_ISSUER).unwrap_err();
    assert_eq!(err.reason(), "IdentityMismatch", "{err}");
    assert!(err.is_unverified());
    let err = run(KW_IDENTITY, "https://accounts.google.com").unwrap_err();
    assert_eq!(err.reason(), "IssuerMismatch", "{err}");
    assert!(err.is_unverified());

    // The same bundle for another artifact digest: not its subject.
    let mut other = artifact.clone();
    other.digest = Digest::of(b"another artifact");
    let policy = keyless_policy(KW_IDENTITY, GHA_ISSUER, &root);
    let prepared = PreparedPolicy::load(&policy).unwrap();
    let err = verify::evaluate(&other, &prepared, &candidates, SystemTime::now()).unwrap_err();
    assert_eq!(err.reason(), "SubjectDigestMismatch", "{err}");

    // An unreadable or invalid trusted root is an error (exit 2), not "unverified".
    let missing = keyless_policy(KW_IDENTITY, GHA_ISSUER, &work.path().join("nope.json"));
    let err = PreparedPolicy::load(&missing).unwrap_err();
    assert_eq!(err.reason(), "TrustRootInvalid");
    assert!(!err.is_unverified());
    let not_a_root = keyless_policy(KW_IDENTITY, GHA_ISSUER, &testdata("policy/ci.pub"));
    assert!(matches!(
        PreparedPolicy::load(&not_a_root).unwrap_err(),
        VerifyError::TrustedRoot { .. }
    ));
}

/// A key-based bundle tresor's CLI finds and verifies on a layout and on the real registry
/// (Distribution 2.8: no referrers API, so through the fallback tag).
#[test]
fn key_bundle_verifies_through_the_cli_on_a_layout_and_the_registry() {
    let work = tempfile::tempdir().unwrap();
    let (key, public) = keypair(work.path(), "ci");
    let (_, other_public) = keypair(work.path(), "other");
    let rt = runtime();

    let layout = work.path().join("layout");
    let layout_ref = format!("oci-layout:{}:v1", layout.display());
    let registry = TestRegistry::plain();
    let remote_ref = format!("{}:v1", registry.repo("bundle"));
    for (reference, flags) in [(layout_ref, vec![]), (remote_ref, registry.flags.clone())] {
        let digest = push(&reference, &flags);
        let parsed: Reference = reference.parse().unwrap();
        let options = RegistryOptions {
            plain_http: !flags.is_empty(),
            ..RegistryOptions::default()
        };
        let repo = Repository::open(&parsed, &options).unwrap();
        rt.block_on(attach(&repo, &digest, &key_bundle(&key, &digest)));

        let mut cmd = tresor();
        cmd.args([
            "verify",
            &reference,
            "--key",
            s(&public),
            "--format",
            "json",
        ])
        .args(&flags);
        let v = json_of(cmd);
        assert_eq!(v["verified"], true, "{v}");
        assert_eq!(v["digest"], digest.to_string());
        let sig = &v["signatures"][0];
        assert_eq!(sig["signer"]["kind"], "key");
        assert!(
            sig["source"]
                .as_str()
                .unwrap()
                .starts_with("referrer sha256:"),
            "{sig}"
        );

        let mut cmd = tresor();
        cmd.args(["verify", &reference, "--key", s(&other_public)])
            .args(&flags);
        let (reason, stderr) = failure(cmd, 1);
        assert_eq!(reason, "SignatureInvalid", "{stderr}");
    }
}

/// Regression: cosign v2.6.5 (`cosign sign --new-bundle-format`) writes the fallback index
/// through go-containerregistry, whose entry names the referrer's config media type
/// (`application/vnd.oci.empty.v1+json`) as `artifactType`, not the bundle type; tresor
/// filtered on the bundle type and found no signature. Such an entry, or one without an
/// `artifactType`, is read and decided by its manifest (tests/interop_cosign.rs checks the
/// real cosign).
#[test]
fn a_fallback_index_entry_naming_the_config_media_type_is_read_as_a_bundle() {
    let work = tempfile::tempdir().unwrap();
    let (key, public) = keypair(work.path(), "ci");
    let rt = runtime();
    for listed in [Some(EMPTY_MEDIA_TYPE), None] {
        let layout = work.path().join(format!("layout-{}", listed.is_some()));
        let reference = format!("oci-layout:{}:v1", layout.display());
        let digest = push(&reference, &[]);
        let repo =
            Repository::open(&reference.parse().unwrap(), &RegistryOptions::default()).unwrap();
        let a = attachment_listed_as(&digest, &key_bundle(&key, &digest), listed);
        rt.block_on(async {
            for (d, data) in a.blobs {
                repo.push_blob(&d, data.into()).await.unwrap();
            }
            repo.push_manifest(OCI_MANIFEST_MEDIA_TYPE, &a.referrer, None)
                .await
                .unwrap();
            repo.push_manifest(OCI_INDEX_MEDIA_TYPE, &a.index, Some(&fallback_tag(&digest)))
                .await
                .unwrap();
        });

        let v = json_of(tresor().args([
            "verify",
            &reference,
            "--key",
            s(&public),
            "--format",
            "json",
        ]));
        assert_eq!(v["verified"], true, "{listed:?}: {v}");
        let source = v["signatures"][0]["source"].as_str().unwrap();
        assert_eq!(source, format!("referrer {}", Digest::of(&a.referrer)));
    }
}

/// Bundle discovery reads the referrers API (404, then the fallback index; or the API's
/// index), the referrer manifest and the bundle blob, and nothing of the artifact but its
/// manifest.
#[test]
fn bundle_discovery_never_requests_the_artifact_layer() {
    let work = tempfile::tempdir().unwrap();
    let (key, public) = keypair(work.path(), "ci");
    let (_, other_public) = keypair(work.path(), "other");
    let layer = gzip(&tar(&[Entry::file(
        "a.yaml",
        b"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n",
    )]));
    let layer_descriptor = Descriptor::for_bytes(CONTENT_MEDIA_TYPE, &layer);
    let artifact = ImageManifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST_MEDIA_TYPE.into()),
        artifact_type: None,
        config: Descriptor::for_bytes(CONFIG_MEDIA_TYPE, b"{}"),
        layers: vec![layer_descriptor.clone()],
        subject: None,
        annotations: BTreeMap::new(),
    }
    .to_bytes();
    let digest = Digest::of(&artifact);
    let attached = attachment(&digest, &key_bundle(&key, &digest));
    let referrer_digest = Digest::of(&attached.referrer);
    let mut content = Content::default();
    content
        .blobs
        .insert(layer_descriptor.digest.to_string(), layer);
    for (d, data) in &attached.blobs {
        content.blobs.insert(d.to_string(), data.clone());
    }
    for at in ["v1".to_string(), digest.to_string()] {
        content
            .manifests
            .insert(at, (OCI_MANIFEST_MEDIA_TYPE.into(), artifact.clone()));
    }
    content.manifests.insert(
        referrer_digest.to_string(),
        (OCI_MANIFEST_MEDIA_TYPE.into(), attached.referrer.clone()),
    );
    content.manifests.insert(
        fallback_tag(&digest),
        (OCI_INDEX_MEDIA_TYPE.into(), attached.index.clone()),
    );
    let fake_content = content.clone();
    let fake = FakeRegistry::start(content);
    let reference = format!("{}:v1", fake.repo("app"));

    stdout_of(tresor().args(["verify", &reference, "--key", s(&public), "--plain-http"]));
    let requests = fake.requests();
    let expected = [
        "GET /v2/app/manifests/v1".to_string(),
        format!("GET /v2/app/manifests/{}", signature_tag(&digest)),
        format!("GET /v2/app/referrers/{digest}"),
        format!("GET /v2/app/manifests/{}", fallback_tag(&digest)),
        format!("GET /v2/app/manifests/{referrer_digest}"),
        format!("GET /v2/app/blobs/{}", attached.bundle_digest),
    ];
    for e in &expected {
        assert!(requests.contains(e), "missing {e}: {requests:?}");
    }
    for r in &requests {
        assert!(
            r == "GET /v2/" || expected.contains(r),
            "unexpected request {r}: {requests:?}"
        );
    }

    // A registry with the referrers API: the bundle is found there, without a fallback tag.
    let mut content = fake_content.clone();
    let index = content.manifests.remove(&fallback_tag(&digest)).unwrap();
    content
        .manifests
        .insert(format!("referrers/{digest}"), index);
    let with_api = FakeRegistry::start(content);
    let v = json_of(tresor().args([
        "verify",
        &format!("{}:v1", with_api.repo("app")),
        "--key",
        s(&public),
        "--plain-http",
        "--format",
        "json",
    ]));
    assert_eq!(
        v["signatures"][0]["source"],
        format!("referrer {referrer_digest}")
    );
    let requests = with_api.requests();
    assert!(
        requests.contains(&format!("GET /v2/app/blobs/{}", attached.bundle_digest)),
        "{requests:?}"
    );
    assert!(
        requests
            .iter()
            .all(|r| !r.contains(&format!("/blobs/{}", layer_descriptor.digest))),
        "{requests:?}"
    );

    fake.clear_requests();
    let (reason, _) = failure(
        {
            let mut cmd = tresor();
            cmd.args([
                "verify",
                &reference,
                "--key",
                s(&other_public),
                "--plain-http",
            ]);
            cmd
        },
        1,
    );
    assert_eq!(reason, "SignatureInvalid");
    let layer_path = format!("/blobs/{}", layer_descriptor.digest);
    assert!(
        fake.requests().iter().all(|r| !r.contains(&layer_path)),
        "{:?}",
        fake.requests()
    );
}

// --- keyless legacy signatures from a test PKI (tests/common/pki.rs) ---------------------

/// Writes a `.sig` manifest for `digest` with one layer: `payload` and `annotations`.
fn put_keyless_sig(
    layout: &Path,
    digest: &Digest,
    payload: &[u8],
    annotations: BTreeMap<String, String>,
) {
    let repo = tresor::registry::layout::LayoutRepository::new(layout);
    let mut layer = Descriptor::for_bytes(SIMPLE_SIGNING_MEDIA_TYPE, payload);
    layer.annotations = annotations;
    repo.push_blob(&layer.digest, payload).unwrap();
    let config = Descriptor::for_bytes("application/vnd.oci.image.config.v1+json", b"{}");
    repo.push_blob(&config.digest, b"{}").unwrap();
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST_MEDIA_TYPE.into()),
        artifact_type: None,
        config,
        layers: vec![layer],
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

/// A keyless legacy signature (fake Fulcio + Rekor) verifies through `tresor verify` with the
/// keyless flags; another identity, issuer or trusted root does not; a policy mixing a key
/// and this keyless signer with `require: all` needs both signatures.
#[test]
fn keyless_legacy_signature_and_mixed_policy_through_the_cli() {
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let reference = format!("oci-layout:{}:v1", layout.display());
    let digest = push(&reference, &[]);

    let fulcio = ca("fake fulcio");
    let rekor = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let root = work.path().join("trusted_root.json");
    std::fs::write(&root, trusted_root_json(&fulcio, &rekor)).unwrap();
    let other_root = work.path().join("other_root.json");
    std::fs::write(
        &other_root,
        trusted_root_json(&ca("another fulcio"), &rekor),
    )
    .unwrap();

    let (leaf_key, leaf_pem) = leaf(&fulcio, GHA_ISSUER);
    let payload = payload::simple_signing("registry.test/acme/app", &digest);
    put_keyless_sig(
        &layout,
        &digest,
        &payload,
        keyless_annotations(&leaf_key, &leaf_pem, &rekor, &payload),
    );

    let keyless = |identity: &str, issuer: &str, root: &Path| {
        let mut cmd = tresor();
        cmd.args(["verify", &reference])
            .args(["--certificate-identity", identity])
            .args(["--certificate-oidc-issuer", issuer])
            .args(["--trusted-root", s(root)]);
        cmd
    };
    let mut cmd = keyless(IDENTITY, GHA_ISSUER, &root);
    cmd.args(["--format", "json"]);
    let v = json_of(cmd);
    assert_eq!(v["verified"], true);
    assert_eq!(
        v["signatures"][0]["signer"],
        json!({"kind": "certificate", "identity": IDENTITY, "issuer": GHA_ISSUER})
    );
    let text = stdout_of(keyless(IDENTITY, GHA_ISSUER, &root));
    assert!(
        text.contains(&format!(
            "signed by keyless: {IDENTITY} (issuer {GHA_ISSUER})"
        )),
        "{text}"
    );
    // Anchored regexps work too.
    let mut cmd = tresor();
    cmd.args(["verify", &reference])
        .args([
            "--certificate-identity-regexp",
            "https://github.com/acme/app/.*",
        ])
        .args(["--certificate-oidc-issuer-regexp", "https://token\\..*"])
        .args(["--trusted-root", s(&root)]);
    stdout_of(cmd);

    let (reason, stderr) = failure(
        keyless(&IDENTITY.replace("acme", "evil"), GHA_ISSUER, &root),
        1,
    );
    assert_eq!(reason, "IdentityMismatch", "{stderr}");
    let (reason, stderr) = failure(keyless(IDENTITY, "https://accounts.google.com", &root), 1);
    assert_eq!(reason, "IssuerMismatch", "{stderr}");
    let (reason, stderr) = failure(keyless(IDENTITY, GHA_ISSUER, &other_root), 1);
    assert_eq!(reason, "CertificateChainInvalid", "{stderr}");
    // Issue 16: a readable time and the flag that gave the root, not an epoch number and
    // webpki's Debug variant.
    assert!(
        stderr.contains(&format!("--trusted-root {}", other_root.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains("it was issued by none of the root's certificate authorities"),
        "{stderr}"
    );
    assert!(!stderr.contains("UnknownIssuer"), "{stderr}");
    assert!(
        regex::Regex::new(
            r"valid at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(when the signature was logged\)"
        )
        .unwrap()
        .is_match(&stderr),
        "{stderr}"
    );
    let (_, stderr) = failure(
        keyless(IDENTITY, GHA_ISSUER, &work.path().join("missing.json")),
        2,
    );
    assert!(stderr.contains("missing.json"), "{stderr}");

    // Key + keyless, require all: the keyless layer alone is not enough; a key signature
    // appended to the same `.sig` manifest completes it.
    let key_dir = work.path().join("ci");
    std::fs::create_dir_all(&key_dir).unwrap();
    let files = keys::write_key_pair(&key_dir, PASSWORD.as_bytes()).unwrap();
    let policy = work.path().join("policy.yaml");
    let write_policy = |identity: &str| {
        std::fs::write(
            &policy,
            format!(
                "apiVersion: tresor.dev/v1alpha1\nkind: TrustPolicy\nspec:\n  authorities:\n    \
                 - name: ci\n      key:\n        path: ci/cosign.pub\n    - name: release\n      \
                 keyless:\n        identity: {identity}\n        issuer: {GHA_ISSUER}\n        \
                 trustedRoot: trusted_root.json\n  require: all\n"
            ),
        )
        .unwrap();
    };
    write_policy(IDENTITY);
    let (reason, stderr) = failure(
        {
            let mut cmd = tresor();
            cmd.args(["verify", &reference, "--policy", s(&policy)]);
            cmd
        },
        1,
    );
    assert_eq!(reason, "PolicyNotSatisfied", "{stderr}");
    stdout_of(tresor().env("COSIGN_PASSWORD", PASSWORD).args([
        "sign",
        &reference,
        "--key",
        s(&files.private_key),
    ]));
    let v = json_of(tresor().args([
        "verify",
        &reference,
        "--policy",
        s(&policy),
        "--format",
        "json",
    ]));
    assert_eq!(v["satisfied"], json!(["ci", "release"]));
    assert_eq!(v["require"], "all (2)");
    // The keyless layer survived the append.
    assert!(
        v["signatures"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["signer"]["identity"] == IDENTITY
                && s["source"].as_str().unwrap().ends_with("layer 0")),
        "{v}"
    );
    write_policy("https://github.com/acme/app/.github/workflows/other.yml@refs/heads/main");
    let (reason, stderr) = failure(
        {
            let mut cmd = tresor();
            cmd.args(["verify", &reference, "--policy", s(&policy)]);
            cmd
        },
        1,
    );
    assert_eq!(reason, "PolicyNotSatisfied", "{stderr}");
    assert!(stderr.contains("release (keyless"), "{stderr}");
}

/// Issue 12 point 1: one signature credits at most one authority. Two keyless authorities
/// whose matchers overlap (an exact identity and a regexp that also matches it) used to be
/// both satisfied by the same `.sig` layer, so `require: 2` passed with one signer. Distinct
/// signers are counted now: one keyless signature satisfies one of the two.
#[test]
fn regression_issue12_one_keyless_signature_credits_one_authority() {
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let reference = format!("oci-layout:{}:v1", layout.display());
    let digest = push(&reference, &[]);
    let fulcio = ca("fake fulcio");
    let rekor = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    std::fs::write(
        work.path().join("trusted_root.json"),
        trusted_root_json(&fulcio, &rekor),
    )
    .unwrap();
    let (leaf_key, leaf_pem) = leaf(&fulcio, GHA_ISSUER);
    let payload = payload::simple_signing("registry.test/acme/app", &digest);
    put_keyless_sig(
        &layout,
        &digest,
        &payload,
        keyless_annotations(&leaf_key, &leaf_pem, &rekor, &payload),
    );
    let policy = work.path().join("policy.yaml");
    let write_policy = |require: &str| {
        std::fs::write(
            &policy,
            format!(
                "apiVersion: tresor.dev/v1alpha1\nkind: TrustPolicy\nspec:\n  authorities:\n    \
                 - name: release\n      keyless:\n        identity: {IDENTITY}\n        \
                 issuer: {GHA_ISSUER}\n        trustedRoot: trusted_root.json\n    \
                 - name: acme-workflows\n      keyless:\n        \
                 identityRegexp: https://github.com/acme/.*\n        issuer: {GHA_ISSUER}\n        \
                 trustedRoot: trusted_root.json\n  require: {require}\n"
            ),
        )
        .unwrap();
    };
    write_policy("2");
    let (reason, stderr) = failure(
        {
            let mut cmd = tresor();
            cmd.args(["verify", &reference, "--policy", s(&policy)]);
            cmd
        },
        1,
    );
    assert_eq!(reason, "PolicyNotSatisfied", "{stderr}");
    assert!(stderr.contains("satisfied by 1"), "{stderr}");
    // With `any`, the one signer is credited to exactly one authority.
    write_policy("any");
    let v = json_of(tresor().args([
        "verify",
        &reference,
        "--policy",
        s(&policy),
        "--format",
        "json",
    ]));
    assert_eq!(v["satisfied"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["signatures"].as_array().unwrap().len(), 1, "{v}");
}

/// cosign's own keyless v3 bundle (public-good Fulcio and Rekor) through the puller's
/// conversion of a CRD keyless authority: verifies for its identity (exact and regexp), not
/// for another; a trusted root that is not one is refused with the Secret named. (Moved
/// from tests/puller_sources.rs, which tested the puller against the API double.)
#[test]
fn cosign_keyless_bundle_verifies_through_the_crd_authority_conversion() {
    use tresor::api::KeylessAuthority;
    use tresor::puller::keyless_authority;
    let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/cosign/bundles");
    let root = std::fs::read(testdata.join("trusted_root.json")).unwrap();
    let bundle = std::fs::read(testdata.join("bundle_v03.json")).unwrap();
    let digest: Digest = KW_DIGEST.parse().unwrap();
    let artifact = common::pki::subject_at(
        format!("oci://ghcr.io/kubewarden/controller@{digest}")
            .parse()
            .unwrap(),
        digest,
    );
    let candidates = [Candidate::Bundle {
        source: "referrer sha256:test".into(),
        bytes: bundle.into(),
    }];
    let check = |keyless: KeylessAuthority| {
        let authority = keyless_authority(&keyless, &root, "Secret default/sigstore").unwrap();
        let policy = TrustPolicy::new(
            vec![NamedAuthority {
                name: "release".into(),
                authority,
            }],
            Require::Any,
            Path::new("<test>"),
        )
        .unwrap();
        let prepared = PreparedPolicy::load(&policy).unwrap();
        verify::evaluate(&artifact, &prepared, &candidates, SystemTime::now())
    };
    let exact = check(KeylessAuthority {
        identity: Some(KW_IDENTITY.into()),
        issuer: Some(GHA_ISSUER.into()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        exact.signatures[0].signer,
        Signer::Certificate {
            identity: KW_IDENTITY.into(),
            issuer: GHA_ISSUER.into()
        }
    );
    check(KeylessAuthority {
        identity_regexp: Some("https://github.com/kubewarden/.*".into()),
        issuer: Some(GHA_ISSUER.into()),
        ..Default::default()
    })
    .unwrap();
    let err = check(KeylessAuthority {
        identity_regexp: Some("https://github.com/acme/.*".into()),
        issuer: Some(GHA_ISSUER.into()),
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(err.reason(), "IdentityMismatch", "{err}");

    let keyless = KeylessAuthority {
        identity: Some(KW_IDENTITY.into()),
        issuer: Some(GHA_ISSUER.into()),
        ..Default::default()
    };
    let err = keyless_authority(&keyless, b"{}", "Secret default/sigstore").unwrap_err();
    assert!(err.starts_with("Secret default/sigstore: "), "{err}");
    let no_issuer = KeylessAuthority {
        identity: Some(KW_IDENTITY.into()),
        ..Default::default()
    };
    let err = keyless_authority(&no_issuer, &root, "Secret default/sigstore").unwrap_err();
    assert!(err.contains("issuer"), "{err}");
}

// --- real public-good keyless legacy `.sig` (containers/image fixture) ---------------------

/// Identity and issuer of the Fulcio certificate in `cosign/legacy-keyless/signature-1`.
const CI_IMAGE_IDENTITY: &str = "mitr@redhat.com";
const CI_IMAGE_ISSUER: &str = "https://github.com/login/oauth";
/// Digest of `cosign/legacy-keyless/manifest.json`, the one its signature names.
const CI_IMAGE_DIGEST: &str =
    "sha256:0489474da8ea22426ece86ace6c1c0026ab2fd3cdfbbd62b7e94650266c37d9a";

/// An OCI layout holding `manifest` (tagged `signed`, its blobs absent) and a `.sig` manifest
/// for its digest with the containers/image signature file `signature` as its one layer: the
/// payload as blob, every annotation as stored (signature, certificate, chain, Rekor bundle).
fn keyless_fixture_layout(layout: &Path, manifest: &Path, signature: &Path) -> (String, Digest) {
    let repo = tresor::registry::layout::LayoutRepository::new(layout);
    let digest = repo
        .push_manifest(
            tresor::artifact::format::DOCKER_MANIFEST_MEDIA_TYPE,
            &std::fs::read(manifest).unwrap(),
            Some("signed"),
        )
        .unwrap();
    let raw = std::fs::read(signature).unwrap();
    let doc: Value =
        serde_json::from_slice(raw.strip_prefix(b"\x00sigstore-json\n".as_slice()).unwrap())
            .unwrap();
    assert_eq!(doc["mimeType"], SIMPLE_SIGNING_MEDIA_TYPE);
    let payload = STANDARD.decode(doc["payload"].as_str().unwrap()).unwrap();
    let annotations: BTreeMap<String, String> =
        serde_json::from_value(doc["annotations"].clone()).unwrap();
    put_keyless_sig(layout, &digest, &payload, annotations);
    (format!("oci-layout:{}:signed", layout.display()), digest)
}

/// Task B of issue 13: a keyless legacy `.sig` layer made by real cosign against public-good
/// Fulcio and Rekor (Fulcio certificate valid for ten minutes in January 2023, so long
/// expired: only the Rekor integrated time proves it was valid when used) verifies offline
/// against the public-good trusted root for its identity and issuer, and fails for another
/// identity, another issuer, another trusted root or another manifest, each with its reason.
#[test]
fn issue13_real_public_good_keyless_legacy_signature_verifies_offline() {
    let work = tempfile::tempdir().unwrap();
    let vectors = testdata("cosign/legacy-keyless");
    let root = testdata("cosign/bundles/trusted_root.json");
    let (reference, digest) = keyless_fixture_layout(
        &work.path().join("valid"),
        &vectors.join("manifest.json"),
        &vectors.join("signature-1"),
    );
    assert_eq!(digest.to_string(), CI_IMAGE_DIGEST);
    let keyless = |reference: &str, identity: &str, issuer: &str, root: &Path| {
        let mut cmd = tresor();
        cmd.args(["verify", reference])
            .args(["--certificate-identity", identity])
            .args(["--certificate-oidc-issuer", issuer])
            .args(["--trusted-root", s(root)]);
        cmd
    };

    let mut cmd = keyless(&reference, CI_IMAGE_IDENTITY, CI_IMAGE_ISSUER, &root);
    cmd.args(["--format", "json"]);
    let v = json_of(cmd);
    assert_eq!(v["verified"], true);
    assert_eq!(v["digest"], CI_IMAGE_DIGEST);
    assert_eq!(v["kind"], "container-image");
    assert_eq!(
        v["signatures"][0]["signer"],
        json!({"kind": "certificate", "identity": CI_IMAGE_IDENTITY, "issuer": CI_IMAGE_ISSUER})
    );
    // Regexps (anchored) match it too.
    let mut cmd = tresor();
    cmd.args(["verify", &reference])
        .args(["--certificate-identity-regexp", ".*@redhat\\.com"])
        .args([
            "--certificate-oidc-issuer-regexp",
            "https://github\\.com/.*",
        ])
        .args(["--trusted-root", s(&root)]);
    stdout_of(cmd);

    let (reason, stderr) = failure(
        keyless(&reference, "someone@redhat.com", CI_IMAGE_ISSUER, &root),
        1,
    );
    assert_eq!(reason, "IdentityMismatch", "{stderr}");
    assert!(stderr.contains(CI_IMAGE_IDENTITY), "{stderr}");
    let (reason, stderr) = failure(keyless(&reference, CI_IMAGE_IDENTITY, GHA_ISSUER, &root), 1);
    assert_eq!(reason, "IssuerMismatch", "{stderr}");
    assert!(stderr.contains(CI_IMAGE_ISSUER), "{stderr}");

    // The test PKI's trusted root: the certificate does not chain to it.
    let fulcio = ca("fake fulcio");
    let rekor = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let other_root = work.path().join("other_root.json");
    std::fs::write(&other_root, trusted_root_json(&fulcio, &rekor)).unwrap();
    let (reason, stderr) = failure(
        keyless(&reference, CI_IMAGE_IDENTITY, CI_IMAGE_ISSUER, &other_root),
        1,
    );
    assert!(
        ["CertificateChainInvalid", "TlogEntryInvalid"].contains(&reason.as_str()),
        "{reason}: {stderr}"
    );

    // The same signature stored for another manifest: it names a different digest.
    let (modified, other) = keyless_fixture_layout(
        &work.path().join("modified"),
        &testdata("cosign/legacy/valid/manifest.json"),
        &vectors.join("signature-1"),
    );
    let (reason, stderr) = failure(
        keyless(&modified, CI_IMAGE_IDENTITY, CI_IMAGE_ISSUER, &root),
        1,
    );
    assert_eq!(reason, "PayloadDigestMismatch", "{stderr}");
    assert!(stderr.contains(CI_IMAGE_DIGEST), "{stderr}");
    assert!(stderr.contains(&other.to_string()), "{stderr}");
}

/// The certificate of the public-good vector expired in January 2023: verification takes the
/// time from the Rekor SET, so it passes at any later `now`, and fails when `now` is before
/// the log entry (a SET from the future is not accepted).
#[test]
fn issue13_expired_fulcio_certificate_counts_at_the_rekor_integrated_time() {
    let work = tempfile::tempdir().unwrap();
    let vectors = testdata("cosign/legacy-keyless");
    let (reference, digest) = keyless_fixture_layout(
        &work.path().join("layout"),
        &vectors.join("manifest.json"),
        &vectors.join("signature-1"),
    );
    let reference: Reference = reference.parse().unwrap();
    let repo = Repository::open(&reference, &RegistryOptions::default()).unwrap();
    let candidates = runtime()
        .block_on(verify::collect_candidates(&repo, &digest))
        .unwrap();
    assert_eq!(candidates.len(), 1);
    let policy = keyless_policy(
        CI_IMAGE_IDENTITY,
        CI_IMAGE_ISSUER,
        &testdata("cosign/bundles/trusted_root.json"),
    );
    let prepared = PreparedPolicy::load(&policy).unwrap();
    let subject = common::pki::subject_at(reference, digest);
    let at = |unix: u64| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(unix);
    // Integrated 2023-01-20T20:51:33Z; certificate valid 20:51:31 to 21:01:31.
    for now in [
        at(1_674_247_893 + 3600),
        at(1_900_000_000),
        SystemTime::now(),
    ] {
        let v = verify::evaluate(&subject, &prepared, &candidates, now).unwrap();
        assert_eq!(v.satisfied, vec!["release".to_string()]);
    }
    let err = verify::evaluate(&subject, &prepared, &candidates, at(1_600_000_000)).unwrap_err();
    assert!(err.is_unverified(), "{err}");
}
