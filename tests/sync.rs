//! `tresor sync` end to end: the real binary against the real local registry (and an own
//! Distribution instance that can be stopped), plus the in-process fake for request counts.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::fake_registry::{Content, FakeRegistry};
use common::tarball::{artifact, gzip, tar, Entry, FakeArtifact};
use common::{json_of, read_tree, stdout_of, tresor, TestRegistry};
use tresor::artifact::format::{
    Descriptor, ImageManifest, CONFIG_MEDIA_TYPE, CONTENT_MEDIA_TYPE, OCI_MANIFEST_MEDIA_TYPE,
};
use tresor::digest::Digest;

const BIN: &str = env!("CARGO_BIN_EXE_tresor");

/// Writes `files` into a fresh directory.
fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, data) in files {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
    dir
}

/// Pushes `files` (as `--content files`) to `reference`, moving the tag; returns the digest.
fn push(flags: &[String], reference: &str, files: &[(&str, &str)]) -> String {
    let src = tree(files);
    let mut cmd = tresor();
    cmd.args([
        "push",
        src.path().to_str().unwrap(),
        reference,
        "--content",
        "files",
        "--overwrite",
        "--source",
        "https://example.com/acme/site",
        "--revision",
        "main@sha1:0123456789abcdef0123456789abcdef01234567",
        "--format",
        "json",
    ])
    .args(flags);
    json_of(cmd)["digest"].as_str().unwrap().to_string()
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

fn status(path: &Path) -> serde_json::Value {
    read(path)
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(serde_json::Value::Null)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `tresor sync`, killed when dropped.
struct Agent {
    child: Child,
    log: PathBuf,
    _logdir: tempfile::TempDir,
}

impl Agent {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        let logdir = tempfile::tempdir().unwrap();
        let log = logdir.path().join("agent.log");
        let child = Command::new(BIN)
            .arg("sync")
            .args(args)
            .envs(env.iter().copied())
            .env_remove("TRESOR_CREDS")
            .env("DOCKER_CONFIG", logdir.path())
            .env("TRESOR_LOG", "info")
            .stdout(std::fs::File::create(logdir.path().join("stdout")).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self {
            child,
            log,
            _logdir: logdir,
        }
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn log(&self) -> String {
        read(&self.log).unwrap_or_default()
    }

    fn terminate(&mut self) -> ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "agent ignored SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn scrape(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn sync_follows_a_tag_runs_exec_once_per_change_and_restores_drift() {
    let registry = TestRegistry::plain();
    let repo = registry.repo("sync");
    let tagged = format!("{repo}:live");
    let v1 = push(
        &registry.flags,
        &tagged,
        &[
            ("app.conf", "version 1\n"),
            ("sub/b.conf", "b\n"),
            ("old.conf", "old\n"),
        ],
    );
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("site");
    let status_file = work.path().join("status.json");
    let exec_log = work.path().join("exec.log");
    let port = free_port();
    let exec = format!(
        "echo \"$TRESOR_DIGEST $TRESOR_REFERENCE $(basename \"$TRESOR_DIR\")\" >> {}",
        exec_log.display()
    );
    let mut args = vec![
        tagged.as_str(),
        "--dir",
        dir.to_str().unwrap(),
        "--interval",
        "1s",
        "--allow-unsigned",
        "--cache-dir",
        work.path()
            .join("cache")
            .to_str()
            .unwrap()
            .to_string()
            .leak(),
        "--status-file",
        status_file.to_str().unwrap(),
        "--exec",
        &exec,
        "--metrics-addr",
        format!("127.0.0.1:{port}").leak(),
        "--retries",
        "0",
    ];
    args.extend(registry.flags.iter().map(String::as_str));
    let mut agent = Agent::start(&args, &[]);

    wait_until("v1 synced", Duration::from_secs(15), || {
        read(&dir.join("app.conf")).as_deref() == Some("version 1\n")
    });
    wait_until("status written", Duration::from_secs(5), || {
        status(&status_file)["last_applied_digest"] == v1.as_str()
    });
    let s = status(&status_file);
    assert_eq!(s["signer"], "unsigned");
    assert_eq!(s["error"], serde_json::Value::Null);
    assert!(
        s["last_applied_time"].as_str().unwrap().ends_with('Z'),
        "{s}"
    );
    assert!(std::fs::symlink_metadata(&dir)
        .unwrap()
        .file_type()
        .is_symlink());
    // A file tresor never managed, created by hand: left alone across versions.
    std::fs::write(dir.join("local.conf"), "mine\n").unwrap();

    // v2 under the same tag: switched within interval + 2 s.
    let v2 = push(
        &registry.flags,
        &tagged,
        &[
            ("app.conf", "version 2\n"),
            ("sub/b.conf", "b\n"),
            ("new.conf", "new\n"),
        ],
    );
    let took = wait_until("v2 synced", Duration::from_secs(3), || {
        read(&dir.join("app.conf")).as_deref() == Some("version 2\n")
    });
    eprintln!("v2 switched {took:?} after the push");
    assert_eq!(read(&dir.join("new.conf")).as_deref(), Some("new\n"));
    assert!(
        !dir.join("old.conf").exists(),
        "a file that left the artifact stays"
    );
    assert_eq!(read(&dir.join("local.conf")).as_deref(), Some("mine\n"));
    wait_until("exec ran for v2", Duration::from_secs(5), || {
        read(&exec_log).unwrap_or_default().lines().count() == 2
    });
    let lines: Vec<String> = read(&exec_log).unwrap().lines().map(String::from).collect();
    assert_eq!(lines[0], format!("{v1} {repo}@{v1} site"));
    assert_eq!(lines[1], format!("{v2} {repo}@{v2} site"));

    // Drift: an edited and a deleted file are restored within an interval (+ slack).
    std::fs::write(dir.join("app.conf"), "hacked\n").unwrap();
    std::fs::remove_file(dir.join("sub/b.conf")).unwrap();
    wait_until("drift restored", Duration::from_secs(4), || {
        read(&dir.join("app.conf")).as_deref() == Some("version 2\n")
            && read(&dir.join("sub/b.conf")).as_deref() == Some("b\n")
    });
    assert_eq!(read(&dir.join("local.conf")).as_deref(), Some("mine\n"));
    wait_until("restores counted", Duration::from_secs(5), || {
        status(&status_file)["restored_files"].as_u64() >= Some(2)
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        read(&exec_log).unwrap().lines().count(),
        2,
        "--exec runs once per applied change, not for drift"
    );

    let metrics = scrape(port);
    assert!(metrics.starts_with("HTTP/1.1 200 OK"), "{metrics}");
    assert!(
        metrics.contains("tresor_reconciles_total{outcome=\"Applied\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tresor_last_applied_timestamp_seconds "),
        "{metrics}"
    );
    assert!(
        metrics.contains("tresor_reconcile_duration_seconds_count "),
        "{metrics}"
    );
    assert!(metrics.contains("\ntresor_sync_failing 0\n"), "{metrics}");

    assert!(agent.alive(), "{}", agent.log());
    let exit = agent.terminate();
    assert!(exit.success(), "{exit:?}\n{}", agent.log());
    // Only the current version is left in the state directory.
    let state = work.path().join(".site.tresor");
    let hex = v2.strip_prefix("sha256:").unwrap();
    let mut names: Vec<String> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [hex.to_string(), format!("{hex}.files.json"), "lock".into()]
    );
}

/// An own Distribution instance on a free port, so the test can stop it.
struct OwnRegistry {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl OwnRegistry {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Self {
            child: None,
            port: free_port(),
            dir,
        };
        r.up();
        r
    }

    fn up(&mut self) {
        let config = self.dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
                 delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{}\n",
                self.dir.path().join("storage").display(),
                self.port
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry must be installed (scripts/registry.sh needs it too)");
        self.child = Some(child);
        wait_until("own registry up", Duration::from_secs(15), || {
            TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        });
    }

    fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    fn repo(&self, name: &str) -> String {
        format!("oci://127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for OwnRegistry {
    fn drop(&mut self) {
        self.down();
    }
}

/// A manifest + layer whose tar has a `../` entry: what extraction must refuse.
fn push_traversal_artifact(reference: &str) -> String {
    let layer = gzip(&tar(&[
        Entry::file("app.conf", b"evil\n"),
        Entry::file("../escaped.conf", b"evil\n"),
    ]));
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST_MEDIA_TYPE.into()),
        artifact_type: None,
        config: Descriptor::for_bytes(CONFIG_MEDIA_TYPE, b"{}"),
        layers: vec![Descriptor::for_bytes(CONTENT_MEDIA_TYPE, &layer)],
        subject: None,
        annotations: Default::default(),
    };
    let reference: tresor::reference::Reference = reference.parse().unwrap();
    let options = tresor::registry::RegistryOptions {
        plain_http: true,
        ..Default::default()
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let repo = tresor::registry::Repository::open(&reference, &options).unwrap();
        repo.push_blob(&Digest::of(b"{}"), bytes::Bytes::from_static(b"{}"))
            .await
            .unwrap();
        repo.push_blob(&Digest::of(&layer), layer.clone().into())
            .await
            .unwrap();
        repo.push_manifest(
            OCI_MANIFEST_MEDIA_TYPE,
            &manifest.to_bytes(),
            reference.tag(),
        )
        .await
        .unwrap()
        .to_string()
    })
}

#[test]
fn registry_down_keeps_correcting_drift_and_a_bad_v3_is_rejected() {
    let mut registry = OwnRegistry::start();
    let flags = vec!["--plain-http".to_string()];
    let tagged = format!("{}:live", registry.repo("acme/site"));
    let v1 = push(&flags, &tagged, &[("app.conf", "version 1\n")]);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("site");
    let status_file = work.path().join("status.json");
    let exec_log = work.path().join("exec.log");
    let exec = format!("echo ran >> {}", exec_log.display());
    let cache = work.path().join("cache");
    let mut agent = Agent::start(
        &[
            &tagged,
            "--dir",
            dir.to_str().unwrap(),
            "--interval",
            "1s",
            "--allow-unsigned",
            "--plain-http",
            "--retries",
            "0",
            "--timeout",
            "2s",
            "--cache-dir",
            cache.to_str().unwrap(),
            "--status-file",
            status_file.to_str().unwrap(),
            "--exec",
            &exec,
        ],
        &[],
    );
    wait_until("v1 synced", Duration::from_secs(15), || {
        read(&dir.join("app.conf")).as_deref() == Some("version 1\n")
    });

    registry.down();
    wait_until("unreachable reported", Duration::from_secs(10), || {
        status(&status_file)["error"]["reason"] == "RegistryUnreachable"
    });
    let s = status(&status_file);
    assert_eq!(s["last_applied_digest"], v1.as_str(), "{s}");
    assert_eq!(s["last_outcome"], "Failed", "{s}");
    // Drift is still corrected, from the cache.
    std::fs::write(dir.join("app.conf"), "edited while offline\n").unwrap();
    wait_until("drift restored offline", Duration::from_secs(5), || {
        read(&dir.join("app.conf")).as_deref() == Some("version 1\n")
    });
    assert!(agent.alive(), "{}", agent.log());

    // Registry back; v3 carries a `../` entry: refused at extraction, v1 stays.
    registry.up();
    let v3 = push_traversal_artifact(&tagged);
    wait_until("v3 rejected", Duration::from_secs(10), || {
        status(&status_file)["error"]["reason"] == "ParentTraversal"
    });
    let s = status(&status_file);
    assert_eq!(s["last_outcome"], "Rejected", "{s}");
    assert_eq!(s["error"]["step"], "extract", "{s}");
    assert_eq!(s["error"]["digest"], v3.as_str(), "{s}");
    assert!(
        s["error"]["message"].as_str().unwrap().contains(".."),
        "{s}"
    );
    assert_eq!(s["last_applied_digest"], v1.as_str(), "{s}");
    assert_eq!(read(&dir.join("app.conf")).as_deref(), Some("version 1\n"));
    assert!(!work.path().join("escaped.conf").exists());
    std::thread::sleep(Duration::from_millis(1500));
    // Still rejected (waiting for a change), still v1, exec ran for v1 only.
    assert_eq!(status(&status_file)["error"]["reason"], "ParentTraversal");
    assert_eq!(read(&exec_log).unwrap().lines().count(), 1);
    assert!(agent.alive(), "{}", agent.log());
}

fn once(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = tresor();
    cmd.arg("sync")
        .args(args)
        .arg("--once")
        .envs(env.iter().copied());
    cmd.output().unwrap()
}

#[test]
fn crash_during_the_switch_leaves_old_or_new_and_a_restart_cleans_up() {
    let registry = TestRegistry::plain();
    let tagged = format!("{}:live", registry.repo("crash"));
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("site");
    let cache = work.path().join("cache");
    let mut args = vec![
        tagged.as_str(),
        "--dir",
        dir.to_str().unwrap(),
        "--allow-unsigned",
        "--cache-dir",
        cache.to_str().unwrap(),
    ];
    args.extend(registry.flags.iter().map(String::as_str));
    let v1_files = [("app.conf", "1\n"), ("only-in-1.conf", "x\n")];
    let v1_tree = tree(&v1_files);
    push(&registry.flags, &tagged, &v1_files);
    let out = once(&args, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(read_tree(&dir), read_tree(v1_tree.path()));

    let v2_files = [("app.conf", "2\n"), ("only-in-2.conf", "y\n")];
    let v2_tree = tree(&v2_files);
    let v2 = push(&registry.flags, &tagged, &v2_files);
    // Killed right before the rename: the old tree, complete.
    let out = once(&args, &[("TRESOR_TEST_CRASH_AT", "before-switch")]);
    assert!(!out.status.success(), "the crash hook did not fire");
    assert_eq!(read_tree(&dir), read_tree(v1_tree.path()));

    let v3_files = [("app.conf", "3\n"), ("only-in-3.conf", "z\n")];
    let v3_tree = tree(&v3_files);
    let v3 = push(&registry.flags, &tagged, &v3_files);
    // Restart (v2's half-done switch is cleaned up), then killed right after the rename:
    // the new tree, complete.
    let out = once(&args, &[("TRESOR_TEST_CRASH_AT", "after-switch")]);
    assert!(!out.status.success(), "the crash hook did not fire");
    assert_eq!(read_tree(&dir), read_tree(v3_tree.path()));

    let out = once(&args, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(read_tree(&dir), read_tree(v3_tree.path()));
    let hex = v3.strip_prefix("sha256:").unwrap();
    let mut names: Vec<String> = std::fs::read_dir(work.path().join(".site.tresor"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [hex.to_string(), format!("{hex}.files.json"), "lock".into()]
    );
    assert_ne!(v2, v3);
    drop(v2_tree);
}

#[test]
fn a_corrupted_cache_blob_is_detected_and_fetched_again() {
    let registry = TestRegistry::plain();
    let tagged = format!("{}:live", registry.repo("corrupt"));
    push(
        &registry.flags,
        &tagged,
        &[("app.conf", "1\n"), ("b.conf", "b\n")],
    );
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("site");
    let cache = work.path().join("cache");
    let mut args = vec![
        tagged.as_str(),
        "--dir",
        dir.to_str().unwrap(),
        "--allow-unsigned",
        "--cache-dir",
        cache.to_str().unwrap(),
        "--format",
        "json",
    ];
    args.extend(registry.flags.iter().map(String::as_str));
    let out = once(&args, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let blobs: Vec<PathBuf> = std::fs::read_dir(cache.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(blobs.len(), 1);
    let blob = &blobs[0];
    let good = std::fs::read(blob).unwrap();
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    std::fs::write(blob, &bad).unwrap();
    // Drift makes the agent read the layer back from the cache.
    std::fs::remove_file(dir.join("b.conf")).unwrap();

    let out = once(&args, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let layer = format!("sha256:{}", blob.file_name().unwrap().to_str().unwrap());
    assert_eq!(summary["outcome"], "DriftCorrected", "{summary}");
    assert_eq!(
        summary["cache_corrupted"],
        serde_json::json!([layer]),
        "{summary}"
    );
    assert_eq!(
        summary["restored"],
        serde_json::json!(["b.conf"]),
        "{summary}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("corrupted cache entry"));
    assert_eq!(
        std::fs::read(blob).unwrap(),
        good,
        "re-fetched into the cache"
    );
    assert_eq!(read(&dir.join("b.conf")).as_deref(), Some("b\n"));
}

#[test]
fn an_idle_cycle_is_one_head_request() {
    let FakeArtifact {
        manifest,
        digest,
        layer,
        layer_digest,
    } = artifact(&[("app.conf", b"1\n")]);
    let fake = FakeRegistry::start(Content::default());
    fake.set_manifest("v1", OCI_MANIFEST_MEDIA_TYPE, manifest.clone());
    fake.set_manifest(&digest.to_string(), OCI_MANIFEST_MEDIA_TYPE, manifest);
    fake.set_blob(&layer_digest.to_string(), layer);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("site");
    let reference = format!("{}:v1", fake.repo("idle"));
    let cache = work.path().join("cache");
    let args = [
        reference.as_str(),
        "--dir",
        dir.to_str().unwrap(),
        "--allow-unsigned",
        "--plain-http",
        "--cache-dir",
        cache.to_str().unwrap(),
    ];
    let out = stdout_of(tresor().arg("sync").args(args).arg("--once"));
    assert_eq!(out.trim(), format!("applied {digest} (unsigned)"));
    assert_eq!(
        fake.requests(),
        [
            "HEAD /v2/idle/manifests/v1".to_string(),
            format!("GET /v2/idle/manifests/{digest}"),
            format!("GET /v2/idle/blobs/{layer_digest}"),
        ]
    );
    fake.clear_requests();
    let out = stdout_of(tresor().arg("sync").args(args).arg("--once"));
    assert_eq!(out.trim(), format!("unchanged {digest}"));
    assert_eq!(fake.requests(), ["HEAD /v2/idle/manifests/v1"]);
}

#[test]
fn semver_range_follows_the_highest_matching_tag() {
    let fake = FakeRegistry::start(Content::default());
    let mut digests = std::collections::HashMap::new();
    for tag in ["1.2.0", "v1.3.1", "2.0.0", "latest"] {
        let content = format!("{tag}\n");
        let FakeArtifact {
            manifest,
            digest,
            layer,
            layer_digest,
        } = artifact(&[("version.txt", content.as_bytes())]);
        fake.set_manifest(tag, OCI_MANIFEST_MEDIA_TYPE, manifest.clone());
        fake.set_manifest(&digest.to_string(), OCI_MANIFEST_MEDIA_TYPE, manifest);
        fake.set_blob(&layer_digest.to_string(), layer);
        digests.insert(tag, digest);
    }
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("site");
    let out = json_of(tresor().args([
        "sync",
        &fake.repo("ranged"),
        "--semver",
        ">=1.2 <2",
        "--dir",
        dir.to_str().unwrap(),
        "--allow-unsigned",
        "--plain-http",
        "--once",
        "--format",
        "json",
        "--cache-dir",
        work.path().join("cache").to_str().unwrap(),
    ]));
    assert_eq!(out["outcome"], "Applied", "{out}");
    assert_eq!(out["tag"], "v1.3.1", "{out}");
    assert_eq!(out["applied"], digests["v1.3.1"].to_string());
    assert_eq!(read(&dir.join("version.txt")).as_deref(), Some("v1.3.1\n"));
}

#[test]
fn sync_without_trust_material_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let err = common::stderr_of_failure(
        tresor().args([
            "sync",
            "oci://127.0.0.1:1/x:v1",
            "--dir",
            work.path().join("d").to_str().unwrap(),
            "--once",
        ]),
        1,
    );
    assert!(err.contains("--allow-unsigned"), "{err}");
    assert!(!work.path().join("d").exists());
}

#[test]
fn trigger_file_and_sighup_force_a_cycle() {
    let registry = TestRegistry::plain();
    let tagged = format!("{}:live", registry.repo("trigger"));
    push(&registry.flags, &tagged, &[("app.conf", "1\n")]);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("site");
    let trigger = work.path().join("trigger");
    let cache = work.path().join("cache");
    let mut args = vec![
        tagged.as_str(),
        "--dir",
        dir.to_str().unwrap(),
        "--interval",
        "1h",
        "--allow-unsigned",
        "--cache-dir",
        cache.to_str().unwrap(),
        "--trigger-file",
        trigger.to_str().unwrap(),
    ];
    args.extend(registry.flags.iter().map(String::as_str));
    let mut agent = Agent::start(&args, &[]);
    wait_until("v1 synced", Duration::from_secs(15), || {
        read(&dir.join("app.conf")).as_deref() == Some("1\n")
    });

    push(&registry.flags, &tagged, &[("app.conf", "2\n")]);
    std::fs::write(&trigger, "now").unwrap();
    wait_until(
        "v2 synced after the trigger file",
        Duration::from_secs(3),
        || read(&dir.join("app.conf")).as_deref() == Some("2\n"),
    );

    push(&registry.flags, &tagged, &[("app.conf", "3\n")]);
    Command::new("kill")
        .args(["-HUP", &agent.child.id().to_string()])
        .status()
        .unwrap();
    wait_until("v3 synced after SIGHUP", Duration::from_secs(3), || {
        read(&dir.join("app.conf")).as_deref() == Some("3\n")
    });
    assert!(agent.alive(), "{}", agent.log());
    assert!(agent.terminate().success());
}

/// Writes a cosign key pair with `tresor keygen` (password from COSIGN_PASSWORD).
fn keypair(dir: &Path) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    stdout_of(tresor().env("COSIGN_PASSWORD", "sync-test").args([
        "keygen",
        "--output-dir",
        dir.to_str().unwrap(),
    ]));
    (dir.join("cosign.key"), dir.join("cosign.pub"))
}

#[test]
fn sync_verifies_signatures_and_the_policy_and_keeps_the_last_good_version() {
    let registry = TestRegistry::plain();
    let reference = format!("{}:live", registry.repo("signed-sync"));
    let work = tempfile::tempdir().unwrap();
    let (ci_key, ci_pub) = keypair(&work.path().join("ci"));
    let (other_key, _) = keypair(&work.path().join("other"));
    let flags = registry.flags.clone();
    let signed = |key: &Path, files: &[(&str, &str)]| {
        let mut f = flags.clone();
        f.extend(["--sign-key".to_string(), key.to_str().unwrap().to_string()]);
        let src = tree(files);
        let mut cmd = tresor();
        cmd.env("COSIGN_PASSWORD", "sync-test")
            .args(["push", src.path().to_str().unwrap(), &reference])
            .args(["--content", "files", "--overwrite", "--format", "json"])
            .args(&f);
        json_of(cmd)["digest"].as_str().unwrap().to_string()
    };
    let dir = work.path().join("site");
    let status_file = work.path().join("status.json");
    let sync_once = || {
        once(
            &[
                &reference,
                "--dir",
                dir.to_str().unwrap(),
                "--key",
                ci_pub.to_str().unwrap(),
                "--status-file",
                status_file.to_str().unwrap(),
                "--cache-dir",
                work.path().join("cache").to_str().unwrap(),
                "--plain-http",
            ],
            &[],
        )
    };

    // v1 signed by the CI key: applied.
    let v1 = signed(&ci_key, &[("index.html", "v1\n")]);
    let out = sync_once();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(read(&dir.join("index.html")).as_deref(), Some("v1\n"));
    let s = status(&status_file);
    assert_eq!(s["last_applied_digest"].as_str(), Some(v1.as_str()), "{s}");

    // v2 unsigned: refused (exit 1), v1 stays, status names the reason.
    push(&flags, &reference, &[("index.html", "v2 unsigned\n")]);
    let out = sync_once();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(read(&dir.join("index.html")).as_deref(), Some("v1\n"));
    let s = status(&status_file).to_string();
    assert!(s.contains("NoSignatures"), "{s}");

    // v3 signed by a key nobody trusts: refused as well.
    signed(&other_key, &[("index.html", "v3 foreign\n")]);
    let out = sync_once();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(read(&dir.join("index.html")).as_deref(), Some("v1\n"));
    let s = status(&status_file).to_string();
    assert!(
        s.contains("SignatureInvalid") || s.contains("PolicyNotSatisfied"),
        "{s}"
    );

    // v4 signed but a Kubernetes manifest with a :latest image: the immutability policy
    // (enforce by default) refuses it before the switch.
    let src = tree(&[(
        "pod.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: web\n    image: nginx:latest\n",
    )]);
    let mut cmd = tresor();
    cmd.env("COSIGN_PASSWORD", "sync-test")
        .args(["push", src.path().to_str().unwrap(), &reference])
        .args([
            "--overwrite",
            "--policy",
            "off",
            "--sign-key",
            ci_key.to_str().unwrap(),
        ])
        .args(&flags);
    stdout_of(cmd);
    let out = sync_once();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(read(&dir.join("index.html")).as_deref(), Some("v1\n"));
    let s = status(&status_file).to_string();
    assert!(
        s.contains("PolicyViolation") && s.contains("image-latest"),
        "{s}"
    );
}

/// Issue 16: the host agent runs with mimalloc's lazy arena commit — it re-executes itself
/// (same process, same arguments) with MIMALLOC_ARENA_EAGER_COMMIT=0, which took its idle
/// RSS from 24 to about 14 MiB (`scripts/bench-sync.sh`) — and a user's own setting wins.
#[test]
fn the_agent_runs_with_lazy_arena_commit_unless_the_user_chose() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("site");
    let cache = work.path().join("cache");
    // Nothing listens on the discard port: the agent keeps retrying, alive.
    let args = [
        "oci://127.0.0.1:9/issue16/idle:v1",
        "--dir",
        dir.to_str().unwrap(),
        "--allow-unsigned",
        "--plain-http",
        "--cache-dir",
        cache.to_str().unwrap(),
    ];
    let environ = |pid: u32| {
        let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        raw.split(|b| *b == 0)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .filter(|v| v.starts_with("MIMALLOC_"))
            .collect::<Vec<_>>()
    };
    let mut agent = Agent::start(&args, &[]);
    let pid = agent.child.id();
    wait_until("the agent re-executed", Duration::from_secs(10), || {
        environ(pid) == ["MIMALLOC_ARENA_EAGER_COMMIT=0"]
    });
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let cmdline: Vec<_> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    assert_eq!(
        cmdline.get(1..3),
        Some(&["sync".to_string(), args[0].to_string()][..])
    );
    assert!(agent.alive(), "{}", agent.log());
    drop(agent);

    let mut agent = Agent::start(&args, &[("MIMALLOC_ARENA_EAGER_COMMIT", "1")]);
    let pid = agent.child.id();
    wait_until("the first cycle failed", Duration::from_secs(10), || {
        agent.log().contains("127.0.0.1:9")
    });
    assert_eq!(environ(pid), ["MIMALLOC_ARENA_EAGER_COMMIT=1"]);
    assert!(agent.alive(), "{}", agent.log());
}
