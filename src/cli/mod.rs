//! The `tresor` command line: one module per subcommand, a [`Printer`] for results.
//!
//! Exit codes: 0 success, 1 a check failed (objects differ, content refused as unverified),
//! 2 an error (bad input, registry trouble, …).
//!
//! The doc comments of the argument structs are clap's `--help` text, written for the
//! terminal (`[NAMESPACE:]NAME`, `<kind>`), not rustdoc links or HTML.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

pub mod allocator;
mod apply;
mod args;
mod diff;
mod inspect;
mod keygen;
mod lint;
mod list;
pub mod printer;
mod promote;
mod pull;
mod push;
pub mod reference;
mod sign;
pub mod status;
mod sync;
mod tag;
mod verify;
mod wait;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use args::{parse_size, LimitArgs, RegistryArgs, TrustArgs};
pub use printer::{Format, Printer};

use crate::artifact::ArtifactError;
use crate::policy::PolicyError;
use crate::reference::ReferenceError;
use crate::registry::RegistryError;
use crate::signing::{SigningError, VerifyError};

/// tresor: signed, digest-pinned OCI artifacts for GitOps without Git in the cluster.
#[derive(Debug, Parser)]
#[command(name = "tresor", version, about, propagate_version = true)]
pub struct Cli {
    /// More diagnostics on stderr (-v info, -vv debug, -vvv trace); or set TRESOR_LOG.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Package a directory of manifests as an artifact and push it.
    Push(push::PushArgs),
    /// Download an artifact and unpack it into a new directory.
    Pull(pull::PullArgs),
    /// Show an artifact's digest, media types, provenance and files.
    Inspect(inspect::InspectArgs),
    /// Compare a directory with an artifact object by object (exit 1 when they differ).
    Diff(diff::DiffArgs),
    /// Give an artifact another tag (same digest).
    Tag(tag::TagArgs),
    /// List the tags of a repository with their digests and creation times.
    List(list::ListArgs),
    /// Keep a directory equal to an artifact: verify, switch atomically, undo drift.
    Sync(sync::SyncArgs),
    /// Apply an artifact to a Kubernetes cluster once (server-side apply, prune, wait).
    Apply(apply::ApplyArgs),
    /// Check a directory or artifact against the immutability policy (exit 1 on errors).
    Lint(lint::LintArgs),
    /// Create a cosign key pair (cosign.key, cosign.pub).
    Keygen(keygen::KeygenArgs),
    /// Sign an artifact with a cosign private key (appends to existing signatures).
    Sign(sign::SignArgs),
    /// Verify an artifact's signatures against keys or a trust policy (exit 1 if not trusted).
    Verify(verify::VerifyArgs),
    /// Promote a verified artifact to an environment's tag: approver signature, signed
    /// promotion record, copy across repositories, tag moved last (exit 1 if not trusted).
    Promote(promote::PromoteArgs),
    /// List the ArtifactSyncs of a cluster with their state (like `flux get`).
    Status(status::StatusArgs),
    /// Wait until the ArtifactSyncs following an artifact applied its digest (exit 1 when
    /// refused or timed out): push, then wait, from CI.
    Wait(wait::WaitArgs),
    /// Print a shell completion script for tresor to stdout.
    Completions(reference::CompletionsArgs),
    /// Write man pages for tresor and each subcommand into a directory.
    Man(reference::ManArgs),
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A reference could not be parsed.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// Registry or layout access failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// An artifact operation failed.
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    /// The content was refused because it could not be verified (exit code 1).
    #[error("{0}")]
    Unverified(String),
    /// The policy file is unusable, or images could not be pinned.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The policy refused the content (exit code 1).
    #[error("{0}")]
    PolicyRefused(String),
    /// Signing failed.
    #[error(transparent)]
    Signing(#[from] SigningError),
    /// Verification failed or could not run (exit code 1 when the content is not trusted).
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// Bad command-line input that clap could not catch.
    #[error("{0}")]
    Usage(String),
    /// `tresor sync` could not start (cache, target directory).
    #[error(transparent)]
    Sync(#[from] crate::reconcile::StepError),
    /// The `tresor sync` agent could not start (metrics address, signals).
    #[error(transparent)]
    Agent(#[from] crate::agent::AgentError),
    /// `tresor status` could not reach the cluster or list the ArtifactSyncs.
    #[error(transparent)]
    Status(#[from] status::StatusError),
    /// `tresor apply` could not reach or read the cluster (kubeconfig, inventory).
    #[error(transparent)]
    Kube(#[from] crate::kube::ApplyError),
    /// `tresor promote` refused or failed (exit code 1 when the source is not trusted).
    #[error(transparent)]
    Promote(#[from] crate::promote::PromoteError),
    /// Writing a local file failed (man pages).
    #[error("{path}: {source}")]
    Write {
        /// The file or directory.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl CliError {
    /// Stable CamelCase reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Reference(e) => e.reason(),
            Self::Registry(e) => e.reason(),
            Self::Artifact(e) => e.reason(),
            Self::Unverified(_) => "Unverified",
            Self::Policy(e) => e.reason(),
            Self::PolicyRefused(_) => "PolicyViolation",
            Self::Signing(e) => e.reason(),
            Self::Verify(e) => e.reason(),
            Self::Usage(_) => "InvalidArguments",
            Self::Sync(e) => e.reason(),
            Self::Agent(e) => e.reason(),
            Self::Status(e) => e.reason(),
            Self::Kube(e) => e.reason(),
            Self::Promote(e) => e.reason(),
            Self::Write { .. } => "IoError",
        }
    }

    /// The process exit code for this error: 1 for refused content, 2 otherwise.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::Unverified(_) | Self::PolicyRefused(_) => ExitCode::from(1),
            Self::Verify(e) if e.is_unverified() => ExitCode::from(1),
            Self::Promote(e) if e.is_unverified() => ExitCode::from(1),
            _ => ExitCode::from(2),
        }
    }
}

/// Runs the parsed command line. `Ok` carries the exit code of a completed check.
pub async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::Push(a) => push::run(a).await,
        Command::Pull(a) => pull::run(a).await,
        Command::Inspect(a) => inspect::run(a).await,
        Command::Diff(a) => diff::run(a).await,
        Command::Tag(a) => tag::run(a).await,
        Command::List(a) => list::run(a).await,
        Command::Sync(a) => sync::run(a).await,
        Command::Apply(a) => apply::run(a).await,
        Command::Lint(a) => lint::run(a).await,
        Command::Keygen(a) => keygen::run(a),
        Command::Sign(a) => sign::run(a).await,
        Command::Verify(a) => verify::run(a).await,
        Command::Promote(a) => promote::run(a).await,
        Command::Status(a) => status::run(a).await,
        Command::Wait(a) => wait::run(a).await,
        Command::Completions(a) => reference::run_completions(a),
        Command::Man(a) => reference::run_man(a),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Regression: two option groups once both defined `--policy` on `pull`, which clap
    /// only reports when that subcommand runs.
    #[test]
    fn every_subcommand_has_a_consistent_definition() {
        super::Cli::command().debug_assert();
    }
}
