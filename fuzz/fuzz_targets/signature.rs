//! Signature parsing in `src/signing`: simple-signing payloads (`payload.rs`, `legacy.rs`,
//! `keyless.rs`), DSSE envelopes (`attestation.rs`), Sigstore bundles (`bundle.rs`) and the
//! trusted root (`trust_root.rs`).
//!
//! The first input byte picks what the rest is. In the "signed" modes the target signs the
//! input itself with a test key (cosign's own test key from testdata/), so the fuzzer gets
//! past the signature check into what is parsed after it.
//!
//! Checks:
//! - nothing verifies without a signature by the key: a stored envelope, bundle or keyless
//!   layer the target did not sign is never accepted with the target's key, and the real
//!   keyless bundle from testdata (and mutations of it) is accepted for its own subject
//!   digest only;
//! - a signed payload verifies for exactly the digest it names, and the legacy key path
//!   (`payload::parse`) and the keyless path (`simple_signing_manifest_digest`) read the same
//!   digest from the same bytes;
//! - a signed DSSE statement or key bundle verifies for a digest only if the statement names
//!   it (and then not for any other digest);
//! - a parsed payload is a cosign signature (`critical.type`), and `simple_signing` output
//!   parses back to what was written.
#![no_main]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use tresor::digest::Digest;
use tresor::signing::attestation::{statement_for, DsseAttestation, IN_TOTO_PAYLOAD_TYPE};
use tresor::signing::bundle::{verify_bundle, BundleAuthority, BUNDLE_V03_MEDIA_TYPE};
use tresor::signing::identity::{KeylessIdentity, Matcher};
use tresor::signing::keyless::{simple_signing_manifest_digest, verify_legacy_keyless};
use tresor::signing::legacy::{check_payload_digest, LegacySignature};
use tresor::signing::payload::{self, SIGNATURE_TYPE};
use tresor::signing::trust_root::TrustRoot;
use tresor::signing::PrivateKey;

/// The subject of testdata/cosign/bundles/bundle_v03.json.
const BUNDLE_SUBJECT: &str =
    "sha256:c811d58de79c92f03214e63aa339484e488d694ae8a6283b5f3f17a9faf50172";
const OTHER: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

struct Fixtures {
    key: PrivateKey,
    key_pem: String,
    root: TrustRoot,
    identity: KeylessIdentity,
}

fn fixtures() -> &'static Fixtures {
    static FIXTURES: OnceLock<Fixtures> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        let key = PrivateKey::from_encrypted_pem(
            include_bytes!("../../testdata/cosign/keys/cosign-generated-empty-password.key"),
            b"",
            Path::new("cosign-generated-empty-password.key"),
        )
        .expect("test key");
        let key_pem = key.public_key().to_pem();
        let root = TrustRoot::from_json(include_bytes!(
            "../../testdata/cosign/bundles/trusted_root.json"
        ))
        .expect("trusted root");
        let identity = KeylessIdentity {
            identity: Matcher::exact(
                "https://github.com/kubewarden/kubewarden-controller/.github/workflows/release.yml@refs/tags/v1.34.0",
            ),
            issuer: Matcher::exact("https://token.actions.githubusercontent.com"),
        };
        Fixtures {
            key,
            key_pem,
            root,
            identity,
        }
    })
}

/// A fixed "now" (2026-01-01), so that runs are reproducible.
fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600)
}

fn digest(text: &str) -> Digest {
    text.parse().expect("digest")
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 8 {
        0 => payload_bytes(rest),
        1 => stored_envelope(rest),
        2 => signed_statement(rest),
        3 => stored_bundle(rest),
        4 => signed_key_bundle(rest),
        5 => legacy_keyless(rest),
        6 => {
            let _ = TrustRoot::from_json(rest);
        }
        _ => simple_signing_round_trip(rest),
    }
});

/// A simple-signing payload, signed by the test key as a legacy `.sig` layer.
fn payload_bytes(data: &[u8]) {
    let f = fixtures();
    let parsed = payload::parse(data);
    let keyless_view = simple_signing_manifest_digest(data);
    let named = match &parsed {
        Ok(p) => {
            assert_eq!(p.critical.kind, SIGNATURE_TYPE);
            let named = p.critical.image.docker_manifest_digest.clone();
            assert_eq!(
                keyless_view.as_ref().ok(),
                Some(&named),
                "the key and keyless paths read different digests from one payload"
            );
            Some(named)
        }
        Err(_) => None,
    };
    let signature = LegacySignature {
        tag: "sha256-fuzz.sig".into(),
        index: 0,
        payload: Bytes::copy_from_slice(data),
        signature: Some(STANDARD.encode(f.key.sign(data))),
        certificate: None,
        chain: None,
        bundle: None,
    };
    let public = f.key.public_key();
    for candidate in [named.as_deref().unwrap_or(OTHER), OTHER, BUNDLE_SUBJECT] {
        let Ok(d) = candidate.parse::<Digest>() else {
            continue;
        };
        let verified = signature.verify_with_key(public, &d).is_ok();
        let expected = named.as_deref() == Some(&*d.to_string());
        assert_eq!(verified, expected, "payload naming {named:?}, digest {d}");
        assert_eq!(check_payload_digest(data, &d).is_ok(), expected);
    }
    // The same bytes with someone else's signature never verify.
    let unsigned = LegacySignature {
        signature: Some(STANDARD.encode(data)),
        ..signature
    };
    assert!(unsigned.verify_with_key(public, &digest(OTHER)).is_err());
}

/// A DSSE envelope as stored; the test key never signed it.
fn stored_envelope(data: &[u8]) {
    let f = fixtures();
    let attestation = DsseAttestation {
        source: "sha256-fuzz.att layer 0".into(),
        envelope: Bytes::copy_from_slice(data),
    };
    for d in [OTHER, BUNDLE_SUBJECT] {
        assert!(
            attestation
                .verify_with_key(f.key.public_key(), &digest(d))
                .is_err(),
            "an envelope the key did not sign verified"
        );
    }
}

/// An in-toto statement (`data`) in a DSSE envelope signed by the test key.
fn signed_statement(data: &[u8]) {
    let f = fixtures();
    let pae = pae(IN_TOTO_PAYLOAD_TYPE, data);
    let envelope = json!({
        "payloadType": IN_TOTO_PAYLOAD_TYPE,
        "payload": STANDARD.encode(data),
        "signatures": [{"keyid": "", "sig": STANDARD.encode(f.key.sign(&pae))}],
    });
    let attestation = DsseAttestation {
        source: "sha256-fuzz.att layer 0".into(),
        envelope: Bytes::from(serde_json::to_vec(&envelope).expect("envelope")),
    };
    let named = subjects(data);
    for d in candidates(&named) {
        let result = attestation.verify_with_key(f.key.public_key(), &d);
        let direct = statement_for(IN_TOTO_PAYLOAD_TYPE, data, &d);
        assert_eq!(result.is_ok(), direct.is_ok(), "digest {d}");
        if result.is_ok() {
            assert!(
                named.contains(&d.hex().to_string()),
                "verified for {d}, not a subject"
            );
        }
    }
}

/// A Sigstore bundle as stored: keyless against the public-good root, and with the test key.
fn stored_bundle(data: &[u8]) {
    let f = fixtures();
    let keyless = BundleAuthority::Keyless {
        identity: &f.identity,
        root: &f.root,
    };
    let _ = verify_bundle(data, BUNDLE_SUBJECT, &keyless, now());
    assert!(
        verify_bundle(data, OTHER, &keyless, now()).is_err(),
        "a bundle verified for a digest that is not its subject"
    );
    let key = BundleAuthority::Key {
        public_key_pem: &f.key_pem,
    };
    for d in [BUNDLE_SUBJECT, OTHER] {
        assert!(
            verify_bundle(data, d, &key, now()).is_err(),
            "a bundle the key did not sign verified"
        );
    }
}

/// An in-toto statement (`data`) in a key-signed bundle.
fn signed_key_bundle(data: &[u8]) {
    let f = fixtures();
    let sig = f.key.sign(&pae(IN_TOTO_PAYLOAD_TYPE, data));
    let bundle = serde_json::to_vec(&json!({
        "mediaType": BUNDLE_V03_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": "fuzz"}, "tlogEntries": []},
        "dsseEnvelope": {
            "payload": STANDARD.encode(data),
            "payloadType": IN_TOTO_PAYLOAD_TYPE,
            "signatures": [{"sig": STANDARD.encode(&sig), "keyid": ""}]
        }
    }))
    .expect("bundle");
    let key = BundleAuthority::Key {
        public_key_pem: &f.key_pem,
    };
    let named = subjects(data);
    let mut verified = Vec::new();
    for d in candidates(&named) {
        if verify_bundle(&bundle, &d.to_string(), &key, now()).is_ok() {
            verified.push(d.hex().to_string());
        }
    }
    for hex in &verified {
        assert!(
            named.iter().any(|n| n.eq_ignore_ascii_case(hex)),
            "verified for sha256:{hex}, which the statement does not name"
        );
    }
    if !verified.is_empty() {
        let statement: Value = serde_json::from_slice(data).expect("verified statement is JSON");
        assert_eq!(
            statement.get("predicateType").and_then(Value::as_str),
            Some("https://sigstore.dev/cosign/sign/v1")
        );
        // One flipped signature byte and it is no longer accepted.
        let mut bad = sig.clone();
        if let Some(last) = bad.last_mut() {
            *last ^= 1;
        }
        let bundle = serde_json::to_vec(&json!({
            "mediaType": BUNDLE_V03_MEDIA_TYPE,
            "verificationMaterial": {"publicKey": {"hint": "fuzz"}, "tlogEntries": []},
            "dsseEnvelope": {
                "payload": STANDARD.encode(data),
                "payloadType": IN_TOTO_PAYLOAD_TYPE,
                "signatures": [{"sig": STANDARD.encode(&bad), "keyid": ""}]
            }
        }))
        .expect("bundle");
        let d = format!("sha256:{}", verified[0]);
        assert!(verify_bundle(&bundle, &d, &key, now()).is_err());
    }
}

/// A keyless legacy `.sig` layer: `data` is a JSON object of its annotations plus `payload`.
fn legacy_keyless(data: &[u8]) {
    let f = fixtures();
    let Ok(mut annotations) = serde_json::from_slice::<BTreeMap<String, String>>(data) else {
        return;
    };
    let payload = annotations.remove("payload").unwrap_or_default();
    assert!(
        verify_legacy_keyless(
            payload.as_bytes(),
            &annotations,
            &f.identity,
            &f.root,
            now()
        )
        .is_err(),
        "a keyless layer verified without a Fulcio certificate for the identity"
    );
}

fn simple_signing_round_trip(data: &[u8]) {
    let Ok(reference) = std::str::from_utf8(data) else {
        return;
    };
    let d = Digest::of(data);
    let bytes = payload::simple_signing(reference, &d);
    let parsed = payload::parse(&bytes).expect("simple_signing output parses");
    assert_eq!(parsed.critical.identity.docker_reference, reference);
    assert_eq!(parsed.critical.image.docker_manifest_digest, d.to_string());
    assert!(check_payload_digest(&bytes, &d).is_ok());
}

/// The sha256 subjects a statement names, as written (lower-cased).
fn subjects(data: &[u8]) -> Vec<String> {
    let Ok(statement) = serde_json::from_slice::<Value>(data) else {
        return Vec::new();
    };
    statement
        .get("subject")
        .and_then(Value::as_array)
        .map(|subjects| {
            subjects
                .iter()
                .filter_map(|s| s.get("digest")?.get("sha256")?.as_str())
                .map(str::to_ascii_lowercase)
                .collect()
        })
        .unwrap_or_default()
}

/// The digests to try: the ones the statement names (when valid) and two others.
fn candidates(named: &[String]) -> Vec<Digest> {
    let mut out: Vec<Digest> = named
        .iter()
        .filter_map(|h| format!("sha256:{h}").parse().ok())
        .take(4)
        .collect();
    out.push(digest(OTHER));
    out.push(digest(BUNDLE_SUBJECT));
    out.sort();
    out.dedup();
    out
}

/// DSSE pre-authentication encoding (as in the DSSE specification).
fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}
