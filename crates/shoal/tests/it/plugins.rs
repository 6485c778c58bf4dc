//! Third-party plugins in their own venv (`SHOAL_TEST_PLUGINS_PYTHON`, made
//! by scripts/plugins_venv.sh), and a private PostgreSQL server for
//! pytest-django (scripts/postgres.sh).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The interpreter of the plugins venv. Panics with a clear message when
/// `SHOAL_TEST_PLUGINS_PYTHON` is unset or lacks the plugins: these tests do
/// not skip.
pub(crate) fn plugins_python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let python = std::env::var_os("SHOAL_TEST_PLUGINS_PYTHON").map(PathBuf::from).unwrap_or_else(|| {
            panic!(
                "SHOAL_TEST_PLUGINS_PYTHON is not set: run the suite with scripts/test.sh, or set it to \
                 the interpreter scripts/plugins_venv.sh prints"
            )
        });
        let probe = Command::new(&python)
            .args(["-c", "import pytest, xdist, pytest_django, psycopg, pytest_randomly, filelock"])
            .output();
        match probe {
            Ok(output) if output.status.success() => {}
            Ok(output) => panic!(
                "{} lacks the plugins (run scripts/plugins_venv.sh): {}",
                python.display(),
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(error) => panic!("SHOAL_TEST_PLUGINS_PYTHON={} does not run: {error}", python.display()),
        }
        python
    })
}

/// The repository's `scripts/` directory.
fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts")
}

/// A private PostgreSQL cluster on a loopback port (trust authentication,
/// user `postgres`), stopped and removed when dropped.
pub(crate) struct Postgres {
    directory: tempfile::TempDir,
    port: u16,
}

impl Postgres {
    /// Starts one with scripts/postgres.sh; panics with the server's own
    /// words when it cannot (no silent skip).
    pub(crate) fn start() -> Self {
        let directory = tempfile::Builder::new().prefix("shoal-it-pg-").tempdir().expect("tempdir");
        let mut failures = Vec::new();
        // A free port now may be taken by the time the server binds it:
        // try a few.
        for _ in 0..3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .expect("a free loopback port")
                .port();
            let data = directory.path().join("data");
            if data.exists() {
                std::fs::remove_dir_all(&data).expect("removing a failed cluster");
            }
            let output = Command::new("bash")
                .arg(scripts_dir().join("postgres.sh"))
                .arg("start")
                .arg(directory.path())
                .arg(port.to_string())
                .output()
                .expect("bash runs");
            if output.status.success() {
                return Self { directory, port };
            }
            failures.push(format!(
                "port {port}: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        panic!(
            "PostgreSQL could not be started (scripts/postgres.sh install sets it up on Debian):\n{}",
            failures.join("\n")
        );
    }

    /// The port it listens on (127.0.0.1).
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The names of the databases on the server.
    pub(crate) fn databases(&self) -> Vec<String> {
        let code = format!(
            "import psycopg\n\
             with psycopg.connect(host='127.0.0.1', port={}, user='postgres', dbname='postgres') as c:\n\
             \x20   for (name,) in c.execute('SELECT datname FROM pg_database ORDER BY datname'):\n\
             \x20       print(name)\n",
            self.port
        );
        let output = Command::new(plugins_python()).args(["-c", &code]).output().expect("python runs");
        assert!(
            output.status.success(),
            "listing databases failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).lines().map(str::to_owned).collect()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(scripts_dir().join("postgres.sh"))
            .arg("stop")
            .arg(self.directory.path())
            .output();
    }
}
