//! Rekor transparency-log evidence, verified offline: the signed entry timestamp (SET, the
//! "inclusion promise"), the entry body's binding to the signature, and inclusion proofs.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sigstore::crypto::Signature;

use super::keyless::KeylessError;
use super::trust_root::{TransparencyLog, TrustRoot};

/// The Rekor bundle cosign puts into a `.sig` layer's `dev.sigstore.cosign/bundle`
/// annotation: the signed entry timestamp and the entry it covers (the same JSON shape as
/// sigstore-rs's `cosign::bundle::Bundle`, whose feature would add a second registry client;
/// see docs/decisions/0006).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct RekorBundle {
    /// Base64 of Rekor's signature over the canonical JSON of `payload`.
    pub signed_entry_timestamp: String,
    /// The log entry.
    pub payload: RekorPayload,
}

/// The log entry a [`RekorBundle`] covers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RekorPayload {
    /// Base64 of the entry body (a `hashedrekord`).
    pub body: String,
    /// When the entry was logged (Unix seconds).
    pub integrated_time: i64,
    /// The entry's index in the log.
    pub log_index: i64,
    /// Hex of the log's key ID.
    #[serde(rename = "logID")]
    pub log_id: String,
}

/// Tolerated clock difference between Rekor and this machine when checking that an entry was
/// not integrated in the future.
const MAX_CLOCK_SKEW_SECS: i64 = 300;
/// Longest Merkle audit path accepted (a tree of 2^64 leaves needs 64).
const MAX_PROOF_HASHES: usize = 64;

/// The fields a Rekor SET signs, exactly as stored next to the signature.
#[derive(Debug)]
pub(super) struct SetPayload<'a> {
    /// The entry body, base64 as Rekor returned it.
    pub(super) body_b64: &'a str,
    /// Unix time the entry was integrated into the log.
    pub(super) integrated_time: i64,
    /// The entry's index in the log.
    pub(super) log_index: i64,
    /// The log id (SHA-256 of the log's public key), lower-case hex.
    pub(super) log_id_hex: &'a str,
}

/// Verifies a SET with the matching Rekor key of `root` and returns that log.
///
/// The signed message is Rekor's canonical JSON (RFC 8785) of `{body, integratedTime, logID,
/// logIndex}`; all four values are strings of base64/hex characters or integers, so the
/// canonical form is the keys in lexical order with no whitespace.
pub(super) fn verify_set<'r>(
    root: &'r TrustRoot,
    set: &[u8],
    payload: &SetPayload<'_>,
    now: i64,
) -> Result<&'r TransparencyLog, KeylessError> {
    let log_id = hex::decode(payload.log_id_hex)
        .map_err(|_| KeylessError::tlog(format!("log id {:?} is not hex", payload.log_id_hex)))?;
    let log = root
        .rekor_log(&log_id, payload.integrated_time)
        .ok_or_else(|| {
            KeylessError::tlog(format!(
                "log {} is not a rekor log of the trusted root at time {}",
                payload.log_id_hex, payload.integrated_time
            ))
        })?;
    let canonical = format!(
        "{{\"body\":{},\"integratedTime\":{},\"logID\":{},\"logIndex\":{}}}",
        json_string(payload.body_b64),
        payload.integrated_time,
        json_string(payload.log_id_hex),
        payload.log_index
    );
    log.key
        .verify_signature(Signature::Raw(set), canonical.as_bytes())
        .map_err(|_| {
            KeylessError::tlog("signed entry timestamp does not verify with the rekor key")
        })?;
    if payload.integrated_time > now.saturating_add(MAX_CLOCK_SKEW_SECS) {
        return Err(KeylessError::tlog(format!(
            "entry integrated at {} is in the future (now {now})",
            payload.integrated_time
        )));
    }
    Ok(log)
}

fn json_string(s: &str) -> String {
    // serde_json escapes exactly what RFC 8785 requires for these ASCII inputs.
    serde_json::Value::String(s.to_owned()).to_string()
}

/// What the log entry must say about the signature it records.
#[derive(Debug)]
pub(super) enum ExpectedEntry<'a> {
    /// `hashedrekord` v0.0.1: SHA-256 of the signed bytes, the signature, the certificate.
    HashedRekord {
        /// SHA-256 of the exact signed payload.
        digest: [u8; 32],
        /// The signature bytes.
        signature: &'a [u8],
        /// The signing certificate, DER.
        certificate_der: &'a [u8],
    },
    /// `dsse` v0.0.1: SHA-256 of the DSSE payload, the signature, the certificate.
    ///
    /// `envelopeHash` is not checked: Rekor hashes the client's own JSON serialisation, which
    /// a verifier cannot reproduce (sigstore-rs #608); the PAE signature binds the envelope.
    Dsse {
        /// SHA-256 of the DSSE payload bytes.
        payload_digest: [u8; 32],
        /// The DSSE signature bytes.
        signature: &'a [u8],
        /// The signing certificate, DER.
        certificate_der: &'a [u8],
    },
}

/// Checks that a (SET-authenticated) entry body records this signature.
pub(super) fn check_body(body: &[u8], expected: &ExpectedEntry<'_>) -> Result<(), KeylessError> {
    let body: Value = serde_json::from_slice(body)
        .map_err(|e| KeylessError::tlog(format!("entry body is not json: {e}")))?;
    let (kind, digest, spec) = match expected {
        ExpectedEntry::HashedRekord { digest, .. } => ("hashedrekord", digest, "/spec/data/hash"),
        ExpectedEntry::Dsse { payload_digest, .. } => ("dsse", payload_digest, "/spec/payloadHash"),
    };
    let found_kind = body.get("kind").and_then(Value::as_str).unwrap_or_default();
    let version = body
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if found_kind != kind || version != "0.0.1" {
        return Err(KeylessError::tlog(format!(
            "entry is {found_kind:?} v{version:?}, expected {kind} v0.0.1"
        )));
    }
    let hash = body.pointer(spec);
    let algorithm = hash
        .and_then(|h| h.get("algorithm"))
        .and_then(Value::as_str);
    let value = hash.and_then(|h| h.get("value")).and_then(Value::as_str);
    if algorithm != Some("sha256") || value != Some(hex::encode(digest).as_str()) {
        return Err(KeylessError::tlog(format!(
            "entry records digest {}:{}, not sha256:{} of the signed payload",
            algorithm.unwrap_or("?"),
            value.unwrap_or("?"),
            hex::encode(digest)
        )));
    }
    let matches = |sig_b64: Option<&str>, cert_b64: Option<&str>, sig: &[u8], der: &[u8]| {
        let sig_ok = sig_b64
            .and_then(|s| STANDARD.decode(s).ok())
            .is_some_and(|s| s == sig);
        let cert_ok = cert_b64
            .and_then(|c| STANDARD.decode(c).ok())
            .and_then(|pem| x509_cert::der::pem::decode_vec(&pem).ok().map(|(_, d)| d))
            .is_some_and(|d| d == der);
        sig_ok && cert_ok
    };
    let bound = match expected {
        ExpectedEntry::HashedRekord {
            signature,
            certificate_der,
            ..
        } => matches(
            body.pointer("/spec/signature/content")
                .and_then(Value::as_str),
            body.pointer("/spec/signature/publicKey/content")
                .and_then(Value::as_str),
            signature,
            certificate_der,
        ),
        ExpectedEntry::Dsse {
            signature,
            certificate_der,
            ..
        } => match body.pointer("/spec/signatures").and_then(Value::as_array) {
            Some(sigs) if sigs.len() == 1 => sigs.iter().all(|s| {
                matches(
                    s.get("signature").and_then(Value::as_str),
                    s.get("verifier").and_then(Value::as_str),
                    signature,
                    certificate_der,
                )
            }),
            _ => false,
        },
    };
    if !bound {
        return Err(KeylessError::tlog(
            "entry records another signature or certificate",
        ));
    }
    Ok(())
}

/// A Merkle inclusion proof plus the signed checkpoint it leads to.
#[derive(Debug)]
pub(super) struct InclusionProof<'a> {
    /// Index of the leaf in the (shard's) tree.
    pub(super) log_index: i64,
    /// Size of the tree the proof is for.
    pub(super) tree_size: i64,
    /// Expected root hash.
    pub(super) root_hash: &'a [u8],
    /// Audit path, leaf to root.
    pub(super) hashes: &'a [Vec<u8>],
    /// The signed note (checkpoint) committing to `tree_size` and `root_hash`.
    pub(super) checkpoint: &'a str,
}

/// Verifies an RFC 6962 inclusion proof of `body` and the checkpoint signed by `log`.
pub(super) fn verify_inclusion_proof(
    log: &TransparencyLog,
    body: &[u8],
    proof: &InclusionProof<'_>,
) -> Result<(), KeylessError> {
    let index = u64::try_from(proof.log_index)
        .map_err(|_| KeylessError::tlog("inclusion proof has a negative index"))?;
    let size = u64::try_from(proof.tree_size)
        .map_err(|_| KeylessError::tlog("inclusion proof has a negative tree size"))?;
    if proof.hashes.len() > MAX_PROOF_HASHES {
        return Err(KeylessError::tlog("inclusion proof is too long"));
    }
    let mut leaf = Sha256::new();
    leaf.update([0u8]);
    leaf.update(body);
    let computed = root_from_path(index, size, leaf.finalize().into(), proof.hashes)
        .ok_or_else(|| KeylessError::tlog("inclusion proof is malformed"))?;
    if computed.as_slice() != proof.root_hash {
        return Err(KeylessError::tlog(
            "inclusion proof does not lead to the stated root hash",
        ));
    }
    verify_checkpoint(log, proof)
}

/// RFC 9162 section 2.1.3.2: the root an audit path leads to, or `None` if it is malformed.
fn root_from_path(index: u64, size: u64, leaf: [u8; 32], path: &[Vec<u8>]) -> Option<[u8; 32]> {
    if index >= size {
        return None;
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = leaf;
    for p in path {
        if snode == 0 || p.len() != 32 {
            return None;
        }
        let mut h = Sha256::new();
        h.update([1u8]);
        if fnode & 1 == 1 || fnode == snode {
            h.update(p);
            h.update(r);
            r = h.finalize().into();
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            h.update(r);
            h.update(p);
            r = h.finalize().into();
        }
        fnode >>= 1;
        snode >>= 1;
    }
    (snode == 0).then_some(r)
}

/// Checks a signed-note checkpoint: `origin\nsize\nroot\n[extra]\n\n— name sig\n`, signed by
/// the log key; its size and root must be the proof's.
fn verify_checkpoint(
    log: &TransparencyLog,
    proof: &InclusionProof<'_>,
) -> Result<(), KeylessError> {
    let Some((note, signatures)) = proof.checkpoint.split_once("\n\n") else {
        return Err(KeylessError::tlog("checkpoint is not a signed note"));
    };
    let signed = format!("{note}\n");
    let mut lines = note.lines().skip(1);
    let size = lines.next().and_then(|s| s.parse::<i64>().ok());
    let root = lines.next().and_then(|r| STANDARD.decode(r).ok());
    if size != Some(proof.tree_size) || root.as_deref() != Some(proof.root_hash) {
        return Err(KeylessError::tlog(
            "checkpoint does not commit to the inclusion proof's tree size and root",
        ));
    }
    let verified = signatures.lines().any(|line| {
        let Some(sig_b64) = line
            .strip_prefix("\u{2014} ")
            .and_then(|rest| rest.rsplit_once(' '))
            .map(|(_, sig)| sig)
        else {
            return false;
        };
        // The first four bytes are the key hint; the rest is the signature.
        STANDARD
            .decode(sig_b64)
            .ok()
            .and_then(|raw| raw.get(4..).map(<[u8]>::to_vec))
            .is_some_and(|sig| {
                log.key
                    .verify_signature(Signature::Raw(&sig), signed.as_bytes())
                    .is_ok()
            })
    });
    if !verified {
        return Err(KeylessError::tlog(
            "checkpoint is not signed by the rekor key",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(l: &[u8; 32], r: &[u8; 32]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update([1u8]);
        h.update(l);
        h.update(r);
        h.finalize().into()
    }

    #[test]
    fn audit_path_of_three_leaf_tree() {
        let (a, b, c) = ([1u8; 32], [2u8; 32], [3u8; 32]);
        let root = node(&node(&a, &b), &c);
        assert_eq!(
            root_from_path(2, 3, c, &[node(&a, &b).to_vec()]),
            Some(root)
        );
        assert_eq!(
            root_from_path(0, 3, a, &[b.to_vec(), c.to_vec()]),
            Some(root)
        );
        assert_eq!(
            root_from_path(1, 3, b, &[a.to_vec(), c.to_vec()]),
            Some(root)
        );
        assert_ne!(
            root_from_path(1, 3, a, &[a.to_vec(), c.to_vec()]),
            Some(root)
        );
        assert_eq!(root_from_path(3, 3, c, &[]), None);
        // Too short a path leaves levels unclimbed.
        assert_eq!(root_from_path(0, 3, a, &[b.to_vec()]), None);
    }
}
