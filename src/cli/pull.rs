//! `tresor pull REF --output DIR`: verify, download, unpack, check the policy, switch in.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::artifact::fetch;
use crate::reference::Reference;
use crate::registry::Repository;
use crate::signing;

use super::{CliError, Format, LimitArgs, Printer, RegistryArgs, TrustArgs};

/// Arguments of `tresor pull`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  # Verify with the CI key, then unpack into ./shop (nothing appears on failure)
  tresor pull oci://ghcr.io/acme/shop:v1.4.0 --output shop --key cosign.pub

  # Require two signers: CI and the security team
  tresor pull oci://ghcr.io/acme/shop:v1.4.0 --output shop --key ci.pub --key security.pub --require all")]
pub struct PullArgs {
    /// The artifact: oci://host/repo:tag, …@sha256:…, or oci-layout:PATH:tag.
    pub reference: String,
    /// Directory to create with the artifact's files (must not exist or be empty).
    #[arg(long, short)]
    pub output: PathBuf,
    /// Accept content without verifying a signature (explicit opt-out; ignored when trust
    /// material is given, which is then always checked).
    #[arg(long)]
    pub allow_unsigned: bool,
    #[command(flatten)]
    trust: TrustArgs,
    #[command(flatten)]
    policy: super::lint::PolicyArgs,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    registry: RegistryArgs,
}

pub(super) async fn run(args: PullArgs) -> Result<ExitCode, CliError> {
    let printer = Printer::new(args.format);
    let reference: Reference = args.reference.parse()?;
    let trust = args
        .trust
        .required(args.allow_unsigned, "pull", &reference)?;
    let repo = Repository::open(&reference, &args.registry.options()?)?;
    let artifact = fetch::resolve(&repo, &reference).await?;
    // Verification reads manifests and signature payloads only: nothing of the artifact's
    // content is downloaded unless it passes.
    match &trust {
        Some(trust) => {
            let verification =
                signing::verify(&repo, &signing::Subject::of_artifact(&artifact), trust).await?;
            for s in &verification.signatures {
                printer.note(format!(
                    "verified: signed by {} ({})",
                    s.authority, s.signer
                ));
            }
        }
        None => printer.note(format!(
            "warning: pulling {} without signature verification (--allow-unsigned)",
            artifact.reference.pinned(&artifact.digest)
        )),
    }
    let (lint_policy, mode) = args.policy.load()?;
    let annotations = &artifact.manifest.annotations;
    let check = |staged: &std::path::Path| {
        super::lint::check_pulled(staged, annotations, &lint_policy, mode, &printer)
    };
    let outcome =
        fetch::pull_to_dir(&repo, &artifact, &args.output, &args.limits.limits(), check).await?;
    printer.result(&outcome, || format!("{}\n", outcome.reference));
    Ok(ExitCode::SUCCESS)
}
