//! The apply, prune, health and drift steps as a trait, so the engine does not care what it
//! keeps equal to an artifact.
//!
//! Two implementations: [`super::target::Target`] (the host agent's directory, switched
//! atomically) and the puller's cluster applier (server-side apply, in a layer above this
//! one). The engine owns resolve → verify → fetch → extract → policy → decrypt; the applier
//! gets the staged, verified, policy-checked tree (with its SOPS files decrypted in memory)
//! and does the rest.

use std::fs::File;
use std::future::Future;

use super::target::Staged;
use super::StepError;
use crate::artifact::archive::Limits;
use crate::digest::Digest;
use crate::secrets::Decryption;

/// Keeps a target equal to a staged artifact: apply, prune the previous version, check
/// health, and find and repair drift.
///
/// Every method reports failures as [`StepError`]s; the engine turns them into the one
/// summary. Futures are `Send` so an engine can run on a spawned task (the puller).
pub trait Applier: Send {
    /// What [`Applier::check_drift`] found, handed back to [`Applier::repair`].
    type Drift: Send;

    /// The digest the target holds now, if any.
    fn current(&self) -> Option<&Digest>;

    /// Unpacks the content layer (hardened, with `limits`) into a staging directory that
    /// the policy hook inspects and [`Applier::apply`] consumes.
    fn stage(
        &self,
        digest: &Digest,
        layer: File,
        size: u64,
        limits: &Limits,
    ) -> Result<Staged, StepError>;

    /// Whether the file at `path` (relative to the artifact's root) is used by this target,
    /// so that the engine decrypts it when it is a SOPS file. The directory target uses
    /// every file; the cluster applier only the manifests it applies.
    fn uses(&self, path: &str) -> bool {
        let _ = path;
        true
    }

    /// Makes the target equal to `staged`. Returns the previous digest (to prune) and
    /// warnings. On failure the previous version must stay in effect as far as possible.
    fn apply(
        &mut self,
        staged: Staged,
    ) -> impl Future<Output = Result<(Option<Digest>, Vec<String>), StepError>> + Send;

    /// Removes what the previous version had and the new one does not. Failures are
    /// reported as warnings by the engine: the new version is already applied.
    fn prune(
        &mut self,
        previous: &Digest,
    ) -> impl Future<Output = Result<Vec<String>, StepError>> + Send;

    /// Whether [`Applier::health`] does anything (the directory target has no health).
    fn checks_health(&self) -> bool {
        false
    }

    /// Waits until what was applied is healthy (or fails/rolls back). Returns warnings.
    fn health(&mut self) -> impl Future<Output = Result<Vec<String>, StepError>> + Send {
        std::future::ready(Ok(Vec::new()))
    }

    /// Looks for drift from the applied version; `None` when there is none.
    fn check_drift(
        &mut self,
    ) -> impl Future<Output = Result<Option<Self::Drift>, StepError>> + Send;

    /// Repairs `drift` from the applied version's verified layer, decrypting its SOPS
    /// files with `decryption` as a new version's are ([`Staged::decrypt`]). Returns what
    /// was restored (paths or objects) and warnings.
    fn repair(
        &mut self,
        drift: Self::Drift,
        layer: File,
        size: u64,
        limits: &Limits,
        decryption: &Decryption,
    ) -> impl Future<Output = Result<(Vec<String>, Vec<String>), StepError>> + Send;
}

/// A failure of an applier's own target (a cluster, say), carried through [`StepError`]
/// without the engine knowing its type: the message, the stable reason and whether
/// retrying soon may help, fixed when the applier reports it.
#[derive(Debug)]
pub struct ApplierFailure {
    reason: &'static str,
    transient: bool,
    error: Box<dyn std::error::Error + Send + Sync>,
}

impl ApplierFailure {
    /// Wraps `error` with its stable CamelCase `reason` and whether it is `transient`.
    pub fn new(
        reason: &'static str,
        transient: bool,
        error: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            reason,
            transient,
            error: Box::new(error),
        }
    }

    /// Stable CamelCase reason, as the applier gave it.
    pub fn reason(&self) -> &'static str {
        self.reason
    }

    /// Whether retrying soon may succeed.
    pub fn is_transient(&self) -> bool {
        self.transient
    }

    /// The applier's error, when it is an `E`.
    pub fn downcast_ref<E: std::error::Error + 'static>(&self) -> Option<&E> {
        self.error.downcast_ref()
    }

    /// The applier's error, when it is an `E`; itself otherwise.
    pub fn downcast<E: std::error::Error + 'static>(self) -> Result<E, Self> {
        match self.error.downcast::<E>() {
            Ok(e) => Ok(*e),
            Err(error) => Err(Self { error, ..self }),
        }
    }
}

impl std::fmt::Display for ApplierFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for ApplierFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}
