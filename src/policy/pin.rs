//! `push --pin-images`: resolve every image tag in the pod templates of a tree to its digest
//! and write `name:tag@sha256:…` into a staged copy of the tree, never the user's files.
//!
//! 1. [`stage_tree`] packs the tree with the same rules as `push` and unpacks it into a
//!    temporary directory, so the copy is exactly what would have been pushed (symlinks
//!    refused or resolved the same way).
//! 2. [`images_to_pin`] collects the references without a digest; [`resolve`] asks each
//!    image's registry for the tag's digest with one HEAD request (bounded parallelism).
//! 3. [`rewrite_tree`] edits the YAML/JSON text in place at the image values, so comments and
//!    formatting survive, and re-parses every edited file to check that exactly the pod
//!    template images changed. Anything it cannot edit safely (an image behind a YAML alias,
//!    a multi-line scalar, the same text used as an `image:` value outside a pod template)
//!    fails with the file named instead of being re-serialised.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use futures_util::{stream, StreamExt as _};

use super::image::ImageRef;
use super::rules::pod_images;
use super::PolicyError;
use crate::artifact::archive::{self, ArchiveError, Limits, PackOptions};
use crate::artifact::objects::{self, ContentMode, Object};
use crate::digest::Digest;
use crate::reference::RegistryReference;
use crate::registry::remote::RemoteRepository;
use crate::registry::{ManifestRef, RegistryOptions};

/// How many registries are asked at the same time.
pub const PARALLELISM: usize = 8;

/// Copies `dir` into the empty directory `dest` as `push` would pack it.
pub fn stage_tree(dir: &Path, dest: &Path, resolve_symlinks: bool) -> Result<(), ArchiveError> {
    let packed = archive::pack(dir, &PackOptions { resolve_symlinks })?;
    // Our own freshly packed layer: the limits only need to be large enough.
    let limits = Limits {
        max_total_bytes: u64::MAX,
        max_files: u64::MAX,
        max_file_bytes: u64::MAX,
        max_ratio: u64::MAX,
    };
    archive::extract_to_dir(packed.layer.as_slice(), packed.size, dest, &limits)?;
    Ok(())
}

/// The image references without a digest in the objects' pod templates (as written, sorted,
/// each once). References that do not parse are left to the `image-invalid` rule.
pub fn images_to_pin(objects: &[Object]) -> BTreeSet<String> {
    objects
        .iter()
        .flat_map(pod_images)
        .filter(|u| ImageRef::parse(&u.image).is_ok_and(|r| !r.is_pinned()))
        .map(|u| u.image)
        .collect()
}

/// Resolves each image's tag (`latest` when none) to a digest with a HEAD request against its
/// registry, at most [`PARALLELISM`] at a time.
///
/// `options` are the push's registry options. `--creds` (in `options.creds`) are only sent
/// to `target_host`, the registry being pushed to; other registries use docker's config.
/// Plain HTTP is used only for `target_host` and loopback registries. Fails with the first
/// image (in sorted order) that cannot be resolved, naming it and the reason.
pub async fn resolve(
    images: &BTreeSet<String>,
    options: &RegistryOptions,
    target_host: Option<&str>,
) -> Result<BTreeMap<String, Digest>, PolicyError> {
    let results: Vec<(String, Result<Digest, String>)> = stream::iter(images.iter().cloned())
        .map(|image| async move {
            let result = resolve_one(&image, options, target_host).await;
            (image, result)
        })
        .buffer_unordered(PARALLELISM)
        .collect()
        .await;
    let mut pins = BTreeMap::new();
    let mut failures = BTreeMap::new();
    for (image, result) in results {
        match result {
            Ok(digest) => {
                pins.insert(image, digest);
            }
            Err(reason) => {
                failures.insert(image, reason);
            }
        }
    }
    if let Some((image, reason)) = failures.into_iter().next() {
        return Err(PolicyError::Unresolvable { image, reason });
    }
    Ok(pins)
}

fn is_loopback(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    matches!(name, "localhost" | "127.0.0.1" | "[::1]")
}

async fn resolve_one(
    image: &str,
    options: &RegistryOptions,
    target_host: Option<&str>,
) -> Result<Digest, String> {
    let parsed = ImageRef::parse(image).map_err(|e| e.to_string())?;
    let host = parsed.api_host().to_string();
    let same_registry = target_host == Some(parsed.registry.as_str());
    let mut options = options.clone();
    options.plain_http = options.plain_http && (same_registry || is_loopback(&host));
    if !same_registry {
        options.creds = None;
    }
    let reference = RegistryReference {
        host,
        repository: parsed.repository.clone(),
        tag: Some(parsed.effective_tag().to_string()),
        digest: None,
    };
    let repo = RemoteRepository::new(&reference, &options).map_err(|e| e.to_string())?;
    match repo
        .head_manifest(ManifestRef::Tag(parsed.effective_tag()))
        .await
    {
        Ok(Some(digest)) => Ok(digest),
        Ok(None) => Err(format!(
            "manifest not found at {}/{}:{} (no such repository or tag)",
            reference.host,
            reference.repository,
            parsed.effective_tag()
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// Writes the pins into the manifest files under `dir` (a staged copy). Returns how many
/// image values were changed.
pub fn rewrite_tree(dir: &Path, pins: &BTreeMap<String, Digest>) -> Result<usize, PolicyError> {
    if pins.is_empty() {
        return Ok(0);
    }
    let files = objects::read_dir_files(dir, ContentMode::Kubernetes).map_err(PolicyError::Tree)?;
    let mut changed = 0;
    for (path, bytes) in files {
        let Ok(text) = std::str::from_utf8(&bytes) else {
            continue;
        };
        let (rewritten, count) = rewrite_text(text, pins);
        if count == 0 {
            continue;
        }
        verify(&path, &bytes, rewritten.as_bytes(), pins, count)?;
        let target = dir.join(&path);
        std::fs::write(&target, rewritten).map_err(|e| PolicyError::Stage {
            path: target.clone(),
            message: e.to_string(),
        })?;
        changed += count;
    }
    Ok(changed)
}

/// Checks that the edit changed exactly the pod template images of the file, each to its pin.
fn verify(
    path: &str,
    before: &[u8],
    after: &[u8],
    pins: &BTreeMap<String, Digest>,
    count: usize,
) -> Result<(), PolicyError> {
    let fail = |message: String| PolicyError::Rewrite {
        file: path.to_string(),
        message,
    };
    let parse = |bytes: &[u8]| {
        objects::parse_tree_all(
            &[(path.to_string(), bytes.to_vec())],
            ContentMode::Kubernetes,
        )
        .0
    };
    let (old, new) = (parse(before), parse(after));
    let uses = |objects: &[Object]| -> Vec<(String, String)> {
        objects
            .iter()
            .flat_map(|o| {
                pod_images(o)
                    .into_iter()
                    .map(move |u| (format!("{} {}", o.key, u.path), u.image))
            })
            .collect()
    };
    let (old_uses, new_uses) = (uses(&old), uses(&new));
    let expected: Vec<(String, String)> = old_uses
        .iter()
        .map(|(at, image)| match pins.get(image) {
            Some(digest) => (at.clone(), format!("{image}@{digest}")),
            None => (at.clone(), image.clone()),
        })
        .collect();
    let wanted = old_uses
        .iter()
        .filter(|(_, i)| pins.contains_key(i))
        .count();
    if new.len() != old.len() || new_uses != expected || wanted != count {
        return Err(fail(format!(
            "the image references could not be edited in place ({count} values changed, \
             {wanted} expected); write each image as a plain one-line `image: name:tag` value \
             (no YAML alias or multi-line scalar), and do not repeat it as an `image:` value \
             outside pod templates"
        )));
    }
    Ok(())
}

fn is_image_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'/' | b'@')
}

/// Appends `@digest` to every `image:` value (YAML block or flow style, JSON, quoted or not)
/// that is a key of `pins`. Returns the new text and the number of values changed.
pub fn rewrite_text(text: &str, pins: &BTreeMap<String, Digest>) -> (String, usize) {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len() + 80);
    let mut copied = 0; // bytes of `text` already in `out`
    let mut count = 0;
    let mut search = 0;
    while let Some(found) = text.get(search..).and_then(|t| t.find("image")) {
        let start = search + found;
        search = start + "image".len();
        let before = start.checked_sub(1).and_then(|i| bytes.get(i)).copied();
        if !matches!(
            before,
            None | Some(b' ' | b'\t' | b'\n' | b'{' | b',' | b'"' | b'\'')
        ) {
            continue;
        }
        let mut i = search;
        let at = |i: usize| bytes.get(i).copied();
        if matches!(at(i), Some(b'"' | b'\'')) {
            i += 1;
        }
        while matches!(at(i), Some(b' ' | b'\t')) {
            i += 1;
        }
        if at(i) != Some(b':') {
            continue;
        }
        i += 1;
        while matches!(at(i), Some(b' ' | b'\t')) {
            i += 1;
        }
        let quote = match at(i) {
            Some(q @ (b'"' | b'\'')) => {
                i += 1;
                Some(q)
            }
            _ => None,
        };
        let value_start = i;
        while at(i).is_some_and(is_image_char) {
            i += 1;
        }
        let value_end = i;
        let terminated = match (quote, at(i)) {
            (Some(q), Some(c)) => c == q,
            (Some(_), None) => false,
            (None, None) => true,
            (None, Some(c)) => matches!(c, b' ' | b'\t' | b'\r' | b'\n' | b',' | b'}' | b'#'),
        };
        let Some(value) = text.get(value_start..value_end) else {
            continue;
        };
        if !terminated {
            continue;
        }
        if let Some(digest) = pins.get(value) {
            out.push_str(text.get(copied..value_end).unwrap_or_default());
            out.push('@');
            out.push_str(&digest.to_string());
            copied = value_end;
            count += 1;
        }
        search = value_end.max(search);
    }
    out.push_str(text.get(copied..).unwrap_or_default());
    (out, count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pins() -> BTreeMap<String, Digest> {
        let d: Digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
            .parse()
            .unwrap();
        [
            ("nginx:1.27".to_string(), d.clone()),
            ("127.0.0.1:5001/x/img:1.0".to_string(), d),
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn rewrites_yaml_styles_and_json_keeping_everything_else() {
        let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let text = "# keep me\ncontainers:\n- name: a\n  image: nginx:1.27 # pinned soon\n- {name: b, image: \"127.0.0.1:5001/x/img:1.0\"}\n- image: 'nginx:1.27'\n  name: c\n- image: nginx:1.277\n";
        let (out, n) = rewrite_text(text, &pins());
        assert_eq!(n, 3);
        assert_eq!(
            out,
            format!("# keep me\ncontainers:\n- name: a\n  image: nginx:1.27@{d} # pinned soon\n- {{name: b, image: \"127.0.0.1:5001/x/img:1.0@{d}\"}}\n- image: 'nginx:1.27@{d}'\n  name: c\n- image: nginx:1.277\n")
        );
        let json = "{\"image\": \"nginx:1.27\", \"imagePullPolicy\": \"IfNotPresent\"}";
        let (out, n) = rewrite_text(json, &pins());
        assert_eq!(n, 1);
        assert_eq!(
            out,
            format!("{{\"image\": \"nginx:1.27@{d}\", \"imagePullPolicy\": \"IfNotPresent\"}}")
        );
    }

    #[test]
    fn values_with_other_keys_or_suffixes_are_left_alone() {
        let text = "myimage: nginx:1.27\nsidecar-image: nginx:1.27\nimage: nginx:1.27x\nimage: nginx:1.27@sha256:00\n";
        assert_eq!(rewrite_text(text, &pins()).1, 0);
    }

    const DEPLOY: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  template:\n    spec:\n      containers:\n        - name: web\n          image: nginx:1.27\n";

    #[test]
    fn rewrite_tree_pins_pod_images_and_checks_the_result() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("d.yaml"), DEPLOY).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "image: nginx:1.27\n").unwrap();
        assert_eq!(rewrite_tree(dir.path(), &pins()).unwrap(), 1);
        let text = std::fs::read_to_string(dir.path().join("d.yaml")).unwrap();
        assert!(text.ends_with("image: nginx:1.27@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n"));
        // Not a manifest: untouched.
        assert_eq!(
            std::fs::read_to_string(dir.path().join("notes.txt")).unwrap(),
            "image: nginx:1.27\n"
        );
    }

    #[test]
    fn rewrite_tree_refuses_to_touch_image_values_outside_pod_templates() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "{DEPLOY}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c}}\ndata:\n  image: nginx:1.27\n"
        );
        std::fs::write(dir.path().join("d.yaml"), &text).unwrap();
        let err = rewrite_tree(dir.path(), &pins()).unwrap_err();
        assert_eq!(err.reason(), "PinRewriteFailed");
        assert!(
            err.to_string().starts_with("cannot pin images in d.yaml:"),
            "{err}"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("d.yaml")).unwrap(),
            text
        );
    }

    #[test]
    fn loopback_hosts() {
        assert!(is_loopback("127.0.0.1:5001"));
        assert!(is_loopback("localhost"));
        assert!(!is_loopback("registry.example.com:5000"));
    }
}
