//! An in-process registry that serves whatever bytes a test gives it, including bytes that
//! do not match their digest: the malicious server. It records every request.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
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
}

impl FakeRegistry {
    /// Starts serving `content` on 127.0.0.1 (random port) in a background thread.
    pub fn start(content: Content) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        let content = Arc::new(content);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let app = axum::Router::new().fallback(move |req: Request<Body>| {
                    let content = content.clone();
                    let log = log.clone();
                    async move { serve(&content, &log, req) }
                });
                axum::serve(listener, app).await.unwrap();
            });
        });
        Self { addr, requests }
    }

    /// `oci://127.0.0.1:PORT/repo`.
    pub fn repo(&self, name: &str) -> String {
        format!("oci://{}/{name}", self.addr)
    }

    /// Requests seen so far, as "METHOD /path".
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve(content: &Content, log: &Mutex<Vec<String>>, req: Request<Body>) -> Response<Body> {
    let path = req.uri().path().to_string();
    log.lock().unwrap().push(format!("{} {path}", req.method()));
    let head = req.method() == Method::HEAD;
    let respond = |status: StatusCode, media_type: &str, body: Vec<u8>| {
        let len = body.len();
        Response::builder()
            .status(status)
            .header("content-type", media_type)
            .header("content-length", len)
            .body(if head {
                Body::empty()
            } else {
                Body::from(body)
            })
            .unwrap()
    };
    if path == "/v2/" {
        return respond(StatusCode::OK, "application/json", b"{}".to_vec());
    }
    if let Some((_, reference)) = path.rsplit_once("/manifests/") {
        if let Some((media_type, bytes)) = content.manifests.get(reference) {
            return respond(StatusCode::OK, media_type, bytes.clone());
        }
    } else if let Some((_, digest)) = path.rsplit_once("/blobs/") {
        if let Some(bytes) = content.blobs.get(digest) {
            return respond(StatusCode::OK, "application/octet-stream", bytes.clone());
        }
    }
    respond(
        StatusCode::NOT_FOUND,
        "application/json",
        br#"{"errors":[{"code":"NOT_FOUND"}]}"#.to_vec(),
    )
}
