//! Drift through watches: one shared watch per kind that any ArtifactSync applied, and a
//! trigger for the sync whose object drifted.
//!
//! After every cycle the puller hands the applied objects of a sync to [`Watches::update`].
//! For every `(group, version, kind)` among the applied objects of all syncs, one watcher
//! (kube-runtime `watcher`, cluster-wide, label selector [`LABEL_NAME`]) keeps a cache of
//! the live objects tresor owns, as compact JSON text ([`LiveStore`]). Each watch event is compared with what the
//! owning syncs applied ([`live_difference`], the drift check's own rule): only a real
//! difference (or a deletion) triggers a reconcile of that sync, so the events of tresor's
//! own applies (and of status updates by controllers) trigger nothing. The triggered cycle's
//! drift check then reads the live objects from the caches ([`LiveObjects`]) instead of
//! GETting each one, and re-applies what drifted.
//!
//! Backstop: every `full_resync` a sync's drift check reads every object with a GET
//! instead, and an object whose watch is not in sync (still listing, or failed since its
//! last event: for example no right to list or watch that kind) is always read with a GET.
//! A kind that no sync applies any more has its watch stopped.
//!
//! Watches use the puller's own client (the objects are only compared, never written
//! through it); re-applies go through the sync's impersonated client as before. Without the
//! right to list and watch a kind, drift of that kind is still found, one GET per object per
//! cycle.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::core::ApiResource;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::api::ArtifactSync;
use crate::kube::{live_difference, AppliedObject, LiveObjects, LABEL_NAME};

/// `namespace/name` of an ArtifactSync.
type SyncKey = (String, String);
/// Group, version, kind: one watch each.
type KindKey = (String, String, String);
/// Group, kind, namespace, name: one object.
type Identity = (String, String, Option<String>, String);

/// One kind's watch: its cache, whether it is in sync, and its task.
struct KindWatch {
    namespaced: bool,
    store: Arc<RwLock<LiveStore>>,
    synced: Arc<AtomicBool>,
    task: tokio::task::AbortHandle,
}

/// Namespace (`None` for cluster-scoped kinds) and name of a live object.
type LiveKey = (Option<String>, String);

/// The live owned objects of one kind, as the watch last saw them.
///
/// Each object is kept as its compact JSON text, parsed again when a drift check reads it:
/// a `serde_json::Value` (or a `DynamicObject`) of an API object takes several times the
/// memory of its text, and the cache holds every owned object of every sync, while a drift
/// check reads only the objects of one sync (scripts/bench-cluster.sh scale).
#[derive(Default)]
struct LiveStore {
    objects: HashMap<LiveKey, Box<str>>,
    /// The objects of a (re)list in progress, which replace `objects` when it completes.
    listing: Option<HashMap<LiveKey, Box<str>>>,
}

impl LiveStore {
    /// Applies one watch event (the same bookkeeping as kube-runtime's reflector).
    fn apply(&mut self, event: &watcher::Event<DynamicObject>) {
        match event {
            watcher::Event::Init => self.listing = Some(HashMap::new()),
            watcher::Event::InitApply(o) => {
                if let (Some(listing), Some(text)) = (self.listing.as_mut(), text_of(o)) {
                    listing.insert(live_key(o), text);
                }
            }
            watcher::Event::InitDone => {
                if let Some(listing) = self.listing.take() {
                    self.objects = listing;
                }
            }
            watcher::Event::Apply(o) => {
                if let Some(text) = text_of(o) {
                    self.objects.insert(live_key(o), text);
                }
            }
            watcher::Event::Delete(o) => {
                self.objects.remove(&live_key(o));
            }
        }
    }
}

fn live_key(object: &DynamicObject) -> LiveKey {
    (object.namespace(), object.name_any())
}

/// The object as compact JSON text, without what no drift check reads ([`compact`]).
fn text_of(object: &DynamicObject) -> Option<Box<str>> {
    let mut object = object.clone();
    compact(&mut object);
    serde_json::to_string(&object)
        .ok()
        .map(String::into_boxed_str)
}

/// What one sync applied, by object: its kind and its manifest as applied (the applier's
/// own text, shared). Identities and kinds are shared with `Inner::owners` and
/// `Inner::kinds`: at thousands of objects, copies of their strings add up.
#[derive(Default)]
struct Applied {
    objects: HashMap<Arc<Identity>, (Arc<KindKey>, Arc<str>)>,
    last_full: Option<Instant>,
}

#[derive(Default)]
struct Inner {
    syncs: BTreeMap<Arc<SyncKey>, Applied>,
    /// Which syncs applied an object (normally one; two when syncs fight over it).
    owners: HashMap<Arc<Identity>, Vec<Arc<SyncKey>>>,
    kinds: HashMap<Arc<KindKey>, KindWatch>,
}

/// The shared state behind [`Watches`] and the views it hands to appliers.
struct Shared {
    client: Client,
    enabled: bool,
    full_resync: Duration,
    inner: Mutex<Inner>,
    trigger: mpsc::UnboundedSender<ObjectRef<ArtifactSync>>,
}

/// Watches of owned objects for every kind the syncs applied (see the module docs).
pub struct Watches {
    shared: Arc<Shared>,
    receiver: Mutex<Option<mpsc::UnboundedReceiver<ObjectRef<ArtifactSync>>>>,
}

/// Counts of what is watched, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchStats {
    /// Kinds watched.
    pub kinds: usize,
    /// Kinds whose watch is in sync.
    pub synced: usize,
    /// Objects known as applied, over all syncs.
    pub objects: usize,
}

fn lock(inner: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(PoisonError::into_inner)
}

fn identity(object: &AppliedObject) -> Identity {
    (
        object.id.group.clone(),
        object.id.kind.clone(),
        object.id.namespace.clone(),
        object.id.name.clone(),
    )
}

fn kind_key(object: &AppliedObject) -> KindKey {
    (
        object.id.group.clone(),
        object.id.version.clone(),
        object.id.kind.clone(),
    )
}

impl Watches {
    /// Watches through `client` (the puller's own); `enabled: false` keeps no watch and
    /// makes every drift check GET every object. A sync's drift check GETs everything at
    /// least every `full_resync`.
    pub fn new(client: Client, enabled: bool, full_resync: Duration) -> Self {
        let (trigger, receiver) = mpsc::unbounded_channel();
        Self {
            shared: Arc::new(Shared {
                client,
                enabled,
                full_resync,
                inner: Mutex::new(Inner::default()),
                trigger,
            }),
            receiver: Mutex::new(Some(receiver)),
        }
    }

    /// The stream of syncs whose objects drifted (for `Controller::reconcile_on`); the
    /// first call takes it, later calls get a stream that never yields.
    pub fn triggers(&self) -> futures_util::stream::BoxStream<'static, ObjectRef<ArtifactSync>> {
        let receiver = self
            .receiver
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match receiver {
            Some(rx) => futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|r| (r, rx))
            })
            .boxed(),
            None => futures_util::stream::pending().boxed(),
        }
    }

    /// What the drift check of the sync `namespace/name` should read live objects from:
    /// the watch caches, or `None` (GET every object) when watches are off or the sync's
    /// full resync is due (which this call then counts as done).
    pub fn seen_for(&self, namespace: &str, name: &str) -> Option<Arc<dyn LiveObjects>> {
        if !self.shared.enabled {
            return None;
        }
        let mut inner = lock(&self.shared.inner);
        let applied = inner
            .syncs
            .entry(Arc::new((namespace.to_string(), name.to_string())))
            .or_default();
        let now = Instant::now();
        match applied.last_full {
            Some(at) if now.duration_since(at) < self.shared.full_resync => Some(Arc::new(View {
                shared: self.shared.clone(),
            })),
            _ => {
                applied.last_full = Some(now);
                None
            }
        }
    }

    /// Records what the sync `namespace/name` applied (after a cycle) and starts or stops
    /// watches so that exactly the kinds applied by some sync are watched.
    pub fn update(&self, namespace: &str, name: &str, objects: &[AppliedObject]) {
        if !self.shared.enabled {
            return;
        }
        let key = (namespace.to_string(), name.to_string());
        let mut inner = lock(&self.shared.inner);
        let unchanged = inner.syncs.get(&key).is_some_and(|applied| {
            applied.objects.len() == objects.len()
                && objects.iter().all(|o| {
                    applied
                        .objects
                        .get(&identity(o))
                        .is_some_and(|(_, text)| text == o.manifest())
                })
        });
        if unchanged {
            return;
        }
        // Start the watches first: their keys are the kinds every entry below shares.
        for object in objects {
            let kind = kind_key(object);
            if !inner.kinds.contains_key(&kind) {
                let watch =
                    self.start(&kind, &object.resource.resource, object.resource.namespaced);
                inner.kinds.insert(Arc::new(kind), watch);
            }
        }
        let key = match inner.syncs.get_key_value(&key) {
            Some((shared, _)) => shared.clone(),
            None => Arc::new(key),
        };
        let old = inner.syncs.remove(&key).unwrap_or_default();
        let mut applied = Applied {
            objects: HashMap::with_capacity(objects.len()),
            last_full: old.last_full,
        };
        for id in old.objects.into_keys() {
            release(&mut inner.owners, &id, &key);
        }
        for object in objects {
            // Started above; the watch's key is the shared copy of the kind.
            let Some(kind) = inner
                .kinds
                .get_key_value(&kind_key(object))
                .map(|(k, _)| k.clone())
            else {
                continue;
            };
            let id = identity(object);
            let id = match inner.owners.get_key_value(&id) {
                Some((shared, _)) => shared.clone(),
                None => Arc::new(id),
            };
            let owners = inner.owners.entry(id.clone()).or_default();
            if !owners.contains(&key) {
                owners.push(key.clone());
            }
            applied
                .objects
                .insert(id, (kind, object.manifest().clone()));
        }
        inner.syncs.insert(key, applied);
        stop_unused(&mut inner);
    }

    /// Forgets the sync `namespace/name` (deleted or suspended) and stops the watches no
    /// other sync needs.
    pub fn forget(&self, namespace: &str, name: &str) {
        let key = (namespace.to_string(), name.to_string());
        let mut inner = lock(&self.shared.inner);
        let Some(applied) = inner.syncs.remove(&key) else {
            return;
        };
        for id in applied.objects.into_keys() {
            release(&mut inner.owners, &id, &key);
        }
        stop_unused(&mut inner);
    }

    /// What is watched now.
    pub fn stats(&self) -> WatchStats {
        let inner = lock(&self.shared.inner);
        WatchStats {
            kinds: inner.kinds.len(),
            synced: inner
                .kinds
                .values()
                .filter(|k| k.synced.load(Ordering::Acquire))
                .count(),
            objects: inner.syncs.values().map(|s| s.objects.len()).sum(),
        }
    }

    fn start(&self, kind: &KindKey, resource: &ApiResource, namespaced: bool) -> KindWatch {
        let store = Arc::new(RwLock::new(LiveStore::default()));
        let writer = store.clone();
        let synced = Arc::new(AtomicBool::new(false));
        let api: Api<DynamicObject> = Api::all_with(self.shared.client.clone(), resource);
        let config = watcher::Config::default().labels(LABEL_NAME);
        let shared = self.shared.clone();
        let flag = synced.clone();
        let key = kind.clone();
        let events = watcher(api, config).default_backoff();
        tracing::debug!(group = %kind.0, version = %kind.1, kind = %kind.2, "watching owned objects");
        let task = tokio::spawn(async move {
            let mut events = std::pin::pin!(events);
            while let Some(event) = events.next().await {
                if let Ok(event) = &event {
                    writer
                        .write()
                        .unwrap_or_else(PoisonError::into_inner)
                        .apply(event);
                }
                match event {
                    Ok(watcher::Event::Apply(o)) => {
                        flag.store(true, Ordering::Release);
                        shared.observed(&key, &o, false);
                    }
                    Ok(watcher::Event::Delete(o)) => {
                        flag.store(true, Ordering::Release);
                        shared.observed(&key, &o, true);
                    }
                    Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                    Ok(watcher::Event::InitDone) => {
                        flag.store(true, Ordering::Release);
                        // Changes while the watch was down show up only now.
                        shared.sweep(&key);
                    }
                    Err(e) => {
                        if flag.swap(false, Ordering::AcqRel) {
                            tracing::warn!(group = %key.0, version = %key.1, kind = %key.2,
                                error = %e, "watch of owned objects failed; drift of this kind is read with GETs until it recovers");
                        } else {
                            tracing::debug!(kind = %key.2, error = %e, "watch of owned objects failed");
                        }
                    }
                }
            }
        });
        KindWatch {
            namespaced,
            store,
            synced,
            task: task.abort_handle(),
        }
    }
}

impl Drop for Watches {
    fn drop(&mut self) {
        for watch in lock(&self.shared.inner).kinds.values() {
            watch.task.abort();
        }
    }
}

/// Drops from a cached live object what no drift check reads: managedFields, status and
/// the server's bookkeeping in metadata (the watch keeps resourceVersion itself).
/// managedFields and status are often the largest part of a live object.
fn compact(object: &mut DynamicObject) {
    let meta = &mut object.metadata;
    meta.managed_fields = None;
    meta.uid = None;
    meta.generation = None;
    meta.creation_timestamp = None;
    if let Some(data) = object.data.as_object_mut() {
        data.remove("status");
    }
}

/// Removes `sync` from the owners of `id` (and `id` when no owner remains).
fn release(owners: &mut HashMap<Arc<Identity>, Vec<Arc<SyncKey>>>, id: &Identity, sync: &SyncKey) {
    if let Some(list) = owners.get_mut(id) {
        list.retain(|s| s.as_ref() != sync);
        if list.is_empty() {
            owners.remove(id);
        }
    }
}

fn stop_unused(inner: &mut Inner) {
    let used: BTreeSet<&KindKey> = inner
        .syncs
        .values()
        .flat_map(|s| s.objects.values().map(|(k, _)| k.as_ref()))
        .collect();
    let unused: Vec<Arc<KindKey>> = inner
        .kinds
        .keys()
        .filter(|k| !used.contains(k.as_ref()))
        .cloned()
        .collect();
    for kind in unused {
        if let Some(watch) = inner.kinds.remove(&kind) {
            tracing::debug!(group = %kind.0, version = %kind.1, kind = %kind.2, "no sync applies this kind any more: watch stopped");
            watch.task.abort();
        }
    }
}

impl Shared {
    /// A watch event on `object` (of `kind`): triggers every owning sync whose applied
    /// version differs from it (or all of them when it was deleted).
    fn observed(&self, kind: &KindKey, object: &DynamicObject, deleted: bool) {
        let namespace = object.namespace();
        let id: Identity = (kind.0.clone(), kind.2.clone(), namespace, object.name_any());
        let live = if deleted {
            None
        } else {
            serde_json::to_value(object).ok()
        };
        let drifted: Vec<SyncKey> = {
            let inner = lock(&self.inner);
            let Some(owners) = inner.owners.get(&id) else {
                return;
            };
            owners
                .iter()
                .filter(|sync| {
                    let desired = inner
                        .syncs
                        .get(sync.as_ref())
                        .and_then(|s| s.objects.get(&id))
                        .map(|(_, text)| text);
                    match (desired, &live) {
                        (None, _) => false,
                        (Some(_), None) => true,
                        (Some(d), Some(l)) => drifted(d, l),
                    }
                })
                .map(|sync| sync.as_ref().clone())
                .collect()
        };
        for (namespace, name) in drifted {
            tracing::info!(sync = %format!("{namespace}/{name}"), object = %id.3, kind = %id.1,
                "drift seen through a watch: reconciling");
            let _ = self.trigger.send(ObjectRef::new(&name).within(&namespace));
        }
    }

    /// After a (re)list of `kind`: triggers every sync with an object of that kind that is
    /// missing or differs.
    fn sweep(&self, kind: &KindKey) {
        let drifted: BTreeSet<SyncKey> = {
            let inner = lock(&self.inner);
            let Some(watch) = inner.kinds.get(kind) else {
                return;
            };
            inner
                .syncs
                .iter()
                .filter(|(_, applied)| {
                    applied
                        .objects
                        .iter()
                        .filter(|(_, (k, _))| k.as_ref() == kind)
                        .any(|(id, (_, desired))| match watch.live(id) {
                            None => true,
                            Some(live) => drifted(desired, &live),
                        })
                })
                .map(|(key, _)| key.as_ref().clone())
                .collect()
        };
        for (namespace, name) in drifted {
            let _ = self.trigger.send(ObjectRef::new(&name).within(&namespace));
        }
    }
}

/// Whether `live` differs from the manifest applied as `desired` (JSON text).
fn drifted(desired: &str, live: &Value) -> bool {
    match serde_json::from_str::<Value>(desired) {
        Ok(desired) => live_difference(&desired, live).is_some(),
        // Cannot happen (the applier wrote the text); the triggered cycle will say why.
        Err(_) => true,
    }
}

impl KindWatch {
    /// The cached live object (as JSON), if the watch holds it.
    fn live(&self, id: &Identity) -> Option<Value> {
        let namespace = if self.namespaced { id.2.clone() } else { None };
        let store = self.store.read().unwrap_or_else(PoisonError::into_inner);
        store
            .objects
            .get(&(namespace, id.3.clone()))
            .and_then(|text| serde_json::from_str(text).ok())
    }
}

/// The watch caches as [`LiveObjects`] for a drift check.
struct View {
    shared: Arc<Shared>,
}

impl LiveObjects for View {
    fn live(&self, object: &AppliedObject) -> Option<Option<Value>> {
        let inner = lock(&self.shared.inner);
        let watch = inner.kinds.get(&kind_key(object))?;
        if !watch.synced.load(Ordering::Acquire) {
            return None;
        }
        Some(watch.live(&identity(object)))
    }
}
