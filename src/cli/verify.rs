//! `tresor verify REF (--key PUB… | --certificate-identity… --certificate-oidc-issuer…
//! --trusted-root FILE) [--require any|all|N] | --policy FILE)`.
//!
//! Verifies the signatures of whatever manifest REF resolves to — a tresor artifact, a
//! container image, an image index — reading that manifest and the signatures only.

use std::fmt::Write as _;
use std::process::ExitCode;

use crate::reference::Reference;
use crate::registry::Repository;
use crate::signing::verify::AttestationVerification;
use crate::signing::{self, subject, Verification, VerifyError};

use super::{CliError, Format, Printer, RegistryArgs, TrustArgs};

/// Arguments of `tresor verify`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  tresor verify oci://ghcr.io/acme/shop:v1.4.0 --key cosign.pub

  # Keyless (GitHub Actions), offline against a Sigstore trusted root
  tresor verify oci://ghcr.io/acme/shop:v1.4.0 \\
    --certificate-identity-regexp '^https://github.com/acme/shop/' \\
    --certificate-oidc-issuer https://token.actions.githubusercontent.com \\
    --trusted-root trusted_root.json")]
pub struct VerifyArgs {
    /// What to verify: any manifest or index (artifact, container image, image index):
    /// oci://host/repo:tag, …@sha256:…, or oci-layout:PATH:tag.
    pub reference: String,
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Trust policy file, the same as --trust-policy (verify has no immutability policy).
    #[arg(long = "policy", value_name = "FILE", conflicts_with_all = ["policy", "keys"])]
    pub policy_file: Option<std::path::PathBuf>,
    /// Verify and print the signed attestations (`.att` layers, cosign v3 attestation
    /// bundles) instead of the signatures: SLSA provenance, and promotion records (who
    /// approved, from, to, when, why) from `tresor promote`.
    #[arg(long)]
    pub attestation: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    #[command(flatten)]
    registry: RegistryArgs,
}

/// Text listing signers and provenance of a passed verification.
pub(super) fn describe(v: &Verification) -> String {
    let mut out = format!("Verified {} (require {})\n", v.reference, v.require);
    let _ = writeln!(out, "  {:<9} {} ({})", "type", v.kind, v.media_type);
    for s in &v.signatures {
        let _ = writeln!(
            out,
            "  signed by {}: {} [{}]",
            s.authority, s.signer, s.source
        );
    }
    let p = &v.provenance;
    for (label, value) in [
        ("source", &p.source),
        ("revision", &p.revision),
        ("created", &p.created),
    ] {
        let _ = writeln!(
            out,
            "  {label:<9} {}",
            value.as_deref().unwrap_or("(not recorded)")
        );
    }
    out
}

/// Text for verified attestations: signers, then each statement's provenance.
fn describe_attestations(a: &AttestationVerification) -> String {
    let mut out = describe(&a.verification);
    for p in &a.promotions {
        let r = &p.record;
        let _ = writeln!(
            out,
            "  promotion  {}",
            crate::signing::promotion::PREDICATE_TYPE
        );
        let _ = writeln!(out, "    approved by {}", p.approved_by());
        let _ = writeln!(
            out,
            "    from       {} ({})",
            r.from.reference, r.from.digest
        );
        let _ = writeln!(out, "    to         {}", r.to.reference);
        let _ = writeln!(out, "    when       {}", r.time);
        let _ = writeln!(
            out,
            "    reason     {}",
            r.reason.as_deref().unwrap_or("(not recorded)")
        );
    }
    for statement in &a.statements {
        if crate::signing::promotion::PromotionRecord::from_statement(statement).is_some() {
            continue;
        }
        let get = |path: &[&str]| {
            path.iter()
                .try_fold(statement, |v, k| v.get(*k))
                .and_then(serde_json::Value::as_str)
                .unwrap_or("(not recorded)")
                .to_string()
        };
        let _ = writeln!(out, "  attestation {}", get(&["predicateType"]));
        let _ = writeln!(
            out,
            "    builder    {}",
            get(&["predicate", "runDetails", "builder", "id"])
        );
        let _ = writeln!(
            out,
            "    invocation {}",
            get(&["predicate", "runDetails", "metadata", "invocationId"])
        );
        for (label, key) in [("source", "source"), ("revision", "revision")] {
            let _ = writeln!(
                out,
                "    {label:<10} {}",
                get(&["predicate", "buildDefinition", "externalParameters", key])
            );
        }
    }
    out
}

pub(super) async fn run(mut args: VerifyArgs) -> Result<ExitCode, CliError> {
    let printer = Printer::new(args.format);
    if let Some(file) = args.policy_file.take() {
        args.trust.policy = Some(file);
    }
    let reference: Reference = args.reference.parse()?;
    let policy = args
        .trust
        .policy()
        .map_err(VerifyError::from)?
        .ok_or_else(|| {
            CliError::Usage(
                "no trust material: give --key PUB (repeatable), --certificate-identity[-regexp] \
                 with --certificate-oidc-issuer[-regexp] and --trusted-root FILE, or \
                 --policy FILE"
                    .into(),
            )
        })?;
    let repo = Repository::open(&reference, &args.registry.options()?)?;
    let subject = subject::resolve(&repo, &reference)
        .await
        .map_err(VerifyError::from)?;
    let result = if args.attestation {
        signing::verify::verify_attestations(&repo, &subject, &policy)
            .await
            .map(|a| {
                let text = describe_attestations(&a);
                (serde_json::to_value(&a).unwrap_or_default(), text)
            })
    } else {
        signing::verify(&repo, &subject, &policy).await.map(|v| {
            let text = describe(&v);
            (serde_json::to_value(&v).unwrap_or_default(), text)
        })
    };
    match result {
        Ok((doc, text)) => {
            printer.result(&doc, || text);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            if printer.format() == Format::Json && e.is_unverified() {
                let doc = serde_json::json!({
                    "reference": subject.pinned(),
                    "digest": subject.digest,
                    "media_type": subject.media_type,
                    "kind": subject.kind,
                    "verified": false,
                    "reason": e.reason(),
                    "message": e.to_string(),
                });
                printer.result(&doc, String::new);
            }
            Err(e.into())
        }
    }
}
