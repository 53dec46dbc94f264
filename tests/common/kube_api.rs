//! An in-process Kubernetes API double: an HTTP server that behaves like a real API server
//! on the points tresor's apply depends on, for tests through a real `kube::Client`.
//!
//! Tests run against the real API server of `scripts/cluster.sh` (docs/cluster-testing.md);
//! this double remains only for faults a real server does not produce on demand, and each
//! test using it names its fault (issue 11): today `tests/kube_apply.rs` (a CRD established
//! only after `establish_delay`). `benches/kube_apply.rs` and `benches/puller_idle.rs` use it
//! too (their figures are not comparable with the real server's).
//!
//! What it does:
//! - **Discovery**: `/api`, `/api/v1`, `/apis`, `/apis/<group>/<version>` with kinds,
//!   plurals, `namespaced` and verbs. A CRD becomes discoverable (and its resources
//!   servable) only once it is `Established`, which happens `establish_delay` after it was
//!   created; until then its custom resources get 404 like on a real server.
//! - **Objects**: GET, LIST (namespace and `k=v` label selectors), POST (409
//!   AlreadyExists), PUT (409 on a stale `metadata.resourceVersion`), DELETE, server-side
//!   apply PATCH (`application/apply-patch+yaml`) and merge PATCH (409 too when it carries
//!   a stale `metadata.resourceVersion`). Every change bumps a global resourceVersion; spec
//!   changes bump `metadata.generation`.
//! - **Finalizers and graceful deletion**: DELETE of an object with `metadata.finalizers`
//!   only sets `metadata.deletionTimestamp` (and returns the object); it disappears when a
//!   patch removes its last finalizer. Clients cannot set or clear `deletionTimestamp`, nor
//!   add finalizers to an object being deleted (422). A deleted Namespace is `Terminating`:
//!   its objects without finalizers go at once, those with finalizers are marked, new
//!   objects are refused (403), and the Namespace goes when nothing is left in it. A
//!   deleted CRD takes its custom resources with it at once.
//! - **Server-side apply field ownership** at field-path granularity one level below the
//!   top-level fields (`spec.replicas`, `spec.template`, `data.key`) and per label and
//!   annotation key: a manager changing a field another manager owns gets 409 Conflict
//!   (with `FieldManagerConflict` causes naming the manager and `.spec.replicas`-style
//!   fields) unless `force=true`, which takes ownership. Fields a manager applied before and
//!   leaves out are removed (if nobody else owns them). Merge patches and PUTs transfer
//!   ownership of the fields they change to their manager (operation Update), as on a real
//!   server. `metadata.managedFields` is rendered (FieldsV1).
//! - **Namespaces must exist** for writes of namespaced objects (404 `namespaces "x" not
//!   found`, details kind `namespaces`).
//! - **Immutable fields** → 422 Invalid with a cause naming the field: Service
//!   `spec.clusterIP` (allocated on create), Job `spec.template`, Deployment/StatefulSet
//!   `spec.selector`, and `metadata.name` differing from the URL.
//! - **No authorization**: every request is cluster-admin's.
//! - **Watches** (`?watch=true` on a list URL, namespaced or all namespaces, with label
//!   selectors `k=v`, `k!=v`, `k`, `!k`): JSON lines `{"type": "ADDED|MODIFIED|DELETED|
//!   BOOKMARK|ERROR", "object": …}`. From `resourceVersion` N, every change after N (kept in
//!   a log of the last 20,000 changes; older gets an `ERROR` event with 410 `Expired`, as on
//!   a real server); without one (or `0`), every matching object as `ADDED` first. An object
//!   entering the label selection is `ADDED`, one leaving it `DELETED`. The stream ends after
//!   `timeoutSeconds` (default 1800), with a `BOOKMARK` at the latest resourceVersion when
//!   `allowWatchBookmarks=true`; a watch that falls more than 4,096 changes behind is closed
//!   (the client resumes from its last resourceVersion).
//! - **Request log**: [`KubeApi::requests`] (every request, watches included, as `METHOD
//!   /path?query`) and [`KubeApi::writes`] (stored changes).
//! - **Dry run** (`dryRun=All`): the full check, nothing stored.
//! - **Controllers, simulated**: Deployments, StatefulSets and DaemonSets are rolled out
//!   and available at once, Jobs complete at once — unless an image ends in `:broken`
//!   (workloads then never become available; Jobs fail). Services get a clusterIP.
//!
//! What it does not model: field ownership deeper than one level below the top (a
//! manager applying `spec.template` owns all of it; real servers track every leaf and
//! merge lists by key), strategic merge patch semantics (treated as JSON merge patch),
//! validation against OpenAPI/CRD schemas, admission webhooks, `spec.finalizers` of
//! Namespaces, grace periods, streaming lists (`sendInitialEvents`), field selectors,
//! pagination (`limit` is ignored: one page), subresources other than `/status` (GET and
//! merge PATCH of `.status` only), multiple stored versions and conversion, RBAC and
//! impersonation, authentication.
#![allow(clippy::too_many_lines, clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};

/// A resource type the double serves.
#[derive(Debug, Clone)]
struct Res {
    group: String,
    version: String,
    kind: String,
    plural: String,
    namespaced: bool,
}

/// (group, plural, namespace or "", name)
type Key = (String, String, String, String);
type Field = Vec<String>;

#[derive(Debug, Clone)]
struct Stored {
    obj: Value,
    /// field path → (manager, operation "Apply" | "Update")
    owners: BTreeMap<Field, (String, &'static str)>,
}

#[derive(Default)]
struct State {
    resources: Vec<Res>,
    pending: Vec<(Instant, Key)>,
    objects: BTreeMap<Key, Stored>,
    rv: u64,
    uid: u64,
    establish_delay: Duration,
    requests: Vec<String>,
    writes: Vec<String>,
    /// Recent changes, oldest first, for watches that resume from a resourceVersion.
    log: VecDeque<Arc<Change>>,
    /// The newest resourceVersion dropped from `log` (older watches get 410 Gone).
    trimmed_through: u64,
    /// Every change, to the running watches.
    changes: Option<tokio::sync::broadcast::Sender<Arc<Change>>>,
}

/// One stored change, as watches see it.
#[derive(Debug)]
struct Change {
    rv: u64,
    key: Key,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    type_: &'static str,
    /// The object after the change (before it, for `DELETED`, with the deletion's rv).
    obj: Value,
    /// The labels before the change (`None` when it was created), so a label-selected watch
    /// can tell an object leaving the selection (`DELETED`) or entering it (`ADDED`).
    old_labels: Option<Value>,
}

/// Changes kept for resuming watches; older resourceVersions get 410 Gone.
const LOG_CAP: usize = 20_000;

/// A running API double.
pub struct KubeApi {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

const BUILTIN: &[(&str, &str, &str, &str, bool)] = &[
    ("", "v1", "Namespace", "namespaces", false),
    ("", "v1", "ConfigMap", "configmaps", true),
    ("", "v1", "Secret", "secrets", true),
    ("", "v1", "Service", "services", true),
    ("", "v1", "ServiceAccount", "serviceaccounts", true),
    ("", "v1", "Pod", "pods", true),
    ("apps", "v1", "Deployment", "deployments", true),
    ("apps", "v1", "StatefulSet", "statefulsets", true),
    ("apps", "v1", "DaemonSet", "daemonsets", true),
    ("batch", "v1", "Job", "jobs", true),
    ("events.k8s.io", "v1", "Event", "events", true),
    ("coordination.k8s.io", "v1", "Lease", "leases", true),
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
    (
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        false,
    ),
];

const VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];

impl KubeApi {
    /// Starts the double on 127.0.0.1 (random port) with namespaces `default` and
    /// `kube-system`; CRDs are established `establish_delay` after creation.
    pub fn start(establish_delay: Duration) -> Self {
        let mut state = State {
            establish_delay,
            ..State::default()
        };
        for (g, v, k, p, n) in BUILTIN {
            state.resources.push(Res {
                group: g.to_string(),
                version: v.to_string(),
                kind: k.to_string(),
                plural: p.to_string(),
                namespaced: *n,
            });
        }
        state.changes = Some(tokio::sync::broadcast::channel(4096).0);
        for ns in ["default", "kube-system"] {
            let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            let res = state.res("", "v1", "namespaces").unwrap();
            apply(
                &mut state,
                &res,
                None,
                ns,
                body,
                "kube-apiserver",
                false,
                false,
            )
            .unwrap();
        }
        let state = Arc::new(Mutex::new(state));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = state.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let app = axum::Router::new().fallback(move |req: Request<Body>| {
                    let state = shared.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = axum::body::to_bytes(body, 64 << 20)
                            .await
                            .unwrap_or_default();
                        let mut st = state.lock().unwrap();
                        handle(&mut st, &parts, &body)
                    }
                });
                axum::serve(listener, app).await.unwrap();
            });
        });
        Self { addr, state }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube client for the double.
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url().parse().unwrap());
        tresor::kube::client_from_config(config, None, Duration::from_secs(10)).unwrap()
    }

    /// A kubeconfig file pointing at the double (for the CLI).
    pub fn kubeconfig(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: double\n  cluster:\n    server: {}\n\
             contexts:\n- name: double\n  context:\n    cluster: double\n    user: admin\n    namespace: default\n\
             current-context: double\nusers:\n- name: admin\n  user: {{}}\n",
            self.url()
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Number of stored objects of a resource.
    pub fn count(&self, group: &str, plural: &str) -> usize {
        let st = self.state.lock().unwrap();
        st.objects
            .keys()
            .filter(|k| k.0 == group && k.1 == plural)
            .count()
    }

    /// Every request as `METHOD /path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Stored changes (not dry runs) as `METHOD /path`.
    pub fn writes(&self) -> Vec<String> {
        self.state.lock().unwrap().writes.clone()
    }

    /// Forgets requests and writes seen so far.
    pub fn clear_log(&self) {
        let mut st = self.state.lock().unwrap();
        st.requests.clear();
        st.writes.clear();
    }
}

impl State {
    fn res(&self, group: &str, version: &str, plural: &str) -> Option<Res> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
            .cloned()
    }

    fn next_rv(&mut self) -> String {
        self.rv += 1;
        self.rv.to_string()
    }
}

/// Logs a stored change and hands it to the running watches.
fn record(st: &mut State, type_: &'static str, key: &Key, obj: Value, old_labels: Option<Value>) {
    let rv = obj["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(st.rv);
    let change = Arc::new(Change {
        rv,
        key: key.clone(),
        type_,
        obj,
        old_labels,
    });
    st.log.push_back(change.clone());
    while st.log.len() > LOG_CAP {
        if let Some(old) = st.log.pop_front() {
            st.trimmed_through = old.rv;
        }
    }
    if let Some(tx) = &st.changes {
        // No receiver is fine: nobody watches.
        let _ = tx.send(change);
    }
}

/// Removes a stored object (which must exist) as one change; returns it.
fn remove(st: &mut State, k: &Key) -> Stored {
    let mut removed = st.objects.remove(k).unwrap();
    let rv = st.next_rv();
    removed.obj["metadata"]["resourceVersion"] = json!(rv);
    let labels = removed.obj["metadata"]["labels"].clone();
    record(st, "DELETED", k, removed.obj.clone(), Some(labels));
    removed
}

/// One requirement of a label selector.
#[derive(Debug, Clone)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
}

/// Parses `a=b,c!=d,e,!f` (`==` too); set-based requirements are not supported.
fn parse_selector(text: Option<&String>) -> Vec<Requirement> {
    let Some(text) = text else {
        return Vec::new();
    };
    text.split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| {
            if let Some((k, v)) = r.split_once("!=") {
                Requirement::NotEquals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = r.split_once("==").or_else(|| r.split_once('=')) {
                Requirement::Equals(k.trim().into(), v.trim().into())
            } else if let Some(k) = r.strip_prefix('!') {
                Requirement::NotExists(k.trim().into())
            } else {
                Requirement::Exists(r.into())
            }
        })
        .collect()
}

/// Whether `labels` (an object's `metadata.labels`, maybe null) satisfy every requirement.
fn selects(selector: &[Requirement], labels: &Value) -> bool {
    selector.iter().all(|r| match r {
        Requirement::Equals(k, v) => labels[k].as_str() == Some(v.as_str()),
        Requirement::NotEquals(k, v) => labels[k].as_str() != Some(v.as_str()),
        Requirement::Exists(k) => labels.get(k).is_some(),
        Requirement::NotExists(k) => labels.get(k).is_none(),
    })
}

/// What one watch receives: a resource, maybe one namespace, a label selector.
struct WatchFilter {
    group: String,
    plural: String,
    namespace: Option<String>,
    selector: Vec<Requirement>,
}

impl WatchFilter {
    /// The event this watch sees for `change`, if any: an object entering the selection
    /// is `ADDED`, one leaving it `DELETED`, as on a real server.
    fn event<'a>(&self, change: &'a Change) -> Option<(&'static str, &'a Value)> {
        let k = &change.key;
        if k.0 != self.group || k.1 != self.plural {
            return None;
        }
        if self.namespace.as_ref().is_some_and(|ns| *ns != k.2) {
            return None;
        }
        let was = change
            .old_labels
            .as_ref()
            .is_some_and(|l| selects(&self.selector, l));
        let is =
            change.type_ != "DELETED" && selects(&self.selector, &change.obj["metadata"]["labels"]);
        match (was, is) {
            (true, true) => Some(("MODIFIED", &change.obj)),
            (false, true) => Some(("ADDED", &change.obj)),
            (true, false) => Some(("DELETED", &change.obj)),
            (false, false) => None,
        }
    }
}

fn watch_line(type_: &str, obj: &Value) -> Vec<u8> {
    let mut line = serde_json::to_vec(&json!({"type": type_, "object": obj})).unwrap();
    line.push(b'\n');
    line
}

/// A watch: the changes after `resourceVersion` (every matching object as `ADDED` without
/// one), then the live changes, until `timeoutSeconds` (then a `BOOKMARK` when
/// `allowWatchBookmarks`). A resourceVersion older than the change log gets an `ERROR`
/// event with 410 Gone (`Expired`), like a real server; a watch too slow to keep up is
/// closed (the client resumes from its last resourceVersion).
fn watch(
    st: &State,
    res: &Res,
    filter: WatchFilter,
    query: &HashMap<String, String>,
) -> Response<Body> {
    let since: Option<u64> = query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .filter(|v| *v > 0);
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1800u64);
    let bookmarks = query
        .get("allowWatchBookmarks")
        .is_some_and(|v| v == "true");
    let mut pending: VecDeque<Vec<u8>> = VecDeque::new();
    let mut ended = false;
    match since {
        None => {
            for (k, stored) in &st.objects {
                if k.0 == filter.group
                    && k.1 == filter.plural
                    && filter.namespace.as_ref().is_none_or(|ns| *ns == k.2)
                    && selects(&filter.selector, &stored.obj["metadata"]["labels"])
                {
                    pending.push_back(watch_line("ADDED", &stored.obj));
                }
            }
        }
        Some(rv) if rv < st.trimmed_through => {
            pending.push_back(watch_line(
                "ERROR",
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": format!("too old resource version: {rv} ({})", st.trimmed_through + 1),
                    "reason": "Expired", "code": 410}),
            ));
            ended = true;
        }
        Some(rv) => {
            for change in st.log.iter().filter(|c| c.rv > rv) {
                if let Some((type_, obj)) = filter.event(change) {
                    pending.push_back(watch_line(type_, obj));
                }
            }
        }
    }
    let rx = st.changes.as_ref().unwrap().subscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    let meta = (api_version(res), res.kind.clone());
    let state = (pending, rx, filter, st.rv, ended);
    let stream = futures_util::stream::unfold(
        state,
        move |(mut pending, mut rx, filter, mut last_rv, mut ended)| {
            let meta = meta.clone();
            async move {
                loop {
                    if let Some(line) = pending.pop_front() {
                        return Some((
                            Ok::<_, std::convert::Infallible>(bytes::Bytes::from(line)),
                            (pending, rx, filter, last_rv, ended),
                        ));
                    }
                    if ended {
                        return None;
                    }
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Err(_) => {
                            ended = true;
                            if bookmarks {
                                pending.push_back(watch_line(
                                    "BOOKMARK",
                                    &json!({"apiVersion": meta.0, "kind": meta.1,
                                        "metadata": {"resourceVersion": last_rv.to_string()}}),
                                ));
                            }
                        }
                        Ok(Ok(change)) => {
                            last_rv = change.rv;
                            if let Some((type_, obj)) = filter.event(&change) {
                                pending.push_back(watch_line(type_, obj));
                            }
                        }
                        Ok(Err(_)) => ended = true,
                    }
                }
            }
        },
    );
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap()
}

fn key(group: &str, plural: &str, ns: &str, name: &str) -> Key {
    (group.into(), plural.into(), ns.into(), name.into())
}

fn respond(code: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap())
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

fn status(code: u16, reason: &str, message: &str, details: Value) -> Response<Body> {
    respond(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "details": details, "code": code}),
    )
}

fn not_found_resource() -> Response<Body> {
    status(
        404,
        "NotFound",
        "the server could not find the requested resource",
        json!({}),
    )
}

fn resource_name(res: &Res) -> String {
    if res.group.is_empty() {
        res.plural.clone()
    } else {
        format!("{}.{}", res.plural, res.group)
    }
}

/// Establishes CRDs whose delay has passed.
fn tick(st: &mut State) {
    let now = Instant::now();
    let (due, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut st.pending)
        .into_iter()
        .partition(|(at, _)| *at <= now);
    st.pending = rest;
    for (_, k) in due {
        let rv = st.next_rv();
        let Some(stored) = st.objects.get_mut(&k) else {
            continue;
        };
        stored.obj["status"]["conditions"] = json!([
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts"},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted"}]);
        stored.obj["metadata"]["resourceVersion"] = json!(rv);
        let spec = stored.obj["spec"].clone();
        let (obj, labels) = (stored.obj.clone(), stored.obj["metadata"]["labels"].clone());
        record(st, "MODIFIED", &k, obj, Some(labels));
        let group = spec["group"].as_str().unwrap_or_default().to_string();
        let kind = spec["names"]["kind"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let plural = spec["names"]["plural"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let namespaced = spec["scope"].as_str() != Some("Cluster");
        for v in spec["versions"].as_array().cloned().unwrap_or_default() {
            if v["served"].as_bool() == Some(false) {
                continue;
            }
            st.resources.push(Res {
                group: group.clone(),
                version: v["name"].as_str().unwrap_or_default().to_string(),
                kind: kind.clone(),
                plural: plural.clone(),
                namespaced,
            });
        }
    }
}

fn handle(st: &mut State, parts: &axum::http::request::Parts, body: &[u8]) -> Response<Body> {
    tick(st);
    let path = parts.uri.path().to_string();
    let query: HashMap<String, String> = parts
        .uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    st.requests.push(format!(
        "{} {}{}",
        parts.method,
        path,
        parts
            .uri
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default()
    ));

    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    // Discovery.
    match segs.as_slice() {
        ["api"] => {
            return respond(
                200,
                &json!({"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": []}),
            )
        }
        ["apis"] => {
            let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for r in st.resources.iter().filter(|r| !r.group.is_empty()) {
                let versions = groups.entry(r.group.clone()).or_default();
                if !versions.contains(&r.version) {
                    versions.push(r.version.clone());
                }
            }
            let groups: Vec<Value> = groups
                .into_iter()
                .map(|(g, vs)| {
                    let versions: Vec<Value> = vs
                        .iter()
                        .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                        .collect();
                    let preferred = versions[0].clone();
                    json!({"name": g, "versions": versions, "preferredVersion": preferred})
                })
                .collect();
            return respond(
                200,
                &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
            );
        }
        ["api", "v1"] => return resource_list(st, "", "v1"),
        ["apis", g, v] => return resource_list(st, g, v),
        _ => {}
    }
    let (group, version, rest) = match segs.as_slice() {
        ["api", "v1", rest @ ..] => ("", "v1", rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return not_found_resource(),
    };
    // The `/status` subresource: GET, and merge PATCH of `.status` only (for custom
    // resources, as if their CRD declared `subresources.status`).
    let (rest, subresource_status) = match rest {
        [head @ .., last] if *last == "status" && (head.len() == 2 || head.len() == 4) => {
            (head, true)
        }
        _ => (rest, false),
    };
    let (ns, plural, name) = match rest {
        ["namespaces", ns, plural, tail @ ..] if tail.len() <= 1 => (
            Some(ns.to_string()),
            *plural,
            tail.first().map(|s| s.to_string()),
        ),
        [plural, tail @ ..] if tail.len() <= 1 => {
            (None, *plural, tail.first().map(|s| s.to_string()))
        }
        _ => return not_found_resource(),
    };
    let Some(res) = st.res(group, version, plural) else {
        return not_found_resource();
    };
    if ns.is_some() && !res.namespaced {
        return not_found_resource();
    }
    let watching = query.get("watch").is_some_and(|v| v == "true" || v == "1");
    let verb = match (&parts.method, name.is_some()) {
        (&Method::GET, false) if watching => "watch",
        (&Method::GET, true) => "get",
        (&Method::GET, false) => "list",
        (&Method::PATCH, _) => "patch",
        (&Method::PUT, _) => "update",
        (&Method::POST, _) => "create",
        (&Method::DELETE, _) => "delete",
        _ => return status(405, "MethodNotAllowed", "method not allowed", json!({})),
    };
    let dry_run = query.get("dryRun").is_some_and(|v| v == "All");
    let nskey = ns.clone().unwrap_or_default();
    let writing = matches!(verb, "patch" | "update" | "create");
    if writing && res.namespaced {
        let Some(ns) = &ns else {
            return not_found_resource();
        };
        if !st.objects.contains_key(&key("", "namespaces", "", ns)) {
            return status(
                404,
                "NotFound",
                &format!("namespaces \"{ns}\" not found"),
                json!({"name": ns, "kind": "namespaces"}),
            );
        }
    }

    match verb {
        "get" => {
            let name = name.clone().unwrap_or_default();
            match st.objects.get(&key(&res.group, &res.plural, &nskey, &name)) {
                Some(s) => respond(200, &s.obj),
                None => status(
                    404,
                    "NotFound",
                    &format!("{} \"{name}\" not found", resource_name(&res)),
                    json!({"name": name, "group": res.group, "kind": res.plural}),
                ),
            }
        }
        "watch" => {
            let filter = WatchFilter {
                group: res.group.clone(),
                plural: res.plural.clone(),
                namespace: ns.clone(),
                selector: parse_selector(query.get("labelSelector")),
            };
            watch(st, &res, filter, &query)
        }
        "list" => {
            let selector = parse_selector(query.get("labelSelector"));
            let items: Vec<Value> = st
                .objects
                .iter()
                .filter(|(k, _)| k.0 == res.group && k.1 == res.plural)
                .filter(|(k, _)| ns.is_none() || k.2 == nskey)
                .filter(|(_, s)| selects(&selector, &s.obj["metadata"]["labels"]))
                .map(|(_, s)| s.obj.clone())
                .collect();
            respond(
                200,
                &json!({"kind": format!("{}List", res.kind),
                "apiVersion": if res.group.is_empty() { res.version.clone() } else { format!("{}/{}", res.group, res.version) },
                "metadata": {"resourceVersion": st.rv.to_string()}, "items": items}),
            )
        }
        "delete" => {
            let name = name.clone().unwrap_or_default();
            let k = key(&res.group, &res.plural, &nskey, &name);
            if !st.objects.contains_key(&k) {
                return status(
                    404,
                    "NotFound",
                    &format!("{} \"{name}\" not found", resource_name(&res)),
                    json!({"name": name, "group": res.group, "kind": res.plural}),
                );
            }
            if dry_run {
                return respond(
                    200,
                    &json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
                );
            }
            if has_finalizers(&st.objects[&k].obj) || res.plural == "namespaces" {
                // Graceful deletion: mark it; it goes when its last finalizer is removed
                // (a Namespace: when nothing with finalizers is left in it).
                mark_deleted(st, &k);
                let obj = st.objects[&k].obj.clone();
                st.writes.push(format!("DELETE {path}"));
                if res.plural == "namespaces" {
                    let inside: Vec<Key> =
                        st.objects.keys().filter(|o| o.2 == name).cloned().collect();
                    for inner in inside {
                        if has_finalizers(&st.objects[&inner].obj) {
                            mark_deleted(st, &inner);
                        } else {
                            remove(st, &inner);
                        }
                    }
                }
                collect(st);
                return respond(200, &obj);
            }
            let removed = remove(st, &k);
            if res.plural == "customresourcedefinitions" {
                let g = removed.obj["spec"]["group"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let p = removed.obj["spec"]["names"]["plural"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let custom: Vec<Key> = st
                    .objects
                    .keys()
                    .filter(|k| k.0 == g && k.1 == p)
                    .cloned()
                    .collect();
                for k in custom {
                    remove(st, &k);
                }
                st.resources.retain(|r| !(r.group == g && r.plural == p));
            }
            st.writes.push(format!("DELETE {path}"));
            respond(
                200,
                &json!({"kind": "Status", "apiVersion": "v1", "status": "Success",
                "details": {"name": name, "kind": res.plural}}),
            )
        }
        _ => {
            let content_type = parts
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let Ok(body) = serde_json::from_slice::<Value>(body) else {
                return status(
                    400,
                    "BadRequest",
                    "the request body is not JSON (the double only reads JSON, which kube sends)",
                    json!({}),
                );
            };
            let manager = query
                .get("fieldManager")
                .cloned()
                .unwrap_or_else(|| "unknown".into());
            let force = query.get("force").is_some_and(|v| v == "true");
            let name = name
                .clone()
                .or_else(|| body["metadata"]["name"].as_str().map(str::to_string))
                .unwrap_or_default();
            let exists = st
                .objects
                .contains_key(&key(&res.group, &res.plural, &nskey, &name));
            let result = match verb {
                "patch" if subresource_status => {
                    if content_type.starts_with("application/apply-patch") {
                        return status(
                            415,
                            "UnsupportedMediaType",
                            "the double patches /status with merge patches only",
                            json!({}),
                        );
                    }
                    let patch = json!({"status": body["status"].clone()});
                    update(
                        st,
                        &res,
                        ns.as_deref(),
                        &name,
                        patch,
                        &manager,
                        dry_run,
                        true,
                    )
                }
                "patch" if content_type.starts_with("application/apply-patch") => apply(
                    st,
                    &res,
                    ns.as_deref(),
                    &name,
                    body,
                    &manager,
                    force,
                    dry_run,
                ),
                "patch" => update(
                    st,
                    &res,
                    ns.as_deref(),
                    &name,
                    body,
                    &manager,
                    dry_run,
                    true,
                ),
                "update" => update(
                    st,
                    &res,
                    ns.as_deref(),
                    &name,
                    body,
                    &manager,
                    dry_run,
                    false,
                ),
                _ if exists => Err(status(
                    409,
                    "AlreadyExists",
                    &format!("{} \"{name}\" already exists", resource_name(&res)),
                    json!({"name": name, "group": res.group, "kind": res.plural}),
                )),
                _ => apply(
                    st,
                    &res,
                    ns.as_deref(),
                    &name,
                    body,
                    &manager,
                    false,
                    dry_run,
                ),
            };
            match result {
                Ok((obj, changed)) => {
                    if changed && !dry_run {
                        st.writes.push(format!("{} {path}", parts.method));
                    }
                    respond(if exists { 200 } else { 201 }, &obj)
                }
                Err(r) => r,
            }
        }
    }
}

fn resource_list(st: &State, group: &str, version: &str) -> Response<Body> {
    let resources: Vec<Value> = st
        .resources
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .map(|r| {
            json!({"name": r.plural, "singularName": r.kind.to_lowercase(),
            "namespaced": r.namespaced, "kind": r.kind, "verbs": VERBS})
        })
        .collect();
    if resources.is_empty() {
        return not_found_resource();
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    respond(
        200,
        &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
        "resources": resources}),
    )
}

/// The owned field paths of an object and their values.
fn fields(obj: &Value) -> BTreeMap<Field, Value> {
    let mut out = BTreeMap::new();
    let Some(map) = obj.as_object() else {
        return out;
    };
    for (k, v) in map {
        match k.as_str() {
            "apiVersion" | "kind" | "status" => {}
            "metadata" => {
                for part in ["labels", "annotations"] {
                    if let Some(m) = v[part].as_object() {
                        for (lk, lv) in m {
                            out.insert(
                                vec!["metadata".into(), part.into(), lk.clone()],
                                lv.clone(),
                            );
                        }
                    }
                }
            }
            _ => match v.as_object() {
                Some(m) if !m.is_empty() => {
                    for (k2, v2) in m {
                        out.insert(vec![k.clone(), k2.clone()], v2.clone());
                    }
                }
                _ => {
                    out.insert(vec![k.clone()], v.clone());
                }
            },
        }
    }
    out
}

fn get_field<'a>(obj: &'a Value, f: &Field) -> Option<&'a Value> {
    f.iter().try_fold(obj, |v, k| v.get(k))
}

fn set_field(obj: &mut Value, f: &Field, value: Value) {
    let mut cur = obj;
    for (i, k) in f.iter().enumerate() {
        if !cur.is_object() {
            *cur = json!({});
        }
        let map = cur.as_object_mut().unwrap();
        if i + 1 == f.len() {
            map.insert(k.clone(), value);
            return;
        }
        cur = map.entry(k.clone()).or_insert_with(|| json!({}));
    }
}

fn remove_field(obj: &mut Value, f: &Field) {
    let (last, parent) = f.split_last().unwrap();
    let mut cur = obj;
    for k in parent {
        match cur.get_mut(k) {
            Some(v) => cur = v,
            None => return,
        }
    }
    if let Some(m) = cur.as_object_mut() {
        m.remove(last);
    }
}

fn dotted(f: &Field) -> String {
    format!(".{}", f.join("."))
}

fn api_version(res: &Res) -> String {
    if res.group.is_empty() {
        res.version.clone()
    } else {
        format!("{}/{}", res.group, res.version)
    }
}

fn invalid(res: &Res, name: &str, field: &str, message: &str) -> Response<Body> {
    status(
        422,
        "Invalid",
        &format!("{} \"{name}\" is invalid: {field}: {message}", res.kind),
        json!({"name": name, "group": res.group, "kind": res.kind,
            "causes": [{"reason": "FieldValueInvalid", "message": message, "field": field}]}),
    )
}

/// Immutable fields: 422 when `new` changes one `old` has.
fn check_immutable(res: &Res, name: &str, old: &Value, new: &Value) -> Result<(), Response<Body>> {
    let immutable: &[&[&str]] = match (res.group.as_str(), res.kind.as_str()) {
        ("", "Service") => &[&["spec", "clusterIP"]],
        ("batch", "Job") => &[&["spec", "template"], &["spec", "selector"]],
        ("apps", "Deployment" | "StatefulSet" | "DaemonSet") => &[&["spec", "selector"]],
        _ => &[],
    };
    for path in immutable {
        let f: Field = path.iter().map(|s| s.to_string()).collect();
        if let (Some(o), Some(n)) = (get_field(old, &f), get_field(new, &f)) {
            if o != n && !n.is_null() {
                return Err(invalid(
                    res,
                    name,
                    &f.join("."),
                    &format!("Invalid value: {n}: field is immutable"),
                ));
            }
        }
    }
    Ok(())
}

fn check_identity(
    res: &Res,
    ns: Option<&str>,
    name: &str,
    body: &Value,
) -> Result<(), Response<Body>> {
    if body["apiVersion"].as_str() != Some(api_version(res).as_str())
        || body["kind"].as_str() != Some(res.kind.as_str())
    {
        return Err(status(
            400,
            "BadRequest",
            &format!(
                "the API version or kind in the body ({} {}) does not match the resource ({} {})",
                body["apiVersion"],
                body["kind"],
                api_version(res),
                res.kind
            ),
            json!({}),
        ));
    }
    if let Some(n) = body["metadata"]["name"].as_str() {
        if n != name {
            return Err(invalid(
                res,
                name,
                "metadata.name",
                &format!("Invalid value: \"{n}\": field is immutable"),
            ));
        }
    }
    if let (Some(body_ns), Some(ns)) = (body["metadata"]["namespace"].as_str(), ns) {
        if body_ns != ns {
            return Err(status(400, "BadRequest", "the namespace of the provided object does not match the namespace sent on the request", json!({})));
        }
    }
    Ok(())
}

/// Server-side apply (also used for create).
#[allow(clippy::too_many_arguments)]
fn apply(
    st: &mut State,
    res: &Res,
    ns: Option<&str>,
    name: &str,
    body: Value,
    manager: &str,
    force: bool,
    dry_run: bool,
) -> Result<(Value, bool), Response<Body>> {
    check_identity(res, ns, name, &body)?;
    let k = key(&res.group, &res.plural, ns.unwrap_or(""), name);
    let applied = fields(&body);
    let existing = st.objects.get(&k).cloned();
    let (mut obj, mut owners) = match &existing {
        Some(s) => (s.obj.clone(), s.owners.clone()),
        None => (
            json!({"apiVersion": api_version(res), "kind": res.kind,
            "metadata": {"name": name}}),
            BTreeMap::new(),
        ),
    };
    if let Some(old) = &existing {
        let mut conflicts = Vec::new();
        for (f, v) in &applied {
            if let Some((owner, _)) = owners.get(f) {
                if owner != manager && get_field(&old.obj, f) != Some(v) {
                    conflicts.push((f.clone(), owner.clone()));
                }
            }
        }
        if !conflicts.is_empty() && !force {
            let causes: Vec<Value> = conflicts
                .iter()
                .map(|(f, m)| json!({"reason": "FieldManagerConflict",
                    "message": format!("conflict with \"{m}\" using {}", api_version(res)), "field": dotted(f)}))
                .collect();
            let list: Vec<String> = conflicts
                .iter()
                .map(|(f, m)| {
                    format!(
                        "conflict with \"{m}\" using {}: {}",
                        api_version(res),
                        dotted(f)
                    )
                })
                .collect();
            return Err(status(
                409,
                "Conflict",
                &format!(
                    "Apply failed with {} conflict{}: {}",
                    conflicts.len(),
                    if conflicts.len() == 1 { "" } else { "s" },
                    list.join("\n")
                ),
                json!({"name": name, "group": res.group, "kind": res.plural, "causes": causes}),
            ));
        }
        // Fields this manager applied before and leaves out now.
        let dropped: Vec<Field> = owners
            .iter()
            .filter(|(f, (m, op))| m == manager && *op == "Apply" && !applied.contains_key(*f))
            .map(|(f, _)| f.clone())
            .collect();
        for f in dropped {
            owners.remove(&f);
            remove_field(&mut obj, &f);
        }
    }
    for (f, v) in &applied {
        set_field(&mut obj, f, v.clone());
        owners.insert(f.clone(), (manager.to_string(), "Apply"));
    }
    if let Some(ns) = ns {
        obj["metadata"]["namespace"] = json!(ns);
    }
    finish(st, res, &k, existing, obj, owners, dry_run)
}

/// Merge patch (`merge=true`) or PUT: the changed fields move to `manager`.
#[allow(clippy::too_many_arguments)]
fn update(
    st: &mut State,
    res: &Res,
    ns: Option<&str>,
    name: &str,
    body: Value,
    manager: &str,
    dry_run: bool,
    merge: bool,
) -> Result<(Value, bool), Response<Body>> {
    let k = key(&res.group, &res.plural, ns.unwrap_or(""), name);
    let Some(existing) = st.objects.get(&k).cloned() else {
        return Err(status(
            404,
            "NotFound",
            &format!("{} \"{name}\" not found", resource_name(res)),
            json!({"name": name, "group": res.group, "kind": res.plural}),
        ));
    };
    if let Some(rv) = body["metadata"]["resourceVersion"].as_str() {
        if Some(rv) != existing.obj["metadata"]["resourceVersion"].as_str() {
            return Err(status(409, "Conflict", &format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                resource_name(res)), json!({"name": name, "group": res.group, "kind": res.plural})));
        }
    } else if !merge {
        return Err(invalid(
            res,
            name,
            "metadata.resourceVersion",
            "Invalid value: 0x0: must be specified for an update",
        ));
    }
    let mut obj = if merge {
        let mut o = existing.obj.clone();
        merge_patch(&mut o, &body);
        o
    } else {
        check_identity(res, ns, name, &body)?;
        let mut o = body.clone();
        o["metadata"] = existing.obj["metadata"].clone();
        for part in ["labels", "annotations"] {
            o["metadata"][part] = body["metadata"][part].clone();
        }
        o["status"] = existing.obj["status"].clone();
        o
    };
    if let Some(n) = obj["metadata"]["name"].as_str() {
        if n != name {
            return Err(invalid(
                res,
                name,
                "metadata.name",
                &format!("Invalid value: \"{n}\": field is immutable"),
            ));
        }
    }
    if let Some(ns) = ns {
        obj["metadata"]["namespace"] = json!(ns);
    }
    let before = fields(&existing.obj);
    let after = fields(&obj);
    let mut owners = existing.owners.clone();
    for (f, v) in &after {
        if before.get(f) != Some(v) {
            owners.insert(f.clone(), (manager.to_string(), "Update"));
        }
    }
    owners.retain(|f, _| after.contains_key(f));
    finish(st, res, &k, Some(existing), obj, owners, dry_run)
}

fn merge_patch(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

/// Checks immutables, bumps versions, simulates controllers, renders managedFields and
/// stores (unless dry run). Returns the object and whether it changed.
fn finish(
    st: &mut State,
    res: &Res,
    k: &Key,
    existing: Option<Stored>,
    mut obj: Value,
    owners: BTreeMap<Field, (String, &'static str)>,
    dry_run: bool,
) -> Result<(Value, bool), Response<Body>> {
    let name = k.3.clone();
    if let Some(old) = &existing {
        check_immutable(res, &name, &old.obj, &obj)?;
        // Clients cannot set or clear the deletion mark, and cannot add finalizers to an
        // object being deleted.
        obj["metadata"]["deletionTimestamp"] = old.obj["metadata"]["deletionTimestamp"].clone();
        if !old.obj["metadata"]["deletionTimestamp"].is_null() {
            let before = finalizers(&old.obj);
            if finalizers(&obj).iter().any(|f| !before.contains(f)) {
                return Err(invalid(
                    res,
                    &name,
                    "metadata.finalizers",
                    "Forbidden: no new finalizers can be added if the object is being deleted",
                ));
            }
        }
        if obj["metadata"]["deletionTimestamp"].is_null() {
            if let Some(m) = obj["metadata"].as_object_mut() {
                m.remove("deletionTimestamp");
            }
        }
    } else if res.namespaced
        && st
            .objects
            .get(&key("", "namespaces", "", &k.2))
            .is_some_and(|n| !n.obj["metadata"]["deletionTimestamp"].is_null())
    {
        return Err(status(
            403,
            "Forbidden",
            &format!(
                "{} \"{name}\" is forbidden: unable to create new content in namespace {} because it is being terminated",
                resource_name(res),
                k.2
            ),
            json!({"name": name, "group": res.group, "kind": res.plural}),
        ));
    }
    let spec_of = |o: &Value| {
        let mut o = o.clone();
        if let Some(m) = o.as_object_mut() {
            m.remove("metadata");
            m.remove("status");
        }
        o
    };
    let changed = match &existing {
        None => true,
        Some(old) => {
            let strip = |o: &Value| {
                let mut o = o.clone();
                o["metadata"]
                    .as_object_mut()
                    .map(|m| m.remove("managedFields"));
                o
            };
            strip(&old.obj) != strip(&obj) || old.owners != owners
        }
    };
    if !changed {
        return Ok((existing.map(|e| e.obj).unwrap_or_default(), false));
    }
    let generation = match &existing {
        None => 1,
        Some(old) => {
            let g = old.obj["metadata"]["generation"].as_i64().unwrap_or(1);
            if spec_of(&old.obj) != spec_of(&obj) {
                g + 1
            } else {
                g
            }
        }
    };
    if existing.is_none() {
        st.uid += 1;
        obj["metadata"]["uid"] = json!(format!("00000000-0000-0000-0000-{:012}", st.uid));
        obj["metadata"]["creationTimestamp"] = json!("2025-01-01T00:00:00Z");
    }
    obj["metadata"]["generation"] = json!(generation);
    obj["metadata"]["resourceVersion"] = json!(if dry_run {
        st.rv.to_string()
    } else {
        st.next_rv()
    });
    simulate(st, res, &mut obj, existing.is_none());
    let mut by_manager: BTreeMap<(String, &str), Value> = BTreeMap::new();
    for (f, (m, op)) in &owners {
        let entry = by_manager
            .entry((m.clone(), op))
            .or_insert_with(|| json!({}));
        let path: Field = f.iter().map(|s| format!("f:{s}")).collect();
        set_field(entry, &path, json!({}));
    }
    obj["metadata"]["managedFields"] = Value::Array(
        by_manager
            .into_iter()
            .map(|((m, op), fields)| {
                json!({"manager": m, "operation": op, "apiVersion": api_version(res),
                "time": "2025-01-01T00:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": fields})
            })
            .collect(),
    );
    if !dry_run {
        if existing.is_none() && res.plural == "customresourcedefinitions" {
            let delay = st.establish_delay;
            st.pending.push((Instant::now() + delay, k.clone()));
        }
        let old_labels = existing.map(|e| e.obj["metadata"]["labels"].clone());
        let type_ = if old_labels.is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        st.objects.insert(
            k.clone(),
            Stored {
                obj: obj.clone(),
                owners,
            },
        );
        record(st, type_, k, obj.clone(), old_labels);
        collect(st);
    }
    Ok((obj, true))
}

/// When `DELETE` marks an object with finalizers (or a Namespace).
const DELETION_TIME: &str = "2025-01-01T00:00:02Z";

fn finalizers(obj: &Value) -> Vec<String> {
    obj["metadata"]["finalizers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn has_finalizers(obj: &Value) -> bool {
    !finalizers(obj).is_empty()
}

/// Removes what is marked for deletion and has no finalizers left, then Namespaces marked
/// for deletion that are empty by now.
fn collect(st: &mut State) {
    let done: Vec<Key> = st
        .objects
        .iter()
        .filter(|(k, s)| {
            k.1 != "namespaces"
                && !s.obj["metadata"]["deletionTimestamp"].is_null()
                && !has_finalizers(&s.obj)
        })
        .map(|(k, _)| k.clone())
        .collect();
    for k in done {
        remove(st, &k);
    }
    let terminating: Vec<String> = st
        .objects
        .iter()
        .filter(|(k, s)| k.1 == "namespaces" && !s.obj["metadata"]["deletionTimestamp"].is_null())
        .map(|(k, _)| k.3.clone())
        .collect();
    for ns in terminating {
        if !st.objects.keys().any(|k| k.2 == ns) {
            remove(st, &key("", "namespaces", "", &ns));
        }
    }
}

/// Marks a stored object (which must exist) for deletion, once, as one change.
fn mark_deleted(st: &mut State, k: &Key) {
    if !st.objects[k].obj["metadata"]["deletionTimestamp"].is_null() {
        return;
    }
    let rv = st.next_rv();
    let Some(stored) = st.objects.get_mut(k) else {
        return;
    };
    let m = &mut stored.obj["metadata"];
    m["deletionTimestamp"] = json!(DELETION_TIME);
    m["deletionGracePeriodSeconds"] = json!(0);
    m["resourceVersion"] = json!(rv);
    if k.1 == "namespaces" {
        stored.obj["status"]["phase"] = json!("Terminating");
    }
    let obj = stored.obj.clone();
    let labels = obj["metadata"]["labels"].clone();
    record(st, "MODIFIED", k, obj, Some(labels));
}

/// What the controllers would do, at once.
fn simulate(st: &State, res: &Res, obj: &mut Value, created: bool) {
    let generation = obj["metadata"]["generation"].clone();
    let broken = obj["spec"]["template"]["spec"]["containers"]
        .as_array()
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["image"].as_str().is_some_and(|i| i.ends_with(":broken")))
        });
    let replicas = obj["spec"]["replicas"].as_i64().unwrap_or(1);
    let ready = if broken { 0 } else { replicas };
    match (res.group.as_str(), res.kind.as_str()) {
        ("apps", "Deployment") => {
            obj["status"] = json!({"observedGeneration": generation, "replicas": replicas,
                "updatedReplicas": replicas, "readyReplicas": ready, "availableReplicas": ready,
                "conditions": [{"type": "Available", "status": if broken { "False" } else { "True" }},
                               {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}]});
        }
        ("apps", "StatefulSet") => {
            obj["status"] = json!({"observedGeneration": generation, "replicas": replicas,
                "updatedReplicas": replicas, "readyReplicas": ready, "currentReplicas": replicas});
        }
        ("apps", "DaemonSet") => {
            obj["status"] = json!({"observedGeneration": generation, "desiredNumberScheduled": 1,
                "updatedNumberScheduled": 1, "numberAvailable": if broken { 0 } else { 1 }});
        }
        ("batch", "Job") if broken => {
            obj["status"] = json!({"failed": 1, "conditions": [{"type": "Failed", "status": "True",
                "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]});
        }
        ("batch", "Job") => {
            obj["status"] =
                json!({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]});
        }
        ("", "Service") if obj["spec"]["clusterIP"].is_null() => {
            obj["spec"]["clusterIP"] = json!(format!("10.96.0.{}", 10 + st.rv % 200));
        }
        ("", "Namespace") => obj["status"] = json!({"phase": "Active"}),
        ("apiextensions.k8s.io", "CustomResourceDefinition") if created => {
            obj["status"] = json!({"conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts"},
                {"type": "Established", "status": "False", "reason": "Installing"}]});
        }
        _ => {}
    }
}
