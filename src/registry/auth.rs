//! Registry credentials (temporary minimal version; replaced by the infra branch).
use std::path::PathBuf;

/// Credentials.
#[derive(Clone)]
pub struct Credentials {
    /// User.
    pub username: String,
    password: String,
}
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, ***)", self.username)
    }
}
impl Credentials {
    /// New.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self { username: username.into(), password: password.into() }
    }
    /// Password.
    pub fn password(&self) -> &str {
        &self.password
    }
}
/// Source.
#[derive(Clone, Debug)]
pub enum CredentialSource {
    /// --creds
    Explicit,
    /// config
    DockerConfig {
        /// path
        path: PathBuf,
    },
    /// helper
    Helper {
        /// helper
        helper: String,
    },
}
/// Error.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// bad
    #[error("invalid --creds: expected user:password")]
    InvalidCreds,
}
impl AuthError {
    /// reason
    pub fn reason(&self) -> &'static str {
        "InvalidCredentials"
    }
}
/// Parse.
pub fn parse_creds(s: &str) -> Result<Credentials, AuthError> {
    let (u, p) = s.split_once(':').ok_or(AuthError::InvalidCreds)?;
    Ok(Credentials::new(u, p))
}
/// Lookup.
pub fn lookup(_host: &str) -> Result<Option<(Credentials, CredentialSource)>, AuthError> {
    Ok(None)
}
