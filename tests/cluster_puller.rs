//! The puller's registry access, content selection, deletion and leases against the real
//! kube-apiserver of `scripts/cluster.sh` (tests/common/cluster.rs): each test has its own
//! namespace and `tresor-puller` process with the ServiceAccount token of deploy/rbac.yaml;
//! artifacts are in the real local registries (plain 127.0.0.1:5001, basic auth :5002, TLS
//! :5003), or, for a registry that trickles its blobs, in the in-process fake registry.
//!
//! Ported from the API double (issue 11): `spec.pullSecretRef` (also the legacy
//! `.dockercfg`), `spec.caSecretRef`, `spec.path`, keyless authorities with a trusted root
//! Secret, the puller's and the sync's timeouts, deletion with the finalizer (prune, no
//! prune, suspended, impersonated, the whole namespace) and the Lease.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::cluster::{
    applied, condition, config_map, eventually, has, ready_at, resource_version, unsigned_spec,
    Tenant, SECONDS_30, SECONDS_60,
};
use common::fake_registry::{Behaviour, Content, FakeRegistry};
use common::TestRegistry;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use tresor::api::ArtifactSync;
use tresor::artifact::format::{Descriptor, ImageManifest, OCI_MANIFEST_MEDIA_TYPE};
use tresor::digest::Digest;
use tresor::kube::LABEL_NAME;
use tresor::puller::{LeaseLock, FINALIZER};
use tresor::reference::Reference;
use tresor::registry::{RegistryOptions, Repository};

const DOCKER_CONFIG_JSON: &str = "kubernetes.io/dockerconfigjson";
const GHA_ISSUER: &str = "https://token.actions.githubusercontent.com";

fn two_config_maps() -> [(&'static str, String); 2] {
    [
        ("a.yaml", config_map("a", "one")),
        ("b.yaml", config_map("b", "two")),
    ]
}

fn files<'a>(f: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    f.iter().map(|(n, t)| (*n, t.as_str())).collect()
}

/// `unsigned_spec` (prune on, interval 2 s) with `extra` fields set.
fn spec_with(repo: &str, tag: &str, extra: Value) -> Value {
    let mut spec = unsigned_spec(repo, tag, "2s");
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    spec
}

/// Creates or replaces Secret `name` of `type_` with `data` (key → raw bytes).
async fn secret(t: &Tenant, name: &str, type_: &str, data: &[(&str, &[u8])]) {
    use base64::Engine as _;
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                json!(base64::engine::general_purpose::STANDARD.encode(v)),
            )
        })
        .collect();
    let object: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": t.ns},
        "type": type_, "data": data,
    }))
    .unwrap();
    let api = Api::<Secret>::namespaced(t.client.clone(), &t.ns);
    // The type of a Secret cannot change: delete and create.
    if api.get_opt(name).await.unwrap().is_some() {
        api.delete(name, &DeleteParams::default()).await.unwrap();
        eventually(SECONDS_30, "the old Secret is gone", || async {
            api.get_opt(name).await.unwrap().is_none()
        })
        .await;
    }
    api.create(&PostParams::default(), &object).await.unwrap();
}

/// A `.dockerconfigjson` for `host` with `user:password`.
fn docker_config(host: &str, user: &str, password: &str) -> Vec<u8> {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    serde_json::to_vec(&json!({"auths": {host: {"auth": auth}}})).unwrap()
}

/// (type, reason, note) of the Events in the tenant's namespace about ArtifactSync `name`.
async fn events(t: &Tenant, name: &str) -> Vec<(String, String, String)> {
    Api::<k8s_openapi::api::events::v1::Event>::namespaced(t.client.clone(), &t.ns)
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| {
            (
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default(),
            )
        })
        .collect()
}

/// Whether Ready is False with `reason` (for the current generation) and its message
/// contains `needle`.
fn refused_with(s: &ArtifactSync, reason: &str, needle: &str) -> bool {
    has(s, "Ready", "False", reason)
        && condition(s, "Ready").is_some_and(|(_, _, m)| m.contains(needle))
}

/// A pull Secret is read every cycle: a missing one, one of another type, one for another
/// registry and a wrong password each say what is wrong (naming the Secret, never a
/// password) and apply nothing; fixing the Secret alone, without a spec
/// change, lets the next cycle pull. A legacy `kubernetes.io/dockercfg` Secret works too.
#[tokio::test]
async fn pull_secret_gives_credentials_and_is_reread_every_cycle() {
    let t = Tenant::new("pull-secret").await;
    let registry = TestRegistry::auth();
    let (repo, digest) = t.push(&registry, None, "v1", &files(&two_config_maps()));
    let user = registry.user.clone().unwrap();
    let password = registry.password.clone().unwrap();
    let puller = t.puller(&[]);
    t.create_sync(
        "shop",
        spec_with(&repo, "v1", json!({"pullSecretRef": {"name": "regcred"}})),
    )
    .await;
    let wait = |what: &'static str, reason: &'static str, needle: String| {
        let (t, puller) = (&t, &puller);
        async move {
            let sync = t
                .wait_sync(puller, "shop", SECONDS_30, what, |s| {
                    refused_with(s, reason, &needle)
                })
                .await;
            condition(&sync, "Ready").unwrap().2
        }
    };

    // The Secret does not exist yet.
    let message = wait(
        "missing its Secret",
        "SecretNotFound",
        format!("{}/regcred", t.ns),
    )
    .await;
    assert!(message.contains("spec.pullSecretRef"), "{message}");

    // Not a pull secret.
    secret(
        &t,
        "regcred",
        "Opaque",
        &[("password", password.as_bytes())],
    )
    .await;
    let message = wait("refusing Opaque", "SecretInvalid", "\"Opaque\"".into()).await;
    assert!(message.contains(DOCKER_CONFIG_JSON), "{message}");

    // (The right type without its key cannot exist: the server refuses such a Secret.)
    // Credentials for another registry only.
    let elsewhere = docker_config("registry.example", &user, &password);
    secret(
        &t,
        "regcred",
        DOCKER_CONFIG_JSON,
        &[(".dockerconfigjson", &elsewhere)],
    )
    .await;
    wait(
        "no credentials for the registry",
        "SecretInvalid",
        registry.host.clone(),
    )
    .await;

    // A wrong password: the registry's 401, naming the Secret, never the password.
    let wrong = docker_config(&registry.host, &user, "wrong-password-123");
    secret(
        &t,
        "regcred",
        DOCKER_CONFIG_JSON,
        &[(".dockerconfigjson", &wrong)],
    )
    .await;
    wait(
        "unauthorized",
        "Unauthorized",
        format!("pull secret {}/regcred", t.ns),
    )
    .await;
    assert!(t.config_map("a").await.is_none(), "nothing applied");

    // The password is fixed in the Secret only (no spec change): the next cycle pulls.
    let right = docker_config(&registry.host, &user, &password);
    secret(
        &t,
        "regcred",
        DOCKER_CONFIG_JSON,
        &[(".dockerconfigjson", &right)],
    )
    .await;
    let sync = t
        .wait_sync(&puller, "shop", SECONDS_30, "applied", |s| {
            ready_at(s, &digest)
        })
        .await;
    assert_eq!(t.config_map("a").await.unwrap()["data"]["k"], "one");
    let published = format!(
        "{}\n{:?}",
        serde_json::to_string(&sync.status).unwrap(),
        events(&t, "shop").await
    );
    assert!(!published.contains("wrong-password-123"), "{published}");
    assert!(!published.contains(&password), "{published}");

    // The legacy format (`.dockercfg`: the `auths` map alone).
    let (repo2, digest2) = t.push(
        &registry,
        None,
        "v1",
        &[("c.yaml", &config_map("c", "legacy"))],
    );
    let config: Value = serde_json::from_slice(&right).unwrap();
    let legacy = serde_json::to_vec(&config["auths"]).unwrap();
    secret(
        &t,
        "old",
        "kubernetes.io/dockercfg",
        &[(".dockercfg", &legacy)],
    )
    .await;
    t.create_sync(
        "legacy",
        spec_with(&repo2, "v1", json!({"pullSecretRef": {"name": "old"}})),
    )
    .await;
    t.wait_sync(&puller, "legacy", SECONDS_60, "applied", |s| {
        ready_at(s, &digest2)
    })
    .await;
    assert_eq!(t.config_map("c").await.unwrap()["data"]["k"], "legacy");
}

/// Against the TLS registry: without its CA the pull fails naming the certificate; a CA
/// Secret without `ca.crt` is refused naming the key; with it the artifact is applied.
#[tokio::test]
async fn ca_secret_adds_the_registry_ca_and_without_it_tls_fails_clearly() {
    let t = Tenant::new("ca-secret").await;
    let registry = TestRegistry::tls();
    let (repo, digest) = t.push(&registry, None, "v1", &files(&two_config_maps()));
    let auth = docker_config(
        &registry.host,
        registry.user.as_deref().unwrap(),
        registry.password.as_deref().unwrap(),
    );
    secret(
        &t,
        "regcred",
        DOCKER_CONFIG_JSON,
        &[(".dockerconfigjson", &auth)],
    )
    .await;
    let puller = t.puller(&[]);
    // With the 2 s interval as the cycle's time limit: the certificate is refused at once,
    // not retried until the cycle times out.
    let mut spec = spec_with(&repo, "v1", json!({"pullSecretRef": {"name": "regcred"}}));
    spec.as_object_mut().unwrap().remove("insecure");
    t.create_sync("shop", spec).await;
    let sync = t
        .wait_sync(&puller, "shop", SECONDS_30, "unreachable", |s| {
            has(s, "Ready", "False", "RegistryUnreachable")
        })
        .await;
    let message = condition(&sync, "Ready").unwrap().2;
    assert!(message.to_lowercase().contains("certificate"), "{message}");
    assert!(t.config_map("a").await.is_none());

    // A CA Secret without ca.crt.
    secret(&t, "registry-ca", "Opaque", &[("tls.crt", b"x")]).await;
    t.patch_sync("shop", json!({"caSecretRef": {"name": "registry-ca"}}))
        .await;
    t.wait_sync(&puller, "shop", SECONDS_30, "missing ca.crt", |s| {
        refused_with(s, "SecretInvalid", "\"ca.crt\"")
    })
    .await;

    let ca_file = std::env::var("TRESOR_REGISTRY_CA")
        .unwrap_or_else(|_| format!("{}/.tmp/registry/ca.pem", env!("CARGO_MANIFEST_DIR")));
    let ca = std::fs::read(ca_file).unwrap();
    secret(&t, "registry-ca", "Opaque", &[("ca.crt", &ca)]).await;
    t.wait_sync(&puller, "shop", SECONDS_30, "applied", |s| {
        ready_at(s, &digest)
    })
    .await;
    assert_eq!(t.config_map("a").await.unwrap()["data"]["k"], "one");
}

fn inventory_names(sync: &ArtifactSync) -> Vec<String> {
    sync.status
        .as_ref()
        .map(|s| s.inventory.iter().map(|e| e.name.clone()).collect())
        .unwrap_or_default()
}

/// `spec.path` applies one directory of the artifact; a directory it lacks stalls with
/// nothing changed; another directory of the same digest is applied and the old one's
/// objects pruned; a path escaping the artifact is refused.
#[tokio::test]
async fn path_applies_one_directory_and_a_missing_one_stalls_with_nothing_applied() {
    let t = Tenant::new("path").await;
    let registry = TestRegistry::plain();
    let (repo, digest) = t.push(
        &registry,
        None,
        "v1",
        &[
            ("base/a.yaml", &config_map("a", "base")),
            ("prod/b.yaml", &config_map("b", "prod")),
        ],
    );
    let puller = t.puller(&[]);
    t.create_sync("shop", spec_with(&repo, "v1", json!({"path": "./prod/"})))
        .await;
    let sync = t
        .wait_sync(&puller, "shop", SECONDS_60, "applied", |s| {
            ready_at(s, &digest)
        })
        .await;
    assert_eq!(inventory_names(&sync), ["b"]);
    assert_eq!(t.config_map("b").await.unwrap()["data"]["k"], "prod");
    assert!(t.config_map("a").await.is_none());

    // A directory the artifact does not have: stalled, nothing changes in the cluster.
    t.patch_sync("shop", json!({"path": "staging"})).await;
    let sync = t
        .wait_sync(&puller, "shop", SECONDS_30, "stalled", |s| {
            has(s, "Stalled", "True", "PathNotFound")
        })
        .await;
    let message = condition(&sync, "Stalled").unwrap().2;
    assert!(message.contains("\"staging\""), "{message}");
    assert!(
        message.contains("top-level directories: base, prod"),
        "{message}"
    );
    assert!(t.config_map("b").await.is_some());
    assert!(t.config_map("a").await.is_none());

    // Another directory of the same digest: applied in full, the old one's objects pruned.
    t.patch_sync("shop", json!({"path": "base"})).await;
    // (Ready's reason may already be `Unchanged`: the prune of b, seen through the drift
    // watch, starts one more cycle at once.)
    let sync = t
        .wait_sync(&puller, "shop", SECONDS_30, "base applied", |s| {
            s.status
                .as_ref()
                .is_some_and(|st| st.observed_generation == s.metadata.generation)
                && condition(s, "Ready").is_some_and(|c| c.0 == "True")
                && inventory_names(s) == ["a"]
        })
        .await;
    assert_eq!(applied(&sync), Some(digest.as_str()));
    assert_eq!(t.config_map("a").await.unwrap()["data"]["k"], "base");
    assert!(t.config_map("b").await.is_none(), "b was pruned");

    // Escaping the artifact is refused by validation (the CRD lets it through).
    t.patch_sync("shop", json!({"path": "prod/../../etc"}))
        .await;
    let sync = t
        .wait_sync(&puller, "shop", SECONDS_30, "invalid", |s| {
            has(s, "Stalled", "True", "InvalidSpec")
        })
        .await;
    let message = condition(&sync, "Stalled").unwrap().2;
    assert!(message.contains("spec.path"), "{message}");
    assert!(message.contains(".."), "{message}");
    assert!(t.config_map("a").await.is_some());
}

/// Signs `digest` in `repo` keylessly with the test PKI (a legacy `.sig` layer); returns the
/// trusted root JSON that verifies it.
async fn sign_keyless(repo: &str, digest: &str) -> Vec<u8> {
    use common::pki::{ca, keyless_annotations, leaf, trusted_root_json};
    let fulcio = ca("fake fulcio");
    let rekor = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let (leaf_key, leaf_pem) = leaf(&fulcio, GHA_ISSUER);
    let digest: Digest = digest.parse().unwrap();
    let payload = tresor::signing::payload::simple_signing("registry.test/acme/app", &digest);
    let mut layer = Descriptor::for_bytes(
        tresor::signing::payload::SIMPLE_SIGNING_MEDIA_TYPE,
        &payload,
    );
    layer.annotations = keyless_annotations(&leaf_key, &leaf_pem, &rekor, &payload);
    let reference: Reference = format!("{repo}:v1").parse().unwrap();
    let options = RegistryOptions {
        plain_http: true,
        ..Default::default()
    };
    let registry = Repository::open(&reference, &options).unwrap();
    registry
        .push_blob(&layer.digest, payload.clone().into())
        .await
        .unwrap();
    let config = Descriptor::for_bytes("application/vnd.oci.image.config.v1+json", b"{}");
    registry
        .push_blob(&config.digest, bytes::Bytes::from_static(b"{}"))
        .await
        .unwrap();
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST_MEDIA_TYPE.into()),
        artifact_type: None,
        config,
        layers: vec![layer],
        subject: None,
        annotations: BTreeMap::new(),
    };
    registry
        .push_manifest(
            OCI_MANIFEST_MEDIA_TYPE,
            &manifest.to_bytes(),
            Some(&tresor::signing::legacy::signature_tag(&digest)),
        )
        .await
        .unwrap();
    trusted_root_json(&fulcio, &rekor)
}

fn keyless_spec(repo: &str, identity: &str, root: Option<&str>) -> Value {
    let mut keyless = json!({"identity": identity, "issuer": GHA_ISSUER});
    if let Some(root) = root {
        keyless["trustedRootRef"] = json!({"name": root});
    }
    json!({"url": repo, "ref": {"tag": "v1"}, "interval": "2s", "insecure": true,
        "verify": {"authorities": [{"name": "release", "keyless": keyless}]}})
}

/// A keyless authority needs a trusted root (fail closed without one, or with a Secret
/// missing or not holding one); another identity is refused; the right identity and root
/// apply, with the signer recorded.
#[tokio::test]
async fn keyless_authority_verifies_against_the_trusted_root_secret_and_fails_closed() {
    let t = Tenant::new("keyless").await;
    let registry = TestRegistry::plain();
    let (repo, digest) = t.push(&registry, None, "v1", &files(&two_config_maps()));
    let root = sign_keyless(&repo, &digest).await;
    let identity = common::pki::IDENTITY;
    let puller = t.puller(&[]);

    // No trusted root: fail closed before anything is fetched.
    t.create_sync("shop", keyless_spec(&repo, identity, None))
        .await;
    let sync = t
        .wait_sync(&puller, "shop", SECONDS_30, "stalled", |s| {
            has(s, "Stalled", "True", "TrustedRootMissing")
        })
        .await;
    let message = condition(&sync, "Stalled").unwrap().2;
    assert!(message.contains("trustedRootRef"), "{message}");

    // The root's Secret is missing, then present with the wrong content.
    t.patch_sync(
        "shop",
        json!({"verify": {"authorities": [{"name": "release", "keyless":
            {"identity": identity, "issuer": GHA_ISSUER,
             "trustedRootRef": {"name": "sigstore"}}}]}}),
    )
    .await;
    t.wait_sync(&puller, "shop", SECONDS_30, "missing its Secret", |s| {
        has(s, "Ready", "False", "SecretNotFound")
    })
    .await;
    secret(
        &t,
        "sigstore",
        "Opaque",
        &[("trusted_root.json", b"{\"nope\": 1}")],
    )
    .await;
    t.wait_sync(&puller, "shop", SECONDS_30, "no trusted root", |s| {
        refused_with(s, "SecretInvalid", "trusted root")
    })
    .await;
    assert!(t.config_map("a").await.is_none());

    // Another identity: refused, nothing applied.
    t.create_sync(
        "other",
        keyless_spec(&repo, &identity.replace("acme", "evil"), Some("sigstore")),
    )
    .await;
    secret(&t, "sigstore", "Opaque", &[("trusted_root.json", &root)]).await;
    t.wait_sync(&puller, "other", SECONDS_30, "identity refused", |s| {
        has(s, "Ready", "False", "IdentityMismatch")
    })
    .await;

    // The right identity and root: applied, the signer recorded.
    let sync = t
        .wait_sync(&puller, "shop", SECONDS_30, "applied", |s| {
            ready_at(s, &digest)
        })
        .await;
    let signer = sync.status.unwrap().signer.unwrap();
    assert!(signer.contains(identity), "{signer}");
    assert_eq!(t.config_map("a").await.unwrap()["data"]["k"], "one");
    let other = t.syncs().get("other").await.unwrap();
    assert_eq!(applied(&other), None);
}

/// A registry whose blobs arrive one byte every 300 ms (a layer of about 30 s), serving
/// `v1`; with the layer's length.
fn trickling_registry() -> (FakeRegistry, usize) {
    let artifact = common::tarball::artifact(&[(
        "a.yaml",
        b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: slow\n",
    )]);
    assert!(artifact.layer.len() > 80, "the layer must trickle for long");
    let mut content = Content::default();
    content.insert_artifact("v1", &artifact);
    let fake = FakeRegistry::start_with(
        content,
        Behaviour {
            trickle: Some(Duration::from_millis(300)),
            ..Behaviour::default()
        },
    );
    (fake, artifact.layer.len())
}

/// Creates sync `slow` on the trickling registry with `extra` fields; waits for the cycle
/// to give up; returns (reason, message) and how long it took. The body alone takes longer
/// than the assertions allow.
async fn trickling_download(
    t: &Tenant,
    extra: Value,
    give_up_within: Duration,
) -> (String, String) {
    let (fake, layer_len) = trickling_registry();
    let body = Duration::from_millis(300) * layer_len as u32;
    assert!(give_up_within < body, "{give_up_within:?} against {body:?}");
    let puller = t.puller(&[]);
    let mut spec = json!({"url": fake.repo("slow"), "ref": {"tag": "v1"}, "interval": "5m",
        "insecure": true, "verify": {"allowUnsigned": true}});
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    let started = Instant::now();
    t.create_sync("slow", spec).await;
    let sync = t
        .wait_not_ready(&puller, "slow", give_up_within, "given up")
        .await
        .0;
    let (_, reason, message) = condition(&sync, "Ready").unwrap();
    assert!(
        started.elapsed() < body,
        "took {:?}, the body takes {body:?}",
        started.elapsed()
    );
    assert!(
        fake.requests().iter().any(|r| r.contains("/blobs/")),
        "the download did not start: {:?}",
        fake.requests()
    );
    assert!(t.config_map("slow").await.is_none());
    (reason, message)
}

/// Issue 12 point 6: the puller's `--timeout` (10 s in these tests) ends a registry request
/// whose body trickles, instead of waiting for the whole body.
#[tokio::test]
async fn puller_timeout_ends_a_trickling_blob_download() {
    let t = Tenant::new("trickle-puller").await;
    let (reason, message) = trickling_download(&t, json!({}), Duration::from_secs(25)).await;
    assert_eq!(reason, "RegistryTimeout", "{message}");
    assert!(message.contains("within 10s"), "{message}");
}

/// Issue 12 point 6: an ArtifactSync's `spec.timeout` bounds its registry requests too,
/// below the puller's own `--timeout`.
#[tokio::test]
async fn sync_timeout_ends_a_trickling_blob_download() {
    let t = Tenant::new("trickle-sync").await;
    let (reason, message) =
        trickling_download(&t, json!({"timeout": "2s"}), Duration::from_secs(20)).await;
    assert!(
        reason == "RegistryTimeout" || reason == "CycleTimeout",
        "{reason}: {message}"
    );
    assert!(message.contains("2s"), "{reason}: {message}");
}

/// Deletes ArtifactSync `name` and waits until it is gone (its finalizer removed).
async fn delete_and_wait(t: &Tenant, puller: &common::cluster::PullerProcess, name: &str) {
    t.syncs()
        .delete(name, &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(t, puller, name).await;
}

/// Waits until ArtifactSync `name` is gone.
async fn wait_gone(t: &Tenant, puller: &common::cluster::PullerProcess, name: &str) {
    let deadline = Instant::now() + SECONDS_60;
    while t.syncs().get_opt(name).await.unwrap().is_some() {
        assert!(
            Instant::now() < deadline,
            "{name} not finalized within 60 s; log:\n{}",
            puller.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Deleting a pruning sync deletes what it applied (not an object that lost tresor's
/// labels) and its inventory, then releases the sync; without prune the objects stay,
/// labels and all, and the inventory goes; a suspended sync is released touching nothing.
#[tokio::test]
async fn deleting_a_sync_prunes_only_with_prune_and_not_while_suspended() {
    let t = Tenant::new("delete").await;
    let registry = TestRegistry::plain();
    // Without drift watches and with a long interval, so that nothing restores the labels
    // taken from an object below before the deletion (drift correction would).
    let puller = t.puller(&["--no-watch-drift"]);
    let push = |prefix: &str| {
        t.push(
            &registry,
            None,
            "v1",
            &[
                ("a.yaml", &config_map(&format!("{prefix}-a"), "one")),
                ("b.yaml", &config_map(&format!("{prefix}-b"), "two")),
            ],
        )
    };
    let created = |name: &'static str, spec: Value, digest: String| {
        let (t, puller) = (&t, &puller);
        async move {
            let mut spec = spec;
            spec["interval"] = json!("10m");
            t.create_sync(name, spec).await;
            // Settled: the cycle started by its own status write has run (Unchanged).
            t.wait_sync(puller, name, SECONDS_60, "applied and settled", |s| {
                ready_at(s, &digest) && has(s, "Ready", "True", "Unchanged")
            })
            .await
        }
    };

    // prune: true. An object that no longer carries tresor's labels (someone took it over)
    // stays.
    let (repo, digest) = push("pruned");
    let sync = created("pruned", spec_with(&repo, "v1", json!({})), digest).await;
    assert_eq!(sync.metadata.finalizers, Some(vec![FINALIZER.to_string()]));
    Api::<ConfigMap>::namespaced(t.client.clone(), &t.ns)
        .patch(
            "pruned-b",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": null}})),
        )
        .await
        .unwrap();
    delete_and_wait(&t, &puller, "pruned").await;
    assert!(
        t.config_map("pruned-a").await.is_none(),
        "{}",
        puller.log_tail()
    );
    assert!(t.config_map("pruned-b").await.is_some(), "taken over: kept");
    assert!(t.config_map("tresor-inventory-pruned").await.is_none());

    // prune: false — objects stay as they are (labels too); the inventory goes.
    let (repo, digest) = push("kept");
    created(
        "kept",
        spec_with(&repo, "v1", json!({"prune": false})),
        digest,
    )
    .await;
    assert!(t.config_map("tresor-inventory-kept").await.is_some());
    delete_and_wait(&t, &puller, "kept").await;
    let a = t.config_map("kept-a").await.unwrap();
    assert_eq!(a["metadata"]["labels"][LABEL_NAME], "kept");
    assert!(t.config_map("kept-b").await.is_some());
    assert!(t.config_map("tresor-inventory-kept").await.is_none());

    // Suspended (with prune): nothing is touched, only the finalizer goes.
    let (repo, digest) = push("frozen");
    created("frozen", spec_with(&repo, "v1", json!({})), digest).await;
    t.patch_sync("frozen", json!({"suspend": true})).await;
    let names = ["frozen-a", "frozen-b", "tresor-inventory-frozen"];
    let mut before = Vec::new();
    for name in names {
        before.push(resource_version(&t.config_map(name).await.unwrap()));
    }
    delete_and_wait(&t, &puller, "frozen").await;
    for (name, before) in names.into_iter().zip(before) {
        let object = t
            .config_map(name)
            .await
            .unwrap_or_else(|| panic!("{name} deleted"));
        assert_eq!(resource_version(&object), before, "{name} was written");
    }
}

/// With `serviceAccountName`, the objects are deleted as that account: an account that may
/// not delete keeps the sync (Forbidden, naming the account, a Warning Event) until it
/// may; then the objects go and the sync is released.
#[tokio::test]
async fn deletion_deletes_as_the_service_account_and_waits_when_it_may_not() {
    let t = Tenant::new("delete-sa").await;
    let registry = TestRegistry::plain();
    let kubectl = |args: &[&str]| {
        let mut all = vec!["-n", t.ns.as_str()];
        all.extend_from_slice(args);
        t.cluster.kubectl_ok(&all)
    };
    kubectl(&["create", "serviceaccount", "deployer"]);
    kubectl(&[
        "create",
        "role",
        "deployer",
        "--verb",
        "get,list,patch,create",
        "--resource",
        "configmaps",
    ]);
    kubectl(&[
        "create",
        "rolebinding",
        "deployer",
        "--role",
        "deployer",
        "--serviceaccount",
        &format!("{}:deployer", t.ns),
    ]);
    let (repo, digest) = t.push(&registry, None, "v1", &files(&two_config_maps()));
    let puller = t.puller(&[]);
    t.create_sync(
        "shop",
        spec_with(&repo, "v1", json!({"serviceAccountName": "deployer"})),
    )
    .await;
    t.wait_sync(&puller, "shop", SECONDS_60, "applied", |s| {
        ready_at(s, &digest)
    })
    .await;

    t.syncs()
        .delete("shop", &DeleteParams::default())
        .await
        .unwrap();
    let user = format!("system:serviceaccount:{}:deployer", t.ns);
    let sync = t
        .wait_sync(&puller, "shop", SECONDS_30, "forbidden to delete", |s| {
            condition(s, "Ready").is_some_and(|(st, r, _)| st == "False" && r == "Forbidden")
        })
        .await;
    assert!(sync.metadata.deletion_timestamp.is_some());
    assert_eq!(sync.metadata.finalizers, Some(vec![FINALIZER.to_string()]));
    let message = condition(&sync, "Ready").unwrap().2;
    assert!(message.contains(&user), "{message}");
    assert!(
        message.starts_with("cannot delete the applied objects: "),
        "{message}"
    );
    eventually(SECONDS_30, "a Warning Event Forbidden", || async {
        events(&t, "shop")
            .await
            .iter()
            .any(|(type_, reason, _)| type_ == "Warning" && reason == "Forbidden")
    })
    .await;
    assert!(t.config_map("a").await.is_some());

    kubectl(&[
        "patch",
        "role",
        "deployer",
        "--type",
        "json",
        "-p",
        r#"[{"op":"add","path":"/rules/0/verbs/-","value":"delete"}]"#,
    ]);
    // The failed deletion is retried after 30 s; the manual trigger runs it now.
    t.syncs()
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations":
                {tresor::puller::REQUESTED_AT: "after-the-role-fix"}}})),
        )
        .await
        .unwrap();
    wait_gone(&t, &puller, "shop").await;
    assert!(t.config_map("a").await.is_none());
    assert!(t.config_map("b").await.is_none());
}

/// Deleting the namespace: the namespace controller deletes the objects, the sync waits for
/// the puller's finalizer (the namespace stays Terminating), the puller releases it, and
/// then the namespace goes. Regression: the namespace controller deletes the RoleBindings in
/// any order, and once the one letting the puller impersonate the tenant was gone every
/// cleanup request was Forbidden and the namespace stayed Terminating; here they go first.
#[tokio::test]
async fn deleting_the_namespace_finalizes_the_sync_and_then_the_namespace_goes() {
    let t = Tenant::new("delete-ns").await;
    let registry = TestRegistry::plain();
    let (_, _, puller) = t
        .applied_unsigned(&registry, &files(&two_config_maps()), "5m")
        .await;
    let bindings =
        Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(t.client.clone(), &t.ns);
    for binding in ["tresor-puller", "tresor-tenant"] {
        bindings
            .delete(binding, &DeleteParams::default())
            .await
            .unwrap();
    }
    let namespaces = Api::<k8s_openapi::api::core::v1::Namespace>::all(t.client.clone());
    namespaces
        .delete(&t.ns, &DeleteParams::default())
        .await
        .unwrap();
    let ns = namespaces.get(&t.ns).await.unwrap();
    assert_eq!(
        ns.status.and_then(|s| s.phase).as_deref(),
        Some("Terminating")
    );
    // The puller finalizes the sync (its objects are already gone with the namespace).
    let deleted = Instant::now();
    wait_gone(&t, &puller, "app").await;
    let finalized = deleted.elapsed();
    // Then the namespace controller deletes the namespace: it looks again every 8.5 s while
    // a finalizer remains, but after errors (e.g. discovery while another suite swaps the
    // CRDs) its backoff grows to 60 s.
    let deadline = Instant::now() + Duration::from_secs(90);
    while let Some(ns) = namespaces.get_opt(&t.ns).await.unwrap() {
        assert!(
            Instant::now() < deadline,
            "namespace {} still there 90 s after the sync was finalized ({finalized:?} after \
             the deletion): {:?}",
            t.ns,
            ns.status
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Only the puller removes its finalizer: the namespace could not go before it did.
    assert!(puller.logged("finalized"), "{}", puller.log_tail());
    assert!(
        puller.logged("namespace_terminating=true"),
        "{}",
        puller.log_tail()
    );
}

/// The Lease: one holder; another identity waits while it is renewed and takes it over
/// only once it expired, counting the transition.
#[tokio::test]
async fn lease_has_one_holder_and_is_taken_over_only_after_it_expired() {
    let t = Tenant::new("lease").await;
    let lock = |id: &str| {
        LeaseLock::new(
            t.client.clone(),
            &t.ns,
            "tresor-puller",
            id,
            Duration::from_secs(2),
            Duration::from_secs(10),
        )
    };
    let (a, b) = (lock("a"), lock("b"));
    assert!(
        a.try_acquire_or_renew().await.unwrap(),
        "a creates the lease"
    );
    assert!(!b.try_acquire_or_renew().await.unwrap(), "b must wait");
    assert!(a.try_acquire_or_renew().await.unwrap(), "a renews");
    let renewed = Instant::now();
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(t.client.clone(), &t.ns);
    let holder = || async {
        let lease = leases.get("tresor-puller").await.unwrap().spec.unwrap();
        (lease.holder_identity.unwrap(), lease.lease_transitions)
    };
    assert_eq!(holder().await, ("a".to_string(), Some(0)));
    // a stops renewing: b gets it once the duration (2 s) has passed since the renewal,
    // not before.
    let deadline = Instant::now() + SECONDS_30;
    while !b.try_acquire_or_renew().await.unwrap() {
        assert!(Instant::now() < deadline, "b never took the expired lease");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        renewed.elapsed() >= Duration::from_secs(2),
        "taken over after {:?}",
        renewed.elapsed()
    );
    assert!(!a.try_acquire_or_renew().await.unwrap(), "a lost it");
    assert_eq!(holder().await, ("b".to_string(), Some(1)));
}
