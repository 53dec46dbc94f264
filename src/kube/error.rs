//! [`ApplyError`]: why applying to, pruning from or checking a cluster failed, mapped from
//! the API server's status code and reason.

use std::time::Duration;

use kube::core::Status;

/// Why a Kubernetes step failed. Each variant has a stable [`ApplyError::reason`].
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Another field manager owns a field tresor changes (409, server-side apply).
    #[error(
        "{object}: conflict with field manager {manager:?} over {fields}; it owns these \
         fields: make the artifact agree with it, remove the other manager's ownership, or \
         apply with force (tresor apply --force-conflicts)",
        fields = if fields.is_empty() { "some fields".to_string() } else { fields.join(", ") }
    )]
    Conflict {
        /// The object (`Kind.group/namespace/name`).
        object: String,
        /// The field manager that owns the fields (empty when the server did not say).
        manager: String,
        /// The conflicting field paths, as the server reported them.
        fields: Vec<String>,
    },
    /// The object already belongs to another tresor owner (its labels name another
    /// ArtifactSync or `tresor apply --name`).
    #[error(
        "{object} belongs to {owner} (its labels tresor.dev/name and tresor.dev/namespace \
         say so); remove it from one of the two artifacts (`tresor apply --force-conflicts` \
         takes it over)"
    )]
    Claimed {
        /// The object.
        object: String,
        /// `namespace/name` of the owner.
        owner: String,
    },
    /// The object was changed by someone else between read and write (409, stale
    /// resourceVersion).
    #[error("{object}: the object was modified concurrently ({message}); retry")]
    StaleObject {
        /// The object.
        object: String,
        /// The server's message.
        message: String,
    },
    /// A namespaced object's namespace does not exist (and is not in the artifact).
    #[error(
        "{object}: namespace {namespace:?} does not exist; add the Namespace to the artifact \
         or create it first"
    )]
    NamespaceMissing {
        /// The object.
        object: String,
        /// The missing namespace.
        namespace: String,
    },
    /// CRDs of the artifact did not report `Established` in time.
    #[error(
        "CustomResourceDefinitions not established within {}: {}; check the API server's \
         view of them (kubectl get crd)",
        humantime::format_duration(*timeout), crds.join(", ")
    )]
    CrdNotEstablished {
        /// The CRDs still not established.
        crds: Vec<String>,
        /// How long tresor waited.
        timeout: Duration,
    },
    /// The cluster does not serve the object's apiVersion/kind (discovery found nothing).
    #[error(
        "{object}: the cluster does not serve kind {kind} in {api_version}; install its CRD \
         (in this artifact or before) or fix apiVersion"
    )]
    UnknownKind {
        /// The object.
        object: String,
        /// The apiVersion as written.
        api_version: String,
        /// The kind.
        kind: String,
    },
    /// The (impersonated) account may not do this (403).
    #[error(
        "{object}: {account} may not {verb} it ({message}); grant the permission through RBAC \
         or apply with another service account"
    )]
    Forbidden {
        /// The object.
        object: String,
        /// The verb (`patch`, `get`, `delete`, …).
        verb: String,
        /// Who tried (`system:serviceaccount:NS:NAME`, or `the current user`).
        account: String,
        /// The server's message.
        message: String,
    },
    /// The applying account may not grant the permissions an RBAC object in the artifact
    /// grants (the server's escalation check: "attempting to grant RBAC permissions not
    /// currently held"). A Role or ClusterRole needs `escalate` on roles/clusterroles, a
    /// RoleBinding or ClusterRoleBinding `bind` on the role it references — or the account
    /// holds every permission granted.
    #[error(
        "{object}: {account} may not grant permissions it does not hold; give it `{right}` \
         {on}, or the permissions themselves (server: {message})"
    )]
    RbacEscalation {
        /// The RBAC object.
        object: String,
        /// Who tried (`system:serviceaccount:NS:NAME`, or `the current user`).
        account: String,
        /// The missing right: `escalate` (roles) or `bind` (bindings).
        right: &'static str,
        /// Where the right is needed, e.g. `on clusterroles/admin (resourceNames)`.
        on: String,
        /// The server's message, shortened (it lists every missing rule).
        message: String,
    },
    /// A namespaced object of the artifact would be applied outside the namespace the apply
    /// is confined to (`--no-cross-namespace` of `tresor-puller` or `tresor apply`); nothing
    /// was applied.
    #[error(
        "{object}: namespace {namespace:?} is outside {allowed:?}, the only namespace this \
         apply may write to (--no-cross-namespace); remove metadata.namespace, or apply it \
         in {namespace:?} (an ArtifactSync there). Nothing was applied"
    )]
    CrossNamespace {
        /// The object.
        object: String,
        /// The namespace it names.
        namespace: String,
        /// The sync's own namespace.
        allowed: String,
    },
    /// The caller may not impersonate the account it applies as (403 on `impersonate`):
    /// the account's own rights were never checked.
    #[error(
        "{object}: may not act as {account} ({message}); allow `impersonate` on that \
         ServiceAccount (the puller: bind ClusterRole tresor-puller-tenant in its namespace, \
         docs/puller.md \"Adding a tenant\")"
    )]
    ImpersonationForbidden {
        /// The object the request was for.
        object: String,
        /// The account impersonated.
        account: String,
        /// The server's message.
        message: String,
    },
    /// The server refused the object as invalid (422).
    #[error("{object}: invalid: {message}")]
    Invalid {
        /// The object.
        object: String,
        /// The server's message.
        message: String,
    },
    /// The change touches a field that cannot change after creation (422).
    #[error(
        "{object}: field {field} is immutable ({message}); delete and recreate the object, or \
         keep the field as it is"
    )]
    ImmutableField {
        /// The object.
        object: String,
        /// The field path.
        field: String,
        /// The server's message.
        message: String,
    },
    /// The object or its resource was not found (404).
    #[error("{object}: not found: {message}")]
    NotFound {
        /// The object.
        object: String,
        /// The server's message.
        message: String,
    },
    /// Objects did not become healthy in time.
    #[error(
        "not healthy after {}: {}",
        humantime::format_duration(*timeout), objects.join("; ")
    )]
    HealthTimeout {
        /// The unhealthy objects with why (`Deployment.apps/ns/web: 0 of 2 available`).
        objects: Vec<String>,
        /// How long tresor waited.
        timeout: Duration,
    },
    /// Objects reached a terminal failure (a Job failed, a `Stalled` condition).
    #[error("failed: {}", objects.join("; "))]
    Unhealthy {
        /// The failed objects with why.
        objects: Vec<String>,
    },
    /// The new artifact has no objects while the previous one had some: pruning would
    /// delete everything.
    #[error(
        "the artifact has no objects but {previous} objects were applied before; refusing to \
         prune them all (allow it explicitly with allow_empty / --allow-empty)"
    )]
    PruneGuard {
        /// How many objects the previous inventory holds.
        previous: usize,
    },
    /// A manifest cannot be applied as written.
    #[error("{object}: {message}")]
    BadObject {
        /// The object (or file) concerned.
        object: String,
        /// What is wrong.
        message: String,
    },
    /// `spec.path` / `--path` names no directory in the artifact.
    #[error("path {path:?} is not a directory in the artifact ({found}); fix spec.path / --path")]
    PathNotFound {
        /// The path asked for, relative to the artifact's root.
        path: String,
        /// What is there instead, e.g. `top-level directories: base, prod`.
        found: String,
    },
    /// The staged tree could not be read as Kubernetes manifests.
    #[error(transparent)]
    Manifests(#[from] crate::artifact::objects::ObjectsError),
    /// The API server answered with an error not covered above (5xx, 429, …).
    #[error("{object}: {verb} failed: HTTP {code} {reason}: {message}")]
    Api {
        /// The object.
        object: String,
        /// The verb.
        verb: String,
        /// HTTP status code.
        code: u16,
        /// The server's reason.
        reason: String,
        /// The server's message.
        message: String,
    },
    /// The API server could not be reached or the answer could not be read.
    #[error("{object}: {verb} failed: {message}")]
    Transport {
        /// The object.
        object: String,
        /// The verb.
        verb: String,
        /// What went wrong.
        message: String,
    },
    /// An API call did not finish in time.
    #[error("{object}: {verb} did not finish within {}", humantime::format_duration(*after))]
    Timeout {
        /// The object.
        object: String,
        /// The verb.
        verb: String,
        /// The timeout.
        after: Duration,
    },
    /// The kubeconfig (or in-cluster config) is unusable.
    #[error("kubeconfig: {message}")]
    Config {
        /// What is wrong.
        message: String,
    },
    /// A stage stopped at a failure; the objects applied before it are listed.
    #[error(
        "{source}; {stage} stage stopped: {applied} (nothing after the failure was applied)",
        applied = if applied.is_empty() {
            "no object of it was applied".to_string()
        } else {
            format!("applied before the failure: {}", applied.join(", "))
        }
    )]
    Stage {
        /// `namespaces and CRDs` or `objects`.
        stage: &'static str,
        /// Objects of the stage applied before the failure.
        applied: Vec<String>,
        /// The failure.
        source: Box<ApplyError>,
    },
    /// Health failed and the last healthy version was applied again.
    #[error("{source}; rolled back to the last healthy version {digest}")]
    RolledBack {
        /// The digest rolled back to.
        digest: String,
        /// Why.
        source: Box<ApplyError>,
    },
}

/// How the engine carries a cluster failure without naming Kubernetes.
impl From<ApplyError> for crate::reconcile::StepError {
    fn from(error: ApplyError) -> Self {
        Self::Applier(crate::reconcile::ApplierFailure::new(
            error.reason(),
            error.is_transient(),
            error,
        ))
    }
}

impl ApplyError {
    /// Stable CamelCase reason for conditions, events, metrics and `--output json`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Conflict { .. } | Self::Claimed { .. } => "Conflict",
            Self::StaleObject { .. } => "StaleObject",
            Self::NamespaceMissing { .. } => "NamespaceMissing",
            Self::CrdNotEstablished { .. } => "CrdNotEstablished",
            Self::UnknownKind { .. } => "UnknownKind",
            Self::Forbidden { .. } | Self::ImpersonationForbidden { .. } => "Forbidden",
            Self::RbacEscalation { .. } => "RbacEscalation",
            Self::CrossNamespace { .. } => "CrossNamespace",
            Self::Invalid { .. } => "Invalid",
            Self::ImmutableField { .. } => "ImmutableField",
            Self::NotFound { .. } => "NotFound",
            Self::HealthTimeout { .. } => "HealthTimeout",
            Self::Unhealthy { .. } => "Unhealthy",
            Self::PruneGuard { .. } => "PruneGuard",
            Self::BadObject { .. } => "BadObject",
            Self::PathNotFound { .. } => "PathNotFound",
            Self::Manifests(e) => e.reason(),
            Self::Api { .. } => "ApiError",
            Self::Transport { .. } => "ApiUnreachable",
            Self::Timeout { .. } => "ApiTimeout",
            Self::Config { .. } => "KubeconfigInvalid",
            Self::Stage { source, .. } | Self::RolledBack { source, .. } => source.reason(),
        }
    }

    /// Whether retrying soon may succeed (network trouble, 5xx, 429, a CRD still coming
    /// up); otherwise the same input fails again until something changes.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport { .. }
            | Self::Timeout { .. }
            | Self::StaleObject { .. }
            | Self::CrdNotEstablished { .. } => true,
            Self::Api { code, .. } => *code >= 500 || *code == 429,
            Self::Stage { source, .. } => source.is_transient(),
            _ => false,
        }
    }

    /// The innermost error (through [`ApplyError::Stage`] and [`ApplyError::RolledBack`]).
    pub fn root(&self) -> &ApplyError {
        match self {
            Self::Stage { source, .. } | Self::RolledBack { source, .. } => source.root(),
            other => other,
        }
    }

    /// Maps a `kube` client error for `verb` on `object` (status code and reason first).
    /// `account` is the impersonated user, if any.
    pub fn from_kube(
        error: kube::Error,
        object: &str,
        verb: &str,
        namespace: Option<&str>,
        account: Option<&str>,
    ) -> Self {
        match error {
            kube::Error::Api(status) => {
                Self::from_status(&status, object, verb, namespace, account)
            }
            kube::Error::Discovery(e) => Self::NotFound {
                object: object.to_string(),
                message: e.to_string(),
            },
            other => Self::Transport {
                object: object.to_string(),
                verb: verb.to_string(),
                message: other.to_string(),
            },
        }
    }

    fn from_status(
        status: &Status,
        object: &str,
        verb: &str,
        namespace: Option<&str>,
        account: Option<&str>,
    ) -> Self {
        let object = object.to_string();
        let message = status.message.clone();
        let causes = status
            .details
            .as_ref()
            .map(|d| d.causes.as_slice())
            .unwrap_or_default();
        match status.code {
            409 if message.contains("conflict with")
                || status.reason == "Conflict" && !causes.is_empty() =>
            {
                let fields = causes
                    .iter()
                    .filter(|c| !c.field.is_empty())
                    .map(|c| c.field.clone())
                    .collect();
                let manager = causes
                    .iter()
                    .find_map(|c| conflict_manager(&c.message))
                    .or_else(|| conflict_manager(&message))
                    .unwrap_or_default();
                Self::Conflict {
                    object,
                    manager,
                    fields,
                }
            }
            409 if status.reason == "Conflict" => Self::StaleObject { object, message },
            403 | 422 if message.contains(ESCALATION) => {
                let (right, on) = escalation_right(&object);
                Self::RbacEscalation {
                    account: account.unwrap_or("the current user").to_string(),
                    right,
                    on,
                    message: shorten(&message, 300),
                    object,
                }
            }
            403 if message.contains("cannot impersonate") => Self::ImpersonationForbidden {
                object,
                account: account.unwrap_or("the impersonated user").to_string(),
                message,
            },
            403 => Self::Forbidden {
                object,
                verb: verb.to_string(),
                account: account.unwrap_or("the current user").to_string(),
                message,
            },
            404 => {
                let details = status.details.as_ref();
                let is_namespace = details.is_some_and(|d| d.kind == "namespaces")
                    || message.starts_with("namespaces \"");
                match (is_namespace, namespace) {
                    (true, Some(ns)) if verb != "delete" || !object.starts_with("Namespace/") => {
                        Self::NamespaceMissing {
                            object,
                            namespace: details
                                .map(|d| d.name.clone())
                                .filter(|n| !n.is_empty())
                                .unwrap_or_else(|| ns.to_string()),
                        }
                    }
                    _ => Self::NotFound { object, message },
                }
            }
            422 => {
                let immutable = causes
                    .iter()
                    .find(|c| says_immutable(&c.message) || c.reason == "FieldValueForbidden");
                match immutable {
                    Some(cause) => Self::ImmutableField {
                        object,
                        field: cause.field.clone(),
                        message,
                    },
                    None if says_immutable(&message) => Self::ImmutableField {
                        object,
                        field: causes.first().map(|c| c.field.clone()).unwrap_or_default(),
                        message,
                    },
                    None => Self::Invalid { object, message },
                }
            }
            code => Self::Api {
                object,
                verb: verb.to_string(),
                code,
                reason: status.reason.clone(),
                message,
            },
        }
    }
}

/// Whether a 422 message says a field cannot change: `field is immutable` from most
/// validations, `may not change once set` from a Service's `spec.clusterIPs` (what a real
/// kube-apiserver answers when `spec.clusterIP` changes).
fn says_immutable(message: &str) -> bool {
    message.contains("immutable") || message.contains("may not change once set")
}

/// What the API server says when an RBAC object grants more than its creator holds
/// (`k8s.io/kubernetes/pkg/registry/rbac`, 403).
const ESCALATION: &str = "attempting to grant RBAC permissions not currently held";

/// The right an account lacks to create `object` (`Kind.group/[ns/]name`) despite the
/// escalation check, and where it is needed. The role a binding references is added by
/// [`ApplyError::with_role_ref`] where the manifest is known.
fn escalation_right(object: &str) -> (&'static str, String) {
    let kind = object.split(['.', '/']).next().unwrap_or_default();
    match kind {
        "RoleBinding" | "ClusterRoleBinding" => (
            "bind",
            "on the role the binding references (rbac.authorization.k8s.io)".into(),
        ),
        "ClusterRole" => (
            "escalate",
            "on clusterroles (rbac.authorization.k8s.io)".into(),
        ),
        _ => ("escalate", "on roles (rbac.authorization.k8s.io)".into()),
    }
}

/// `text` cut to at most `max` bytes on a character boundary (with `…` when cut).
fn shorten(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", text.get(..end).unwrap_or_default())
}

impl ApplyError {
    /// Names the role a binding references in an [`ApplyError::RbacEscalation`] (from the
    /// manifest `value`: `roleRef`); other errors are returned as they are.
    pub fn with_role_ref(self, value: &serde_json::Value) -> Self {
        match self {
            Self::RbacEscalation {
                object,
                account,
                right: "bind",
                message,
                ..
            } => {
                let field = |k: &str| {
                    value
                        .pointer(&format!("/roleRef/{k}"))
                        .and_then(serde_json::Value::as_str)
                        .unwrap_or_default()
                        .to_string()
                };
                let (kind, name) = (field("kind"), field("name"));
                let on = if kind == "Role" {
                    let ns = object.split('/').nth(1).unwrap_or_default();
                    format!("on roles/{name} in namespace {ns} (rbac.authorization.k8s.io)")
                } else {
                    format!("on clusterroles/{name} (rbac.authorization.k8s.io)")
                };
                Self::RbacEscalation {
                    object,
                    account,
                    right: "bind",
                    on,
                    message,
                }
            }
            other => other,
        }
    }
}

/// `conflict with "kubectl-edit" using apps/v1: .spec.replicas` → `kubectl-edit`.
fn conflict_manager(message: &str) -> Option<String> {
    let rest = message.split("conflict with \"").nth(1)?;
    let end = rest.find('"')?;
    rest.get(..end).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn status(code: u16, reason: &str, message: &str, causes: Vec<Value>) -> kube::Error {
        let status: Status = serde_json::from_value(json!({
            "status": "Failure", "code": code, "reason": reason, "message": message,
            "details": {"causes": causes}
        }))
        .unwrap();
        kube::Error::Api(Box::new(status))
    }

    fn cause(field: &str, message: &str) -> Value {
        json!({"field": field, "message": message})
    }

    #[test]
    fn api_statuses_map_to_reasons() {
        let conflict = status(
            409,
            "Conflict",
            "Apply failed with 1 conflict: conflict with \"hpa\" using apps/v1: .spec.replicas",
            vec![cause(
                ".spec.replicas",
                "conflict with \"hpa\" using apps/v1",
            )],
        );
        let e = ApplyError::from_kube(conflict, "Deployment.apps/a/web", "patch", Some("a"), None);
        match &e {
            ApplyError::Conflict {
                manager, fields, ..
            } => {
                assert_eq!(manager, "hpa");
                assert_eq!(fields, &vec![".spec.replicas".to_string()]);
            }
            other => panic!("{other:?}"),
        }
        let stale = status(409, "Conflict", "the object has been modified", vec![]);
        let e = ApplyError::from_kube(stale, "x", "update", None, None);
        assert_eq!(e.reason(), "StaleObject");
        assert!(e.is_transient());
        let ns = status(404, "NotFound", "namespaces \"team\" not found", vec![]);
        let e = ApplyError::from_kube(ns, "ConfigMap/team/a", "patch", Some("team"), None);
        assert!(
            matches!(&e, ApplyError::NamespaceMissing { namespace, .. } if namespace == "team")
        );
        let imm = status(
            422,
            "Invalid",
            "Service \"s\" is invalid: spec.clusterIP: Invalid value: field is immutable",
            vec![cause(
                "spec.clusterIP",
                "Invalid value: \"10.0.0.9\": field is immutable",
            )],
        );
        let e = ApplyError::from_kube(imm, "Service/a/s", "patch", Some("a"), None);
        assert!(
            matches!(&e, ApplyError::ImmutableField { field, .. } if field == "spec.clusterIP")
        );
        // What kube-apiserver v1.36 answers when a Service's clusterIP changes.
        let cluster_ips = status(
            422,
            "Invalid",
            "Service \"db\" is invalid: spec.clusterIPs[0]: Invalid value: [\"10.96.0.250\"]: \
             may not change once set",
            vec![cause(
                "spec.clusterIPs[0]",
                "Invalid value: [\"10.96.0.250\"]: may not change once set",
            )],
        );
        let e = ApplyError::from_kube(cluster_ips, "Service/a/db", "patch", Some("a"), None);
        assert!(
            matches!(&e, ApplyError::ImmutableField { field, .. } if field == "spec.clusterIPs[0]"),
            "{e:?}"
        );
        let forbidden = status(403, "Forbidden", "nope", vec![]);
        let e = ApplyError::from_kube(
            forbidden,
            "o",
            "patch",
            None,
            Some("system:serviceaccount:t:d"),
        );
        assert!(
            e.to_string()
                .contains("system:serviceaccount:t:d may not patch"),
            "{e}"
        );
        let e = ApplyError::from_kube(
            status(503, "ServiceUnavailable", "busy", vec![]),
            "o",
            "get",
            None,
            None,
        );
        assert_eq!(e.reason(), "ApiError");
        assert!(e.is_transient());
    }

    /// Issue 17: the server's RBAC escalation refusal is its own reason, naming the right.
    #[test]
    fn rbac_escalation_names_the_missing_right() {
        let refused = |object: &str| {
            ApplyError::from_kube(
                status(
                    403,
                    "Forbidden",
                    "rolebindings.rbac.authorization.k8s.io \"x\" is forbidden: user \"u\" \
                     (groups=[\"g\"]) is attempting to grant RBAC permissions not currently \
                     held:\n{APIGroups:[\"*\"], Resources:[\"*\"], Verbs:[\"*\"]}",
                    vec![],
                ),
                object,
                "patch",
                Some("t"),
                Some("system:serviceaccount:t:tresor-tenant"),
            )
        };
        let binding = refused("RoleBinding.rbac.authorization.k8s.io/t/x")
            .with_role_ref(&json!({"roleRef": {"kind": "ClusterRole", "name": "cluster-admin"}}));
        assert_eq!(binding.reason(), "RbacEscalation");
        let text = binding.to_string();
        assert!(
            text.contains("`bind` on clusterroles/cluster-admin"),
            "{text}"
        );
        assert!(
            text.contains("system:serviceaccount:t:tresor-tenant"),
            "{text}"
        );
        let role = refused("Role.rbac.authorization.k8s.io/t/all");
        assert_eq!(role.reason(), "RbacEscalation");
        assert!(role.to_string().contains("`escalate` on roles"), "{role}");
        assert!(!role.is_transient());
        let e = ApplyError::from_kube(
            status(
                403,
                "Forbidden",
                "serviceaccounts \"tresor-tenant\" is forbidden: User \"system:serviceaccount:\
                 tresor-system:tresor-puller\" cannot impersonate resource \"serviceaccounts\"",
                vec![],
            ),
            "ConfigMap/t/a",
            "patch",
            Some("t"),
            Some("system:serviceaccount:t:tresor-tenant"),
        );
        assert_eq!(e.reason(), "Forbidden");
        assert!(
            e.to_string()
                .contains("may not act as system:serviceaccount:t:tresor-tenant"),
            "{e}"
        );
        let long = shorten(&"é".repeat(400), 301);
        assert!(long.len() <= 304 && long.ends_with('…'), "{long}");
    }
}
