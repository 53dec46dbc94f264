//! `tresor diff DIR REF`: exit 0 same, 1 different, 2 error.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::artifact::objects::{self, ContentMode};
use crate::artifact::{diff, fetch, ArtifactError};
use crate::reference::Reference;
use crate::registry::Repository;

use super::{CliError, Format, LimitArgs, Printer, RegistryArgs};

/// Arguments of `tresor diff`.
#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// Local directory of manifests.
    pub dir: PathBuf,
    /// The artifact to compare with.
    pub reference: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    registry: RegistryArgs,
}

pub(super) async fn run(args: DiffArgs) -> Result<ExitCode, CliError> {
    let printer = Printer::new(args.format);
    let reference: Reference = args.reference.parse()?;
    let dir = args.dir.clone();
    let local =
        tokio::task::spawn_blocking(move || objects::load_dir(&dir, ContentMode::Kubernetes))
            .await
            .map_err(|e| {
                CliError::Usage(format!(
                    "reading {} failed unexpectedly: {e}",
                    args.dir.display()
                ))
            })?
            .map_err(ArtifactError::from)?;
    let repo = Repository::open(&reference, &args.registry.options()?)?;
    let artifact = fetch::resolve(&repo, &reference).await?;
    let remote = fetch::read_objects(
        &repo,
        &artifact,
        &args.limits.limits(),
        ContentMode::Kubernetes,
    )
    .await?;
    let result = diff::diff(&local, &remote);
    printer.result(&result, || result.render_text());
    Ok(if result.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
