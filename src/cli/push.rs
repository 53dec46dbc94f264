//! `tresor push DIR REF`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::artifact::metadata::{self, Created};
use crate::artifact::objects::ContentMode;
use crate::artifact::push::{self, PushOptions};
use crate::artifact::ArtifactError;
use crate::reference::Reference;
use crate::registry::Repository;

use super::{CliError, Format, Printer, RegistryArgs};

/// What the content of the directory is.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Content {
    /// Kubernetes manifests: every YAML/JSON document must be an object with apiVersion,
    /// kind and metadata.name, without duplicates.
    Kubernetes,
    /// Any files (docker compose, systemd units, …): YAML/JSON must parse, nothing more.
    Files,
}

/// Arguments of `tresor push`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  # From CI: package the rendered manifests, pin image tags to digests, sign
  tresor push rendered/ oci://ghcr.io/acme/shop:v1.4.0 --pin-images --sign-key cosign.key

  # Into a local OCI layout, byte-for-byte reproducible
  tresor push rendered/ oci-layout:./out:v1 --reproducible

  # Host content (not Kubernetes objects) for `tresor sync`
  tresor push site/ oci://registry.example/acme/site:live --content files")]
pub struct PushArgs {
    /// Directory with the rendered manifests.
    pub dir: PathBuf,
    /// Where to push: oci://host/repo:tag or oci-layout:PATH:tag.
    pub reference: String,
    /// Source repository URL (default: from CI variables or the git checkout).
    #[arg(long)]
    pub source: Option<String>,
    /// Source revision, e.g. main@sha1:<sha> (default: from CI variables or git).
    #[arg(long)]
    pub revision: Option<String>,
    /// Extra manifest annotation KEY=VALUE (repeatable).
    #[arg(long = "annotation", short = 'a', value_name = "KEY=VALUE")]
    pub annotations: Vec<String>,
    /// Set the created time to the Unix epoch, so the same tree and source/revision give
    /// the same manifest digest (otherwise SOURCE_DATE_EPOCH or now).
    #[arg(long)]
    pub reproducible: bool,
    /// Allow moving an existing tag to different content.
    #[arg(long)]
    pub overwrite: bool,
    /// Pack the targets of symlinks instead of refusing them.
    #[arg(long)]
    pub resolve_symlinks: bool,
    /// What the directory holds.
    #[arg(long, value_enum, default_value = "kubernetes")]
    pub content: Content,
    /// Resolve image tags in pod templates to digests (HEAD against each image's registry)
    /// and push `name:tag@sha256:…` in the packaged copy; your files stay untouched.
    #[arg(long)]
    pub pin_images: bool,
    #[command(flatten)]
    policy: super::lint::PolicyArgs,
    /// Sign the pushed artifact with this cosign private key right after the upload
    /// (password from COSIGN_PASSWORD or a prompt; asked before anything is uploaded).
    #[arg(long, value_name = "KEY")]
    pub sign_key: Option<PathBuf>,
    /// Also attach signed SLSA provenance (in-toto statement in a DSSE envelope, cosign's
    /// `.att` tag) built from the CI environment; needs --sign-key.
    #[arg(long, requires = "sign_key")]
    pub provenance: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    #[command(flatten)]
    registry: RegistryArgs,
}

pub(super) async fn run(args: PushArgs) -> Result<ExitCode, CliError> {
    let printer = Printer::new(args.format);
    let reference: Reference = args.reference.parse()?;
    if reference.tag().is_none() || reference.digest().is_some() {
        return Err(CliError::Usage(format!(
            "{reference}: push needs a tag and no digest, e.g. oci://host/repo:v1 \
             (the digest is computed from the content)"
        )));
    }
    let mut annotations = BTreeMap::new();
    for a in &args.annotations {
        let (k, v) = a
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| ArtifactError::Annotation {
                annotation: a.clone(),
                reason: "expected KEY=VALUE".into(),
            })?;
        annotations.insert(k.to_string(), v.to_string());
    }
    let detected = if args.source.is_none() || args.revision.is_none() {
        let env: BTreeMap<String, String> = std::env::vars().collect();
        metadata::detect(&env, &args.dir)
    } else {
        metadata::Provenance::default()
    };
    let build = args.provenance.then(|| {
        let env: BTreeMap<String, String> = std::env::vars().collect();
        crate::signing::attestation::BuildContext::from_env(&env)
    });
    let source = args.source.clone().or(detected.source);
    let revision = args.revision.clone().or(detected.revision);
    if source.is_none() || revision.is_none() {
        printer.note(format!(
            "warning: no {} found (not in GitHub Actions or GitLab CI, and no git checkout at {}); \
             pass --source and --revision to record provenance",
            match (&source, &revision) {
                (None, None) => "source or revision",
                (None, _) => "source",
                _ => "revision",
            },
            args.dir.display()
        ));
    }
    let content = match args.content {
        Content::Kubernetes => ContentMode::Kubernetes,
        Content::Files => ContentMode::Files,
    };
    let registry = args.registry.options()?;
    let prepared = super::lint::prepare_push(
        super::lint::PushInput {
            dir: &args.dir,
            reference: &reference,
            content,
            pin_images: args.pin_images,
            resolve_symlinks: args.resolve_symlinks,
            policy: &args.policy,
            registry: &registry,
        },
        &printer,
    )
    .await?;
    for (key, value) in &prepared.annotations {
        if annotations.insert(key.clone(), value.clone()).is_some() {
            return Err(CliError::Usage(format!(
                "annotation {key} is set by tresor; remove --annotation {key}=…"
            )));
        }
    }
    let (options_source, options_revision) = (source.clone(), revision.clone());
    let options = PushOptions {
        source,
        revision,
        annotations,
        created: if args.reproducible {
            Created::Epoch
        } else {
            Created::FromEnvironment
        },
        overwrite: args.overwrite,
        resolve_symlinks: args.resolve_symlinks,
        content,
    };
    let repo = Repository::open(&reference, &registry)?;
    // A wrong password must fail before anything is uploaded.
    let sign_key = args
        .sign_key
        .as_deref()
        .map(super::sign::load_key)
        .transpose()?;

    let progress =
        indicatif::ProgressBar::with_draw_target(Some(3), indicatif::ProgressDrawTarget::stderr());
    progress.set_style(
        indicatif::ProgressStyle::with_template("{bar:20} {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    progress.set_message(format!("packaging {}", args.dir.display()));
    let package = match prepared.package(options, &printer).await {
        Ok(package) => package,
        Err(e) => {
            progress.finish_and_clear();
            return Err(e);
        }
    };
    progress.inc(1);
    progress.set_message(format!(
        "uploading {} ({} bytes) to {}",
        package.digest,
        package.layer.len(),
        reference.repository()
    ));
    let outcome = push::upload(&repo, &reference, &package, args.overwrite).await?;
    progress.inc(2);
    progress.finish_and_clear();

    if outcome.unchanged {
        printer.note(format!(
            "{} already holds this content; nothing pushed",
            reference
        ));
    }
    let Some(key) = sign_key else {
        printer.result(&outcome, || format!("{}\n", outcome.reference));
        return Ok(ExitCode::SUCCESS);
    };
    let provenance = build.map(|b| (b, options_source, options_revision));
    let doc =
        super::sign::sign_pushed(&repo, &reference, &outcome, &key, provenance, &printer).await?;
    printer.result(&doc, || format!("{}\n", outcome.reference));
    Ok(ExitCode::SUCCESS)
}
