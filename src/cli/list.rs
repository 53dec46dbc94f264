//! `tresor list oci://host/repo`: tags with digests and creation times.

use std::fmt::Write as _;
use std::process::ExitCode;

use futures_util::{stream, StreamExt, TryStreamExt};
use serde::Serialize;

use crate::artifact::format::{ImageManifest, ANNOTATION_CREATED};
use crate::digest::Digest;
use crate::reference::Reference;
use crate::registry::{ManifestRef, Repository};

use super::{CliError, Format, Printer, RegistryArgs};

/// Manifests fetched at once while listing.
const CONCURRENCY: usize = 8;

/// Arguments of `tresor list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// The repository: oci://host/repo or oci-layout:PATH.
    pub repository: String,
    /// Also show signature, attestation and other `sha256-…` tags.
    #[arg(long)]
    pub all: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Serialize)]
struct TagEntry {
    tag: String,
    digest: Digest,
    created: Option<String>,
}

/// Tags cosign and tresor use for signatures, attestations and referrer fallbacks.
fn is_supporting_tag(tag: &str) -> bool {
    tag.starts_with("sha256-")
        || tag.ends_with(".sig")
        || tag.ends_with(".att")
        || tag.ends_with(".sbom")
}

pub(super) async fn run(args: ListArgs) -> Result<ExitCode, CliError> {
    let printer = Printer::new(args.format);
    let reference: Reference = args.repository.parse()?;
    if reference.tag().is_some() || reference.digest().is_some() {
        return Err(CliError::Usage(format!(
            "{reference}: list takes a repository without tag or digest"
        )));
    }
    let repo = Repository::open(&reference, &args.registry.options()?)?;
    let tags: Vec<String> = repo
        .list_tags()
        .await?
        .into_iter()
        .filter(|t| args.all || !is_supporting_tag(t))
        .collect();
    let repo = &repo;
    let entries: Vec<TagEntry> = stream::iter(tags)
        .map(|tag| async move {
            let m = repo.fetch_manifest(ManifestRef::Tag(&tag)).await?;
            let created = serde_json::from_slice::<ImageManifest>(&m.bytes)
                .ok()
                .and_then(|mf| mf.annotations.get(ANNOTATION_CREATED).cloned());
            Ok::<_, CliError>(TagEntry {
                tag,
                digest: m.digest,
                created,
            })
        })
        .buffered(CONCURRENCY)
        .try_collect()
        .await?;
    printer.result(&entries, || {
        let width = entries
            .iter()
            .map(|e| e.tag.len())
            .max()
            .unwrap_or(3)
            .max(3);
        let mut s = format!("{:width$}  {:71}  CREATED\n", "TAG", "DIGEST");
        for e in &entries {
            let _ = writeln!(
                s,
                "{:width$}  {:71}  {}",
                e.tag,
                e.digest.to_string(),
                e.created.as_deref().unwrap_or("-")
            );
        }
        s
    });
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_and_attestation_tags_are_hidden() {
        for t in ["sha256-abc.sig", "sha256-abc.att", "sha256-abc", "x.sbom"] {
            assert!(is_supporting_tag(t), "{t}");
        }
        for t in ["v1", "latest", "sha256"] {
            assert!(!is_supporting_tag(t), "{t}");
        }
    }
}
