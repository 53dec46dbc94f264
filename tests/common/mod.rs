//! Shared test harness: the tresor binary, the local registries, fixtures.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod cluster;
pub mod fake_registry;
pub mod kube_api;
pub mod peers;
pub mod pki;
pub mod recording_server;
pub mod tarball;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use assert_cmd::Command;

/// The `tresor` binary, with a clean environment for credentials.
pub fn tresor() -> Command {
    let mut cmd = Command::cargo_bin("tresor").unwrap();
    cmd.env_remove("TRESOR_CREDS")
        .env_remove("SOURCE_DATE_EPOCH")
        .env_remove("GITHUB_ACTIONS")
        .env_remove("GITLAB_CI")
        // An empty docker config: tests never pick up the developer's credentials.
        .env("DOCKER_CONFIG", empty_docker_config());
    cmd
}

fn empty_docker_config() -> PathBuf {
    let dir = std::env::temp_dir().join("tresor-test-empty-docker-config");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The example manifest tree.
pub fn fixture_tree() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/manifests/app")
}

/// A repository name unique to this test process and call.
pub fn unique_repo(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "tresor-test/{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// One of the registries started by `scripts/registry.sh`.
#[derive(Debug, Clone)]
pub struct TestRegistry {
    pub name: &'static str,
    pub host: String,
    /// Extra CLI flags to reach it (transport, CA, credentials).
    pub flags: Vec<String>,
    pub user: Option<String>,
    pub password: Option<String>,
}

impl TestRegistry {
    fn from_env(name: &'static str, var: &str, default_port: u16) -> Self {
        let host = std::env::var(var).unwrap_or_else(|_| format!("127.0.0.1:{default_port}"));
        let user = std::env::var("TRESOR_REGISTRY_USER").unwrap_or_else(|_| "tresor".into());
        let password =
            std::env::var("TRESOR_REGISTRY_PASSWORD").unwrap_or_else(|_| "tresor-pass".into());
        let ca = std::env::var("TRESOR_REGISTRY_CA")
            .unwrap_or_else(|_| format!("{}/.tmp/registry/ca.pem", env!("CARGO_MANIFEST_DIR")));
        let (flags, user, password) = match name {
            "plain" => (vec!["--plain-http".to_string()], None, None),
            "auth" => (
                vec![
                    "--plain-http".into(),
                    "--creds".into(),
                    format!("{user}:{password}"),
                ],
                Some(user),
                Some(password),
            ),
            _ => (
                vec![
                    "--ca-file".into(),
                    ca,
                    "--creds".into(),
                    format!("{user}:{password}"),
                ],
                Some(user),
                Some(password),
            ),
        };
        let r = Self {
            name,
            host,
            flags,
            user,
            password,
        };
        r.require_up();
        r
    }

    /// Plain HTTP, no auth.
    pub fn plain() -> Self {
        Self::from_env("plain", "TRESOR_REGISTRY_PLAIN", 5001)
    }

    /// Plain HTTP with htpasswd basic auth.
    pub fn auth() -> Self {
        Self::from_env("auth", "TRESOR_REGISTRY_AUTH", 5002)
    }

    /// TLS with a self-signed CA and basic auth.
    pub fn tls() -> Self {
        Self::from_env("tls", "TRESOR_REGISTRY_TLS", 5003)
    }

    /// All three.
    pub fn all() -> Vec<Self> {
        vec![Self::plain(), Self::auth(), Self::tls()]
    }

    /// Fails the test with instructions when the registry is not running.
    fn require_up(&self) {
        if std::net::TcpStream::connect(&self.host).is_err() {
            panic!(
                "registry {} ({}) is not running: start it with `scripts/registry.sh start` \
                 (scripts/test.sh does this)",
                self.name, self.host
            );
        }
    }

    /// `oci://host/<unique repo>`.
    pub fn repo(&self, prefix: &str) -> String {
        format!("oci://{}/{}", self.host, unique_repo(prefix))
    }

    /// The tresor command with this registry's flags appended after the subcommand args.
    pub fn tresor(&self, args: &[&str]) -> Command {
        let mut cmd = tresor();
        cmd.args(args).args(&self.flags);
        cmd
    }
}

/// Recursively reads a directory into sorted (relative path, bytes) pairs.
pub fn read_tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                out.push((rel, std::fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Copies a directory tree.
pub fn copy_tree(from: &Path, to: &Path) {
    for (rel, data) in read_tree(from) {
        let target = to.join(&rel);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(target, data).unwrap();
    }
}

/// Stdout of a successful command as a string.
pub fn stdout_of(mut cmd: impl std::borrow::BorrowMut<Command>) -> String {
    let out = cmd.borrow_mut().output().unwrap();
    assert!(
        out.status.success(),
        "command failed ({:?}):\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command expected to fail with `code`; returns its stderr.
pub fn stderr_of_failure(mut cmd: impl std::borrow::BorrowMut<Command>, code: i32) -> String {
    let out = cmd.borrow_mut().output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(code),
        "unexpected exit status\nstdout: {}\nstderr: {stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

/// Parses JSON stdout of a successful command.
pub fn json_of(cmd: impl std::borrow::BorrowMut<Command>) -> serde_json::Value {
    serde_json::from_str(&stdout_of(cmd)).unwrap()
}
