//! `tresor promote SRC --to REF:TAG --key APPROVER.key (--policy FILE | --verify-key PUB…)
//! [--reason TEXT] [--dry-run]`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::promote::{self, Outcome, Request};
use crate::reference::Reference;
use crate::registry::Repository;
use crate::signing::{Require, TrustPolicy, VerifyError};

use super::{CliError, Format, Printer, RegistryArgs};

/// Arguments of `tresor promote`.
#[derive(Debug, clap::Args)]
pub struct PromoteArgs {
    /// The artifact to promote: a tag (resolved once, the digest is printed) or a digest:
    /// oci://host/repo:tag, …@sha256:…, or oci-layout:PATH:tag.
    pub source: String,
    /// The target tag; another repository, registry or OCI layout gets a copy (same digest,
    /// with signatures and attestations).
    #[arg(long, value_name = "REF:TAG")]
    pub to: String,
    /// The approver's cosign private key (password from COSIGN_PASSWORD or a prompt).
    #[arg(long, value_name = "KEY")]
    pub key: PathBuf,
    /// The target environment's trust policy (the file `tresor verify --policy` takes). The
    /// source must satisfy it without the approver's authority before anything is written.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Without a policy: public key of a signer who must have signed the source (repeatable;
    /// all must have signed). The approver's own key does not count.
    #[arg(long = "verify-key", value_name = "PUB", conflicts_with = "policy")]
    pub verify_keys: Vec<PathBuf>,
    /// Why, recorded in the promotion attestation (e.g. a change ticket).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Verify and show what would be copied, signed and moved; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    #[command(flatten)]
    registry: RegistryArgs,
}

/// Text for a finished (or planned) promotion.
fn describe(o: &Outcome) -> String {
    let mut out = String::new();
    let verb = if o.dry_run {
        "Would promote"
    } else {
        "Promoted"
    };
    let _ = writeln!(out, "{verb} {} ({})", o.source, o.digest);
    let _ = writeln!(out, "  to         {}", o.target);
    let _ = writeln!(
        out,
        "  verified   require {} without the approver: {}",
        o.verified_require,
        o.verified_by.join(", ")
    );
    let _ = writeln!(
        out,
        "  approver   {}key {}",
        o.approver_authority
            .as_deref()
            .map(|a| format!("{a}, "))
            .unwrap_or_default(),
        o.approver_key
    );
    if let Some(reason) = &o.record.reason {
        let _ = writeln!(out, "  reason     {reason}");
    }
    if let Some(c) = &o.copied {
        let _ = writeln!(
            out,
            "  copy       {} manifest(s), {} blob(s) ({} bytes; {} already there), {} signature(s), {} attestation(s), {} referrer(s)",
            c.manifests, c.blobs_copied, c.bytes_copied, c.blobs_present, c.signatures,
            c.attestations, c.referrers
        );
    }
    if o.dry_run {
        let _ = writeln!(
            out,
            "  would sign, attach the promotion attestation ({}) and move the tag (now {})",
            crate::signing::promotion::PREDICATE_TYPE,
            o.previous_digest
                .as_ref()
                .map_or_else(|| "absent".to_string(), ToString::to_string)
        );
        let _ = writeln!(out, "  dry run: nothing was written");
        return out;
    }
    if let Some(s) = &o.signature {
        let _ = writeln!(
            out,
            "  signature  {} ({} signature(s))",
            s.signature_tag, s.signatures
        );
    }
    if let Some(a) = &o.attestation {
        let _ = writeln!(
            out,
            "  attested   {} ({} attestation(s))",
            a.attestation_tag, a.attestations
        );
    }
    let _ = writeln!(
        out,
        "  tag        {}",
        match (&o.previous_digest, o.tag_moved) {
            (_, false) => "already pointed at this digest".to_string(),
            (Some(p), true) => format!("moved from {p}"),
            (None, true) => "created".to_string(),
        }
    );
    out
}

pub(super) async fn run(args: PromoteArgs) -> Result<ExitCode, CliError> {
    let printer = Printer::new(args.format);
    let source: Reference = args.source.parse()?;
    let target: Reference = args.to.parse()?;
    let (policy, origin) = match &args.policy {
        Some(path) => (
            TrustPolicy::from_file(path).map_err(VerifyError::from)?,
            path.display().to_string(),
        ),
        None if !args.verify_keys.is_empty() => (
            TrustPolicy::for_keys(&args.verify_keys, Require::All).map_err(VerifyError::from)?,
            "--verify-key".to_string(),
        ),
        None => {
            return Err(CliError::Usage(
                "no trust policy for the target: give --policy FILE (the environment's trust \
                 policy) or --verify-key PUB (repeatable) for the signers who must have signed \
                 the source; a promotion is never checked against the approver alone"
                    .into(),
            ))
        }
    };
    let key = super::sign::load_key(&args.key)?;
    let options = args.registry.options()?;
    let from = Repository::open(&source, &options)?;
    let to = Repository::open(&target, &options)?;
    let request = Request {
        source: &source,
        target: &target,
        key: &key,
        policy: &policy,
        policy_origin: &origin,
        reason: args.reason.as_deref(),
        dry_run: args.dry_run,
    };
    let subject = promote::resolve(&from, &source).await?;
    if source.digest().is_none() {
        printer.note(format!("Resolved {source} to {}", subject.digest));
    }
    let outcome = promote::promote(&from, &to, &subject, &request).await?;
    printer.result(&outcome, || describe(&outcome));
    Ok(ExitCode::SUCCESS)
}
