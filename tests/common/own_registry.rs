//! A Distribution registry of one test's own (the shared ones of `scripts/registry.sh` must
//! stay up and keep their configuration): stopped and started at will on the same port and
//! storage, with extra configuration (e.g. `notifications:`) when a test needs it.

use std::time::Duration;

use super::TestRegistry;

/// A `docker-registry serve` process on a free port of 127.0.0.1, plain HTTP.
pub struct OwnRegistry {
    dir: tempfile::TempDir,
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Option<std::process::Child>,
}

impl OwnRegistry {
    /// Starts one with the default configuration.
    pub fn start() -> Self {
        Self::with_config("")
    }

    /// Starts one with `extra` appended to its config.yml (top-level YAML sections).
    pub fn with_config(extra: &str) -> Self {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.yml"),
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: 127.0.0.1:{port}\n  secret: own-registry\n{extra}",
                dir.path().join("storage").display()
            ),
        )
        .unwrap();
        let mut r = Self {
            dir,
            port,
            child: None,
        };
        r.resume();
        r
    }

    /// Starts the process again (after [`Self::stop`]).
    pub fn resume(&mut self) {
        let bin = std::env::var("TRESOR_REGISTRY_BIN").unwrap_or_else(|_| "docker-registry".into());
        self.child = Some(
            std::process::Command::new(bin)
                .arg("serve")
                .arg(self.dir.path().join("config.yml"))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the test's own registry did not start");
    }

    /// Kills the process; storage and port stay.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// It as a [`TestRegistry`] (plain HTTP, no credentials).
    pub fn registry(&self) -> TestRegistry {
        TestRegistry {
            name: "plain",
            host: format!("127.0.0.1:{}", self.port),
            flags: vec!["--plain-http".into()],
            user: None,
            password: None,
        }
    }
}

impl Drop for OwnRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port of 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
