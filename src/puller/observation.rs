//! From the engine's [`Summary`] to the [`Observation`] the conditions are written from:
//! the one place where the engine's vocabulary meets the custom resource's.

use crate::api::conditions::Observation;
use crate::reconcile::{Outcome, Summary};

/// The observation a cycle's [`Summary`] amounts to, for the conditions.
pub(crate) fn observation(summary: &Summary) -> Observation {
    let applied = summary
        .applied
        .as_ref()
        .map(|d| d.to_string())
        .unwrap_or_else(|| "nothing".into());
    if summary.outcome == Outcome::Abandoned {
        return Observation::Progressing {
            reason: Outcome::Abandoned.name().into(),
            message: "the cycle was abandoned (shutting down); it runs again on start".into(),
        };
    }
    if let Some(f) = &summary.error {
        return Observation::Failed {
            reason: f.reason.clone(),
            message: format!("{}: {}", f.step.name(), f.message),
            retry: f.retry,
        };
    }
    let message = match summary.outcome {
        Outcome::Applied => format!("applied {applied}"),
        Outcome::DriftCorrected => format!(
            "{applied} is applied; corrected drift in {} objects",
            summary.restored.len()
        ),
        _ => format!("{applied} is applied"),
    };
    Observation::Succeeded {
        reason: summary.outcome.name().into(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::{Failure, Retry, Step};

    fn summary(outcome: Outcome, error: Option<Failure>) -> Summary {
        Summary::for_test(outcome, error)
    }

    #[test]
    fn summary_maps_to_observation() {
        assert_eq!(
            observation(&summary(Outcome::Unchanged, None)),
            Observation::Succeeded {
                reason: "Unchanged".into(),
                message: "nothing is applied".into()
            }
        );
        let f = Failure {
            step: Step::Verify,
            reason: "SignatureInvalid".into(),
            message: "no valid signature".into(),
            retry: Retry::Stalled,
            digest: None,
        };
        assert_eq!(
            observation(&summary(Outcome::Rejected, Some(f))),
            Observation::Failed {
                reason: "SignatureInvalid".into(),
                message: "verify: no valid signature".into(),
                retry: Retry::Stalled
            }
        );
        assert!(matches!(
            observation(&summary(Outcome::Abandoned, None)),
            Observation::Progressing { .. }
        ));
    }
}
