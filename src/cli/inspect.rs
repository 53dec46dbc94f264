//! `tresor inspect REF`.

use std::fmt::Write as _;
use std::process::ExitCode;

use crate::artifact::{fetch, inspect};
use crate::reference::Reference;
use crate::registry::Repository;

use super::{CliError, Format, LimitArgs, Printer, RegistryArgs};

/// Arguments of `tresor inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The artifact: oci://host/repo:tag, …@sha256:…, or oci-layout:PATH:tag.
    pub reference: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    registry: RegistryArgs,
}

pub(super) async fn run(args: InspectArgs) -> Result<ExitCode, CliError> {
    let printer = Printer::new(args.format);
    let reference: Reference = args.reference.parse()?;
    let repo = Repository::open(&reference, &args.registry.options()?)?;
    let artifact = fetch::resolve(&repo, &reference).await?;
    let info = inspect::inspect(&repo, &artifact, &args.limits.limits()).await?;
    printer.result(&info, || {
        let mut s = String::new();
        let none = || "-".to_string();
        let _ = writeln!(s, "Reference:   {}", info.reference);
        let _ = writeln!(s, "Digest:      {}", info.digest);
        let _ = writeln!(s, "Media type:  {}", info.media_type);
        let _ = writeln!(s, "Config:      {}", info.config_media_type);
        let _ = writeln!(
            s,
            "Layer:       {} {}",
            info.layer_media_type, info.layer_digest
        );
        let _ = writeln!(
            s,
            "Source:      {}",
            info.source.clone().unwrap_or_else(none)
        );
        let _ = writeln!(
            s,
            "Revision:    {}",
            info.revision.clone().unwrap_or_else(none)
        );
        let _ = writeln!(
            s,
            "Created:     {}",
            info.created.clone().unwrap_or_else(none)
        );
        let others: Vec<_> = info
            .annotations
            .iter()
            .filter(|(k, _)| {
                !k.starts_with("org.opencontainers.image.")
                    && k.as_str() != crate::artifact::format::ANNOTATION_PINNED_IMAGES
            })
            .collect();
        if !others.is_empty() {
            let _ = writeln!(s, "Annotations:");
            for (k, v) in others {
                let _ = writeln!(s, "  {k}={v}");
            }
        }
        if !info.pinned_images.is_empty() {
            let _ = writeln!(s, "Pinned images ({}):", info.pinned_images.len());
            for (image, digest) in &info.pinned_images {
                let _ = writeln!(s, "  {image}@{digest}");
            }
        }
        let _ = writeln!(s, "Size:        {} bytes", info.size);
        let _ = writeln!(s, "Files ({}):", info.files.len());
        for f in &info.files {
            let _ = writeln!(s, "  {}  ({} bytes)", f.path, f.size);
        }
        s
    });
    Ok(ExitCode::SUCCESS)
}
