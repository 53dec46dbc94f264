//! The OCI distribution API over HTTP(S), written for tresor's rules: bounded reads, digest
//! checks on everything, one-piece blob uploads, explicit `Accept` headers, the bearer-token
//! and basic-auth challenge flows, timeouts and retries with backoff on transient failures.
//!
//! Credentials are only ever put into `Authorization` headers, and only on requests to the
//! registry's own origin (scheme, host, port): a `Location`, `Link` or redirect to another
//! origin is followed without them, one from https to plain http not at all (see
//! `check_follow`). Errors name where credentials came from (`--creds`, docker's config
//! file, a credential helper), never their value.
//!
//! The timeout bounds each HTTP exchange end to end, body included, so a registry that
//! trickles a body cannot hold tresor for longer than `--timeout`.

use std::fs::File;
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use reqwest::header::{
    HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION,
};
use reqwest::{Method, Request, RequestBuilder, Response, StatusCode, Url};
use tokio::sync::Mutex;

use super::auth::{self, CredentialSource, Credentials};
use super::{
    check_content, sniff_media_type, FetchedManifest, Hints, ManifestRef, RegistryError,
    RegistryOptions,
};
use crate::digest::{Digest, DigestError, Hasher};
use crate::oci::{
    Descriptor, ImageIndex, MANIFEST_ACCEPT, MAX_MANIFEST_BYTES, OCI_INDEX_MEDIA_TYPE,
};
use crate::reference::RegistryReference;

const DOCKER_CONTENT_DIGEST: &str = "docker-content-digest";
const MAX_TOKEN_BYTES: u64 = 1024 * 1024;
/// Most tags read from a tag list, over all pages.
const MAX_TAGS: usize = 100_000;
/// Most tag-list pages read (registries page by 100 or 1000 tags).
const MAX_TAG_PAGES: usize = 1_000;
/// Most bytes of tag-list JSON read, over all pages (100,000 tags of 128 characters fit).
const MAX_TAG_LIST_BYTES: u64 = 16 * 1024 * 1024;
const MAX_ERROR_BODY: u64 = 4096;
/// Most redirects followed for one request.
const MAX_REDIRECTS: usize = 10;

/// Which permission a request needs; decides the bearer-token scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Pull,
    Push,
}

#[derive(Default)]
struct AuthState {
    /// The `Authorization` header value currently in use.
    header: Option<String>,
    /// Whether `header` was obtained with push scope.
    push_scope: bool,
    /// Credentials, looked up on the first challenge.
    creds: Option<Option<(Credentials, CredentialSource)>>,
}

/// The error detail when a registry wants credentials and none were found.
fn needs_credentials(hints: Hints) -> String {
    format!("the registry requires credentials: {}", hints.credentials())
}

/// HTTP clients of this process by what configures them: the timeout and the extra CA
/// certificates (by content). A client holds the TLS root store and a connection pool, so
/// every repository with the same settings shares one: the puller keeps one client, not
/// one per ArtifactSync, and reuses its connections to a registry across syncs.
/// Credentials are not part of a client (they go into each request's headers).
type ClientKey = (Duration, Vec<Vec<u8>>);

/// Distinct settings kept at most; past that the cache starts over (clients in use stay
/// alive through their repositories).
const MAX_SHARED_CLIENTS: usize = 64;

/// The shared client for `timeout` and `cas` (PEM, origin), built on first use (`host`
/// names the registry in errors).
fn shared_client(
    timeout: Duration,
    cas: &[(Vec<u8>, PathBuf)],
    host: &str,
) -> Result<reqwest::Client, RegistryError> {
    static CLIENTS: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<ClientKey, reqwest::Client>>,
    > = std::sync::OnceLock::new();
    let key: ClientKey = (timeout, cas.iter().map(|(pem, _)| pem.clone()).collect());
    let clients = CLIENTS.get_or_init(Default::default);
    if let Some(client) = clients
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&key)
    {
        return Ok(client.clone());
    }
    // `timeout` is the total of one exchange, body included: a read timeout alone lets a
    // server that sends one byte at a time hold a request for ever. Redirects are followed
    // by `RemoteRepository::execute`, which binds credentials to the registry's origin and
    // refuses https -> http; reqwest's own policy would follow such a downgrade.
    let mut builder = reqwest::Client::builder()
        .connect_timeout(timeout)
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("tresor/", env!("CARGO_PKG_VERSION")));
    for (pem, origin) in cas {
        builder = builder.tls_certs_merge(ca_certificates(pem, origin)?);
    }
    let client = builder.build().map_err(|e| RegistryError::Unreachable {
        host: host.to_string(),
        message: format!("cannot set up the HTTP client: {}", error_chain(&e)),
    })?;
    let mut clients = clients
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if clients.len() >= MAX_SHARED_CLIENTS {
        clients.clear();
    }
    clients.insert(key, client.clone());
    Ok(client)
}

/// One repository in an OCI registry.
pub struct RemoteRepository {
    http: reqwest::Client,
    base: String,
    /// `base` parsed: its origin is the only one that gets credentials.
    origin: Url,
    host: String,
    repository: String,
    explicit_creds: Option<(Credentials, CredentialSource)>,
    auth: Mutex<AuthState>,
    retries: u32,
    max_blob_bytes: u64,
    timeout: Duration,
    hints: Hints,
}

impl RemoteRepository {
    /// Prepares a client for `reference` (no request is sent yet).
    pub fn new(
        reference: &RegistryReference,
        options: &RegistryOptions,
    ) -> Result<Self, RegistryError> {
        let mut cas = Vec::new();
        if let Some(path) = &options.ca_file {
            let pem = std::fs::read(path).map_err(|e| RegistryError::CaFile {
                path: path.clone(),
                message: e.to_string(),
            })?;
            cas.push((pem, path.clone()));
        }
        if let Some(bundle) = &options.ca_pem {
            cas.push((bundle.pem.clone(), PathBuf::from(&bundle.origin)));
        }
        let http = shared_client(options.timeout, &cas, &reference.host)?;
        let scheme = if options.plain_http { "http" } else { "https" };
        let base = format!(
            "{scheme}://{}",
            crate::reference::endpoint_host(&reference.host)
        );
        let origin = Url::parse(&base).map_err(|e| RegistryError::Unreachable {
            host: reference.host.clone(),
            message: format!("not a valid registry address: {e}"),
        })?;
        Ok(Self {
            http,
            base,
            origin,
            host: reference.host.clone(),
            repository: reference.repository.clone(),
            explicit_creds: options.creds.clone().map(|c| {
                let source = match &options.creds_origin {
                    Some(origin) => CredentialSource::Named {
                        origin: origin.clone(),
                    },
                    None => CredentialSource::Explicit,
                };
                (c, source)
            }),
            auth: Mutex::new(AuthState::default()),
            retries: options.retries,
            max_blob_bytes: options.max_blob_bytes,
            timeout: options.timeout,
            hints: options.hints,
        })
    }

    fn url(&self, tail: &str) -> String {
        format!("{}/v2/{}/{tail}", self.base, self.repository)
    }

    fn display(&self, at: ManifestRef<'_>) -> String {
        match at {
            ManifestRef::Tag(t) => format!("oci://{}/{}:{t}", self.host, self.repository),
            ManifestRef::Digest(d) => format!("oci://{}/{}@{d}", self.host, self.repository),
        }
    }

    /// Fetches a manifest, bounded to 4 MiB, and checks its digest.
    pub async fn fetch_manifest(
        &self,
        at: ManifestRef<'_>,
    ) -> Result<FetchedManifest, RegistryError> {
        let url = self.url(&format!("manifests/{at}"));
        let resp = self
            .send(Action::Pull, || {
                self.http.get(&url).header(ACCEPT, MANIFEST_ACCEPT)
            })
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(RegistryError::ManifestNotFound {
                reference: self.display(at),
            });
        }
        let resp = self.expect_success(Method::GET, &url, resp).await?;
        let headers = resp.headers().clone();
        let what = format!("manifest {}", self.display(at));
        let bytes = read_bounded(resp, MAX_MANIFEST_BYTES, &what, self.timeout).await?;
        let digest = Digest::of(&bytes);
        let claimed = header_digest(&headers);
        let expected = match at {
            ManifestRef::Digest(d) => Some(d.clone()),
            ManifestRef::Tag(_) => claimed,
        };
        if let Some(expected) = expected {
            if expected != digest {
                return Err(RegistryError::Digest {
                    what,
                    source: DigestError::Mismatch {
                        expected,
                        actual: digest,
                    },
                });
            }
        }
        let media_type = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_string())
            .filter(|v| MANIFEST_ACCEPT.contains(v.as_str()))
            .or_else(|| sniff_media_type(&bytes))
            .unwrap_or_default();
        Ok(FetchedManifest {
            bytes,
            digest,
            media_type,
        })
    }

    /// One HEAD request: the digest the tag or digest resolves to, `None` when absent.
    pub async fn head_manifest(
        &self,
        at: ManifestRef<'_>,
    ) -> Result<Option<Digest>, RegistryError> {
        let url = self.url(&format!("manifests/{at}"));
        let resp = self
            .send(Action::Pull, || {
                self.http.head(&url).header(ACCEPT, MANIFEST_ACCEPT)
            })
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = self.expect_success(Method::HEAD, &url, resp).await?;
        match (header_digest(resp.headers()), at) {
            (Some(found), ManifestRef::Digest(asked)) if &found != asked => {
                Err(RegistryError::Digest {
                    what: format!("manifest {}", self.display(at)),
                    source: DigestError::Mismatch {
                        expected: asked.clone(),
                        actual: found,
                    },
                })
            }
            (Some(found), _) => Ok(Some(found)),
            // Registries without the header: fall back to hashing the manifest.
            (None, _) => Ok(Some(self.fetch_manifest(at).await?.digest)),
        }
    }

    /// Whether the blob exists (HEAD).
    pub async fn blob_exists(&self, digest: &Digest) -> Result<bool, RegistryError> {
        let url = self.url(&format!("blobs/{digest}"));
        let resp = self.send(Action::Pull, || self.http.head(&url)).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(false);
        }
        self.expect_success(Method::HEAD, &url, resp).await?;
        Ok(true)
    }

    /// Uploads a blob in one piece: POST to open the upload, one PUT with all bytes.
    pub async fn push_blob(&self, digest: &Digest, data: Bytes) -> Result<(), RegistryError> {
        let start = self.url("blobs/uploads/");
        let resp = self.send(Action::Push, || self.http.post(&start)).await?;
        let resp = self.expect_success(Method::POST, &start, resp).await?;
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| RegistryError::Status {
                method: "POST".into(),
                url: start.clone(),
                status: resp.status().as_u16(),
                body: "upload started without a Location header".into(),
            })?;
        // The upload may live elsewhere (another origin gets no credentials, see `execute`).
        let mut put = self
            .follow_target(resp.url(), location, "Location")?
            .to_string();
        put.push(if put.contains('?') { '&' } else { '?' });
        put.push_str(&format!("digest={digest}"));
        let len = data.len();
        let resp = self
            .send(Action::Push, || {
                self.http
                    .put(&put)
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_LENGTH, len)
                    .body(data.clone())
            })
            .await?;
        self.expect_success(Method::PUT, &strip_query(&put), resp)
            .await?;
        Ok(())
    }

    /// Stores a manifest under a tag, or under its digest when `tag` is `None`.
    pub async fn push_manifest(
        &self,
        media_type: &str,
        bytes: &[u8],
        tag: Option<&str>,
    ) -> Result<Digest, RegistryError> {
        let digest = Digest::of(bytes);
        let target = tag.map_or_else(|| digest.to_string(), str::to_string);
        let url = self.url(&format!("manifests/{target}"));
        let body = Bytes::copy_from_slice(bytes);
        let resp = self
            .send(Action::Push, || {
                self.http
                    .put(&url)
                    .header(CONTENT_TYPE, media_type)
                    .body(body.clone())
            })
            .await?;
        let resp = self.expect_success(Method::PUT, &url, resp).await?;
        if let Some(stored) = header_digest(resp.headers()) {
            if stored != digest {
                return Err(RegistryError::Digest {
                    what: format!("manifest pushed to {url}"),
                    source: DigestError::Mismatch {
                        expected: digest,
                        actual: stored,
                    },
                });
            }
        }
        Ok(digest)
    }

    /// Streams a blob into a temporary file, checking size and digest on the way.
    pub async fn fetch_blob(&self, descriptor: &Descriptor) -> Result<File, RegistryError> {
        let what = format!("blob {}", descriptor.digest);
        if descriptor.size > self.max_blob_bytes {
            return Err(RegistryError::TooLarge {
                what,
                limit: self.max_blob_bytes,
            });
        }
        let url = self.url(&format!("blobs/{}", descriptor.digest));
        let fetching = self.blob_what(&descriptor.digest);
        let mut resp = self.send(Action::Pull, || self.http.get(&url)).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(RegistryError::BlobNotFound {
                repository: format!("oci://{}/{}", self.host, self.repository),
                digest: descriptor.digest.clone(),
            });
        }
        resp = self.expect_success(Method::GET, &url, resp).await?;
        let temp_err = |source| RegistryError::Io {
            path: PathBuf::from("<temporary blob file>"),
            source,
        };
        let mut file = tempfile::tempfile().map_err(temp_err)?;
        let mut hasher = Hasher::default();
        {
            let mut out = std::io::BufWriter::with_capacity(256 * 1024, &mut file);
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| transport_error(&e, resp.url(), &fetching, self.timeout))?
            {
                hasher.update(&chunk);
                if hasher.len() > descriptor.size {
                    return Err(RegistryError::SizeMismatch {
                        what,
                        expected: descriptor.size,
                        actual: hasher.len(),
                    });
                }
                out.write_all(&chunk).map_err(temp_err)?;
            }
            out.flush().map_err(temp_err)?;
        }
        let size = hasher.len();
        check_content(&what, descriptor, hasher.finish(), size)?;
        file.rewind().map_err(temp_err)?;
        Ok(file)
    }

    /// The OCI referrers API: the index of manifests whose `subject` is `digest`, filtered by
    /// `artifact_type` (the registry may ignore the filter; callers filter again). Only the
    /// first page is read, bounded like a manifest. `None` when the registry has no referrers
    /// API (404, as Distribution 2.8 answers, or 405/501): callers fall back to the
    /// `sha256-<hex>` tag.
    pub async fn referrers(
        &self,
        digest: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Option<ImageIndex>, RegistryError> {
        let mut url = self.url(&format!("referrers/{digest}"));
        if let Some(t) = artifact_type {
            url.push_str("?artifactType=");
            url.push_str(&t.replace('+', "%2B"));
        }
        let resp = self
            .send(Action::Pull, || {
                self.http.get(&url).header(ACCEPT, OCI_INDEX_MEDIA_TYPE)
            })
            .await?;
        if matches!(
            resp.status(),
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_IMPLEMENTED
        ) {
            return Ok(None);
        }
        let resp = self.expect_success(Method::GET, &url, resp).await?;
        let what = format!("referrers of {}", self.display(ManifestRef::Digest(digest)));
        let bytes = read_bounded(resp, MAX_MANIFEST_BYTES, &what, self.timeout).await?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| RegistryError::Invalid {
                what,
                kind: "referrers index".into(),
                message: e.to_string(),
            })
    }

    /// Reads a small blob into memory, bounded to `limit` bytes (the caller checks the digest).
    pub async fn fetch_blob_bytes(
        &self,
        descriptor: &Descriptor,
        limit: u64,
    ) -> Result<Bytes, RegistryError> {
        let url = self.url(&format!("blobs/{}", descriptor.digest));
        let resp = self.send(Action::Pull, || self.http.get(&url)).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(RegistryError::BlobNotFound {
                repository: format!("oci://{}/{}", self.host, self.repository),
                digest: descriptor.digest.clone(),
            });
        }
        let resp = self.expect_success(Method::GET, &url, resp).await?;
        read_bounded(
            resp,
            limit,
            &self.blob_what(&descriptor.digest),
            self.timeout,
        )
        .await
    }

    /// A blob as named in errors: `blob sha256:… of oci://host/repo`.
    fn blob_what(&self, digest: &Digest) -> String {
        format!("blob {digest} of oci://{}/{}", self.host, self.repository)
    }

    /// All tags, following `Link` pagination: at most `MAX_TAGS` tags, `MAX_TAG_PAGES`
    /// pages and `MAX_TAG_LIST_BYTES` bytes over all pages, each with its own error.
    pub async fn list_tags(&self) -> Result<Vec<String>, RegistryError> {
        #[derive(serde::Deserialize)]
        struct TagList {
            tags: Option<Vec<String>>,
        }
        let repository = format!("oci://{}/{}", self.host, self.repository);
        let what = format!("tag list of {repository}");
        let mut tags = Vec::new();
        let mut next = Some(self.url("tags/list?n=1000"));
        let mut pages = 0;
        let mut bytes_left = MAX_TAG_LIST_BYTES;
        while let Some(url) = next.take() {
            pages += 1;
            if pages > MAX_TAG_PAGES {
                return Err(RegistryError::TagListTooLong {
                    repository,
                    pages: MAX_TAG_PAGES,
                });
            }
            let resp = self.send(Action::Pull, || self.http.get(&url)).await?;
            if resp.status() == StatusCode::NOT_FOUND {
                return Err(RegistryError::RepositoryNotFound { repository });
            }
            let resp = self.expect_success(Method::GET, &url, resp).await?;
            next = next_link(resp.headers())
                .map(|link| self.follow_target(resp.url(), &link, "Link"))
                .transpose()?
                .map(String::from);
            let body = read_bounded(resp, bytes_left, &what, self.timeout)
                .await
                .map_err(|e| match e {
                    // The limit is over all pages, not this one.
                    RegistryError::TooLarge { what, .. } => RegistryError::TooLarge {
                        what,
                        limit: MAX_TAG_LIST_BYTES,
                    },
                    e => e,
                })?;
            bytes_left = bytes_left.saturating_sub(body.len() as u64);
            let page: TagList =
                serde_json::from_slice(&body).map_err(|e| RegistryError::Invalid {
                    what: what.clone(),
                    kind: "tag list".into(),
                    message: e.to_string(),
                })?;
            let page = page.tags.unwrap_or_default();
            if tags.len() + page.len() > MAX_TAGS {
                return Err(RegistryError::TooManyTags {
                    repository,
                    limit: MAX_TAGS,
                });
            }
            tags.extend(page);
        }
        Ok(tags)
    }

    /// Sends a request, answering auth challenges once and retrying transient failures
    /// with exponential backoff. `build` is called for every attempt. The registry's
    /// `Authorization` goes only to its own origin (see [`Self::execute`]); a 401 from another
    /// origin is not answered.
    async fn send(
        &self,
        action: Action,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Response, RegistryError> {
        let mut attempt = 0;
        let mut challenged = false;
        loop {
            let header = {
                let state = self.auth.lock().await;
                state.header.clone()
            };
            let request = build().build().map_err(|e| self.unreachable(&e))?;
            let what = format!(
                "{} {}",
                request.method(),
                strip_query(request.url().as_str())
            );
            let target = request.url().clone();
            let credential = header.as_deref().map(|h| (&self.origin, h));
            let result = self.execute(request, credential).await?;
            let transient = match &result {
                Err(e) => {
                    (e.is_connect() || e.is_timeout() || e.is_request()) && !is_tls_refusal(e)
                }
                Ok(resp) => {
                    resp.status().is_server_error()
                        || resp.status() == StatusCode::TOO_MANY_REQUESTS
                }
            };
            if transient && attempt < self.retries {
                attempt += 1;
                let backoff = Duration::from_millis(200 * (1 << attempt.min(6)));
                tracing::debug!(host = %self.host, attempt, ?backoff, "transient failure, retrying");
                tokio::time::sleep(backoff).await;
                continue;
            }
            let resp = result.map_err(|e| self.connect_error(&e, &target, &what))?;
            let own_origin = resp.url().origin() == self.origin.origin();
            let needs_auth = own_origin
                && (resp.status() == StatusCode::UNAUTHORIZED
                    || (resp.status() == StatusCode::FORBIDDEN && action == Action::Push && {
                        let state = self.auth.lock().await;
                        !state.push_scope && state.header.is_some()
                    }));
            if needs_auth && !challenged {
                challenged = true;
                self.authenticate(&resp, action).await?;
                continue;
            }
            if resp.status() == StatusCode::UNAUTHORIZED {
                let state = self.auth.lock().await;
                let detail = if !own_origin {
                    format!(
                        "{} asked for credentials, but tresor sends the registry's credentials \
                         only to the registry itself ({})",
                        resp.url().origin().ascii_serialization(),
                        self.origin.origin().ascii_serialization()
                    )
                } else {
                    match state.creds.as_ref().and_then(Option::as_ref) {
                        Some((_, source)) => format!(
                            "the registry rejected the credentials from {}; check user name and password",
                            describe(source)
                        ),
                        None => needs_credentials(self.hints),
                    }
                };
                return Err(RegistryError::Unauthorized {
                    host: self.host.clone(),
                    repository: self.repository.clone(),
                    detail,
                });
            }
            return Ok(resp);
        }
    }

    /// Sends `request`, following redirects of GET and HEAD requests (at most
    /// [`MAX_REDIRECTS`], by the rules of [`check_follow`]). `credential` is an origin and an
    /// `Authorization` value: it is set on each hop whose URL has that origin, and removed
    /// from every other hop. The outer error is a refused redirect, the inner one what the
    /// HTTP client reported (for the caller's retry decision).
    async fn execute(
        &self,
        mut request: Request,
        credential: Option<(&Url, &str)>,
    ) -> Result<Result<Response, reqwest::Error>, RegistryError> {
        let mut hops = 0;
        loop {
            request.headers_mut().remove(AUTHORIZATION);
            if let Some((origin, value)) = credential {
                if request.url().origin() == origin.origin() {
                    let mut value =
                        HeaderValue::from_str(value).map_err(|_| RegistryError::Unauthorized {
                            host: self.host.clone(),
                            repository: self.repository.clone(),
                            detail: "the credentials or the token are not a valid HTTP header \
                                     value; check them"
                                .into(),
                        })?;
                    value.set_sensitive(true);
                    request.headers_mut().insert(AUTHORIZATION, value);
                }
            }
            let method = request.method().clone();
            let headers = request.headers().clone();
            let from = request.url().clone();
            let resp = match self.http.execute(request).await {
                Ok(resp) => resp,
                Err(e) => return Ok(Err(e)),
            };
            let redirect = matches!(
                resp.status(),
                StatusCode::MOVED_PERMANENTLY
                    | StatusCode::FOUND
                    | StatusCode::SEE_OTHER
                    | StatusCode::TEMPORARY_REDIRECT
                    | StatusCode::PERMANENT_REDIRECT
            );
            let location = resp.headers().get(LOCATION).and_then(|v| v.to_str().ok());
            let (true, true, Some(location)) = (
                redirect,
                method == Method::GET || method == Method::HEAD,
                location,
            ) else {
                return Ok(Ok(resp));
            };
            hops += 1;
            let to = self.follow_target(&from, location, "redirect")?;
            if hops > MAX_REDIRECTS {
                return Err(RegistryError::UnsafeRedirect {
                    host: self.host.clone(),
                    header: "redirect",
                    url: strip_query(to.as_str()),
                    // The number is MAX_REDIRECTS.
                    why: "more than 10 redirects in a row",
                });
            }
            tracing::debug!(host = %self.host, to = %strip_query(to.as_str()), "following redirect");
            request = Request::new(method, to);
            *request.headers_mut() = headers;
        }
    }

    /// Resolves a `Location`, `Link` or redirect target (`header`) against the URL of the
    /// response that carried it, and checks that tresor follows it ([`check_follow`]).
    fn follow_target(
        &self,
        from: &Url,
        target: &str,
        header: &'static str,
    ) -> Result<Url, RegistryError> {
        let refuse = |url: String, why: &'static str| RegistryError::UnsafeRedirect {
            host: self.host.clone(),
            header,
            url,
            why,
        };
        let to = from
            .join(target)
            .map_err(|_| refuse(strip_query(target), "it is not a valid URL"))?;
        check_follow(from, &to).map_err(|why| refuse(strip_query(to.as_str()), why))?;
        Ok(to)
    }

    /// Answers a `WWW-Authenticate` challenge: basic credentials, or a bearer token from
    /// the realm the registry names.
    async fn authenticate(&self, resp: &Response, action: Action) -> Result<(), RegistryError> {
        let challenge = resp
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(Challenge::parse);
        let mut state = self.auth.lock().await;
        if state.creds.is_none() {
            let found = match &self.explicit_creds {
                Some(found) => Some(found.clone()),
                None => auth::lookup(&self.host)?,
            };
            state.creds = Some(found);
        }
        let creds = state.creds.clone().flatten();
        let unauthorized = |detail: String| RegistryError::Unauthorized {
            host: self.host.clone(),
            repository: self.repository.clone(),
            detail,
        };
        match challenge {
            Some(Challenge::Bearer { realm, service }) => {
                let scope = match action {
                    Action::Pull => format!("repository:{}:pull", self.repository),
                    Action::Push => format!("repository:{}:pull,push", self.repository),
                };
                let realm_url = self.origin.join(&realm).map_err(|e| {
                    unauthorized(format!(
                        "the registry named a token service that is not a valid URL ({e})"
                    ))
                })?;
                // Basic credentials are a password: they travel to the token service only
                // encrypted, or to the registry itself.
                let send_creds = basic_creds_allowed(&realm_url, &self.origin);
                let mut request = self
                    .http
                    .get(realm_url.clone())
                    .query(&[("scope", scope.as_str())]);
                if let Some(service) = &service {
                    request = request.query(&[("service", service.as_str())]);
                }
                let request = request.build().map_err(|e| self.unreachable(&e))?;
                let basic = creds
                    .as_ref()
                    .filter(|_| send_creds)
                    .map(|(c, _)| basic_header(c));
                let what = format!("token from {}", strip_query(realm_url.as_str()));
                let token_resp = self
                    .execute(request, basic.as_deref().map(|b| (&realm_url, b)))
                    .await?
                    .map_err(|e| self.connect_error(&e, &realm_url, &what))?;
                if !token_resp.status().is_success() {
                    let status = token_resp.status().as_u16();
                    return Err(unauthorized(match &creds {
                        Some((_, source)) if send_creds => format!(
                            "the token service {realm} answered HTTP {status} for the credentials from {}",
                            describe(source)
                        ),
                        Some((_, source)) => format!(
                            "the token service {realm} answered HTTP {status}; the credentials from {} \
                             were not sent to it, because it is plain http on another origin than \
                             the registry",
                            describe(source)
                        ),
                        None => format!(
                            "the token service {realm} answered HTTP {status}; {}",
                            self.hints.credentials()
                        ),
                    }));
                }
                let body = read_bounded(token_resp, MAX_TOKEN_BYTES, &what, self.timeout).await?;
                #[derive(serde::Deserialize)]
                struct Token {
                    token: Option<String>,
                    access_token: Option<String>,
                }
                let token: Token =
                    serde_json::from_slice(&body).map_err(|e| RegistryError::Invalid {
                        what: realm.clone(),
                        kind: "token response".into(),
                        message: e.to_string(),
                    })?;
                let token = token.token.or(token.access_token).ok_or_else(|| {
                    unauthorized(format!("the token service {realm} returned no token"))
                })?;
                state.header = Some(format!("Bearer {token}"));
                state.push_scope = action == Action::Push;
            }
            Some(Challenge::Basic) | None => {
                let (c, _) = creds.ok_or_else(|| unauthorized(needs_credentials(self.hints)))?;
                state.header = Some(basic_header(&c));
                state.push_scope = true;
            }
        }
        Ok(())
    }

    async fn expect_success(
        &self,
        method: Method,
        url: &str,
        resp: Response,
    ) -> Result<Response, RegistryError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        if status == StatusCode::FORBIDDEN {
            return Err(RegistryError::Denied {
                host: self.host.clone(),
                repository: self.repository.clone(),
                action: if method == Method::GET || method == Method::HEAD {
                    "pull".into()
                } else {
                    "push".into()
                },
            });
        }
        let body = read_bounded(resp, MAX_ERROR_BODY, "error body", self.timeout)
            .await
            .map(|b| String::from_utf8_lossy(&b).trim().to_string())
            .unwrap_or_default();
        Err(RegistryError::Status {
            method: method.to_string(),
            url: url.to_string(),
            status: status.as_u16(),
            body,
        })
    }

    /// Why a request got no answer: a plain-HTTP registry spoken to in TLS, a refused
    /// certificate (each naming the setting that fixes it), else [`transport_error`].
    fn connect_error(&self, error: &reqwest::Error, url: &Url, what: &str) -> RegistryError {
        let chain = error_chain(error);
        let host = url.host_str().unwrap_or(&self.host);
        let host = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        if chain.contains("InvalidContentType") {
            return RegistryError::PlainHttp {
                host,
                hint: self.hints.plain_http(),
            };
        }
        if let Some(why) = certificate_problem(&chain) {
            return RegistryError::UntrustedCertificate {
                host,
                why,
                hint: self.hints.ca(),
            };
        }
        transport_error(error, url, what, self.timeout)
    }

    fn unreachable(&self, error: &reqwest::Error) -> RegistryError {
        RegistryError::Unreachable {
            host: self.host.clone(),
            message: error_chain(error),
        }
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, PartialEq, Eq)]
enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

impl Challenge {
    fn parse(header: &str) -> Self {
        let (scheme, params) = header.trim().split_once(' ').unwrap_or((header, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Self::Basic;
        }
        let mut realm = None;
        let mut service = None;
        for (key, value) in parse_params(params) {
            match key.to_ascii_lowercase().as_str() {
                "realm" => realm = Some(value),
                "service" => service = Some(value),
                _ => {}
            }
        }
        match realm {
            Some(realm) => Self::Bearer { realm, service },
            None => Self::Basic,
        }
    }
}

/// Parses `key="value", key2=value2` (quoted values may contain commas).
fn parse_params(params: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = params.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key.trim().trim_start_matches(',').trim().to_string();
        let after = after.trim_start();
        let (value, remainder) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (
                    quoted.get(..end).unwrap_or_default().to_string(),
                    quoted.get(end + 1..).unwrap_or_default(),
                ),
                None => (quoted.to_string(), ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (
                    after.get(..end).unwrap_or_default().trim().to_string(),
                    after.get(end..).unwrap_or_default(),
                ),
                None => (after.trim().to_string(), ""),
            }
        };
        out.push((key, value));
        rest = remainder.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

/// The certificates of a PEM bundle; `origin` names it in errors.
fn ca_certificates(pem: &[u8], origin: &Path) -> Result<Vec<reqwest::Certificate>, RegistryError> {
    let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| RegistryError::CaFile {
        path: origin.to_path_buf(),
        message: e.to_string(),
    })?;
    if certs.is_empty() {
        return Err(RegistryError::CaFile {
            path: origin.to_path_buf(),
            message: "no PEM certificate found".to_string(),
        });
    }
    Ok(certs)
}

/// Whether tresor follows a `Location`, `Link` or redirect from `from` to `to`: only to
/// http(s) URLs, and never from https to plain http (credentials aside, the content would
/// then travel unprotected). Where credentials go is decided per request (only the
/// registry's origin gets them), not here.
fn check_follow(from: &Url, to: &Url) -> Result<(), &'static str> {
    match (from.scheme(), to.scheme()) {
        (_, scheme) if scheme != "http" && scheme != "https" => Err("it is not an http(s) URL"),
        ("https", "http") => Err("it leaves https for plain http"),
        _ => Ok(()),
    }
}

/// Whether basic credentials for the registry at `registry` may go to the token service at
/// `realm`: over https, or when it is the registry's own origin.
fn basic_creds_allowed(realm: &Url, registry: &Url) -> bool {
    realm.scheme() == "https" || realm.origin() == registry.origin()
}

/// `Basic base64(user:password)`.
fn basic_header(creds: &Credentials) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        creds.username,
        creds.password()
    ));
    format!("Basic {encoded}")
}

/// The registry error for a failed exchange with `url` while fetching `what`: a timeout
/// says which timeout ran out; anything else is "unreachable".
fn transport_error(
    error: &reqwest::Error,
    url: &Url,
    what: &str,
    timeout: Duration,
) -> RegistryError {
    let host = match url.port() {
        Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_string(),
    };
    if error.is_timeout() {
        RegistryError::Timeout {
            host,
            what: what.to_string(),
            timeout,
        }
    } else {
        RegistryError::Unreachable {
            host,
            message: error_chain(error),
        }
    }
}

fn describe(source: &CredentialSource) -> String {
    match source {
        CredentialSource::Explicit => "--creds".to_string(),
        CredentialSource::Named { origin } => origin.clone(),
        CredentialSource::DockerConfig { path } => format!("docker config {}", path.display()),
        CredentialSource::Helper { helper } => {
            format!("credential helper docker-credential-{helper}")
        }
    }
}

fn header_digest(headers: &HeaderMap) -> Option<Digest> {
    headers
        .get(DOCKER_CONTENT_DIGEST)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

fn next_link(headers: &HeaderMap) -> Option<String> {
    let link = headers.get(reqwest::header::LINK)?.to_str().ok()?;
    let (target, rel) = link.split_once(';')?;
    if !rel.contains("next") {
        return None;
    }
    Some(
        target
            .trim()
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_string(),
    )
}

fn strip_query(url: &str) -> String {
    url.split('?').next().unwrap_or(url).to_string()
}

/// Reads a response body, failing as soon as it passes `limit` bytes, or when the exchange
/// runs past `timeout` (which the HTTP client enforces; it is named in the error).
async fn read_bounded(
    mut resp: Response,
    limit: u64,
    what: &str,
    timeout: Duration,
) -> Result<Bytes, RegistryError> {
    let too_large = || RegistryError::TooLarge {
        what: what.to_string(),
        limit,
    };
    if resp.content_length().is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| transport_error(&e, resp.url(), what, timeout))?
    {
        if (out.len() + chunk.len()) as u64 > limit {
            return Err(too_large());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(out))
}

/// The error with its causes, e.g. "error sending request: dns error: failed to lookup".
/// Whether `error` is a TLS handshake this client refused (a certificate it does not
/// trust, or an invalid one): tokio-rustls reports those as an `io::Error` of kind
/// `InvalidData` (which hyper-util wraps in another `io::Error`). Asking again gets the
/// same certificate, so it is not retried.
fn is_tls_refusal(error: &(dyn std::error::Error + 'static)) -> bool {
    fn invalid_data(io: &std::io::Error) -> bool {
        io.kind() == std::io::ErrorKind::InvalidData
            || io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<std::io::Error>())
                .is_some_and(invalid_data)
    }
    let mut source = Some(error);
    while let Some(e) = source {
        if e.downcast_ref::<std::io::Error>().is_some_and(invalid_data) {
            return true;
        }
        source = e.source();
    }
    false
}

/// What rustls said about a refused certificate, in words (`None` when `chain` is not a
/// certificate refusal). rustls names the problem by its Debug variant (`UnknownIssuer`).
fn certificate_problem(chain: &str) -> Option<String> {
    let (_, detail) = chain.split_once("invalid peer certificate: ")?;
    let detail = detail.split(": ").next().unwrap_or(detail).trim();
    let why = match detail {
        "UnknownIssuer" => "it is signed by a certificate authority tresor does not know".into(),
        "Expired" => "it has expired".into(),
        "NotValidYet" => "it is not valid yet".into(),
        "Revoked" => "it is revoked".into(),
        "BadSignature" => "its signature is invalid".into(),
        d if d.starts_with("NotValidForName") => "it is not valid for this host name".into(),
        d if d.starts_with("ExpiredContext") => "it has expired".into(),
        d if d.starts_with("NotValidYetContext") => "it is not valid yet".into(),
        other => format!("the TLS library refused it ({other})"),
    };
    Some(why)
}

fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_certificate_is_not_transient_a_refused_connection_is() {
        use std::io::{Error, ErrorKind};
        // What hyper-util hands up from tokio-rustls for an untrusted certificate.
        let tls = Error::other(Error::new(
            ErrorKind::InvalidData,
            "invalid peer certificate",
        ));
        assert!(is_tls_refusal(&tls));
        assert!(!is_tls_refusal(&Error::from(ErrorKind::ConnectionRefused)));
        assert!(!is_tls_refusal(&Error::other("connection reset")));
    }

    #[test]
    fn parses_bearer_challenge_with_quoted_commas() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into())
            }
        );
    }

    #[test]
    fn basic_challenge_and_garbage_fall_back_to_basic() {
        assert_eq!(
            Challenge::parse(r#"Basic realm="Registry""#),
            Challenge::Basic
        );
        assert_eq!(Challenge::parse("Bearer"), Challenge::Basic);
    }

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn redirects_never_leave_https_for_http() {
        let https = url("https://registry.example/v2/a/blobs/uploads/");
        assert!(check_follow(&https, &url("http://registry.example/upload/1")).is_err());
        assert!(check_follow(&https, &url("http://elsewhere.example/upload/1")).is_err());
        assert!(check_follow(&https, &url("https://bucket.s3.example/x?sig=1")).is_ok());
        assert!(check_follow(&https, &url("file:///etc/passwd")).is_err());
        let http = url("http://127.0.0.1:5000/v2/a/tags/list");
        assert!(check_follow(&http, &url("http://127.0.0.1:5001/v2/a/tags/list")).is_ok());
        assert!(check_follow(&http, &url("https://127.0.0.1:5001/x")).is_ok());
    }

    #[test]
    fn basic_credentials_go_to_https_realms_and_the_registry_itself() {
        let plain = url("http://127.0.0.1:5000");
        let tls = url("https://registry.example");
        assert!(basic_creds_allowed(
            &url("https://auth.example/token"),
            &tls
        ));
        assert!(basic_creds_allowed(
            &url("https://auth.example/token"),
            &plain
        ));
        assert!(basic_creds_allowed(
            &url("http://127.0.0.1:5000/token"),
            &plain
        ));
        assert!(!basic_creds_allowed(
            &url("http://127.0.0.1:5001/token"),
            &plain
        ));
        assert!(!basic_creds_allowed(
            &url("http://auth.example/token"),
            &plain
        ));
        assert!(!basic_creds_allowed(
            &url("http://registry.example/token"),
            &tls
        ));
    }

    #[test]
    fn origin_is_scheme_host_and_port() {
        let registry = url("https://registry.example");
        assert_eq!(
            url("https://registry.example:443/v2/").origin(),
            registry.origin()
        );
        for other in [
            "http://registry.example/v2/",
            "https://registry.example:5000/v2/",
            "https://registry.example.evil/v2/",
        ] {
            assert_ne!(url(other).origin(), registry.origin(), "{other}");
        }
    }

    #[test]
    fn next_link_is_extracted() {
        let mut h = HeaderMap::new();
        h.insert(
            reqwest::header::LINK,
            r#"</v2/a/tags/list?last=x&n=1000>; rel="next""#.parse().unwrap(),
        );
        assert_eq!(
            next_link(&h).as_deref(),
            Some("/v2/a/tags/list?last=x&n=1000")
        );
    }
}
