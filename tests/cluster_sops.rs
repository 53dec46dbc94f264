//! SOPS-encrypted Secrets against the real kube-apiserver of `scripts/cluster.sh` (issue
//! 15): the real sops encrypts a Secret for keys from Debian's `age-keygen`, tresor pushes
//! it to the real registry, and `tresor apply --age-identity` and the puller with
//! `spec.decryption.secretRef` (run as a process with its own ServiceAccount) apply it with
//! its decrypted values; without an identity nothing is applied and the error names the
//! file and what to set; no plaintext reaches the cache, the inventory, the status or
//! Events.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::cluster::{condition, ready_at, unsigned_spec, Tenant, SECONDS_60};
use common::peers::peer;
use common::TestRegistry;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, PostParams};
use serde_json::{json, Value};

const PASSWORD: &str = "hunter2-cluster";
const TOKEN: &str = "tok-93ac1e";

/// A Secret manifest with one `data` and one `stringData` value.
fn secret_yaml() -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(PASSWORD);
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\ntype: Opaque\ndata:\n  password: {b64}\nstringData:\n  token: {TOKEN}\n"
    )
}

/// An age identity made by Debian's age-keygen in `dir`; (file, recipient).
fn keygen(dir: &Path) -> (PathBuf, String) {
    let key = dir.join("age.key");
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = Command::new("age-keygen")
        .arg("-y")
        .arg(&key)
        .output()
        .unwrap();
    (
        key,
        String::from_utf8(out.stdout).unwrap().trim().to_string(),
    )
}

/// Pushes a tree with the sops-encrypted Secret and a ConfigMap to the plain registry;
/// (`oci://host/repo`, digest, identity file).
fn push_encrypted(t: &Tenant, registry: &TestRegistry) -> (String, String, PathBuf) {
    let (key, recipient) = keygen(t.work.path());
    let tree = t.work.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("secret.yaml"), secret_yaml()).unwrap();
    let out = Command::new(peer("sops"))
        .args(["encrypt", "--in-place", "--age", &recipient])
        .args(["--encrypted-regex", "^(data|stringData)$", "secret.yaml"])
        .current_dir(&tree)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(
        tree.join("config.yaml"),
        common::cluster::config_map("app", "one"),
    )
    .unwrap();
    let encrypted = std::fs::read_to_string(tree.join("secret.yaml")).unwrap();
    assert!(!encrypted.contains(TOKEN), "{encrypted}");
    let repo = registry.repo(&t.ns);
    let out = common::json_of(registry.tresor(&[
        "push",
        tree.to_str().unwrap(),
        &format!("{repo}:v1"),
        "--format",
        "json",
    ]));
    (repo, out["digest"].as_str().unwrap().to_string(), key)
}

/// The decrypted values of Secret `db` in the tenant's namespace, if it exists.
async fn applied_secret(t: &Tenant) -> Option<(String, String)> {
    let secret = Api::<Secret>::namespaced(t.client.clone(), &t.ns)
        .get_opt("db")
        .await
        .unwrap()?;
    let data = secret.data.unwrap();
    let text = |k: &str| String::from_utf8(data[k].0.clone()).unwrap();
    Some((text("password"), text("token")))
}

/// Every ConfigMap of the tenant's namespace (the inventory among them) as JSON text.
async fn config_maps(t: &Tenant) -> String {
    let list = Api::<ConfigMap>::namespaced(t.client.clone(), &t.ns)
        .list(&Default::default())
        .await
        .unwrap();
    serde_json::to_string(&list.items).unwrap()
}

fn assert_no_plaintext(what: &str, text: &str) {
    assert!(!text.contains(PASSWORD), "{what}: {text}");
    assert!(!text.contains(TOKEN), "{what}: {text}");
}

/// Every file under `dir`, gzip blobs decompressed, as one lossy string.
fn files_under(dir: &Path) -> String {
    let mut out = String::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                if bytes.starts_with(&[0x1f, 0x8b]) {
                    use std::io::Read as _;
                    let mut plain = Vec::new();
                    flate2::read::GzDecoder::new(bytes.as_slice())
                        .read_to_end(&mut plain)
                        .unwrap();
                    out.push_str(&String::from_utf8_lossy(&plain));
                }
                out.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
    }
    out
}

/// `tresor apply --age-identity`: without it, exit 1 naming secret.yaml and the flag, and
/// nothing applied; with it, the Secret lands with its decrypted values, and neither the
/// cache nor the inventory holds them.
#[tokio::test]
async fn tresor_apply_decrypts_sops_secrets_with_age_identity() {
    let t = Tenant::new("sops-apply").await;
    let registry = TestRegistry::plain();
    let (repo, digest, key) = push_encrypted(&t, &registry);
    let cache = t.work.path().join("cache");
    let apply = |extra: &[&str]| {
        let mut cmd = common::tresor();
        cmd.args(["apply", &format!("{repo}:v1")])
            .args(["--kubeconfig", t.cluster.kubeconfig.to_str().unwrap()])
            .args(["--namespace", &t.ns, "--name", "shop", "--allow-unsigned"])
            .args(["--cache-dir", cache.to_str().unwrap()])
            .args(&registry.flags)
            .args(extra);
        cmd.output().unwrap()
    };

    let out = apply(&[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("AgeIdentityMissing"), "{said}");
    assert!(said.contains("secret.yaml"), "{said}");
    assert!(said.contains("--age-identity"), "{said}");
    assert!(applied_secret(&t).await.is_none(), "nothing applied");
    assert!(t.config_map("app").await.is_none(), "nothing applied");

    let out = apply(&["--age-identity", key.to_str().unwrap(), "--format", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["summary"]["outcome"], "Applied", "{report}");
    assert_eq!(report["summary"]["digest"], json!(digest));
    assert_eq!(
        applied_secret(&t).await,
        Some((PASSWORD.to_string(), TOKEN.to_string()))
    );
    assert_eq!(t.config_map("app").await.unwrap()["data"]["k"], "one");
    assert_no_plaintext("apply's output", &String::from_utf8_lossy(&out.stdout));
    assert_no_plaintext("apply's log", &String::from_utf8_lossy(&out.stderr));
    assert_no_plaintext("the cache", &files_under(&cache));
    assert_no_plaintext("the inventory", &config_maps(&t).await);
    assert!(
        files_under(&cache).contains("ENC[AES256_GCM,"),
        "the layer is cached"
    );

    // Unchanged, and the identity still needed for drift correction from the cache.
    let out = apply(&["--age-identity", key.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        applied_secret(&t).await,
        Some((PASSWORD.to_string(), TOKEN.to_string()))
    );
}

/// The puller with `spec.decryption.secretRef`: without `spec.decryption` the sync stalls
/// naming the file and the field; a secretRef to a Secret without a `.agekey` key says so;
/// with the age key in the sync's namespace the Secret lands decrypted, and a hand edit of it
/// is undone; status, Events, the inventory and the puller's log hold no plaintext.
#[tokio::test]
async fn puller_decrypts_with_the_age_key_of_decryption_secret_ref() {
    let t = Tenant::new("sops-puller").await;
    let registry = TestRegistry::plain();
    let (repo, digest, key) = push_encrypted(&t, &registry);
    let puller = t.puller(&[]);
    let mut spec = unsigned_spec(&repo, "v1", "2s");
    t.create_sync("shop", spec.clone()).await;
    let sync = t
        .wait_sync(&puller, "shop", SECONDS_60, "refused without a key", |s| {
            condition(s, "Ready").is_some_and(|c| c.0 == "False" && c.1 == "AgeIdentityMissing")
        })
        .await;
    let message = condition(&sync, "Ready").unwrap().2;
    assert!(message.contains("secret.yaml"), "{message}");
    assert!(message.contains("spec.decryption"), "{message}");
    assert!(applied_secret(&t).await.is_none());
    assert!(
        t.config_map("app").await.is_none(),
        "nothing of the version applied"
    );

    // A Secret without an .agekey key.
    let secrets = Api::<Secret>::namespaced(t.client.clone(), &t.ns);
    let wrong: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "sops-age", "namespace": t.ns},
        "stringData": {"key.txt": "not here"},
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &wrong)
        .await
        .unwrap();
    spec["decryption"] = json!({"provider": "sops", "secretRef": {"name": "sops-age"}});
    t.patch_sync("shop", json!({"decryption": spec["decryption"]}))
        .await;
    let sync = t
        .wait_sync(&puller, "shop", SECONDS_60, "refusing the Secret", |s| {
            condition(s, "Ready").is_some_and(|c| c.1 == "SecretInvalid")
        })
        .await;
    let message = condition(&sync, "Ready").unwrap().2;
    assert!(message.contains("sops-age"), "{message}");
    assert!(
        message.contains("has no key ending in .agekey"),
        "{message}"
    );

    // The age key, as Flux keeps it.
    let mut right = wrong.clone();
    right.metadata.resource_version = None;
    right.string_data = Some(
        [(
            "age.agekey".to_string(),
            std::fs::read_to_string(&key).unwrap(),
        )]
        .into(),
    );
    secrets
        .delete("sops-age", &Default::default())
        .await
        .unwrap();
    common::cluster::eventually(
        common::cluster::SECONDS_30,
        "the old Secret is gone",
        || async { secrets.get_opt("sops-age").await.unwrap().is_none() },
    )
    .await;
    secrets
        .create(&PostParams::default(), &right)
        .await
        .unwrap();
    t.wait_sync(&puller, "shop", SECONDS_60, "applied", |s| {
        ready_at(s, &digest)
    })
    .await;
    assert_eq!(
        applied_secret(&t).await,
        Some((PASSWORD.to_string(), TOKEN.to_string()))
    );
    assert_eq!(t.config_map("app").await.unwrap()["data"]["k"], "one");

    // Drift on the decrypted Secret is seen (in memory) and undone.
    secrets
        .patch(
            "db",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"stringData": {"token": "edited-by-hand"}})),
        )
        .await
        .unwrap();
    common::cluster::eventually(SECONDS_60, "the edited Secret restored", || async {
        applied_secret(&t).await == Some((PASSWORD.to_string(), TOKEN.to_string()))
    })
    .await;
    let sync = t.syncs().get("shop").await.unwrap();

    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(t.client.clone(), &t.ns)
        .list(&Default::default())
        .await
        .unwrap();
    assert_no_plaintext("status", &serde_json::to_string(&sync.status).unwrap());
    assert_no_plaintext("events", &serde_json::to_string(&events.items).unwrap());
    assert_no_plaintext("the inventory", &config_maps(&t).await);
    assert_no_plaintext("the puller's log", &puller.log_tail());
}
