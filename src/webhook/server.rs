//! The HTTP side of receiving: `POST /hooks/<kind>`, bounded, authenticated, rate-limited,
//! handed to a [`Hooks`] implementation that knows which syncs follow what.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::json;
use tokio::net::TcpListener;

use super::auth::{authenticate, Credentials, Secret};
use super::payload::{parse, Push};
use super::Kind;

/// Largest request body accepted (a Distribution envelope holds several events; GitHub's
/// package events are a few KiB).
pub const MAX_BODY: usize = 1024 * 1024;
/// Requests per second each kind accepts on average, and in a burst. A Distribution
/// registry sends one request per event — every blob and manifest pushed *and pulled*, the
/// agent's own pulls included — and retries a refused one, blocking its queue, so the limit
/// must sit well above a busy registry's rate; the work per request is small, and the
/// reconciles it triggers are coalesced.
const RATE: f64 = 50.0;
const BURST: f64 = 200.0;
/// Longest a request may take to arrive and be answered.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What the server calls: which syncs a push concerns (they are triggered by the call; the
/// names are returned for the response and the log), and the count of each answer.
pub trait Hooks: Send + Sync + 'static {
    /// Triggers a reconcile of every sync following `push`'s repository; their names.
    fn trigger(&self, push: &Push) -> impl std::future::Future<Output = Vec<String>> + Send;
    /// Counts one request of `kind` answered with `code` (metrics).
    fn counted(&self, kind: &str, code: u16);
}

/// One receiver per kind, each with its secret.
pub struct Receivers {
    secrets: HashMap<Kind, Secret>,
}

impl Receivers {
    /// Every kind, with one secret (what `tresor sync --webhook-secret-file` sets up).
    pub fn all(secret: Secret) -> Self {
        Self {
            secrets: Kind::ALL.iter().map(|k| (*k, secret.clone())).collect(),
        }
    }
}

struct Server<H> {
    receivers: Receivers,
    hooks: H,
    buckets: Mutex<HashMap<Kind, Bucket>>,
}

/// A token bucket: [`RATE`] per second, [`BURST`] at most.
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl<H: Hooks> Server<H> {
    fn allow(&self, kind: Kind) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let bucket = buckets.entry(kind).or_insert(Bucket {
            tokens: BURST,
            at: now,
        });
        let refill = now.duration_since(bucket.at).as_secs_f64() * RATE;
        bucket.tokens = (bucket.tokens + refill).min(BURST);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Serves the receivers on `listener` until the task is dropped.
pub async fn serve<H: Hooks>(listener: TcpListener, receivers: Receivers, hooks: H) {
    let server = Arc::new(Server {
        receivers,
        hooks,
        buckets: Mutex::new(HashMap::new()),
    });
    let app = Router::new()
        .route("/hooks/{kind}", post(receive::<H>))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        // 408 for a request (its body included) that takes longer: no slow-loris.
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .with_state(server);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::warn!(error = %e, "webhook server stopped");
    }
}

async fn receive<H: Hooks>(
    State(server): State<Arc<Server<H>>>,
    Path(kind): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let (code, answer) = answer(&server, &kind, &uri, &headers, body).await;
    server.hooks.counted(&kind_label(&kind), code.as_u16());
    (code, axum::Json(answer)).into_response()
}

/// The label a request's kind is counted under: unknown kinds are one label, so that a
/// scanner cannot grow the metrics.
fn kind_label(kind: &str) -> String {
    kind.parse::<Kind>()
        .map(|k| k.name().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

async fn answer<H: Hooks>(
    server: &Server<H>,
    kind: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> (StatusCode, serde_json::Value) {
    let error = |code: StatusCode, message: String| (code, json!({ "error": message }));
    let Ok(kind) = kind.parse::<Kind>() else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no receiver {kind:?}; one of {}", Kind::names()),
        );
    };
    let Some(secret) = server.receivers.secrets.get(&kind) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("the {} receiver is not configured", kind.name()),
        );
    };
    if !server.allow(kind) {
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "more than {RATE} requests per second to the {} receiver",
                kind.name()
            ),
        );
    }
    let body = match body {
        Ok(body) => body,
        Err(e) => {
            return error(
                e.status(),
                format!("request body refused: {}", e.body_text()),
            )
        }
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let query_token = uri.query().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
    });
    let credentials = Credentials {
        authorization: header("authorization"),
        signature: header("x-hub-signature-256").or_else(|| header("x-signature")),
        query_token: query_token.as_deref(),
    };
    if !authenticate(kind, secret, &credentials, &body) {
        tracing::warn!(kind = kind.name(), "webhook refused: not authenticated");
        return error(
            StatusCode::UNAUTHORIZED,
            format!("not authenticated: {}", kind.proof()),
        );
    }
    let pushes = match parse(kind, header("x-github-event"), &body) {
        Ok(pushes) => pushes,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let mut triggered = Vec::new();
    for push in &pushes {
        let names = server.hooks.trigger(push).await;
        tracing::info!(kind = kind.name(), push = %push, syncs = names.len(), "webhook");
        triggered.extend(names);
    }
    triggered.sort();
    triggered.dedup();
    let pushes: Vec<String> = pushes.iter().map(ToString::to_string).collect();
    (
        StatusCode::ACCEPTED,
        json!({ "pushes": pushes, "triggered": triggered }),
    )
}
