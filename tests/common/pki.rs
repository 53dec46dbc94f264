//! A test PKI standing in for Fulcio and Rekor: a CA, Fulcio-like leaf certificates, a
//! `trusted_root.json` naming both, and the annotations of a keyless cosign `.sig` layer.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CustomExtension, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
    SigningKey, PKCS_ECDSA_P256_SHA256,
};
use serde_json::json;
use sha2::{Digest as _, Sha256};
use tresor::artifact::format::{ManifestKind, OCI_MANIFEST_MEDIA_TYPE};
use tresor::digest::Digest;
use tresor::reference::Reference;
use tresor::signing::keyless::{BUNDLE_ANNOTATION, CERTIFICATE_ANNOTATION, SIGNATURE_ANNOTATION};
use tresor::signing::Subject;

/// Identity of the test PKI's keyless signer.
pub const IDENTITY: &str =
    "https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v1.0.0";
/// 2025-06-01T00:00:00Z: the test leaf certificate is valid for ten minutes from here.
pub const T0: i64 = 1_748_736_000;

pub struct Ca {
    pub params: CertificateParams,
    pub key: KeyPair,
    pub der: Vec<u8>,
}

pub fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(vec![]).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.not_before = date_time_ymd(2020, 1, 1);
    params.not_after = date_time_ymd(2040, 1, 1);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let der = params.self_signed(&key).unwrap().der().to_vec();
    Ca { params, key, der }
}

/// A Fulcio-like leaf: URI SAN, OIDC issuer extension, code signing, ten minutes long.
pub fn leaf(ca: &Ca, issuer: &str) -> (KeyPair, String) {
    let mut params = CertificateParams::new(vec![]).unwrap();
    params.not_before = date_time_ymd(2025, 6, 1);
    params.not_after = date_time_ymd(2025, 6, 1) + Duration::from_secs(600);
    params.subject_alt_names = vec![SanType::URI(IDENTITY.try_into().unwrap())];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
    let mut utf8 = vec![0x0c, u8::try_from(issuer.len()).unwrap()];
    utf8.extend_from_slice(issuer.as_bytes());
    params
        .custom_extensions
        .push(CustomExtension::from_oid_content(
            &[1, 3, 6, 1, 4, 1, 57264, 1, 8],
            utf8,
        ));
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = params
        .signed_by(&key, &Issuer::from_params(&ca.params, &ca.key))
        .unwrap();
    (key, cert.pem())
}

/// A `trusted_root.json` naming `fulcio` as CA and `rekor` as transparency log.
pub fn trusted_root_json(fulcio: &Ca, rekor: &KeyPair) -> Vec<u8> {
    let spki = rekor.subject_public_key_info();
    serde_json::to_vec(&json!({
        "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
        "tlogs": [{
            "baseUrl": "https://rekor.test",
            "hashAlgorithm": "SHA2_256",
            "publicKey": {
                "rawBytes": STANDARD.encode(&spki),
                "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                "validFor": {"start": "2020-01-01T00:00:00Z"}
            },
            "logId": {"keyId": STANDARD.encode(Sha256::digest(&spki))}
        }],
        "certificateAuthorities": [{
            "subject": {"organization": "test", "commonName": "fulcio"},
            "uri": "https://fulcio.test",
            "certChain": {"certificates": [{"rawBytes": STANDARD.encode(&fulcio.der)}]},
            "validFor": {"start": "2020-01-01T00:00:00Z"}
        }],
        "ctlogs": []
    }))
    .unwrap()
}

/// The annotations of a keyless cosign signature layer over `payload`: signature,
/// certificate, and a Rekor bundle whose SET `rekor` signs.
pub fn keyless_annotations(
    leaf_key: &KeyPair,
    leaf_pem: &str,
    rekor: &KeyPair,
    payload: &[u8],
) -> BTreeMap<String, String> {
    let signature = leaf_key.sign(payload).unwrap();
    let body = STANDARD.encode(
        serde_json::to_vec(&json!({
            "apiVersion": "0.0.1",
            "kind": "hashedrekord",
            "spec": {
                "data": {"hash": {"algorithm": "sha256", "value": hex::encode(Sha256::digest(payload))}},
                "signature": {
                    "content": STANDARD.encode(&signature),
                    "publicKey": {"content": STANDARD.encode(leaf_pem)}
                }
            }
        }))
        .unwrap(),
    );
    let integrated = T0 + 60;
    let log_id = hex::encode(Sha256::digest(rekor.subject_public_key_info()));
    let canonical = format!(
        r#"{{"body":"{body}","integratedTime":{integrated},"logID":"{log_id}","logIndex":42}}"#
    );
    let set = rekor.sign(canonical.as_bytes()).unwrap();
    let bundle = json!({
        "SignedEntryTimestamp": STANDARD.encode(set),
        "Payload": {"body": body, "integratedTime": integrated, "logIndex": 42, "logID": log_id}
    });
    BTreeMap::from([
        (SIGNATURE_ANNOTATION.to_owned(), STANDARD.encode(&signature)),
        (CERTIFICATE_ANNOTATION.to_owned(), leaf_pem.to_owned()),
        (BUNDLE_ANNOTATION.to_owned(), bundle.to_string()),
    ])
}

/// The subject at `digest` of `reference`, as if its manifest had been read: what a
/// signature check of a stored bundle looks at (the digest is what was signed).
pub fn subject_at(reference: Reference, digest: Digest) -> Subject {
    Subject {
        reference: reference.with_digest(digest.clone()),
        digest,
        media_type: OCI_MANIFEST_MEDIA_TYPE.into(),
        kind: ManifestKind::ContainerImage,
        annotations: BTreeMap::new(),
    }
}
