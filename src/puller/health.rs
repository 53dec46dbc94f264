//! What `/readyz` and `/healthz` answer: the puller's own view of whether it can do its work
//! (readiness) and whether it is stuck (liveness). See docs/puller-endpoints.md.
//!
//! - **Ready** when the ArtifactSync watch has completed its first list and the TrustPolicy
//!   and Namespace watches are current. A standby replica (`--leader-elect`, another replica
//!   holds the Lease) starts no watches: it is Ready while its last Lease call reached the
//!   API server. Standbys stay Ready, as controller-runtime's do: a Deployment whose standby
//!   is never Ready never finishes a rollout, and no traffic depends on readiness. Leadership
//!   is reported separately (the `/readyz` body and the Lease's `holderIdentity`).
//! - **Live** unless reconciles are running and none has started from idle or finished for
//!   the stall timeout (`--stall-timeout`). An idle puller is always live.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why the puller is not Ready or not live; `reason()` is stable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unhealthy {
    /// The ArtifactSync watch has not completed its first list.
    #[error("the ArtifactSync watch has not listed yet (is the API server reachable?)")]
    SyncsNotListed,
    /// The TrustPolicy or Namespace watch is not current.
    #[error(
        "the TrustPolicy and Namespace watches are not current (is the API server reachable?)"
    )]
    TrustNotSynced,
    /// A standby whose last Lease call did not reach the API server.
    #[error("standby: the last Lease call did not reach the API server")]
    LeaseUnreachable,
    /// Reconciles are running and none finished for `stalled`.
    #[error("{in_flight} reconcile(s) running and none finished for {stalled:?} (stall timeout {limit:?})")]
    Stalled {
        /// Reconciles running.
        in_flight: usize,
        /// Time since the last progress.
        stalled: Duration,
        /// The stall timeout.
        limit: Duration,
    },
}

impl Unhealthy {
    /// Stable CamelCase reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::SyncsNotListed => "SyncsNotListed",
            Self::TrustNotSynced => "TrustNotSynced",
            Self::LeaseUnreachable => "LeaseUnreachable",
            Self::Stalled { .. } => "ReconcileStalled",
        }
    }
}

/// This replica's part in leader election.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// No `--leader-elect`: it reconciles.
    Single,
    /// Waiting for the Lease.
    Standby,
    /// Holds the Lease and reconciles.
    Leading,
}

impl Role {
    /// Lower-case name, as in the `/readyz` body.
    pub fn name(self) -> &'static str {
        match self {
            Self::Single => "single",
            Self::Standby => "standby",
            Self::Leading => "leading",
        }
    }
}

/// What readiness is decided from.
#[derive(Debug, Clone, Copy)]
pub struct ReadyFacts {
    /// Leader-election role.
    pub role: Role,
    /// The ArtifactSync watch completed its first list.
    pub syncs_listed: bool,
    /// The TrustPolicy and Namespace watches are current.
    pub trust_synced: bool,
    /// The last Lease call reached the API server (standby only).
    pub lease_answered: bool,
}

/// Ready or why not (see the module docs).
pub fn readiness(facts: &ReadyFacts) -> Result<Role, Unhealthy> {
    if facts.role == Role::Standby {
        return if facts.lease_answered {
            Ok(Role::Standby)
        } else {
            Err(Unhealthy::LeaseUnreachable)
        };
    }
    if !facts.syncs_listed {
        return Err(Unhealthy::SyncsNotListed);
    }
    if !facts.trust_synced {
        return Err(Unhealthy::TrustNotSynced);
    }
    Ok(facts.role)
}

/// Live or why not: stalled when `in_flight > 0` and `now - last_progress > limit`.
pub fn liveness(
    in_flight: usize,
    last_progress: Instant,
    now: Instant,
    limit: Duration,
) -> Result<(), Unhealthy> {
    let stalled = now.saturating_duration_since(last_progress);
    if in_flight > 0 && stalled > limit {
        return Err(Unhealthy::Stalled {
            in_flight,
            stalled,
            limit,
        });
    }
    Ok(())
}

/// The puller's health state, shared by the controller and the health server.
#[derive(Debug)]
pub struct Health {
    role: AtomicU8,
    syncs_listed: AtomicBool,
    lease_answered: Mutex<Option<Arc<AtomicBool>>>,
    in_flight: AtomicUsize,
    last_progress: Mutex<Instant>,
    stall_timeout: Duration,
}

impl Health {
    /// A fresh state: single role, nothing listed, idle; stalled after `stall_timeout`.
    pub fn new(stall_timeout: Duration) -> Self {
        Self {
            role: AtomicU8::new(0),
            syncs_listed: AtomicBool::new(false),
            lease_answered: Mutex::new(None),
            in_flight: AtomicUsize::new(0),
            last_progress: Mutex::new(Instant::now()),
            stall_timeout,
        }
    }

    /// The current role.
    pub fn role(&self) -> Role {
        match self.role.load(Ordering::Relaxed) {
            1 => Role::Standby,
            2 => Role::Leading,
            _ => Role::Single,
        }
    }

    pub(super) fn set_role(&self, role: Role) {
        let n = match role {
            Role::Single => 0,
            Role::Standby => 1,
            Role::Leading => 2,
        };
        self.role.store(n, Ordering::Relaxed);
    }

    pub(super) fn set_lease_answered(&self, flag: Arc<AtomicBool>) {
        *self
            .lease_answered
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(flag);
    }

    pub(super) fn mark_syncs_listed(&self) {
        self.syncs_listed.store(true, Ordering::Relaxed);
    }

    /// Readiness facts, with whether the trust watches are current.
    pub(super) fn ready_facts(&self, trust_synced: bool) -> ReadyFacts {
        let lease_answered = self
            .lease_answered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Relaxed));
        ReadyFacts {
            role: self.role(),
            syncs_listed: self.syncs_listed.load(Ordering::Relaxed),
            trust_synced,
            lease_answered,
        }
    }

    /// Liveness now (see [`liveness`]).
    pub fn live(&self) -> Result<(), Unhealthy> {
        let last = *self.last_progress.lock().unwrap_or_else(|e| e.into_inner());
        liveness(
            self.in_flight.load(Ordering::Relaxed),
            last,
            Instant::now(),
            self.stall_timeout,
        )
    }

    /// Counts a reconcile as running until the guard is dropped (which counts as progress).
    pub(super) fn reconcile_started(self: &Arc<Self>) -> Running {
        if self.in_flight.fetch_add(1, Ordering::Relaxed) == 0 {
            self.progress();
        }
        Running(self.clone())
    }

    fn progress(&self) {
        *self.last_progress.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }
}

/// One running reconcile (see [`Health::reconcile_started`]).
pub(super) struct Running(Arc<Health>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.progress();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(role: Role) -> ReadyFacts {
        ReadyFacts {
            role,
            syncs_listed: true,
            trust_synced: true,
            lease_answered: true,
        }
    }

    #[test]
    fn ready_only_once_syncs_listed_and_trust_synced() {
        assert_eq!(readiness(&facts(Role::Single)), Ok(Role::Single));
        assert_eq!(readiness(&facts(Role::Leading)), Ok(Role::Leading));
        let unlisted = ReadyFacts {
            syncs_listed: false,
            ..facts(Role::Leading)
        };
        assert_eq!(readiness(&unlisted), Err(Unhealthy::SyncsNotListed));
        let untrusted = ReadyFacts {
            trust_synced: false,
            ..facts(Role::Single)
        };
        assert_eq!(readiness(&untrusted), Err(Unhealthy::TrustNotSynced));
    }

    #[test]
    fn standby_is_ready_while_the_lease_calls_reach_the_api_server() {
        let standby = ReadyFacts {
            syncs_listed: false,
            trust_synced: false,
            ..facts(Role::Standby)
        };
        assert_eq!(readiness(&standby), Ok(Role::Standby));
        let cut_off = ReadyFacts {
            lease_answered: false,
            ..standby
        };
        assert_eq!(readiness(&cut_off), Err(Unhealthy::LeaseUnreachable));
    }

    #[test]
    fn idle_is_live_however_long_and_busy_is_live_until_the_stall_timeout() {
        let limit = Duration::from_secs(60);
        let start = Instant::now();
        let much_later = start + Duration::from_secs(3600);
        assert_eq!(liveness(0, start, much_later, limit), Ok(()));
        assert_eq!(
            liveness(2, start, start + Duration::from_secs(60), limit),
            Ok(())
        );
        let err = liveness(2, start, much_later, limit).unwrap_err();
        assert_eq!(err.reason(), "ReconcileStalled");
    }

    #[test]
    fn a_finished_reconcile_is_progress() {
        let health = Arc::new(Health::new(Duration::ZERO));
        assert_eq!(health.live(), Ok(()));
        let running = health.reconcile_started();
        std::thread::sleep(Duration::from_millis(5));
        assert!(matches!(
            health.live(),
            Err(Unhealthy::Stalled { in_flight: 1, .. })
        ));
        drop(running);
        assert_eq!(health.live(), Ok(()));
    }
}
