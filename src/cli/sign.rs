//! `tresor sign REF --key KEY`.

use std::path::Path;
use std::process::ExitCode;

use crate::artifact::push::PushOutcome;
use crate::reference::Reference;
use crate::registry::Repository;
use crate::signing::attestation::{self, BuildContext};
use crate::signing::{keys, legacy, PrivateKey, SigningError};

use super::{CliError, Format, Printer, RegistryArgs};

/// Arguments of `tresor sign`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  # Sign by digest (appends to existing signatures; COSIGN_PASSWORD or a prompt)
  tresor sign oci://ghcr.io/acme/shop@sha256:3f1c… --key cosign.key

  tresor sign oci-layout:./out:v1 --key cosign.key")]
pub struct SignArgs {
    /// The artifact: oci://host/repo:tag, …@sha256:…, or oci-layout:PATH:tag.
    pub reference: String,
    /// cosign private key file (password from COSIGN_PASSWORD or a prompt).
    #[arg(long, value_name = "KEY")]
    pub key: std::path::PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    #[command(flatten)]
    registry: RegistryArgs,
}

/// Loads a private key, asking for the password when `COSIGN_PASSWORD` is not set.
pub(super) fn load_key(path: &Path) -> Result<PrivateKey, SigningError> {
    let password = keys::password(path, false)?;
    Ok(PrivateKey::from_file(path, password.as_bytes())?)
}

/// Text for a finished signature.
pub(super) fn describe(outcome: &legacy::SignOutcome) -> String {
    format!(
        "{} {} with key sha256:{} ({}: {} signature(s))\n",
        if outcome.added {
            "Signed"
        } else {
            "Already signed"
        },
        outcome.reference,
        outcome.fingerprint,
        outcome.signature_tag,
        outcome.signatures
    )
}

/// After `push --sign-key`: signs the pushed artifact (and attaches provenance when asked);
/// returns the push outcome as JSON with `signature` (and `provenance`) added.
pub(super) async fn sign_pushed(
    repo: &Repository,
    reference: &Reference,
    outcome: &PushOutcome,
    key: &PrivateKey,
    provenance: Option<(BuildContext, Option<String>, Option<String>)>,
    printer: &Printer,
) -> Result<serde_json::Value, CliError> {
    let signed = legacy::sign(repo, reference, &outcome.digest, key).await?;
    printer.note(describe(&signed).trim_end());
    let mut doc = serde_json::to_value(outcome).unwrap_or_default();
    let mut extra = vec![(
        "signature",
        serde_json::to_value(&signed).unwrap_or_default(),
    )];
    if let Some((build, source, revision)) = provenance {
        let statement = attestation::provenance_statement(
            reference,
            &outcome.digest,
            source.as_deref(),
            revision.as_deref(),
            &build,
        );
        let attested = attestation::attest(repo, &outcome.digest, &statement, key).await?;
        printer.note(format!(
            "Attached SLSA provenance ({}: {} attestation(s))",
            attested.attestation_tag, attested.attestations
        ));
        extra.push((
            "provenance",
            serde_json::to_value(&attested).unwrap_or_default(),
        ));
    }
    if let Some(map) = doc.as_object_mut() {
        for (k, v) in extra {
            map.insert(k.into(), v);
        }
    }
    Ok(doc)
}

pub(super) async fn run(args: SignArgs) -> Result<ExitCode, CliError> {
    let printer = Printer::new(args.format);
    let reference: Reference = args.reference.parse()?;
    let key = load_key(&args.key)?;
    let repo = Repository::open(&reference, &args.registry.options()?)?;
    let manifest = repo
        .fetch_manifest(Repository::manifest_ref(&reference)?)
        .await?;
    let outcome = legacy::sign(&repo, &reference, &manifest.digest, &key).await?;
    printer.result(&outcome, || describe(&outcome));
    Ok(ExitCode::SUCCESS)
}
