//! The trust inputs of a cycle from watch caches: every TrustPolicy and every Namespace's
//! labels, so that an idle cycle reads nothing from the API server.
//!
//! Each cycle decides a sync's trust requirements from all TrustPolicies and the labels of
//! the sync's Namespace ([`crate::api::effective_requirements`]). Read directly, that is a
//! list and a GET per sync per cycle. When the controller runs ([`super::run`]), two
//! watchers (kube-runtime `watcher` + `reflector`, the puller's own identity) keep both in
//! memory instead, and [`TrustCache::inputs`] answers from them.
//!
//! A cache is used only while its watch is known to be current: after its first complete
//! list, and again after an error only once an event shows the watch works (a re-list
//! after a gap, `410 Gone`, counts as current only when it is complete). Otherwise — and
//! for a Namespace the cache does not hold yet — the cycle reads both directly, as it
//! does without the controller (tests that drive [`super::reconcile`] alone). A TrustPolicy
//! created while the watch is current counts from the cycle after its watch event: the same
//! delay as every informer-based controller, milliseconds in practice.
//!
//! TrustPolicies are watched as raw objects and decoded one by one ([`decode_policies`]),
//! so that one policy the puller cannot read does not stop the watch: it becomes an
//! [`UnreadablePolicy`] that fails closed for what it might cover, and is logged and
//! reported as a Warning Event on the policy once per version.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::events::Events;
use crate::api::{TrustPolicy, UnreadablePolicy};

/// What a cycle decides trust from: every TrustPolicy (those the puller can read and those
/// it cannot) and the labels of the sync's Namespace.
#[derive(Debug, Default)]
pub(super) struct TrustInputs {
    /// The TrustPolicies that decoded.
    pub(super) policies: Vec<TrustPolicy>,
    /// The TrustPolicies that did not (they fail closed).
    pub(super) unreadable: Vec<UnreadablePolicy>,
    /// The labels of the sync's Namespace.
    pub(super) labels: BTreeMap<String, String>,
}

/// The API resource of TrustPolicies, for watching and listing them as raw objects.
pub(super) fn policy_resource() -> ApiResource {
    ApiResource::erase::<TrustPolicy>(&())
}

/// Decodes raw TrustPolicies one by one (see the module docs).
pub(super) fn decode_policies<'a>(
    objects: impl IntoIterator<Item = &'a DynamicObject>,
) -> (Vec<TrustPolicy>, Vec<UnreadablePolicy>) {
    let mut policies = Vec::new();
    let mut unreadable = Vec::new();
    for object in objects {
        match decode_policy(object) {
            Ok(p) => policies.push(p),
            Err(u) => unreadable.push(u),
        }
    }
    (policies, unreadable)
}

fn decode_policy(object: &DynamicObject) -> Result<TrustPolicy, UnreadablePolicy> {
    match serde_json::to_value(object) {
        Ok(value) => TrustPolicy::decode(&value),
        // A DynamicObject is JSON already; should this fail, the policy still fails closed.
        Err(e) => Err(UnreadablePolicy::unscoped(
            &object.name_any(),
            "(object)",
            &e.to_string(),
        )),
    }
}

/// Logs a TrustPolicy that cannot be read and publishes a Warning Event on it, once per
/// resourceVersion (`reported` remembers which).
fn report_unreadable(
    object: &DynamicObject,
    resource: &ApiResource,
    events: &Events,
    reported: &Mutex<HashSet<(String, String)>>,
) {
    let Err(unreadable) = decode_policy(object) else {
        return;
    };
    let key = (
        object.name_any(),
        object.resource_version().unwrap_or_default(),
    );
    if !reported
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(key)
    {
        return;
    }
    let message = format!(
        "TrustPolicy {:?} cannot be read ({}: {}); the ArtifactSyncs it may cover are refused \
         until it is fixed",
        unreadable.name, unreadable.field, unreadable.message
    );
    tracing::error!(policy = %unreadable.name, field = %unreadable.field,
        error = %unreadable.message, "cannot read TrustPolicy; failing closed");
    let event = Event {
        type_: EventType::Warning,
        reason: "InvalidSpec".into(),
        note: Some(super::event_note(&message)),
        action: "Decode".into(),
        secondary: None,
    };
    let reference = object.object_ref(resource);
    let events = events.clone();
    tokio::spawn(async move {
        if let Err(e) = events.publish(&event, &reference).await {
            tracing::warn!(error = %e, "cannot publish event");
        }
    });
}

/// Watch caches of TrustPolicies and Namespaces.
pub(super) struct TrustCache {
    policies: Cached<DynamicObject>,
    namespaces: Cached<Namespace>,
}

impl TrustCache {
    /// Starts both watches with `client` (the puller's own identity, with a read timeout
    /// fit for watches); a TrustPolicy that cannot be read is reported through `events`.
    pub(super) fn start(client: &Client, events: Events) -> Self {
        let resource = policy_resource();
        let reported = Mutex::new(HashSet::new());
        let report = move |object: &DynamicObject| {
            report_unreadable(object, &resource, &events, &reported);
        };
        Self {
            policies: Cached::start(
                Api::all_with(client.clone(), &policy_resource()),
                "TrustPolicies",
                policy_resource(),
                Some(Box::new(report)),
            ),
            namespaces: Cached::start(Api::all(client.clone()), "Namespaces", (), None),
        }
    }

    /// Whether both watches are current.
    pub(super) fn current(&self) -> bool {
        self.policies.current() && self.namespaces.current()
    }

    /// Every TrustPolicy and the labels of `namespace`, or `None` when either cache is not
    /// current or does not hold the Namespace (the caller then reads them directly).
    pub(super) fn inputs(&self, namespace: &str) -> Option<TrustInputs> {
        if !self.current() {
            return None;
        }
        let ns = self.namespaces.store.get(&ObjectRef::new(namespace))?;
        let labels = ns.labels().clone();
        let state = self.policies.store.state();
        let (policies, unreadable) = decode_policies(state.iter().map(AsRef::as_ref));
        Some(TrustInputs {
            policies,
            unreadable,
            labels,
        })
    }
}

/// Called with every object a watch delivers.
type OnApply<K> = Box<dyn Fn(&K) + Send + Sync>;

/// One watched kind: its cache, whether it is current, its task.
struct Cached<K: Resource + 'static>
where
    K::DynamicType: Eq + Hash + Clone,
{
    store: Store<K>,
    current: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl<K> Cached<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    fn start(
        api: Api<K>,
        what: &'static str,
        resource: K::DynamicType,
        on_apply: Option<OnApply<K>>,
    ) -> Self {
        let writer = reflector::store::Writer::new(resource);
        let store = writer.as_reader();
        let current = Arc::new(AtomicBool::new(false));
        let flag = current.clone();
        let events = watcher(api, watcher::Config::default())
            .default_backoff()
            .modify(|o| o.managed_fields_mut().clear())
            .reflect(writer)
            .inspect(move |event| {
                if let (Some(f), Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o))) =
                    (&on_apply, event)
                {
                    f(o);
                }
            });
        let task = tokio::spawn(async move {
            let mut events = std::pin::pin!(events);
            while let Some(event) = events.next().await {
                match event {
                    // A (re)list: the cache is complete again only when it is done.
                    Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {
                        flag.store(false, Ordering::Release);
                    }
                    Ok(watcher::Event::InitDone) => {
                        if !flag.swap(true, Ordering::AcqRel) {
                            tracing::debug!(what, "watch cache current");
                        }
                    }
                    // The watch resumed after an error: it replays what it missed.
                    Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => {
                        flag.store(true, Ordering::Release);
                    }
                    Err(e) => {
                        if flag.swap(false, Ordering::AcqRel) {
                            tracing::warn!(what, error = %e,
                                "watch failed; trust inputs are read directly until it recovers");
                        } else {
                            tracing::debug!(what, error = %e, "watch failed");
                        }
                    }
                }
            }
        });
        Self {
            store,
            current,
            task,
        }
    }

    fn current(&self) -> bool {
        self.current.load(Ordering::Acquire)
    }
}

impl<K: Resource + 'static> Drop for Cached<K>
where
    K::DynamicType: Eq + Hash + Clone,
{
    fn drop(&mut self) {
        self.task.abort();
    }
}
