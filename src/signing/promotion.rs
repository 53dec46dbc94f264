//! Promotion records: who moved an artifact into an environment, from where, when and why.
//!
//! `tresor promote` signs an in-toto statement with predicate type [`PREDICATE_TYPE`] and
//! stores it like any attestation (a DSSE layer of the `sha256-<hex>.att` manifest, see
//! [`super::attestation`]), so `cosign verify-attestation --type
//! https://tresor.dev/promotion/v1` checks it too. The predicate is a [`PromotionRecord`].
//!
//! A record is only shown as an approval when it is *verified*: its DSSE signature checks
//! with a key authority of the trust policy in force, its subject is the artifact's digest,
//! and the approver key it names is the key that signed it ([`verified_approvals`]). Anyone
//! with push rights can write an `.att` layer; only these checks make it mean something.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::attestation::{self, STATEMENT_TYPE};
use super::policy::{Authority, TrustPolicy};
use super::VerifyError;
use crate::digest::Digest;
use crate::reference::Reference;
use crate::registry::Repository;

/// Predicate type of promotion statements.
pub const PREDICATE_TYPE: &str = "https://tresor.dev/promotion/v1";

/// Where the promoted artifact came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromotedFrom {
    /// The source as given (tag or digest), e.g. `oci://registry.example/app:staging`.
    pub reference: String,
    /// The manifest digest promoted.
    pub digest: String,
}

/// Where the artifact was promoted to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PromotedTo {
    /// The target tag, e.g. `oci://registry.example/app:prod`.
    pub reference: String,
    /// What the target tag pointed at before, if it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_digest: Option<String>,
}

/// Who approved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approver {
    /// The approver's public key fingerprint, `sha256:<hex>` (of its DER
    /// SubjectPublicKeyInfo, as `tresor verify` prints it).
    pub key: String,
}

/// The predicate of a promotion statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromotionRecord {
    /// The source.
    pub from: PromotedFrom,
    /// The target.
    pub to: PromotedTo,
    /// The approver.
    pub approver: Approver,
    /// When, RFC 3339 UTC.
    pub time: String,
    /// Why (`--reason`), if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl PromotionRecord {
    /// The in-toto statement for this record, whose subject is `digest` as named by `target`
    /// (the repository the attestation is stored in).
    pub fn statement(&self, target: &Reference, digest: &Digest) -> Value {
        json!({
            "_type": STATEMENT_TYPE,
            "subject": [{
                "name": super::payload::docker_reference(target),
                "digest": { digest.algorithm(): digest.hex() },
            }],
            "predicateType": PREDICATE_TYPE,
            "predicate": self,
        })
    }

    /// The record of a verified statement, or `None` when it is no promotion statement or
    /// its predicate does not have the record's shape.
    pub fn from_statement(statement: &Value) -> Option<Self> {
        if statement.get("predicateType").and_then(Value::as_str) != Some(PREDICATE_TYPE) {
            return None;
        }
        serde_json::from_value(statement.get("predicate")?.clone()).ok()
    }

    /// Whether the record's target is in `repository` (`oci://host/repo` or
    /// `oci-layout:PATH`, as [`Reference::repository`] gives it). Hosts compare without case.
    pub fn targets_repository(&self, repository: &str) -> bool {
        self.to
            .reference
            .parse::<Reference>()
            .is_ok_and(|r| r.repository().eq_ignore_ascii_case(repository))
    }
}

/// A promotion record whose signature verified under a trust policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// The name of the policy authority whose key signed it.
    pub authority: String,
    /// Which trust policy that authority belongs to, when the verifier knows (the puller:
    /// `TrustPolicy/NAME`, or `ArtifactSync NS/NAME` for the sync's own `spec.verify`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The record.
    #[serde(flatten)]
    pub record: PromotionRecord,
}

impl Approval {
    /// One line: `release-manager (key sha256:…)`.
    pub fn approved_by(&self) -> String {
        format!("{} (key {})", self.authority, self.record.approver.key)
    }
}

/// The promotion records of `digest` in `repo` that verify with a key authority of
/// `policy`, newest first. Records that do not verify, name another digest, or name another
/// approver key than the one that signed them are left out (with a debug log): they are not
/// approvals. Keyless authorities are not consulted (tresor signs attestations with keys).
///
/// Fails only when the attestations cannot be read (registry errors); a malformed `.att`
/// manifest, which anyone with push rights could write, yields no approvals instead.
pub async fn verified_approvals(
    repo: &Repository,
    digest: &Digest,
    policy: &TrustPolicy,
) -> Result<Vec<Approval>, VerifyError> {
    let stored = match attestation::collect(repo, digest).await {
        Ok(stored) => stored,
        Err(e) if e.is_unverified() => {
            tracing::debug!(error = %e, "attestations unreadable; no approvals");
            return Ok(Vec::new());
        }
        Err(e) => return Err(e),
    };
    let mut approvals = Vec::new();
    for att in &stored {
        for named in &policy.authorities {
            let Authority::Key { key } = &named.authority else {
                continue;
            };
            let statement = match att.verify_with_key(key, digest) {
                Ok(s) => s,
                Err(e) if e.is_unverified() => continue,
                Err(e) => return Err(e),
            };
            let Some(record) = PromotionRecord::from_statement(&statement) else {
                break;
            };
            let signer = format!("sha256:{}", key.fingerprint());
            if record.approver.key != signer {
                tracing::debug!(source = %att.describe(), claimed = %record.approver.key, %signer,
                    "promotion record names another approver than its signer; ignoring it");
                break;
            }
            approvals.push(Approval {
                authority: named.name.clone(),
                policy: None,
                record,
            });
            break;
        }
    }
    approvals.sort_by(|a, b| b.record.time.cmp(&a.record.time));
    Ok(approvals)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(to: &str) -> PromotionRecord {
        PromotionRecord {
            from: PromotedFrom {
                reference: "oci://r.example/app:staging".into(),
                digest: "sha256:ab".into(),
            },
            to: PromotedTo {
                reference: to.into(),
                previous_digest: None,
            },
            approver: Approver {
                key: "sha256:00".into(),
            },
            time: "2026-12-02T10:00:00Z".into(),
            reason: Some("CAB-42".into()),
        }
    }

    #[test]
    fn a_statement_round_trips_and_names_the_digest() {
        let target: Reference = "oci://r.example/app:prod".parse().unwrap();
        let digest = Digest::of(b"m");
        let r = record("oci://r.example/app:prod");
        let s = r.statement(&target, &digest);
        assert_eq!(s["predicateType"], PREDICATE_TYPE);
        assert_eq!(s["subject"][0]["digest"]["sha256"], digest.hex());
        assert_eq!(s["predicate"]["from"]["digest"], "sha256:ab");
        assert_eq!(s["predicate"]["reason"], "CAB-42");
        assert_eq!(PromotionRecord::from_statement(&s), Some(r));
        let mut other = s.clone();
        other["predicateType"] = json!("https://slsa.dev/provenance/v1");
        assert_eq!(PromotionRecord::from_statement(&other), None);
    }

    #[test]
    fn the_target_repository_is_compared_without_tag_and_host_case() {
        let r = record("oci://R.example/app:prod");
        assert!(r.targets_repository("oci://r.example/app"));
        assert!(!r.targets_repository("oci://r.example/app2"));
        assert!(!record("not a reference").targets_repository("oci://r.example/app"));
    }
}
