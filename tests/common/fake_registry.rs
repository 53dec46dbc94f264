//! An in-process registry that serves whatever bytes a test gives it, including bytes that
//! do not match their digest: the malicious server. It records every request.
//!
//! Manifests are answered with `Docker-Content-Digest` (the sha256 of the bytes served), on
//! GET and HEAD; `/tags/list` lists the tags among the manifest keys; `/referrers/<digest>`
//! answers the manifest stored under the key `referrers/<digest>` (404 otherwise, like a
//! registry without the referrers API). Content can be changed
//! while it runs, and [`FakeRegistry::set_down`] makes it answer 503 to everything.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Method, Request, Response, StatusCode};

/// What the fake serves: manifests by tag or digest, blobs by digest (any bytes).
#[derive(Default, Clone)]
pub struct Content {
    pub manifests: HashMap<String, (String, Vec<u8>)>,
    pub blobs: HashMap<String, Vec<u8>>,
}

/// A running fake registry.
pub struct FakeRegistry {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<String>>>,
    content: Arc<Mutex<Content>>,
    down: Arc<AtomicBool>,
}

impl FakeRegistry {
    /// Starts serving `content` on 127.0.0.1 (random port) in a background thread.
    pub fn start(content: Content) -> Self {
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
                    async move { serve(&content, &log, down, req) }
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

    /// While down, every request gets 503.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
}

fn serve(
    content: &Mutex<Content>,
    log: &Mutex<Vec<String>>,
    down: bool,
    req: Request<Body>,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    log.lock().unwrap().push(format!("{} {path}", req.method()));
    let head = req.method() == Method::HEAD;
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
    if path == "/v2/" {
        return respond(StatusCode::OK, "application/json", b"{}".to_vec(), false);
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
        return respond(
            StatusCode::OK,
            "application/json",
            body.to_string().into_bytes(),
            false,
        );
    }
    respond(
        StatusCode::NOT_FOUND,
        "application/json",
        br#"{"errors":[{"code":"NOT_FOUND"}]}"#.to_vec(),
        false,
    )
}
