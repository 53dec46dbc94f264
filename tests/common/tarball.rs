//! Hand-written tar archives, including ones the `tar` crate refuses to build (`../`, links,
//! devices): what a malicious artifact would carry.
#![allow(dead_code)]

use std::io::Write;

/// One raw tar entry.
pub struct Entry<'a> {
    pub name: &'a str,
    /// Tar type flag: b'0' file, b'2' symlink, b'1' hardlink, b'3' char device, b'5' dir.
    pub kind: u8,
    pub data: &'a [u8],
    pub link: &'a str,
}

impl<'a> Entry<'a> {
    pub fn file(name: &'a str, data: &'a [u8]) -> Self {
        Self {
            name,
            kind: b'0',
            data,
            link: "",
        }
    }
    pub fn link(name: &'a str, kind: u8, link: &'a str) -> Self {
        Self {
            name,
            kind,
            data: b"",
            link,
        }
    }
}

fn octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let text = format!("{value:0width$o}");
    field[..width].copy_from_slice(text.as_bytes());
    field[width] = 0;
}

/// A ustar archive of `entries`, names written verbatim.
pub fn tar(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut h = [0u8; 512];
        h[..e.name.len()].copy_from_slice(e.name.as_bytes());
        octal(&mut h[100..108], 0o644);
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        octal(&mut h[124..136], e.data.len() as u64);
        octal(&mut h[136..148], 0);
        h[156] = e.kind;
        h[157..157 + e.link.len()].copy_from_slice(e.link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|b| u64::from(*b)).sum();
        octal(&mut h[148..155], sum);
        h[155] = b' ';
        out.extend_from_slice(&h);
        out.extend_from_slice(e.data);
        let pad = (512 - e.data.len() % 512) % 512;
        out.extend(std::iter::repeat_n(0u8, pad));
    }
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

/// gzip of `data`.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// A gzip stream of a tar holding one file of `size` zero bytes (a multiple of 1 MiB), built
/// as concatenated gzip members so it is quick to make: about 1 KiB per MiB of zeros.
pub fn gzip_bomb(size: u64) -> Vec<u8> {
    let member = |data: &[u8]| {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(9));
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    };
    let header = tar(&[Entry::file("zeros.yaml", b"")]);
    let mut h = header[..512].to_vec();
    octal(&mut h[124..136], size);
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|b| u64::from(*b)).sum();
    octal(&mut h[148..155], sum);
    h[155] = b' ';
    let mut out = member(&h);
    let zeros = member(&vec![0u8; 1 << 20]);
    for _ in 0..size / (1 << 20) {
        out.extend_from_slice(&zeros);
    }
    out.extend_from_slice(&member(&[0u8; 1024]));
    out
}

/// A Flux-format artifact of `files`: an OCI manifest with config `{}` and one tar+gzip
/// content layer, as the fake registries serve it.
pub struct FakeArtifact {
    pub manifest: Vec<u8>,
    pub digest: tresor::digest::Digest,
    pub layer: Vec<u8>,
    pub layer_digest: tresor::digest::Digest,
}

/// The artifact of `files` (name, content), in the given order.
pub fn artifact(files: &[(&str, &[u8])]) -> FakeArtifact {
    use tresor::artifact::format::{
        Descriptor, ImageManifest, CONFIG_MEDIA_TYPE, CONTENT_MEDIA_TYPE, OCI_MANIFEST_MEDIA_TYPE,
    };
    use tresor::digest::Digest;
    let entries: Vec<Entry<'_>> = files.iter().map(|(n, d)| Entry::file(n, d)).collect();
    let layer = gzip(&tar(&entries));
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST_MEDIA_TYPE.into()),
        artifact_type: None,
        config: Descriptor::for_bytes(CONFIG_MEDIA_TYPE, b"{}"),
        layers: vec![Descriptor::for_bytes(CONTENT_MEDIA_TYPE, &layer)],
        subject: None,
        annotations: Default::default(),
    }
    .to_bytes();
    FakeArtifact {
        digest: Digest::of(&manifest),
        layer_digest: Digest::of(&layer),
        manifest,
        layer,
    }
}
