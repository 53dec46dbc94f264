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

/// The immutability policy (`tresor lint` rules) on the staged tree: in `enforce` mode error
/// findings reject the digest, in `warn` mode they are reported and the content applied.
#[derive(Debug, Clone)]
pub struct ImmutabilityPolicy {
    policy: crate::policy::Policy,
    mode: crate::policy::Mode,
}

impl ImmutabilityPolicy {
    /// Checks with `policy` in `mode`.
    pub fn new(policy: crate::policy::Policy, mode: crate::policy::Mode) -> Self {
        Self { policy, mode }
    }
}

impl Policy for ImmutabilityPolicy {
    fn check(
        &self,
        artifact: &ResolvedArtifact,
        tree: &Path,
    ) -> Result<Vec<String>, PolicyRejected> {
        use crate::artifact::objects::ContentMode;
        use crate::policy::{gate, lint_dir, Verdict};
        if self.mode == crate::policy::Mode::Off {
            return Ok(Vec::new());
        }
        let content = ContentMode::of_annotations(&artifact.manifest.annotations);
        let report = lint_dir(tree, content, &self.policy).map_err(|e| PolicyRejected {
            reason: e.reason(),
            message: e.to_string(),
        })?;
        let lines = |findings: &[crate::policy::Finding]| -> Vec<String> {
            findings.iter().map(ToString::to_string).collect()
        };
        match gate(report, self.mode) {
            Verdict::Pass => Ok(Vec::new()),
            Verdict::Warn(findings) => Ok(lines(&findings)),
            Verdict::Refuse(findings) => Err(PolicyRejected {
                reason: "PolicyViolation",
                message: lines(&findings).join("; "),
            }),
        }
    }
}
