//! Where artifacts are stored: OCI registries over HTTP(S) ([`remote`]) and local OCI image
//! layouts ([`layout`]), behind one [`Repository`] type so every command works on both.
//!
//! Every read is bounded and every digest is checked: manifests are hashed when they arrive
//! and compared with the digest they were asked for, blobs are hashed while they stream to
//! disk. Nothing here trusts what a server says about its own content.

pub mod auth;
pub mod layout;
pub mod remote;

use std::fs::File;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;

use crate::digest::{Digest, DigestError};
use crate::oci::{Descriptor, ImageIndex};
use crate::reference::Reference;

pub use auth::Credentials;

/// How to reach registries: transport, trust, credentials, timeouts.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Talk plain HTTP instead of HTTPS (explicit opt-in, for local registries).
    pub plain_http: bool,
    /// Extra PEM CA bundle trusted for TLS, in addition to the system roots.
    pub ca_file: Option<PathBuf>,
    /// Extra PEM CA bundle given as bytes (the puller's `spec.caSecretRef`), in addition to
    /// the system roots and `ca_file`.
    pub ca_pem: Option<CaBundle>,
    /// Explicit credentials (`--creds`, a pull Secret); otherwise docker's `config.json` is
    /// consulted.
    pub creds: Option<Credentials>,
    /// Where `creds` came from when not the command line (e.g. `pull secret team-a/regcred`),
    /// for messages; `None` means `--creds`.
    pub creds_origin: Option<String>,
    /// Timeout of each request, end to end: connecting, the response headers and the whole
    /// body (a slow body fails with [`RegistryError::Timeout`]).
    pub timeout: Duration,
    /// Attempts after the first one for transient failures (connection, 5xx, 429).
    pub retries: u32,
    /// Largest blob tresor downloads.
    pub max_blob_bytes: u64,
    /// Whose settings error messages suggest: the CLI's flags or the ArtifactSync's fields.
    pub hints: Hints,
}

/// Who configures the registry access, so that an error names a setting the reader can
/// change: a flag of the `tresor` command line, or a field of the puller's ArtifactSync.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Hints {
    /// The `tresor` command line (`--plain-http`, `--ca-file`, `--creds`).
    #[default]
    Cli,
    /// The puller's ArtifactSync (`spec.insecure`, `spec.caSecretRef`, `spec.pullSecretRef`).
    Puller,
}

impl Hints {
    /// How to talk plain HTTP.
    pub fn plain_http(self) -> &'static str {
        match self {
            Self::Cli => "--plain-http",
            Self::Puller => "spec.insecure: true",
        }
    }

    /// How to trust another certificate authority.
    pub fn ca(self) -> &'static str {
        match self {
            Self::Cli => "--ca-file CA.pem",
            Self::Puller => "spec.caSecretRef (a Secret whose ca.crt holds the CA)",
        }
    }

    /// How to give credentials.
    pub fn credentials(self) -> &'static str {
        match self {
            Self::Cli => "pass --creds USER:PASSWORD or run `docker login HOST`",
            Self::Puller => {
                "set spec.pullSecretRef to a Secret of type kubernetes.io/dockerconfigjson"
            }
        }
    }
}

impl Default for RegistryOptions {
    fn default() -> Self {
        Self {
            plain_http: false,
            ca_file: None,
            ca_pem: None,
            creds: None,
            creds_origin: None,
            timeout: Duration::from_secs(30),
            retries: 3,
            max_blob_bytes: 1024 * 1024 * 1024,
            hints: Hints::Cli,
        }
    }
}

/// PEM CA certificates and where they came from (named in errors, never the content).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaBundle {
    /// E.g. `Secret team-a/registry-ca key ca.crt`.
    pub origin: String,
    /// One or more PEM certificates.
    pub pem: Vec<u8>,
}

/// Errors talking to a registry or an OCI layout.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry could not be reached (DNS, connection refused, TLS handshake, timeout).
    #[error("cannot reach registry {host}: {message}")]
    Unreachable {
        /// Registry host.
        host: String,
        /// What failed, from the HTTP stack.
        message: String,
    },
    /// The registry refused the credentials, or needs some and none were found.
    #[error("unauthorized (401) at {host} for {repository}: {detail}")]
    Unauthorized {
        /// Registry host.
        host: String,
        /// Repository path.
        repository: String,
        /// What to do about it.
        detail: String,
    },
    /// The registry answered a TLS handshake in plain HTTP.
    #[error(
        "{host} speaks plain HTTP, not HTTPS; if that is intended and you trust the network \
         path to it (a local or test registry), use {hint}"
    )]
    PlainHttp {
        /// Registry host.
        host: String,
        /// The setting that makes tresor talk plain HTTP.
        hint: &'static str,
    },
    /// The registry's TLS certificate was refused.
    #[error(
        "the TLS certificate of {host} is not trusted: {why}; if the registry uses a private \
         certificate authority, trust it with {hint}"
    )]
    UntrustedCertificate {
        /// Registry host.
        host: String,
        /// What is wrong with the certificate, in words.
        why: String,
        /// The setting that adds a CA.
        hint: &'static str,
    },
    /// The credentials are valid but lack the permission.
    #[error(
        "access denied (403) at {host} for {repository}: the credentials lack {action} permission"
    )]
    Denied {
        /// Registry host.
        host: String,
        /// Repository path.
        repository: String,
        /// `pull` or `push`.
        action: String,
    },
    /// No manifest under that tag or digest.
    #[error("{reference}: manifest not found (no such tag or digest)")]
    ManifestNotFound {
        /// The reference asked for.
        reference: String,
    },
    /// The repository does not exist (or is not visible with these credentials).
    #[error("{repository}: repository not found")]
    RepositoryNotFound {
        /// The repository.
        repository: String,
    },
    /// No blob under that digest.
    #[error("{repository}: blob {digest} not found")]
    BlobNotFound {
        /// The repository.
        repository: String,
        /// The missing blob.
        digest: Digest,
    },
    /// Any other unexpected HTTP status.
    #[error("{method} {url} failed with HTTP {status}: {body}")]
    Status {
        /// HTTP method.
        method: String,
        /// URL (never carries credentials).
        url: String,
        /// Status code.
        status: u16,
        /// Start of the error body.
        body: String,
    },
    /// A response or file was larger than tresor reads.
    #[error("{what} exceeds the limit of {limit} bytes")]
    TooLarge {
        /// What was being read.
        what: String,
        /// The limit.
        limit: u64,
    },
    /// Content did not match its digest or declared size.
    #[error("{what}: {source}")]
    Digest {
        /// What was being read.
        what: String,
        /// The mismatch.
        source: DigestError,
    },
    /// Content had the right digest but the wrong size.
    #[error("{what}: size mismatch: descriptor says {expected} bytes, got {actual}")]
    SizeMismatch {
        /// What was being read.
        what: String,
        /// Declared size.
        expected: u64,
        /// Received size.
        actual: u64,
    },
    /// A manifest or index could not be parsed.
    #[error("{what}: invalid {kind}: {message}")]
    Invalid {
        /// Where it came from.
        what: String,
        /// `manifest`, `index.json`, …
        kind: String,
        /// The parse error.
        message: String,
    },
    /// TLS configuration (`--ca-file`) is unusable.
    #[error("cannot use CA file {path}: {message}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// Looking up credentials failed.
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
    /// A local file operation failed (OCI layouts, temporary files).
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A request did not complete, headers and body, within the timeout.
    #[error(
        "{what}: no complete answer from {host} within {timeout}; the registry or the network \
         is too slow or stalled: retry later, or raise --timeout (the puller: --timeout, or \
         the ArtifactSync's spec.timeout)",
        timeout = humantime::format_duration(*.timeout)
    )]
    Timeout {
        /// Registry (or token service, object store) host.
        host: String,
        /// What was being fetched, e.g. `blob sha256:… of oci://host/repo`.
        what: String,
        /// The timeout that ran out.
        timeout: Duration,
    },
    /// The registry pointed at a URL (`Location`, `Link`, a redirect) that tresor does not
    /// follow.
    #[error(
        "{host} sent a {header} to {url}, which tresor does not follow: {why}; the registry is \
         misconfigured or hostile"
    )]
    UnsafeRedirect {
        /// Registry host.
        host: String,
        /// `Location`, `Link` or `redirect`.
        header: &'static str,
        /// The target, without its query.
        url: String,
        /// Why it is refused.
        why: &'static str,
    },
    /// The tag list has more tags than tresor reads.
    #[error(
        "tag list of {repository} has more than {limit} tags, more than tresor reads: address \
         the artifact by digest, or delete old tags"
    )]
    TooManyTags {
        /// The repository.
        repository: String,
        /// Most tags read.
        limit: usize,
    },
    /// The tag list did not end after as many pages as tresor reads.
    #[error(
        "tag list of {repository} did not end after {pages} pages (each with a Link to the \
         next); address the artifact by digest"
    )]
    TagListTooLong {
        /// The repository.
        repository: String,
        /// Most pages read.
        pages: usize,
    },
    /// The operation needs a tag or digest and the reference has neither.
    #[error("{reference}: no tag or digest given; add :tag or @sha256:…")]
    NoTagOrDigest {
        /// The reference.
        reference: String,
    },
}

impl RegistryError {
    /// Stable CamelCase reason for conditions, events, metrics and JSON output.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unreachable { .. } => "RegistryUnreachable",
            // Kinds of "cannot reach": the reason stays the one alerts already match.
            Self::PlainHttp { .. } | Self::UntrustedCertificate { .. } => "RegistryUnreachable",
            Self::Unauthorized { .. } => "Unauthorized",
            Self::Denied { .. } => "Denied",
            Self::ManifestNotFound { .. } => "ManifestNotFound",
            Self::BlobNotFound { .. } => "BlobNotFound",
            Self::RepositoryNotFound { .. } => "RepositoryNotFound",
            Self::Status { .. } => "RegistryError",
            Self::TooLarge { .. } => "TooLarge",
            Self::Digest { source, .. } => source.reason(),
            Self::SizeMismatch { .. } => "SizeMismatch",
            Self::Invalid { .. } => "InvalidManifest",
            Self::CaFile { .. } => "InvalidCaFile",
            Self::Auth(e) => e.reason(),
            Self::Io { .. } => "IoError",
            Self::NoTagOrDigest { .. } => "NoTagOrDigest",
            Self::Timeout { .. } => "RegistryTimeout",
            Self::UnsafeRedirect { .. } => "UnsafeRedirect",
            Self::TooManyTags { .. } => "TooManyTags",
            Self::TagListTooLong { .. } => "TagListTooLong",
        }
    }

    /// Whether retrying later may succeed (network trouble, server errors).
    pub fn is_transient(&self) -> bool {
        match self {
            // A certificate or transport mix-up can be fixed on the registry's side (a renewed
            // certificate): the engine keeps retrying with backoff, one attempt per cycle.
            Self::Unreachable { .. }
            | Self::Timeout { .. }
            | Self::PlainHttp { .. }
            | Self::UntrustedCertificate { .. } => true,
            Self::Status { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

/// A manifest as fetched: the exact bytes, their digest and media type.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// The bytes exactly as stored; signatures and digests are over these.
    pub bytes: Bytes,
    /// Digest of `bytes` (checked against the reference when it was pinned).
    pub digest: Digest,
    /// Media type from the response or the document's `mediaType` field.
    pub media_type: String,
}

/// A tag or a digest: what a manifest is addressed by.
#[derive(Debug, Clone, Copy)]
pub enum ManifestRef<'a> {
    /// A tag.
    Tag(&'a str),
    /// A digest.
    Digest(&'a Digest),
}

impl std::fmt::Display for ManifestRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tag(t) => f.write_str(t),
            Self::Digest(d) => write!(f, "{d}"),
        }
    }
}

/// A repository in a registry or an OCI layout; every command goes through this.
pub enum Repository {
    /// An OCI registry over HTTP(S).
    Remote(Box<remote::RemoteRepository>),
    /// A local OCI image layout.
    Layout(layout::LayoutRepository),
}

impl Repository {
    /// Opens the repository `reference` points at (no network traffic yet).
    pub fn open(reference: &Reference, options: &RegistryOptions) -> Result<Self, RegistryError> {
        Ok(match reference {
            Reference::Registry(r) => {
                Self::Remote(Box::new(remote::RemoteRepository::new(r, options)?))
            }
            Reference::Layout(l) => Self::Layout(layout::LayoutRepository::new(&l.path)),
        })
    }

    /// The manifest reference of `reference`: its digest when pinned, else its tag.
    pub fn manifest_ref(reference: &Reference) -> Result<ManifestRef<'_>, RegistryError> {
        match (reference.digest(), reference.tag()) {
            (Some(d), _) => Ok(ManifestRef::Digest(d)),
            (None, Some(t)) => Ok(ManifestRef::Tag(t)),
            (None, None) => Err(RegistryError::NoTagOrDigest {
                reference: reference.to_string(),
            }),
        }
    }

    /// Fetches a manifest (bounded), checking its digest when addressed by digest.
    pub async fn fetch_manifest(
        &self,
        at: ManifestRef<'_>,
    ) -> Result<FetchedManifest, RegistryError> {
        match self {
            Self::Remote(r) => r.fetch_manifest(at).await,
            Self::Layout(l) => l.fetch_manifest(at),
        }
    }

    /// The digest a tag (or digest) currently resolves to, or `None` when it does not exist.
    /// On a registry this is one HEAD request.
    pub async fn resolve(&self, at: ManifestRef<'_>) -> Result<Option<Digest>, RegistryError> {
        match self {
            Self::Remote(r) => r.head_manifest(at).await,
            Self::Layout(l) => l.resolve(at),
        }
    }

    /// Whether the blob is present.
    pub async fn blob_exists(&self, digest: &Digest) -> Result<bool, RegistryError> {
        match self {
            Self::Remote(r) => r.blob_exists(digest).await,
            Self::Layout(l) => l.blob_exists(digest),
        }
    }

    /// Uploads a blob in one piece, unless it is already there. Returns whether it was sent.
    pub async fn push_blob(&self, digest: &Digest, data: Bytes) -> Result<bool, RegistryError> {
        if self.blob_exists(digest).await? {
            return Ok(false);
        }
        match self {
            Self::Remote(r) => r.push_blob(digest, data).await?,
            Self::Layout(l) => l.push_blob(digest, &data)?,
        }
        Ok(true)
    }

    /// Stores a manifest under a tag (or only by digest when `tag` is `None`).
    pub async fn push_manifest(
        &self,
        media_type: &str,
        bytes: &[u8],
        tag: Option<&str>,
    ) -> Result<Digest, RegistryError> {
        match self {
            Self::Remote(r) => r.push_manifest(media_type, bytes, tag).await,
            Self::Layout(l) => l.push_manifest(media_type, bytes, tag),
        }
    }

    /// Fetches a blob into an anonymous temporary file, checking size and digest while it
    /// streams. The returned file is rewound and holds exactly the verified bytes.
    pub async fn fetch_blob(&self, descriptor: &Descriptor) -> Result<File, RegistryError> {
        match self {
            Self::Remote(r) => r.fetch_blob(descriptor).await,
            Self::Layout(l) => l.fetch_blob(descriptor),
        }
    }

    /// Fetches a small blob (config, signature payload) into memory, checked.
    pub async fn fetch_small_blob(
        &self,
        descriptor: &Descriptor,
        limit: u64,
    ) -> Result<Bytes, RegistryError> {
        if descriptor.size > limit {
            return Err(RegistryError::TooLarge {
                what: format!("blob {}", descriptor.digest),
                limit,
            });
        }
        let what = format!("blob {}", descriptor.digest);
        // Small blobs (signature payloads, bundles) are read straight into memory: a
        // temporary file per signature would be pointless I/O on every verification.
        let bytes = match self {
            Self::Remote(r) => r.fetch_blob_bytes(descriptor, limit).await?,
            Self::Layout(l) => l.fetch_blob_bytes(descriptor, limit)?,
        };
        check_content(&what, descriptor, Digest::of(&bytes), bytes.len() as u64)?;
        Ok(bytes)
    }

    /// The referrers of `digest` through the OCI referrers API (see
    /// [`remote::RemoteRepository::referrers`]). `None` when there is no such API: always for
    /// OCI layouts, which only have the `sha256-<hex>` fallback tag.
    pub async fn referrers(
        &self,
        digest: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Option<ImageIndex>, RegistryError> {
        match self {
            Self::Remote(r) => r.referrers(digest, artifact_type).await,
            Self::Layout(_) => Ok(None),
        }
    }

    /// All tags of the repository, sorted.
    pub async fn list_tags(&self) -> Result<Vec<String>, RegistryError> {
        let mut tags = match self {
            Self::Remote(r) => r.list_tags().await?,
            Self::Layout(l) => l.list_tags()?,
        };
        tags.sort();
        tags.dedup();
        Ok(tags)
    }
}

/// Checks size and digest of fully received content.
pub(crate) fn check_content(
    what: &str,
    descriptor: &Descriptor,
    actual: Digest,
    actual_size: u64,
) -> Result<(), RegistryError> {
    if actual_size != descriptor.size {
        return Err(RegistryError::SizeMismatch {
            what: what.to_string(),
            expected: descriptor.size,
            actual: actual_size,
        });
    }
    if actual != descriptor.digest {
        return Err(RegistryError::Digest {
            what: what.to_string(),
            source: DigestError::Mismatch {
                expected: descriptor.digest.clone(),
                actual,
            },
        });
    }
    Ok(())
}

/// Media type of a manifest document: its `mediaType` field, else guessed from its shape.
pub(crate) fn sniff_media_type(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(bytes).ok()?;
    probe.media_type.or_else(|| {
        Some(if probe.manifests.is_some() {
            crate::oci::OCI_INDEX_MEDIA_TYPE.to_string()
        } else {
            crate::oci::OCI_MANIFEST_MEDIA_TYPE.to_string()
        })
    })
}
