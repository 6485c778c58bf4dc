//! Third-party plugins in their own venv (`SHOAL_TEST_PLUGINS_PYTHON`, made
//! by scripts/plugins_venv.sh), and a private PostgreSQL server for
//! pytest-django (scripts/postgres.sh); `fixtures/plugins` (pytest-asyncio,
//! hypothesis, syrupy, pytest-mock, pytest-env) gives each test the outcome
//! `pytest -n 2` gives it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::harness::{Outcome, Project, Report, in_parallel};

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

/// Runs `python -m pytest <args>` in the project (plugins left as the
/// project's ini says) and records each test's final outcome in the JSON
/// report's words, from the reports the controller sees (so also under
/// `-n 2`). Returns the outcome and the map.
pub(crate) fn pytest_outcomes(
    project: &Project,
    env: &[(&str, &str)],
    args: &[&str],
) -> (Outcome, BTreeMap<String, String>) {
    const SCRIPT: &str = r#"
import json, sys, pytest

outcomes = {}

class Recorder:
    def pytest_runtest_logreport(self, report):
        nodeid = report.nodeid
        xfail = hasattr(report, "wasxfail")
        if report.when == "call":
            if xfail:
                outcomes[nodeid] = "xfailed" if report.skipped else "xpassed"
            else:
                outcomes[nodeid] = report.outcome
        elif report.when == "setup" and not report.passed:
            outcomes[nodeid] = "error" if report.failed else ("xfailed" if xfail else "skipped")
        elif report.when == "teardown" and report.failed:
            outcomes[nodeid] = "error"

code = pytest.main(sys.argv[1:], plugins=[Recorder()])
print("SHOAL-IT-OUTCOMES " + json.dumps(outcomes))
sys.exit(int(code))
"#;
    let mut command = project.command(project.interpreter());
    command.args(["-c", SCRIPT]).args(args).envs(env.iter().copied());
    let outcome = Outcome::of(command.output().expect("python starts"));
    let line =
        outcome.stdout.lines().find_map(|line| line.strip_prefix("SHOAL-IT-OUTCOMES ")).unwrap_or_else(
            || panic!("no outcomes from pytest {args:?}:\n{}\n{}", outcome.stdout, outcome.stderr),
        );
    let outcomes = serde_json::from_str(line).expect("outcomes JSON");
    (outcome, outcomes)
}

/// A shoal report's outcomes as owned strings.
fn shoal_outcomes(report: &Report) -> BTreeMap<String, String> {
    report.outcomes().into_iter().map(|(nodeid, outcome)| (nodeid.to_owned(), outcome.to_owned())).collect()
}

/// `fixtures/plugins` (pytest-asyncio, hypothesis, syrupy, pytest-mock,
/// pytest-env) on the plugins venv.
fn plugins_project() -> Project {
    Project::fixture("plugins").with_python(plugins_python())
}

const PLUGINS_TESTS: usize = 19;

#[test]
fn asyncio_hypothesis_syrupy_mock_and_env_give_xdists_outcomes() {
    // Each run on a project of its own, with its own example database.
    let env_of = |project: &Project| {
        let database = project.path().join("hypothesis-db");
        let database = database.to_str().expect("a UTF-8 temp path").to_owned();
        [
            ("PLUGINS_HYPOTHESIS_DB", database),
            ("PLUGINS_FIXTURE_DEFAULT", "given".to_owned()),
            ("PLUGINS_FIXTURE_EXPECT_DEFAULT", "given".to_owned()),
        ]
    };
    let project = plugins_project();
    let env = env_of(&project);
    let (xdist, expected) = pytest_outcomes(&project, &borrowed(&env), &["-n", "2"]);
    xdist.assert_code(0);
    assert_eq!(expected.len(), PLUGINS_TESTS, "{expected:#?}");
    assert_eq!(expected.values().filter(|outcome| *outcome == "xfailed").count(), 2, "{expected:#?}");

    in_parallel(&["fork", "spawn"], |mode| {
        let project = plugins_project();
        let env = env_of(&project);
        let report = project.shoal_report(&borrowed(&env), &["-n", "2", "--mode", mode]);
        assert_eq!(
            shoal_outcomes(&report),
            expected,
            "{mode}: outcomes differ from pytest -n 2\n{}\n{}",
            report.outcome.stdout,
            report.outcome.stderr
        );
        assert_eq!(report.outcome.code, xdist.code, "{mode}\n{}", report.outcome.stdout);
        assert_eq!(report.outcome.closing_counts(), xdist.closing_counts(), "{mode}");
        let workers: BTreeSet<&str> =
            report.tests().iter().filter_map(|test| test["worker"].as_str()).collect();
        assert!(workers.len() >= 2, "{mode}: only one worker ran tests: {workers:?}");
        // The false property's counterexample went to the shared database.
        let database = project.path().join("hypothesis-db");
        let stored = std::fs::read_dir(&database).map(Iterator::count).unwrap_or(0);
        assert!(stored > 0, "{mode}: hypothesis stored nothing in {}", database.display());
    });
}

/// `(name, value)` pairs as the harness takes them.
fn borrowed<'a>(env: &'a [(&'static str, String); 3]) -> [(&'static str, &'a str); 3] {
    env.each_ref().map(|(name, value)| (*name, value.as_str()))
}

/// The committed snapshot file.
fn committed_snapshots() -> String {
    std::fs::read_to_string(crate::harness::fixtures_dir().join("plugins/__snapshots__/test_syrupy.ambr"))
        .expect("the committed snapshots")
}

#[test]
fn syrupy_snapshot_update_writes_what_pytest_writes() {
    let snapshots = "__snapshots__/test_syrupy.ambr";
    in_parallel(&["fork", "spawn"], |mode| {
        // Missing snapshots are generated, as `pytest -n 2 --snapshot-update` does.
        let project = plugins_project();
        std::fs::remove_file(project.path().join(snapshots)).expect("the snapshot file");
        let report = project.shoal_report(&[], &["-n", "2", "--mode", mode, "--", "--snapshot-update"]);
        report.outcome.assert_code(0);
        let written = std::fs::read_to_string(project.path().join(snapshots)).unwrap_or_default();
        assert_eq!(written, committed_snapshots(), "{mode}: --snapshot-update wrote other snapshots");

        // An unused snapshot is deleted and only that one, as under
        // `pytest -n 2`; or, where shoal says it cannot (syrupy finds unused
        // snapshots in xdist's controller), nothing is deleted: no worker
        // deletes the snapshots of tests another worker ran.
        let project = plugins_project();
        let unused = format!("{}# name: test_removed_long_ago\n  42\n# ---\n", committed_snapshots());
        project.write(snapshots, &unused);
        let report = project.shoal_report(&[], &["-n", "2", "--mode", mode, "--", "--snapshot-update"]);
        report.outcome.assert_code(0);
        let written = std::fs::read_to_string(project.path().join(snapshots)).unwrap_or_default();
        let said_why = report
            .outcome
            .stderr
            .lines()
            .any(|line| line.contains("syrupy") && line.contains("--snapshot-update"));
        if said_why {
            assert_eq!(written, unused, "{mode}: a worker deleted snapshots");
        } else {
            assert_eq!(written, committed_snapshots(), "{mode}: --snapshot-update left other snapshots");
        }
    });
}

#[test]
fn syrupys_unused_snapshot_report_fails_the_run_as_under_xdist_or_shoal_says_why_not() {
    let project = plugins_project();
    let unused = format!("{}# name: test_removed_long_ago\n  42\n# ---\n", committed_snapshots());
    project.write("__snapshots__/test_syrupy.ambr", &unused);
    let (xdist, _) = pytest_outcomes(&project, &[], &["-n", "2"]);
    xdist.assert_code(1);
    assert!(xdist.stdout.contains("1 snapshot unused"), "{}", xdist.stdout);
    in_parallel(&["fork", "spawn"], |mode| {
        let outcome = project.shoal(&["run", "-n", "2", "--mode", mode]);
        // A notice naming syrupy, not pytest's `plugins: ... syrupy-7.0.2` header.
        let said_why = outcome
            .stderr
            .lines()
            .chain(outcome.stdout.lines())
            .any(|line| line.contains("syrupy") && !line.starts_with("plugins:"));
        assert!(
            outcome.code == xdist.code || said_why,
            "{mode}: exit {:?} where pytest -n 2 exits {:?} (unused snapshot), and no word about syrupy\n{}\n{}",
            outcome.code,
            xdist.code,
            outcome.stdout,
            outcome.stderr
        );
    });
}

/// A line of output that names `word`, other than pytest's header lines
/// (`rootdir: ...`, `plugins: ... html-4.2.0`, `benchmark: 5.3.1 (defaults: ...)`).
fn names(outcome: &Outcome, word: &str) -> bool {
    let header = ["rootdir:", "plugins:", "benchmark: "];
    outcome
        .stderr
        .lines()
        .chain(outcome.stdout.lines())
        .any(|line| line.contains(word) && !header.iter().any(|start| line.starts_with(start)))
}

/// The node ids in a pytest-html report.
fn html_report_tests(project: &Project, report: &Path) -> BTreeSet<String> {
    const SCRIPT: &str = r#"
import html, json, re, sys
text = open(sys.argv[1], encoding="utf-8").read()
blob = re.search(r'data-jsonblob="([^"]*)"', text).group(1)
print("\n".join(json.loads(html.unescape(blob))["tests"]))
"#;
    let output = project.python_command().args(["-c", SCRIPT]).arg(report).output().expect("python runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).lines().map(str::to_owned).collect()
}

#[test]
fn pytest_html_reports_every_test_as_under_xdist_or_shoal_says_why_not() {
    let project = Project::fixture("html_benchmark").with_python(plugins_python());
    let report = project.path().join("report.html");
    let html = format!("--html={}", report.display());
    let (xdist, _) = pytest_outcomes(&project, &[], &["-n", "2", &html, "--self-contained-html"]);
    xdist.assert_code(0);
    let expected = html_report_tests(&project, &report);
    assert_eq!(expected.len(), 8, "{expected:#?}");
    in_parallel(&["fork", "spawn"], |mode| {
        let project = Project::fixture("html_benchmark").with_python(plugins_python());
        let report = project.path().join("report.html");
        let html = format!("--html={}", report.display());
        let outcome =
            project.shoal(&["run", "-n", "2", "--mode", mode, "--", &html, "--self-contained-html"]);
        outcome.assert_code(0);
        let listed = if report.exists() { html_report_tests(&project, &report) } else { BTreeSet::new() };
        assert!(
            listed == expected || names(&outcome, "pytest-html"),
            "{mode}: the HTML report lists {listed:?}, pytest -n 2's lists every test, and shoal says \
             nothing about pytest-html\n{}\n{}",
            outcome.stdout,
            outcome.stderr
        );
    });
}

#[test]
fn pytest_benchmark_is_off_as_under_xdist_or_shoal_says_why_not() {
    let project = Project::fixture("html_benchmark").with_python(plugins_python());
    let json = project.path().join("benchmark.json");
    let option = format!("--benchmark-json={}", json.display());
    // pytest-xdist: benchmarks are switched off (each benchmarked function
    // runs once) and no benchmark data is written. (Its warning comes only
    // when gw0 ran a benchmark.)
    let (xdist, _) = pytest_outcomes(&project, &[], &["-n", "2", &option]);
    xdist.assert_code(0);
    assert!(!json.exists(), "pytest -n 2 wrote benchmark data");
    in_parallel(&["fork", "spawn"], |mode| {
        let project = Project::fixture("html_benchmark").with_python(plugins_python());
        let json = project.path().join("benchmark.json");
        let option = format!("--benchmark-json={}", json.display());
        let report = project.shoal_report(&[], &["-n", "2", "--mode", mode, "--", &option]);
        report.outcome.assert_code(0);
        // Calibrated rounds take up to a second (max_time=1.0); one call, microseconds.
        let benchmarked: Vec<f64> =
            ["test_report.py::test_benchmark_one", "test_report.py::test_benchmark_two"]
                .iter()
                .map(|nodeid| report.test(nodeid)["call_duration"].as_f64().expect("a call duration"))
                .collect();
        let as_xdist = !json.exists() && benchmarked.iter().all(|seconds| *seconds < 0.5);
        assert!(
            as_xdist || names(&report.outcome, "pytest-benchmark"),
            "{mode}: benchmark data written: {}, benchmark calls took {benchmarked:?} s, and shoal says \
             nothing about pytest-benchmark\n{}\n{}",
            json.exists(),
            report.outcome.stdout,
            report.outcome.stderr
        );
    });
}
