//! Object-level diff between two sets of manifest objects.
//!
//! [`diff`] pairs objects by [`ObjectKey`] and compares them semantically: map key order,
//! formatting and comments do not count. Direction: **local** is what would be pushed (a
//! directory), **remote** is what is already there (an artifact). So `added` means "pushing
//! local would add this", `removed` means "pushing local would drop this".
//!
//! Changed objects carry a unified diff (3 lines of context) of their canonical YAML
//! rendering, map keys sorted, from remote (`a/…`) to local (`b/…`). Values under `data` and
//! `stringData` of core `Secret` objects are never shown: they render as `***`, or
//! `*** (before)` / `*** (after)` where they differ, like `kubectl diff`.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use serde_norway::{Mapping, Value};
use similar::TextDiff;

use super::objects::{Object, ObjectKey};

/// Lines of context around each change in [`ChangedObject::unified_diff`].
const CONTEXT_LINES: usize = 3;

/// The difference between a local and a remote object set; see [`diff`] for the direction.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ObjectDiff {
    /// In local, not in remote: pushing local would add these. Sorted by key.
    pub added: Vec<ObjectKey>,
    /// In remote, not in local: pushing local would remove these. Sorted by key.
    pub removed: Vec<ObjectKey>,
    /// In both, with different content. Sorted by key.
    pub changed: Vec<ChangedObject>,
}

/// An object present on both sides whose content differs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChangedObject {
    /// Which object.
    pub key: ObjectKey,
    /// Unified diff from the remote to the local canonical YAML, headers
    /// `--- a/<key> (remote)` and `+++ b/<key> (local)`.
    pub unified_diff: String,
}

/// Compares `local` (what would be pushed) with `remote` (what is there).
///
/// Objects are paired by [`ObjectKey`]; keys are expected to be unique on each side (as
/// [`super::objects::parse_tree`] guarantees) — if not, the first object with a key wins.
pub fn diff(local: &[Object], remote: &[Object]) -> ObjectDiff {
    let local = by_key(local);
    let remote = by_key(remote);
    let mut result = ObjectDiff::default();
    for (key, local_object) in &local {
        match remote.get(key) {
            None => result.added.push((*key).clone()),
            Some(remote_object) => {
                if local_object.value == remote_object.value {
                    continue;
                }
                let (before, after) =
                    canonical_pair(key, &remote_object.value, &local_object.value);
                if before != after {
                    result.changed.push(ChangedObject {
                        key: (*key).clone(),
                        unified_diff: unified(key, &before, &after),
                    });
                }
            }
        }
    }
    result.removed = remote
        .keys()
        .filter(|key| !local.contains_key(*key))
        .map(|key| (*key).clone())
        .collect();
    result
}

impl ObjectDiff {
    /// True when both sides hold the same objects with the same content.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }

    /// Human summary: `+ key` for added, `- key` for removed, `~ key` followed by the
    /// indented unified diff for changed, then a count line (`1 added, 1 removed, 1 changed`).
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        for key in &self.added {
            let _ = writeln!(out, "+ {key}");
        }
        for key in &self.removed {
            let _ = writeln!(out, "- {key}");
        }
        for changed in &self.changed {
            let _ = writeln!(out, "~ {}", changed.key);
            for line in changed.unified_diff.lines() {
                let _ = writeln!(out, "    {line}");
            }
        }
        let _ = writeln!(
            out,
            "{} added, {} removed, {} changed",
            self.added.len(),
            self.removed.len(),
            self.changed.len()
        );
        out
    }
}

fn by_key(objects: &[Object]) -> BTreeMap<&ObjectKey, &Object> {
    let mut map = BTreeMap::new();
    for object in objects {
        map.entry(&object.key).or_insert(object);
    }
    map
}

/// Canonical YAML of both sides, Secret values masked.
fn canonical_pair(key: &ObjectKey, remote: &Value, local: &Value) -> (String, String) {
    let mut remote = canonical(remote);
    let mut local = canonical(local);
    if key.group.is_empty() && key.kind == "Secret" {
        mask_secret(&mut remote, &mut local);
    }
    (render(&remote), render(&local))
}

fn unified(key: &ObjectKey, before: &str, after: &str) -> String {
    TextDiff::from_lines(before, after)
        .unified_diff()
        .context_radius(CONTEXT_LINES)
        .header(&format!("a/{key} (remote)"), &format!("b/{key} (local)"))
        .to_string()
}

fn render(value: &Value) -> String {
    serde_norway::to_string(value).unwrap_or_else(|err| format!("# cannot render as YAML: {err}\n"))
}

/// A copy of `value` with every mapping's keys sorted.
fn canonical(value: &Value) -> Value {
    match value {
        Value::Mapping(map) => {
            let mut entries: Vec<(&Value, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| compare_keys(a.0, b.0));
            Value::Mapping(
                entries
                    .into_iter()
                    .map(|(k, v)| (canonical(k), canonical(v)))
                    .collect::<Mapping>(),
            )
        }
        Value::Sequence(items) => Value::Sequence(items.iter().map(canonical).collect()),
        Value::Tagged(tagged) => {
            let mut tagged = tagged.clone();
            tagged.value = canonical(&tagged.value);
            Value::Tagged(tagged)
        }
        other => other.clone(),
    }
}

/// Strings by text; other keys (numbers, booleans, …) by their YAML form, after strings.
fn compare_keys(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::String(a), Value::String(b)) => a.cmp(b),
        (Value::String(_), _) => Ordering::Less,
        (_, Value::String(_)) => Ordering::Greater,
        _ => render(a).cmp(&render(b)),
    }
}

/// Replaces Secret values so that only whether they changed is visible.
fn mask_secret(remote: &mut Value, local: &mut Value) {
    for field in ["data", "stringData"] {
        let before = remote.get(field).and_then(Value::as_mapping).cloned();
        let after = local.get(field).and_then(Value::as_mapping).cloned();
        if let Some(Value::Mapping(map)) = remote.get_mut(field) {
            mask_side(map, after.as_ref(), "*** (before)");
        }
        if let Some(Value::Mapping(map)) = local.get_mut(field) {
            mask_side(map, before.as_ref(), "*** (after)");
        }
    }
}

fn mask_side(map: &mut Mapping, other: Option<&Mapping>, changed: &str) {
    for (key, value) in map.iter_mut() {
        let same = other.and_then(|o| o.get(key)) == Some(&*value);
        *value = Value::String(if same { "***" } else { changed }.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::objects::{parse_tree, ContentMode};

    fn objects(files: &[(&str, &str)]) -> Vec<Object> {
        let files: Vec<_> = files
            .iter()
            .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
            .collect();
        parse_tree(&files, ContentMode::Kubernetes).unwrap()
    }

    const DEPLOY: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
spec:
  replicas: 1
  template:
    spec:
      containers:
      - name: web
        image: nginx@sha256:aaaa
";

    #[test]
    fn same_content_in_other_key_order_and_format_is_empty() {
        let reordered = "\
# a comment
kind: Deployment
spec:
  template: {spec: {containers: [{image: 'nginx@sha256:aaaa', name: web}]}}
  replicas: 1
metadata: {namespace: default, name: web}
apiVersion: apps/v1
";
        let json = r#"{"metadata": {"name": "web", "namespace": "default"}, "apiVersion": "apps/v1",
            "kind": "Deployment", "spec": {"replicas": 1, "template": {"spec": {"containers":
            [{"name": "web", "image": "nginx@sha256:aaaa"}]}}}}"#;
        let local = objects(&[("d.yaml", DEPLOY)]);
        for remote in [
            objects(&[("x/other.yaml", reordered)]),
            objects(&[("d.json", json)]),
        ] {
            let d = diff(&local, &remote);
            assert!(d.is_empty(), "{}", d.render_text());
            assert_eq!(d.render_text(), "0 added, 0 removed, 0 changed\n");
        }
    }

    #[test]
    fn added_removed_and_changed_are_detected() {
        let cm = |name: &str| {
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: default\n")
        };
        let local_deploy = DEPLOY.replace("replicas: 1", "replicas: 3");
        let local = objects(&[("d.yaml", &local_deploy), ("new.yaml", &cm("new"))]);
        let remote = objects(&[("d.yaml", DEPLOY), ("old.yaml", &cm("old"))]);
        let d = diff(&local, &remote);

        let names = |keys: &[ObjectKey]| keys.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(names(&d.added), ["ConfigMap/default/new"]);
        assert_eq!(names(&d.removed), ["ConfigMap/default/old"]);
        assert_eq!(d.changed.len(), 1);
        assert_eq!(d.changed[0].key.to_string(), "Deployment.apps/default/web");
        assert!(!d.is_empty());

        let udiff = &d.changed[0].unified_diff;
        assert_eq!(
            udiff,
            "\
--- a/Deployment.apps/default/web (remote)
+++ b/Deployment.apps/default/web (local)
@@ -4,7 +4,7 @@
   name: web
   namespace: default
 spec:
-  replicas: 1
+  replicas: 3
   template:
     spec:
       containers:
"
        );
        let text = d.render_text();
        assert!(text.starts_with("+ ConfigMap/default/new\n- ConfigMap/default/old\n~ Deployment.apps/default/web\n    --- a/"), "{text}");
        assert!(
            text.contains("\n    -  replicas: 1\n    +  replicas: 3\n"),
            "{text}"
        );
        assert!(text.ends_with("1 added, 1 removed, 1 changed\n"), "{text}");
    }

    #[test]
    fn direction_is_local_over_remote() {
        let local = objects(&[("d.yaml", DEPLOY)]);
        let d = diff(&local, &[]);
        assert_eq!(d.added.len(), 1);
        assert!(d.removed.is_empty());
        let d = diff(&[], &local);
        assert_eq!(d.removed.len(), 1);
        assert!(d.added.is_empty());
    }

    #[test]
    fn secret_values_are_masked() {
        let secret = |pw: &str| {
            format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\ndata:\n  password: {pw}\n  user: YWRtaW4=\n")
        };
        let d = diff(
            &objects(&[("s.yaml", &secret("bmV3"))]),
            &objects(&[("s.yaml", &secret("b2xk"))]),
        );
        assert_eq!(d.changed.len(), 1);
        let udiff = &d.changed[0].unified_diff;
        assert!(
            !udiff.contains("bmV3") && !udiff.contains("b2xk") && !udiff.contains("YWRtaW4="),
            "{udiff}"
        );
        assert!(
            udiff.contains("-  password: '*** (before)'\n+  password: '*** (after)'\n"),
            "{udiff}"
        );
        assert!(udiff.contains("   user: '***'\n"), "{udiff}");
    }
}
