//! The status file (`--status-file`): one JSON document, rewritten atomically after every
//! cycle, for monitoring and for humans.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::{Outcome, Summary};
use crate::digest::Digest;

const MAX_STATUS_BYTES: u64 = 1024 * 1024;

/// A failure as recorded in the status file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusError {
    /// Stable CamelCase reason.
    pub reason: String,
    /// The message.
    pub message: String,
    /// The step that failed.
    pub step: String,
    /// The digest concerned, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
    /// When (RFC 3339).
    pub time: String,
}

/// What the status file holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The reference followed.
    pub reference: String,
    /// The target directory.
    pub dir: PathBuf,
    /// The digest the directory holds.
    pub last_applied_digest: Option<Digest>,
    /// Who vouched for it (`unsigned` for the explicit opt-out).
    pub signer: Option<String>,
    /// Who approved it (a verified `tresor promote` record), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<crate::signing::promotion::Approval>,
    /// When it was applied (RFC 3339).
    pub last_applied_time: Option<String>,
    /// When the last cycle ran (RFC 3339).
    pub last_attempt_time: Option<String>,
    /// The digest the reference resolved to in the last cycle.
    pub last_attempt_digest: Option<Digest>,
    /// How the last cycle ended (`Applied`, `Unchanged`, `DriftCorrected`, `Rejected`,
    /// `Failed`, `Abandoned`).
    pub last_outcome: Option<String>,
    /// The last cycle's failure; `null` when it succeeded.
    pub error: Option<StatusError>,
    /// The most recent failure of any cycle, kept after later cycles succeed.
    pub last_error: Option<StatusError>,
    /// Managed files restored since the agent started.
    pub restored_files: u64,
    /// Cycles since the agent started.
    pub cycles: u64,
}

impl Status {
    /// A fresh status for `reference` and `dir`, keeping what `previous` (the file left by
    /// an earlier run) knew about the applied version.
    pub fn new(reference: &str, dir: &Path, previous: Option<Status>) -> Self {
        let mut status = Self {
            reference: reference.to_string(),
            dir: dir.to_path_buf(),
            ..Self::default()
        };
        if let Some(p) = previous.filter(|p| p.dir == dir) {
            status.last_applied_digest = p.last_applied_digest;
            status.signer = p.signer;
            status.approval = p.approval;
            status.last_applied_time = p.last_applied_time;
            status.last_error = p.last_error;
        }
        status
    }

    /// Reads a status file (bounded); `None` when absent or unreadable.
    pub fn load(path: &Path) -> Option<Self> {
        use std::io::Read;
        let file = std::fs::File::open(path).ok()?;
        let mut bytes = Vec::new();
        file.take(MAX_STATUS_BYTES).read_to_end(&mut bytes).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Folds one cycle's summary in.
    pub fn record(&mut self, summary: &Summary, now: SystemTime) {
        let time = rfc3339(now);
        self.cycles += 1;
        self.last_attempt_time = Some(time.clone());
        self.last_attempt_digest = summary.digest.clone();
        self.last_outcome = Some(summary.outcome.name().to_string());
        self.restored_files += summary.restored.len() as u64;
        if summary.applied != self.last_applied_digest || summary.outcome == Outcome::Applied {
            if summary.outcome == Outcome::Applied {
                self.last_applied_time = Some(time.clone());
            }
            self.last_applied_digest = summary.applied.clone();
            self.signer = summary.signer.clone();
            self.approval = summary.approval.clone();
        } else if summary.signer.is_some() {
            self.signer = summary.signer.clone();
            self.approval = summary.approval.clone();
        }
        self.error = summary.error.as_ref().map(|f| StatusError {
            reason: f.reason.clone(),
            message: f.message.clone(),
            step: f.step.name().to_string(),
            digest: f.digest.clone(),
            time: time.clone(),
        });
        if self.error.is_some() {
            self.last_error = self.error.clone();
        }
    }

    /// Writes the file atomically (temporary file in the same directory, then rename).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        super::target::write_atomic(path, &bytes)
    }
}

/// RFC 3339 UTC with seconds.
pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}
