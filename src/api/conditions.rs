//! kstatus conditions from reconcile observations: pure functions, one place that writes
//! them. The puller turns the engine's summary into an [`Observation`]
//! (`puller::observation`), so these types do not depend on the engine.
//!
//! Following kstatus (what `kubectl wait`, Flux and Argo CD read):
//!
//! | observation | `Ready` | `Reconciling` | `Stalled` |
//! |---|---|---|---|
//! | in progress | Unknown, `Progressing` | True | removed |
//! | succeeded (`Applied`, `Unchanged`, `DriftCorrected`) | True | removed | removed |
//! | transient failure (registry down …) | False, the error's reason | True, `ProgressingWithRetry` | removed |
//! | stalled (bad signature, policy …) | False, the error's reason | removed | True, the error's reason |
//!
//! Reasons are the engine's stable CamelCase `reason()` strings. `lastTransitionTime` changes
//! only when a condition's status changes; reason and message follow every observation.
//! Every written condition and `status.observedGeneration` carry the generation observed.

use std::time::SystemTime;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ArtifactSyncStatus;
use crate::retry::Retry;

/// `Ready`: the last good artifact is applied (and healthy, with `wait`).
pub const READY: &str = "Ready";
/// `Reconciling`: work is in progress or being retried.
pub const RECONCILING: &str = "Reconciling";
/// `Stalled`: retrying will not help until the spec or the artifact changes.
pub const STALLED: &str = "Stalled";

/// The status of a condition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    /// It holds.
    True,
    /// It does not hold.
    False,
    /// Not known yet.
    #[default]
    Unknown,
}

impl ConditionStatus {
    /// `True`, `False` or `Unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

/// A status condition (the shape of `metav1.Condition`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `Reconciling` or `Stalled`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: ConditionStatus,
    /// The generation this condition was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When `status` last changed (RFC 3339).
    pub last_transition_time: String,
    /// Stable CamelCase reason.
    pub reason: String,
    /// What happened, for people.
    pub message: String,
}

/// What one reconcile attempt found, reduced to what conditions need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// A cycle started or is waiting (e.g. for health).
    Progressing {
        /// CamelCase reason, e.g. `Progressing`.
        reason: String,
        /// What is happening.
        message: String,
    },
    /// The artifact is applied.
    Succeeded {
        /// The outcome: `Applied`, `Unchanged`, `DriftCorrected`.
        reason: String,
        /// What was applied.
        message: String,
    },
    /// The cycle failed.
    Failed {
        /// The error's stable reason.
        reason: String,
        /// The error message.
        message: String,
        /// Retry soon (Reconciling) or wait for a change (Stalled).
        retry: Retry,
    },
}

/// Sets `new` in `conditions` (by type), keeping `lastTransitionTime` when the status is
/// unchanged. Conditions stay sorted by type so the written status is deterministic.
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            if old.status == new.status {
                new.last_transition_time = old.last_transition_time.clone();
            }
            *old = new;
        }
        None => {
            conditions.push(new);
            conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
        }
    }
}

/// Removes the condition of `type_`, if present.
pub fn remove_condition(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

/// Writes `observation` into `status` for `generation` at `now` (RFC 3339), following the
/// table in the module docs.
pub fn observe(
    status: &mut ArtifactSyncStatus,
    generation: Option<i64>,
    observation: &Observation,
    now: &str,
) {
    let condition = |type_: &str, status: ConditionStatus, reason: &str, message: &str| Condition {
        type_: type_.into(),
        status,
        observed_generation: generation,
        last_transition_time: now.into(),
        reason: reason.into(),
        message: message.into(),
    };
    let conditions = &mut status.conditions;
    match observation {
        Observation::Progressing { reason, message } => {
            set_condition(
                conditions,
                condition(READY, ConditionStatus::Unknown, reason, message),
            );
            set_condition(
                conditions,
                condition(RECONCILING, ConditionStatus::True, reason, message),
            );
            remove_condition(conditions, STALLED);
        }
        Observation::Succeeded { reason, message } => {
            set_condition(
                conditions,
                condition(READY, ConditionStatus::True, reason, message),
            );
            remove_condition(conditions, RECONCILING);
            remove_condition(conditions, STALLED);
        }
        Observation::Failed {
            reason,
            message,
            retry: Retry::Transient,
        } => {
            set_condition(
                conditions,
                condition(READY, ConditionStatus::False, reason, message),
            );
            set_condition(
                conditions,
                condition(
                    RECONCILING,
                    ConditionStatus::True,
                    "ProgressingWithRetry",
                    message,
                ),
            );
            remove_condition(conditions, STALLED);
        }
        Observation::Failed {
            reason,
            message,
            retry: Retry::Stalled,
        } => {
            set_condition(
                conditions,
                condition(READY, ConditionStatus::False, reason, message),
            );
            set_condition(
                conditions,
                condition(STALLED, ConditionStatus::True, reason, message),
            );
            remove_condition(conditions, RECONCILING);
        }
    }
    status.observed_generation = generation;
}

/// The current time as RFC 3339 with seconds (the format of Kubernetes timestamps).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: &str = "2025-01-01T00:00:00Z";
    const T1: &str = "2025-01-01T00:05:00Z";

    fn get<'a>(s: &'a ArtifactSyncStatus, t: &str) -> Option<&'a Condition> {
        s.conditions.iter().find(|c| c.type_ == t)
    }

    fn failed(retry: Retry) -> Observation {
        Observation::Failed {
            reason: "SignatureInvalid".into(),
            message: "verify: bad signature".into(),
            retry,
        }
    }

    fn succeeded() -> Observation {
        Observation::Succeeded {
            reason: "Applied".into(),
            message: "applied sha256:aa".into(),
        }
    }

    #[test]
    fn success_is_ready_and_clears_reconciling_and_stalled() {
        let mut s = ArtifactSyncStatus::default();
        observe(&mut s, Some(1), &failed(Retry::Stalled), T0);
        observe(&mut s, Some(2), &succeeded(), T1);
        let ready = get(&s, READY).unwrap();
        assert_eq!(ready.status, ConditionStatus::True);
        assert_eq!(ready.reason, "Applied");
        assert_eq!(ready.observed_generation, Some(2));
        assert_eq!(ready.last_transition_time, T1);
        assert!(get(&s, STALLED).is_none());
        assert!(get(&s, RECONCILING).is_none());
        assert_eq!(s.observed_generation, Some(2));
    }

    #[test]
    fn stalled_failure_sets_stalled_with_the_engine_reason() {
        let mut s = ArtifactSyncStatus::default();
        observe(&mut s, Some(3), &failed(Retry::Stalled), T0);
        assert_eq!(get(&s, READY).unwrap().status, ConditionStatus::False);
        let stalled = get(&s, STALLED).unwrap();
        assert_eq!(stalled.status, ConditionStatus::True);
        assert_eq!(stalled.reason, "SignatureInvalid");
        assert!(get(&s, RECONCILING).is_none());
        // Sorted by type, deterministic.
        let types: Vec<_> = s.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Ready", "Stalled"]);
    }

    #[test]
    fn transient_failure_is_reconciling_with_retry() {
        let mut s = ArtifactSyncStatus::default();
        observe(&mut s, Some(1), &failed(Retry::Transient), T0);
        let r = get(&s, RECONCILING).unwrap();
        assert_eq!(r.status, ConditionStatus::True);
        assert_eq!(r.reason, "ProgressingWithRetry");
        assert_eq!(get(&s, READY).unwrap().reason, "SignatureInvalid");
        assert!(get(&s, STALLED).is_none());
    }

    #[test]
    fn transition_time_changes_only_with_status() {
        let mut s = ArtifactSyncStatus::default();
        observe(&mut s, Some(1), &succeeded(), T0);
        let again = Observation::Succeeded {
            reason: "Unchanged".into(),
            message: "sha256:aa is applied".into(),
        };
        observe(&mut s, Some(1), &again, T1);
        let ready = get(&s, READY).unwrap();
        assert_eq!(ready.last_transition_time, T0, "status stayed True");
        assert_eq!(ready.reason, "Unchanged", "reason follows the observation");
        observe(&mut s, Some(1), &failed(Retry::Transient), T1);
        assert_eq!(get(&s, READY).unwrap().last_transition_time, T1);
    }

    #[test]
    fn progressing_is_ready_unknown() {
        let mut s = ArtifactSyncStatus::default();
        let p = Observation::Progressing {
            reason: "Progressing".into(),
            message: "waiting for health".into(),
        };
        observe(&mut s, Some(4), &p, T0);
        assert_eq!(get(&s, READY).unwrap().status, ConditionStatus::Unknown);
        assert_eq!(get(&s, RECONCILING).unwrap().status, ConditionStatus::True);
    }

    #[test]
    fn condition_serializes_like_metav1() {
        let mut s = ArtifactSyncStatus::default();
        observe(&mut s, Some(1), &succeeded(), T0);
        let v = serde_json::to_value(&s.conditions[0]).unwrap();
        assert_eq!(v["type"], "Ready");
        assert_eq!(v["status"], "True");
        assert_eq!(v["lastTransitionTime"], T0);
        assert_eq!(v["observedGeneration"], 1);
    }
}
