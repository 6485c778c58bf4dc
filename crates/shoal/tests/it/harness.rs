//! Test harness: fixture projects copied to temp dirs, helpers that run
//! shoal, sequential pytest and documented command lines on them and read
//! the JSON reports they write, and the docs' fenced blocks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

/// Runs `check` on every case, a few at a time on threads of their own (the
/// cases wait on pytest processes far more than they compute), and returns
/// the results in the cases' order. A case that panics fails the test with
/// its own message.
pub(crate) fn in_parallel<T: Sync, R: Send>(cases: &[T], check: impl Fn(&T) -> R + Sync) -> Vec<R> {
    const AT_ONCE: usize = 3;
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut results: Vec<Option<R>> = std::iter::repeat_with(|| None).take(cases.len()).collect();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..AT_ONCE.min(cases.len()))
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(case) = cases.get(index) else { return done };
                        done.push((index, check(case)));
                    }
                })
            })
            .collect();
        for worker in workers {
            match worker.join() {
                Ok(done) => done.into_iter().for_each(|(index, result)| results[index] = Some(result)),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    });
    results.into_iter().map(|result| result.expect("every case ran")).collect()
}

/// The interpreter with pytest the tests use: `SHOAL_TEST_PYTHON`, else
/// `python3`. Panics with a clear message when pytest is missing there.
pub(crate) fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let python =
            std::env::var_os("SHOAL_TEST_PYTHON").map_or_else(|| PathBuf::from("python3"), PathBuf::from);
        let probe = Command::new(&python).args(["-c", "import pytest"]).output();
        assert!(
            probe.is_ok_and(|output| output.status.success()),
            "pytest is not importable by {}: run the suite with scripts/test.sh, or set SHOAL_TEST_PYTHON",
            python.display()
        );
        python
    })
}

/// The major version of that interpreter's pytest.
pub(crate) fn pytest_major() -> u32 {
    pytest_version().0
}

/// The (major, minor) version of that interpreter's pytest.
pub(crate) fn pytest_version() -> (u32, u32) {
    static VERSION: OnceLock<(u32, u32)> = OnceLock::new();
    *VERSION.get_or_init(|| {
        let version = python_output("import pytest; print(*pytest.__version__.split('.')[:2])");
        let mut numbers =
            version.split_whitespace().map(|number| number.parse().expect("a pytest version number"));
        (numbers.next().expect("a major version"), numbers.next().expect("a minor version"))
    })
}

/// Whether the test interpreter can import pytest-xdist.
pub(crate) fn has_xdist() -> bool {
    static XDIST: OnceLock<bool> = OnceLock::new();
    *XDIST.get_or_init(|| {
        Command::new(python()).args(["-c", "import xdist"]).output().expect("python runs").status.success()
    })
}

/// What `python -c <code>` prints (trimmed), panicking unless it succeeds.
pub(crate) fn python_output(code: &str) -> String {
    let output = Command::new(python()).args(["-c", code]).output().expect("python runs");
    assert!(
        output.status.success(),
        "python -c {code:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// The repository's `fixtures/` directory.
pub(crate) fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// A copy of a fixture project in a temporary directory, so tests can run in
/// parallel and nothing is written into the repository.
pub(crate) struct Project {
    directory: tempfile::TempDir,
    /// The interpreter instead of [`python()`] (see [`Project::with_python`]).
    python: Option<PathBuf>,
}

impl Project {
    /// Copies `fixtures/<name>` into a fresh temp dir.
    pub(crate) fn fixture(name: &str) -> Self {
        let directory =
            tempfile::Builder::new().prefix(&format!("shoal-it-{name}-")).tempdir().expect("tempdir");
        copy_tree(&fixtures_dir().join(name), directory.path());
        Self { directory, python: None }
    }

    /// An empty project to write files into.
    pub(crate) fn empty() -> Self {
        let directory = tempfile::Builder::new().prefix("shoal-it-").tempdir().expect("tempdir");
        Self { directory, python: None }
    }

    /// Runs pytest, and shoal's `--python`, with `python` instead of
    /// [`python()`] (e.g. the third-party plugins' venv).
    pub(crate) fn with_python(mut self, python: &Path) -> Self {
        self.python = Some(python.to_owned());
        self
    }

    /// The interpreter this project's pytest runs with.
    pub(crate) fn interpreter(&self) -> &Path {
        self.python.as_deref().unwrap_or_else(|| python())
    }

    /// The project's root.
    pub(crate) fn path(&self) -> &Path {
        self.directory.path()
    }

    /// Writes a file (creating directories) relative to the root.
    pub(crate) fn write(&self, relative: &str, contents: impl AsRef<[u8]>) -> &Self {
        let path = self.path().join(relative);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(path, contents).expect("write");
        self
    }

    /// `shoal <args>` in the project; for `run`, `list`, `plan` and `why`, `--python` is
    /// added after the subcommand.
    pub(crate) fn shoal(&self, args: &[&str]) -> Outcome {
        self.shoal_with_env(&[], args)
    }

    /// [`Self::shoal`] with extra environment variables.
    pub(crate) fn shoal_with_env(&self, env: &[(&str, &str)], args: &[&str]) -> Outcome {
        let mut command = self.shoal_command(args);
        command.envs(env.iter().copied());
        Outcome::of(command.output().expect("shoal starts"))
    }

    /// The isolated `shoal <args>` command, not yet started (for tests that
    /// need to handle its pipes themselves).
    pub(crate) fn shoal_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_shoal"));
        let mut args = args.iter();
        if let Some(subcommand) = args.next() {
            command.arg(subcommand);
            if matches!(*subcommand, "run" | "list" | "plan" | "why") {
                command.arg("--python").arg(self.interpreter());
            }
        }
        command.args(args);
        self.isolate(&mut command);
        command
    }

    /// `shoal <args>` exactly as given: no `--python` is added.
    pub(crate) fn shoal_as_typed(&self, args: &[&str]) -> Outcome {
        let mut command = Command::new(env!("CARGO_BIN_EXE_shoal"));
        command.args(args);
        self.isolate(&mut command);
        Outcome::of(command.output().expect("shoal starts"))
    }

    /// `shoal run --json-report <file> <args>` with extra environment
    /// variables: the outcome, the parsed report and how long the command
    /// took. `args` must not start with `run`.
    pub(crate) fn shoal_report(&self, env: &[(&str, &str)], args: &[&str]) -> Report {
        let report_path = self.path().join(".shoal-it-report.json");
        let report_arg = report_path.to_str().expect("a UTF-8 temp path").to_owned();
        let mut full = vec!["run", "--json-report", &report_arg];
        full.extend_from_slice(args);
        self.report_from(&report_path, || self.shoal_with_env(env, &full))
    }

    /// Runs `command`, which writes a JSON report at `path` (relative to
    /// the project; an earlier file there is removed first): the outcome,
    /// the parsed report and how long the command took.
    pub(crate) fn report_from(&self, path: impl AsRef<Path>, command: impl FnOnce() -> Outcome) -> Report {
        let report_path = self.path().join(path);
        let _ = std::fs::remove_file(&report_path);
        let before = SystemTime::now();
        let outcome = command();
        let after = SystemTime::now();
        let text = std::fs::read_to_string(&report_path).unwrap_or_else(|error| {
            panic!(
                "no JSON report at {} ({error})\nstdout:\n{}\nstderr:\n{}",
                report_path.display(),
                outcome.stdout,
                outcome.stderr
            )
        });
        let json =
            serde_json::from_str(&text).unwrap_or_else(|error| panic!("report is not JSON: {error}\n{text}"));
        Report { outcome, json, before, after }
    }

    /// Sequential `python -m pytest <args>` in the project.
    pub(crate) fn pytest(&self, args: &[&str]) -> Outcome {
        self.pytest_with_env(&[], args)
    }

    /// [`Self::pytest`] with extra environment variables.
    pub(crate) fn pytest_with_env(&self, env: &[(&str, &str)], args: &[&str]) -> Outcome {
        let mut command = Command::new(self.interpreter());
        command.args(["-m", "pytest", "-p", "no:randomly"]).args(args);
        self.isolate(&mut command);
        command.envs(env.iter().copied());
        Outcome::of(command.output().expect("python starts"))
    }

    /// Writes a durations history (`.test_durations`) in which `first`
    /// takes far longer than every other collected test, so that shoal
    /// starts it first.
    pub(crate) fn history_starting_with(&self, first: &str) -> &Self {
        let ids = self.pytest_node_ids(&[]);
        assert!(ids.iter().any(|id| id == first), "{first} is not collected: {ids:#?}");
        let durations: BTreeMap<&str, f64> =
            ids.iter().map(|id| (id.as_str(), if id == first { 5.0 } else { 0.1 })).collect();
        self.write(".test_durations", serde_json::to_string_pretty(&durations).expect("JSON"))
    }

    /// An isolated command in the project (shoal's test environment), not
    /// yet started.
    pub(crate) fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        self.isolate(&mut command);
        command
    }

    /// Runs a command line with `sh` in the project, with shoal and the
    /// test interpreter first on `PATH`, as in a CI job that installed
    /// both (the documented jobs).
    pub(crate) fn sh(&self, line: &str, env: &[(&str, &str)]) -> Outcome {
        let shoal_directory =
            Path::new(env!("CARGO_BIN_EXE_shoal")).parent().expect("a directory").to_owned();
        let mut path: Vec<PathBuf> = vec![shoal_directory];
        if let Some(directory) = python().parent().filter(|directory| !directory.as_os_str().is_empty()) {
            path.push(directory.to_owned());
        }
        path.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
        let mut command = self.command("sh");
        command
            .args(["-c", line])
            .env("PATH", std::env::join_paths(path).expect("a PATH"))
            .envs(env.iter().copied());
        Outcome::of(command.output().expect("sh starts"))
    }

    /// An isolated `python` command in the project, not yet started.
    pub(crate) fn python_command(&self) -> Command {
        let mut command = Command::new(self.interpreter());
        self.isolate(&mut command);
        command
    }

    /// The node ids `pytest --collect-only -q <args>` lists, in its order.
    pub(crate) fn pytest_node_ids(&self, args: &[&str]) -> Vec<String> {
        let mut full = vec!["--collect-only", "-q"];
        full.extend_from_slice(args);
        let outcome = self.pytest(&full);
        assert!(
            matches!(outcome.code, Some(0 | 5)),
            "pytest --collect-only failed:\n{}\n{}",
            outcome.stdout,
            outcome.stderr
        );
        outcome.stdout.lines().filter(|line| line.contains("::")).map(str::to_owned).collect()
    }

    /// A stable environment: 80 columns, not CI, no virtualenv or hash seed
    /// leaking in from the developer's shell.
    fn isolate(&self, command: &mut Command) {
        command
            .current_dir(self.path())
            .env("COLUMNS", "80")
            .env_remove("CI")
            .env_remove("BUILD_NUMBER")
            .env_remove("GITHUB_ACTIONS")
            .env_remove("VIRTUAL_ENV")
            .env_remove("PYTHONHASHSEED")
            .env_remove("PYTEST_ADDOPTS")
            .env_remove("PYTEST_XDIST_WORKER")
            .env_remove("PYTEST_XDIST_WORKER_COUNT")
            .env_remove("SHOAL_WORKER")
            .env_remove("FORCE_COLOR")
            .env_remove("PY_COLORS")
            .env_remove("NO_COLOR")
            .env_remove("SHOAL_WORKER_COUNT")
            .env_remove("SHOAL_PROFILE")
            .env_remove("SHOAL_ENV_LOG")
            .env_remove("SHOAL_FIXTURE_LOG_DIR")
            .env_remove("SHOAL_FIXTURE_ALLOW_CRASH");
        // CI shard variables would make `--shard auto` read the developer's CI.
        for name in SHARD_VARIABLES {
            command.env_remove(name);
        }
    }
}

/// The variables `--shard auto` reads.
pub(crate) const SHARD_VARIABLES: &[&str] = &[
    "TEST_SHARD_INDEX",
    "TEST_TOTAL_SHARDS",
    "TEST_SHARD_STATUS_FILE",
    "CI_NODE_INDEX",
    "CI_NODE_TOTAL",
    "CIRCLE_NODE_INDEX",
    "CIRCLE_NODE_TOTAL",
    "BUILDKITE_PARALLEL_JOB",
    "BUILDKITE_PARALLEL_JOB_COUNT",
    "JOB_COMPLETION_INDEX",
];

fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap_or_else(|error| panic!("reading {}: {error}", from.display()))
    {
        let entry = entry.expect("a directory entry");
        let name = entry.file_name();
        if name == "__pycache__" || name == ".pytest_cache" {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type().expect("a file type").is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// A finished command: exit code and output.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// The exit code (`None` if killed by a signal).
    pub(crate) code: Option<i32>,
    /// stdout, lossily decoded.
    pub(crate) stdout: String,
    /// stderr, lossily decoded.
    pub(crate) stderr: String,
}

impl Outcome {
    /// The outcome of a finished process.
    pub(crate) fn of(output: Output) -> Self {
        Self {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// The counts of the closing line, e.g. `2 failed, 3 passed`, without the
    /// `=` rule and the timing; works for `-q` lines too.
    pub(crate) fn closing_counts(&self) -> String {
        let line = self
            .stdout
            .lines()
            .rev()
            .find(|line| {
                line.contains(" in ") && (line.ends_with('s') || line.ends_with('=') || line.ends_with(')'))
            })
            .unwrap_or_else(|| panic!("no closing line in:\n{}\nstderr:\n{}", self.stdout, self.stderr));
        let line = line.trim_matches('=').trim();
        line.rsplit_once(" in ").map_or(line, |(counts, _)| counts).to_owned()
    }

    /// The closing line's counts by category, e.g. `{"failed": 2, "not run": 3}`.
    pub(crate) fn closing_map(&self) -> BTreeMap<String, u64> {
        let counts = self.closing_counts();
        if counts == "no tests ran" {
            return BTreeMap::new();
        }
        counts
            .split(", ")
            .map(|part| {
                let (number, category) =
                    part.split_once(' ').unwrap_or_else(|| panic!("a count in the closing line: {part:?}"));
                (category.to_owned(), number.parse().unwrap_or_else(|_| panic!("a number in {part:?}")))
            })
            .collect()
    }

    /// Panics with the whole output unless the exit code is `expected`.
    pub(crate) fn assert_code(&self, expected: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(expected),
            "expected exit {expected}\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

/// A `shoal run --json-report` run.
pub(crate) struct Report {
    /// The command's result.
    pub(crate) outcome: Outcome,
    /// The parsed report.
    pub(crate) json: serde_json::Value,
    /// Just before the command started.
    pub(crate) before: SystemTime,
    /// Just after it ended.
    pub(crate) after: SystemTime,
}

impl Report {
    /// The `tests` array.
    pub(crate) fn tests(&self) -> &[serde_json::Value] {
        self.json["tests"].as_array().unwrap_or_else(|| panic!("no tests array in {}", self.json))
    }

    /// The node ids in `tests`, in report order.
    pub(crate) fn node_ids(&self) -> Vec<&str> {
        self.tests().iter().map(|test| test["nodeid"].as_str().expect("a nodeid string")).collect()
    }

    /// Each node id's outcome; panics when a node id appears twice.
    pub(crate) fn outcomes(&self) -> BTreeMap<&str, &str> {
        let mut outcomes = BTreeMap::new();
        for test in self.tests() {
            let nodeid = test["nodeid"].as_str().expect("a nodeid string");
            let outcome = test["outcome"].as_str().expect("an outcome string");
            assert!(
                outcomes.insert(nodeid, outcome).is_none(),
                "{nodeid} is reported twice:\n{:#}",
                self.json
            );
        }
        outcomes
    }

    /// The test entry of one node id.
    pub(crate) fn test(&self, nodeid: &str) -> &serde_json::Value {
        self.tests()
            .iter()
            .find(|test| test["nodeid"] == nodeid)
            .unwrap_or_else(|| panic!("{nodeid} is not in the report:\n{:#}", self.json))
    }

    /// How many tests have each outcome, counted from `tests`.
    pub(crate) fn outcome_counts(&self) -> BTreeMap<String, u64> {
        let mut counts = BTreeMap::new();
        for outcome in self.outcomes().values() {
            *counts.entry((*outcome).to_owned()).or_insert(0) += 1;
        }
        counts
    }
}

/// The fenced block of `language` under `## heading` in `docs/<doc>`.
pub(crate) fn documented_block(doc: &str, heading: &str, language: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs").join(doc);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    let section = text
        .split(&format!("\n## {heading}\n"))
        .nth(1)
        .unwrap_or_else(|| panic!("no {heading} section in docs/{doc}"));
    let fence = format!("```{language}\n");
    section.split(&fence).nth(1).and_then(|rest| rest.split("```").next()).expect("a fenced block").to_owned()
}

/// The JSON lines of a log file (none when the file was never written).
pub(crate) fn read_json_lines(path: &Path) -> Vec<serde_json::Value> {
    let Ok(text) = std::fs::read_to_string(path) else { return Vec::new() };
    text.lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|error| panic!("{error}: {line:?} in {}", path.display()))
        })
        .collect()
}

/// A conftest that appends one JSON line per test to `$SHOAL_ENV_LOG` during
/// setup (so the line is written even when the test then kills its
/// process): node id, worker variables, pid, and whether the process is an
/// xdist worker.
pub(crate) const RECORDING_CONFTEST: &str = r#"
import json
import os

import pytest


@pytest.fixture(autouse=True)
def _shoal_it_record(request):
    path = os.environ.get("SHOAL_ENV_LOG")
    if path:
        record = {
            "nodeid": request.node.nodeid,
            "PYTEST_XDIST_WORKER": os.environ.get("PYTEST_XDIST_WORKER"),
            "PYTEST_XDIST_WORKER_COUNT": os.environ.get("PYTEST_XDIST_WORKER_COUNT"),
            "SHOAL_WORKER": os.environ.get("SHOAL_WORKER"),
            "workerid": getattr(request.config, "workerinput", {}).get("workerid"),
            "pid": os.getpid(),
        }
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(record) + "\n").encode("utf-8"))
        finally:
            os.close(fd)
"#;

/// Parses an RFC 3339 UTC timestamp (`2024-05-01T12:00:00.123Z`).
pub(crate) fn parse_rfc3339_utc(text: &str) -> SystemTime {
    fn invalid(text: &str) -> ! {
        panic!("not an RFC 3339 UTC timestamp: {text:?}")
    }
    fn number<T: std::str::FromStr>(part: &str, text: &str) -> T {
        part.parse().unwrap_or_else(|_| invalid(text))
    }
    let body = text.strip_suffix('Z').unwrap_or_else(|| invalid(text));
    let (date, time) = body.split_once('T').unwrap_or_else(|| invalid(text));
    let date: Vec<i64> = date.split('-').map(|part| number(part, text)).collect();
    let (clock, fraction) = time.split_once('.').unwrap_or((time, "0"));
    let clock: Vec<u64> = clock.split(':').map(|part| number(part, text)).collect();
    let [year, month, day] = date[..] else { invalid(text) };
    let [hours, minutes, seconds] = clock[..] else { invalid(text) };
    let fraction: f64 = number(&format!("0.{fraction}"), text);
    // Days since 1970-01-01 from the civil date (Howard Hinnant's algorithm).
    let shifted_year = if month <= 2 { year - 1 } else { year };
    let era = shifted_year.div_euclid(400);
    let year_of_era = shifted_year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = u64::try_from(era * 146_097 + day_of_era - 719_468).unwrap_or_else(|_| invalid(text));
    let whole = days * 86_400 + hours * 3_600 + minutes * 60 + seconds;
    SystemTime::UNIX_EPOCH + Duration::from_secs(whole) + Duration::from_secs_f64(fraction)
}
