//! Issue 17, "Failures must stay inside one sync", against the real kube-apiserver of
//! `scripts/cluster.sh` (tests/common/cluster.rs): an object the puller cannot read stops
//! only itself, the CRDs make the server refuse such objects, status writes can clear
//! fields (and idle cycles write nothing), and Event notes fit the server's byte limit.
//!
//! The test named `changes_crds_…` replaces the cluster-wide CRDs for a few seconds (with
//! the issue 17 CEL rules stripped) and restores this checkout's CRDs when it ends, also on
//! failure. Other suites on the same server see the old CRDs during that window.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::{Duration, Instant};

use common::cluster::{
    applied, config_map, eventually, ready_at, unsigned_spec, Cluster, Tenant, SECONDS_30,
    SECONDS_60,
};
use common::TestRegistry;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::Resource;
use serde_json::{json, Value};
use tresor::api::{ArtifactSync, TrustPolicy};
use tresor::puller::{event_note, NOTE_MAX_BYTES, REQUESTED_AT};

/// Whether a CEL rule is one issue 17 added (what CRDs from before it lack).
fn added_by_issue_17(rule: &str) -> bool {
    rule.contains("4294967295")
        || rule.contains("self.metadata.name.size()")
        || rule.contains("[a-z0-9]([-a-z0-9]*[a-z0-9])?")
}

/// Removes the issue 17 rules from every `x-kubernetes-validations` under `node`.
fn strip_rules(node: &mut Value) {
    match node {
        Value::Object(map) => {
            if let Some(Value::Array(rules)) = map.get_mut("x-kubernetes-validations") {
                rules.retain(|r| !added_by_issue_17(r["rule"].as_str().unwrap_or("")));
                if rules.is_empty() {
                    map.remove("x-kubernetes-validations");
                }
            }
            map.values_mut().for_each(strip_rules);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_rules),
        _ => {}
    }
}

/// This checkout's CRDs without the issue 17 rules, as a JSON List for `kubectl apply -f -`.
fn crds_without_the_rules() -> String {
    let mut items = serde_json::to_value(tresor::api::crdgen::crds()).unwrap();
    strip_rules(&mut items);
    assert!(!items.to_string().contains("4294967295"));
    json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string()
}

/// Restores this checkout's CRDs when dropped, also when the test fails.
struct CrdsRestored(&'static Cluster);

impl CrdsRestored {
    fn restore(&self) {
        let out = self
            .0
            .apply_crds(self.0.crds_file().to_str().unwrap(), None);
        if !out.status.success() {
            eprintln!(
                "cannot restore the CRDs: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

impl Drop for CrdsRestored {
    fn drop(&mut self) {
        self.restore();
    }
}

/// Deletes a TrustPolicy when dropped (they are cluster-wide).
struct PolicyDeleted(&'static Cluster, String);

impl Drop for PolicyDeleted {
    fn drop(&mut self) {
        self.0.kubectl(&[
            "delete",
            "trustpolicy",
            &self.1,
            "--ignore-not-found",
            "--wait=false",
        ]);
    }
}

fn policy_resource() -> ApiResource {
    ApiResource::erase::<TrustPolicy>(&())
}

/// Creates (or with `dry_run` only offers) a TrustPolicy from raw JSON.
async fn create_raw_policy(
    t: &Tenant,
    name: &str,
    spec: Value,
    dry_run: bool,
) -> Result<DynamicObject, kube::Error> {
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "tresor.dev/v1alpha1", "kind": "TrustPolicy",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap();
    Api::<DynamicObject>::all_with(t.client.clone(), &policy_resource())
        .create(
            &PostParams {
                dry_run,
                ..PostParams::default()
            },
            &object,
        )
        .await
}

/// A sync spec the Rust types cannot read: `require: 0`.
fn require_zero_spec() -> Value {
    json!({"url": "oci://127.0.0.1:5001/tresor-test/unreadable", "ref": {"tag": "v"},
        "interval": "2s", "insecure": true,
        "verify": {"authorities": [{"name": "k", "key": {"secretRef": {"name": "k"}}}],
            "require": 0}})
}

/// A TrustPolicy spec covering namespace `ns` with `require`.
fn policy_spec(ns: &str, require: Value) -> Value {
    json!({"authorities": [{"name": "k", "key": {"secretRef": {"name": "k", "namespace": ns}}}],
        "require": require, "namespaces": {"names": [ns]}})
}

/// Condition `type_` of an ArtifactSync read raw: (status, reason, message).
async fn raw_condition(t: &Tenant, name: &str, type_: &str) -> Option<(String, String, String)> {
    let resource = ApiResource::erase::<ArtifactSync>(&());
    let object = Api::<DynamicObject>::namespaced_with(t.client.clone(), &t.ns, &resource)
        .get_opt(name)
        .await
        .unwrap()?;
    let conditions = object.data["status"]["conditions"].as_array()?.clone();
    conditions.iter().find(|c| c["type"] == type_).map(|c| {
        let s = |f: &str| c[f].as_str().unwrap_or("").to_string();
        (s("status"), s("reason"), s("message"))
    })
}

/// An ArtifactSync the puller cannot read (written under CRDs without the issue 17 rules)
/// gets a Stalled condition naming the field, and a TrustPolicy it cannot read refuses the
/// syncs it covers (fails closed, with an Event on the policy); a good sync in another
/// namespace, served by the same puller, is applied all the same. With this checkout's
/// CRDs back, the server refuses such objects. Changes the cluster-wide CRDs for seconds.
#[tokio::test]
async fn changes_crds_an_unreadable_sync_or_policy_stops_only_itself() {
    let bad = Tenant::new("iso-bad").await;
    let good = Tenant::new("iso-good").await;
    let covered = Tenant::new("iso-covered").await;
    let cluster = bad.cluster;
    // One puller serves all three namespaces.
    let run = bad.ns.clone();
    let registry = TestRegistry::plain();
    let (good_repo, good_digest) =
        good.push(&registry, None, "v", &[("a.yaml", &config_map("a", "one"))]);
    let (covered_repo, _) =
        covered.push(&registry, None, "v", &[("a.yaml", &config_map("a", "one"))]);
    let policy = format!("{}-strict", covered.ns);

    // The window with the old CRDs: as short as the bad objects take to be created.
    let crds = CrdsRestored(cluster);
    let out = cluster.apply_crds("-", Some(&crds_without_the_rules()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _policy_deleted = PolicyDeleted(cluster, policy.clone());
    let deadline = Instant::now() + SECONDS_30;
    let mut sync_created = false;
    let mut policy_created = false;
    while !(sync_created && policy_created) {
        assert!(
            Instant::now() < deadline,
            "the server kept refusing the bad objects under the old CRDs"
        );
        sync_created = sync_created
            || bad
                .create_raw_sync("bad", &run, require_zero_spec(), false)
                .await
                .is_ok();
        policy_created = policy_created
            || create_raw_policy(
                &covered,
                &policy,
                policy_spec(&covered.ns, json!("most")),
                false,
            )
            .await
            .is_ok();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    crds.restore();

    good.create_raw_sync("good", &run, unsigned_spec(&good_repo, "v", "2s"), false)
        .await
        .unwrap();
    covered
        .create_raw_sync(
            "covered",
            &run,
            unsigned_spec(&covered_repo, "v", "2s"),
            false,
        )
        .await
        .unwrap();
    let puller = cluster.puller(&run, &[]);

    // The good sync is applied although the same puller watches the unreadable one.
    good.wait_sync(&puller, "good", SECONDS_60, "applied", |s| {
        ready_at(s, &good_digest)
    })
    .await;
    assert!(good.config_map("a").await.is_some());

    // The unreadable sync says why, naming the field.
    eventually(SECONDS_30, "the bad sync stalled", || async {
        raw_condition(&bad, "bad", "Stalled")
            .await
            .is_some_and(|(s, r, _)| s == "True" && r == "InvalidSpec")
    })
    .await;
    let (_, _, message) = raw_condition(&bad, "bad", "Stalled").await.unwrap();
    assert!(message.contains("spec.verify.require"), "{message}");
    let (ready, reason, _) = raw_condition(&bad, "bad", "Ready").await.unwrap();
    assert_eq!((ready.as_str(), reason.as_str()), ("False", "InvalidSpec"));
    // `tresor status` across all namespaces lists it as invalid, naming the field, and
    // hides nothing.
    let listed = tresor::cli::status::list(bad.client.clone(), None)
        .await
        .unwrap();
    let rows = tresor::cli::status::rows(&listed, std::time::SystemTime::now());
    let row = rows
        .iter()
        .find(|r| r.namespace == bad.ns && r.name == "bad")
        .unwrap();
    assert_eq!(
        (row.ready.as_str(), row.reason.as_str()),
        ("False", "InvalidSpec")
    );
    assert!(
        row.message.contains("spec.verify.require"),
        "{}",
        row.message
    );
    assert_eq!(row.url, require_zero_spec()["url"]);
    assert!(rows
        .iter()
        .any(|r| r.namespace == good.ns && r.name == "good" && r.ready == "True"));

    // The unreadable policy fails closed for the namespace it covers: nothing applied.
    let (_, reason, message) = covered
        .wait_not_ready(&puller, "covered", SECONDS_30, "refused")
        .await;
    assert_eq!(reason, "TrustPolicyUnreadable", "{message}");
    assert!(message.contains(&policy), "{message}");
    assert!(message.contains("spec.require"), "{message}");
    assert!(
        covered.config_map("a").await.is_none(),
        "applied without its policy"
    );
    // … and is reported on the policy itself.
    eventually(SECONDS_30, "an Event on the policy", || async {
        let out = cluster.kubectl_ok(&[
            "get",
            "events",
            "-n",
            "default",
            "--field-selector",
            &format!("involvedObject.name={policy}"),
            "-o",
            "json",
        ]);
        let events: Value = serde_json::from_str(&out).unwrap();
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["reason"] == "InvalidSpec" && e["type"] == "Warning")
    })
    .await;
    drop(_policy_deleted);
    drop(puller);

    // With this checkout's CRDs the server refuses all of it (once they are in effect:
    // another suite starting now may install its own deploy/ for a moment).
    let refused =
        |result: Result<DynamicObject, kube::Error>, what: &str, needle: &str| match result {
            Ok(_) => panic!("{what}: accepted"),
            Err(e) => assert!(e.to_string().contains(needle), "{what}: {e}"),
        };
    eventually(SECONDS_30, "the rules in effect", || async {
        let r = bad
            .create_raw_sync("bad-again", &run, require_zero_spec(), true)
            .await;
        if r.is_ok() {
            crds.restore();
        }
        r.is_err()
    })
    .await;
    let require = "require must be any, all or a number of authorities from 1 to 4294967295";
    for value in [
        json!(0),
        json!(-1),
        json!(4_294_967_296_u64),
        json!("most"),
        json!("0"),
    ] {
        let mut spec = require_zero_spec();
        spec["verify"]["require"] = value.clone();
        refused(
            bad.create_raw_sync("bad-again", &run, spec, true).await,
            &format!("ArtifactSync require {value}"),
            require,
        );
        refused(
            create_raw_policy(
                &covered,
                &policy,
                policy_spec(&covered.ns, value.clone()),
                true,
            )
            .await,
            &format!("TrustPolicy require {value}"),
            require,
        );
    }
    for value in [json!(1), json!("1"), json!("any"), json!("all")] {
        let mut spec = require_zero_spec();
        spec["verify"]["require"] = value.clone();
        bad.create_raw_sync("good-require", &run, spec, true)
            .await
            .unwrap_or_else(|e| panic!("require {value}: {e}"));
    }
    refused(
        bad.create_raw_sync(
            &"n".repeat(64),
            &run,
            unsigned_spec(&good_repo, "v", "1m"),
            true,
        )
        .await,
        "a 64-character name",
        "at most 63 characters",
    );
    bad.create_raw_sync(
        &"n".repeat(63),
        &run,
        unsigned_spec(&good_repo, "v", "1m"),
        true,
    )
    .await
    .unwrap();
    for account in ["a:b", "Deployer", "a.b", "-a"] {
        let mut spec = unsigned_spec(&good_repo, "v", "1m");
        spec["serviceAccountName"] = json!(account);
        refused(
            bad.create_raw_sync("sa", &run, spec, true).await,
            &format!("serviceAccountName {account:?}"),
            "serviceAccountName must name a ServiceAccount",
        );
    }
}

/// Stale status fields are cleared: `lastHandledReconcileAt` once the annotation is gone,
/// `inventory` once `allowEmpty` pruned everything. Then idle cycles write nothing: the
/// puller logs no status write and the resourceVersion stays.
#[tokio::test]
async fn status_clears_stale_fields_and_idle_cycles_write_nothing() {
    let t = Tenant::new("status-clear").await;
    let registry = TestRegistry::plain();
    let (repo, digest) = t.push(&registry, None, "v", &[("a.yaml", &config_map("a", "one"))]);
    // -v twice: debug, one "status written" line per status write.
    let puller = t.puller(&["-v"]);
    t.create_sync("app", unsigned_spec(&repo, "v", "1s")).await;
    t.wait_sync(&puller, "app", SECONDS_60, "applied", |s| {
        ready_at(s, &digest)
    })
    .await;

    let annotate = |value: Value| {
        let syncs = t.syncs();
        async move {
            syncs
                .patch(
                    "app",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"annotations": {REQUESTED_AT: value}}})),
                )
                .await
                .unwrap();
        }
    };
    let handled = |s: &ArtifactSync| {
        s.status
            .as_ref()
            .and_then(|st| st.last_handled_reconcile_at.clone())
    };
    annotate(json!("now-1")).await;
    t.wait_sync(&puller, "app", SECONDS_30, "handled", |s| {
        handled(s).as_deref() == Some("now-1")
    })
    .await;
    annotate(Value::Null).await;
    t.wait_sync(
        &puller,
        "app",
        SECONDS_30,
        "cleared lastHandledReconcileAt",
        |s| handled(s).is_none(),
    )
    .await;

    let (_, empty) = t.push(&registry, Some(&repo), "v", &[("README.md", "nothing\n")]);
    t.patch_sync("app", json!({"allowEmpty": true})).await;
    let sync = t
        .wait_sync(&puller, "app", SECONDS_30, "empty and pruned", |s| {
            applied(s) == Some(&empty)
                && s.status.as_ref().is_some_and(|st| st.inventory.is_empty())
        })
        .await;
    assert!(ready_at(&sync, &empty));
    assert!(t.config_map("a").await.is_none(), "a was pruned");

    // Idle: 1 s interval, several cycles, no write.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = t.syncs().get("app").await.unwrap();
    let writes = puller.log_count("status written");
    assert!(
        writes > 0,
        "the write log is missing:\n{}",
        puller.log_tail()
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    let after = t.syncs().get("app").await.unwrap();
    assert_eq!(
        puller.log_count("status written") - writes,
        0,
        "status writes in 6 idle cycles:\n{}",
        puller.log_tail()
    );
    assert_eq!(
        before.metadata.resource_version, after.metadata.resource_version,
        "the sync changed while idle"
    );
}

/// An Event whose message is long and multi-byte is accepted by the server once cut with
/// `event_note` (its limit is 1,024 bytes, not characters).
#[tokio::test]
async fn a_long_multi_byte_event_note_is_accepted_by_the_server() {
    let t = Tenant::new("event-note").await;
    let cm: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": t.ns},
    }))
    .unwrap();
    let cm = Api::namespaced(t.client.clone(), &t.ns)
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
    let message = "digest ≥ v1 … refused; ".repeat(100);
    assert!(message.chars().count() < 3000 && message.len() > NOTE_MAX_BYTES);
    let note = event_note(&message);
    let recorder = Recorder::new(
        t.client.clone(),
        Reporter {
            controller: "tresor-tests".into(),
            instance: None,
        },
    );
    let event = Event {
        type_: EventType::Warning,
        reason: "Refused".into(),
        note: Some(note.clone()),
        action: "Reconcile".into(),
        secondary: None,
    };
    recorder
        .publish(&event, &cm.object_ref(&()))
        .await
        .unwrap_or_else(|e| panic!("the server refused a {}-byte note: {e}", note.len()));
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(t.client.clone(), &t.ns);
    let stored = events.list(&Default::default()).await.unwrap();
    assert!(
        stored
            .items
            .iter()
            .any(|e| e.note.as_deref() == Some(note.as_str())),
        "the note is not stored as sent"
    );
}
