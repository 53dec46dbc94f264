//! Registry credentials: `--creds USER:PASSWORD`, docker's `config.json`, and docker
//! credential helpers (`docker-credential-<name>`).
//!
//! Lookup follows docker: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`; a
//! missing file means "anonymous". For a registry host, `credHelpers[host]` wins, then
//! `auths[host]` (`auth` = base64 `user:pass`, or `username`/`password`, or
//! `identitytoken`), then the default store `credsStore`. Passwords never appear in
//! `Debug` output or in error messages.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::Deserialize;

/// Username that marks the secret as an identity (refresh) token, as docker does.
pub const IDENTITY_TOKEN_USERNAME: &str = "<token>";

/// How long a credential helper may run before it is killed.
const HELPER_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes read from a credential helper's stdout.
const HELPER_MAX_OUTPUT: usize = 64 * 1024;
/// Most bytes of a helper's error output kept for the error message.
const HELPER_MAX_MESSAGE: usize = 200;
/// Largest `config.json` read.
const CONFIG_MAX_BYTES: u64 = 4 * 1024 * 1024;

/// Docker Hub's historic server address, the key docker uses for it in `config.json`.
const DOCKER_HUB_SERVER: &str = "https://index.docker.io/v1/";

/// A username and password (or identity token) for one registry.
///
/// The password is private and redacted from `Debug` so it cannot leak into logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name; [`IDENTITY_TOKEN_USERNAME`] when the password is an identity token.
    pub username: String,
    password: String,
}

impl Credentials {
    /// Credentials from a username and a password (or token).
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            password: password.into(),
        }
    }

    /// The secret. Only for building an `Authorization` header or a token request.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// Whether the secret is an identity token (username `<token>`): use it as the
    /// refresh token of an OAuth2 token exchange, or as the basic-auth password.
    pub fn is_identity_token(&self) -> bool {
        self.username == IDENTITY_TOKEN_USERNAME
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

/// Where credentials came from, for diagnostics ("using credentials from …").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// Given on the command line (`--creds`) or by the caller.
    Explicit,
    /// Given by the caller from a named place, e.g. `pull secret team-a/regcred`.
    Named {
        /// Where they came from.
        origin: String,
    },
    /// An `auths` entry of a docker config file.
    DockerConfig {
        /// The config file.
        path: PathBuf,
    },
    /// A docker credential helper (`credHelpers` or `credsStore`).
    Helper {
        /// The helper name; the program is `docker-credential-<helper>`.
        helper: String,
    },
}

/// Errors finding or parsing registry credentials. None of them carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// `--creds` is not `USER:PASSWORD`.
    #[error("invalid --creds: {problem}; expected USER:PASSWORD")]
    InvalidCreds {
        /// What is wrong, without echoing the value.
        problem: &'static str,
    },
    /// The docker config file exists but could not be read.
    #[error("cannot read docker config {path}: {source}")]
    ConfigRead {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The docker config file is not valid JSON of the expected shape.
    #[error(
        "invalid docker config {path} at line {line}, column {column}: fix or remove the file"
    )]
    ConfigInvalid {
        /// The config file.
        path: PathBuf,
        /// Line of the error (1-based).
        line: usize,
        /// Column of the error (1-based).
        column: usize,
    },
    /// The docker config file is larger than tresor reads.
    #[error("docker config {path} is larger than {limit} bytes")]
    ConfigTooLarge {
        /// The config file.
        path: PathBuf,
        /// The size limit in bytes.
        limit: u64,
    },
    /// An `auths` entry has an `auth` field that is not base64 of `user:password`.
    #[error("invalid \"auth\" for {key:?} in docker config {path}: expected base64 of USER:PASSWORD; run `docker login` again")]
    ConfigAuthInvalid {
        /// The config file.
        path: PathBuf,
        /// The `auths` key of the entry.
        key: String,
    },
    /// A credential helper could not be started.
    #[error("cannot run credential helper docker-credential-{helper} for {host}: {source}")]
    HelperSpawn {
        /// The helper name.
        helper: String,
        /// The registry host.
        host: String,
        /// The I/O error.
        source: io::Error,
    },
    /// A credential helper exited with an error other than "credentials not found".
    #[error(
        "credential helper docker-credential-{helper} failed for {host} ({status}): {message}"
    )]
    HelperFailed {
        /// The helper name.
        helper: String,
        /// The registry host.
        host: String,
        /// The exit status.
        status: String,
        /// The helper's own message (first line, truncated).
        message: String,
    },
    /// A credential helper did not finish in time and was killed.
    #[error(
        "credential helper docker-credential-{helper} for {host} did not answer within {seconds} s"
    )]
    HelperTimeout {
        /// The helper name.
        helper: String,
        /// The registry host.
        host: String,
        /// The timeout in seconds.
        seconds: u64,
    },
    /// A credential helper wrote more than tresor reads.
    #[error(
        "credential helper docker-credential-{helper} for {host} wrote more than {limit} bytes"
    )]
    HelperOutputTooLarge {
        /// The helper name.
        helper: String,
        /// The registry host.
        host: String,
        /// The limit in bytes.
        limit: usize,
    },
    /// A credential helper answered with something that is not `{"Username","Secret"}`.
    #[error("credential helper docker-credential-{helper} for {host} returned invalid output (expected JSON with Username and Secret)")]
    HelperInvalidOutput {
        /// The helper name.
        helper: String,
        /// The registry host.
        host: String,
    },
}

impl AuthError {
    /// Stable CamelCase reason for conditions, events, metrics and JSON output.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidCreds { .. } => "InvalidCredentials",
            Self::ConfigRead { .. } => "DockerConfigUnreadable",
            Self::ConfigInvalid { .. } => "DockerConfigInvalid",
            Self::ConfigTooLarge { .. } => "DockerConfigTooLarge",
            Self::ConfigAuthInvalid { .. } => "DockerConfigAuthInvalid",
            Self::HelperSpawn { .. } => "CredentialHelperUnavailable",
            Self::HelperFailed { .. } => "CredentialHelperFailed",
            Self::HelperTimeout { .. } => "CredentialHelperTimeout",
            Self::HelperOutputTooLarge { .. } => "CredentialHelperOutputTooLarge",
            Self::HelperInvalidOutput { .. } => "CredentialHelperInvalidOutput",
        }
    }
}

/// Parses `--creds USER:PASSWORD` (split at the first `:`, so the password may contain
/// colons).
///
/// Fails with [`AuthError::InvalidCreds`] when the value is empty, has no `:`, or the
/// user or password is empty; the error never repeats the value.
pub fn parse_creds(s: &str) -> Result<Credentials, AuthError> {
    if s.is_empty() {
        return Err(AuthError::InvalidCreds { problem: "empty" });
    }
    let Some((user, password)) = s.split_once(':') else {
        return Err(AuthError::InvalidCreds {
            problem: "missing ':' between user and password",
        });
    };
    if user.is_empty() {
        return Err(AuthError::InvalidCreds {
            problem: "empty user",
        });
    }
    if password.is_empty() {
        return Err(AuthError::InvalidCreds {
            problem: "empty password",
        });
    }
    Ok(Credentials::new(user, password))
}

/// Finds credentials for a registry `host` (`host[:port]`, as in a reference) in the
/// user's docker config.
///
/// Returns `Ok(None)` when there is no config file, no entry for the host, or the helper
/// has no credentials for it (or is not installed). Fails when the config cannot be read
/// or parsed, or a helper fails, times out or answers garbage.
pub fn lookup(host: &str) -> Result<Option<(Credentials, CredentialSource)>, AuthError> {
    match docker_config_path() {
        Some(path) => lookup_in_config(&path, host),
        None => Ok(None),
    }
}

/// Like [`lookup`], with an explicit config file instead of docker's search path.
pub fn lookup_in_config(
    path: &Path,
    host: &str,
) -> Result<Option<(Credentials, CredentialSource)>, AuthError> {
    lookup_with(path, host, HELPER_TIMEOUT)
}

/// The format of a Kubernetes image pull Secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullSecretFormat {
    /// `kubernetes.io/dockerconfigjson`, key `.dockerconfigjson`: a docker `config.json`
    /// (`{"auths": {host: entry}}`).
    DockerConfigJson,
    /// `kubernetes.io/dockercfg`, key `.dockercfg`: the legacy format (`{host: entry}`).
    DockerCfg,
}

/// Finds credentials for `host` in the content of a Kubernetes image pull Secret
/// (`origin` names it in errors, e.g. `Secret team-a/regcred`).
///
/// Only `auths` entries (or the legacy top-level entries) are read; `credHelpers` and
/// `credsStore` are ignored, since a Secret must not make the puller run programs. Returns
/// `Ok(None)` when no entry matches the host. Fails when the content is larger than a
/// docker config may be, is not JSON of the expected shape, or an entry's `auth` is not
/// base64 of `user:password`; no error repeats a value from the Secret.
pub fn lookup_in_pull_secret(
    data: &[u8],
    format: PullSecretFormat,
    origin: &str,
    host: &str,
) -> Result<Option<Credentials>, AuthError> {
    let path = PathBuf::from(origin);
    if data.len() as u64 > CONFIG_MAX_BYTES {
        return Err(AuthError::ConfigTooLarge {
            path,
            limit: CONFIG_MAX_BYTES,
        });
    }
    // Only the position is kept: serde_json messages can quote values, i.e. secrets.
    let invalid = |e: serde_json::Error| AuthError::ConfigInvalid {
        path: path.clone(),
        line: e.line(),
        column: e.column(),
    };
    let auths: BTreeMap<String, AuthEntry> = match format {
        PullSecretFormat::DockerConfigJson => {
            serde_json::from_slice::<DockerConfig>(data)
                .map_err(invalid)?
                .auths
        }
        PullSecretFormat::DockerCfg => serde_json::from_slice(data).map_err(invalid)?,
    };
    let wanted = normalize_host(host);
    match find_key_entry(&auths, host, &wanted) {
        Some((key, entry)) => entry_credentials(entry, &path, key),
        None => Ok(None),
    }
}

/// `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`.
fn docker_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|home| PathBuf::from(home).join(".docker").join("config.json"))
}

/// The parts of docker's `config.json` that matter for registry credentials. Holds
/// secrets, so deliberately not `Debug`.
#[derive(Default, Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// What a credential helper prints for `get`.
#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: String,
}

fn lookup_with(
    path: &Path,
    host: &str,
    helper_timeout: Duration,
) -> Result<Option<(Credentials, CredentialSource)>, AuthError> {
    let Some(config) = read_config(path)? else {
        return Ok(None);
    };
    let wanted = normalize_host(host);

    if let Some(helper) = find_entry(&config.cred_helpers, host, &wanted) {
        return run_helper(helper, host, &wanted, helper_timeout);
    }
    if let Some((key, entry)) = find_key_entry(&config.auths, host, &wanted) {
        if let Some(creds) = entry_credentials(entry, path, key)? {
            return Ok(Some((
                creds,
                CredentialSource::DockerConfig {
                    path: path.to_path_buf(),
                },
            )));
        }
    }
    if let Some(store) = config.creds_store.as_deref().filter(|s| !s.is_empty()) {
        return run_helper(store, host, &wanted, helper_timeout);
    }
    Ok(None)
}

fn read_config(path: &Path) -> Result<Option<DockerConfig>, AuthError> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(AuthError::ConfigRead {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let mut bytes = Vec::new();
    file.take(CONFIG_MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| AuthError::ConfigRead {
            path: path.to_path_buf(),
            source,
        })?;
    if bytes.len() as u64 > CONFIG_MAX_BYTES {
        return Err(AuthError::ConfigTooLarge {
            path: path.to_path_buf(),
            limit: CONFIG_MAX_BYTES,
        });
    }
    // Only the position is kept: serde_json messages can quote values, i.e. secrets.
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| AuthError::ConfigInvalid {
            path: path.to_path_buf(),
            line: e.line(),
            column: e.column(),
        })
}

/// Docker's idea of a registry's identity: scheme and path dropped, lower-cased, and all
/// Docker Hub spellings folded into one.
fn normalize_host(key: &str) -> String {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = rest.split('/').next().unwrap_or(rest).to_ascii_lowercase();
    match host.as_str() {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => "index.docker.io".to_owned(),
        _ => host,
    }
}

/// The entry whose key is exactly `host`, else the first (in key order) whose key
/// normalises to the same registry.
fn find_key_entry<'a, V>(
    map: &'a BTreeMap<String, V>,
    host: &str,
    wanted: &str,
) -> Option<(&'a str, &'a V)> {
    if let Some((key, value)) = map.get_key_value(host) {
        return Some((key.as_str(), value));
    }
    map.iter()
        .find(|(key, _)| normalize_host(key) == wanted)
        .map(|(key, value)| (key.as_str(), value))
}

fn find_entry<'a, V>(map: &'a BTreeMap<String, V>, host: &str, wanted: &str) -> Option<&'a V> {
    find_key_entry(map, host, wanted).map(|(_, value)| value)
}

fn entry_credentials(
    entry: &AuthEntry,
    path: &Path,
    key: &str,
) -> Result<Option<Credentials>, AuthError> {
    if let Some(token) = entry.identitytoken.as_deref().filter(|t| !t.is_empty()) {
        return Ok(Some(Credentials::new(IDENTITY_TOKEN_USERNAME, token)));
    }
    if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let invalid = || AuthError::ConfigAuthInvalid {
            path: path.to_path_buf(),
            key: key.to_owned(),
        };
        let decoded = base64::engine::general_purpose::STANDARD_PAD_INDIFFERENT
            .decode(auth.trim())
            .map_err(|_| invalid())?;
        let decoded = String::from_utf8(decoded).map_err(|_| invalid())?;
        let (user, password) = decoded.split_once(':').ok_or_else(invalid)?;
        if user.is_empty() {
            return Err(invalid());
        }
        return Ok(Some(Credentials::new(user, password)));
    }
    match (entry.username.as_deref(), entry.password.as_deref()) {
        (Some(user), Some(password)) if !user.is_empty() => {
            Ok(Some(Credentials::new(user, password)))
        }
        _ => Ok(None),
    }
}

/// Runs `docker-credential-<helper> get` with the server address on stdin, bounded in
/// time and output.
fn run_helper(
    helper: &str,
    host: &str,
    normalized: &str,
    timeout: Duration,
) -> Result<Option<(Credentials, CredentialSource)>, AuthError> {
    let program = format!("docker-credential-{helper}");
    // Docker stores Docker Hub under its historic URL; everything else by host[:port].
    let server = if normalized == "index.docker.io" {
        DOCKER_HUB_SERVER
    } else {
        host
    };
    let child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            tracing::warn!(
                helper = %program,
                host,
                "credential helper not found on PATH; continuing without credentials"
            );
            return Ok(None);
        }
        Err(source) => {
            return Err(AuthError::HelperSpawn {
                helper: helper.to_owned(),
                host: host.to_owned(),
                source,
            })
        }
    };
    let output = collect_output(&mut child, server, timeout);
    let (status, stdout, stderr) = match output {
        Ok(done) => done,
        Err(limit) => {
            // Best effort: the child may have exited between the check and the kill.
            let _ = child.kill();
            let _ = child.wait();
            return Err(match limit {
                HelperLimit::Timeout => AuthError::HelperTimeout {
                    helper: helper.to_owned(),
                    host: host.to_owned(),
                    seconds: timeout.as_secs(),
                },
                HelperLimit::OutputTooLarge => AuthError::HelperOutputTooLarge {
                    helper: helper.to_owned(),
                    host: host.to_owned(),
                    limit: HELPER_MAX_OUTPUT,
                },
            });
        }
    };

    if !status.success() {
        // docker-credential-helpers print their errors on stdout; others use stderr.
        let message = first_line(&stdout)
            .or_else(|| first_line(&stderr))
            .unwrap_or_default();
        if message
            .to_ascii_lowercase()
            .contains("credentials not found")
        {
            return Ok(None);
        }
        return Err(AuthError::HelperFailed {
            helper: helper.to_owned(),
            host: host.to_owned(),
            status: status.to_string(),
            message,
        });
    }

    let answer: HelperAnswer =
        serde_json::from_slice(&stdout).map_err(|_| AuthError::HelperInvalidOutput {
            helper: helper.to_owned(),
            host: host.to_owned(),
        })?;
    if answer.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some((
        Credentials::new(answer.username, answer.secret),
        CredentialSource::Helper {
            helper: helper.to_owned(),
        },
    )))
}

enum HelperLimit {
    Timeout,
    OutputTooLarge,
}

type HelperOutput = (std::process::ExitStatus, Vec<u8>, Vec<u8>);

/// Feeds `input` to the child and collects its exit status and bounded output, or says
/// which limit was hit (the caller kills the child then).
fn collect_output(
    child: &mut Child,
    input: &str,
    timeout: Duration,
) -> Result<HelperOutput, HelperLimit> {
    let deadline = Instant::now() + timeout;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading its input closes the pipe; that is its
        // business, the exit status tells the rest.
        let _ = stdin.write_all(input.as_bytes());
        let _ = stdin.write_all(b"\n");
    }
    let stdout = spawn_reader(child.stdout.take(), HELPER_MAX_OUTPUT);
    let stderr = spawn_reader(child.stderr.take(), HELPER_MAX_OUTPUT);

    let stdout = recv_until(&stdout, deadline)?;
    if stdout.len() > HELPER_MAX_OUTPUT {
        return Err(HelperLimit::OutputTooLarge);
    }
    let stderr = recv_until(&stderr, deadline)?;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok((status, stdout, stderr)),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            // A wait error leaves the status unknown; treat it like a hung helper.
            _ => return Err(HelperLimit::Timeout),
        }
    }
}

/// Reads at most `limit + 1` bytes on a thread (so an oversize answer is detectable and a
/// helper that keeps the pipe open cannot block the caller past its deadline).
fn spawn_reader<R: Read + Send + 'static>(
    pipe: Option<R>,
    limit: usize,
) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(pipe) = pipe {
            let _ = pipe.take(limit as u64 + 1).read_to_end(&mut buf);
        }
        let _ = tx.send(buf);
    });
    rx
}

fn recv_until(rx: &mpsc::Receiver<Vec<u8>>, deadline: Instant) -> Result<Vec<u8>, HelperLimit> {
    let left = deadline.saturating_duration_since(Instant::now());
    rx.recv_timeout(left).map_err(|_| HelperLimit::Timeout)
}

/// First non-empty line, trimmed and cut to a length fit for an error message.
fn first_line(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    Some(line.chars().take(HELPER_MAX_MESSAGE).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::{Mutex, MutexGuard};

    #[test]
    fn pull_secret_finds_the_host_and_ignores_helpers() {
        let json = br#"{"auths": {"https://registry.example/v1/": {"auth": "dXNlcjpwYXNz"},
            "other.example": {"username": "u2", "password": "p2"}},
            "credHelpers": {"registry.example": "evil"}}"#;
        let found = |host: &str| {
            lookup_in_pull_secret(
                json,
                PullSecretFormat::DockerConfigJson,
                "pull secret a/b",
                host,
            )
            .unwrap()
        };
        let creds = found("registry.example").unwrap();
        assert_eq!(
            (creds.username.as_str(), creds.password()),
            ("user", "pass")
        );
        assert_eq!(found("other.example").unwrap().username, "u2");
        assert!(found("third.example").is_none());

        let legacy = br#"{"registry.example": {"auth": "dXNlcjpwYXNz"}}"#;
        let creds =
            lookup_in_pull_secret(legacy, PullSecretFormat::DockerCfg, "x", "registry.example")
                .unwrap()
                .unwrap();
        assert_eq!(creds.password(), "pass");
    }

    #[test]
    fn pull_secret_errors_name_the_secret_and_never_the_value() {
        let bad = br#"{"auths": {"registry.example": {"auth": "not base64 secret-value!"}}}"#;
        let err = lookup_in_pull_secret(
            bad,
            PullSecretFormat::DockerConfigJson,
            "pull secret team/regcred",
            "registry.example",
        )
        .unwrap_err();
        assert_eq!(err.reason(), "DockerConfigAuthInvalid");
        let text = err.to_string();
        assert!(text.contains("pull secret team/regcred"), "{text}");
        assert!(!text.contains("secret-value"), "{text}");
        let err = lookup_in_pull_secret(
            br#"{"auths": {"h": "hunter2"}}"#,
            PullSecretFormat::DockerConfigJson,
            "pull secret team/regcred",
            "h",
        )
        .unwrap_err();
        assert_eq!(err.reason(), "DockerConfigInvalid");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    /// Serialises tests that change the process environment (PATH, DOCKER_CONFIG), for
    /// `cargo test`, which runs them as threads of one process.
    static ENV_LOCK: Mutex<()> = Mutex::new(());

    fn env_lock() -> MutexGuard<'static, ()> {
        ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets environment variables for the duration of a test and restores them.
    struct EnvGuard {
        saved: Vec<(&'static str, Option<std::ffi::OsString>)>,
        _lock: MutexGuard<'static, ()>,
    }

    impl EnvGuard {
        fn set(vars: &[(&'static str, std::ffi::OsString)]) -> Self {
            let lock = env_lock();
            let mut saved = Vec::new();
            for (name, value) in vars {
                saved.push((*name, std::env::var_os(name)));
                std::env::set_var(name, value);
            }
            Self { saved, _lock: lock }
        }
    }

    impl Drop for EnvGuard {
        fn drop(&mut self) {
            for (name, value) in self.saved.drain(..) {
                match value {
                    Some(v) => std::env::set_var(name, v),
                    None => std::env::remove_var(name),
                }
            }
        }
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn write_config(dir: &Path, json: &str) -> PathBuf {
        let path = dir.join("config.json");
        std::fs::write(&path, json).unwrap();
        path
    }

    /// Writes `docker-credential-<name>` into `dir` as a shell script.
    fn write_helper(dir: &Path, name: &str, body: &str) {
        let path = dir.join(format!("docker-credential-{name}"));
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// PATH with `dir` in front, so the fake helpers are found first.
    fn path_with(dir: &Path) -> std::ffi::OsString {
        let mut paths = vec![dir.to_path_buf()];
        if let Some(old) = std::env::var_os("PATH") {
            paths.extend(std::env::split_paths(&old));
        }
        std::env::join_paths(paths).unwrap()
    }

    /// A helper that answers for exactly one server address and says "credentials not
    /// found" (exit 1, on stdout, like docker-credential-helpers) for any other.
    const ECHO_HELPER: &str = r#"read -r server
if [ "$1" != get ]; then echo "unexpected action $1"; exit 3; fi
case "$server" in
  "127.0.0.1:5002") printf '{"ServerURL":"%s","Username":"helper-user","Secret":"helper-secret"}' "$server" ;;
  "https://index.docker.io/v1/") printf '{"ServerURL":"%s","Username":"<token>","Secret":"hub-identity-token"}' "$server" ;;
  *) echo "credentials not found in native keychain"; exit 1 ;;
esac"#;

    #[test]
    fn auths_base64_entry_is_decoded() {
        let dir = tempfile::tempdir().unwrap();
        let json = format!(
            r#"{{"auths":{{"registry.example:5000":{{"auth":"{}"}}}}}}"#,
            b64("alice:s3cr:et")
        );
        let path = write_config(dir.path(), &json);
        let (creds, source) = lookup_in_config(&path, "registry.example:5000")
            .unwrap()
            .unwrap();
        assert_eq!(creds.username, "alice");
        assert_eq!(creds.password(), "s3cr:et");
        assert!(!creds.is_identity_token());
        assert_eq!(
            source,
            CredentialSource::DockerConfig { path: path.clone() }
        );
    }

    #[test]
    fn auths_username_password_fields_are_used() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(
            dir.path(),
            r#"{"auths":{"ghcr.io":{"username":"bob","password":"pw-bob"}}}"#,
        );
        let (creds, _) = lookup_in_config(&path, "ghcr.io").unwrap().unwrap();
        assert_eq!(creds, Credentials::new("bob", "pw-bob"));
    }

    #[test]
    fn identity_token_entry_uses_token_username() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(
            dir.path(),
            r#"{"auths":{"myacr.example":{"auth":"","identitytoken":"refresh-me"}}}"#,
        );
        let (creds, _) = lookup_in_config(&path, "myacr.example").unwrap().unwrap();
        assert!(creds.is_identity_token());
        assert_eq!(creds.password(), "refresh-me");
    }

    #[test]
    fn port_is_part_of_the_host() {
        let dir = tempfile::tempdir().unwrap();
        let json = format!(
            r#"{{"auths":{{"localhost:5000":{{"auth":"{}"}}}}}}"#,
            b64("u:p")
        );
        let path = write_config(dir.path(), &json);
        assert!(lookup_in_config(&path, "localhost").unwrap().is_none());
        assert!(lookup_in_config(&path, "localhost:5001").unwrap().is_none());
        let (creds, _) = lookup_in_config(&path, "localhost:5000").unwrap().unwrap();
        assert_eq!(creds.username, "u");
    }

    #[test]
    fn url_forms_of_keys_match_the_host() {
        let dir = tempfile::tempdir().unwrap();
        for (key, host) in [
            ("https://registry.example:5000", "registry.example:5000"),
            ("http://insecure.example", "insecure.example"),
            ("https://legacy.example/v1/", "legacy.example"),
            ("Registry.Example", "registry.example"),
        ] {
            let json = format!(r#"{{"auths":{{"{key}":{{"auth":"{}"}}}}}}"#, b64("u:p"));
            let path = write_config(dir.path(), &json);
            let found = lookup_in_config(&path, host).unwrap();
            assert_eq!(
                found.map(|(c, _)| c),
                Some(Credentials::new("u", "p")),
                "key {key} for host {host}"
            );
        }
    }

    #[test]
    fn exact_key_wins_over_url_form() {
        let dir = tempfile::tempdir().unwrap();
        let json = format!(
            r#"{{"auths":{{"https://r.example":{{"auth":"{}"}},"r.example":{{"auth":"{}"}}}}}}"#,
            b64("url:form"),
            b64("exact:key")
        );
        let path = write_config(dir.path(), &json);
        let (creds, _) = lookup_in_config(&path, "r.example").unwrap().unwrap();
        assert_eq!(creds.username, "exact");
    }

    #[test]
    fn docker_hub_spellings_are_one_registry() {
        let dir = tempfile::tempdir().unwrap();
        let json = format!(
            r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{}"}}}}}}"#,
            b64("hubuser:hubpass")
        );
        let path = write_config(dir.path(), &json);
        for host in ["docker.io", "index.docker.io", "registry-1.docker.io"] {
            let (creds, _) = lookup_in_config(&path, host).unwrap().unwrap();
            assert_eq!(creds.username, "hubuser", "{host}");
        }
        let json = format!(r#"{{"auths":{{"docker.io":{{"auth":"{}"}}}}}}"#, b64("a:b"));
        let path = write_config(dir.path(), &json);
        assert!(lookup_in_config(&path, "index.docker.io")
            .unwrap()
            .is_some());
    }

    #[test]
    fn unknown_host_and_empty_entry_give_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(dir.path(), r#"{"auths":{"other.example":{}}}"#);
        assert!(lookup_in_config(&path, "registry.example")
            .unwrap()
            .is_none());
        assert!(lookup_in_config(&path, "other.example").unwrap().is_none());
    }

    #[test]
    fn missing_config_file_gives_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope").join("config.json");
        assert!(lookup_in_config(&path, "registry.example")
            .unwrap()
            .is_none());
    }

    #[test]
    fn invalid_json_reports_position_not_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(dir.path(), "{\"auths\": {\"r\": {\"auth\": 12345678}}}");
        let err = lookup_in_config(&path, "r").unwrap_err();
        assert_eq!(err.reason(), "DockerConfigInvalid");
        assert!(!err.to_string().contains("12345678"), "{err}");
    }

    #[test]
    fn bad_base64_auth_is_an_error_without_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(
            dir.path(),
            r#"{"auths":{"r.example":{"auth":"!!notb64!!"}}}"#,
        );
        let err = lookup_in_config(&path, "r.example").unwrap_err();
        assert_eq!(err.reason(), "DockerConfigAuthInvalid");
        assert!(!err.to_string().contains("notb64"), "{err}");
        // Valid base64, but no colon.
        let json = format!(
            r#"{{"auths":{{"r.example":{{"auth":"{}"}}}}}}"#,
            b64("nocolon")
        );
        let path = write_config(dir.path(), &json);
        let err = lookup_in_config(&path, "r.example").unwrap_err();
        assert_eq!(err.reason(), "DockerConfigAuthInvalid");
    }

    #[test]
    fn cred_helper_wins_over_auths() {
        let dir = tempfile::tempdir().unwrap();
        // Lock before writing the helper: a fork elsewhere while the file is open for
        // writing would make exec fail with ETXTBSY.
        let _env = EnvGuard::set(&[("PATH", path_with(dir.path()))]);
        write_helper(dir.path(), "fake", ECHO_HELPER);
        let json = format!(
            r#"{{"auths":{{"127.0.0.1:5002":{{"auth":"{}"}}}},"credHelpers":{{"127.0.0.1:5002":"fake"}}}}"#,
            b64("file:user")
        );
        let path = write_config(dir.path(), &json);
        let (creds, source) = lookup_in_config(&path, "127.0.0.1:5002").unwrap().unwrap();
        assert_eq!(creds, Credentials::new("helper-user", "helper-secret"));
        assert_eq!(
            source,
            CredentialSource::Helper {
                helper: "fake".into()
            }
        );
    }

    #[test]
    fn helper_not_found_answer_gives_none() {
        let dir = tempfile::tempdir().unwrap();
        // Lock before writing the helper: a fork elsewhere while the file is open for
        // writing would make exec fail with ETXTBSY.
        let _env = EnvGuard::set(&[("PATH", path_with(dir.path()))]);
        write_helper(dir.path(), "fake", ECHO_HELPER);
        let path = write_config(dir.path(), r#"{"credHelpers":{"other.example":"fake"}}"#);
        assert!(lookup_in_config(&path, "other.example").unwrap().is_none());
    }

    #[test]
    fn missing_helper_program_gives_none() {
        let _lock = env_lock();
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(
            dir.path(),
            r#"{"credHelpers":{"r.example":"tresor-test-does-not-exist"}}"#,
        );
        assert!(lookup_in_config(&path, "r.example").unwrap().is_none());
    }

    #[test]
    fn creds_store_is_the_fallback_and_gets_hub_url() {
        let dir = tempfile::tempdir().unwrap();
        // Lock before writing the helper: a fork elsewhere while the file is open for
        // writing would make exec fail with ETXTBSY.
        let _env = EnvGuard::set(&[("PATH", path_with(dir.path()))]);
        write_helper(dir.path(), "store", ECHO_HELPER);
        let path = write_config(
            dir.path(),
            r#"{"auths":{"https://index.docker.io/v1/":{}},"credsStore":"store"}"#,
        );
        let (creds, source) = lookup_in_config(&path, "docker.io").unwrap().unwrap();
        assert!(creds.is_identity_token());
        assert_eq!(creds.password(), "hub-identity-token");
        assert_eq!(
            source,
            CredentialSource::Helper {
                helper: "store".into()
            }
        );
        let (creds, _) = lookup_in_config(&path, "127.0.0.1:5002").unwrap().unwrap();
        assert_eq!(creds.username, "helper-user");
    }

    #[test]
    fn failing_helper_is_an_error_naming_helper_and_host() {
        let dir = tempfile::tempdir().unwrap();
        // Lock before writing the helper: a fork elsewhere while the file is open for
        // writing would make exec fail with ETXTBSY.
        let _env = EnvGuard::set(&[("PATH", path_with(dir.path()))]);
        write_helper(dir.path(), "broken", "echo 'keychain locked' >&2; exit 2");
        let path = write_config(dir.path(), r#"{"credHelpers":{"r.example":"broken"}}"#);
        let err = lookup_in_config(&path, "r.example").unwrap_err();
        assert_eq!(err.reason(), "CredentialHelperFailed");
        let msg = err.to_string();
        assert!(msg.contains("docker-credential-broken"), "{msg}");
        assert!(msg.contains("r.example"), "{msg}");
        assert!(msg.contains("keychain locked"), "{msg}");
    }

    #[test]
    fn helper_garbage_output_does_not_leak_into_the_error() {
        let dir = tempfile::tempdir().unwrap();
        // Lock before writing the helper: a fork elsewhere while the file is open for
        // writing would make exec fail with ETXTBSY.
        let _env = EnvGuard::set(&[("PATH", path_with(dir.path()))]);
        write_helper(
            dir.path(),
            "garbage",
            "cat >/dev/null; echo 'Secret: hunter2'",
        );
        let path = write_config(dir.path(), r#"{"credHelpers":{"r.example":"garbage"}}"#);
        let err = lookup_in_config(&path, "r.example").unwrap_err();
        assert_eq!(err.reason(), "CredentialHelperInvalidOutput");
        assert!(!err.to_string().contains("hunter2"));
    }

    #[test]
    fn hung_helper_is_killed_after_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        // Lock before writing the helper: a fork elsewhere while the file is open for
        // writing would make exec fail with ETXTBSY.
        let _env = EnvGuard::set(&[("PATH", path_with(dir.path()))]);
        write_helper(dir.path(), "hang", "exec sleep 30");
        let path = write_config(dir.path(), r#"{"credHelpers":{"r.example":"hang"}}"#);
        let started = Instant::now();
        let err = lookup_with(&path, "r.example", Duration::from_millis(300)).unwrap_err();
        assert_eq!(err.reason(), "CredentialHelperTimeout");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn oversized_helper_output_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        // Lock before writing the helper: a fork elsewhere while the file is open for
        // writing would make exec fail with ETXTBSY.
        let _env = EnvGuard::set(&[("PATH", path_with(dir.path()))]);
        write_helper(dir.path(), "chatty", "exec yes");
        let path = write_config(dir.path(), r#"{"credHelpers":{"r.example":"chatty"}}"#);
        let err = lookup_in_config(&path, "r.example").unwrap_err();
        assert_eq!(err.reason(), "CredentialHelperOutputTooLarge");
    }

    #[test]
    fn lookup_reads_docker_config_env() {
        let dir = tempfile::tempdir().unwrap();
        let json = format!(
            r#"{{"auths":{{"r.example":{{"auth":"{}"}}}}}}"#,
            b64("env:pw")
        );
        write_config(dir.path(), &json);
        let _env = EnvGuard::set(&[("DOCKER_CONFIG", dir.path().into())]);
        let (creds, source) = lookup("r.example").unwrap().unwrap();
        assert_eq!(creds.username, "env");
        assert_eq!(
            source,
            CredentialSource::DockerConfig {
                path: dir.path().join("config.json")
            }
        );
    }

    #[test]
    fn lookup_without_config_file_gives_none() {
        let dir = tempfile::tempdir().unwrap();
        let _env = EnvGuard::set(&[("DOCKER_CONFIG", dir.path().into())]);
        assert!(lookup("r.example").unwrap().is_none());
    }

    #[test]
    fn debug_redacts_the_password() {
        let creds = Credentials::new("alice", "very-secret-pw");
        let shown = format!("{creds:?}");
        assert!(!shown.contains("very-secret-pw"), "{shown}");
        assert!(shown.contains("alice"), "{shown}");
        assert!(shown.contains("***"), "{shown}");
        let shown = format!("{:?}", Some((creds, CredentialSource::Explicit)));
        assert!(!shown.contains("very-secret-pw"), "{shown}");
    }

    #[test]
    fn parse_creds_splits_at_first_colon() {
        let creds = parse_creds("user:pa:ss").unwrap();
        assert_eq!(creds.username, "user");
        assert_eq!(creds.password(), "pa:ss");
    }

    #[test]
    fn parse_creds_errors_do_not_echo_the_secret() {
        for (input, problem) in [
            ("", "empty"),
            ("justapasswordlikething", "missing ':'"),
            (":topsecret", "empty user"),
            ("user:", "empty password"),
        ] {
            let err = parse_creds(input).unwrap_err();
            assert_eq!(err.reason(), "InvalidCredentials");
            let msg = err.to_string();
            assert!(msg.contains(problem), "{input:?}: {msg}");
            assert!(
                !msg.contains("topsecret") && !msg.contains("justapassword"),
                "{msg}"
            );
        }
    }
}
