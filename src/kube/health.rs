//! Health of live objects by kstatus-like rules: is the object's controller done
//! reconciling it, and did that succeed?
//!
//! - Deployment: `status.observedGeneration >= metadata.generation`, `updatedReplicas`,
//!   `availableReplicas` and `replicas` all equal to `spec.replicas` (default 1; old
//!   replicas gone), no `Progressing=False` (`ProgressDeadlineExceeded` is a failure).
//! - StatefulSet: observed generation, `readyReplicas` and `updatedReplicas` equal to
//!   `spec.replicas`, `currentRevision == updateRevision` (when both are set).
//! - DaemonSet: observed generation, `updatedNumberScheduled` and `numberAvailable` equal
//!   to `desiredNumberScheduled`.
//! - Job: `Complete=True` is healthy, `Failed=True` is a failure, anything else in progress.
//! - CustomResourceDefinition: `Established=True`.
//! - Pod: `Succeeded`, or `Running` with `Ready=True`; `Failed` is a failure.
//! - Anything else with a status: `observedGeneration` (if present) caught up, a
//!   `Stalled=True` condition is a failure, a `Ready` condition must be `True` when present.
//!   Without status or conditions the object is healthy once it exists.

use serde_json::Value;

/// The health of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Reconciled and healthy.
    Current,
    /// Not there yet, with why (e.g. `1 of 2 updated replicas available`).
    InProgress(String),
    /// Failed for good, with why.
    Failed(String),
}

/// Kinds that never have a status worth waiting for (no GET needed).
pub fn has_status(group: &str, kind: &str) -> bool {
    !matches!(
        (group, kind),
        (
            "",
            "ConfigMap" | "Secret" | "ServiceAccount" | "Namespace" | "Service"
        ) | (
            "rbac.authorization.k8s.io",
            "Role" | "RoleBinding" | "ClusterRole" | "ClusterRoleBinding"
        )
    )
}

/// The `status` of condition `kind` (`Some(true)` for `"True"`), if the object has it.
pub fn condition(object: &Value, kind: &str) -> Option<bool> {
    object
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
        .and_then(|c| c.get("status").and_then(Value::as_str))
        .map(|s| s == "True")
}

fn int(object: &Value, pointer: &str) -> Option<i64> {
    object.pointer(pointer).and_then(Value::as_i64)
}

fn text<'a>(object: &'a Value, pointer: &str) -> Option<&'a str> {
    object.pointer(pointer).and_then(Value::as_str)
}

/// Whether the controller has seen the latest spec.
fn observed(object: &Value) -> Result<(), Health> {
    match (
        int(object, "/metadata/generation"),
        int(object, "/status/observedGeneration"),
    ) {
        (Some(generation), Some(seen)) if seen < generation => Err(Health::InProgress(format!(
            "generation {generation} not observed yet (observed {seen})"
        ))),
        (Some(_), None) if object.get("status").is_none_or(Value::is_null) => {
            Err(Health::InProgress("no status yet".into()))
        }
        _ => Ok(()),
    }
}

/// The health of `object` (a live object as returned by the API server).
pub fn health(object: &Value) -> Health {
    let group = text(object, "/apiVersion")
        .and_then(|v| v.split_once('/'))
        .map_or("", |(g, _)| g);
    let kind = text(object, "/kind").unwrap_or_default();
    let verdict = match (group, kind) {
        ("apps", "Deployment") => deployment(object),
        ("apps", "StatefulSet") => stateful_set(object),
        ("apps", "DaemonSet") => daemon_set(object),
        ("batch", "Job") => job(object),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            match condition(object, "Established") {
                Some(true) => Ok(()),
                _ => Err(Health::InProgress("not established".into())),
            }
        }
        ("", "Pod") => pod(object),
        _ => generic(object),
    };
    verdict.err().unwrap_or(Health::Current)
}

fn replicas(object: &Value) -> i64 {
    int(object, "/spec/replicas").unwrap_or(1)
}

fn deployment(o: &Value) -> Result<(), Health> {
    observed(o)?;
    if condition(o, "Progressing") == Some(false) {
        return Err(Health::Failed(
            text_condition_reason(o, "Progressing").unwrap_or("progress deadline exceeded".into()),
        ));
    }
    let want = replicas(o);
    let updated = int(o, "/status/updatedReplicas").unwrap_or(0);
    let available = int(o, "/status/availableReplicas").unwrap_or(0);
    let total = int(o, "/status/replicas").unwrap_or(0);
    if updated < want {
        return Err(Health::InProgress(format!(
            "{updated} of {want} replicas updated"
        )));
    }
    if total > updated {
        return Err(Health::InProgress(format!(
            "{} old replicas pending termination",
            total - updated
        )));
    }
    if available < want {
        return Err(Health::InProgress(format!(
            "{available} of {want} updated replicas available"
        )));
    }
    Ok(())
}

fn stateful_set(o: &Value) -> Result<(), Health> {
    observed(o)?;
    let want = replicas(o);
    let ready = int(o, "/status/readyReplicas").unwrap_or(0);
    let updated = int(o, "/status/updatedReplicas").unwrap_or(0);
    if updated < want {
        return Err(Health::InProgress(format!(
            "{updated} of {want} replicas updated"
        )));
    }
    if ready < want {
        return Err(Health::InProgress(format!(
            "{ready} of {want} replicas ready"
        )));
    }
    match (
        text(o, "/status/currentRevision"),
        text(o, "/status/updateRevision"),
    ) {
        (Some(c), Some(u)) if c != u => Err(Health::InProgress(format!(
            "revision {u} rolling out (current {c})"
        ))),
        _ => Ok(()),
    }
}

fn daemon_set(o: &Value) -> Result<(), Health> {
    observed(o)?;
    let want = int(o, "/status/desiredNumberScheduled").unwrap_or(0);
    let updated = int(o, "/status/updatedNumberScheduled").unwrap_or(0);
    let available = int(o, "/status/numberAvailable").unwrap_or(0);
    if updated < want {
        return Err(Health::InProgress(format!(
            "{updated} of {want} pods updated"
        )));
    }
    if available < want {
        return Err(Health::InProgress(format!(
            "{available} of {want} pods available"
        )));
    }
    Ok(())
}

fn job(o: &Value) -> Result<(), Health> {
    if condition(o, "Failed") == Some(true) {
        return Err(Health::Failed(
            text_condition_reason(o, "Failed").unwrap_or("job failed".into()),
        ));
    }
    if condition(o, "Complete") == Some(true) {
        return Ok(());
    }
    Err(Health::InProgress("job not complete".into()))
}

fn pod(o: &Value) -> Result<(), Health> {
    match text(o, "/status/phase") {
        Some("Succeeded") => Ok(()),
        Some("Failed") => Err(Health::Failed("pod failed".into())),
        Some("Running") if condition(o, "Ready") == Some(true) => Ok(()),
        phase => Err(Health::InProgress(format!(
            "pod {} and not ready",
            phase.unwrap_or("pending")
        ))),
    }
}

fn generic(o: &Value) -> Result<(), Health> {
    if o.pointer("/status/observedGeneration").is_some() {
        observed(o)?;
    }
    if condition(o, "Stalled") == Some(true) {
        return Err(Health::Failed(
            text_condition_reason(o, "Stalled").unwrap_or("stalled".into()),
        ));
    }
    match condition(o, "Ready") {
        Some(false) => Err(Health::InProgress(
            text_condition_reason(o, "Ready").unwrap_or("not ready".into()),
        )),
        _ => Ok(()),
    }
}

/// `reason: message` of condition `kind`.
fn text_condition_reason(o: &Value, kind: &str) -> Option<String> {
    let c = o
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))?;
    let reason = c.get("reason").and_then(Value::as_str).unwrap_or_default();
    let message = c.get("message").and_then(Value::as_str).unwrap_or_default();
    Some(
        format!("{reason}: {message}")
            .trim_matches([':', ' '])
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn deployment_rules() {
        let ok = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"generation": 2}, "spec": {"replicas": 2},
            "status": {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}});
        assert_eq!(health(&ok), Health::Current);
        let mut stale = ok.clone();
        stale["status"]["observedGeneration"] = json!(1);
        assert!(matches!(health(&stale), Health::InProgress(_)));
        let mut unavailable = ok.clone();
        unavailable["status"]["availableReplicas"] = json!(0);
        assert_eq!(
            health(&unavailable),
            Health::InProgress("0 of 2 updated replicas available".into())
        );
        let mut deadline = ok;
        deadline["status"]["conditions"] = json!([{"type": "Progressing", "status": "False",
            "reason": "ProgressDeadlineExceeded"}]);
        assert!(matches!(health(&deadline), Health::Failed(_)));
    }

    #[test]
    fn job_and_generic_rules() {
        let job = |t: &str| {
            json!({"apiVersion": "batch/v1", "kind": "Job",
            "status": {"conditions": [{"type": t, "status": "True"}]}})
        };
        assert_eq!(health(&job("Complete")), Health::Current);
        assert!(matches!(health(&job("Failed")), Health::Failed(_)));
        let cr = json!({"apiVersion": "x.dev/v1", "kind": "Thing",
            "status": {"conditions": [{"type": "Ready", "status": "False", "reason": "Waiting"}]}});
        assert_eq!(health(&cr), Health::InProgress("Waiting".into()));
        let plain = json!({"apiVersion": "x.dev/v1", "kind": "Thing"});
        assert_eq!(health(&plain), Health::Current);
        assert!(!has_status("", "ConfigMap"));
    }
}
