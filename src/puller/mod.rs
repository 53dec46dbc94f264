//! The in-cluster controller (`tresor-puller`): reconciles every `ArtifactSync` with the
//! shared engine (resolve → verify → fetch → policy → decrypt → apply → prune → health) and
//! writes its status once per cycle.
//!
//! One [`Engine<KubeApplier>`] per ArtifactSync, kept between cycles (so an idle cycle is one
//! registry HEAD and no API write) and rebuilt when `metadata.generation` or the content of
//! its pull/CA Secrets changes. Trust comes
//! from [`crate::api::effective_requirements`]: every covering TrustPolicy, the named one and
//! the sync's own authorities must each hold; keys are read from Secrets. A suspended sync is
//! not touched. The status is patched only when it differs from what is stored; an Event is
//! published when `Ready` changes.
//!
//! Registry credentials and CAs come from the Secrets `spec.pullSecretRef` and
//! `spec.caSecretRef` names, read every cycle (the engine is rebuilt when they change;
//! see `source`); `spec.path` limits the apply to one directory of the artifact; keyless
//! authorities are checked against the trusted root their `trustedRootRef` Secret holds
//! (see `verify`). Deleting a sync deletes what it applied when `prune` is set (see
//! [`FINALIZER`] and `cleanup`).
//!
//! Drift is seen through [`Watches`]: one shared watch per applied kind (the puller's own
//! client, label selector on tresor's owner labels) triggers a reconcile of the owning sync
//! (`Controller::reconcile_on`) as soon as an owned object differs from what was applied
//! or is deleted; the cycle's drift check reads the watch caches instead of GETting every
//! object, and still GETs everything every [`PullerOptions::full_resync`] (the backstop).
//!
//! ArtifactSyncs (see `watched`) and TrustPolicies are decoded one object at a time, so
//! one object the puller cannot read stops only itself: such a sync is Stalled with reason
//! `InvalidSpec` naming the field, and such a policy fails closed for every sync it might
//! cover (reason `TrustPolicyUnreadable`; see [`crate::api::UnreadablePolicy`]). Status
//! patches carry explicit nulls for fields that became empty, so an idle cycle writes
//! nothing.
//!
//! [`run_elected`] adds leader election with a Lease ([`LeaseLock`], `--leader-elect`):
//! only the holder reconciles; one that loses the Lease stops.

mod cleanup;
mod error;
mod events;
mod health;
mod lease;
mod notify;
mod observation;
mod serve;
mod source;
mod trust_cache;
mod verify;
mod watch;
mod watched;
mod webhook;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Event, EventType, Reporter};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::Mutex;

pub use cleanup::FINALIZER;
pub use error::PullerError;
pub use events::{event_note, NOTE_MAX_BYTES};
pub use health::{liveness, readiness, Health, ReadyFacts, Role, Unhealthy};
pub use lease::LeaseLock;
pub use serve::{bind, serve_health};
pub use verify::{keyless_authority, AllOf, TRUSTED_ROOT_KEY};
pub use watch::{WatchStats, Watches};
use watched::WatchedSync;

use crate::api::conditions::{now_rfc3339, observe, Observation};
use crate::api::{
    check_unreadable_policies, effective_requirements, ArtifactSync, ArtifactSyncStatus,
    InventoryEntry, Requirements,
};
use crate::kube::{
    client_from_config, impersonating, service_account_user, watch_client_from_config,
    ApplyOptions, Cluster, DiscoveryResolver, InventoryStore, KubeApplier, Owner,
};
use crate::reconcile::cache::Cache;
use crate::reconcile::metrics::Metrics;
use crate::reconcile::source::Source;
use crate::reconcile::{
    AllowUnsigned, Cancel, Engine, Failure, ImmutabilityPolicy, Outcome, Retry, Step, Summary,
    Verdicts, Verifier,
};
use crate::reference::Reference;
use crate::registry::{RegistryOptions, Repository};

/// The annotation whose new value asks for a cycle now (`kubectl annotate --overwrite
/// artifactsync/NAME tresor.dev/reconcile-requested-at="$(date +%s)"`).
pub const REQUESTED_AT: &str = "tresor.dev/reconcile-requested-at";

/// How the puller runs.
#[derive(Debug, Clone)]
pub struct PullerOptions {
    /// Content-addressed cache of verified artifacts (and staging for applies).
    pub cache_dir: PathBuf,
    /// ArtifactSyncs reconciled at the same time.
    pub concurrency: u16,
    /// Timeout of every Kubernetes API and registry call.
    pub call_timeout: Duration,
    /// Poll interval while waiting for CRDs and health.
    pub poll: Duration,
    /// Watch the objects of every applied kind and reconcile a sync as soon as one of its
    /// objects drifts (see [`Watches`]); off: drift is found by the cycles alone, one GET
    /// per applied object each.
    pub watch_drift: bool,
    /// With `watch_drift`: how often a sync's drift check still GETs every object instead
    /// of trusting the watch caches (the backstop).
    pub full_resync: Duration,
    /// Reconcile only the ArtifactSyncs whose labels match this selector (`team=a`,
    /// `shard in (1,2)`): several pullers, each with its own share of the syncs.
    pub watch_label_selector: Option<String>,
    /// `/healthz` fails when reconciles are running and none finished for this long (see
    /// [`liveness`]); longer than the longest `spec.timeout` a cycle may take.
    pub stall_timeout: Duration,
    /// The ServiceAccount (in the sync's own namespace) that syncs without
    /// `spec.serviceAccountName` apply, prune and delete as (`--default-service-account`,
    /// like Flux's); `None`: such syncs use the puller's own identity.
    pub default_service_account: Option<String>,
    /// A sync applies only into its own namespace (`--no-cross-namespace`): another
    /// `spec.targetNamespace`, or an object naming another namespace, is refused before
    /// anything is applied (reason `CrossNamespace`).
    pub no_cross_namespace: bool,
    /// The secret of the webhook receivers (`--webhook-secret-file`); they are served on
    /// the listener given to [`Context::receive_webhooks`].
    pub webhook_secret: Option<crate::webhook::Secret>,
}

impl Default for PullerOptions {
    fn default() -> Self {
        Self {
            cache_dir: PathBuf::from("/var/cache/tresor"),
            concurrency: 4,
            call_timeout: Duration::from_secs(30),
            poll: Duration::from_secs(1),
            watch_drift: true,
            full_resync: Duration::from_secs(600),
            watch_label_selector: None,
            stall_timeout: Duration::from_secs(30 * 60),
            default_service_account: None,
            no_cross_namespace: false,
            webhook_secret: None,
        }
    }
}

/// One sync's engine and the generation (and registry Secrets) it was built for.
struct SyncState {
    generation: Option<i64>,
    registry: String,
    verifier: Arc<verify::Swappable>,
    engine: Engine<KubeApplier>,
}

/// What every reconcile shares: the puller's own client (tenants are impersonated through
/// it), and the engines by `namespace/name`.
pub struct Context {
    client: Client,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    events: events::Events,
    options: PullerOptions,
    syncs: Mutex<HashMap<String, Arc<Mutex<SyncState>>>>,
    watches: Watches,
    /// The puller's identity with a read timeout fit for watches (ArtifactSyncs, owned
    /// objects).
    watch_client: Client,
    /// Kind → resource, shared by every sync (discovery is the puller's own).
    resolver: Arc<DiscoveryResolver>,
    /// TrustPolicies and Namespaces from watches; started by [`run`].
    trust: std::sync::OnceLock<trust_cache::TrustCache>,
    /// The verifications of this process, shared by every sync's engine (see
    /// [`Verdicts`]): the only source of trust for what an engine applies.
    verdicts: Verdicts,
    /// Where the webhook receivers are served (see [`Context::receive_webhooks`]).
    webhook_listener: std::sync::Mutex<Option<tokio::net::TcpListener>>,
    /// The controller the receivers trigger while this replica runs it (else a standby).
    leader_hooks: std::sync::Mutex<Option<webhook::LeaderHooks>>,
    /// The client of `spec.notify` deliveries, and what is being delivered (see `notify`).
    notify_client: reqwest::Client,
    deliveries: notify::Deliveries,
}

impl Context {
    /// A context talking to the cluster as `config` (impersonated clients derive from it).
    pub fn new(config: kube::Config, options: PullerOptions) -> Result<Self, PullerError> {
        if let Some(account) = &options.default_service_account {
            if !crate::api::is_dns_label(account) {
                return Err(PullerError::Setup {
                    reason: "InvalidArgument",
                    message: format!(
                        "--default-service-account {account:?} is not a ServiceAccount name: \
                         use lower-case letters, digits and '-', at most 63 characters"
                    ),
                });
            }
        }
        let client = client_from_config(config.clone(), None, options.call_timeout)?;
        let notify_client = crate::notify::client().map_err(|e| PullerError::Setup {
            reason: e.reason(),
            message: e.to_string(),
        })?;
        let watch_client = watch_client_from_config(config, options.call_timeout)?;
        let reporter = Reporter {
            controller: "tresor-puller".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Ok(Self {
            watches: Watches::new(
                watch_client.clone(),
                options.watch_drift,
                options.full_resync,
            ),
            watch_client,
            resolver: Arc::new(DiscoveryResolver::new(client.clone(), options.call_timeout)),
            events: events::Events::new(client.clone(), reporter),
            metrics: Arc::new(Metrics::default()),
            health: Arc::new(Health::new(options.stall_timeout)),
            client,
            options,
            syncs: Mutex::new(HashMap::new()),
            trust: std::sync::OnceLock::new(),
            verdicts: Verdicts::default(),
            webhook_listener: std::sync::Mutex::new(None),
            leader_hooks: std::sync::Mutex::new(None),
            notify_client,
            deliveries: notify::Deliveries::default(),
        })
    }

    /// The puller's own client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Serves the registry webhook receivers on `listener` from [`run`] or [`run_elected`]
    /// on (needs `PullerOptions::webhook_secret`): a push reconciles every sync whose URL
    /// names the pushed repository at once — through this replica's controller when it
    /// leads, else by asking the leader (see `webhook`).
    pub fn receive_webhooks(&self, listener: tokio::net::TcpListener) {
        *self
            .webhook_listener
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(listener);
    }

    fn set_leader_hooks(&self, hooks: Option<webhook::LeaderHooks>) {
        *self.leader_hooks.lock().unwrap_or_else(|e| e.into_inner()) = hooks;
    }

    /// The watches of owned objects (drift).
    pub fn watches(&self) -> &Watches {
        &self.watches
    }

    /// Starts watching TrustPolicies and Namespaces, so that cycles read their trust
    /// inputs from memory while the watches are current (see `trust_cache`); [`run`] does
    /// this. Without it every cycle lists TrustPolicies and GETs its Namespace. Idempotent.
    pub fn watch_trust_inputs(&self) {
        self.trust.get_or_init(|| {
            trust_cache::TrustCache::start(&self.watch_client, self.events.clone())
        });
    }

    /// Whether the TrustPolicy and Namespace watches are current (cycles use them).
    pub fn trust_inputs_watched(&self) -> bool {
        self.trust
            .get()
            .is_some_and(trust_cache::TrustCache::current)
    }

    /// Metrics of every cycle of every ArtifactSync (served by
    /// [`crate::reconcile::metrics::serve`]).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// What `/readyz` answers: this replica's role when Ready, else why not (see
    /// [`readiness`]).
    pub fn readiness(&self) -> Result<Role, Unhealthy> {
        readiness(&self.health.ready_facts(self.trust_inputs_watched()))
    }

    /// What `/healthz` answers: whether the reconcile loop is stalled (see [`liveness`]).
    pub fn liveness(&self) -> Result<(), Unhealthy> {
        self.health.live()
    }
}

async fn call<T, E: std::fmt::Display>(
    what: &str,
    timeout: Duration,
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, PullerError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(PullerError::Kube {
            what: what.to_string(),
            message: e.to_string(),
        }),
        Err(_) => Err(PullerError::Kube {
            what: what.to_string(),
            message: format!("timed out after {}s", timeout.as_secs()),
        }),
    }
}

/// Serves the webhook receivers on the listener given to [`Context::receive_webhooks`], for
/// the rest of the process, as whatever this replica is (see `webhook`); once.
fn serve_webhooks(ctx: &Arc<Context>) {
    let listener = ctx
        .webhook_listener
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    if let (Some(listener), Some(secret)) = (listener, &ctx.options.webhook_secret) {
        let receivers = crate::webhook::Receivers::all(secret.clone());
        let hooks = webhook::ReplicaHooks { ctx: ctx.clone() };
        tokio::spawn(crate::webhook::serve(listener, receivers, hooks));
    }
}

/// Runs the controller over all ArtifactSyncs until `shutdown` completes.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    ctx.watch_trust_inputs();
    // Each ArtifactSync is decoded on its own (see `watched`): one the puller cannot read
    // stops only itself. The cache keeps them without their managedFields and client-side
    // last-applied copy, which no reconcile reads.
    let api: Api<WatchedSync> = Api::all(ctx.watch_client.clone());
    let mut config = watcher::Config::default();
    if let Some(selector) = &ctx.options.watch_label_selector {
        config = config.labels(selector);
    }
    let writer = kube::runtime::reflector::store::Writer::default();
    let reader = writer.as_reader();
    let syncs = watcher(api, config)
        .modify(strip_unread_metadata)
        .reflect(writer)
        .applied_objects();
    let controller = Controller::for_stream(syncs, reader);
    let janitor = tokio::spawn(forget_deleted(controller.store(), ctx.clone()));
    let drifted = ctx.watches.triggers().map(|r| {
        let watched = kube::runtime::reflector::ObjectRef::<WatchedSync>::new(&r.name);
        match r.namespace {
            Some(ns) => watched.within(&ns),
            None => watched,
        }
    });
    let (webhook_tx, webhook_rx) = tokio::sync::mpsc::channel(1024);
    let pushed = futures_util::stream::unfold(webhook_rx, |mut rx| async move {
        rx.recv().await.map(|r| (r, rx))
    });
    let triggers = futures_util::stream::select(drifted, pushed);
    serve_webhooks(&ctx);
    ctx.set_leader_hooks(Some(webhook::LeaderHooks {
        syncs: controller.store(),
        triggers: webhook_tx,
    }));
    controller
        .with_config(ControllerConfig::default().concurrency(ctx.options.concurrency))
        .reconcile_on(triggers)
        .graceful_shutdown_on(shutdown)
        .run(reconcile_raw, error_policy, ctx.clone())
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(object = %object, "reconciled"),
                Err(e) => tracing::warn!(error = %e, "reconcile failed"),
            }
        })
        .await;
    janitor.abort();
    ctx.set_leader_hooks(None);
}

/// Removes from a watched ArtifactSync what no reconcile reads: `metadata.managedFields`
/// and kubectl's `last-applied-configuration` annotation.
fn strip_unread_metadata(sync: &mut WatchedSync) {
    sync.managed_fields_mut().clear();
    sync.annotations_mut()
        .remove("kubectl.kubernetes.io/last-applied-configuration");
}

/// Every minute, drops the engines and watched objects of ArtifactSyncs that are gone (so
/// their kinds stop being watched and their state is freed).
async fn forget_deleted(store: kube::runtime::reflector::Store<WatchedSync>, ctx: Arc<Context>) {
    // `Store::wait_until_ready` wakes only the last of several waiters (kube-runtime's
    // DelayedInit keeps one waker, and the Controller's runner waits too): poll it again
    // every half second instead of waiting once, or this task sleeps forever.
    loop {
        match tokio::time::timeout(Duration::from_millis(500), store.wait_until_ready()).await {
            Ok(Ok(())) => break,
            Ok(Err(_)) => return,
            Err(_) => {}
        }
    }
    // The ArtifactSync watch has listed: one of the conditions of `/readyz`.
    ctx.health.mark_syncs_listed();
    tracing::info!("ArtifactSyncs listed");
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        let known: std::collections::HashSet<String> = store
            .state()
            .iter()
            .map(|s| {
                format!(
                    "{}/{}",
                    s.namespace().unwrap_or_else(|| "default".into()),
                    s.name_any()
                )
            })
            .collect();
        let gone: Vec<String> = ctx
            .syncs
            .lock()
            .await
            .keys()
            .filter(|k| !known.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            tracing::info!(sync = %key, "ArtifactSync gone: forgetting its engine and watches");
            ctx.syncs.lock().await.remove(&key);
            ctx.deliveries.forget(&key);
            if let Some((namespace, name)) = key.split_once('/') {
                ctx.watches.forget(namespace, name);
                ctx.metrics
                    .forget(&[("namespace", namespace), ("name", name)]);
            }
        }
    }
}

/// Like [`run`], but with `lease`: waits until this replica leads, and stops with
/// [`PullerError::LeaseLost`] when it loses the Lease (the process should exit and restart
/// as a follower). Without a lease this is [`run`].
pub async fn run_elected(
    ctx: Arc<Context>,
    lease: Option<LeaseLock>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), PullerError> {
    use futures_util::FutureExt;
    let shutdown = shutdown.shared();
    // Standbys receive webhooks too, and pass them on to the leader (see `webhook`).
    serve_webhooks(&ctx);
    let Some(lease) = lease else {
        ctx.health.set_role(Role::Single);
        run(ctx, shutdown).await;
        return Ok(());
    };
    ctx.health.set_lease_answered(lease.answered());
    ctx.health.set_role(Role::Standby);
    tokio::select! {
        () = lease.acquire() => {}
        () = shutdown.clone() => return Ok(()),
    }
    ctx.health.set_role(Role::Leading);
    let (lost_tx, lost_rx) = tokio::sync::oneshot::channel();
    let holder = lease.clone();
    let hold = tokio::spawn(async move {
        let _ = lost_tx.send(holder.hold().await);
    });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let watcher = tokio::spawn(async move {
        let lost = lost_rx.await.ok();
        let _ = stop_tx.send(());
        lost
    });
    run(ctx, async move {
        tokio::select! {
            () = shutdown => {}
            _ = stop_rx => {}
        }
    })
    .await;
    hold.abort();
    let lost = if watcher.is_finished() {
        watcher.await.ok().flatten()
    } else {
        watcher.abort();
        None
    };
    match lost {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The API resource of ArtifactSyncs, for the references of raw ones.
fn sync_resource() -> ApiResource {
    ApiResource::erase::<ArtifactSync>(&())
}

/// Reconciles `object`; one that cannot be decoded (written before the CRD's CEL rules, or
/// under an older CRD) is not reconciled at all: it gets a Stalled condition naming the
/// field (reason `InvalidSpec`), its engine and watches are dropped, and it waits for a
/// change. Every other sync goes on as before.
async fn reconcile_raw(object: Arc<WatchedSync>, ctx: Arc<Context>) -> Result<Action, PullerError> {
    let _running = ctx.health.reconcile_started();
    let (raw, e) = match object.as_ref() {
        WatchedSync::Decoded(sync) => return reconcile(Arc::new(sync.as_ref().clone()), ctx).await,
        WatchedSync::Unreadable(raw, e) => (raw, e),
    };
    let namespace = raw.namespace().unwrap_or_else(|| "default".into());
    let name = raw.name_any();
    tracing::warn!(namespace, name, reason = e.reason(), error = %e,
        "cannot read ArtifactSync; it is stalled until it changes");
    ctx.syncs
        .lock()
        .await
        .remove(&format!("{namespace}/{name}"));
    ctx.watches.forget(&namespace, &name);
    // Its status is the puller's own and decodes on its own; if not, start afresh.
    let old: ArtifactSyncStatus = raw
        .data
        .get("status")
        .and_then(|s| serde_json::from_value(s.clone()).ok())
        .unwrap_or_default();
    let mut status = old.clone();
    observe(
        &mut status,
        raw.metadata.generation,
        &Observation::Failed {
            reason: e.reason().to_string(),
            message: e.to_string(),
            retry: Retry::Stalled,
        },
        &now_rfc3339(),
    );
    let target = StatusTarget {
        reference: raw.object_ref(&sync_resource()),
        name,
        namespace,
    };
    write_status(&target, &ctx, &old, &status).await?;
    Ok(Action::await_change())
}

fn error_policy(_sync: Arc<WatchedSync>, error: &PullerError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(reason = error.reason(), error = %error, "reconcile error");
    Action::requeue(Duration::from_secs(30))
}

/// One reconcile of `sync`: the deletion path when it is being deleted (see
/// [`FINALIZER`]); nothing when suspended; otherwise the finalizer (once), one engine cycle
/// and one status patch (skipped when the status is unchanged). Errors only when the
/// finalizer or the status cannot be written; everything else ends up in the status.
pub async fn reconcile(sync: Arc<ArtifactSync>, ctx: Arc<Context>) -> Result<Action, PullerError> {
    let namespace = sync.namespace().unwrap_or_else(|| "default".into());
    let name = sync.name_any();
    if sync.metadata.deletion_timestamp.is_some() {
        return cleanup::finalize(&sync, &ctx, &namespace, &name).await;
    }
    if sync.spec.suspend {
        tracing::debug!(namespace, name, "suspended");
        ctx.watches.forget(&namespace, &name);
        return Ok(Action::await_change());
    }
    cleanup::ensure_finalizer(&sync, &ctx, &namespace).await?;
    let interval = sync
        .spec
        .interval()
        .unwrap_or_else(|_| Duration::from_secs(300));
    let generation = sync.metadata.generation;
    let old = sync.status.clone().unwrap_or_default();
    let mut status = old.clone();
    let now = now_rfc3339();
    let requeue = match cycle(&sync, &ctx, &namespace, &name).await {
        Ok((summary, inventory)) => {
            ctx.metrics.observe_labelled(
                &summary,
                std::time::SystemTime::now(),
                &[("namespace", &namespace), ("name", &name)],
            );
            let tag = summary
                .tag
                .as_deref()
                .or(sync.spec.source_ref.tag.as_deref());
            record(&mut status, generation, &summary, tag, inventory, &now);
            notify::record(&mut status, &sync, &namespace, &summary, &now);
            match summary.error.as_ref().map(|f| f.retry) {
                Some(Retry::Transient) => interval.min(Duration::from_secs(30)),
                _ => interval,
            }
        }
        Err(e) => {
            tracing::warn!(namespace, name, reason = e.reason(), error = %e, "cannot reconcile");
            ctx.metrics
                .observe_failure(e.reason(), &[("namespace", &namespace), ("name", &name)]);
            let retry = if e.is_transient() {
                Retry::Transient
            } else {
                Retry::Stalled
            };
            observe(
                &mut status,
                generation,
                &Observation::Failed {
                    reason: e.reason().to_string(),
                    message: e.to_string(),
                    retry,
                },
                &now,
            );
            notify::record_failure(&mut status, &sync, &namespace, &e, &now);
            interval.min(Duration::from_secs(30))
        }
    };
    status.last_handled_reconcile_at = sync.annotations().get(REQUESTED_AT).cloned();
    let delivery = notify::pending(&ctx, &sync, &namespace, &mut status);
    let written = write_status(&StatusTarget::of(&sync, &namespace), &ctx, &old, &status).await?;
    if let Some(job) = delivery {
        let version = written.or_else(|| sync.resource_version());
        notify::start(ctx.clone(), job, version);
    }
    Ok(Action::requeue(requeue))
}

/// The ArtifactSync whose status is written (decoded or not).
struct StatusTarget {
    name: String,
    namespace: String,
    /// What its Events refer to.
    reference: k8s_openapi::api::core::v1::ObjectReference,
}

impl StatusTarget {
    fn of(sync: &ArtifactSync, namespace: &str) -> Self {
        Self {
            name: sync.name_any(),
            namespace: namespace.to_string(),
            reference: sync.object_ref(&()),
        }
    }
}

/// Publishes the Event for a `Ready` transition and patches `status` when it differs from
/// `old`, the status the sync was read with (an unchanged status is not written). The
/// resourceVersion after the patch, when there was one.
async fn write_status(
    target: &StatusTarget,
    ctx: &Context,
    old: &ArtifactSyncStatus,
    status: &ArtifactSyncStatus,
) -> Result<Option<String>, PullerError> {
    publish_transition(&target.reference, ctx, old, status).await;
    if status == old {
        return Ok(None);
    }
    let api: Api<ArtifactSync> = Api::namespaced(ctx.client.clone(), &target.namespace);
    let patch = Patch::Merge(json!({ "status": status_patch(old, status)? }));
    let written = call(
        "patch ArtifactSync status",
        ctx.options.call_timeout,
        api.patch_status(&target.name, &PatchParams::default(), &patch),
    )
    .await?;
    tracing::debug!(namespace = %target.namespace, name = %target.name, "status written");
    Ok(written.resource_version())
}

/// The merge patch that turns the stored status `old` into `new`: `new` itself, plus an
/// explicit `null` for every field `old` has and `new` leaves out (empty `inventory`, no
/// `lastHandledReconcileAt` …). Without the nulls a merge patch keeps the stale values, the
/// stored status never equals the computed one, and every cycle writes again.
fn status_patch(
    old: &ArtifactSyncStatus,
    new: &ArtifactSyncStatus,
) -> Result<serde_json::Value, PullerError> {
    let to_value = |s: &ArtifactSyncStatus| {
        serde_json::to_value(s).map_err(|e| PullerError::Kube {
            what: "encode ArtifactSync status".into(),
            message: e.to_string(),
        })
    };
    let mut patch = to_value(new)?;
    if let (Some(patch), serde_json::Value::Object(old)) = (patch.as_object_mut(), to_value(old)?) {
        for key in old.keys() {
            if !patch.contains_key(key) {
                patch.insert(key.clone(), serde_json::Value::Null);
            }
        }
    }
    Ok(patch)
}

/// Publishes an Event when `Ready` changed status or reason (except a plain `Unchanged`
/// after a success): new digest applied, drift corrected, failures and recoveries. A failed
/// publish is logged and otherwise ignored; Events are a courtesy, the status is the record.
async fn publish_transition(
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    ctx: &Context,
    old: &ArtifactSyncStatus,
    new: &ArtifactSyncStatus,
) {
    let Some(ready) = new.ready() else {
        return;
    };
    let before = old.ready().map(|c| (c.status, c.reason.as_str()));
    if before == Some((ready.status, ready.reason.as_str()))
        || (ready.reason == Outcome::Unchanged.name() && before.map(|b| b.0) == Some(ready.status))
    {
        return;
    }
    let type_ = if ready.status == crate::api::ConditionStatus::True {
        EventType::Normal
    } else {
        EventType::Warning
    };
    let note = event_note(&ready.message);
    let event = Event {
        type_,
        reason: ready.reason.clone(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    let published = tokio::time::timeout(
        ctx.options.call_timeout,
        ctx.events.publish(&event, reference),
    )
    .await;
    match published {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, reason = %ready.reason, "cannot publish event"),
        Err(_) => tracing::warn!(reason = %ready.reason, "publishing an event timed out"),
    }
}

/// Writes a cycle's summary into `status` (conditions, digests, signer, inventory, history;
/// `tag` is the tag followed or picked).
fn record(
    status: &mut ArtifactSyncStatus,
    generation: Option<i64>,
    summary: &Summary,
    tag: Option<&str>,
    inventory: Vec<InventoryEntry>,
    now: &str,
) {
    observe(status, generation, &observation::observation(summary), now);
    if let Some(d) = &summary.digest {
        status.last_attempted_digest = Some(d.to_string());
    }
    if summary.outcome == Outcome::Applied {
        if let Some(d) = &summary.applied {
            status.record_applied(
                &d.to_string(),
                summary.signer.as_deref().unwrap_or("unknown"),
                tag,
                now,
            );
        }
    } else if let Some(d) = &summary.applied {
        status.last_applied_digest = Some(d.to_string());
    }
    // Whenever this cycle knows who vouched for the applied digest, it knows whether a
    // promotion record verified too.
    if summary.applied.is_some() && summary.signer.is_some() {
        status.promotion = summary.approval.as_ref().map(|a| crate::api::Promotion {
            approved_by: a.approved_by(),
            time: a.record.time.clone(),
            reason: a.record.reason.clone(),
            from: a.record.from.reference.clone(),
            policy: a.policy.clone(),
        });
    } else if summary.applied.is_none() {
        status.promotion = None;
    }
    status.inventory = inventory;
}

/// Runs one engine cycle for `sync`, building its engine first if needed.
async fn cycle(
    sync: &ArtifactSync,
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<(Summary, Vec<InventoryEntry>), PullerError> {
    let key = format!("{namespace}/{name}");
    let existing = ctx.syncs.lock().await.get(&key).cloned();
    // Trust is read again every cycle (policies and Secrets may change without the sync).
    let verifier = verifier_for(sync, ctx, namespace).await?;
    // So are the pull and CA Secrets: a rotated password rebuilds the engine.
    let registry = source::registry_for(sync, ctx, namespace).await?;
    let built_for = match &existing {
        Some(s) => {
            let s = s.lock().await;
            Some((s.generation, s.registry.clone()))
        }
        None => None,
    };
    let reusable = built_for.as_ref().is_some_and(|(generation, secrets)| {
        *generation == sync.metadata.generation && *secrets == registry.fingerprint
    });
    // The spec changed since the objects were applied (seen by this process, or after a
    // restart by the status): apply in full once.
    let respec = match &built_for {
        Some((generation, _)) => *generation != sync.metadata.generation,
        None => {
            sync.status.as_ref().and_then(|s| s.observed_generation) != sync.metadata.generation
        }
    };
    let state = match existing {
        Some(s) if reusable => {
            s.lock().await.verifier.set(verifier);
            s
        }
        _ => {
            let verifier = Arc::new(verify::Swappable::new(verifier));
            let fingerprint = registry.fingerprint.clone();
            let engine = build_engine(
                sync,
                ctx,
                namespace,
                name,
                verifier.clone(),
                registry.options,
                respec,
            )
            .await?
            .with_decryption(registry.decryption);
            let state = Arc::new(Mutex::new(SyncState {
                generation: sync.metadata.generation,
                registry: fingerprint,
                verifier,
                engine,
            }));
            ctx.syncs.lock().await.insert(key, state.clone());
            state
        }
    };
    let mut state = state.lock().await;
    let limit = match &sync.spec.timeout {
        Some(t) => humantime::parse_duration(t).unwrap_or(Duration::from_secs(300)),
        None => sync.spec.interval().unwrap_or(Duration::from_secs(300)),
    };
    let seen = ctx.watches.seen_for(namespace, name);
    state.engine.target_mut().set_seen(seen);
    let (cancel_tx, cancel) = Cancel::new();
    let summary = {
        let fut = state.engine.reconcile(&cancel);
        tokio::pin!(fut);
        tokio::select! {
            s = &mut fut => s,
            () = tokio::time::sleep(limit) => {
                // Let the engine stop at its next step boundary, then say why it stopped.
                let _ = cancel_tx.send(true);
                timed_out(fut.await, limit)
            }
        }
    };
    if let Some(applied) = state.engine.target().desired() {
        ctx.watches.update(namespace, name, applied);
    }
    let inventory = state
        .engine
        .target()
        .inventory()
        .iter()
        .map(|o| InventoryEntry {
            group: o.group.clone(),
            kind: o.kind.clone(),
            namespace: o.namespace.clone().unwrap_or_default(),
            name: o.name.clone(),
            version: o.version.clone(),
        })
        .collect();
    Ok((summary, inventory))
}

/// A cycle stopped at its time limit: not "Abandoned" (that is shutting down) but a
/// transient failure of the step it was in, saying which limit it hit.
fn timed_out(mut summary: Summary, limit: Duration) -> Summary {
    if summary.outcome != Outcome::Abandoned {
        return summary;
    }
    summary.outcome = Outcome::Failed;
    summary.error = Some(Failure {
        step: summary.steps.last().map_or(Step::Resolve, |s| s.step),
        reason: "CycleTimeout".into(),
        message: format!(
            "the cycle did not finish within {} (spec.timeout, default spec.interval); it \
             stopped before switching anything and runs again",
            humantime::format_duration(limit)
        ),
        retry: Retry::Transient,
        digest: summary.digest.clone(),
    });
    summary
}

/// Builds the engine for `sync` from its spec: source, trust, registry (`registry`: with
/// the pull and CA Secrets already read), apply options. With `full_apply`, the engine
/// applies its digest in full once even when the stored inventory says it is applied.
async fn build_engine(
    sync: &ArtifactSync,
    ctx: &Context,
    namespace: &str,
    name: &str,
    verifier: Arc<verify::Swappable>,
    registry: RegistryOptions,
    full_apply: bool,
) -> Result<Engine<KubeApplier>, PullerError> {
    sync.validate()?;
    let spec = &sync.spec;
    if ctx.options.no_cross_namespace {
        if let Some(target) = spec.target_namespace.as_deref().filter(|t| *t != namespace) {
            return Err(PullerError::CrossNamespace {
                object: sync.object_name(),
                namespace: target.to_string(),
            });
        }
    }

    let r = &spec.source_ref;
    let (text, semver) = match (&r.tag, &r.semver, &r.digest) {
        (Some(tag), _, _) => (format!("{}:{tag}", spec.url), None),
        (_, _, Some(digest)) => (format!("{}@{digest}", spec.url), None),
        (_, range, _) => (spec.url.clone(), range.as_deref()),
    };
    let setup = |reason: &'static str, message: String| PullerError::Setup { reason, message };
    let reference: Reference = text
        .parse()
        .map_err(|e: crate::reference::ReferenceError| setup(e.reason(), e.to_string()))?;
    let source =
        Source::new(reference.clone(), semver).map_err(|e| setup(e.reason(), e.to_string()))?;
    let repo =
        Repository::open(&reference, &registry).map_err(|e| setup(e.reason(), e.to_string()))?;
    let cache =
        Cache::open(&ctx.options.cache_dir).map_err(|e| setup(e.reason(), e.to_string()))?;

    let (cluster, store, options) = apply_setup(sync, ctx, namespace, name)?;
    let mut applier = KubeApplier::open(cluster, options, cache.root(), store)
        .await
        .map_err(|e| match e {
            crate::kube::ApplyError::Forbidden { .. } => PullerError::NotOnboarded {
                namespace: namespace.to_string(),
                source: Box::new(e),
            },
            e => e.into(),
        })?;
    if full_apply {
        // The digest may be applied, but with another spec (path, targetNamespace, prune …):
        // only a full apply prunes what the new spec leaves out. Otherwise (a restart, a
        // rotated Secret) the engine corrects drift from the cache, offline if need be.
        let inventory = applier.inventory().to_vec();
        applier = applier.with_state(None, inventory);
    }
    let lint = crate::policy::Policy::default();
    let mode = lint.mode(None);
    Ok(Engine::new(
        source,
        repo,
        verifier,
        // Applied as Kubernetes objects, so linted as such whatever the artifact's
        // `dev.tresor.content` annotation says (issue 12).
        Arc::new(
            ImmutabilityPolicy::new(lint, mode)
                .with_content(crate::artifact::objects::ContentMode::Kubernetes),
        ),
        cache,
        applier,
        crate::artifact::archive::Limits::default(),
    )
    .with_verdicts(ctx.verdicts.clone()))
}

/// How `sync` applies: the cluster as its service account (impersonated: its
/// `serviceAccountName`, else the puller's `--default-service-account`, in the sync's own
/// namespace), the inventory store as the puller itself, and the apply options from the
/// spec (confined to the sync's namespace with `--no-cross-namespace`). Shared by the
/// engine and the deletion path (which must delete with the same rights the objects were
/// applied with).
fn apply_setup(
    sync: &ArtifactSync,
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<(Cluster, InventoryStore, ApplyOptions), PullerError> {
    let spec = &sync.spec;
    sync.check_service_account()?;
    let account = spec
        .service_account_name
        .as_deref()
        .or(ctx.options.default_service_account.as_deref())
        .map(|sa| service_account_user(namespace, sa));
    // Every sync applies through the puller's own connection pool, impersonating its
    // service account when it has one.
    let client = match account.as_deref() {
        Some(user) => impersonating(&ctx.client, user)?,
        None => ctx.client.clone(),
    };
    let resolver = ctx.resolver.clone();
    let owner = Owner {
        name: name.to_string(),
        namespace: namespace.to_string(),
    };
    let mut options = ApplyOptions::new(owner.clone());
    options.target_namespace = Some(
        spec.target_namespace
            .clone()
            .unwrap_or_else(|| namespace.to_string()),
    );
    options.path = match &spec.path {
        Some(p) => crate::artifact::subdirectory(p).map_err(|message| {
            PullerError::Api(crate::api::ApiError::InvalidSpec {
                object: sync.object_name(),
                field: "spec.path".into(),
                message,
            })
        })?,
        None => None,
    };
    if ctx.options.no_cross_namespace {
        options.confine_to = Some(namespace.to_string());
    }
    options.prune = spec.prune;
    options.allow_empty = spec.allow_empty;
    options.wait = spec.wait;
    options.rollback = spec.rollback;
    options.api_timeout = ctx.options.call_timeout;
    options.poll = ctx.options.poll;
    if let Some(t) = &spec.timeout {
        if let Ok(d) = humantime::parse_duration(t) {
            options.health_timeout = d;
        }
    }
    let store = InventoryStore {
        owner,
        cluster: Cluster::new(ctx.client.clone(), resolver.clone(), None),
    };
    let cluster = Cluster::new(client, resolver, account);
    Ok((cluster, store, options))
}

/// The verifier of `sync`'s effective trust requirements.
async fn verifier_for(
    sync: &ArtifactSync,
    ctx: &Context,
    namespace: &str,
) -> Result<Arc<dyn Verifier>, PullerError> {
    let cached = ctx.trust.get().and_then(|cache| cache.inputs(namespace));
    let inputs = match cached {
        Some(inputs) => inputs,
        None => read_trust_inputs(ctx, namespace).await?,
    };
    // A TrustPolicy that cannot be read fails closed for every sync it might cover.
    sync.validate()?;
    check_unreadable_policies(&inputs.unreadable, sync, &inputs.labels)?;
    match effective_requirements(&inputs.policies, sync, &inputs.labels)? {
        Requirements::Unsigned => Ok(Arc::new(AllowUnsigned)),
        Requirements::Signed(constraints) => {
            let mut all = Vec::new();
            for c in &constraints {
                all.push(verify::policy_for(c, ctx, namespace, &sync.object_name()).await?);
            }
            Ok(Arc::new(AllOf::new(all)))
        }
    }
}

/// Every TrustPolicy and the labels of `namespace`, read from the API server (when the
/// watch caches of [`trust_cache`] are not running or not current). TrustPolicies are
/// listed raw and decoded one by one, like the watch does.
async fn read_trust_inputs(
    ctx: &Context,
    namespace: &str,
) -> Result<trust_cache::TrustInputs, PullerError> {
    let timeout = ctx.options.call_timeout;
    let raw = call(
        "list TrustPolicies",
        timeout,
        Api::<DynamicObject>::all_with(ctx.client.clone(), &trust_cache::policy_resource())
            .list(&ListParams::default()),
    )
    .await?
    .items;
    let (policies, unreadable) = trust_cache::decode_policies(&raw);
    let ns: k8s_openapi::api::core::v1::Namespace = call(
        "get Namespace",
        timeout,
        Api::all(ctx.client.clone()).get(namespace),
    )
    .await?;
    Ok(trust_cache::TrustInputs {
        policies,
        unreadable,
        labels: ns.metadata.labels.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--default-service-account` becomes `system:serviceaccount:<ns>:<name>`: a value
    /// that is not a ServiceAccount name (`a:b` would name another user) stops the start.
    #[tokio::test]
    async fn default_service_account_must_be_a_service_account_name() {
        let config = || kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let options = |account: &str| PullerOptions {
            default_service_account: Some(account.into()),
            ..PullerOptions::default()
        };
        for bad in ["a:b", "Tenant", "", "x/y"] {
            let e = Context::new(config(), options(bad)).err().unwrap();
            assert_eq!(e.reason(), "InvalidArgument", "{bad:?}: {e}");
        }
        assert!(Context::new(config(), options("tresor-tenant")).is_ok());
    }

    /// Issue 17: a field that became empty is cleared, not left stale.
    #[test]
    fn the_status_patch_clears_what_the_new_status_leaves_out() {
        let old = ArtifactSyncStatus {
            last_handled_reconcile_at: Some("t1".into()),
            inventory: vec![InventoryEntry {
                kind: "ConfigMap".into(),
                name: "a".into(),
                version: "v1".into(),
                ..Default::default()
            }],
            last_applied_digest: Some("sha256:aa".into()),
            ..Default::default()
        };
        let new = ArtifactSyncStatus {
            last_applied_digest: Some("sha256:bb".into()),
            ..Default::default()
        };
        assert_eq!(
            status_patch(&old, &new).unwrap(),
            json!({"lastAppliedDigest": "sha256:bb", "lastHandledReconcileAt": null,
                "inventory": null})
        );
        assert_eq!(
            status_patch(&new, &new).unwrap(),
            json!({"lastAppliedDigest": "sha256:bb"})
        );
    }
}
