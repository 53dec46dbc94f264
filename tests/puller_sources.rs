//! The puller's registry access and content selection (`spec.pullSecretRef` against the
//! basic-auth registry 127.0.0.1:5002, `spec.caSecretRef` against the TLS registry
//! 127.0.0.1:5003, `spec.path`), keyless authorities (a test PKI end to end; cosign's own
//! keyless bundle through the puller's conversion) and deletion with the finalizer, all
//! through `tresor::puller::reconcile` against the API double.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::SystemTime;

use common::kube_api::Rule;
use common::puller::{condition, docker_config, Puller};
use common::TestRegistry;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{json, Value};
use tresor::api::{ArtifactSync, KeylessAuthority};
use tresor::artifact::format::{Descriptor, ImageManifest, OCI_MANIFEST_MEDIA_TYPE};
use tresor::digest::Digest;
use tresor::kube::LABEL_NAME;
use tresor::puller::{keyless_authority, FINALIZER};
use tresor::reference::Reference;
use tresor::registry::{RegistryOptions, Repository};
use tresor::signing::verify::{self, Candidate, PreparedPolicy, Signer};
use tresor::signing::{NamedAuthority, Require, TrustPolicy};

const TWO_CONFIGMAPS: &[(&str, &str)] = &[
    (
        "a.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  k: one\n",
    ),
    (
        "b.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\ndata:\n  k: two\n",
    ),
];
const DOCKER_CONFIG_JSON: &str = "kubernetes.io/dockerconfigjson";
const GHA_ISSUER: &str = "https://token.actions.githubusercontent.com";

fn unsigned(repo: &str, extra: Value) -> Value {
    let mut spec = json!({"url": repo, "ref": {"tag": "v1"}, "interval": "5m",
        "verify": {"allowUnsigned": true}});
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    spec
}

async fn patch_spec(p: &Puller, name: &str, spec: Value) {
    Api::<ArtifactSync>::namespaced(p.api.client(None), "default")
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": spec })),
        )
        .await
        .unwrap();
}

async fn ready(p: &Puller, name: &str) -> (String, String, String) {
    condition(&p.get(name).await.unwrap(), "Ready")
}

/// Status and Events as text, to check that no credential ever appears in them.
async fn published(p: &Puller, name: &str) -> String {
    let events =
        Api::<k8s_openapi::api::events::v1::Event>::namespaced(p.api.client(None), "default")
            .list(&Default::default())
            .await
            .unwrap();
    format!(
        "{}\n{}",
        serde_json::to_string(&p.get(name).await.unwrap().status).unwrap(),
        serde_json::to_string(&events.items).unwrap()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_secret_gives_credentials_and_is_reread_every_cycle() {
    let p = Puller::start().await;
    let registry = TestRegistry::auth();
    let (repo, digest) = p.push(&registry, "ps-auth", TWO_CONFIGMAPS);
    let user = registry.user.clone().unwrap();
    let password = registry.password.clone().unwrap();
    p.create(
        "shop",
        unsigned(
            &repo,
            json!({"insecure": true, "pullSecretRef": {"name": "regcred"}}),
        ),
    )
    .await;

    // The Secret does not exist yet.
    p.reconcile("shop").await;
    let (status, reason, message) = ready(&p, "shop").await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "SecretNotFound")
    );
    assert!(message.contains("default/regcred"), "{message}");
    assert!(message.contains("spec.pullSecretRef"), "{message}");

    // Not a pull secret.
    p.secret("regcred", "Opaque", &[("password", password.as_bytes())])
        .await;
    p.reconcile("shop").await;
    let (_, reason, message) = ready(&p, "shop").await;
    assert_eq!(reason, "SecretInvalid");
    assert!(message.contains("\"Opaque\""), "{message}");
    assert!(message.contains(DOCKER_CONFIG_JSON), "{message}");

    // The right type without its key.
    p.secret("regcred", DOCKER_CONFIG_JSON, &[("config.json", b"{}")])
        .await;
    p.reconcile("shop").await;
    let (_, reason, message) = ready(&p, "shop").await;
    assert_eq!(reason, "SecretInvalid");
    assert!(message.contains("\".dockerconfigjson\""), "{message}");

    // Credentials for another registry only.
    let elsewhere = docker_config("registry.example", &user, &password);
    p.secret(
        "regcred",
        DOCKER_CONFIG_JSON,
        &[(".dockerconfigjson", &elsewhere)],
    )
    .await;
    p.reconcile("shop").await;
    let (_, reason, message) = ready(&p, "shop").await;
    assert_eq!(reason, "SecretInvalid");
    assert!(message.contains(&registry.host), "{message}");

    // A wrong password: the registry's 401, naming the Secret, never the password.
    let wrong = docker_config(&registry.host, &user, "wrong-password-123");
    p.secret(
        "regcred",
        DOCKER_CONFIG_JSON,
        &[(".dockerconfigjson", &wrong)],
    )
    .await;
    p.reconcile("shop").await;
    let (status, reason, message) = ready(&p, "shop").await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "Unauthorized")
    );
    assert!(message.contains("pull secret default/regcred"), "{message}");
    assert_eq!(p.api.count("", "configmaps"), 0, "nothing applied");

    // The password is fixed in the Secret only (no spec change): the next cycle pulls.
    let right = docker_config(&registry.host, &user, &password);
    p.secret(
        "regcred",
        DOCKER_CONFIG_JSON,
        &[(".dockerconfigjson", &right)],
    )
    .await;
    p.reconcile("shop").await;
    let sync = p.get("shop").await.unwrap();
    assert_eq!(condition(&sync, "Ready").1, "Applied");
    assert_eq!(
        sync.status.as_ref().unwrap().last_applied_digest.as_deref(),
        Some(digest.as_str())
    );
    let a = p.api.get("", "configmaps", Some("default"), "a").unwrap();
    assert_eq!(a["data"]["k"], "one");

    let text = published(&p, "shop").await;
    assert!(!text.contains("wrong-password-123"), "{text}");
    assert!(!text.contains(&password), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_dockercfg_pull_secret_works_too() {
    let p = Puller::start().await;
    let registry = TestRegistry::auth();
    let (repo, _) = p.push(&registry, "ps-dockercfg", TWO_CONFIGMAPS);
    let config: Value = serde_json::from_slice(&docker_config(
        &registry.host,
        registry.user.as_deref().unwrap(),
        registry.password.as_deref().unwrap(),
    ))
    .unwrap();
    let legacy = serde_json::to_vec(&config["auths"]).unwrap();
    p.secret("old", "kubernetes.io/dockercfg", &[(".dockercfg", &legacy)])
        .await;
    p.create(
        "shop",
        unsigned(
            &repo,
            json!({"insecure": true, "pullSecretRef": {"name": "old"}}),
        ),
    )
    .await;
    p.reconcile("shop").await;
    assert_eq!(ready(&p, "shop").await.1, "Applied");
    assert!(p.api.get("", "configmaps", Some("default"), "b").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_secret_adds_the_registry_ca_and_without_it_tls_fails_clearly() {
    let p = Puller::start().await;
    let registry = TestRegistry::tls();
    let (repo, digest) = p.push(&registry, "ps-tls", TWO_CONFIGMAPS);
    let auth = docker_config(
        &registry.host,
        registry.user.as_deref().unwrap(),
        registry.password.as_deref().unwrap(),
    );
    p.secret(
        "regcred",
        DOCKER_CONFIG_JSON,
        &[(".dockerconfigjson", &auth)],
    )
    .await;
    p.create(
        "shop",
        unsigned(&repo, json!({"pullSecretRef": {"name": "regcred"}})),
    )
    .await;
    p.reconcile("shop").await;
    let (status, reason, message) = ready(&p, "shop").await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "RegistryUnreachable")
    );
    assert!(message.to_lowercase().contains("certificate"), "{message}");
    assert_eq!(p.api.count("", "configmaps"), 0);

    // A CA Secret without ca.crt.
    p.secret("registry-ca", "Opaque", &[("tls.crt", b"x")])
        .await;
    patch_spec(&p, "shop", json!({"caSecretRef": {"name": "registry-ca"}})).await;
    p.reconcile("shop").await;
    let (_, reason, message) = ready(&p, "shop").await;
    assert_eq!(reason, "SecretInvalid");
    assert!(message.contains("\"ca.crt\""), "{message}");

    let ca_file = std::env::var("TRESOR_REGISTRY_CA")
        .unwrap_or_else(|_| format!("{}/.tmp/registry/ca.pem", env!("CARGO_MANIFEST_DIR")));
    let ca = std::fs::read(ca_file).unwrap();
    p.secret("registry-ca", "Opaque", &[("ca.crt", &ca)]).await;
    p.reconcile("shop").await;
    let sync = p.get("shop").await.unwrap();
    assert_eq!(condition(&sync, "Ready").1, "Applied");
    assert_eq!(
        sync.status.unwrap().last_applied_digest.as_deref(),
        Some(digest.as_str())
    );
    assert!(p.api.get("", "configmaps", Some("default"), "a").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_applies_one_directory_and_a_missing_one_stalls_with_nothing_applied() {
    let p = Puller::start().await;
    let registry = TestRegistry::plain();
    let (repo, _) = p.push(
        &registry,
        "ps-path",
        &[
            (
                "base/a.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  k: base\n",
            ),
            (
                "prod/b.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\ndata:\n  k: prod\n",
            ),
        ],
    );
    p.create(
        "shop",
        unsigned(&repo, json!({"insecure": true, "path": "./prod/"})),
    )
    .await;
    p.reconcile("shop").await;
    let sync = p.get("shop").await.unwrap();
    assert_eq!(condition(&sync, "Ready").1, "Applied");
    let names: Vec<String> = sync
        .status
        .unwrap()
        .inventory
        .iter()
        .map(|e| e.name.clone())
        .collect();
    assert_eq!(names, ["b"]);
    assert_eq!(
        p.api.get("", "configmaps", Some("default"), "b").unwrap()["data"]["k"],
        "prod"
    );
    assert!(p.api.get("", "configmaps", Some("default"), "a").is_none());

    // A directory the artifact does not have: stalled, nothing changes in the cluster.
    patch_spec(&p, "shop", json!({"path": "staging"})).await;
    p.reconcile("shop").await;
    let sync = p.get("shop").await.unwrap();
    let (status, reason, message) = condition(&sync, "Stalled");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "PathNotFound"));
    assert!(message.contains("\"staging\""), "{message}");
    assert!(
        message.contains("top-level directories: base, prod"),
        "{message}"
    );
    assert!(p.api.get("", "configmaps", Some("default"), "b").is_some());
    assert!(p.api.get("", "configmaps", Some("default"), "a").is_none());

    // Another directory of the same digest: applied in full, the old one's objects pruned.
    patch_spec(&p, "shop", json!({"path": "base"})).await;
    p.reconcile("shop").await;
    let sync = p.get("shop").await.unwrap();
    assert_eq!(condition(&sync, "Ready").1, "Applied");
    let names: Vec<String> = sync
        .status
        .unwrap()
        .inventory
        .iter()
        .map(|e| e.name.clone())
        .collect();
    assert_eq!(names, ["a"]);
    assert!(p.api.get("", "configmaps", Some("default"), "a").is_some());
    assert!(p.api.get("", "configmaps", Some("default"), "b").is_none());

    // Escaping the artifact is refused by validation.
    patch_spec(&p, "shop", json!({"path": "prod/../../etc"})).await;
    p.reconcile("shop").await;
    let (_, reason, message) = condition(&p.get("shop").await.unwrap(), "Stalled");
    assert_eq!(reason, "InvalidSpec");
    assert!(message.contains("spec.path"), "{message}");
    assert!(message.contains(".."), "{message}");
}

// --- keyless -------------------------------------------------------------------------------

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
    json!({"url": repo, "ref": {"tag": "v1"}, "interval": "5m", "insecure": true,
        "verify": {"authorities": [{"name": "release", "keyless": keyless}]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_authority_verifies_against_the_trusted_root_secret_and_fails_closed() {
    let p = Puller::start().await;
    let registry = TestRegistry::plain();
    let (repo, digest) = p.push(&registry, "ps-keyless", TWO_CONFIGMAPS);
    let root = sign_keyless(&repo, &digest).await;
    let identity = common::pki::IDENTITY;

    // No trusted root: fail closed before anything is fetched.
    p.create("shop", keyless_spec(&repo, identity, None)).await;
    p.reconcile("shop").await;
    let (_, reason, message) = condition(&p.get("shop").await.unwrap(), "Stalled");
    assert_eq!(reason, "TrustedRootMissing");
    assert!(message.contains("trustedRootRef"), "{message}");
    assert_eq!(p.api.count("", "configmaps"), 0);

    // The root's Secret is missing, then present with the wrong content.
    patch_spec(
        &p,
        "shop",
        json!({"verify": {"authorities": [{"name": "release", "keyless":
            {"identity": identity, "issuer": GHA_ISSUER,
             "trustedRootRef": {"name": "sigstore"}}}]}}),
    )
    .await;
    p.reconcile("shop").await;
    assert_eq!(ready(&p, "shop").await.1, "SecretNotFound");
    p.secret(
        "sigstore",
        "Opaque",
        &[("trusted_root.json", b"{\"nope\": 1}")],
    )
    .await;
    p.reconcile("shop").await;
    let (_, reason, message) = ready(&p, "shop").await;
    assert_eq!(reason, "SecretInvalid");
    assert!(message.contains("trusted root"), "{message}");

    // Another identity: refused, nothing applied.
    p.secret("sigstore", "Opaque", &[("trusted_root.json", &root)])
        .await;
    p.create(
        "other",
        keyless_spec(&repo, &identity.replace("acme", "evil"), Some("sigstore")),
    )
    .await;
    p.reconcile("other").await;
    assert_eq!(ready(&p, "other").await.1, "IdentityMismatch");
    assert_eq!(p.api.count("", "configmaps"), 0);

    // The right identity and root: applied, the signer recorded.
    p.reconcile("shop").await;
    let sync = p.get("shop").await.unwrap();
    assert_eq!(condition(&sync, "Ready").1, "Applied");
    let signer = sync.status.unwrap().signer.unwrap();
    assert!(signer.contains(identity), "{signer}");
    assert!(p.api.get("", "configmaps", Some("default"), "a").is_some());
}

/// cosign's own keyless v3 bundle (public-good Fulcio and Rekor) through the puller's
/// conversion of a CRD keyless authority: verifies for its identity (exact and regexp), not
/// for another; a trusted root that is not one is refused with the Secret named.
#[test]
fn cosign_keyless_bundle_verifies_through_the_crd_authority_conversion() {
    let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/cosign/bundles");
    let root = std::fs::read(testdata.join("trusted_root.json")).unwrap();
    let bundle = std::fs::read(testdata.join("bundle_v03.json")).unwrap();
    let identity = "https://github.com/kubewarden/kubewarden-controller/.github/workflows/release.yml@refs/tags/v1.34.0";
    let digest: Digest = "sha256:c811d58de79c92f03214e63aa339484e488d694ae8a6283b5f3f17a9faf50172"
        .parse()
        .unwrap();
    let artifact = common::pki::resolved_without_layers(
        format!("oci://ghcr.io/kubewarden/controller@{digest}")
            .parse()
            .unwrap(),
        digest,
    );
    let candidates = [Candidate::Bundle {
        source: "referrer sha256:test".into(),
        bytes: bundle.into(),
    }];
    let check = |keyless: KeylessAuthority| {
        let authority = keyless_authority(&keyless, &root, "Secret default/sigstore").unwrap();
        let policy = TrustPolicy::new(
            vec![NamedAuthority {
                name: "release".into(),
                authority,
            }],
            Require::Any,
            Path::new("<test>"),
        )
        .unwrap();
        let prepared = PreparedPolicy::load(&policy).unwrap();
        verify::evaluate(&artifact, &prepared, &candidates, SystemTime::now())
    };
    let exact = check(KeylessAuthority {
        identity: Some(identity.into()),
        issuer: Some(GHA_ISSUER.into()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        exact.signatures[0].signer,
        Signer::Certificate {
            identity: identity.into(),
            issuer: GHA_ISSUER.into()
        }
    );
    check(KeylessAuthority {
        identity_regexp: Some("https://github.com/kubewarden/.*".into()),
        issuer: Some(GHA_ISSUER.into()),
        ..Default::default()
    })
    .unwrap();
    let err = check(KeylessAuthority {
        identity_regexp: Some("https://github.com/acme/.*".into()),
        issuer: Some(GHA_ISSUER.into()),
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(err.reason(), "IdentityMismatch", "{err}");

    let keyless = KeylessAuthority {
        identity: Some(identity.into()),
        issuer: Some(GHA_ISSUER.into()),
        ..Default::default()
    };
    let err = keyless_authority(&keyless, b"{}", "Secret default/sigstore").unwrap_err();
    assert!(err.starts_with("Secret default/sigstore: "), "{err}");
    let no_issuer = KeylessAuthority {
        identity: Some(identity.into()),
        ..Default::default()
    };
    let err = keyless_authority(&no_issuer, &root, "Secret default/sigstore").unwrap_err();
    assert!(err.contains("issuer"), "{err}");
}

// --- deletion ------------------------------------------------------------------------------

async fn delete_sync(p: &Puller, name: &str) {
    Api::<ArtifactSync>::namespaced(p.api.client(None), "default")
        .delete(name, &Default::default())
        .await
        .unwrap();
}

const INVENTORY: &str = "tresor-inventory-shop";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_pruning_sync_deletes_its_objects_then_releases_it() {
    let p = Puller::start().await;
    let (repo, _) = p.push(&TestRegistry::plain(), "ps-delete", TWO_CONFIGMAPS);
    p.create("shop", unsigned(&repo, json!({"insecure": true})))
        .await;
    p.reconcile("shop").await;
    let sync = p.get("shop").await.unwrap();
    assert_eq!(sync.metadata.finalizers, Some(vec![FINALIZER.to_string()]));
    assert!(p.api.get("", "configmaps", Some("default"), "a").is_some());
    assert!(p
        .api
        .get("", "configmaps", Some("default"), INVENTORY)
        .is_some());
    // An object that no longer carries tresor's labels (someone took it over) stays.
    Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(p.api.client(None), "default")
        .patch(
            "b",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": null}})),
        )
        .await
        .unwrap();

    delete_sync(&p, "shop").await;
    let deleting = p.get("shop").await.expect("kept until finalized");
    assert!(deleting.metadata.deletion_timestamp.is_some());
    p.reconcile("shop").await;
    assert!(p.get("shop").await.is_none(), "finalizer removed");
    assert!(p.api.get("", "configmaps", Some("default"), "a").is_none());
    assert!(p.api.get("", "configmaps", Some("default"), "b").is_some());
    assert!(p
        .api
        .get("", "configmaps", Some("default"), INVENTORY)
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_without_prune_or_while_suspended_leaves_the_objects() {
    let p = Puller::start().await;
    let (repo, _) = p.push(&TestRegistry::plain(), "ps-orphan", TWO_CONFIGMAPS);

    // prune: false — objects stay as they are (labels too); the inventory goes.
    p.create(
        "shop",
        unsigned(&repo, json!({"insecure": true, "prune": false})),
    )
    .await;
    p.reconcile("shop").await;
    delete_sync(&p, "shop").await;
    p.reconcile("shop").await;
    assert!(p.get("shop").await.is_none());
    let a = p.api.get("", "configmaps", Some("default"), "a").unwrap();
    assert_eq!(a["metadata"]["labels"][LABEL_NAME], "shop");
    assert!(p.api.get("", "configmaps", Some("default"), "b").is_some());
    assert!(p
        .api
        .get("", "configmaps", Some("default"), INVENTORY)
        .is_none());

    // Suspended (with prune): nothing is touched, only the finalizer goes.
    p.create("shop", unsigned(&repo, json!({"insecure": true})))
        .await;
    p.reconcile("shop").await;
    assert!(p
        .api
        .get("", "configmaps", Some("default"), INVENTORY)
        .is_some());
    patch_spec(&p, "shop", json!({"suspend": true})).await;
    delete_sync(&p, "shop").await;
    p.api.clear_log();
    p.reconcile("shop").await;
    assert!(p.get("shop").await.is_none());
    let writes = p.api.writes();
    assert!(
        writes.iter().all(|w| w.contains("/artifactsyncs/shop")),
        "{writes:?}"
    );
    assert!(p.api.get("", "configmaps", Some("default"), "a").is_some());
    assert!(p
        .api
        .get("", "configmaps", Some("default"), INVENTORY)
        .is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_deletes_as_the_service_account_and_waits_when_it_may_not() {
    let p = Puller::start().await;
    let (repo, _) = p.push(&TestRegistry::plain(), "ps-delete-sa", TWO_CONFIGMAPS);
    let user = "system:serviceaccount:default:deployer";
    p.api.set_rbac(
        user,
        vec![Rule::new(
            &["get", "list", "patch", "create"],
            &["configmaps"],
        )],
    );
    p.create(
        "shop",
        unsigned(
            &repo,
            json!({"insecure": true, "serviceAccountName": "deployer"}),
        ),
    )
    .await;
    p.reconcile("shop").await;
    assert_eq!(ready(&p, "shop").await.1, "Applied");

    delete_sync(&p, "shop").await;
    p.reconcile("shop").await;
    let sync = p
        .get("shop")
        .await
        .expect("kept: the account may not delete");
    assert_eq!(sync.metadata.finalizers, Some(vec![FINALIZER.to_string()]));
    let (status, reason, message) = condition(&sync, "Ready");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "Forbidden"));
    assert!(message.contains(user), "{message}");
    assert!(
        message.starts_with("cannot delete the applied objects: "),
        "{message}"
    );
    let events: Vec<(String, String)> =
        Api::<k8s_openapi::api::events::v1::Event>::namespaced(p.api.client(None), "default")
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|e| (e.type_.unwrap_or_default(), e.reason.unwrap_or_default()))
            .collect();
    assert!(
        events.contains(&("Warning".to_string(), "Forbidden".to_string())),
        "{events:?}"
    );
    assert!(p.api.get("", "configmaps", Some("default"), "a").is_some());

    p.api.set_rbac(
        user,
        vec![Rule::new(
            &["get", "list", "patch", "create", "delete"],
            &["configmaps"],
        )],
    );
    p.reconcile("shop").await;
    assert!(p.get("shop").await.is_none());
    assert!(p.api.get("", "configmaps", Some("default"), "a").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_namespace_finalizes_the_sync_and_then_the_namespace_goes() {
    let p = Puller::start().await;
    let (repo, _) = p.push(&TestRegistry::plain(), "ps-delete-ns", TWO_CONFIGMAPS);
    p.create("shop", unsigned(&repo, json!({"insecure": true})))
        .await;
    p.reconcile("shop").await;
    Api::<k8s_openapi::api::core::v1::Namespace>::all(p.api.client(None))
        .delete("default", &Default::default())
        .await
        .unwrap();
    // The objects without finalizers are gone; the sync waits for the puller, and so does
    // the Namespace (Terminating).
    assert_eq!(p.api.count("", "configmaps"), 0);
    let ns = p.api.get("", "namespaces", None, "default").unwrap();
    assert_eq!(ns["status"]["phase"], "Terminating");
    assert!(p
        .get("shop")
        .await
        .unwrap()
        .metadata
        .deletion_timestamp
        .is_some());
    p.reconcile("shop").await;
    assert!(p.get("shop").await.is_none());
    assert!(p.api.get("", "namespaces", None, "default").is_none());
}

/// `tresor apply --path`: only that directory is applied; `..` is refused before anything
/// runs; a directory the artifact lacks fails with `PathNotFound`, writing nothing.
#[test]
fn tresor_apply_path_applies_one_directory() {
    let api = common::kube_api::KubeApi::start(std::time::Duration::from_millis(10));
    let work = tempfile::tempdir().unwrap();
    let kubeconfig = api.kubeconfig(work.path());
    let tree = work.path().join("tree");
    for (dir, name) in [("base", "a"), ("prod", "b")] {
        std::fs::create_dir_all(tree.join(dir)).unwrap();
        std::fs::write(
            tree.join(dir).join("cm.yaml"),
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n"),
        )
        .unwrap();
    }
    let reference = format!("oci-layout:{}:v1", work.path().join("layout").display());
    common::stdout_of(common::tresor().args(["push", tree.to_str().unwrap(), &reference]));
    let apply = |path: &str| {
        let mut cmd = common::tresor();
        cmd.args([
            "apply",
            &reference,
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--namespace",
            "default",
            "--name",
            "site",
            "--allow-unsigned",
            "--cache-dir",
            work.path().join("cache").to_str().unwrap(),
            "--path",
            path,
        ]);
        cmd
    };
    let out = common::stdout_of(apply("prod/"));
    assert!(out.starts_with("applied sha256:"), "{out}");
    assert!(api.get("", "configmaps", Some("default"), "b").is_some());
    assert!(api.get("", "configmaps", Some("default"), "a").is_none());

    api.clear_log();
    let stderr = common::stderr_of_failure(apply("prod/../base"), 2);
    assert!(stderr.contains(".."), "{stderr}");
    let out = apply("staging").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("PathNotFound"), "{text}");
    assert!(text.contains("top-level directories: base, prod"), "{text}");
    assert!(api.writes().is_empty(), "{:?}", api.writes());
}
