//! [`Retry`]: whether a failure is worth retrying soon or needs a change first — the one
//! classification the engine (backoff), the Kubernetes conditions (`Reconciling` or
//! `Stalled`) and the CLI share, kept below all of them.

use serde::Serialize;

/// What to do after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Retry {
    /// Retry soon, with backoff and jitter (network trouble, server errors, local I/O).
    Transient,
    /// Retrying the same input will fail again: wait until the reference changes.
    Stalled,
}
