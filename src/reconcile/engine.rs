//! [`Engine`]: one reconcile cycle as ordered steps and one [`Summary`].

use std::fs::File;
use std::future::Future;
use std::io::Seek;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use super::cache::{Cache, Lookup};
use super::source::{Follow, Source};
use super::target::Target;
use super::{
    Applier, Failure, Outcome, Policy, Retry, Step, StepError, StepTiming, Summary, Verdicts,
    VerifiedBy, Verifier,
};
use crate::artifact::archive::Limits;
use crate::artifact::fetch::{self, ResolvedArtifact};
use crate::digest::Digest;
use crate::registry::{sniff_media_type, FetchedManifest, Repository};
use crate::secrets::Decryption;

/// Asks a running cycle to stop before its switch (SIGTERM). Network steps are abandoned at
/// once; local steps finish; the switch itself is never interrupted.
#[derive(Debug, Clone)]
pub struct Cancel {
    rx: watch::Receiver<bool>,
}

impl Cancel {
    /// A cancel handle and the sender that triggers it (`send(true)`).
    pub fn new() -> (watch::Sender<bool>, Self) {
        let (tx, rx) = watch::channel(false);
        (tx, Self { rx })
    }

    /// A handle that is never triggered.
    pub fn never() -> Self {
        Self::new().1
    }

    /// Whether cancellation was asked for.
    pub fn is_cancelled(&self) -> bool {
        *self.rx.borrow()
    }

    /// Runs `fut` unless cancelled first.
    pub async fn guard<F: Future>(&self, fut: F) -> Result<F::Output, StepError> {
        if self.is_cancelled() {
            return Err(StepError::Abandoned);
        }
        let mut rx = self.rx.clone();
        let cancelled = async move {
            loop {
                if rx.changed().await.is_err() {
                    // The sender is gone: nobody can cancel any more.
                    std::future::pending::<()>().await;
                }
                if *rx.borrow() {
                    return;
                }
            }
        };
        tokio::select! {
            out = fut => Ok(out),
            () = cancelled => Err(StepError::Abandoned),
        }
    }
}

/// Collects step timings and side findings of one cycle.
struct Run {
    started: Instant,
    steps: Vec<StepTiming>,
    restored: Vec<String>,
    corrupted: Vec<Digest>,
    warnings: Vec<String>,
    /// The source and revision annotations of a newly resolved artifact.
    provenance: (Option<String>, Option<String>),
}

impl Run {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            provenance: (None, None),
            steps: Vec::new(),
            restored: Vec::new(),
            corrupted: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Records `step` as started at `since`; consecutive parts of one step add up.
    fn time(&mut self, step: Step, since: Instant, ok: bool) {
        let seconds = since.elapsed().as_secs_f64();
        match self.steps.last_mut() {
            Some(last) if last.step == step => {
                last.seconds += seconds;
                last.ok &= ok;
            }
            _ => self.steps.push(StepTiming { step, seconds, ok }),
        }
    }
}

type StepResult<T> = Result<T, (Step, StepError)>;

fn at<T>(step: Step, r: Result<T, impl Into<StepError>>) -> StepResult<T> {
    r.map_err(|e| (step, e.into()))
}

/// The reconcile engine for one source and one target.
///
/// Plug points: the [`Verifier`] ([`super::TrustVerifier`], or [`super::AllowUnsigned`] for
/// the explicit opt-out), the [`Policy`] hook ([`super::ImmutabilityPolicy`]; tests of other
/// steps use [`super::NoPolicy`]), and the [`Applier`] — the host agent's directory [`Target`] (the
/// default) or the cluster applier of the layer above.
pub struct Engine<A: Applier = Target> {
    source: Source,
    repo: Repository,
    verifier: Arc<dyn Verifier>,
    policy: Arc<dyn Policy>,
    cache: Cache,
    target: A,
    limits: Limits,
    signer: Option<(Digest, VerifiedBy)>,
    rejected: Option<(Digest, Failure)>,
    verdicts: Verdicts,
    decryption: Decryption,
}

impl<A: Applier> Engine<A> {
    /// An engine reconciling `target` with `source`.
    pub fn new(
        source: Source,
        repo: Repository,
        verifier: Arc<dyn Verifier>,
        policy: Arc<dyn Policy>,
        cache: Cache,
        target: A,
        limits: Limits,
    ) -> Self {
        Self {
            source,
            repo,
            verifier,
            policy,
            cache,
            target,
            limits,
            signer: None,
            rejected: None,
            verdicts: Verdicts::default(),
            decryption: Decryption::none("an age identity for this sync"),
        }
    }

    /// Decrypts SOPS files with `decryption` (its identities, and the flag or field to name
    /// when there are none). Without it a SOPS file fails the version closed.
    pub fn with_decryption(mut self, decryption: Decryption) -> Self {
        self.decryption = decryption;
        self
    }

    /// Shares `verdicts` (the verifications of this process) with other engines, so an
    /// engine rebuilt for a changed spec or Secret does not fetch the signatures of its
    /// applied digest again when its trust is unchanged.
    pub fn with_verdicts(mut self, verdicts: Verdicts) -> Self {
        self.verdicts = verdicts;
        self
    }

    /// What is followed.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// The target.
    pub fn target(&self) -> &A {
        &self.target
    }

    /// The target, mutably (e.g. for the puller to re-apply on a watch event).
    pub fn target_mut(&mut self) -> &mut A {
        &mut self.target
    }

    /// Runs one cycle: resolve → verify → fetch → extract → policy → decrypt → apply →
    /// prune, then drift correction, and returns its one summary. Never panics; every
    /// failure is in the summary.
    pub async fn reconcile(&mut self, cancel: &Cancel) -> Summary {
        let mut run = Run::new();
        let mut failure: Option<Failure> = None;
        let mut digest = None;
        let mut tag = None;
        // Set when the applied digest failed this engine's verification: nothing of it is
        // applied again, drift included.
        let mut untrusted = false;

        let since = Instant::now();
        let resolved = match (&self.source.follow, self.target.current()) {
            (Follow::Digest(d), Some(current)) if d == current => Ok((d.clone(), None)),
            _ => cancel
                .guard(self.source.resolve(&self.repo))
                .await
                .and_then(|r| r),
        };
        run.time(Step::Resolve, since, resolved.is_ok());
        let mut outcome = match resolved {
            Err(e) => {
                failure = Some(Failure::new(Step::Resolve, &e, None));
                if matches!(e, StepError::Abandoned) {
                    Outcome::Abandoned
                } else {
                    Outcome::Failed
                }
            }
            Ok((resolved, picked)) => {
                digest = Some(resolved.clone());
                tag = picked;
                if self.target.current() == Some(&resolved) {
                    // Applied already, by this process or (as the cluster or host says)
                    // by an earlier one: what others can write is no source of trust, so
                    // the digest must pass this engine's verifier before drift is repaired
                    // from it.
                    let confirmed = match self.trusted(&resolved) {
                        Some(by) => {
                            self.note_signer(&resolved, &by);
                            Ok(())
                        }
                        None => self.confirm(&resolved, &mut run, cancel).await.map(drop),
                    };
                    match confirmed {
                        Ok(()) => {
                            self.rejected = None;
                            Outcome::Unchanged
                        }
                        Err(e) => {
                            let f = Failure::new(Step::Verify, &e, Some(resolved.clone()));
                            let outcome = if matches!(e, StepError::Abandoned) {
                                Outcome::Abandoned
                            } else if f.retry == Retry::Stalled {
                                Outcome::Rejected
                            } else {
                                Outcome::Failed
                            };
                            untrusted = true;
                            failure = Some(f);
                            outcome
                        }
                    }
                } else if let Some((_, f)) = self.rejected.as_ref().filter(|(d, _)| d == &resolved)
                {
                    // Rejected before and unchanged since: wait for a change, fetch nothing.
                    failure = Some(f.clone());
                    Outcome::Rejected
                } else {
                    match self.update(&resolved, &mut run, cancel).await {
                        Ok(()) => {
                            self.rejected = None;
                            Outcome::Applied
                        }
                        Err((step, e)) => {
                            let f = Failure::new(step, &e, Some(resolved.clone()));
                            let outcome = if matches!(e, StepError::Abandoned) {
                                Outcome::Abandoned
                            } else if f.retry == Retry::Stalled {
                                // What the content decides (and a version rolled back for
                                // its health) waits for a new digest. Signatures are added
                                // after a push (push, then sign), and RBAC, namespaces and
                                // CRDs change in the cluster: a digest refused at verify
                                // (signature manifests only, no layer) or at apply is tried
                                // again next cycle.
                                if !matches!(step, Step::Verify | Step::Apply) {
                                    self.rejected = Some((resolved.clone(), f.clone()));
                                }
                                Outcome::Rejected
                            } else {
                                Outcome::Failed
                            };
                            failure = Some(f);
                            outcome
                        }
                    }
                }
            }
        };

        if !untrusted && !matches!(outcome, Outcome::Abandoned | Outcome::Applied) {
            let since = Instant::now();
            let drift = self.correct_drift(&mut run, cancel).await;
            run.time(Step::Drift, since, drift.is_ok());
            match drift {
                Ok(restored) if !restored.is_empty() => {
                    run.restored = restored;
                    if outcome == Outcome::Unchanged {
                        outcome = Outcome::DriftCorrected;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(reason = e.reason(), error = %e, "drift correction failed");
                    if failure.is_none() {
                        failure = Some(Failure::new(
                            Step::Drift,
                            &e,
                            self.target.current().cloned(),
                        ));
                        outcome = Outcome::Failed;
                    }
                }
            }
        }

        let applied = self.target.current().cloned();
        let (signer, approval) = match (&self.signer, &applied) {
            (Some((d, by)), Some(a)) if d == a => (Some(by.signer()), by.approval().cloned()),
            _ => (None, None),
        };
        Summary {
            outcome,
            reference: self.source.to_string(),
            digest,
            tag,
            applied,
            signer,
            approval,
            source: run.provenance.0,
            revision: run.provenance.1,
            restored: run.restored,
            cache_corrupted: run.corrupted,
            warnings: run.warnings,
            error: failure,
            steps: run.steps,
            seconds: run.started.elapsed().as_secs_f64(),
        }
    }

    /// The path for a new digest: manifest, verify, fetch, extract, policy, decrypt, apply,
    /// prune.
    async fn update(&mut self, digest: &Digest, run: &mut Run, cancel: &Cancel) -> StepResult<()> {
        let reference = self.source.reference.with_digest(digest.clone());
        let since = Instant::now();
        let artifact = cancel
            .guard(fetch::resolve(&self.repo, &reference))
            .await
            .and_then(|r| r.map_err(StepError::from));
        run.time(Step::Resolve, since, artifact.is_ok());
        let artifact = at(Step::Resolve, artifact)?;
        let annotation = |key: &str| artifact.manifest.annotations.get(key).cloned();
        run.provenance = (
            annotation(crate::artifact::format::ANNOTATION_SOURCE),
            annotation(crate::artifact::format::ANNOTATION_REVISION),
        );

        let since = Instant::now();
        let verified = self.verify(&artifact, cancel).await;
        run.time(Step::Verify, since, verified.is_ok());
        let verified = at(Step::Verify, verified)?;
        tracing::info!(%digest, signer = %verified.signer(), approved_by = ?verified.approval().map(|a| a.approved_by()), "verified");

        let since = Instant::now();
        let layer = match self
            .cache
            .put_manifest(&artifact.digest, &artifact.manifest_bytes)
        {
            Ok(()) => self.layer_file(&artifact, run, cancel).await,
            Err(e) => Err(e.into()),
        };
        run.time(Step::Fetch, since, layer.is_ok());
        let layer = at(Step::Fetch, layer)?;

        let since = Instant::now();
        let staged = self
            .target
            .stage(digest, layer, artifact.layer.size, &self.limits);
        run.time(Step::Extract, since, staged.is_ok());
        let staged = at(Step::Extract, staged)?;

        let since = Instant::now();
        let checked = self.policy.check(&artifact, staged.path());
        run.time(Step::Policy, since, checked.is_ok());
        run.warnings.extend(at(Step::Policy, checked)?);

        let since = Instant::now();
        let mut staged = staged;
        let target = &self.target;
        let decrypted = staged.decrypt(&self.decryption, |path| target.uses(path));
        run.time(Step::Decrypt, since, decrypted.is_ok());
        let files = at(Step::Decrypt, decrypted)?;
        if files > 0 {
            tracing::info!(%digest, files, "decrypted");
        }

        if cancel.is_cancelled() {
            return Err((Step::Apply, StepError::Abandoned));
        }
        let since = Instant::now();
        let switched = self.target.apply(staged).await;
        run.time(Step::Apply, since, switched.is_ok());
        let (previous, warnings) = at(Step::Apply, switched)?;
        run.warnings.extend(warnings);
        self.signer = Some((digest.clone(), verified));

        if let Some(previous) = previous {
            let since = Instant::now();
            let pruned = self.target.prune(&previous).await;
            run.time(Step::Prune, since, pruned.is_ok());
            match pruned {
                Ok(w) => run.warnings.extend(w),
                // The switch is done; a leftover version is removed on the next start.
                Err(e) => run.warnings.push(format!("pruning {previous} failed: {e}")),
            }
            self.forget_cached(&previous, &artifact.layer.digest);
        }

        if self.target.checks_health() {
            let since = Instant::now();
            let healthy = self.target.health().await;
            run.time(Step::Health, since, healthy.is_ok());
            run.warnings.extend(at(Step::Health, healthy)?);
        }
        Ok(())
    }

    /// Verifies `artifact` with this engine's verifier, unless this process already did so
    /// under the same trust ([`Verdicts`]); records a pass.
    async fn verify(
        &self,
        artifact: &ResolvedArtifact,
        cancel: &Cancel,
    ) -> Result<VerifiedBy, StepError> {
        let repository = self.source.reference.repository();
        let trust = self.verifier.trust();
        if let Some(by) = self.verdicts.get(&repository, &artifact.digest, &trust) {
            return Ok(by);
        }
        let by = cancel
            .guard(self.verifier.verify(&self.repo, artifact))
            .await
            .and_then(|r| r.map_err(StepError::from))?;
        self.verdicts
            .insert(&repository, &artifact.digest, &trust, by.clone());
        Ok(by)
    }

    /// This process's verdict on `digest` under this engine's current trust, if any.
    fn trusted(&self, digest: &Digest) -> Option<VerifiedBy> {
        let repository = self.source.reference.repository();
        self.verdicts
            .get(&repository, digest, &self.verifier.trust())
    }

    /// Remembers who vouched for the applied `digest` (for the summary), once.
    fn note_signer(&mut self, digest: &Digest, by: &VerifiedBy) {
        if self.signer.as_ref().is_none_or(|(d, _)| d != digest) {
            self.signer = Some((digest.clone(), by.clone()));
        }
    }

    /// The applied digest's artifact, verified under this engine's trust (from
    /// [`Verdicts`] when this process verified it already, else now): what is applied
    /// again, as drift repair, must have passed the same checks as a new version.
    async fn confirm(
        &mut self,
        current: &Digest,
        run: &mut Run,
        cancel: &Cancel,
    ) -> Result<ResolvedArtifact, StepError> {
        let artifact = self.current_artifact(current, run, cancel).await?;
        let by = self.verify(&artifact, cancel).await?;
        self.note_signer(current, &by);
        Ok(artifact)
    }

    /// The content layer: from the cache (re-hashed) or, on a miss or a corrupted entry,
    /// from the registry (then cached).
    async fn layer_file(
        &self,
        artifact: &ResolvedArtifact,
        run: &mut Run,
        cancel: &Cancel,
    ) -> Result<File, StepError> {
        match self.cache.blob(&artifact.layer)? {
            Lookup::Hit(file) => return Ok(file),
            Lookup::Corrupted => run.corrupted.push(artifact.layer.digest.clone()),
            Lookup::Miss => {}
        }
        let mut file = cancel
            .guard(self.repo.fetch_blob(&artifact.layer))
            .await
            .and_then(|r| r.map_err(StepError::from))?;
        match self.cache.put_blob(&artifact.layer, &mut file) {
            Ok(cached) => Ok(cached),
            Err(e) => {
                tracing::warn!(reason = e.reason(), error = %e, "cannot cache the layer; using it uncached");
                file.rewind()
                    .map_err(|source| crate::artifact::ArtifactError::Io {
                        path: "<temporary blob file>".into(),
                        source,
                    })?;
                Ok(file)
            }
        }
    }

    /// The applied artifact's manifest: from the cache (re-hashed), or fetched again when
    /// the cache lost it. Not verified here: see [`Engine::confirm`].
    async fn current_artifact(
        &self,
        current: &Digest,
        run: &mut Run,
        cancel: &Cancel,
    ) -> Result<ResolvedArtifact, StepError> {
        let reference = self.source.reference.with_digest(current.clone());
        match self.cache.manifest(current)? {
            Lookup::Hit(bytes) => {
                let media_type = sniff_media_type(&bytes).unwrap_or_default();
                let fetched = FetchedManifest {
                    bytes,
                    digest: current.clone(),
                    media_type,
                };
                return Ok(fetch::from_manifest(&reference, fetched)?);
            }
            Lookup::Corrupted => run.corrupted.push(current.clone()),
            Lookup::Miss => {}
        }
        let artifact = match cancel.guard(fetch::resolve(&self.repo, &reference)).await? {
            Ok(a) => a,
            Err(crate::artifact::ArtifactError::Registry(e)) if e.is_transient() => {
                tracing::warn!(error = %e, "registry unavailable");
                return Err(StepError::NotCached {
                    digest: current.clone(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        self.cache
            .put_manifest(&artifact.digest, &artifact.manifest_bytes)?;
        Ok(artifact)
    }

    /// Restores drifted managed files of the applied version from the cache.
    async fn correct_drift(
        &mut self,
        run: &mut Run,
        cancel: &Cancel,
    ) -> Result<Vec<String>, StepError> {
        let Some(current) = self.target.current().cloned() else {
            return Ok(Vec::new());
        };
        let Some(drift) = self.target.check_drift().await? else {
            return Ok(Vec::new());
        };
        let artifact = self.confirm(&current, run, cancel).await?;
        let layer = self.layer_file(&artifact, run, cancel).await?;
        let (restored, warnings) = self
            .target
            .repair(
                drift,
                layer,
                artifact.layer.size,
                &self.limits,
                &self.decryption,
            )
            .await?;
        run.warnings.extend(warnings);
        Ok(restored)
    }

    /// Drops a replaced version's manifest and layer from the cache (unless the new
    /// version uses the same layer).
    fn forget_cached(&self, previous: &Digest, keep_layer: &Digest) {
        if let Ok(Lookup::Hit(bytes)) = self.cache.manifest(previous) {
            let fetched = FetchedManifest {
                media_type: sniff_media_type(&bytes).unwrap_or_default(),
                bytes,
                digest: previous.clone(),
            };
            match fetch::from_manifest(&self.source.reference, fetched) {
                Ok(a) if &a.layer.digest != keep_layer => self.cache.remove(&a.layer.digest),
                _ => {}
            }
        }
        self.cache.remove(previous);
    }
}
