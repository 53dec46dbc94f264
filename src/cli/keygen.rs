//! `tresor keygen [--output-dir DIR]`.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::signing::keys::{self, PRIVATE_KEY_FILE};
use crate::signing::SigningError;

use super::{CliError, Format, Printer};

/// Arguments of `tresor keygen`.
#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Directory to write cosign.key (mode 0600) and cosign.pub into.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub output_dir: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

pub(super) fn run(args: KeygenArgs) -> Result<ExitCode, CliError> {
    let printer = Printer::new(args.format);
    let password = keys::password(&args.output_dir.join(PRIVATE_KEY_FILE), true)
        .map_err(SigningError::from)?;
    let files =
        keys::write_key_pair(&args.output_dir, password.as_bytes()).map_err(SigningError::from)?;
    printer.result(&files, || {
        format!(
            "Private key written to {}\nPublic key written to {} (fingerprint sha256:{})\n",
            files.private_key.display(),
            files.public_key.display(),
            files.fingerprint
        )
    });
    Ok(ExitCode::SUCCESS)
}
