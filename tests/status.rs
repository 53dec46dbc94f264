//! `tresor status` against an in-process HTTP double of the ArtifactSync list endpoints,
//! for what the shared real API server cannot do on demand (issue 11): answer 404 because
//! the CRD is not installed (removing it would break every other suite on the server).
//! The listing itself is tested against the real server in tests/cluster_cli.rs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

/// Answers every ArtifactSync list with the API server's 404 for a resource it does not
/// serve; returns the address.
async fn start_without_the_crd() -> std::net::SocketAddr {
    let not_found = || async {
        let body = json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure",
            "reason": "NotFound", "code": 404,
            "message": "the server could not find the requested resource"
        });
        (StatusCode::NOT_FOUND, Json(body)).into_response()
    };
    let app = Router::new()
        .route("/apis/tresor.dev/v1alpha1/artifactsyncs", get(not_found))
        .route(
            "/apis/tresor.dev/v1alpha1/namespaces/{ns}/artifactsyncs",
            get(not_found),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_says_how_to_install_the_crd_when_the_server_answers_404() {
    let addr = start_without_the_crd().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: double\n  cluster:\n    server: http://{addr}\n\
             users:\n- name: tester\n  user:\n    token: not-a-secret\n\
             contexts:\n- name: double\n  context:\n    cluster: double\n    user: tester\n\
             current-context: double\n"
        ),
    )
    .unwrap();
    let out = tokio::task::spawn_blocking(move || {
        assert_cmd::Command::cargo_bin("tresor")
            .unwrap()
            .arg("status")
            .env("KUBECONFIG", &path)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CRD is not installed"), "{err}");
    assert!(err.contains("kubectl apply -k deploy/"), "{err}");
    assert!(
        !err.contains("not-a-secret"),
        "the token must never be printed"
    );
}
