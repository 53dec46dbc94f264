//! OCI manifest, index and descriptor parsing (`src/artifact/format.rs`,
//! `src/artifact/fetch.rs`, `index.json` of an OCI layout in `src/registry/layout.rs`).
//!
//! Checks:
//! - a manifest, index or descriptor that parses serialises and parses back to the same
//!   value, and its digests render as `sha256:` + 64 lower-case hex;
//! - the content layer is one of the manifest's layers and has a tar+gzip media type (the
//!   Flux type first);
//! - `fetch::from_manifest` refuses indexes, keeps the fetched digest and picks exactly that
//!   content layer; it never accepts what does not parse as a manifest;
//! - an OCI layout whose `index.json` is the input resolves a tag only to a digest that an
//!   entry with that `org.opencontainers.image.ref.name` names (the last such entry).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tresor::artifact::fetch::from_manifest;
use tresor::artifact::format::{
    Descriptor, ImageIndex, ImageManifest, ManifestKind, ANNOTATION_REF_NAME, CONTENT_MEDIA_TYPE,
    DOCKER_MANIFEST_LIST_MEDIA_TYPE, DOCKER_MANIFEST_MEDIA_TYPE, OCI_INDEX_MEDIA_TYPE,
    OCI_MANIFEST_MEDIA_TYPE, TAR_GZIP_MEDIA_TYPES,
};
use tresor::digest::Digest;
use tresor::reference::Reference;
use tresor::registry::layout::LayoutRepository;
use tresor::registry::{FetchedManifest, ManifestRef};

const MEDIA_TYPES: [&str; 5] = [
    OCI_MANIFEST_MEDIA_TYPE,
    OCI_INDEX_MEDIA_TYPE,
    DOCKER_MANIFEST_MEDIA_TYPE,
    DOCKER_MANIFEST_LIST_MEDIA_TYPE,
    "",
];

fuzz_target!(|data: &[u8]| {
    let manifest = serde_json::from_slice::<ImageManifest>(data).ok();
    if let Some(m) = &manifest {
        round_trip(m, &m.to_bytes());
        check_digest(&m.config.digest);
        m.layers.iter().for_each(|l| check_digest(&l.digest));
        if let Some(layer) = m.content_layer() {
            assert!(m.layers.contains(layer));
            let flux = m.layers.iter().any(|l| l.media_type == CONTENT_MEDIA_TYPE);
            if flux {
                assert_eq!(layer.media_type, CONTENT_MEDIA_TYPE);
            } else {
                assert!(TAR_GZIP_MEDIA_TYPES.contains(&layer.media_type.as_str()));
            }
        } else {
            assert!(m.layers.iter().all(|l| l.media_type != CONTENT_MEDIA_TYPE
                && !TAR_GZIP_MEDIA_TYPES.contains(&l.media_type.as_str())));
        }
    }
    if let Ok(index) = serde_json::from_slice::<ImageIndex>(data) {
        let bytes = serde_json::to_vec(&index).expect("serialise index");
        round_trip(&index, &bytes);
        index.manifests.iter().for_each(|d| check_digest(&d.digest));
    }
    if let Ok(descriptor) = serde_json::from_slice::<Descriptor>(data) {
        let bytes = serde_json::to_vec(&descriptor).expect("serialise descriptor");
        round_trip(&descriptor, &bytes);
        check_digest(&descriptor.digest);
    }

    let digest = Digest::of(data);
    let media_type = MEDIA_TYPES[data.len() % MEDIA_TYPES.len()];
    let reference: Reference = "oci://registry.example/fuzz/app:v1"
        .parse()
        .expect("reference");
    let fetched = FetchedManifest {
        bytes: Bytes::copy_from_slice(data),
        digest: digest.clone(),
        media_type: media_type.to_string(),
    };
    let kind = ManifestKind::classify(
        media_type,
        manifest.as_ref().map(|m| m.config.media_type.as_str()),
    );
    match from_manifest(&reference, fetched) {
        Ok(artifact) => {
            assert!(
                media_type != OCI_INDEX_MEDIA_TYPE && media_type != DOCKER_MANIFEST_LIST_MEDIA_TYPE
            );
            // Container images are never unpacked as artifacts (decision 0004).
            assert_ne!(kind, ManifestKind::ContainerImage);
            let m = manifest.expect("from_manifest accepted what does not parse as a manifest");
            assert_eq!(artifact.digest, digest);
            assert_eq!(artifact.reference.digest(), Some(&digest));
            assert_eq!(&artifact.manifest_bytes[..], data);
            assert_eq!(Some(&artifact.layer), m.content_layer());
            assert_eq!(artifact.manifest, m);
        }
        Err(_) => assert!(
            manifest
                .as_ref()
                .is_none_or(|m| m.content_layer().is_none())
                || media_type == OCI_INDEX_MEDIA_TYPE
                || media_type == DOCKER_MANIFEST_LIST_MEDIA_TYPE
                || kind == ManifestKind::ContainerImage
        ),
    }

    layout_index(data);
});

fn round_trip<T>(value: &T, bytes: &[u8])
where
    T: serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let again: T = serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("{value:?} serialised to {bytes:?}, which does not parse: {e}"));
    assert_eq!(&again, value);
}

fn check_digest(digest: &Digest) {
    let text = digest.to_string();
    let hex = text.strip_prefix("sha256:").expect("sha256 prefix");
    assert_eq!(hex.len(), 64);
    assert!(hex
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    assert_eq!(text.parse::<Digest>().ok().as_ref(), Some(digest));
}

/// An OCI layout directory, created once; each input becomes its `index.json`.
fn layout_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("tresor-fuzz-layout")
            .tempdir()
            .expect("layout directory")
            .keep();
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
            .expect("oci-layout");
        dir
    })
}

fn layout_index(data: &[u8]) {
    let dir = layout_dir();
    std::fs::write(dir.join("index.json"), data).expect("index.json");
    let layout = LayoutRepository::new(dir);
    let resolved = layout.resolve(ManifestRef::Tag("v1"));
    let entries: Option<Vec<Value>> = serde_json::from_slice::<Value>(data).ok().map(|v| {
        v.get("manifests")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    });
    let last_tagged = entries.as_ref().and_then(|e| {
        e.iter().rev().find(|m| {
            m.get("annotations")
                .and_then(|a| a.get(ANNOTATION_REF_NAME))
                .and_then(Value::as_str)
                == Some("v1")
        })
    });
    match resolved {
        Ok(Some(d)) => {
            let entry = last_tagged.expect("resolved a tag no entry names");
            assert_eq!(
                entry.get("digest").and_then(Value::as_str),
                Some(&*d.to_string())
            );
        }
        Ok(None) => assert!(entries.is_some() && last_tagged.is_none()),
        Err(_) => assert!(entries.is_none() || last_tagged.is_some()),
    }
}
