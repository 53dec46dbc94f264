//! The real control plane of `scripts/cluster.sh` (etcd, kube-apiserver,
//! kube-controller-manager): deploy/ installed server-side once per test process, a
//! namespace per test, and `tresor-puller` run as a process with its own ServiceAccount's
//! token, so deploy/rbac.yaml is what the puller really has.
//!
//! deploy/'s RBAC is installed under names with a hash of its content
//! ([`PullerIdentity`]): `tresor-puller-<hash>` and its roles. The cluster is shared by
//! test runs of other checkouts, whose deploy/ may grant more or other rights under the
//! plain names (server-side apply never deletes a binding a newer deploy/ dropped); a
//! copy of this checkout's RBAC under names of its own is exactly what this checkout
//! grants, whatever else was installed. The puller runs with the tenancy arguments of
//! deploy/deployment.yaml, and every test namespace is onboarded as
//! deploy/examples/tenant.yaml shows (see [`Cluster::namespace`]).
//!
//! Each test's puller reconciles only the ArtifactSyncs labelled with its namespace
//! (`--watch-label-selector`), so tests run in parallel on one cluster without taking each
//! other's syncs.

use std::io::{BufRead as _, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::{json, Value};
use tresor::api::ArtifactSync;

use super::TestRegistry;

/// Label every test sync carries; its puller selects on it.
pub const RUN_LABEL: &str = "tresor.test/run";

/// The cluster of `scripts/cluster.sh` with deploy/ installed.
pub struct Cluster {
    /// The admin kubeconfig (system:masters).
    pub kubeconfig: PathBuf,
    /// kubectl built with the server (`scripts/cluster.sh path kubectl`), or the machine's.
    pub kubectl: PathBuf,
    /// A kubeconfig holding a token of the puller's ServiceAccount as deploy/ sets it up
    /// ([`Cluster::deployed`]).
    pub puller_kubeconfig: PathBuf,
    /// The puller as deploy/ installs it: locked down.
    pub deployed: PullerIdentity,
    /// The puller as deploy/ with the Component deploy/components/unconfined installs it.
    pub unconfined: PullerIdentity,
    work: PathBuf,
}

/// A puller ServiceAccount with exactly the RBAC of one rendering of deploy/, under names
/// suffixed with a hash of that RBAC, and the tenancy arguments of its Deployment.
pub struct PullerIdentity {
    /// `-<hash>`, appended to every RBAC object and the ServiceAccount.
    pub suffix: String,
    /// The ServiceAccount in `tresor-system` (`tresor-puller-<hash>`).
    pub service_account: String,
    /// A kubeconfig with its token.
    pub kubeconfig: PathBuf,
    /// `--default-service-account…` and `--no-cross-namespace`, as the Deployment passes them.
    pub args: Vec<String>,
}

impl PullerIdentity {
    /// The name this identity's copy of deploy/'s role `name` has.
    pub fn role(&self, name: &str) -> String {
        format!("{name}{}", self.suffix)
    }
}

/// The puller's ServiceAccount in deploy/.
const PULLER_SA: &str = "tresor-puller";
const RBAC_KINDS: [&str; 4] = ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"];

/// The root of this checkout (deploy/, docs/, testdata/).
pub fn repo_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The cluster, checked once per process: running, deploy/ applied, CRDs established.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(Cluster::connect)
}

impl Cluster {
    fn connect() -> Self {
        let kubeconfig = std::env::var_os("TRESOR_CLUSTER_KUBECONFIG")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_dir().join(".tmp/cluster/admin.kubeconfig"));
        assert!(
            kubeconfig.exists(),
            "no test cluster ({} is missing): start it with `scripts/cluster.sh start` \
             (scripts/test.sh does this)",
            kubeconfig.display()
        );
        let kubectl = std::env::var_os("TRESOR_CLUSTER_KUBECTL")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("kubectl"));
        let work = std::env::temp_dir().join(format!("tresor-cluster-{}", std::process::id()));
        std::fs::create_dir_all(&work).unwrap();
        let placeholder = || PullerIdentity {
            suffix: String::new(),
            service_account: String::new(),
            kubeconfig: PathBuf::new(),
            args: Vec::new(),
        };
        let mut c = Self {
            kubeconfig,
            kubectl,
            puller_kubeconfig: PathBuf::new(),
            deployed: placeholder(),
            unconfined: placeholder(),
            work,
        };
        let base = c.render(&repo_dir().join("deploy"));
        c.install_deploy(&base);
        c.deployed = c.identity(&base);
        let overlay = repo_dir().join(format!(".tmp/unconfined-{}", std::process::id()));
        std::fs::create_dir_all(&overlay).unwrap();
        std::fs::write(
            overlay.join("kustomization.yaml"),
            "resources:\n  - ../../deploy\ncomponents:\n  - ../../deploy/components/unconfined\n",
        )
        .unwrap();
        let unconfined = c.render(&overlay);
        let _ = std::fs::remove_dir_all(&overlay);
        c.unconfined = c.identity(&unconfined);
        c.puller_kubeconfig = c.deployed.kubeconfig.clone();
        c
    }

    /// `kubectl kustomize DIR` as JSON objects.
    fn render(&self, dir: &Path) -> Vec<Value> {
        let yaml = self.kubectl_ok(&["kustomize", dir.to_str().unwrap()]);
        let mut objects = Vec::new();
        for d in serde_norway::Deserializer::from_str(&yaml) {
            let v = <Value as serde::Deserialize>::deserialize(d).unwrap();
            if !v.is_null() {
                objects.push(v);
            }
        }
        objects
    }

    /// `kubectl apply --server-side -f -` of `objects` as the test suite's field manager.
    fn apply_objects(&self, objects: &[Value]) {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
        self.apply_yaml(&list.to_string());
    }

    /// `kubectl apply --server-side -f -` of `text` (YAML or JSON) as the test suite's field
    /// manager, which must succeed.
    pub fn apply_yaml(&self, text: &str) {
        let out = self.apply_crds("-", Some(text));
        assert!(
            out.status.success(),
            "kubectl apply failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A copy of the RBAC of `rendered` (a rendering of deploy/) for a ServiceAccount of
    /// its own, every role and binding renamed with a hash of that RBAC; applied, with a
    /// token.
    fn identity(&self, rendered: &[Value]) -> PullerIdentity {
        use sha2::Digest as _;
        let rbac: Vec<&Value> = rendered
            .iter()
            .filter(|o| RBAC_KINDS.iter().any(|k| o["kind"] == *k))
            .collect();
        let hash = hex::encode(sha2::Sha256::digest(
            serde_json::to_vec(&rbac).unwrap().as_slice(),
        ));
        let suffix = format!("-{}", &hash[..10]);
        let service_account = format!("{PULLER_SA}{suffix}");
        let roles: Vec<String> = rbac
            .iter()
            .filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role")
            .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        let mut objects = vec![json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": service_account, "namespace": "tresor-system"},
        })];
        for object in rbac {
            let mut copy = object.clone();
            let name = copy["metadata"]["name"].as_str().unwrap().to_string();
            copy["metadata"]["name"] = json!(format!("{name}{suffix}"));
            if let Some(role) = copy["roleRef"]["name"].as_str().map(str::to_string) {
                if roles.contains(&role) {
                    copy["roleRef"]["name"] = json!(format!("{role}{suffix}"));
                }
            }
            let subjects = copy.get_mut("subjects").and_then(Value::as_array_mut);
            for subject in subjects.into_iter().flatten() {
                if subject["kind"] == "ServiceAccount" && subject["name"] == PULLER_SA {
                    subject["name"] = json!(service_account);
                }
            }
            objects.push(copy);
        }
        self.apply_objects(&objects);
        let args = rendered
            .iter()
            .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == PULLER_SA)
            .and_then(|d| d["spec"]["template"]["spec"]["containers"][0]["args"].as_array())
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .filter(|a| {
                a.starts_with("--default-service-account") || a.starts_with("--no-cross-namespace")
            })
            .map(str::to_string)
            .collect();
        PullerIdentity {
            kubeconfig: self.service_account_kubeconfig("tresor-system", &service_account),
            suffix,
            service_account,
            args,
        }
    }

    /// Applies the rendered deploy/ server-side, except its RBAC (see [`PullerIdentity`]),
    /// then waits for the CRDs.
    fn install_deploy(&self, rendered: &[Value]) {
        let objects: Vec<Value> = rendered
            .iter()
            .filter(|o| !RBAC_KINDS.iter().any(|k| o["kind"] == *k))
            .cloned()
            .collect();
        self.apply_objects(&objects);
        self.kubectl_ok(&[
            "wait",
            "--for",
            "condition=Established",
            "--timeout",
            "60s",
            "crd/artifactsyncs.tresor.dev",
            "crd/trustpolicies.tresor.dev",
        ]);
    }

    /// Applies the CRDs of `yaml` (a file, or `-` for `stdin`) server-side as the test
    /// suite's field manager, the one that installs deploy/ (so fields left out are removed).
    pub fn apply_crds(&self, yaml: &str, stdin: Option<&str>) -> std::process::Output {
        let mut child = Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args([
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager",
                "tresor-tests",
                "-f",
                yaml,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.kubectl.display()));
        if let Some(text) = stdin {
            use std::io::Write as _;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
        drop(child.stdin.take());
        child.wait_with_output().unwrap()
    }

    /// The CRDs this checkout generates (deploy/crds/crds.yaml).
    pub fn crds_file(&self) -> PathBuf {
        repo_dir().join("deploy/crds/crds.yaml")
    }

    /// kubectl with the admin kubeconfig.
    pub fn kubectl(&self, args: &[&str]) -> std::process::Output {
        Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.kubectl.display()))
    }

    /// kubectl that must succeed; its stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// A kubeconfig for `namespace/name` with a token from the TokenRequest API (2 h).
    pub fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> PathBuf {
        let token =
            self.kubectl_ok(&["create", "token", name, "-n", namespace, "--duration", "2h"]);
        let server = self.kubectl_ok(&[
            "config",
            "view",
            "--minify",
            "-o",
            "jsonpath={.clusters[0].cluster.server}",
        ]);
        let ca = self.kubectl_ok(&[
            "config",
            "view",
            "--minify",
            "--raw",
            "-o",
            "jsonpath={.clusters[0].cluster.certificate-authority}",
        ]);
        let path = self.work.join(format!("{namespace}-{name}.kubeconfig"));
        let config = json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "c", "cluster": {"server": server, "certificate-authority": ca}}],
            "users": [{"name": name, "user": {"token": token.trim()}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": name, "namespace": namespace}}],
            "current-context": "c",
        });
        std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
        path
    }

    /// An admin client.
    pub async fn client(&self) -> Client {
        let config = kube::config::Kubeconfig::read_from(&self.kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(
            config,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .unwrap();
        Client::try_from(config).unwrap()
    }

    /// A new namespace `<prefix>-<pid>-<n>` for one test, labelled with its own name and
    /// onboarded as deploy/examples/tenant.yaml shows, for [`Cluster::deployed`]: the
    /// ServiceAccount `tresor-tenant` with `edit`, and the puller's RoleBinding.
    pub async fn namespace(&self, prefix: &str) -> String {
        let name = self.bare_namespace(prefix).await;
        self.onboard(&name, true);
        name
    }

    /// Applies deploy/examples/tenant.yaml to `namespace` (instead of team-a), for the
    /// deployed identity's copy of the roles; without `tenant_rights`, the ServiceAccount
    /// `tresor-tenant` gets no RoleBinding.
    pub fn onboard(&self, namespace: &str, tenant_rights: bool) {
        let text = std::fs::read_to_string(repo_dir().join("deploy/examples/tenant.yaml"))
            .unwrap()
            .replace("team-a", namespace);
        let mut objects = Vec::new();
        for d in serde_norway::Deserializer::from_str(&text) {
            let mut v = <Value as serde::Deserialize>::deserialize(d).unwrap();
            if v.is_null() {
                continue;
            }
            let for_tenant = v["subjects"][0]["name"] == "tresor-tenant";
            if v["kind"] == "RoleBinding" && for_tenant && !tenant_rights {
                continue;
            }
            if v["roleRef"]["name"] == "tresor-puller-tenant" {
                v["roleRef"]["name"] = json!(self.deployed.role("tresor-puller-tenant"));
            }
            let subjects = v.get_mut("subjects").and_then(Value::as_array_mut);
            for subject in subjects.into_iter().flatten() {
                if subject["name"] == PULLER_SA {
                    subject["name"] = json!(self.deployed.service_account);
                }
            }
            objects.push(v);
        }
        self.apply_objects(&objects);
    }

    /// A new namespace `<prefix>-<pid>-<n>`, labelled with its own name, nothing in it.
    pub async fn bare_namespace(&self, prefix: &str) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let ns: Namespace = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {RUN_LABEL: name}},
        }))
        .unwrap();
        Api::<Namespace>::all(self.client().await)
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
        name
    }

    /// Starts `tresor-puller` as deploy/ runs it ([`Cluster::deployed`]: its RBAC, its
    /// tenancy arguments) for the syncs labelled `RUN_LABEL=run`, with `extra` arguments.
    pub fn puller(&self, run: &str, extra: &[&str]) -> PullerProcess {
        self.puller_as(&self.puller_kubeconfig, run, extra)
    }

    /// Like [`Self::puller`], as deploy/ with deploy/components/unconfined runs it.
    pub fn puller_unconfined(&self, run: &str, extra: &[&str]) -> PullerProcess {
        self.start_puller(
            &self.unconfined.kubeconfig,
            &self.unconfined.args,
            run,
            &[],
            extra,
        )
    }

    /// Like [`Self::puller`] with another identity (deploy/'s tenancy arguments).
    pub fn puller_as(&self, kubeconfig: &Path, run: &str, extra: &[&str]) -> PullerProcess {
        self.start_puller(kubeconfig, &self.deployed.args, run, &[], extra)
    }

    /// Like [`Self::puller`] as the admin, with its Lease (`--leader-elect`) in
    /// `lease_namespace` instead of tresor-system: leader election apart from other tests.
    pub fn puller_leasing_in(
        &self,
        lease_namespace: &str,
        run: &str,
        extra: &[&str],
    ) -> PullerProcess {
        self.start_puller(
            &self.kubeconfig,
            &self.deployed.args,
            run,
            &[("POD_NAMESPACE", lease_namespace)],
            extra,
        )
    }

    fn start_puller(
        &self,
        kubeconfig: &Path,
        tenancy: &[String],
        run: &str,
        env: &[(&str, &str)],
        extra: &[&str],
    ) -> PullerProcess {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let dir = self.work.join(format!("puller-{run}-{n}"));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("puller.log");
        let child = Command::new(env!("CARGO_BIN_EXE_tresor-puller"))
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAMESPACE", "tresor-system")
            .env("POD_NAME", format!("puller-{run}-{n}"))
            .envs(env.iter().copied())
            .env("DOCKER_CONFIG", dir.join("docker"))
            .args([
                "--metrics-addr",
                "127.0.0.1:0",
                "--health-addr",
                "127.0.0.1:0",
            ])
            .env("NO_COLOR", "1")
            .args(["--log-format", "text", "-v", "--timeout", "10s"])
            .arg("--cache-dir")
            .arg(dir.join("cache"))
            .args(["--watch-label-selector", &format!("{RUN_LABEL}={run}")])
            .args(tenancy)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        PullerProcess {
            child,
            log,
            name: format!("puller-{run}-{n}"),
        }
    }
}

/// A running `tresor-puller`; killed when dropped.
pub struct PullerProcess {
    child: Child,
    log: PathBuf,
    /// Its identity in leader election (POD_NAME).
    pub name: String,
}

impl PullerProcess {
    /// The last lines of its log (for failure messages).
    pub fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Whether its log has a line containing `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        std::fs::File::open(&self.log).is_ok_and(|f| {
            std::io::BufReader::new(f)
                .lines()
                .any(|l| l.is_ok_and(|l| l.contains(needle)))
        })
    }

    /// How many lines of its log contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        std::fs::File::open(&self.log).map_or(0, |f| {
            std::io::BufReader::new(f)
                .lines()
                .filter(|l| l.as_ref().is_ok_and(|l| l.contains(needle)))
                .count()
        })
    }

    /// Whether it is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// The addresses it serves `/healthz` `/readyz` and `/metrics` on (both started on
    /// port 0; read from its start-up log line), waiting up to 20 s for them.
    pub fn addrs(&self) -> (String, String) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut text = String::new();
            if let Ok(mut f) = std::fs::File::open(&self.log) {
                let _ = f.read_to_string(&mut text);
            }
            let field = |line: &str, key: &str| {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(key))
                    .map(str::to_string)
            };
            if let Some(line) = text.lines().find(|l| l.contains("serving /healthz")) {
                return (
                    field(line, "health=").unwrap(),
                    field(line, "metrics=").unwrap(),
                );
            }
            assert!(
                Instant::now() < deadline,
                "puller did not log its addresses; log:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills it now (SIGKILL: no graceful release of anything).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PullerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One test's world: its namespace, an admin client, its puller's label.
pub struct Tenant {
    pub cluster: &'static Cluster,
    pub ns: String,
    pub client: Client,
    pub work: tempfile::TempDir,
}

impl Tenant {
    /// A new namespace on the cluster (deploy/ installed).
    pub async fn new(prefix: &str) -> Self {
        let cluster = cluster();
        let ns = cluster.namespace(prefix).await;
        Self {
            cluster,
            client: cluster.client().await,
            ns,
            work: tempfile::tempdir().unwrap(),
        }
    }

    /// The ArtifactSyncs of this namespace.
    pub fn syncs(&self) -> Api<ArtifactSync> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// A new namespace like [`Tenant::new`] whose ServiceAccount `tresor-tenant` has no
    /// rights (the puller may still impersonate it there).
    pub async fn without_rights(prefix: &str) -> Self {
        let cluster = cluster();
        let ns = cluster.bare_namespace(prefix).await;
        cluster.onboard(&ns, false);
        Self {
            cluster,
            client: cluster.client().await,
            ns,
            work: tempfile::tempdir().unwrap(),
        }
    }

    /// The puller for this tenant's syncs (as deploy/ runs it: locked down).
    pub fn puller(&self, extra: &[&str]) -> PullerProcess {
        self.cluster.puller(&self.ns, extra)
    }

    /// The puller for this tenant's syncs, as deploy/components/unconfined runs it.
    pub fn puller_unconfined(&self, extra: &[&str]) -> PullerProcess {
        self.cluster.puller_unconfined(&self.ns, extra)
    }

    /// Creates ArtifactSync `name` with `spec`, labelled for this tenant's puller.
    pub async fn create_sync(&self, name: &str, spec: Value) -> ArtifactSync {
        let sync: ArtifactSync = serde_json::from_value(json!({
            "apiVersion": "tresor.dev/v1alpha1", "kind": "ArtifactSync",
            "metadata": {"name": name, "namespace": self.ns, "labels": {RUN_LABEL: self.ns}},
            "spec": spec,
        }))
        .unwrap();
        self.syncs()
            .create(&PostParams::default(), &sync)
            .await
            .unwrap()
    }

    /// Creates ArtifactSync `name` in this namespace from raw JSON (so that specs the Rust
    /// types refuse can be sent), labelled for the puller of `run`; the server's answer.
    pub async fn create_raw_sync(
        &self,
        name: &str,
        run: &str,
        spec: Value,
        dry_run: bool,
    ) -> Result<DynamicObject, kube::Error> {
        let resource = kube::api::ApiResource::erase::<ArtifactSync>(&());
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "tresor.dev/v1alpha1", "kind": "ArtifactSync",
            "metadata": {"name": name, "namespace": self.ns, "labels": {RUN_LABEL: run}},
            "spec": spec,
        }))
        .unwrap();
        Api::<DynamicObject>::namespaced_with(self.client.clone(), &self.ns, &resource)
            .create(
                &PostParams {
                    dry_run,
                    ..PostParams::default()
                },
                &object,
            )
            .await
    }

    /// Merge-patches the spec of ArtifactSync `name`.
    pub async fn patch_sync(&self, name: &str, spec: Value) {
        self.syncs()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": spec })),
            )
            .await
            .unwrap();
    }

    /// Any object of this namespace (or cluster-scoped with `namespaced == false`) as JSON.
    pub async fn get(&self, api_version: &str, kind: &str, name: &str) -> Option<Value> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
        let (resource, caps) = kube::discovery::pinned_kind(&self.client, &gvk)
            .await
            .unwrap();
        let api: Api<DynamicObject> = match caps.scope {
            kube::discovery::Scope::Namespaced => {
                Api::namespaced_with(self.client.clone(), &self.ns, &resource)
            }
            kube::discovery::Scope::Cluster => Api::all_with(self.client.clone(), &resource),
        };
        api.get_opt(name)
            .await
            .unwrap()
            .map(|o| serde_json::to_value(o).unwrap())
    }

    /// A ConfigMap of this namespace.
    pub async fn config_map(&self, name: &str) -> Option<Value> {
        self.get("v1", "ConfigMap", name).await
    }

    /// Pushes `files` to `registry` as `repo:tag` (a new repo unless `repo` is given);
    /// returns (`oci://host/repo`, digest).
    pub fn push(
        &self,
        registry: &TestRegistry,
        repo: Option<&str>,
        tag: &str,
        files: &[(&str, &str)],
    ) -> (String, String) {
        static N: AtomicU32 = AtomicU32::new(0);
        let tree = self
            .work
            .path()
            .join(format!("tree-{}", N.fetch_add(1, Ordering::SeqCst)));
        std::fs::create_dir_all(&tree).unwrap();
        for (rel, text) in files {
            let path = tree.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        // A given repo is a new version under an existing tag: the tag moves.
        let overwrite = repo.is_some();
        let repo = repo.map_or_else(|| registry.repo(&self.ns), str::to_string);
        let mut push = registry.tresor(&[
            "push",
            tree.to_str().unwrap(),
            &format!("{repo}:{tag}"),
            "--format",
            "json",
        ]);
        if overwrite {
            push.arg("--overwrite");
        }
        let out = super::json_of(push);
        (repo, out["digest"].as_str().unwrap().to_string())
    }

    /// Polls ArtifactSync `name` until `check` holds for it (at most `within`), failing with
    /// its status and the puller's log otherwise.
    pub async fn wait_sync(
        &self,
        puller: &PullerProcess,
        name: &str,
        within: Duration,
        what: &str,
        check: impl Fn(&ArtifactSync) -> bool,
    ) -> ArtifactSync {
        let deadline = Instant::now() + within;
        loop {
            let sync = self.syncs().get_opt(name).await.unwrap();
            if let Some(sync) = sync.as_ref().filter(|s| check(s)) {
                return sync.clone();
            }
            if Instant::now() > deadline {
                panic!(
                    "{name}: not {what} within {within:?}; status: {}\npuller log:\n{}",
                    serde_json::to_string_pretty(&sync.and_then(|s| s.status)).unwrap(),
                    puller.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Tenant {
    /// Polls ArtifactSync `name` until Ready is False; returns it with the condition's
    /// reason and message.
    pub async fn wait_not_ready(
        &self,
        puller: &PullerProcess,
        name: &str,
        within: Duration,
        what: &str,
    ) -> (ArtifactSync, String, String) {
        let sync = self
            .wait_sync(puller, name, within, what, |s| {
                condition(s, "Ready").is_some_and(|c| c.0 == "False")
            })
            .await;
        let (_, reason, message) = condition(&sync, "Ready").unwrap();
        (sync, reason, message)
    }

    /// Pushes `files` to a new repository of `registry` as tag `v`, starts this tenant's
    /// puller and creates ArtifactSync `app` following it unsigned (prune on) every
    /// `interval`; returns (`oci://host/repo`, digest, puller) once it is applied.
    pub async fn applied_unsigned(
        &self,
        registry: &TestRegistry,
        files: &[(&str, &str)],
        interval: &str,
    ) -> (String, String, PullerProcess) {
        let (repo, digest) = self.push(registry, None, "v", files);
        let puller = self.puller(&[]);
        self.create_sync("app", unsigned_spec(&repo, "v", interval))
            .await;
        self.wait_sync(&puller, "app", Duration::from_secs(60), "applied", |s| {
            ready_at(s, &digest)
        })
        .await;
        (repo, digest, puller)
    }
}

impl Drop for Tenant {
    /// Deletes the test's namespace (its puller, declared later, is already gone): releases
    /// its ArtifactSyncs' finalizers first, or the namespace would stay Terminating.
    fn drop(&mut self) {
        let Ok(out) = std::process::Command::new(&self.cluster.kubectl)
            .arg("--kubeconfig")
            .arg(&self.cluster.kubeconfig)
            .args(["-n", &self.ns, "get", "artifactsyncs", "-o", "name"])
            .output()
        else {
            return;
        };
        for sync in String::from_utf8_lossy(&out.stdout).lines() {
            self.cluster.kubectl(&[
                "-n",
                &self.ns,
                "patch",
                sync,
                "--type",
                "merge",
                "-p",
                r#"{"metadata":{"finalizers":null}}"#,
            ]);
        }
        self.cluster
            .kubectl(&["delete", "namespace", &self.ns, "--wait=false"]);
    }
}

/// (status, reason, message) of condition `type_`, if present.
pub fn condition(sync: &ArtifactSync, type_: &str) -> Option<(String, String, String)> {
    sync.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| {
            (
                c.status.as_str().to_string(),
                c.reason.clone(),
                c.message.clone(),
            )
        })
}

/// Whether condition `type_` has `status` and `reason` for the current generation.
pub fn has(sync: &ArtifactSync, type_: &str, status: &str, reason: &str) -> bool {
    let current = sync
        .status
        .as_ref()
        .is_some_and(|s| s.observed_generation == sync.metadata.generation);
    current && condition(sync, type_).is_some_and(|(s, r, _)| s == status && r == reason)
}

/// Whether `sync` is Ready for its current generation with `digest` applied.
pub fn ready_at(sync: &ArtifactSync, digest: &str) -> bool {
    applied(sync) == Some(digest)
        && sync
            .status
            .as_ref()
            .is_some_and(|s| s.observed_generation == sync.metadata.generation)
        && condition(sync, "Ready").is_some_and(|c| c.0 == "True")
}

/// The last applied digest of `sync`.
pub fn applied(sync: &ArtifactSync) -> Option<&str> {
    sync.status.as_ref()?.last_applied_digest.as_deref()
}

/// `GET http://addr/path` (HTTP/1.1, connection closed by the server): status code and body.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::Write as _;
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// Polls `check` every 200 ms until it holds, for at most `within`.
pub async fn eventually<F: std::future::Future<Output = bool>>(
    within: Duration,
    what: &str,
    mut check: impl FnMut() -> F,
) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "not {what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The password of every key pair [`Tenant::key`] writes.
pub const KEY_PASSWORD: &str = "cluster-test";

impl Tenant {
    /// A new cosign key pair; its public key as Secret `name` (`cosign.pub`) in this
    /// namespace. Returns the private key file.
    pub async fn key(&self, name: &str) -> PathBuf {
        let dir = self.work.path().join(format!("key-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let files = tresor::signing::keys::write_key_pair(&dir, KEY_PASSWORD.as_bytes()).unwrap();
        let pem = std::fs::read_to_string(&files.public_key).unwrap();
        let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": self.ns},
            "stringData": {"cosign.pub": pem},
        }))
        .unwrap();
        Api::<k8s_openapi::api::core::v1::Secret>::namespaced(self.client.clone(), &self.ns)
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
        files.private_key
    }

    /// Signs `repo@digest` with `key` (appended to earlier signatures).
    pub fn sign(&self, registry: &TestRegistry, repo: &str, digest: &str, key: &Path) {
        let mut sign = registry.tresor(&[
            "sign",
            &format!("{repo}@{digest}"),
            "--key",
            key.to_str().unwrap(),
        ]);
        sign.env("COSIGN_PASSWORD", KEY_PASSWORD);
        super::stdout_of(sign);
    }
}

/// A sync spec following `repo:tag` every `interval`, verified by the key in Secret
/// `key_secret`, pruning, over plain HTTP.
pub fn signed_spec(repo: &str, tag: &str, key_secret: &str, interval: &str) -> Value {
    json!({
        "url": repo, "ref": {"tag": tag}, "interval": interval, "insecure": true, "prune": true,
        "verify": {"authorities": [{"name": "release", "key": {"secretRef": {"name": key_secret}}}]},
    })
}

/// How long a test waits for the puller to get somewhere on a busy 2-core machine.
pub const SECONDS_30: Duration = Duration::from_secs(30);
/// The same, for what takes several cycles (deletion, rollbacks, CRDs).
pub const SECONDS_60: Duration = Duration::from_secs(60);

/// `metadata.resourceVersion` of an object read as JSON: equal before and after means
/// nothing wrote it.
pub fn resource_version(object: &Value) -> String {
    object["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A sync spec following `repo:tag` every `interval` without verification (the explicit
/// opt-out), pruning, over plain HTTP.
pub fn unsigned_spec(repo: &str, tag: &str, interval: &str) -> Value {
    json!({"url": repo, "ref": {"tag": tag}, "interval": interval, "insecure": true,
        "prune": true, "verify": {"allowUnsigned": true}})
}

/// A ConfigMap manifest.
pub fn config_map(name: &str, value: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  k: {value}\n")
}

/// A puller identity of one test whose API requests the server itself counts:
/// ServiceAccount `tresor-system/<name>` bound to the ClusterRoles deploy/rbac.yaml gives
/// `tresor-puller` (its own, the drift watches', and `tresor-apply`), and one FlowSchema
/// (API Priority and Fairness) per class of its requests, so that the server's
/// `apiserver_flowcontrol_dispatched_requests_total{flow_schema="<name>-<class>"}` counts
/// them. A request is in the first class that matches; the last class, `other`, is every
/// request but watches. Everything is deleted when dropped.
pub struct CountedIdentity {
    cluster: &'static Cluster,
    pub name: String,
    /// A kubeconfig with a token of the ServiceAccount.
    pub kubeconfig: PathBuf,
    classes: Vec<String>,
}

/// deploy/'s cluster-wide roles of the puller (the deployed identity's copies are bound).
const PULLER_ROLES: [&str; 2] = ["tresor-puller", "tresor-puller-watch"];

impl Cluster {
    /// A [`CountedIdentity`] for the onboarded tenant namespace `name` (see
    /// [`Cluster::namespace`]) with `classes`: (class, FlowSchema `resourceRules` item) in
    /// order of precedence. It has the deployed puller's rights, and what it does as the
    /// namespace's `tresor-tenant` (impersonated, deploy/'s `--default-service-account`)
    /// counts as its own: the server classifies a request by the user it impersonates.
    pub fn counted_identity(
        &'static self,
        name: &str,
        classes: &[(&str, Value)],
    ) -> CountedIdentity {
        self.kubectl_ok(&["-n", "tresor-system", "create", "serviceaccount", name]);
        let account = format!("tresor-system:{name}");
        for role in PULLER_ROLES {
            self.kubectl_ok(&[
                "create",
                "clusterrolebinding",
                &format!("{name}-{role}"),
                "--clusterrole",
                &self.deployed.role(role),
                "--serviceaccount",
                &account,
            ]);
        }
        // Impersonation of the tenant and the inventory, as deploy/examples/tenant.yaml
        // grants the puller (deleted with the namespace).
        self.kubectl_ok(&[
            "-n",
            name,
            "create",
            "rolebinding",
            &format!("counted-{name}"),
            "--clusterrole",
            &self.deployed.role("tresor-puller-tenant"),
            "--serviceaccount",
            &account,
        ]);
        let subject = json!([{"kind": "ServiceAccount",
            "serviceAccount": {"name": name, "namespace": "tresor-system"}},
            {"kind": "ServiceAccount",
            "serviceAccount": {"name": "tresor-tenant", "namespace": name}}]);
        let everything_but_watches = json!({
            "resourceRules": [{"verbs": ["get", "list", "create", "update", "patch", "delete",
                "deletecollection"], "apiGroups": ["*"], "resources": ["*"],
                "namespaces": ["*"], "clusterScope": true}],
            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
        });
        let mut rules: Vec<(String, Value)> = classes
            .iter()
            .map(|(class, rule)| (class.to_string(), json!({"resourceRules": [rule]})))
            .collect();
        rules.push(("other".into(), everything_but_watches));
        let mut identity = CountedIdentity {
            cluster: self,
            name: name.to_string(),
            kubeconfig: PathBuf::new(),
            classes: Vec::new(),
        };
        // Before the service accounts' own FlowSchema (9000), after the system ones.
        for (n, (class, mut rule)) in rules.into_iter().enumerate() {
            rule["subjects"] = subject.clone();
            let schema = format!("{name}-{class}");
            let object = json!({
                "apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "FlowSchema",
                "metadata": {"name": schema},
                "spec": {"priorityLevelConfiguration": {"name": "workload-low"},
                    "matchingPrecedence": 1000 + n, "distinguisherMethod": {"type": "ByUser"},
                    "rules": [rule]},
            });
            let out = self.apply_crds("-", Some(&object.to_string()));
            assert!(
                out.status.success(),
                "FlowSchema {schema}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            identity.classes.push(schema);
        }
        // In effect once the server's APF controller has seen them.
        let deadline = Instant::now() + Duration::from_secs(30);
        for schema in &identity.classes {
            while !self
                .kubectl_ok(&[
                    "get",
                    "flowschema",
                    schema,
                    "-o",
                    "jsonpath={.status.conditions}",
                ])
                .contains("Dangling")
            {
                assert!(
                    Instant::now() < deadline,
                    "FlowSchema {schema} not in effect"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        identity.kubeconfig = self.service_account_kubeconfig("tresor-system", name);
        identity
    }
}

impl CountedIdentity {
    /// The requests of `class` so far, as the server counts them.
    pub fn requests(&self, class: &str) -> u64 {
        let schema = format!("{}-{class}", self.name);
        assert!(self.classes.contains(&schema), "no class {class}");
        self.counts()[&schema]
    }

    /// Requests per class (FlowSchema name → count).
    fn counts(&self) -> std::collections::BTreeMap<String, u64> {
        let metrics = self.cluster.kubectl_ok(&["get", "--raw", "/metrics"]);
        self.classes
            .iter()
            .map(|schema| {
                let series = format!(
                    "apiserver_flowcontrol_dispatched_requests_total{{flow_schema=\"{schema}\","
                );
                let count = metrics
                    .lines()
                    .filter(|l| l.starts_with(&series))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum::<f64>();
                (schema.clone(), count as u64)
            })
            .collect()
    }

    /// All its requests so far but watches, as the server counts them.
    pub fn total(&self) -> u64 {
        self.counts().values().sum()
    }

    /// A client with this identity.
    pub async fn client(&self) -> Client {
        let config = kube::config::Kubeconfig::read_from(&self.kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(
            config,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .unwrap();
        Client::try_from(config).unwrap()
    }
}

impl Drop for CountedIdentity {
    fn drop(&mut self) {
        for schema in &self.classes {
            self.cluster.kubectl(&[
                "delete",
                "flowschema",
                schema,
                "--ignore-not-found",
                "--wait=false",
            ]);
        }
        for role in PULLER_ROLES {
            self.cluster.kubectl(&[
                "delete",
                "clusterrolebinding",
                &format!("{}-{role}", self.name),
                "--ignore-not-found",
                "--wait=false",
            ]);
        }
        self.cluster.kubectl(&[
            "-n",
            "tresor-system",
            "delete",
            "serviceaccount",
            &self.name,
            "--ignore-not-found",
            "--wait=false",
        ]);
    }
}
