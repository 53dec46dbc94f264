//! Trust for the puller: one signing policy per constraint of the effective requirements,
//! all of which must hold.

use std::path::Path;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use super::{call, Context, PullerError};
use crate::api::Constraint;
use crate::artifact::fetch::ResolvedArtifact;
use crate::reconcile::{BoxFuture, TrustVerifier, VerifiedBy, Verifier, VerifyRejected};
use crate::registry::Repository;
use crate::signing::{Authority, NamedAuthority, PublicKey, Require, TrustPolicy};

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
            for v in &self.verifiers {
                match v.verify(repo, artifact).await? {
                    VerifiedBy::Signers(s) => signers.extend(s),
                    VerifiedBy::Unsigned => {}
                }
            }
            signers.sort();
            signers.dedup();
            Ok(VerifiedBy::Signers(signers))
        })
    }
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
}

/// The signing policy of one constraint, with keys read from their Secrets
/// (`secretRef.namespace` or the sync's namespace; key `cosign.pub` by default).
pub(super) async fn policy_for(
    constraint: &Constraint,
    ctx: &Context,
    namespace: &str,
    object: &str,
) -> Result<TrustVerifier, PullerError> {
    let mut authorities = Vec::new();
    for a in &constraint.authorities {
        let unsupported = || PullerError::Unsupported {
            object: object.to_string(),
            field: format!("keyless authority {:?} ({})", a.name, constraint.source),
        };
        let key = a.key.as_ref().ok_or_else(unsupported)?;
        let origin = format!("{} authority {}", constraint.source, a.name);
        let pem = match (&key.data, &key.secret_ref) {
            (Some(data), _) => data.as_bytes().to_vec(),
            (None, Some(r)) => {
                let ns = r.namespace.as_deref().unwrap_or(namespace);
                let secret: Secret = call(
                    "get Secret",
                    ctx.options.call_timeout,
                    Api::<Secret>::namespaced(ctx.client.clone(), ns).get(&r.name),
                )
                .await?;
                let field = r.key.as_deref().unwrap_or("cosign.pub");
                secret
                    .data
                    .and_then(|mut d| d.remove(field))
                    .map(|b| b.0)
                    .ok_or_else(|| PullerError::Secret {
                        namespace: ns.to_string(),
                        name: r.name.clone(),
                        message: format!("has no key {field:?}; put the PEM public key there"),
                    })?
            }
            (None, None) => return Err(unsupported()),
        };
        let key =
            PublicKey::from_pem(&pem, Path::new(&origin)).map_err(|e| PullerError::Secret {
                namespace: namespace.to_string(),
                name: a.name.clone(),
                message: e.to_string(),
            })?;
        authorities.push(NamedAuthority {
            name: a.name.clone(),
            authority: Authority::Key { key },
        });
    }
    let require = Require::from(constraint.require);
    let policy =
        TrustPolicy::new(authorities, require, Path::new(&constraint.source)).map_err(|e| {
            PullerError::Setup {
                reason: "InvalidTrustPolicy",
                message: e.to_string(),
            }
        })?;
    Ok(TrustVerifier::new(policy))
}
