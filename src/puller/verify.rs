//! Trust for the puller: one signing policy per constraint of the effective requirements,
//! all of which must hold. Keys come inline or from Secrets; keyless authorities are
//! checked offline against the Sigstore trusted root in the Secret their `trustedRootRef`
//! names (required: without one they fail closed).

use std::path::Path;
use std::sync::Arc;

use super::{Context, PullerError};
use crate::api::{Constraint, KeylessAuthority};
use crate::artifact::fetch::ResolvedArtifact;
use crate::reconcile::{
    trust_fingerprint, BoxFuture, TrustVerifier, VerifiedBy, Verifier, VerifyRejected,
};
use crate::registry::Repository;
use crate::signing::promotion::Approval;
use crate::signing::trust_root::TrustRoot;
use crate::signing::{
    Authority, NamedAuthority, PublicKey, Require, TrustPolicy, TrustedRootSource,
};

/// Accepts an artifact only when every inner verifier does (each TrustPolicy that covers the
/// sync is a separate constraint; see `effective_requirements`).
pub struct AllOf {
    verifiers: Vec<TrustVerifier>,
}

impl AllOf {
    /// Every one of `verifiers` must accept.
    pub fn new(verifiers: Vec<TrustVerifier>) -> Self {
        Self { verifiers }
    }
}

impl Verifier for AllOf {
    fn verify<'a>(
        &'a self,
        repo: &'a Repository,
        artifact: &'a ResolvedArtifact,
    ) -> BoxFuture<'a, Result<VerifiedBy, VerifyRejected>> {
        Box::pin(async move {
            if self.verifiers.is_empty() {
                return Err(VerifyRejected::rejected(
                    "NoTrustRequirements",
                    "no trust constraints to check",
                ));
            }
            let mut signers = Vec::new();
            let mut approval = None;
            for v in &self.verifiers {
                match v.verify(repo, artifact).await? {
                    VerifiedBy::Signers(s) => signers.extend(s),
                    VerifiedBy::Promoted {
                        signers: s,
                        approval: a,
                    } => {
                        signers.extend(s);
                        // A record the keys of a TrustPolicy vouch for wins over one the
                        // sync's own (tenant-chosen) keys do; then the newest.
                        if approval.as_ref().is_none_or(|b| rank(&a) > rank(b)) {
                            approval = Some(*a);
                        }
                    }
                    VerifiedBy::Unsigned => {}
                }
            }
            signers.sort();
            signers.dedup();
            Ok(VerifiedBy::signed(signers, approval))
        })
    }
    fn trust(&self) -> String {
        let inner: Vec<String> = self.verifiers.iter().map(Verifier::trust).collect();
        trust_fingerprint(&format!("all-of {}", inner.join(" ")))
    }
}

/// How much an approval is worth showing: one vouched for by a cluster TrustPolicy's key
/// beats one vouched for by the sync's own `spec.verify` keys, which a tenant chooses; then
/// the newer one wins.
fn rank(a: &Approval) -> (bool, &str) {
    let cluster = a
        .policy
        .as_deref()
        .is_some_and(|p| p.starts_with("TrustPolicy/"));
    (cluster, a.record.time.as_str())
}

/// A verifier that can be replaced between cycles: the engine keeps one for its lifetime,
/// the puller re-reads TrustPolicies and key Secrets before every cycle, so a new covering
/// policy or a rotated key applies at once, not only after the ArtifactSync changes.
pub struct Swappable {
    inner: std::sync::RwLock<Arc<dyn Verifier>>,
}

impl Swappable {
    /// Starts with `verifier`.
    pub fn new(verifier: Arc<dyn Verifier>) -> Self {
        Self {
            inner: std::sync::RwLock::new(verifier),
        }
    }

    /// Replaces the verifier used from the next verification on.
    pub fn set(&self, verifier: Arc<dyn Verifier>) {
        let mut guard = self.inner.write().unwrap_or_else(|e| e.into_inner());
        *guard = verifier;
    }

    fn current(&self) -> Arc<dyn Verifier> {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Verifier for Swappable {
    fn verify<'a>(
        &'a self,
        repo: &'a Repository,
        artifact: &'a ResolvedArtifact,
    ) -> BoxFuture<'a, Result<VerifiedBy, VerifyRejected>> {
        let current = self.current();
        Box::pin(async move { current.verify(repo, artifact).await })
    }

    fn trust(&self) -> String {
        self.current().trust()
    }
}

/// Default key of a trusted root in the Secret named by `keyless.trustedRootRef`.
pub const TRUSTED_ROOT_KEY: &str = "trusted_root.json";

/// The signing policy of one constraint, with keys and trusted roots read from their
/// Secrets (`namespace` of the reference or the sync's namespace; keys `cosign.pub` and
/// `trusted_root.json` by default).
///
/// A keyless authority without `trustedRootRef` fails closed (reason `TrustedRootMissing`):
/// the puller ships no Sigstore root of its own, since a root baked into the image would
/// go stale without anyone noticing.
pub(super) async fn policy_for(
    constraint: &Constraint,
    ctx: &Context,
    namespace: &str,
    object: &str,
) -> Result<TrustVerifier, PullerError> {
    let mut authorities = Vec::new();
    for a in &constraint.authorities {
        let origin = format!("{} authority {}", constraint.source, a.name);
        let authority = match (&a.key, &a.keyless) {
            (Some(key), _) => {
                let (pem, ns, name) = match (&key.data, &key.secret_ref) {
                    (Some(data), _) => (data.as_bytes().to_vec(), namespace, a.name.as_str()),
                    (None, Some(r)) => {
                        let ns = r.namespace.as_deref().unwrap_or(namespace);
                        let field = r.key.as_deref().unwrap_or("cosign.pub");
                        let pem = secret_data(ctx, ns, &r.name, field, &origin).await?;
                        (pem, ns, r.name.as_str())
                    }
                    (None, None) => return Err(shapeless(object, constraint, &a.name)),
                };
                let key = PublicKey::from_pem(&pem, Path::new(&origin)).map_err(|e| {
                    PullerError::Secret {
                        namespace: ns.to_string(),
                        name: name.to_string(),
                        message: e.to_string(),
                    }
                })?;
                Authority::Key { key }
            }
            (None, Some(keyless)) => {
                let r = keyless
                    .trusted_root_ref
                    .as_ref()
                    .ok_or_else(|| PullerError::Setup {
                        reason: "TrustedRootMissing",
                        message: format!(
                            "{origin}: a keyless authority needs keyless.trustedRootRef, a Secret \
                             holding the Sigstore trusted_root.json to check certificates \
                             against (the puller ships none)"
                        ),
                    })?;
                let ns = r.namespace.as_deref().unwrap_or(namespace);
                let field = r.key.as_deref().unwrap_or(TRUSTED_ROOT_KEY);
                let json = secret_data(ctx, ns, &r.name, field, &origin).await?;
                let from = format!("Secret {ns}/{} key {field}", r.name);
                keyless_authority(keyless, &json, &from).map_err(|message| PullerError::Secret {
                    namespace: ns.to_string(),
                    name: r.name.clone(),
                    message,
                })?
            }
            (None, None) => return Err(shapeless(object, constraint, &a.name)),
        };
        authorities.push(NamedAuthority {
            name: a.name.clone(),
            authority,
        });
    }
    let require = Require::from(constraint.require);
    let policy =
        TrustPolicy::new(authorities, require, Path::new(&constraint.source)).map_err(|e| {
            PullerError::Setup {
                reason: e.reason(),
                message: e.to_string(),
            }
        })?;
    Ok(TrustVerifier::new(policy).with_origin(constraint.source.clone()))
}

/// The signing crate's keyless authority for a CRD keyless authority, checked against the
/// trusted root `root_json` (`origin` names where it came from). Fails (the message says
/// why) when the root is not a Sigstore trusted root or identity/issuer are not exactly one
/// of exact or regexp each.
pub fn keyless_authority(
    keyless: &KeylessAuthority,
    root_json: &[u8],
    origin: &str,
) -> Result<Authority, String> {
    let root = TrustRoot::from_json(root_json)
        .map_err(|e| format!("{origin}: {e}"))?
        .with_origin(format!("keyless.trustedRootRef ({origin})"));
    Authority::keyless(
        keyless.identity.clone(),
        keyless.identity_regexp.clone(),
        keyless.issuer.clone(),
        keyless.issuer_regexp.clone(),
        TrustedRootSource::Loaded {
            origin: origin.to_string(),
            root,
        },
    )
}

/// An authority with neither a key nor a keyless identity (validation refuses these; kept
/// as an error rather than a panic).
fn shapeless(object: &str, constraint: &Constraint, name: &str) -> PullerError {
    PullerError::Setup {
        reason: "InvalidTrustPolicy",
        message: format!(
            "{object}: authority {name:?} of {} needs exactly one of key (data or secretRef) \
             or keyless",
            constraint.source
        ),
    }
}

/// The bytes under `key` in Secret `namespace/name` (`origin` says who needs it).
async fn secret_data(
    ctx: &Context,
    namespace: &str,
    name: &str,
    key: &str,
    origin: &str,
) -> Result<Vec<u8>, PullerError> {
    super::source::get_secret(ctx, namespace, name, origin)
        .await?
        .data
        .and_then(|mut d| d.remove(key))
        .map(|b| b.0)
        .ok_or_else(|| PullerError::Secret {
            namespace: namespace.to_string(),
            name: name.to_string(),
            message: format!("has no key {key:?} (needed by {origin})"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::promotion::{Approver, PromotedFrom, PromotedTo, PromotionRecord};

    fn approval(policy: &str, time: &str) -> Approval {
        Approval {
            authority: "approver".into(),
            policy: Some(policy.into()),
            record: PromotionRecord {
                from: PromotedFrom {
                    reference: "oci://r.example/app:staging".into(),
                    digest: "sha256:ab".into(),
                },
                to: PromotedTo {
                    reference: "oci://r.example/app:prod".into(),
                    previous_digest: None,
                },
                approver: Approver {
                    key: "sha256:00".into(),
                },
                time: time.into(),
                reason: None,
            },
        }
    }

    /// A tenant can list its own key in `spec.verify` and sign a record with it; a record a
    /// TrustPolicy's key signed is shown instead, even when older.
    #[test]
    fn a_trust_policy_approval_wins_over_a_newer_tenant_key_approval() {
        let cluster = approval("TrustPolicy/prod", "2026-12-01T10:00:00Z");
        let tenant = approval("ArtifactSync shop/app", "2026-12-02T10:00:00Z");
        assert!(rank(&cluster) > rank(&tenant));
        let newer = approval("TrustPolicy/prod", "2026-12-03T10:00:00Z");
        assert!(rank(&newer) > rank(&cluster));
    }
}
