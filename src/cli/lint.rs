//! `tresor lint DIR|REF`, and the policy steps of `push` (`--policy`, `--pin-images`) and
//! `pull`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::artifact::objects::{self, ContentMode};
use crate::artifact::push::{self, Package, PushOptions};
use crate::artifact::{fetch, ArtifactError};
use crate::policy::{self, pin, Mode, Policy, Report, Verdict};
use crate::reference::Reference;
use crate::registry::{RegistryOptions, Repository};

use super::{CliError, Format, LimitArgs, Printer, RegistryArgs};

/// `--policy` and `--policy-file`, shared by push and pull.
#[derive(Debug, Clone, clap::Args)]
pub struct PolicyArgs {
    /// What to do with policy findings: enforce (refuse on error findings), warn (print them
    /// and go on) or off. Default: the policy file's mode, else enforce.
    #[arg(long = "policy", value_enum, value_name = "MODE")]
    pub mode: Option<Mode>,
    /// Policy file (YAML/JSON, schemas/policy.schema.json): mode, strict, rule overrides,
    /// allow-lists.
    #[arg(long, value_name = "FILE")]
    pub policy_file: Option<PathBuf>,
}

impl PolicyArgs {
    /// The policy file's content (the default policy without a file) and the mode to use.
    pub fn load(&self) -> Result<(Policy, Mode), CliError> {
        let policy = match &self.policy_file {
            Some(path) => Policy::load(path)?,
            None => Policy::default(),
        };
        let mode = policy.mode(self.mode);
        Ok((policy, mode))
    }
}

/// Arguments of `tresor lint`.
#[derive(Debug, clap::Args)]
pub struct LintArgs {
    /// A directory of manifests, or an artifact (oci://…, oci-layout:…).
    pub target: String,
    /// Raise "can be moved" warnings (tags without digest, plaintext Secrets, …) to errors.
    #[arg(long)]
    pub strict: bool,
    /// Policy file (YAML/JSON, schemas/policy.schema.json); its mode is ignored by lint.
    #[arg(long, value_name = "FILE")]
    pub policy_file: Option<PathBuf>,
    /// Output format: text, or JSON `{"findings":[…]}`.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    registry: RegistryArgs,
}

pub(super) async fn run(args: LintArgs) -> Result<ExitCode, CliError> {
    let printer = Printer::new(args.format);
    let mut policy = match &args.policy_file {
        Some(path) => Policy::load(path)?,
        None => Policy::default(),
    };
    policy.strict |= args.strict;
    let dir = Path::new(&args.target);
    let report = if dir.is_dir() {
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || {
            policy::lint_dir(&dir, ContentMode::Kubernetes, &policy)
        })
        .await
        .map_err(|e| CliError::Usage(format!("lint failed unexpectedly: {e}")))??
    } else {
        let reference: Reference = args.target.parse().map_err(|e| {
            CliError::Usage(format!(
                "{} is neither a directory nor an artifact reference: {e}",
                args.target
            ))
        })?;
        let repo = Repository::open(&reference, &args.registry.options()?)?;
        let artifact = fetch::resolve(&repo, &reference).await?;
        let files = fetch::read_files(&repo, &artifact, &args.limits.limits()).await?;
        let mode = ContentMode::of_annotations(&artifact.manifest.annotations);
        policy::lint_files(&files, mode, &policy)
    };
    printer.result(&report, || report.to_text());
    Ok(if report.errors() > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Turns a verdict into stderr output or a refusal (exit 1). `what` names the operation;
/// `advice` says what the user of that operation can do about the findings.
fn enforce(verdict: Verdict, what: &str, advice: &str, printer: &Printer) -> Result<(), CliError> {
    match verdict {
        Verdict::Pass => Ok(()),
        Verdict::Warn(findings) => {
            for finding in &findings {
                printer.note(finding.to_string());
            }
            Ok(())
        }
        Verdict::Refuse(findings) => {
            let report = Report {
                findings,
                objects: 0,
            };
            let lines: Vec<String> = report.findings.iter().map(|f| f.to_string()).collect();
            Err(CliError::PolicyRefused(format!(
                "policy refused {what}: {} error finding(s) (mode enforce; {}):\n{}",
                report.errors(),
                advice,
                lines.join("\n")
            )))
        }
    }
}

/// A tree ready to be packaged: where it is (the user's directory, or a staged copy with
/// pinned images) and the annotations to add.
pub(super) struct Prepared {
    /// The directory to package.
    pub dir: PathBuf,
    /// Annotations to add (pinned images, content mode).
    pub annotations: BTreeMap<String, String>,
    content: ContentMode,
    policy: Policy,
    mode: Mode,
    /// Keeps the staged copy alive until the push is done.
    _stage: Option<tempfile::TempDir>,
}

/// What the policy steps of `push` need to know.
pub(super) struct PushInput<'a> {
    /// The user's directory.
    pub dir: &'a Path,
    /// Where the push goes (its host receives `--creds` and `--plain-http` when pinning).
    pub reference: &'a Reference,
    /// What the tree holds.
    pub content: ContentMode,
    /// `--pin-images`.
    pub pin_images: bool,
    /// `--resolve-symlinks`.
    pub resolve_symlinks: bool,
    /// `--policy`, `--policy-file`.
    pub policy: &'a PolicyArgs,
    /// The push's registry options.
    pub registry: &'a RegistryOptions,
}

/// The first policy step of `push`: load the policy, stage and pin images (`--pin-images`).
/// [`Prepared::package`] is the second: it packages and lints at once.
pub(super) async fn prepare_push(
    input: PushInput<'_>,
    printer: &Printer,
) -> Result<Prepared, CliError> {
    let PushInput {
        dir,
        reference,
        content,
        pin_images,
        resolve_symlinks,
        policy: policy_args,
        registry,
    } = input;
    let (policy, mode) = policy_args.load()?;
    let mut annotations = BTreeMap::new();
    if content == ContentMode::Files {
        annotations.insert(
            crate::artifact::format::ANNOTATION_CONTENT.to_string(),
            "files".to_string(),
        );
    }
    if pin_images && content == ContentMode::Files {
        return Err(CliError::Usage(
            "--pin-images works on Kubernetes pod templates; it cannot be used with --content files"
                .into(),
        ));
    }
    let mut prepared_dir = dir.to_path_buf();
    let mut stage = None;
    if pin_images {
        let temp = tempfile::Builder::new()
            .prefix(".tresor-pin-")
            .tempdir()
            .map_err(|source| ArtifactError::Io {
                path: std::env::temp_dir(),
                source,
            })?;
        let staged = temp.path().to_path_buf();
        let source = dir.to_path_buf();
        let objects = tokio::task::spawn_blocking(move || {
            pin::stage_tree(&source, &staged, resolve_symlinks).map_err(ArtifactError::from)?;
            let files = crate::artifact::objects::read_dir_files(&staged, content)
                .map_err(ArtifactError::from)?;
            Ok::<_, ArtifactError>(crate::artifact::objects::parse_tree_all(&files, content).0)
        })
        .await
        .map_err(|e| CliError::Usage(format!("staging failed unexpectedly: {e}")))??;
        let images = pin::images_to_pin(&objects);
        let target_host = match reference {
            Reference::Registry(r) => Some(r.host.as_str()),
            Reference::Layout(_) => None,
        };
        let pins = pin::resolve(&images, registry, target_host).await?;
        let changed = pin::rewrite_tree(temp.path(), &pins)?;
        printer.note(format!(
            "pinned {} image reference(s) ({} distinct images) in the packaged copy",
            changed,
            pins.len()
        ));
        annotations.insert(
            crate::artifact::format::ANNOTATION_PINNED_IMAGES.to_string(),
            crate::artifact::format::pinned_images_value(&pins),
        );
        prepared_dir = temp.path().to_path_buf();
        stage = Some(temp);
    }
    Ok(Prepared {
        dir: prepared_dir,
        annotations,
        content,
        policy,
        mode,
        _stage: stage,
    })
}

impl Prepared {
    /// Packages the (possibly pinned) tree and lints it on another thread while it is
    /// packed, parsing it once: parse errors and duplicates fail the packaging (exit 2, as
    /// without a policy), findings are refused or shown per mode afterwards.
    pub(super) async fn package(
        &self,
        options: PushOptions,
        printer: &Printer,
    ) -> Result<Package, CliError> {
        let (dir, content, policy, mode) = (
            self.dir.clone(),
            self.content,
            self.policy.clone(),
            self.mode,
        );
        let (package, report) = tokio::task::spawn_blocking(move || {
            if mode == Mode::Off {
                return push::package(&dir, &options).map(|p| (p, None));
            }
            push::package_with(&dir, &options, |dir| {
                let (per_object, mut errors) =
                    objects::scan_dir(dir, content, |o| policy::lint_object(&o, &policy))?;
                if !errors.is_empty() {
                    return Err(errors.swap_remove(0).into());
                }
                Ok(Some(policy::report((per_object, errors), &policy)))
            })
        })
        .await
        .map_err(|e| CliError::Usage(format!("packaging failed unexpectedly: {e}")))??;
        if let Some(report) = report {
            enforce(
                policy::gate(report, self.mode),
                "the push",
                "--policy warn to only report them, or fix them, e.g. with --pin-images",
                printer,
            )?;
        }
        Ok(package)
    }
}

/// The policy step of `pull`: lints the extracted staging directory before it is renamed
/// into place. Blocking (runs inside the pull, after extraction).
pub(super) fn check_pulled(
    staged: &Path,
    annotations: &BTreeMap<String, String>,
    policy: &Policy,
    mode: Mode,
    printer: &Printer,
) -> Result<(), CliError> {
    if mode == Mode::Off {
        return Ok(());
    }
    let report = policy::lint_dir(staged, ContentMode::of_annotations(annotations), policy)?;
    enforce(
        policy::gate(report, mode),
        "the pull",
        "--policy warn to pull it anyway and only report them, --policy-file to allow \
         specific images or rules; the artifact itself is fixed where it is pushed",
        printer,
    )
}
