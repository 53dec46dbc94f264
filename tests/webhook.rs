//! Registry webhooks for the host agent (`tresor sync --webhook-addr`, issue 14): a real
//! Distribution registry configured to notify tresor triggers the reconcile at once, and
//! the receivers refuse what they must (no proof, wrong proof, unknown kind, too big, too
//! many), counted in the metrics.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::own_registry::{free_port, OwnRegistry};
use common::{read_tree, stdout_of, TestRegistry};
use tresor::webhook::Secret;

const SECRET: &str = "webhook-test-secret";

/// A ConfigMap manifest whose data says `version`.
fn write_tree(dir: &Path, version: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("cm.yaml"),
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata:\n  version: {version}\n"),
    )
    .unwrap();
}

/// `tresor sync` of `repo:v` into `work/dir` at interval 10m, with webhooks on `port` and
/// metrics on `metrics`; killed when dropped.
struct Agent {
    child: Child,
    dir: std::path::PathBuf,
}

impl Agent {
    fn start(registry: &TestRegistry, repo: &str, work: &Path, port: u16, metrics: u16) -> Self {
        let secret_file = work.join("secret");
        std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
        let dir = work.join("dir");
        let child = Command::new(assert_cmd::cargo::cargo_bin("tresor"))
            .args(["sync", &format!("{repo}:v"), "--dir"])
            .arg(&dir)
            .args(["--interval", "10m", "--allow-unsigned", "--cache-dir"])
            .arg(work.join("cache"))
            .args(["--webhook-addr", &format!("127.0.0.1:{port}")])
            .arg("--webhook-secret-file")
            .arg(&secret_file)
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics}")])
            .args(&registry.flags)
            .env("DOCKER_CONFIG", work)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self { child, dir }
    }

    /// Waits until the directory holds `version` (at most `within`); how long it took.
    fn wait_version(&self, version: &str, within: Duration) -> Duration {
        let start = Instant::now();
        let want = format!("version: {version}\n");
        loop {
            let text = std::fs::read_to_string(self.dir.join("cm.yaml")).unwrap_or_default();
            if text.ends_with(&want) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < within,
                "{version} not synced within {within:?}; the directory has {text:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `port` on 127.0.0.1 accepts connections.
fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn push(registry: &TestRegistry, work: &Path, repo: &str, version: &str) {
    let tree = work.join(format!("tree-{version}"));
    write_tree(&tree, version);
    stdout_of(registry.tresor(&[
        "push",
        tree.to_str().unwrap(),
        &format!("{repo}:v"),
        "--overwrite",
    ]));
}

/// The real registry notifies the agent (Distribution's `notifications: endpoints:` with a
/// bearer token): a push of the followed tag is synced within seconds although the interval
/// is 10 minutes. The push of another repository triggers nothing.
#[test]
fn a_distribution_notification_syncs_a_push_at_once() {
    let port = free_port();
    let own = OwnRegistry::with_config(&format!(
        "notifications:\n  endpoints:\n    - name: tresor\n      url: http://127.0.0.1:{port}/hooks/distribution\n\
         \x20     headers:\n        Authorization: [Bearer {SECRET}]\n      timeout: 2s\n      threshold: 3\n      backoff: 1s\n"
    ));
    let registry = own.registry();
    let repo = format!("oci://{}/acme/app", registry.host);
    let work = tempfile::tempdir().unwrap();
    push(&registry, work.path(), &repo, "one");
    let metrics = free_port();
    let agent = Agent::start(&registry, &repo, work.path(), port, metrics);
    agent.wait_version("one", Duration::from_secs(30));
    wait_listening(port);

    push(&registry, work.path(), &repo, "two");
    let took = agent.wait_version("two", Duration::from_secs(10));
    eprintln!("push → synced through a Distribution notification: {took:?}");
    push(
        &registry,
        work.path(),
        &format!("oci://{}/acme/other", registry.host),
        "x",
    );
    let text = metrics_text(metrics);
    assert!(
        text.contains("tresor_webhook_requests_total{kind=\"distribution\",code=\"202\"}"),
        "{text}"
    );
    assert!(!text.contains("code=\"401\""), "{text}");
}

fn metrics_text(port: u16) -> String {
    let client = reqwest::blocking::Client::new();
    client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap()
}

/// Every receiver kind against the running agent: the right proof with a payload about the
/// followed repository triggers it (202, named in `triggered`), about another repository
/// nothing; a missing or wrong proof is 401 (counted), an unknown kind 404, a bad payload 400
/// naming what is missing, a body over 1 MiB 413, a burst over the rate 429.
#[test]
fn receivers_authenticate_parse_and_limit() {
    let registry = TestRegistry::plain();
    let repo = registry.repo("webhook");
    let (host, path) = repo.trim_start_matches("oci://").split_once('/').unwrap();
    let work = tempfile::tempdir().unwrap();
    push(&registry, work.path(), &repo, "one");
    let (port, metrics) = (free_port(), free_port());
    let agent = Agent::start(&registry, &repo, work.path(), port, metrics);
    agent.wait_version("one", Duration::from_secs(30));
    wait_listening(port);

    let secret = Secret::new(SECRET.as_bytes()).unwrap();
    let client = reqwest::blocking::Client::new();
    let post = |kind: &str, headers: &[(&str, String)], body: String| {
        let mut request = client
            .post(format!("http://127.0.0.1:{port}/hooks/{kind}"))
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request.send().unwrap();
        let code = response.status().as_u16();
        (code, response.text().unwrap())
    };
    let triggered = |text: &str| -> Vec<String> {
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        serde_json::from_value(v["triggered"].clone()).unwrap()
    };
    let ours = repo.clone();

    // GitHub: HMAC over the body, X-GitHub-Event.
    let github = format!(
        r#"{{"action":"published","registry_package":{{"package_version":{{"package_url":"{host}/{path}:v"}}}}}}"#
    );
    let (code, text) = post(
        "github",
        &[
            ("X-Hub-Signature-256", secret.sign(github.as_bytes())),
            ("X-GitHub-Event", "registry_package".into()),
        ],
        github.clone(),
    );
    assert_eq!(
        (code, triggered(&text)),
        (202, vec![ours.clone()]),
        "{text}"
    );
    // The same body signed with another secret: 401 saying what is needed.
    let wrong = Secret::new(b"another").unwrap();
    let (code, text) = post(
        "github",
        &[("X-Hub-Signature-256", wrong.sign(github.as_bytes()))],
        github.clone(),
    );
    assert_eq!(code, 401, "{text}");
    assert!(text.contains("X-Hub-Signature-256"), "{text}");

    // Generic with a bearer token, about another repository: accepted, nothing triggered.
    let other = format!(r#"{{"repository":"oci://{host}/{path}-other","tag":"v"}}"#);
    let bearer = ("Authorization", format!("Bearer {SECRET}"));
    let (code, text) = post("generic", std::slice::from_ref(&bearer), other);
    assert_eq!((code, triggered(&text)), (202, vec![]), "{text}");
    // Docker Hub and Quay cannot set headers: ?token= in the URL.
    let quay = format!(r#"{{"docker_url":"{host}/{path}","updated_tags":["v"]}}"#);
    let (code, text) = post(&format!("quay?token={SECRET}"), &[], quay.clone());
    assert_eq!(
        (code, triggered(&text)),
        (202, vec![ours.clone()]),
        "{text}"
    );
    let (code, _) = post("quay?token=nope", &[], quay);
    assert_eq!(code, 401);
    // Harbor: bearer; a payload without resources is 400 naming the field.
    let (code, text) = post(
        "harbor",
        std::slice::from_ref(&bearer),
        r#"{"type":"PUSH_ARTIFACT"}"#.into(),
    );
    assert_eq!(code, 400, "{text}");
    assert!(
        text.contains("event_data.resources[].resource_url missing"),
        "{text}"
    );
    // Distribution without a token.
    let (code, _) = post("distribution", &[], r#"{"events":[]}"#.into());
    assert_eq!(code, 401);
    // Unknown kind, too big a body.
    let (code, text) = post("gitlab", std::slice::from_ref(&bearer), "{}".into());
    assert_eq!(code, 404, "{text}");
    assert!(text.contains("distribution, github, harbor"), "{text}");
    let (code, _) = post(
        "generic",
        std::slice::from_ref(&bearer),
        "x".repeat(1024 * 1024 + 1),
    );
    assert_eq!(code, 413);
    // A burst from 8 senders at once: more than the burst (200) plus what refills (50/s)
    // while it lasts, on a loaded machine too, so the limit answers 429.
    let codes: Vec<u16> = std::thread::scope(|scope| {
        let senders: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    (0..100)
                        .map(|_| post("dockerhub", std::slice::from_ref(&bearer), "{}".into()).0)
                        .collect::<Vec<u16>>()
                })
            })
            .collect();
        senders
            .into_iter()
            .flat_map(|s| s.join().unwrap())
            .collect()
    });
    assert!(codes.contains(&429), "{codes:?}");
    assert!(
        codes.contains(&400),
        "a bad payload before the limit: {codes:?}"
    );

    let text = metrics_text(metrics);
    for line in [
        "tresor_webhook_requests_total{kind=\"github\",code=\"202\"} 1",
        "tresor_webhook_requests_total{kind=\"github\",code=\"401\"} 1",
        "tresor_webhook_requests_total{kind=\"quay\",code=\"401\"} 1",
        "tresor_webhook_requests_total{kind=\"distribution\",code=\"401\"} 1",
        "tresor_webhook_requests_total{kind=\"unknown\",code=\"404\"} 1",
        "tresor_webhook_requests_total{kind=\"generic\",code=\"413\"} 1",
    ] {
        assert!(text.contains(line), "{line} missing in\n{text}");
    }
    // The followed repository was triggered (github, quay): still in sync, nothing new.
    assert_eq!(
        read_tree(&agent.dir).len(),
        1,
        "the directory still holds the artifact"
    );
}

/// Bad flags fail before anything runs: an empty secret file, a webhook on an OCI layout.
#[test]
fn webhook_flags_are_checked() {
    let work = tempfile::tempdir().unwrap();
    let empty = work.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let out = common::tresor()
        .args(["sync", "oci://127.0.0.1:1/a:v", "--dir"])
        .arg(work.path().join("d"))
        .args([
            "--allow-unsigned",
            "--webhook-addr",
            "127.0.0.1:0",
            "--webhook-secret-file",
        ])
        .arg(&empty)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("is empty: an empty secret would let anyone in"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secret = work.path().join("secret");
    std::fs::write(&secret, "s").unwrap();
    let out = common::tresor()
        .args([
            "sync",
            &format!("oci-layout:{}:v", work.path().join("l").display()),
            "--dir",
        ])
        .arg(work.path().join("d"))
        .args([
            "--allow-unsigned",
            "--once",
            "--webhook-addr",
            "127.0.0.1:0",
            "--webhook-secret-file",
        ])
        .arg(&secret)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--webhook-addr needs an oci:// reference"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
