//! [`WatchedSync`]: an ArtifactSync as the controller watches and caches it.
//!
//! A typed watch of `ArtifactSync` would fail as a whole when one object in a list does not
//! decode (written before the CRD's CEL rules, or under an older CRD), and stop every
//! tenant's syncs. A watch of raw `DynamicObject`s does not, but caches every sync as a
//! `serde_json::Value` tree, several times the memory of the typed object (about 15 KB a
//! sync with its status, scripts/bench-cluster.sh scale). So each object is decoded on its
//! own as it arrives ([`ArtifactSync::decode`]): the cache keeps the typed sync, and only an
//! object the puller cannot read stays raw, so that its reconcile can say why.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::NamespaceResourceScope;
use kube::api::DynamicObject;
use kube::Resource;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::api::{ApiError, ArtifactSync};

/// One watched ArtifactSync: decoded, or raw when it cannot be read.
#[derive(Debug, Clone)]
pub enum WatchedSync {
    /// The sync, decoded.
    Decoded(Box<ArtifactSync>),
    /// An object the puller cannot read, and why.
    Unreadable(Box<DynamicObject>, ApiError),
}

impl WatchedSync {
    /// Decodes the object `value` (never fails for an object: what cannot be read becomes
    /// [`WatchedSync::Unreadable`]); fails only when `value` is no Kubernetes object at all.
    pub fn decode(value: Value) -> Result<Self, serde_json::Error> {
        match ArtifactSync::decode(&value) {
            Ok(sync) => Ok(Self::Decoded(Box::new(sync))),
            Err(e) => serde_json::from_value(value).map(|raw| Self::Unreadable(Box::new(raw), e)),
        }
    }
}

impl<'de> Deserialize<'de> for WatchedSync {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::decode(Value::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

impl Resource for WatchedSync {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        ArtifactSync::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        ArtifactSync::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        ArtifactSync::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        ArtifactSync::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        match self {
            Self::Decoded(sync) => &sync.metadata,
            Self::Unreadable(raw, _) => &raw.metadata,
        }
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Self::Decoded(sync) => &mut sync.metadata,
            Self::Unreadable(raw, _) => &mut raw.metadata,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sync(require: Value) -> Value {
        json!({"apiVersion": "tresor.dev/v1alpha1", "kind": "ArtifactSync",
            "metadata": {"name": "app", "namespace": "team-a"},
            "spec": {"url": "oci://ghcr.io/acme/app", "ref": {"tag": "v1"}, "interval": "1m",
                "verify": {"authorities": [{"name": "k", "key": {"data": "x"}}],
                    "require": require}}})
    }

    #[test]
    fn a_list_with_an_unreadable_sync_decodes_and_keeps_it_raw() {
        let list: Vec<WatchedSync> =
            serde_json::from_value(json!([sync(json!(1)), sync(json!(0))])).unwrap();
        assert!(
            matches!(&list[0], WatchedSync::Decoded(s) if s.metadata.name.as_deref() == Some("app"))
        );
        match &list[1] {
            WatchedSync::Unreadable(raw, e) => {
                assert_eq!(e.reason(), "InvalidSpec");
                assert_eq!(raw.metadata.namespace.as_deref(), Some("team-a"));
                assert_eq!(raw.data["spec"]["verify"]["require"], 0);
            }
            other => panic!("expected the raw object, got {other:?}"),
        }
        assert_eq!(WatchedSync::kind(&()), "ArtifactSync");
        assert_eq!(WatchedSync::plural(&()), "artifactsyncs");
    }

    #[test]
    fn something_that_is_no_object_is_an_error() {
        assert!(serde_json::from_value::<WatchedSync>(json!("text")).is_err());
    }
}
