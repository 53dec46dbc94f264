//! Issue 13 "Verifying any image": `tresor sign` and `tresor verify` work on the digest of
//! whatever manifest a reference resolves to — container images (Docker v2 schema 2 and OCI,
//! pushed by the real `crane`), OCI image indexes and Docker manifest lists — on the real
//! local registry and on an OCI layout skopeo wrote, without reading a layer; keys, keyless,
//! trust policies and attestations alike. `pull`, `sync` and the reconcile engine (which
//! `apply` and the puller run) still refuse what is not an artifact.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::pki::{ca, keyless_annotations, leaf, trusted_root_json, IDENTITY};
use common::tarball::{gzip, tar, Entry};
use common::{json_of, stderr_of_failure, stdout_of, tresor, TestRegistry};
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256};
use serde_json::json;
use tresor::artifact::archive::Limits;
use tresor::artifact::format::{Descriptor, ImageManifest, OCI_MANIFEST_MEDIA_TYPE};
use tresor::digest::Digest;
use tresor::reconcile::cache::Cache;
use tresor::reconcile::source::Source;
use tresor::reconcile::target::Target;
use tresor::reconcile::{AllowUnsigned, Cancel, Engine, NoPolicy, Outcome, Retry, Step};
use tresor::registry::layout::LayoutRepository;
use tresor::registry::{RegistryOptions, Repository};
use tresor::signing::attestation::{self, BuildContext};
use tresor::signing::keys::{self, PrivateKey};
use tresor::signing::legacy::signature_tag;
use tresor::signing::payload::{self, SIMPLE_SIGNING_MEDIA_TYPE};

const PASSWORD: &str = "test-password";
const GHA_ISSUER: &str = "https://token.actions.githubusercontent.com";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A cosign key pair in `dir/name/` (cosign.key, cosign.pub).
fn keypair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    let files = keys::write_key_pair(&d, PASSWORD.as_bytes()).unwrap();
    (files.private_key, files.public_key)
}

/// Runs crane with `args`; returns its stdout.
fn crane(args: &[&str]) -> String {
    let mut args = args.to_vec();
    args.push("--insecure");
    common::peers::run("crane", &args)
}

/// Images crane pushed into one repository of the plain registry: (tag, digest) of each.
struct Images {
    /// `oci://host/repo`.
    repo: String,
    docker: String,
    oci: String,
    index: String,
    list: String,
}

impl Images {
    fn reference(&self, tag: &str) -> String {
        format!("{}:{tag}", self.repo)
    }
}

/// A container image root filesystem layer: a directory, a file and a symlink, like any
/// image (a symlink is something tresor's extraction refuses).
fn rootfs_layer(work: &Path) -> PathBuf {
    let layer = gzip(&tar(&[
        Entry::file("etc/hello", b"hello from an image\n"),
        Entry::link("bin/sh", b'2', "/bin/busybox"),
    ]));
    let path = work.join("layer.tar.gz");
    std::fs::write(&path, layer).unwrap();
    path
}

/// Pushes, with crane: a Docker v2 schema 2 image (`:docker`), an OCI image (`:oci`; its
/// layer is `application/vnd.oci.image.layer.v1.tar+gzip`), an OCI index of both (`:index`)
/// and a Docker manifest list (`:list`).
fn push_images(registry: &TestRegistry, work: &Path) -> Images {
    let repo = registry.repo("images");
    let plain = repo.trim_start_matches("oci://").to_string();
    let layer = rootfs_layer(work);
    let digest_of = |printed: String| {
        let digest = printed.trim().rsplit('@').next().unwrap().to_string();
        assert!(digest.starts_with("sha256:"), "{printed}");
        digest
    };
    let docker = digest_of(crane(&[
        "append",
        "-f",
        s(&layer),
        "-t",
        &format!("{plain}:docker"),
    ]));
    let oci = digest_of(crane(&[
        "append",
        "--oci-empty-base",
        "-f",
        s(&layer),
        "-t",
        &format!("{plain}:oci"),
    ]));
    let index = digest_of(crane(&[
        "index",
        "append",
        "-m",
        &format!("{plain}@{docker}"),
        "-m",
        &format!("{plain}@{oci}"),
        "-t",
        &format!("{plain}:index"),
    ]));
    let list = digest_of(crane(&[
        "index",
        "append",
        "--docker-empty-base",
        "-m",
        &format!("{plain}@{docker}"),
        "-t",
        &format!("{plain}:list"),
    ]));
    // What crane pushed is what it says it is.
    let raw = crane(&["manifest", &format!("{plain}:index")]);
    assert_eq!(Digest::of(raw.as_bytes()).to_string(), index);
    assert!(raw.contains(OCI_INDEX), "{raw}");
    Images {
        repo,
        docker,
        oci,
        index,
        list,
    }
}

fn sign(registry: &TestRegistry, reference: &str, key: &Path) -> serde_json::Value {
    let mut cmd = registry.tresor(&["sign", reference, "--key", s(key), "--format", "json"]);
    cmd.env("COSIGN_PASSWORD", PASSWORD);
    json_of(cmd)
}

/// Each kind of image is signed and verified by its own digest: the right key passes
/// (exit 0) and the output names the media type; unsigned and a wrong key fail (exit 1).
/// The index's signature is for the index digest only, not for the images in it.
#[test]
fn issue13_container_images_and_indexes_sign_and_verify_on_the_registry() {
    let registry = TestRegistry::plain();
    let work = tempfile::tempdir().unwrap();
    let images = push_images(&registry, work.path());
    let (key, public) = keypair(work.path(), "security");
    let (_, other_public) = keypair(work.path(), "other");
    let verify = |reference: &str, public: &Path| {
        registry.tresor(&["verify", reference, "--key", s(public)])
    };

    let cases = [
        (
            "index",
            &images.index,
            OCI_INDEX,
            "image-index",
            "image index",
        ),
        (
            "list",
            &images.list,
            DOCKER_LIST,
            "image-index",
            "image index",
        ),
        (
            "docker",
            &images.docker,
            DOCKER_MANIFEST,
            "container-image",
            "container image",
        ),
        (
            "oci",
            &images.oci,
            OCI_MANIFEST,
            "container-image",
            "container image",
        ),
    ];
    for (tag, digest, media_type, kind, kind_text) in cases {
        let reference = images.reference(tag);
        let err = stderr_of_failure(verify(&reference, &public), 1);
        assert!(err.contains("is not signed"), "{tag}: {err}");
        assert!(
            err.contains(&signature_tag(&digest.parse().unwrap())),
            "{err}"
        );

        let signed = sign(&registry, &reference, &key);
        assert_eq!(signed["signatures"], 1, "{tag}: {signed}");

        let v = json_of(verify(&reference, &public).args(["--format", "json"]));
        assert_eq!(v["verified"], true, "{tag}");
        assert_eq!(v["digest"], digest.as_str(), "{tag}");
        assert_eq!(v["media_type"], media_type, "{tag}");
        assert_eq!(v["kind"], kind, "{tag}");
        let text = stdout_of(verify(&reference, &public));
        assert!(
            text.contains(&format!("  type      {kind_text} ({media_type})")),
            "{tag}: {text}"
        );
        // By digest, as cosign addresses it.
        stdout_of(verify(&format!("{}@{digest}", images.repo), &public));

        let err = stderr_of_failure(verify(&reference, &other_public), 1);
        assert!(
            err.contains("no valid signature from a trusted authority"),
            "{tag}: {err}"
        );
        let v = {
            let out = verify(&reference, &other_public)
                .args(["--format", "json"])
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(1));
            serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
        };
        assert_eq!(v["verified"], false);
        assert_eq!(v["kind"], kind, "{tag}");

        if tag == "index" {
            // Signing the index signed its digest, not the images it lists.
            let err = stderr_of_failure(verify(&images.reference("docker"), &public), 1);
            assert!(err.contains("is not signed"), "{err}");
        }
    }
}

/// `tresor pull` and `tresor sync` of a container image or an index are still refused as
/// "not an artifact" — also the OCI image whose tar+gzip layer the content-layer fallback
/// would otherwise unpack, and also when it is validly signed. The reconcile engine that
/// `apply` and the puller run refuses it at the resolve step, stalled, with nothing applied.
#[test]
fn issue13_pull_sync_and_the_engine_still_refuse_images_and_indexes() {
    let registry = TestRegistry::plain();
    let work = tempfile::tempdir().unwrap();
    let images = push_images(&registry, work.path());
    let (key, public) = keypair(work.path(), "ci");
    sign(&registry, &images.reference("oci"), &key);
    stdout_of(registry.tresor(&["verify", &images.reference("oci"), "--key", s(&public)]));

    for (tag, what) in [
        (
            "docker",
            "it is a container image (config application/vnd.docker.container.image.v1+json)",
        ),
        (
            "oci",
            "it is a container image (config application/vnd.oci.image.config.v1+json)",
        ),
        (
            "index",
            "it is an image index (application/vnd.oci.image.index.v1+json)",
        ),
        (
            "list",
            "it is an image index (application/vnd.docker.distribution.manifest.list.v2+json)",
        ),
    ] {
        let reference = images.reference(tag);
        let out = work.path().join(format!("pull-{tag}"));
        for trust in [vec!["--allow-unsigned"], vec!["--key", s(&public)]] {
            let mut args = vec!["pull", reference.as_str(), "-o", s(&out)];
            args.extend(&trust);
            let err = stderr_of_failure(registry.tresor(&args), 2);
            assert!(err.contains("is not an artifact"), "{tag}: {err}");
            assert!(err.contains(what), "{tag}: {err}");
            assert!(!out.exists(), "{tag}: pull created {}", out.display());
        }

        let dir = work.path().join(format!("sync-{tag}"));
        let sync = registry
            .tresor(&[
                "sync",
                &reference,
                "--dir",
                s(&dir),
                "--allow-unsigned",
                "--once",
                "--cache-dir",
                s(&work.path().join(format!("cache-{tag}"))),
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&sync.stderr);
        let stdout = String::from_utf8_lossy(&sync.stdout);
        assert!(!sync.status.success(), "{tag}: sync succeeded: {stdout}");
        assert!(
            format!("{stdout}{stderr}").contains("is not an artifact"),
            "{tag}: {stdout}{stderr}"
        );
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for tag in ["oci", "index"] {
        let reference: tresor::reference::Reference = images.reference(tag).parse().unwrap();
        let options = RegistryOptions {
            plain_http: true,
            retries: 0,
            timeout: Duration::from_secs(10),
            ..Default::default()
        };
        let engine_dir = work.path().join(format!("engine-{tag}"));
        let mut engine = Engine::new(
            Source::new(reference.clone(), None).unwrap(),
            Repository::open(&reference, &options).unwrap(),
            Arc::new(AllowUnsigned),
            Arc::new(NoPolicy),
            Cache::open(&engine_dir.join("cache")).unwrap(),
            Target::open(&engine_dir.join("site")).unwrap(),
            Limits::default(),
        );
        let summary = rt.block_on(engine.reconcile(&Cancel::never()));
        assert_ne!(summary.outcome, Outcome::Applied, "{tag}: {summary:?}");
        assert_eq!(summary.applied, None, "{tag}");
        let error = summary.error.expect("a failure");
        assert_eq!(error.step, Step::Resolve, "{tag}: {error:?}");
        assert_eq!(error.reason, "NotAnArtifact", "{tag}: {error:?}");
        assert_eq!(error.retry, Retry::Stalled, "{tag}: {error:?}");
    }
}

/// The OCI image copied by skopeo into a layout and stripped of its config and layer blobs
/// still verifies — nothing but manifests and signature blobs is read — with a key, a trust
/// policy file, a keyless signature (test PKI standing in for Fulcio and Rekor) and a signed
/// attestation; the wrong identity or issuer fails.
#[test]
fn issue13_image_verification_reads_no_layer_with_every_kind_of_authority() {
    let registry = TestRegistry::plain();
    let work = tempfile::tempdir().unwrap();
    let images = push_images(&registry, work.path());
    let layout = work.path().join("layout");
    let skopeo = Command::new("skopeo")
        .args([
            "copy",
            "--src-tls-verify=false",
            "--preserve-digests",
            &format!("docker://{}:oci", images.repo.trim_start_matches("oci://")),
            &format!("oci:{}:img", layout.display()),
        ])
        .output()
        .expect("skopeo is installed (.ci/run installs it)");
    assert!(
        skopeo.status.success(),
        "{}",
        String::from_utf8_lossy(&skopeo.stderr)
    );
    let digest: Digest = images.oci.parse().unwrap();
    let blob = |d: &Digest| layout.join("blobs/sha256").join(d.hex());
    let manifest: ImageManifest =
        serde_json::from_slice(&std::fs::read(blob(&digest)).unwrap()).unwrap();
    for d in std::iter::once(&manifest.config).chain(&manifest.layers) {
        std::fs::remove_file(blob(&d.digest)).unwrap();
    }
    let reference = format!("oci-layout:{}:img", layout.display());

    // Key, and a trust policy file naming it.
    let (key, public) = keypair(work.path(), "ci");
    let mut cmd = tresor();
    cmd.env("COSIGN_PASSWORD", PASSWORD)
        .args(["sign", &reference, "--key", s(&key)]);
    stdout_of(cmd);
    let v = json_of(tresor().args([
        "verify",
        &reference,
        "--key",
        s(&public),
        "--format",
        "json",
    ]));
    assert_eq!(v["digest"], images.oci.as_str());
    assert_eq!(v["kind"], "container-image");
    let policy = work.path().join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "apiVersion: tresor.dev/v1alpha1\nkind: TrustPolicy\nmetadata:\n  name: images\n\
             spec:\n  authorities:\n    - name: ci\n      key:\n        path: {}\n  require: any\n",
            public.display()
        ),
    )
    .unwrap();
    let v = json_of(tresor().args([
        "verify",
        &reference,
        "--policy",
        s(&policy),
        "--format",
        "json",
    ]));
    assert_eq!(v["satisfied"], json!(["ci"]));

    // Keyless: one more layer in the `.sig` manifest, from the test PKI.
    let fulcio = ca("fake fulcio");
    let rekor = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let root = work.path().join("trusted_root.json");
    std::fs::write(&root, trusted_root_json(&fulcio, &rekor)).unwrap();
    let (leaf_key, leaf_pem) = leaf(&fulcio, GHA_ISSUER);
    let signed_payload = payload::simple_signing("registry.test/acme/image", &digest);
    append_sig_layer(
        &layout,
        &digest,
        &signed_payload,
        keyless_annotations(&leaf_key, &leaf_pem, &rekor, &signed_payload),
    );
    let keyless = |identity: &str, issuer: &str| {
        let mut cmd = tresor();
        cmd.args(["verify", &reference])
            .args(["--certificate-identity", identity])
            .args(["--certificate-oidc-issuer", issuer])
            .args(["--trusted-root", s(&root), "--format", "json"]);
        cmd
    };
    let v = json_of(keyless(IDENTITY, GHA_ISSUER));
    assert_eq!(
        v["signatures"][0]["signer"],
        json!({"kind": "certificate", "identity": IDENTITY, "issuer": GHA_ISSUER})
    );
    assert_eq!(v["kind"], "container-image");
    let err = stderr_of_failure(keyless(&IDENTITY.replace("v1.0.0", "v9"), GHA_ISSUER), 1);
    assert!(err.contains("identity"), "{err}");
    stderr_of_failure(keyless(IDENTITY, "https://accounts.google.com"), 1);

    // An attestation on the image digest.
    let private = PrivateKey::from_file(&key, PASSWORD.as_bytes()).expect("the key written above");
    let parsed: tresor::reference::Reference = reference.parse().unwrap();
    let repository = Repository::open(&parsed, &RegistryOptions::default()).unwrap();
    let statement = attestation::provenance_statement(
        &parsed,
        &digest,
        Some("https://example.com/acme/image"),
        None,
        &BuildContext {
            builder_id: "https://example.com/builder".into(),
            invocation_id: None,
        },
    );
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(attestation::attest(
            &repository,
            &digest,
            &statement,
            &private,
        ))
        .unwrap();
    let v = json_of(tresor().args([
        "verify",
        &reference,
        "--attestation",
        "--key",
        s(&public),
        "--format",
        "json",
    ]));
    assert_eq!(v["kind"], "container-image");
    assert_eq!(v["statements"].as_array().unwrap().len(), 1);

    // The blobs stayed absent: nothing tried to restore or needed them.
    assert!(!blob(&manifest.layers[0].digest).exists());
}

/// Appends a layer (payload blob + annotations) to the `.sig` manifest of `digest` in a
/// layout, keeping the layers already there.
fn append_sig_layer(
    layout: &Path,
    digest: &Digest,
    payload: &[u8],
    annotations: BTreeMap<String, String>,
) {
    let repo = LayoutRepository::new(layout);
    let tag = signature_tag(digest);
    let fetched = repo
        .fetch_manifest(tresor::registry::ManifestRef::Tag(&tag))
        .unwrap();
    let mut manifest: ImageManifest = serde_json::from_slice(&fetched.bytes).unwrap();
    let mut layer = Descriptor::for_bytes(SIMPLE_SIGNING_MEDIA_TYPE, payload);
    layer.annotations = annotations;
    repo.push_blob(&layer.digest, payload).unwrap();
    manifest.layers.push(layer);
    repo.push_manifest(OCI_MANIFEST_MEDIA_TYPE, &manifest.to_bytes(), Some(&tag))
        .unwrap();
}

/// Runs the real cosign (v2) with `args` and COSIGN_PASSWORD; returns (success, output).
fn cosign(args: &[&str]) -> (bool, String) {
    let out = Command::new(common::peers::peer("cosign"))
        .args(args)
        .env("COSIGN_PASSWORD", PASSWORD)
        .env("COSIGN_YES", "true")
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// cosign and tresor agree on images and indexes in both directions: what tresor signs
/// (an index), `cosign verify --key` accepts; what cosign signs (a Docker image, an index),
/// `tresor verify --key` accepts, for the digest cosign signed and no other.
#[test]
fn issue13_cosign_and_tresor_agree_on_image_and_index_signatures() {
    let registry = TestRegistry::plain();
    let work = tempfile::tempdir().unwrap();
    let images = push_images(&registry, work.path());
    let plain = images.repo.trim_start_matches("oci://").to_string();
    let (key, public) = keypair(work.path(), "k");
    let insecure = ["--allow-http-registry", "--allow-insecure-registry"];

    sign(&registry, &images.reference("index"), &key);
    let mut args = vec!["verify", "--key", s(&public), "--insecure-ignore-tlog"];
    args.extend(insecure);
    let index = format!("{plain}:index");
    args.push(&index);
    let (ok, out) = cosign(&args);
    assert!(ok, "cosign verify of the tresor-signed index: {out}");
    assert!(out.contains(&images.index), "{out}");

    for tag in ["docker", "list"] {
        let target = format!("{plain}:{tag}");
        let mut args = vec!["sign", "--key", s(&key), "--tlog-upload=false"];
        args.extend(insecure);
        args.push(&target);
        let (ok, out) = cosign(&args);
        assert!(ok, "cosign sign {tag}: {out}");
        let v = json_of(registry.tresor(&[
            "verify",
            &images.reference(tag),
            "--key",
            s(&public),
            "--format",
            "json",
        ]));
        assert_eq!(v["verified"], true, "{tag}");
    }
    // cosign signed the list's digest, not the image in it or the other images.
    let err = stderr_of_failure(
        registry.tresor(&["verify", &images.reference("oci"), "--key", s(&public)]),
        1,
    );
    assert!(err.contains("is not signed"), "{err}");
}
