//! Verification against an in-process registry that logs every request: a wrongly signed
//! artifact is refused before any of its layers is requested.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use base64::Engine as _;
use common::fake_registry::{Content, FakeRegistry};
use common::tarball::{gzip, tar, Entry};
use common::{stderr_of_failure, tresor};
use tresor::artifact::format::{
    Descriptor, ImageManifest, CONFIG_MEDIA_TYPE, CONTENT_MEDIA_TYPE, OCI_MANIFEST_MEDIA_TYPE,
};
use tresor::digest::Digest;
use tresor::signing::keys;
use tresor::signing::legacy::{signature_tag, SIGNATURE_ANNOTATION};
use tresor::signing::payload::{self, SIMPLE_SIGNING_MEDIA_TYPE};

fn manifest(config: Descriptor, layers: Vec<Descriptor>) -> ImageManifest {
    ImageManifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST_MEDIA_TYPE.into()),
        artifact_type: None,
        config,
        layers,
        subject: None,
        annotations: Default::default(),
    }
}

/// An artifact served under `v1` (with its layer blob present) plus a `.sig` manifest
/// built by `sig_layers` from the artifact digest.
fn serve(
    sig_layers: impl FnOnce(&Digest, &mut Content) -> Vec<Descriptor>,
) -> (FakeRegistry, Descriptor) {
    let layer = gzip(&tar(&[Entry::file(
        "a.yaml",
        b"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n",
    )]));
    let layer_descriptor = Descriptor::for_bytes(CONTENT_MEDIA_TYPE, &layer);
    let artifact = manifest(
        Descriptor::for_bytes(CONFIG_MEDIA_TYPE, b"{}"),
        vec![layer_descriptor.clone()],
    )
    .to_bytes();
    let digest = Digest::of(&artifact);
    let mut content = Content::default();
    content
        .blobs
        .insert(layer_descriptor.digest.to_string(), layer);
    content
        .blobs
        .insert(Digest::of(b"{}").to_string(), b"{}".to_vec());
    content.manifests.insert(
        "v1".into(),
        (OCI_MANIFEST_MEDIA_TYPE.into(), artifact.clone()),
    );
    content.manifests.insert(
        digest.to_string(),
        (OCI_MANIFEST_MEDIA_TYPE.into(), artifact),
    );
    let layers = sig_layers(&digest, &mut content);
    let sig = manifest(
        Descriptor::for_bytes("application/vnd.oci.image.config.v1+json", b"{}"),
        layers,
    )
    .to_bytes();
    content.manifests.insert(
        signature_tag(&digest),
        (OCI_MANIFEST_MEDIA_TYPE.into(), sig),
    );
    (FakeRegistry::start(content), layer_descriptor)
}

#[test]
fn wrongly_signed_artifact_causes_zero_layer_requests_on_pull() {
    let trusted = keys::generate(b"").unwrap();
    let attacker = {
        let pair = keys::generate(b"pw").unwrap();
        keys::PrivateKey::from_encrypted_pem(
            pair.private_pem.as_bytes(),
            b"pw",
            std::path::Path::new("attacker.key"),
        )
        .unwrap()
    };
    let (fake, layer) = serve(|digest, content| {
        let payload = payload::simple_signing("127.0.0.1/app", digest);
        let mut d = Descriptor::for_bytes(SIMPLE_SIGNING_MEDIA_TYPE, &payload);
        d.annotations.insert(
            SIGNATURE_ANNOTATION.into(),
            base64::engine::general_purpose::STANDARD.encode(attacker.sign(&payload)),
        );
        content.blobs.insert(d.digest.to_string(), payload);
        vec![d]
    });
    let work = tempfile::tempdir().unwrap();
    let public = work.path().join("trusted.pub");
    std::fs::write(&public, trusted.public.to_pem()).unwrap();
    let out = work.path().join("out");
    let err = stderr_of_failure(
        tresor().args([
            "pull",
            &format!("{}:v1", fake.repo("app")),
            "-o",
            out.to_str().unwrap(),
            "--key",
            public.to_str().unwrap(),
            "--plain-http",
        ]),
        1,
    );
    assert!(err.contains("no valid signature"), "{err}");
    assert!(!out.exists());
    let requests = fake.requests();
    let layer_path = format!("/blobs/{}", layer.digest);
    assert!(
        requests.iter().all(|r| !r.contains(&layer_path)),
        "the artifact layer was requested: {requests:?}"
    );
    // The signature payload was read: verification did run.
    assert!(requests.iter().any(|r| r.contains(".sig")), "{requests:?}");
}

#[test]
fn five_thousand_signature_layers_are_refused_without_fetching_blobs() {
    let (fake, _) = serve(|_, _| {
        (0..5000)
            .map(|i| {
                let mut d = Descriptor::for_bytes(
                    SIMPLE_SIGNING_MEDIA_TYPE,
                    format!("payload {i}").as_bytes(),
                );
                d.annotations
                    .insert(SIGNATURE_ANNOTATION.into(), "AAAA".into());
                d
            })
            .collect()
    });
    let key = keys::generate(b"").unwrap();
    let work = tempfile::tempdir().unwrap();
    let public = work.path().join("k.pub");
    std::fs::write(&public, key.public.to_pem()).unwrap();
    let err = stderr_of_failure(
        tresor().args([
            "verify",
            &format!("{}:v1", fake.repo("app")),
            "--key",
            public.to_str().unwrap(),
            "--plain-http",
        ]),
        1,
    );
    assert!(
        err.contains("5000 signature layers, more than the limit of 256"),
        "{err}"
    );
    assert!(
        fake.requests().iter().all(|r| !r.contains("/blobs/")),
        "{:?}",
        fake.requests()
    );
}
