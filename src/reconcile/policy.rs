//! The policy step as a hook: the engine shows it the staged tree before the switch.
//!
//! [`ImmutabilityPolicy`] runs the `tresor lint` rules in the sync's mode (enforce, warn or
//! off); it is what `tresor sync`, `tresor apply` and the puller use. [`NoPolicy`] accepts
//! everything, for engines whose tests are about other steps.

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

/// Accepts everything: for engines whose tests are about other steps (the commands use
/// [`ImmutabilityPolicy`], whose `off` mode is the user's way to skip the checks).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPolicy;

impl Policy for NoPolicy {
    fn check(&self, _: &ResolvedArtifact, _: &Path) -> Result<Vec<String>, PolicyRejected> {
        Ok(Vec::new())
    }
}

/// The immutability policy (`tresor lint` rules) on the staged tree: in `enforce` mode error
/// findings reject the digest, in `warn` mode they are reported and the content applied.
///
/// The content mode comes from the artifact's `dev.tresor.content` annotation unless
/// [`ImmutabilityPolicy::with_content`] fixes it: whoever applies content as Kubernetes
/// objects (the puller, `tresor apply`) must lint it as such, or an artifact annotated
/// `files` would pass unchecked and be applied all the same.
#[derive(Debug, Clone)]
pub struct ImmutabilityPolicy {
    policy: crate::policy::Policy,
    mode: crate::policy::Mode,
    content: Option<crate::artifact::objects::ContentMode>,
}

impl ImmutabilityPolicy {
    /// Checks with `policy` in `mode`, reading the content mode from the artifact's
    /// annotation (for `tresor sync`, which writes files and applies nothing).
    pub fn new(policy: crate::policy::Policy, mode: crate::policy::Mode) -> Self {
        Self {
            policy,
            mode,
            content: None,
        }
    }

    /// Lints every artifact as `content`, whatever its annotation says.
    pub fn with_content(mut self, content: crate::artifact::objects::ContentMode) -> Self {
        self.content = Some(content);
        self
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
        let content = self
            .content
            .unwrap_or_else(|| ContentMode::of_annotations(&artifact.manifest.annotations));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::format::{Descriptor, ImageManifest, ANNOTATION_CONTENT};
    use crate::artifact::objects::ContentMode;

    const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n\
        spec:\n  template:\n    spec:\n      containers:\n        - name: web\n          \
        image: nginx:latest\n";

    fn files_artifact() -> ResolvedArtifact {
        let layer = Descriptor::for_bytes("application/octet-stream", b"");
        let manifest = ImageManifest {
            schema_version: 2,
            media_type: None,
            artifact_type: None,
            config: layer.clone(),
            layers: vec![layer.clone()],
            subject: None,
            annotations: [(ANNOTATION_CONTENT.to_string(), "files".to_string())]
                .into_iter()
                .collect(),
        };
        ResolvedArtifact {
            reference: "oci://ghcr.io/acme/app:v1".parse().unwrap(),
            digest: layer.digest.clone(),
            manifest_bytes: bytes::Bytes::new(),
            media_type: String::new(),
            manifest,
            layer,
        }
    }

    /// Issue 12 point 4: `dev.tresor.content: files` made the policy lint a Deployment as a
    /// plain file; fixed to Kubernetes (the puller, `tresor apply`) it is refused.
    #[test]
    fn files_annotation_cannot_switch_the_policy_off_where_objects_are_applied() {
        let tree = tempfile::tempdir().unwrap();
        std::fs::write(tree.path().join("deploy.yaml"), DEPLOYMENT).unwrap();
        let artifact = files_artifact();
        let enforce = crate::policy::Mode::Enforce;
        let lax = ImmutabilityPolicy::new(crate::policy::Policy::default(), enforce);
        assert!(
            lax.check(&artifact, tree.path()).is_ok(),
            "files stay files"
        );
        let err = lax
            .with_content(ContentMode::Kubernetes)
            .check(&artifact, tree.path())
            .unwrap_err();
        assert_eq!(err.reason(), "PolicyViolation");
        assert!(err.message.contains("nginx:latest"), "{}", err.message);
    }
}
