//! The policy step as a hook: the engine shows it the staged tree before the switch.
//!
//! [`NoPolicy`] accepts everything; the immutability policy (`tresor lint` rules in
//! `enforce` mode) plugs in as another implementation.

use std::path::Path;

use crate::artifact::fetch::ResolvedArtifact;

/// Checks staged content before it is applied.
///
/// Called after extraction, before the switch, with the directory that will become the
/// target. Runs on the engine's task, so keep it to local work (no network).
pub trait Policy: Send + Sync {
    /// `Ok(warnings)` to apply (warnings are reported), `Err` to reject the digest.
    fn check(
        &self,
        artifact: &ResolvedArtifact,
        tree: &Path,
    ) -> Result<Vec<String>, PolicyRejected>;
}

/// A policy's refusal.
#[derive(Debug, Clone, thiserror::Error)]
#[error("policy refused the content: {message}")]
pub struct PolicyRejected {
    /// Stable CamelCase reason (e.g. the rule id's category).
    pub reason: &'static str,
    /// What was wrong (findings) and what to do.
    pub message: String,
}

impl PolicyRejected {
    /// Stable CamelCase reason.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

/// Accepts everything (the placeholder until the immutability policy is wired in).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPolicy;

impl Policy for NoPolicy {
    fn check(&self, _: &ResolvedArtifact, _: &Path) -> Result<Vec<String>, PolicyRejected> {
        Ok(Vec::new())
    }
}
