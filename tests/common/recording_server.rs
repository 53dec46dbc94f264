//! A second, unrelated HTTP server on another port (so another origin) that records every
//! request with its `Authorization` header and answers with whatever the test says. It
//! plays the host a malicious or misconfigured registry points tresor at (a `Location`, a
//! `Link`, a token realm, an object store behind a redirect): the test then checks that
//! tresor's credentials never arrived there.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Method, Request, Response};

/// One request as the recording server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `GET`, `PUT`, …
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// The `Authorization` header, if one was sent.
    pub authorization: Option<String>,
    /// Every header, lower-case names.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Recorded {
    /// The value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

type Answer = dyn Fn(&Method, &str) -> Response<Body> + Send + Sync;

/// A running recording server.
pub struct RecordingServer {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Recorded>>>,
}

impl RecordingServer {
    /// Starts on 127.0.0.1 (random port) in a background thread; `answer` gets the method
    /// and the path with query of each request.
    pub fn start(answer: impl Fn(&Method, &str) -> Response<Body> + Send + Sync + 'static) -> Self {
        Self::start_on("127.0.0.1:0", answer)
    }

    /// Like [`Self::start`] on `addr` (a receiver that comes up where one was expected).
    pub fn start_on(
        addr: &str,
        answer: impl Fn(&Method, &str) -> Response<Body> + Send + Sync + 'static,
    ) -> Self {
        let listener = std::net::TcpListener::bind(addr).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let answer: Arc<Answer> = Arc::new(answer);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let app = axum::Router::new().fallback(move |req: Request<Body>| {
                    let log = log.clone();
                    let answer = answer.clone();
                    async move {
                        let uri = req
                            .uri()
                            .path_and_query()
                            .map(|p| p.to_string())
                            .unwrap_or_default();
                        let (parts, body) = req.into_parts();
                        let body = axum::body::to_bytes(body, 16 << 20)
                            .await
                            .map(|b| b.to_vec())
                            .unwrap_or_default();
                        log.lock().unwrap().push(Recorded {
                            method: parts.method.to_string(),
                            uri: uri.clone(),
                            authorization: parts
                                .headers
                                .get("authorization")
                                .map(|v| v.to_str().unwrap_or("<binary>").to_string()),
                            headers: parts
                                .headers
                                .iter()
                                .map(|(k, v)| {
                                    (k.to_string(), v.to_str().unwrap_or("<binary>").to_string())
                                })
                                .collect(),
                            body,
                        });
                        answer(&parts.method, &uri)
                    }
                });
                axum::serve(listener, app).await.unwrap();
            });
        });
        Self { addr, seen }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The requests seen so far.
    pub fn seen(&self) -> Vec<Recorded> {
        self.seen.lock().unwrap().clone()
    }
}

/// A response with `status`, `headers` and `body`.
pub fn respond(status: u16, headers: &[(&str, &str)], body: Vec<u8>) -> Response<Body> {
    let mut builder = Response::builder().status(status);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    builder.body(Body::from(body)).unwrap()
}
