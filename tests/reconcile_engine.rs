//! The reconcile engine as a library against the in-process fake registry: a test verifier
//! that rejects one digest ("wrongly signed v3"), a test policy, request counts, and a
//! registry that goes down.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::fake_registry::{Content, FakeRegistry};
use tresor::artifact::archive::Limits;
use tresor::artifact::fetch::ResolvedArtifact;
use tresor::digest::Digest;
use tresor::reconcile::cache::Cache;
use tresor::reconcile::source::Source;
use tresor::reconcile::target::Target;
use tresor::reconcile::{
    BoxFuture, Cancel, Engine, Outcome, Policy, PolicyRejected, Retry, Step, VerifiedBy, Verifier,
    VerifyRejected,
};
use tresor::registry::{RegistryOptions, Repository};

/// Accepts everything signed by "ci-key" except one digest, which is "wrongly signed".
/// Rejects one digest as untrusted until told to trust it (a signature appended later).
struct RejectDigest(Mutex<Option<Digest>>);

impl Verifier for RejectDigest {
    fn verify<'a>(
        &'a self,
        _repo: &'a Repository,
        artifact: &'a ResolvedArtifact,
    ) -> BoxFuture<'a, Result<VerifiedBy, VerifyRejected>> {
        let verdict = if self.0.lock().unwrap().as_ref() == Some(&artifact.digest) {
            Err(VerifyRejected::rejected(
                "UntrustedSigner",
                format!(
                    "{} is signed by a key the trust policy does not list",
                    artifact.digest
                ),
            ))
        } else {
            Ok(VerifiedBy::Signers(vec!["ci-key".into()]))
        };
        Box::pin(std::future::ready(verdict))
    }

    fn trust(&self) -> String {
        format!("ci-key, except {:?}", self.0.lock().unwrap())
    }
}

/// Refuses trees containing `forbidden.conf`.
struct Forbid;

impl Policy for Forbid {
    fn check(&self, _: &ResolvedArtifact, tree: &Path) -> Result<Vec<String>, PolicyRejected> {
        if tree.join("forbidden.conf").exists() {
            Err(PolicyRejected {
                reason: "ForbiddenFile",
                message: "forbidden.conf is not allowed".into(),
            })
        } else {
            Ok(Vec::new())
        }
    }
}

/// Serves an artifact of `files` under `tag` (and its digest); returns (manifest, layer)
/// digests.
fn serve(fake: &FakeRegistry, tag: &str, files: &[(&str, &[u8])]) -> (Digest, Digest) {
    let artifact = common::tarball::artifact(files);
    fake.serve_artifact(tag, &artifact);
    (artifact.digest, artifact.layer_digest)
}

fn engine(fake: &FakeRegistry, work: &Path, reject: &Digest) -> Engine {
    engine_with(
        fake,
        work,
        Arc::new(RejectDigest(Mutex::new(Some(reject.clone())))),
    )
}

fn engine_with(fake: &FakeRegistry, work: &Path, verifier: Arc<RejectDigest>) -> Engine {
    let reference = format!("{}:live", fake.repo("acme/site")).parse().unwrap();
    let options = RegistryOptions {
        plain_http: true,
        retries: 0,
        timeout: Duration::from_secs(5),
        ..Default::default()
    };
    Engine::new(
        Source::new(reference, None).unwrap(),
        Repository::open(&reference_of(fake), &options).unwrap(),
        verifier,
        Arc::new(Forbid),
        Cache::open(&work.join("cache")).unwrap(),
        Target::open(&work.join("site")).unwrap(),
        Limits::default(),
    )
}

fn reference_of(fake: &FakeRegistry) -> tresor::reference::Reference {
    format!("{}:live", fake.repo("acme/site")).parse().unwrap()
}

#[tokio::test]
async fn wrongly_signed_version_is_rejected_before_any_blob_and_verified_again_until_trusted() {
    let fake = FakeRegistry::start(Content::default());
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("site");
    let (v1, _) = serve(&fake, "live", &[("app.conf", b"1\n")]);
    let v3_preview = {
        // The digest v3 will have, so the verifier can be told to reject it.
        let probe = FakeRegistry::start(Content::default());
        serve(&probe, "live", &[("app.conf", b"3\n")]).0
    };
    let verifier = Arc::new(RejectDigest(Mutex::new(Some(v3_preview.clone()))));
    let mut engine = engine_with(&fake, work.path(), verifier.clone());
    let cancel = Cancel::never();

    let s = engine.reconcile(&cancel).await;
    assert_eq!(s.outcome, Outcome::Applied, "{s:?}");
    assert_eq!(s.applied.as_ref(), Some(&v1));
    assert_eq!(s.signer.as_deref(), Some("ci-key"));
    let names: Vec<Step> = s.steps.iter().map(|t| t.step).collect();
    assert_eq!(
        names,
        [
            Step::Resolve,
            Step::Verify,
            Step::Fetch,
            Step::Extract,
            Step::Policy,
            Step::Decrypt,
            Step::Apply
        ]
    );

    let (v3, v3_layer) = serve(&fake, "live", &[("app.conf", b"3\n")]);
    assert_eq!(v3, v3_preview);
    fake.clear_requests();
    let s = engine.reconcile(&cancel).await;
    assert_eq!(s.outcome, Outcome::Rejected, "{s:?}");
    let error = s.error.as_ref().unwrap();
    assert_eq!(
        (error.step, error.reason.as_str()),
        (Step::Verify, "UntrustedSigner")
    );
    assert_eq!(error.retry, Retry::Stalled);
    assert_eq!(error.digest.as_ref(), Some(&v3));
    assert_eq!(s.applied.as_ref(), Some(&v1), "the last good version stays");
    assert_eq!(
        std::fs::read_to_string(dir.join("app.conf")).unwrap(),
        "1\n"
    );
    assert_eq!(
        fake.requests(),
        [
            "HEAD /v2/acme/site/manifests/live".to_string(),
            format!("GET /v2/acme/site/manifests/{v3}"),
        ],
        "verification happens before any blob is downloaded"
    );
    assert!(!fake
        .requests()
        .iter()
        .any(|r| r.contains(&v3_layer.to_string())));

    // Unchanged tag: verified again (signatures are appended after a push), still no blob.
    fake.clear_requests();
    let s = engine.reconcile(&cancel).await;
    assert_eq!(s.outcome, Outcome::Rejected);
    assert!(
        !fake.requests().iter().any(|r| r.contains("/blobs/")),
        "{:?}",
        fake.requests()
    );

    // A trusted signature appears: the same digest is applied without a new tag.
    *verifier.0.lock().unwrap() = None;
    let s = engine.reconcile(&cancel).await;
    assert_eq!(s.outcome, Outcome::Applied, "{s:?}");
    assert_eq!(s.applied.as_ref(), Some(&v3));
    assert_eq!(
        std::fs::read_to_string(dir.join("app.conf")).unwrap(),
        "3\n"
    );
}

#[tokio::test]
async fn policy_refusal_keeps_the_last_good_version_and_leaves_no_staging_behind() {
    let fake = FakeRegistry::start(Content::default());
    let work = tempfile::tempdir().unwrap();
    let (v1, _) = serve(&fake, "live", &[("app.conf", b"1\n")]);
    let mut engine = engine(&fake, work.path(), &Digest::of(b"nothing"));
    let cancel = Cancel::never();
    assert_eq!(engine.reconcile(&cancel).await.outcome, Outcome::Applied);

    serve(
        &fake,
        "live",
        &[("app.conf", b"2\n"), ("forbidden.conf", b"x\n")],
    );
    let s = engine.reconcile(&cancel).await;
    assert_eq!(s.outcome, Outcome::Rejected, "{s:?}");
    let error = s.error.unwrap();
    assert_eq!(
        (error.step, error.reason.as_str()),
        (Step::Policy, "ForbiddenFile")
    );
    assert_eq!(s.applied, Some(v1.clone()));
    let dir = work.path().join("site");
    assert_eq!(
        std::fs::read_to_string(dir.join("app.conf")).unwrap(),
        "1\n"
    );
    assert!(!dir.join("forbidden.conf").exists());
    let leftovers: Vec<String> = std::fs::read_dir(work.path().join(".site.tresor"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("stage-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn registry_down_is_transient_and_drift_is_corrected_from_the_cache() {
    let fake = FakeRegistry::start(Content::default());
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("site");
    let (v1, _) = serve(&fake, "live", &[("app.conf", b"1\n"), ("b.conf", b"b\n")]);
    let mut engine = engine(&fake, work.path(), &Digest::of(b"nothing"));
    let cancel = Cancel::never();
    assert_eq!(engine.reconcile(&cancel).await.outcome, Outcome::Applied);

    // Idle: one HEAD, nothing restored.
    fake.clear_requests();
    let s = engine.reconcile(&cancel).await;
    assert_eq!(s.outcome, Outcome::Unchanged);
    assert_eq!(fake.requests(), ["HEAD /v2/acme/site/manifests/live"]);

    fake.set_down(true);
    std::fs::write(dir.join("app.conf"), "edited\n").unwrap();
    std::fs::remove_file(dir.join("b.conf")).unwrap();
    fake.clear_requests();
    let s = engine.reconcile(&cancel).await;
    assert_eq!(s.outcome, Outcome::Failed, "{s:?}");
    let error = s.error.as_ref().unwrap();
    assert_eq!(error.step, Step::Resolve);
    assert_eq!(error.retry, Retry::Transient);
    assert_eq!(s.restored, ["app.conf", "b.conf"]);
    assert_eq!(s.applied, Some(v1));
    assert_eq!(
        std::fs::read_to_string(dir.join("app.conf")).unwrap(),
        "1\n"
    );
    assert_eq!(std::fs::read_to_string(dir.join("b.conf")).unwrap(), "b\n");
    // Only the HEAD went to the registry: the repair came from the cache.
    assert_eq!(fake.requests(), ["HEAD /v2/acme/site/manifests/live"]);

    // A cancelled cycle is abandoned before anything is switched.
    fake.set_down(false);
    serve(&fake, "live", &[("app.conf", b"2\n")]);
    let (tx, cancel) = Cancel::new();
    tx.send(true).unwrap();
    let s = engine.reconcile(&cancel).await;
    assert_eq!(s.outcome, Outcome::Abandoned, "{s:?}");
    assert_eq!(
        std::fs::read_to_string(dir.join("app.conf")).unwrap(),
        "1\n"
    );
}

/// Issue 12, point 3: what an earlier process recorded as applied (the host's state, the
/// cluster's inventory) is no source of trust. After a restart the engine verifies the
/// applied digest again under its own trust before it repairs anything from the cache; a
/// digest its trust refuses is reported and not applied again, drift included.
#[tokio::test]
async fn applied_state_of_an_earlier_process_is_verified_again_before_drift_repair() {
    let fake = FakeRegistry::start(Content::default());
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("site");
    let (v1, _) = serve(&fake, "live", &[("app.conf", b"1\n")]);
    let cancel = Cancel::never();
    let mut first = engine(&fake, work.path(), &Digest::of(b"nothing"));
    assert_eq!(first.reconcile(&cancel).await.outcome, Outcome::Applied);
    drop(first);

    // The same trust after a restart: verified again (from the cache, no download) and
    // repaired.
    std::fs::write(dir.join("app.conf"), "edited\n").unwrap();
    let mut same = engine(&fake, work.path(), &Digest::of(b"nothing"));
    let s = same.reconcile(&cancel).await;
    assert_eq!(s.outcome, Outcome::DriftCorrected, "{s:?}");
    assert_eq!(s.signer.as_deref(), Some("ci-key"));
    assert_eq!(
        std::fs::read_to_string(dir.join("app.conf")).unwrap(),
        "1\n"
    );
    drop(same);

    // A trust that refuses v1: rejected at verify, nothing restored.
    std::fs::write(dir.join("app.conf"), "edited\n").unwrap();
    let mut stricter = engine(&fake, work.path(), &v1);
    let s = stricter.reconcile(&cancel).await;
    assert_eq!(s.outcome, Outcome::Rejected, "{s:?}");
    let error = s.error.as_ref().unwrap();
    assert_eq!(
        (error.step, error.reason.as_str()),
        (Step::Verify, "UntrustedSigner")
    );
    assert!(s.restored.is_empty(), "{s:?}");
    assert_eq!(
        std::fs::read_to_string(dir.join("app.conf")).unwrap(),
        "edited\n"
    );
}
