//! Decoding tresor's custom resources one object at a time, from JSON the API server sent.
//!
//! A list or watch of typed objects fails as a whole when one item does not decode, so one
//! tenant's object that the API server accepted but the puller cannot read (written before
//! the CRD's CEL rules existed, or under an older CRD) would stop every tenant. The puller
//! therefore lists and watches raw objects and decodes each here:
//!
//! - an [`ArtifactSync`] that does not decode is an [`ApiError::InvalidSpec`] naming the
//!   field, reported as Stalled on that object alone;
//! - a [`TrustPolicy`] that does not decode becomes an [`UnreadablePolicy`]. It fails
//!   **closed**: every ArtifactSync it might cover (its `namespaces` and `repositories`,
//!   when those parts can still be read; otherwise every ArtifactSync) and every one that
//!   names it is refused with [`ApiError::TrustPolicyUnreadable`], never applied without it.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use super::trust_policy::{repository_matches, NamespaceSelector};
use super::{ApiError, ArtifactSync, TrustPolicy};

/// Decodes `T` from `value`; on failure, the path of the field that failed and the message.
fn decode<T: DeserializeOwned>(value: &Value) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = match e.path().to_string() {
            p if p == "." || p.is_empty() => String::from("(object)"),
            p => p,
        };
        (field, e.into_inner().to_string())
    })
}

/// `metadata.namespace` and `metadata.name` of a raw object, for messages.
fn meta(value: &Value) -> (Option<&str>, &str) {
    let meta = value.get("metadata");
    let field = |f: &str| meta.and_then(|m| m.get(f)).and_then(Value::as_str);
    (field("namespace"), field("name").unwrap_or(""))
}

impl ArtifactSync {
    /// Decodes one ArtifactSync as the API server sent it (see the module docs); fails with
    /// [`ApiError::InvalidSpec`] naming the field the puller cannot read.
    pub fn decode(value: &Value) -> Result<Self, ApiError> {
        decode(value).map_err(|(field, message)| {
            let (namespace, name) = meta(value);
            ApiError::InvalidSpec {
                object: format!("ArtifactSync {}/{name}", namespace.unwrap_or("default")),
                field,
                message: format!(
                    "{message}; the puller cannot read this ArtifactSync: fix the field (the \
                     current CRD refuses such a value)"
                ),
            }
        })
    }
}

/// A TrustPolicy the puller cannot read (see the module docs): it covers, as far as anyone
/// can tell, whatever its readable parts say, and every sync that names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadablePolicy {
    /// Its name.
    pub name: String,
    /// The field that could not be read, e.g. `spec.require`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
    /// What it covers when `spec.namespaces` and `spec.repositories` could be read; `None`:
    /// it might cover every ArtifactSync.
    scope: Option<Box<Scope>>,
}

/// The parts of a TrustPolicy that say what it covers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
struct Scope {
    #[serde(default)]
    namespaces: NamespaceSelector,
    #[serde(default)]
    repositories: Vec<String>,
}

impl UnreadablePolicy {
    /// A policy named `name` of which nothing can be read: it might cover every sync.
    pub fn unscoped(name: &str, field: &str, message: &str) -> Self {
        Self {
            name: name.to_string(),
            field: field.to_string(),
            message: message.to_string(),
            scope: None,
        }
    }

    /// Whether it might cover an ArtifactSync in `namespace` (with `labels`) pulling
    /// `repository`: when in doubt, yes.
    pub fn might_cover(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
        repository: &str,
    ) -> bool {
        self.scope.as_ref().is_none_or(|s| {
            s.namespaces.matches(namespace, labels)
                && (s.repositories.is_empty()
                    || s.repositories
                        .iter()
                        .any(|p| repository_matches(p, repository)))
        })
    }
}

impl TrustPolicy {
    /// Decodes one TrustPolicy as the API server sent it (see the module docs); what cannot
    /// be read becomes an [`UnreadablePolicy`].
    pub fn decode(value: &Value) -> Result<Self, UnreadablePolicy> {
        decode(value).map_err(|(field, message)| UnreadablePolicy {
            name: meta(value).1.to_string(),
            field,
            message,
            scope: value
                .get("spec")
                .and_then(|spec| Scope::deserialize(spec).ok())
                .map(Box::new),
        })
    }
}

/// Refuses `sync` when a TrustPolicy that cannot be read might cover it or is named by its
/// `spec.verify.trustPolicy`: applying without that policy could weaken trust.
pub fn check_unreadable_policies(
    unreadable: &[UnreadablePolicy],
    sync: &ArtifactSync,
    namespace_labels: &BTreeMap<String, String>,
) -> Result<(), ApiError> {
    if unreadable.is_empty() {
        return Ok(());
    }
    let namespace = sync.metadata.namespace.as_deref().unwrap_or("default");
    let repository = sync.spec.repository()?;
    let named = sync
        .spec
        .verify
        .as_ref()
        .and_then(|v| v.trust_policy.as_deref());
    match unreadable.iter().find(|p| {
        named == Some(p.name.as_str()) || p.might_cover(namespace, namespace_labels, &repository)
    }) {
        Some(p) => Err(ApiError::TrustPolicyUnreadable {
            object: sync.object_name(),
            policy: p.name.clone(),
            field: p.field.clone(),
            message: p.message.clone(),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn raw_sync(require: Value) -> Value {
        json!({
            "apiVersion": "tresor.dev/v1alpha1", "kind": "ArtifactSync",
            "metadata": {"name": "bad", "namespace": "team-a"},
            "spec": {"url": "oci://registry.example/app", "ref": {"tag": "v1"}, "interval": "1m",
                "verify": {"authorities": [{"name": "k", "key": {"data": "x"}}], "require": require}},
        })
    }

    fn raw_policy(require: Value, namespaces: Value) -> Value {
        json!({
            "apiVersion": "tresor.dev/v1alpha1", "kind": "TrustPolicy",
            "metadata": {"name": "strict"},
            "spec": {"authorities": [{"name": "k", "key": {"data": "x"}}], "require": require,
                "namespaces": namespaces, "repositories": ["registry.example/**"]},
        })
    }

    #[test]
    fn an_unreadable_sync_names_the_field() {
        for bad in [json!(0), json!(-1), json!(4_294_967_296_u64), json!("most")] {
            let err = ArtifactSync::decode(&raw_sync(bad.clone())).unwrap_err();
            assert_eq!(err.reason(), "InvalidSpec");
            let ApiError::InvalidSpec { object, field, .. } = &err else {
                panic!("{err}");
            };
            assert_eq!(object, "ArtifactSync team-a/bad");
            assert_eq!(field, "spec.verify.require", "{bad}: {err}");
            assert!(err.to_string().contains("any, all or a number"), "{err}");
        }
        let good = ArtifactSync::decode(&raw_sync(json!(1))).unwrap();
        assert_eq!(good.metadata.name.as_deref(), Some("bad"));
    }

    fn sync(namespace: &str, url: &str, named: Option<&str>) -> ArtifactSync {
        let mut s = ArtifactSync::decode(&raw_sync(json!("any"))).unwrap();
        s.metadata.namespace = Some(namespace.into());
        s.spec.url = url.into();
        if let Some(v) = s.spec.verify.as_mut() {
            v.trust_policy = named.map(str::to_string);
        }
        s
    }

    #[test]
    fn an_unreadable_policy_fails_closed_for_what_it_might_cover() {
        let labels = BTreeMap::new();
        let scoped =
            TrustPolicy::decode(&raw_policy(json!(0), json!({"names": ["team-a"]}))).unwrap_err();
        assert_eq!(
            (scoped.name.as_str(), scoped.field.as_str()),
            ("strict", "spec.require")
        );
        let app = "oci://registry.example/app";
        let refused = check_unreadable_policies(
            std::slice::from_ref(&scoped),
            &sync("team-a", app, None),
            &labels,
        )
        .unwrap_err();
        assert_eq!(refused.reason(), "TrustPolicyUnreadable");
        assert!(refused.to_string().contains("\"strict\""), "{refused}");
        assert!(refused.to_string().contains("spec.require"), "{refused}");
        // Outside its namespaces or repositories it covers nothing.
        let others = [
            sync("team-b", app, None),
            sync("team-a", "oci://elsewhere.example/app", None),
        ];
        for s in &others {
            assert_eq!(
                check_unreadable_policies(std::slice::from_ref(&scoped), s, &labels),
                Ok(())
            );
        }
        // Named, it is required wherever the sync is.
        assert!(check_unreadable_policies(
            std::slice::from_ref(&scoped),
            &sync("team-b", app, Some("strict")),
            &labels
        )
        .is_err());
        // When even its scope cannot be read, it might cover everything.
        let unscoped = TrustPolicy::decode(&raw_policy(json!("most"), json!({"names": "team-a"})))
            .unwrap_err();
        for s in &others {
            assert!(
                check_unreadable_policies(std::slice::from_ref(&unscoped), s, &labels).is_err()
            );
        }
    }
}
