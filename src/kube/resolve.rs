//! Kind resolution: group/version/kind → resource (plural), scope and [`ApiResource`].
//!
//! Production asks the API server ([`DiscoveryResolver`], one discovery request per
//! group/version, cached); tests can use a fixed table plus the CRDs tresor registers as
//! they become established ([`StaticResolver`]). Both behind [`ResourceResolver`], so the
//! apply code never hard-codes plurals.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::Scope;
use kube::Client;
use serde_json::Value;

use super::ApplyError;
use crate::reconcile::BoxFuture;

/// What a kind resolves to.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Group, version, kind and plural, for `kube::Api::*_with`; shared by every object of
    /// the kind (the puller keeps every applied object of every sync with its resource).
    pub resource: Arc<ApiResource>,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
}

/// Resolves kinds to resources.
///
/// `resolve` fails with [`ApplyError::UnknownKind`] when the cluster does not serve the
/// kind (yet: a CRD that is not established), and with transport errors when discovery
/// cannot be asked. `crd_established` is told about every CRD tresor saw established, so a
/// table-based resolver can learn its kinds and a caching one can forget stale misses.
pub trait ResourceResolver: Send + Sync {
    /// Resolves `gvk`; `object` names the manifest for error messages.
    fn resolve<'a>(
        &'a self,
        gvk: &'a GroupVersionKind,
        object: &'a str,
    ) -> BoxFuture<'a, Result<Resolved, ApplyError>>;

    /// A CRD (its full object) reported `Established`.
    fn crd_established(&self, _crd: &Value) {}
}

/// API discovery (`/api/v1`, `/apis/<group>/<version>`), one request per group/version and
/// kind, cached for the resolver's lifetime (kinds do not change scope).
#[derive(Clone)]
pub struct DiscoveryResolver {
    client: Client,
    timeout: Duration,
    cache: Arc<Mutex<HashMap<GroupVersionKind, Resolved>>>,
}

impl DiscoveryResolver {
    /// A resolver asking `client`'s API server, each request bounded by `timeout`.
    pub fn new(client: Client, timeout: Duration) -> Self {
        Self {
            client,
            timeout,
            cache: Arc::default(),
        }
    }
}

impl ResourceResolver for DiscoveryResolver {
    fn resolve<'a>(
        &'a self,
        gvk: &'a GroupVersionKind,
        object: &'a str,
    ) -> BoxFuture<'a, Result<Resolved, ApplyError>> {
        Box::pin(async move {
            if let Some(hit) = self
                .cache
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(gvk)
            {
                return Ok(hit.clone());
            }
            let found = tokio::time::timeout(
                self.timeout,
                kube::discovery::pinned_kind(&self.client, gvk),
            )
            .await
            .map_err(|_| ApplyError::Timeout {
                object: object.to_string(),
                verb: "discover".into(),
                after: self.timeout,
            })?;
            let unknown = || ApplyError::UnknownKind {
                object: object.to_string(),
                api_version: gvk_api_version(gvk),
                kind: gvk.kind.clone(),
            };
            let (resource, caps) = match found {
                Ok(found) => found,
                Err(kube::Error::Discovery(_)) => return Err(unknown()),
                Err(kube::Error::Api(s)) if s.code == 404 => return Err(unknown()),
                Err(e) => return Err(ApplyError::from_kube(e, object, "discover", None, None)),
            };
            let resolved = Resolved {
                resource: resource.into(),
                namespaced: caps.scope == Scope::Namespaced,
            };
            self.cache
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(gvk.clone(), resolved.clone());
            Ok(resolved)
        })
    }
}

/// A fixed table of built-in kinds plus registered ones (CRDs learn themselves through
/// [`ResourceResolver::crd_established`]). For tests and for clusters where discovery is
/// not allowed.
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    table: Arc<Mutex<HashMap<GroupVersionKind, Resolved>>>,
}

/// `(group, version, kind, plural, namespaced)` of the built-in kinds [`StaticResolver`]
/// knows.
pub const BUILTIN_KINDS: &[(&str, &str, &str, &str, bool)] = &[
    ("", "v1", "Namespace", "namespaces", false),
    ("", "v1", "ConfigMap", "configmaps", true),
    ("", "v1", "Secret", "secrets", true),
    ("", "v1", "Service", "services", true),
    ("", "v1", "ServiceAccount", "serviceaccounts", true),
    ("", "v1", "Pod", "pods", true),
    (
        "",
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        true,
    ),
    ("apps", "v1", "Deployment", "deployments", true),
    ("apps", "v1", "StatefulSet", "statefulsets", true),
    ("apps", "v1", "DaemonSet", "daemonsets", true),
    ("apps", "v1", "ReplicaSet", "replicasets", true),
    ("batch", "v1", "Job", "jobs", true),
    ("batch", "v1", "CronJob", "cronjobs", true),
    ("rbac.authorization.k8s.io", "v1", "Role", "roles", true),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        true,
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
        false,
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        false,
    ),
    ("networking.k8s.io", "v1", "Ingress", "ingresses", true),
    (
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
        true,
    ),
    (
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        false,
    ),
];

impl StaticResolver {
    /// The built-in table.
    pub fn builtin() -> Self {
        let me = Self::default();
        for (group, version, kind, plural, namespaced) in BUILTIN_KINDS {
            me.register(
                &GroupVersionKind::gvk(group, version, kind),
                plural,
                *namespaced,
            );
        }
        me
    }

    /// Adds (or replaces) a kind.
    pub fn register(&self, gvk: &GroupVersionKind, plural: &str, namespaced: bool) {
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                gvk.clone(),
                Resolved {
                    resource: ApiResource::from_gvk_with_plural(gvk, plural).into(),
                    namespaced,
                },
            );
    }
}

impl ResourceResolver for StaticResolver {
    fn resolve<'a>(
        &'a self,
        gvk: &'a GroupVersionKind,
        object: &'a str,
    ) -> BoxFuture<'a, Result<Resolved, ApplyError>> {
        let found = self
            .table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(gvk)
            .cloned();
        Box::pin(std::future::ready(found.ok_or_else(|| {
            ApplyError::UnknownKind {
                object: object.to_string(),
                api_version: gvk_api_version(gvk),
                kind: gvk.kind.clone(),
            }
        })))
    }

    fn crd_established(&self, crd: &Value) {
        let text = |p: &str| crd.pointer(p).and_then(Value::as_str);
        let (Some(group), Some(kind), Some(plural)) = (
            text("/spec/group"),
            text("/spec/names/kind"),
            text("/spec/names/plural"),
        ) else {
            return;
        };
        let namespaced = text("/spec/scope") != Some("Cluster");
        let versions = crd.pointer("/spec/versions").and_then(Value::as_array);
        for version in versions.into_iter().flatten() {
            let served = version.get("served").and_then(Value::as_bool) != Some(false);
            if let (Some(v), true) = (version.get("name").and_then(Value::as_str), served) {
                self.register(&GroupVersionKind::gvk(group, v, kind), plural, namespaced);
            }
        }
    }
}

/// `group/version`, or `version` for the core group.
pub fn gvk_api_version(gvk: &GroupVersionKind) -> String {
    if gvk.group.is_empty() {
        gvk.version.clone()
    } else {
        format!("{}/{}", gvk.group, gvk.version)
    }
}
