//! Where `tresor apply` and the puller keep what they applied: a ConfigMap
//! `tresor-inventory-<name>` in the owner's namespace, written with server-side apply like
//! everything else.
//!
//! A ConfigMap rather than a local state file, so that two people (or CI jobs) running
//! `tresor apply --name app` against the same cluster see the same inventory and prune
//! correctly; rather than a Secret, because nothing in it is secret (kinds and names). The
//! puller reads and writes the same ConfigMap (as itself, not as the tenant's service
//! account), starts from it after a restart, deletes it with the ArtifactSync, and copies
//! the object list into `ArtifactSync.status.inventory` for people and `kubectl` to read.

use std::time::Duration;

use kube::core::{ApiResource, GroupVersionKind};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{
    AppliedObject, ApplyError, ApplyOptions, Cluster, ObjectRef, Owner, Resolved, LABEL_NAME,
    LABEL_NAMESPACE,
};

/// The recorded state of one sync.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// The applied artifact digest.
    pub digest: Option<String>,
    /// The last digest that passed the health check.
    pub healthy: Option<String>,
    /// The applied objects (while a prune is pending, also the objects still to prune).
    pub objects: Vec<ObjectRef>,
}

/// A ConfigMap holding an [`Inventory`].
///
/// Read and written as tresor itself (`cluster`), not as an impersonated service account:
/// the inventory is tresor's bookkeeping, not a tenant's object.
#[derive(Clone)]
pub struct InventoryStore {
    /// The owner (the ConfigMap lives in its namespace, named after it).
    pub owner: Owner,
    /// The identity that reads and writes it.
    pub cluster: Cluster,
}

impl InventoryStore {
    /// The ConfigMap's name: `tresor-inventory-<name>`.
    pub fn config_map_name(&self) -> String {
        format!("tresor-inventory-{}", self.owner.name)
    }

    fn id(&self) -> ObjectRef {
        ObjectRef {
            group: String::new(),
            version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: Some(self.owner.namespace.clone()),
            name: self.config_map_name(),
        }
    }

    fn resource() -> Resolved {
        Resolved {
            resource: ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk("", "v1", "ConfigMap"),
                "configmaps",
            )
            .into(),
            namespaced: true,
        }
    }

    /// Reads the inventory; `None` when there is none yet (or its namespace is missing).
    pub async fn load(&self, timeout: Duration) -> Result<Option<Inventory>, ApplyError> {
        let live = match self
            .cluster
            .get(&self.id(), &Self::resource(), timeout)
            .await
        {
            Ok(live) => live,
            Err(ApplyError::NamespaceMissing { .. } | ApplyError::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        let Some(live) = live else { return Ok(None) };
        let data = |key: &str| {
            live.pointer(&format!("/data/{key}"))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let objects = match data("objects") {
            Some(text) => serde_json::from_str(&text).map_err(|e| ApplyError::BadObject {
                object: self.id().to_string(),
                message: format!("the inventory cannot be read ({e}); delete it to start over"),
            })?,
            None => Vec::new(),
        };
        Ok(Some(Inventory {
            digest: data("digest"),
            healthy: data("healthy"),
            objects,
        }))
    }

    /// Deletes the inventory ConfigMap (when its owner is deleted), only while it still
    /// carries the owner's labels; one that is already gone is fine.
    pub async fn delete(&self, timeout: Duration) -> Result<(), ApplyError> {
        let mut options = ApplyOptions::new(self.owner.clone());
        options.api_timeout = timeout;
        self.cluster
            .prune(&[self.id()], &[], &options)
            .await
            .map(drop)
    }

    /// Writes the inventory (server-side apply, field manager `tresor`).
    pub async fn save(&self, inventory: &Inventory, timeout: Duration) -> Result<(), ApplyError> {
        let objects =
            serde_json::to_string(&inventory.objects).map_err(|e| ApplyError::BadObject {
                object: self.id().to_string(),
                message: e.to_string(),
            })?;
        let object = AppliedObject::new(
            self.id(),
            Self::resource(),
            &json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": self.config_map_name(),
                    "namespace": self.owner.namespace,
                    "labels": {
                        LABEL_NAME: self.owner.name,
                        LABEL_NAMESPACE: self.owner.namespace,
                        "tresor.dev/inventory": "true",
                    },
                },
                "data": {
                    "digest": inventory.digest.clone().unwrap_or_default(),
                    "healthy": inventory.healthy.clone().unwrap_or_default(),
                    "objects": objects,
                },
            }),
        )?;
        self.cluster
            .patch(&object, true, false, timeout)
            .await
            .map(drop)
    }
}
