//! An in-process registry that serves whatever bytes a test gives it, including bytes that
//! do not match their digest: the malicious server. It records every request.
//!
//! Manifests are answered with `Docker-Content-Digest` (the sha256 of the bytes served), on
//! GET and HEAD; `/tags/list` lists the tags among the manifest keys; `/referrers/<digest>`
//! answers the manifest stored under the key `referrers/<digest>` (404 otherwise, like a
//! registry without the referrers API). Content can be changed
//! while it runs, and [`FakeRegistry::set_down`] makes it answer 503 to everything.
//!
//! [`Behaviour`] makes it misbehave further: demand credentials, send upload `Location`s
//! and tag-list `Link`s to another host, redirect blobs, page tags forever, trickle bodies.
//! Manifest PUTs are stored; blob uploads are accepted (and discarded).
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, Response, StatusCode};

/// How the fake misbehaves besides serving what [`Content`] says.
#[derive(Default, Clone)]
pub struct Behaviour {
    /// Answer every request without `Authorization` with 401 and this `WWW-Authenticate`.
    pub challenge: Option<String>,
    /// Answer `POST …/blobs/uploads/` with 202 and this `Location` (default: its own
    /// `/upload/<n>`).
    pub upload_location: Option<String>,
    /// Add this `Link` header to every tag-list answer.
    pub tags_link: Option<String>,
    /// Answer tag lists with this many generated tags per page, always with a `Link` to the
    /// next page: a tag list that never ends.
    pub tags_per_page: Option<usize>,
    /// Answer blob GETs with 307 to this prefix followed by the digest.
    pub blob_redirect: Option<String>,
    /// Send blob bodies one byte per this interval.
    pub trickle: Option<Duration>,
}

/// A request as the fake saw it: "METHOD /path" and its `Authorization` header.
#[derive(Debug, Clone)]
pub struct Seen {
    pub line: String,
    pub authorization: Option<String>,
}

/// What the fake serves: manifests by tag or digest, blobs by digest (any bytes).
#[derive(Default, Clone)]
pub struct Content {
    pub manifests: HashMap<String, (String, Vec<u8>)>,
    pub blobs: HashMap<String, Vec<u8>>,
}

impl Content {
    /// Serves `artifact` under `tag` and its digest, with its layer and config blobs.
    pub fn insert_artifact(&mut self, tag: &str, artifact: &super::tarball::FakeArtifact) {
        let media_type = tresor::artifact::format::OCI_MANIFEST_MEDIA_TYPE.to_string();
        for reference in [tag.to_string(), artifact.digest.to_string()] {
            self.manifests
                .insert(reference, (media_type.clone(), artifact.manifest.clone()));
        }
        self.blobs
            .insert(artifact.layer_digest.to_string(), artifact.layer.clone());
        self.blobs.insert(
            tresor::digest::Digest::of(b"{}").to_string(),
            b"{}".to_vec(),
        );
    }
}

/// A running fake registry.
pub struct FakeRegistry {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Seen>>>,
    content: Arc<Mutex<Content>>,
    down: Arc<AtomicBool>,
}

impl FakeRegistry {
    /// Starts serving `content` on 127.0.0.1 (random port) in a background thread.
    pub fn start(content: Content) -> Self {
        Self::start_with(content, Behaviour::default())
    }

    /// Like [`FakeRegistry::start`], misbehaving as `behaviour` says.
    pub fn start_with(content: Content, behaviour: Behaviour) -> Self {
        let behaviour = Arc::new(behaviour);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let content = Arc::new(Mutex::new(content));
        let down = Arc::new(AtomicBool::new(false));
        let (log, served, is_down) = (requests.clone(), content.clone(), down.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let app = axum::Router::new().fallback(move |req: Request<Body>| {
                    let content = served.clone();
                    let log = log.clone();
                    let down = is_down.load(Ordering::SeqCst);
                    let behaviour = behaviour.clone();
                    async move { serve(&content, &log, down, &behaviour, req).await }
                });
                axum::serve(listener, app).await.unwrap();
            });
        });
        Self {
            addr,
            requests,
            content,
            down,
        }
    }

    /// `oci://127.0.0.1:PORT/repo`.
    pub fn repo(&self, name: &str) -> String {
        format!("oci://{}/{name}", self.addr)
    }

    /// Requests seen so far, as "METHOD /path".
    pub fn requests(&self) -> Vec<String> {
        self.seen().into_iter().map(|s| s.line).collect()
    }

    /// Requests seen so far, with their `Authorization` headers.
    pub fn seen(&self) -> Vec<Seen> {
        self.requests.lock().unwrap().clone()
    }

    /// Forgets the requests seen so far.
    pub fn clear_requests(&self) {
        self.requests.lock().unwrap().clear();
    }

    /// Serves `bytes` as the manifest under `reference` (a tag or a digest) from now on.
    pub fn set_manifest(&self, reference: &str, media_type: &str, bytes: Vec<u8>) {
        self.content
            .lock()
            .unwrap()
            .manifests
            .insert(reference.to_string(), (media_type.to_string(), bytes));
    }

    /// Serves `bytes` as the blob `digest` from now on.
    pub fn set_blob(&self, digest: &str, bytes: Vec<u8>) {
        self.content
            .lock()
            .unwrap()
            .blobs
            .insert(digest.to_string(), bytes);
    }

    /// Serves `artifact` under `tag` and its digest from now on (see
    /// [`Content::insert_artifact`]).
    pub fn serve_artifact(&self, tag: &str, artifact: &super::tarball::FakeArtifact) {
        self.content.lock().unwrap().insert_artifact(tag, artifact);
    }

    /// While down, every request gets 503.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
}

async fn serve(
    content: &Mutex<Content>,
    log: &Mutex<Vec<Seen>>,
    down: bool,
    behaviour: &Behaviour,
    req: Request<Body>,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let authorization = req
        .headers()
        .get("authorization")
        .map(|v| v.to_str().unwrap_or("<binary>").to_string());
    log.lock().unwrap().push(Seen {
        line: format!("{} {path}", req.method()),
        authorization: authorization.clone(),
    });
    let head = req.method() == Method::HEAD;
    let method = req.method().clone();
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = axum::body::to_bytes(req.into_body(), 16 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let respond = |status: StatusCode, media_type: &str, body: Vec<u8>, digest: bool| {
        let len = body.len();
        let mut builder = Response::builder()
            .status(status)
            .header("content-type", media_type)
            .header("content-length", len);
        if digest {
            builder = builder.header(
                "docker-content-digest",
                tresor::digest::Digest::of(&body).to_string(),
            );
        }
        builder
            .body(if head {
                Body::empty()
            } else {
                Body::from(body)
            })
            .unwrap()
    };
    if down {
        return respond(
            StatusCode::SERVICE_UNAVAILABLE,
            "application/json",
            br#"{"errors":[{"code":"UNAVAILABLE"}]}"#.to_vec(),
            false,
        );
    }
    if let (Some(challenge), None) = (&behaviour.challenge, &authorization) {
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header("www-authenticate", challenge)
            .header("content-type", "application/json")
            .body(Body::from(r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#))
            .unwrap();
    }
    if path == "/v2/" {
        return respond(StatusCode::OK, "application/json", b"{}".to_vec(), false);
    }
    if method == Method::POST && path.ends_with("/blobs/uploads/") {
        let location = behaviour
            .upload_location
            .clone()
            .unwrap_or_else(|| format!("/upload/{}", log.lock().unwrap().len()));
        return Response::builder()
            .status(StatusCode::ACCEPTED)
            .header("location", location)
            .header("content-length", 0)
            .body(Body::empty())
            .unwrap();
    }
    if method == Method::PUT && path.starts_with("/upload/") {
        return Response::builder()
            .status(StatusCode::CREATED)
            .header("content-length", 0)
            .body(Body::empty())
            .unwrap();
    }
    if method == Method::PUT {
        if let Some((_, reference)) = path.rsplit_once("/manifests/") {
            let digest = tresor::digest::Digest::of(&body).to_string();
            let mut content = content.lock().unwrap();
            for key in [reference.to_string(), digest.clone()] {
                content
                    .manifests
                    .insert(key, (content_type.clone(), body.to_vec()));
            }
            return Response::builder()
                .status(StatusCode::CREATED)
                .header("docker-content-digest", digest)
                .header("content-length", 0)
                .body(Body::empty())
                .unwrap();
        }
    }
    if let (Some(per_page), Some(name)) = (
        behaviour.tags_per_page,
        path.strip_prefix("/v2/")
            .and_then(|p| p.strip_suffix("/tags/list")),
    ) {
        let page: usize = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("page="))
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let tags: Vec<String> = (0..per_page).map(|i| format!("p{page}-{i}")).collect();
        let body = serde_json::json!({ "name": name, "tags": tags });
        return Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .header(
                "link",
                format!("</v2/{name}/tags/list?page={}>; rel=\"next\"", page + 1),
            )
            .body(Body::from(body.to_string()))
            .unwrap();
    }
    let content = content.lock().unwrap();
    if let Some((_, reference)) = path.rsplit_once("/manifests/") {
        if let Some((media_type, bytes)) = content.manifests.get(reference) {
            return respond(StatusCode::OK, media_type, bytes.clone(), true);
        }
    } else if let Some((_, digest)) = path.rsplit_once("/referrers/") {
        if let Some((media_type, bytes)) = content.manifests.get(&format!("referrers/{digest}")) {
            return respond(StatusCode::OK, media_type, bytes.clone(), false);
        }
    } else if let Some((_, digest)) = path.rsplit_once("/blobs/") {
        if let (Some(prefix), false) = (&behaviour.blob_redirect, head) {
            return Response::builder()
                .status(StatusCode::TEMPORARY_REDIRECT)
                .header("location", format!("{prefix}{digest}"))
                .header("content-length", 0)
                .body(Body::empty())
                .unwrap();
        }
        if let (Some(every), Some(bytes), false) =
            (behaviour.trickle, content.blobs.get(digest), head)
        {
            return trickle(bytes.clone(), every);
        }
        if let Some(bytes) = content.blobs.get(digest) {
            return respond(
                StatusCode::OK,
                "application/octet-stream",
                bytes.clone(),
                false,
            );
        }
    } else if let Some(name) = path
        .strip_prefix("/v2/")
        .and_then(|p| p.strip_suffix("/tags/list"))
    {
        let mut tags: Vec<&String> = content
            .manifests
            .keys()
            .filter(|k| !k.starts_with("sha256:") && !k.starts_with("referrers/"))
            .collect();
        tags.sort();
        let body = serde_json::json!({ "name": name, "tags": tags });
        let mut response = respond(
            StatusCode::OK,
            "application/json",
            body.to_string().into_bytes(),
            false,
        );
        if let Some(link) = &behaviour.tags_link {
            response.headers_mut().insert("link", link.parse().unwrap());
        }
        return response;
    }
    respond(
        StatusCode::NOT_FOUND,
        "application/json",
        br#"{"errors":[{"code":"NOT_FOUND"}]}"#.to_vec(),
        false,
    )
}

/// A 200 whose body arrives one byte per `every` (with the right Content-Length).
fn trickle(bytes: Vec<u8>, every: Duration) -> Response<Body> {
    let len = bytes.len();
    let stream = futures_util::stream::unfold(bytes.into_iter(), move |mut rest| async move {
        let byte = rest.next()?;
        tokio::time::sleep(every).await;
        Some((
            Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(vec![byte])),
            rest,
        ))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/octet-stream")
        .header("content-length", len)
        .body(Body::from_stream(stream))
        .unwrap()
}
