//! Option groups shared by several subcommands.

use std::path::PathBuf;
use std::time::Duration;

use crate::artifact::archive::Limits;
use crate::registry::{auth, RegistryError, RegistryOptions};
use crate::signing::policy::{
    key_authorities, Authority, NamedAuthority, PolicyError, Require, TrustPolicy,
};

/// How to reach the registry.
#[derive(Debug, Clone, clap::Args)]
pub struct RegistryArgs {
    /// Use plain HTTP instead of HTTPS (only for registries you trust on the network path).
    #[arg(long, global = true)]
    pub plain_http: bool,
    /// PEM file with CA certificates to trust for the registry, besides the system roots.
    #[arg(long, value_name = "FILE", global = true)]
    pub ca_file: Option<PathBuf>,
    /// Registry credentials as USER:PASSWORD (default: docker's config.json and its
    /// credential helpers).
    #[arg(
        long,
        value_name = "USER:PASSWORD",
        env = "TRESOR_CREDS",
        hide_env_values = true,
        global = true
    )]
    pub creds: Option<String>,
    /// Timeout of each registry request, end to end: connecting, headers and the whole body
    /// (raise it for large artifacts on slow links).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration, global = true)]
    pub timeout: Duration,
    /// Retries on transient registry failures (connection errors, 5xx, 429).
    #[arg(long, value_name = "N", default_value_t = 3, global = true)]
    pub retries: u32,
}

impl RegistryArgs {
    /// The options for [`crate::registry::Repository::open`].
    pub fn options(&self) -> Result<RegistryOptions, RegistryError> {
        Ok(RegistryOptions {
            plain_http: self.plain_http,
            ca_file: self.ca_file.clone(),
            creds: self.creds.as_deref().map(auth::parse_creds).transpose()?,
            timeout: self.timeout,
            retries: self.retries,
            ..RegistryOptions::default()
        })
    }
}

/// Age identities for the SOPS-encrypted files of an artifact.
#[derive(Debug, Clone, clap::Args)]
pub struct DecryptArgs {
    /// age identity file (AGE-SECRET-KEY-1…, as age-keygen writes it) that decrypts the
    /// artifact's SOPS-encrypted files (repeatable). Without one, a SOPS file refuses the
    /// version; see docs/secrets.md.
    #[arg(long = "age-identity", value_name = "FILE")]
    pub age_identities: Vec<PathBuf>,
}

impl DecryptArgs {
    /// The identities read from the files, with `--age-identity FILE` as the hint when
    /// there are none. Fails naming an unusable file.
    pub fn decryption(&self) -> Result<crate::secrets::Decryption, super::CliError> {
        let identities = crate::secrets::Identities::read_files(&self.age_identities)
            .map_err(|e| super::CliError::Usage(e.to_string()))?;
        Ok(crate::secrets::Decryption::new(
            identities,
            "--age-identity FILE (an age identity file whose key is a recipient of the file)",
        ))
    }
}

/// Limits applied when unpacking an artifact.
#[derive(Debug, Clone, clap::Args)]
pub struct LimitArgs {
    /// Largest total unpacked size (e.g. 512MiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_size: Option<u64>,
    /// Most entries in the artifact.
    #[arg(long, value_name = "N")]
    pub max_files: Option<u64>,
    /// Largest single file (e.g. 128MiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_file_size: Option<u64>,
    /// Largest ratio of unpacked to packed size (gzip bombs).
    #[arg(long, value_name = "N")]
    pub max_ratio: Option<u64>,
}

impl LimitArgs {
    /// The limits, defaults filled in.
    pub fn limits(&self) -> Limits {
        let d = Limits::default();
        Limits {
            max_total_bytes: self.max_size.unwrap_or(d.max_total_bytes),
            max_files: self.max_files.unwrap_or(d.max_files),
            max_file_bytes: self.max_file_size.unwrap_or(d.max_file_bytes),
            max_ratio: self.max_ratio.unwrap_or(d.max_ratio),
        }
    }
}

/// Trust material: who must have signed an artifact (shared by verify, pull, sync, apply).
#[derive(Debug, Clone, clap::Args)]
pub struct TrustArgs {
    /// Public key (PEM, e.g. cosign.pub) of a trusted signer (repeatable).
    #[arg(long = "key", value_name = "PUB", conflicts_with = "policy")]
    pub keys: Vec<PathBuf>,
    /// How many of the given signers (--key, keyless) must have signed: any, all, or N.
    #[arg(long, value_name = "any|all|N", value_parser = parse_require, conflicts_with = "policy")]
    pub require: Option<Require>,
    /// Trust policy file (YAML or JSON, kind TrustPolicy): named authorities and a rule.
    /// (`tresor verify` also takes it as `--policy FILE`; elsewhere `--policy` is the
    /// immutability policy mode.)
    #[arg(long = "trust-policy", value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Keyless signer: exact certificate identity (with an issuer and --trusted-root).
    #[arg(long, value_name = "ID", conflicts_with_all = ["policy", "certificate_identity_regexp"])]
    pub certificate_identity: Option<String>,
    /// Keyless signer: certificate identity regular expression (anchored).
    #[arg(long, value_name = "REGEXP", conflicts_with = "policy")]
    pub certificate_identity_regexp: Option<String>,
    /// Keyless signer: exact OIDC issuer.
    #[arg(long, value_name = "URL", conflicts_with_all = ["policy", "certificate_oidc_issuer_regexp"])]
    pub certificate_oidc_issuer: Option<String>,
    /// Keyless signer: OIDC issuer regular expression (anchored).
    #[arg(long, value_name = "REGEXP", conflicts_with = "policy")]
    pub certificate_oidc_issuer_regexp: Option<String>,
    /// Sigstore trusted root (trusted_root.json) for keyless verification, offline.
    #[arg(long, value_name = "FILE", conflicts_with = "policy")]
    pub trusted_root: Option<PathBuf>,
}

impl TrustArgs {
    /// The trust policy, or `None` when no trust material was given.
    pub fn policy(&self) -> Result<Option<TrustPolicy>, PolicyError> {
        if let Some(path) = &self.policy {
            return TrustPolicy::from_file(path).map(Some);
        }
        let keyless_given = self.certificate_identity.is_some()
            || self.certificate_identity_regexp.is_some()
            || self.certificate_oidc_issuer.is_some()
            || self.certificate_oidc_issuer_regexp.is_some()
            || self.trusted_root.is_some();
        if self.keys.is_empty() && !keyless_given {
            return Ok(None);
        }
        let require = self.require.unwrap_or(Require::Any);
        let mut authorities = key_authorities(&self.keys)?;
        if keyless_given {
            let origin = std::path::Path::new("<command line>");
            let trusted_root = self
                .trusted_root
                .clone()
                .ok_or_else(|| PolicyError::Invalid {
                    path: origin.to_path_buf(),
                    message: "keyless verification needs --trusted-root FILE".into(),
                })?;
            let keyless = Authority::keyless(
                self.certificate_identity.clone(),
                self.certificate_identity_regexp.clone(),
                self.certificate_oidc_issuer.clone(),
                self.certificate_oidc_issuer_regexp.clone(),
                trusted_root,
            )
            .map_err(|message| PolicyError::Invalid {
                path: origin.to_path_buf(),
                message,
            })?;
            authorities.push(NamedAuthority {
                name: "keyless".into(),
                authority: keyless,
            });
        }
        TrustPolicy::new(authorities, require, std::path::Path::new("<command line>")).map(Some)
    }
}

fn parse_require(text: &str) -> Result<Require, String> {
    text.parse()
}

/// Parses `1234`, `10KiB`, `512MiB`, `1GiB`, `100MB`, `2G`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("invalid size {text:?}: expected e.g. 512MiB"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "ki" | "kib" => 1 << 10,
        "m" | "mb" => 1000 * 1000,
        "mi" | "mib" => 1 << 20,
        "g" | "gb" => 1000 * 1000 * 1000,
        "gi" | "gib" => 1 << 30,
        other => return Err(format!("invalid size unit {other:?} in {text:?}")),
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

impl TrustArgs {
    /// The trust policy from these options, or `None` under the explicit `--allow-unsigned`
    /// opt-out; without either, `action` (`pull`, `sync`, `apply`) is refused as unverified.
    pub(super) fn required(
        &self,
        allow_unsigned: bool,
        action: &str,
        reference: &crate::reference::Reference,
    ) -> Result<Option<crate::signing::TrustPolicy>, super::CliError> {
        match self.policy().map_err(crate::signing::VerifyError::from)? {
            Some(trust) => Ok(Some(trust)),
            None if allow_unsigned => Ok(None),
            None => Err(super::CliError::Unverified(format!(
                "refusing to {action} {reference}: no trust material given, so signatures \
                 cannot be verified; pass --key PUB or --trust-policy FILE, or \
                 --allow-unsigned to accept unverified content explicitly"
            ))),
        }
    }

    /// The verify step of the reconcile engine from these options (see [`Self::required`]).
    pub(super) fn verifier(
        &self,
        allow_unsigned: bool,
        action: &str,
        reference: &crate::reference::Reference,
    ) -> Result<std::sync::Arc<dyn crate::reconcile::Verifier>, super::CliError> {
        use crate::reconcile::{AllowUnsigned, TrustVerifier};
        Ok(match self.required(allow_unsigned, action, reference)? {
            Some(trust) => std::sync::Arc::new(TrustVerifier::new(trust)),
            None => std::sync::Arc::new(AllowUnsigned),
        })
    }
}

/// The engine's cache at `--cache-dir`, or the user's default cache directory.
pub(super) fn open_cache(
    dir: Option<&std::path::Path>,
) -> Result<crate::reconcile::cache::Cache, super::CliError> {
    use crate::reconcile::cache::Cache;
    let dir = dir
        .map(std::path::Path::to_path_buf)
        .or_else(Cache::default_dir)
        .ok_or_else(|| {
            super::CliError::Usage(
                "no cache directory: HOME and XDG_CACHE_HOME are unset; pass --cache-dir".into(),
            )
        })?;
    Ok(Cache::open(&dir).map_err(crate::reconcile::StepError::from)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("1234").unwrap(), 1234);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("1GB").unwrap(), 1_000_000_000);
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
    }
}
