//! `tresor tag REF NEWTAG`.

use std::process::ExitCode;

use serde::Serialize;

use crate::artifact::ArtifactError;
use crate::digest::Digest;
use crate::reference::Reference;
use crate::registry::{ManifestRef, Repository};

use super::{CliError, Format, Printer, RegistryArgs};

/// Arguments of `tresor tag`.
#[derive(Debug, clap::Args)]
pub struct TagArgs {
    /// The artifact to tag (by tag or digest).
    pub reference: String,
    /// The new tag, in the same repository.
    pub new_tag: String,
    /// Allow moving the new tag if it already points at something else.
    #[arg(long)]
    pub overwrite: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Serialize)]
struct Tagged {
    reference: String,
    tag: String,
    digest: Digest,
}

pub(super) async fn run(args: TagArgs) -> Result<ExitCode, CliError> {
    let printer = Printer::new(args.format);
    let reference: Reference = args.reference.parse()?;
    let target = reference.with_tag(&args.new_tag)?;
    let repo = Repository::open(&reference, &args.registry.options()?)?;
    let manifest = repo
        .fetch_manifest(Repository::manifest_ref(&reference)?)
        .await?;
    match repo.resolve(ManifestRef::Tag(&args.new_tag)).await? {
        Some(existing) if existing != manifest.digest && !args.overwrite => {
            return Err(ArtifactError::TagExists {
                reference: target.to_string(),
                existing,
            }
            .into());
        }
        _ => {}
    }
    repo.push_manifest(&manifest.media_type, &manifest.bytes, Some(&args.new_tag))
        .await?;
    let out = Tagged {
        reference: target.with_digest(manifest.digest.clone()).to_string(),
        tag: args.new_tag.clone(),
        digest: manifest.digest,
    };
    printer.result(&out, || format!("{}\n", out.reference));
    Ok(ExitCode::SUCCESS)
}
