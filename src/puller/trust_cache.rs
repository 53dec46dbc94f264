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

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::api::TrustPolicy;

/// Watch caches of TrustPolicies and Namespaces.
pub(super) struct TrustCache {
    policies: Cached<TrustPolicy>,
    namespaces: Cached<Namespace>,
}

impl TrustCache {
    /// Starts both watches with `client` (the puller's own identity, with a read timeout
    /// fit for watches).
    pub(super) fn start(client: &Client) -> Self {
        Self {
            policies: Cached::start(Api::all(client.clone()), "TrustPolicies"),
            namespaces: Cached::start(Api::all(client.clone()), "Namespaces"),
        }
    }

    /// Whether both watches are current.
    pub(super) fn current(&self) -> bool {
        self.policies.current() && self.namespaces.current()
    }

    /// Every TrustPolicy and the labels of `namespace`, or `None` when either cache is not
    /// current or does not hold the Namespace (the caller then reads them directly).
    pub(super) fn inputs(
        &self,
        namespace: &str,
    ) -> Option<(Vec<TrustPolicy>, BTreeMap<String, String>)> {
        if !self.current() {
            return None;
        }
        let ns = self.namespaces.store.get(&ObjectRef::new(namespace))?;
        let labels = ns.labels().clone();
        let policies = self
            .policies
            .store
            .state()
            .iter()
            .map(|p| p.as_ref().clone())
            .collect();
        Some((policies, labels))
    }
}

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
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    fn start(api: Api<K>, what: &'static str) -> Self {
        let (store, writer) = reflector::store();
        let current = Arc::new(AtomicBool::new(false));
        let flag = current.clone();
        let events = watcher(api, watcher::Config::default())
            .default_backoff()
            .modify(|o| o.managed_fields_mut().clear())
            .reflect(writer);
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
