//! deploy/: every YAML parses, the puller runs locked down, the examples are valid objects.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_norway::Value;
use tresor::api::{ArtifactSync, TrustPolicy};

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            yaml_files(&p, out);
        } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
            out.push(p);
        }
    }
}

/// (file, document) for every non-empty document under deploy/.
fn documents() -> Vec<(PathBuf, Value)> {
    let mut files = Vec::new();
    yaml_files(&deploy(), &mut files);
    assert!(files.len() >= 8, "found only {files:?}");
    let mut docs = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for d in serde_norway::Deserializer::from_str(&text) {
            let v = Value::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            if !v.is_null() {
                docs.push((f.clone(), v));
            }
        }
    }
    docs
}

fn find<'a>(docs: &'a [(PathBuf, Value)], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .map(|(_, v)| v)
        .find(|v| v["kind"] == kind && v["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} under deploy/"))
}

#[test]
fn every_document_is_an_object_and_the_kustomization_lists_existing_files() {
    let docs = documents();
    for (file, v) in &docs {
        assert!(
            v["apiVersion"].is_string(),
            "{}: no apiVersion",
            file.display()
        );
        assert!(v["kind"].is_string(), "{}: no kind", file.display());
        if v["kind"] != "Kustomization" && v["kind"] != "Component" {
            assert!(
                v["metadata"]["name"].is_string(),
                "{}: no metadata.name",
                file.display()
            );
        }
    }
    let k = find_kustomization(&docs);
    let resources = k["resources"].as_sequence().unwrap();
    for r in resources {
        let path = deploy().join(r.as_str().unwrap());
        assert!(
            path.is_file(),
            "kustomization lists missing {}",
            path.display()
        );
    }
    assert_eq!(k["namespace"], "tresor-system");
}

fn find_kustomization(docs: &[(PathBuf, Value)]) -> &Value {
    docs.iter()
        .find(|(f, _)| f == &deploy().join("kustomization.yaml"))
        .map(|(_, v)| v)
        .unwrap()
}

#[test]
fn puller_deployment_is_locked_down() {
    let docs = documents();
    let d = find(&docs, "Deployment", "tresor-puller");
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(pod["serviceAccountName"], "tresor-puller");
    let containers = pod["containers"].as_sequence().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["capabilities"]["drop"][0], "ALL");
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    for what in ["requests", "limits"] {
        for res in ["cpu", "memory"] {
            assert!(
                c["resources"][what][res].is_string(),
                "resources.{what}.{res} missing"
            );
        }
    }
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    let ports: Vec<_> = c["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(ports.contains(&"metrics"), "{ports:?}");
    // The cache lives on an emptyDir, since the root filesystem is read-only.
    let cache = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "cache")
        .unwrap();
    assert!(cache["emptyDir"].is_mapping());
    // Room for 4 concurrent stagings of 512 MiB, and the node's disk is accounted for.
    assert_eq!(cache["emptyDir"]["sizeLimit"], "3Gi");
    for what in ["requests", "limits"] {
        assert!(
            c["resources"][what]["ephemeral-storage"].is_string(),
            "resources.{what}.ephemeral-storage missing"
        );
    }
    // The downward API gives the Lease holder and Event instance their names.
    let env = c["env"].as_sequence().unwrap();
    for (name, field) in [
        ("POD_NAMESPACE", "metadata.namespace"),
        ("POD_NAME", "metadata.name"),
    ] {
        let var = env.iter().find(|e| e["name"] == name).unwrap();
        assert_eq!(var["valueFrom"]["fieldRef"]["fieldPath"], field, "{name}");
    }
}

#[test]
fn rbac_is_least_privilege_for_the_puller_itself() {
    let docs = documents();
    let role = find(&docs, "ClusterRole", "tresor-puller");
    let rules = role["rules"].as_sequence().unwrap();
    let verbs_for = |resource: &str| -> Vec<String> {
        rules
            .iter()
            .filter(|r| {
                r["resources"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .any(|x| x == resource)
            })
            .flat_map(|r| r["verbs"].as_sequence().unwrap().clone())
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    // Issue 17: what the code calls, nothing more (each rule's comment names the code).
    assert_eq!(
        verbs_for("artifactsyncs"),
        ["list", "watch", "patch"],
        "patch for the finalizer only"
    );
    assert_eq!(verbs_for("artifactsyncs/status"), ["patch"]);
    assert_eq!(verbs_for("artifactsyncs/finalizers"), Vec::<String>::new());
    assert_eq!(verbs_for("trustpolicies"), ["list", "watch"]);
    assert_eq!(verbs_for("secrets"), ["get"], "never list or watch Secrets");
    assert_eq!(verbs_for("events"), ["create", "patch"]);
    for r in rules {
        if r["resources"][0] == "events" {
            assert_eq!(
                r["apiGroups"].as_sequence().unwrap(),
                &[Value::from("events.k8s.io")],
                "kube-runtime's Recorder writes events.k8s.io only"
            );
        }
    }
    for (resource, why) in [
        (
            "customresourcedefinitions",
            "tresor-puller-watch covers CRDs",
        ),
        (
            "serviceaccounts",
            "impersonation is bound per tenant namespace",
        ),
        ("configmaps", "inventories are written per tenant namespace"),
    ] {
        assert_eq!(verbs_for(resource), Vec::<String>::new(), "{why}");
    }
    for r in rules {
        for v in r["verbs"].as_sequence().unwrap() {
            assert_ne!(v, "*", "no wildcard verbs in tresor-puller");
        }
    }
    // What the puller needs in a tenant namespace: bound there with a RoleBinding, never
    // cluster-wide by the base.
    let tenant = find(&docs, "ClusterRole", "tresor-puller-tenant");
    assert_eq!(tenant["rules"][0]["resources"][0], "serviceaccounts");
    assert_eq!(tenant["rules"][0]["verbs"][0], "impersonate");
    assert_eq!(tenant["rules"][1]["resources"][0], "configmaps");
    let base: Vec<&Value> = docs
        .iter()
        .filter(|(f, _)| f.parent() == Some(deploy().as_path()))
        .map(|(_, v)| v)
        .collect();
    for v in &base {
        if v["kind"] == "ClusterRoleBinding" {
            assert_ne!(v["roleRef"]["name"], "tresor-puller-tenant", "{v:?}");
            assert_ne!(v["roleRef"]["name"], "tresor-apply", "{v:?}");
        }
        assert_ne!(
            v["metadata"]["name"], "tresor-apply",
            "the base grants no apply rights"
        );
    }
    let example = std::fs::read_to_string(deploy().join("examples/tenant.yaml")).unwrap();
    assert!(example.contains("name: tresor-puller-tenant"), "{example}");
    // Watching applied kinds (drift): list and watch only, never Secrets.
    let watch = find(&docs, "ClusterRole", "tresor-puller-watch");
    for r in watch["rules"].as_sequence().unwrap() {
        assert_eq!(r["verbs"].as_sequence().unwrap().len(), 2, "{r:?}");
        assert_eq!(r["verbs"][0], "list");
        assert_eq!(r["verbs"][1], "watch");
        for resource in r["resources"].as_sequence().unwrap() {
            assert_ne!(resource, "secrets", "the puller never lists Secrets");
            assert_ne!(
                resource, "*",
                "no wildcard resources in tresor-puller-watch"
            );
        }
    }
    let binding = find(&docs, "ClusterRoleBinding", "tresor-puller-watch");
    assert_eq!(binding["subjects"][0]["name"], "tresor-puller");
    // Leases only in its own namespace, and only its own Lease beyond create.
    let lease = find(&docs, "Role", "tresor-puller-leader-election");
    assert_eq!(lease["metadata"]["namespace"], "tresor-system");
    assert_eq!(lease["rules"][0]["resources"][0], "leases");
    assert_eq!(lease["rules"][0]["resourceNames"][0], "tresor-puller");
    assert_eq!(lease["rules"][1]["verbs"].as_sequence().unwrap().len(), 1);
    assert_eq!(lease["rules"][1]["verbs"][0], "create");
}

/// Issue 12 point 7: deploy/ runs the puller locked down; the opt-out removes exactly the
/// two flags.
#[test]
fn tenants_are_confined_by_default_with_a_component_to_opt_out() {
    let docs = documents();
    let d = find(&docs, "Deployment", "tresor-puller");
    let args: Vec<&str> = d["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        args[args.len() - 2..],
        [
            "--default-service-account=tresor-tenant",
            "--no-cross-namespace"
        ],
        "the unconfined component removes the last two arguments"
    );
    let component =
        std::fs::read_to_string(deploy().join("components/unconfined/kustomization.yaml")).unwrap();
    assert!(component.contains("value: --no-cross-namespace"));
    assert!(component.contains("value: --default-service-account=tresor-tenant"));
}

#[test]
fn network_policy_allows_dns_api_registries_and_metrics_only() {
    let docs = documents();
    let np = find(&docs, "NetworkPolicy", "tresor-puller");
    let ingress = np["spec"]["ingress"].as_sequence().unwrap();
    assert_eq!(ingress.len(), 1);
    assert_eq!(ingress[0]["ports"][0]["port"], 8080);
    let egress_ports: Vec<u64> = np["spec"]["egress"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|e| e["ports"].as_sequence().unwrap().clone())
        .map(|p| p["port"].as_u64().unwrap())
        .collect();
    assert_eq!(egress_ports, [53, 53, 5353, 5353, 443, 6443]);
    // DNS to any destination: NodeLocal DNSCache and Cloud DNS are no kube-dns pods.
    let dns = &np["spec"]["egress"][0];
    assert_eq!(dns["ports"][0]["port"], 53);
    assert!(dns.get("to").is_none(), "{dns:?}");
}

#[test]
fn examples_deserialize_into_the_rust_types_and_validate() {
    let text = std::fs::read_to_string(deploy().join("examples/artifactsync.yaml")).unwrap();
    let sync: ArtifactSync = serde_norway::from_str(&text).unwrap();
    sync.validate().unwrap();
    assert_eq!(
        sync.spec.source_ref.semver.as_deref(),
        Some(">=1.0.0 <2.0.0")
    );
    assert!(sync.spec.prune && sync.spec.wait && sync.spec.rollback);

    let text = std::fs::read_to_string(deploy().join("examples/trustpolicy.yaml")).unwrap();
    let policy: TrustPolicy = serde_norway::from_str(&text).unwrap();
    policy.validate().unwrap();
    assert_eq!(policy.spec.authorities.len(), 2);
    // The puller ships no Sigstore root: a keyless authority must name one.
    let keyless = policy.spec.authorities[1].keyless.as_ref().unwrap();
    assert_eq!(
        keyless.trusted_root_ref.as_ref().unwrap().name,
        "sigstore-trusted-root"
    );

    // In a namespace labelled env=prod the policy covers the example: both must hold.
    let labels: BTreeMap<String, String> = [("env".to_string(), "prod".to_string())]
        .into_iter()
        .collect();
    let req = tresor::api::effective_requirements(&[policy], &sync, &labels).unwrap();
    let sources: Vec<_> = req
        .constraints()
        .iter()
        .map(|c| c.source.as_str())
        .collect();
    assert_eq!(
        sources,
        ["ArtifactSync team-a/app", "TrustPolicy/acme-production"]
    );
}

/// `kubectl kustomize deploy/` when kubectl is installed (it is not required).
#[test]
fn kustomize_renders_the_base_when_kubectl_is_available() {
    let out = match std::process::Command::new("kubectl")
        .args(["kustomize"])
        .arg(deploy())
        .output()
    {
        Ok(out) => out,
        Err(_) => {
            eprintln!("kubectl not installed: skipping kubectl kustomize");
            return;
        }
    };
    assert!(
        out.status.success(),
        "kubectl kustomize failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "kind: CustomResourceDefinition",
        "name: artifactsyncs.tresor.dev",
        "kind: Deployment",
        "kind: NetworkPolicy",
        "namespace: tresor-system",
        "app.kubernetes.io/part-of: tresor",
    ] {
        assert!(rendered.contains(needle), "rendered base lacks {needle:?}");
    }
}

/// The webhooks component (docs/webhooks.md), rendered with the cluster's kubectl
/// (`scripts/cluster.sh path kubectl`): the puller gets `--webhook-addr` and the secret file
/// from the Secret `tresor-webhook`, its port is named, the Service `tresor-webhooks`
/// reaches it and the NetworkPolicy lets it in.
#[test]
fn the_webhooks_component_wires_args_secret_service_and_ingress() {
    let kubectl = std::process::Command::new(deploy().join("../scripts/cluster.sh"))
        .args(["path", "kubectl"])
        .output()
        .unwrap();
    assert!(
        kubectl.status.success(),
        "{}",
        String::from_utf8_lossy(&kubectl.stderr)
    );
    let kubectl = String::from_utf8(kubectl.stdout).unwrap();
    // kustomize takes relative paths only: a copy of deploy/ beside the kustomization.
    let work = tempfile::tempdir().unwrap();
    let copied = std::process::Command::new("cp")
        .arg("-r")
        .arg(deploy())
        .arg(work.path().join("deploy"))
        .status()
        .unwrap();
    assert!(copied.success());
    std::fs::write(
        work.path().join("kustomization.yaml"),
        "resources: [deploy]\ncomponents: [deploy/components/webhooks]\n",
    )
    .unwrap();
    let out = std::process::Command::new(kubectl.trim())
        .arg("kustomize")
        .arg(work.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl kustomize failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs: Vec<Value> =
        serde_norway::Deserializer::from_str(&String::from_utf8(out.stdout).unwrap())
            .map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap())
            .collect();
    let one = |kind: &str, name: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
            .clone()
    };
    let d = one("Deployment", "tresor-puller");
    let pod = &d["spec"]["template"]["spec"];
    let args: Vec<&str> = pod["containers"][0]["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(args.contains(&"--webhook-addr=:9292"), "{args:?}");
    assert!(
        args.contains(&"--webhook-secret-file=/etc/tresor/webhook/secret"),
        "{args:?}"
    );
    let volume = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "webhook-secret")
        .unwrap();
    assert_eq!(volume["secret"]["secretName"], "tresor-webhook");
    let service = one("Service", "tresor-webhooks");
    assert_eq!(service["metadata"]["namespace"], "tresor-system");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "webhooks");
    let ports = pod["containers"][0]["ports"].as_sequence().unwrap();
    assert!(ports
        .iter()
        .any(|p| p["name"] == "webhooks" && p["containerPort"] == 9292));
    let np = one("NetworkPolicy", "tresor-puller");
    let ingress: Vec<u64> = np["spec"]["ingress"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|i| i["ports"][0]["port"].as_u64().unwrap())
        .collect();
    assert_eq!(ingress, [8080, 9292]);
}

/// Every ArtifactSync and TrustPolicy resource written out in the README and docs/ is one the
/// puller accepts as written: it decodes, validates, and no field of it is silently dropped (a
/// misspelt field would be ignored by the API server's pruning and by the puller). Policy
/// files for the CLI (the same kind, with keys by `path` or a `trustedRoot` file) are not
/// resources.
#[test]
fn resources_shown_in_the_docs_decode_validate_and_keep_every_field() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        // The generated reference lists fields, not resources.
        if path.extension().is_some_and(|e| e == "md") && !path.ends_with("crd-reference.md") {
            files.push(path);
        }
    }
    files.sort();
    let mut checked = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let name = file.strip_prefix(root).unwrap().display().to_string();
        for (line, document) in tresor_documents(&text) {
            let at = format!("{name}:{line}");
            let written: serde_json::Value = serde_norway::from_str(&document)
                .unwrap_or_else(|e| panic!("{at}: not YAML: {e}\n{document}"));
            if is_cli_policy_file(&written) {
                continue;
            }
            let decoded = match written["kind"].as_str() {
                Some("ArtifactSync") => {
                    let sync: ArtifactSync = serde_json::from_value(written.clone())
                        .unwrap_or_else(|e| panic!("{at}: {e}"));
                    sync.validate().unwrap_or_else(|e| panic!("{at}: {e}"));
                    serde_json::to_value(&sync).unwrap()
                }
                Some("TrustPolicy") => {
                    let policy: TrustPolicy = serde_json::from_value(written.clone())
                        .unwrap_or_else(|e| panic!("{at}: {e}"));
                    policy.validate().unwrap_or_else(|e| panic!("{at}: {e}"));
                    serde_json::to_value(&policy).unwrap()
                }
                _ => continue,
            };
            if let Some(missing) = dropped_field(&written, &decoded, "") {
                panic!("{at}: field {missing} is not part of the resource\n{document}");
            }
            checked.push(at);
        }
    }
    assert!(checked.len() >= 6, "only {checked:?}");
}

/// The `apiVersion: tresor.dev/…` documents of a Markdown text, with the line each starts
/// on: inside fenced blocks (also heredocs in shell blocks), up to `---`, `EOF` or the fence.
fn tresor_documents(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (number, line) in text.lines().enumerate() {
        let end = line.starts_with("```") || line == "---" || line == "EOF";
        if end {
            found.extend(current.take());
            continue;
        }
        if line.starts_with("apiVersion: tresor.dev/") {
            found.extend(current.take());
            current = Some((number + 1, String::new()));
        }
        if let Some((_, document)) = &mut current {
            document.push_str(line);
            document.push('\n');
        }
    }
    found.extend(current);
    found
}

/// A TrustPolicy for `--policy FILE`: keys read from files, a trusted root from a file.
fn is_cli_policy_file(document: &serde_json::Value) -> bool {
    document["kind"] == "TrustPolicy"
        && document["spec"]["authorities"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| a["key"].get("path").is_some() || a["keyless"].get("trustedRoot").is_some())
}

/// The first key path of `written` that `decoded` lacks.
fn dropped_field(
    written: &serde_json::Value,
    decoded: &serde_json::Value,
    path: &str,
) -> Option<String> {
    match (written, decoded) {
        (serde_json::Value::Object(w), serde_json::Value::Object(d)) => {
            w.iter().find_map(|(key, value)| {
                let here = format!("{path}.{key}");
                match d.get(key) {
                    Some(inner) => dropped_field(value, inner, &here),
                    None => Some(here),
                }
            })
        }
        (serde_json::Value::Array(w), serde_json::Value::Array(d)) => w
            .iter()
            .zip(d)
            .enumerate()
            .find_map(|(i, (w, d))| dropped_field(w, d, &format!("{path}[{i}]"))),
        _ => None,
    }
}
