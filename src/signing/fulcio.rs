//! Fulcio leaf certificates: parse, check validity, chain to the trusted root, read identity.

use std::time::Duration;

use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use sigstore::crypto::{CosignVerificationKey, Signature};
use webpki::{EndEntityCert, KeyUsage};
use x509_cert::der::asn1::ObjectIdentifier;
use x509_cert::der::oid::AssociatedOid;
use x509_cert::der::{Decode, Encode};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::Certificate;

use super::identity::KeylessIdentity;
use super::keyless::KeylessError;
use super::trust_root::TrustRoot;

/// Fulcio OIDC issuer, v1: the extension value is the raw UTF-8 issuer (not DER).
const OID_ISSUER_V1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.1");
/// Fulcio OIDC issuer, v2: the extension value is a DER UTF8String.
const OID_ISSUER_V2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.8");
/// id-kp-codeSigning (1.3.6.1.5.5.7.3.3), DER contents octets as webpki wants them.
const EKU_CODE_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];

/// A parsed Fulcio leaf certificate with what verification needs from it.
#[derive(Debug)]
pub(super) struct FulcioCertificate {
    der: Vec<u8>,
    not_before: i64,
    not_after: i64,
    sans: Vec<String>,
    issuer: Option<String>,
    spki_der: Vec<u8>,
    key: CosignVerificationKey,
}

impl FulcioCertificate {
    /// Parses a single PEM certificate (the `dev.sigstore.cosign/certificate` annotation).
    pub(super) fn from_pem(pem: &[u8]) -> Result<Self, KeylessError> {
        let (label, der) = x509_cert::der::pem::decode_vec(pem)
            .map_err(|e| KeylessError::certificate(format!("not a PEM certificate: {e}")))?;
        if label != "CERTIFICATE" {
            return Err(KeylessError::certificate(format!(
                "expected a PEM CERTIFICATE, found {label}"
            )));
        }
        let cert = Certificate::from_der(&der)
            .map_err(|e| KeylessError::certificate(format!("not a DER certificate: {e}")))?;
        Self::from_parsed(der, &cert)
    }

    /// Parses a DER certificate (a bundle's `verificationMaterial.certificate.rawBytes`).
    pub(super) fn from_der(der: &[u8]) -> Result<Self, KeylessError> {
        let cert = Certificate::from_der(der)
            .map_err(|e| KeylessError::certificate(format!("not a DER certificate: {e}")))?;
        Self::from_parsed(der.to_vec(), &cert)
    }

    fn from_parsed(der: Vec<u8>, cert: &Certificate) -> Result<Self, KeylessError> {
        let tbs = cert.tbs_certificate();
        let validity = tbs.validity();
        let not_before = unix_seconds(validity.not_before.to_unix_duration());
        let not_after = unix_seconds(validity.not_after.to_unix_duration());
        let spki_der = tbs
            .subject_public_key_info()
            .to_der()
            .map_err(|e| KeylessError::certificate(format!("malformed public key: {e}")))?;
        let key = CosignVerificationKey::try_from(tbs.subject_public_key_info())
            .map_err(|e| KeylessError::certificate(format!("unsupported public key: {e}")))?;

        let mut sans = Vec::new();
        let mut issuer_v1 = None;
        let mut issuer_v2 = None;
        for ext in tbs.extensions().map(|e| e.as_slice()).unwrap_or_default() {
            let value = ext.extn_value.as_bytes();
            if ext.extn_id == SubjectAltName::OID {
                let san = SubjectAltName::from_der(value).map_err(|e| {
                    KeylessError::certificate(format!("malformed subject alternative name: {e}"))
                })?;
                for name in san.0 {
                    match name {
                        GeneralName::UniformResourceIdentifier(uri) => sans.push(uri.to_string()),
                        GeneralName::Rfc822Name(email) => sans.push(email.to_string()),
                        _ => {}
                    }
                }
            } else if ext.extn_id == OID_ISSUER_V2 {
                let issuer = String::from_der(value).map_err(|e| {
                    KeylessError::certificate(format!("malformed oidc issuer extension: {e}"))
                })?;
                issuer_v2 = Some(issuer);
            } else if ext.extn_id == OID_ISSUER_V1 {
                let issuer = String::from_utf8(value.to_vec()).map_err(|_| {
                    KeylessError::certificate("legacy oidc issuer extension is not utf-8")
                })?;
                issuer_v1 = Some(issuer);
            }
        }
        if sans.is_empty() {
            return Err(KeylessError::certificate(
                "certificate has no uri or e-mail subject alternative name",
            ));
        }
        Ok(Self {
            der,
            not_before,
            not_after,
            sans,
            // Like cosign: the v2 extension wins when both are present.
            issuer: issuer_v2.or(issuer_v1),
            spki_der,
            key,
        })
    }

    /// The certificate as DER.
    pub(super) fn der(&self) -> &[u8] {
        &self.der
    }

    /// The certificate's SubjectPublicKeyInfo, DER.
    pub(super) fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// Verifies `signature` (DER ECDSA, or the key type's raw form) over `message`.
    pub(super) fn verify_signature(
        &self,
        signature: &[u8],
        message: &[u8],
    ) -> Result<(), KeylessError> {
        self.key
            .verify_signature(Signature::Raw(signature), message)
            .map_err(|_| KeylessError::SignatureInvalid {
                message: "signature does not verify with the certificate's public key".into(),
            })
    }

    /// Fails with [`KeylessError::CertificateExpired`] unless `at` lies in the validity window.
    pub(super) fn check_valid_at(&self, at: i64) -> Result<(), KeylessError> {
        if at < self.not_before || at > self.not_after {
            return Err(KeylessError::CertificateExpired {
                not_before: self.not_before,
                not_after: self.not_after,
                at,
            });
        }
        Ok(())
    }

    /// Verifies that the certificate chains, at time `at`, to a Fulcio CA of `root` that was
    /// valid at `at`. `untrusted` are extra intermediates (e.g. a signer-supplied chain); they
    /// are never used as trust anchors.
    pub(super) fn verify_chain(
        &self,
        root: &TrustRoot,
        untrusted: &[Vec<u8>],
        at: i64,
    ) -> Result<(), KeylessError> {
        let leaf_der = CertificateDer::from(self.der.as_slice());
        let leaf = EndEntityCert::try_from(&leaf_der).map_err(|e| {
            KeylessError::chain(format!(
                "leaf certificate is not usable: {}",
                webpki_error(&e)
            ))
        })?;
        let time =
            UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(at).map_err(|_| {
                KeylessError::chain(format!("verification time {at} is before 1970"))
            })?));
        let mut last_error = String::from("no fulcio certificate authority was valid at that time");
        for ca in root.fulcio_authorities_at(at) {
            let Some((anchor_der, intermediates)) = ca.chain.split_last() else {
                continue;
            };
            let anchor_der = CertificateDer::from(anchor_der.as_slice());
            let anchor: TrustAnchor<'_> = match webpki::anchor_from_trusted_cert(&anchor_der) {
                Ok(a) => a,
                Err(e) => {
                    last_error = format!(
                        "trusted root certificate is not usable: {}",
                        webpki_error(&e)
                    );
                    continue;
                }
            };
            let inter: Vec<CertificateDer<'_>> = intermediates
                .iter()
                .chain(untrusted.iter())
                .map(|d| CertificateDer::from(d.as_slice()))
                .collect();
            match leaf.verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                std::slice::from_ref(&anchor),
                &inter,
                time,
                KeyUsage::required(EKU_CODE_SIGNING),
                None,
                None,
            ) {
                Ok(_) => return Ok(()),
                Err(e) => last_error = webpki_error(&e),
            }
        }
        Err(KeylessError::chain(format!(
            "the signing certificate does not chain to a Fulcio CA of {} valid at {} (when the \
             signature was logged): {last_error}; is that the right trusted root?",
            root.origin(),
            super::keyless::fmt_time(at)
        )))
    }

    /// Checks identity and issuer; returns the matching SAN and the issuer.
    pub(super) fn check_identity(
        &self,
        policy: &KeylessIdentity,
    ) -> Result<(String, String), KeylessError> {
        let Some(identity) = self.sans.iter().find(|s| policy.identity.matches(s)) else {
            return Err(KeylessError::IdentityMismatch {
                expected: policy.identity.to_string(),
                found: self.sans.join(", "),
            });
        };
        let issuer = self.issuer.clone().unwrap_or_default();
        if self.issuer.is_none() || !policy.issuer.matches(&issuer) {
            return Err(KeylessError::IssuerMismatch {
                expected: policy.issuer.to_string(),
                found: self
                    .issuer
                    .clone()
                    .unwrap_or_else(|| "(no oidc issuer extension)".into()),
            });
        }
        Ok((identity.clone(), issuer))
    }
}

fn unix_seconds(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// A certificate path error in words; webpki names them by Debug variant (`UnknownIssuer`).
fn webpki_error(error: &webpki::Error) -> String {
    match error {
        webpki::Error::UnknownIssuer => {
            "it was issued by none of the root's certificate authorities".into()
        }
        webpki::Error::CertExpired { .. } => "a certificate of the chain had expired".into(),
        webpki::Error::CertNotValidYet { .. } => {
            "a certificate of the chain was not valid yet".into()
        }
        webpki::Error::RequiredEkuNotFoundContext(_) => {
            "it is not a code-signing certificate".into()
        }
        webpki::Error::InvalidSignatureForPublicKey => {
            "a signature in the chain does not verify".into()
        }
        webpki::Error::BadDer | webpki::Error::BadDerTime => "a certificate is malformed".into(),
        other => format!("the chain is invalid ({other:?})"),
    }
}
