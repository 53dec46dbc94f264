//! Reference parsing (`src/reference.rs`): `oci://…`, bare `host/repo` and `oci-layout:…`.
//!
//! Checks, for every input that parses:
//! - rendering it (`Display`) and parsing that again gives the same reference;
//! - a registry host passes `check_host`, the repository has no empty component, a tag
//!   passes `check_tag`;
//! - `canonical_host` is idempotent, lower-case and never keeps a default port, and a
//!   canonical host is accepted by the parser again;
//! - `pinned` and `with_tag` keep the location;
//! - an image reference of a pod template (`src/policy/image.rs`) that parses is pinned
//!   exactly when it has a digest, and its name parses again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tresor::digest::Digest;
use tresor::policy::image::ImageRef;
use tresor::reference::{canonical_host, check_host, check_tag, Reference};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Also exercise the host check alone on arbitrary text: it must not panic.
    let _ = check_host(text);
    if let Ok(image) = ImageRef::parse(text) {
        assert_eq!(image.is_pinned(), text.contains('@'), "{text:?}: {image:?}");
        let name = image.name();
        assert!(ImageRef::parse(&name).is_ok(), "name {name:?} of {text:?}");
    }
    let Ok(reference) = text.parse::<Reference>() else {
        return;
    };

    let rendered = reference.to_string();
    let again: Reference = rendered
        .parse()
        .unwrap_or_else(|e| panic!("{text:?} parsed, its rendering {rendered:?} did not: {e}"));
    assert_eq!(again, reference, "{text:?} -> {rendered:?}");

    if let Reference::Registry(r) = &reference {
        assert!(check_host(&r.host).is_ok(), "host {:?} of {text:?}", r.host);
        assert!(
            r.repository.split('/').all(|c| !c.is_empty()),
            "repository {:?} of {text:?}",
            r.repository
        );
        if let Some(tag) = &r.tag {
            assert!(check_tag(tag).is_ok(), "tag {tag:?} of {text:?}");
        }
        for plain_http in [false, true] {
            let canonical = canonical_host(&r.host, plain_http);
            assert_eq!(canonical_host(&canonical, plain_http), canonical);
            assert_eq!(canonical, canonical.to_ascii_lowercase());
            let default_port = if plain_http { ":80" } else { ":443" };
            assert!(!canonical.ends_with(default_port), "{canonical:?}");
            assert!(check_host(&canonical).is_ok(), "canonical {canonical:?}");
            let canonical_text = format!("oci://{canonical}/{}", r.repository);
            assert!(
                canonical_text.parse::<Reference>().is_ok(),
                "{canonical_text:?} (canonical form of {text:?}) does not parse"
            );
            assert_eq!(
                r.is_canonical(plain_http),
                canonical == r.host,
                "{text:?} plain_http={plain_http}"
            );
        }
    }

    let digest = Digest::of(data);
    let pinned = reference.pinned(&digest);
    let pinned_ref: Reference = pinned
        .parse()
        .unwrap_or_else(|e| panic!("pinned form {pinned:?} of {text:?} does not parse: {e}"));
    assert_eq!(pinned_ref.repository(), reference.repository());
    assert_eq!(pinned_ref.digest(), Some(&digest));
    assert_eq!(pinned_ref.tag(), None);

    if let Ok(tagged) = reference.with_tag("v1.2.3") {
        assert_eq!(tagged.repository(), reference.repository());
        assert_eq!(tagged.tag(), Some("v1.2.3"));
        assert_eq!(tagged.digest(), None);
        let tagged_text = tagged.to_string();
        assert_eq!(tagged_text.parse::<Reference>().ok(), Some(tagged));
    }
});
