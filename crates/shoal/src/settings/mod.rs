//! Resolving what the user typed, `[tool.shoal]` and defaults into one
//! concrete [`RunSettings`].
//!
//! Precedence: command line, then the environment where an option reads it
//! (colour, `--shard auto`), then `[tool.shoal]` in the nearest
//! `pyproject.toml` (the current directory or its ancestors), then defaults.
//! The engine only ever sees the resolved settings, never clap.
//!
//! [`crate::values`] declares what each setting accepts, once for the command line
//! and the file; `file` reads `[tool.shoal]`; this module layers them.

mod file;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use self::file::FileSettings;
use crate::cli::{CoverageArgs, RunArgs, SelectionArgs};
use crate::errors::ShoalError;
use crate::python::{Interpreter, locate_interpreter};
use crate::selection::Selection;
pub use crate::values::{CollectionMode, Colour, FailureOutput, WorkerMode};
use crate::values::{WorkerCount, parse_seconds, parse_size_kib};

/// Markers that make a test serial when `[tool.shoal] serial-markers` does
/// not say otherwise.
const DEFAULT_SERIAL_MARKERS: &[&str] = &["serial"];

/// Which tests `--lf` / `--ff` put forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LastFailedMode {
    /// Neither flag.
    Off,
    /// `--lf`: only the tests that failed last time.
    Only,
    /// `--ff`: those first, then the rest.
    First,
}

/// Default number of worker replacements per run.
const DEFAULT_MAX_WORKER_RESTARTS: u32 = 8;

/// How to collect: shared by `run` and `list`.
#[derive(Debug, Clone)]
pub struct CollectSettings {
    /// The directory shoal was started in; paths are relative to it.
    pub cwd: PathBuf,
    /// The combined selection (may be empty: pytest's defaults then apply).
    pub selection: Selection,
    /// pytest's `-k`.
    pub keyword: Option<String>,
    /// pytest's `-m`.
    pub markers: Option<String>,
    /// Arguments after `--`, passed to pytest unchanged.
    pub pytest_args: Vec<String>,
    /// The interpreter running pytest.
    pub interpreter: Interpreter,
    /// pytest's verbosity: `-v` counts up, `-q` down.
    pub verbosity: i8,
}

impl CollectSettings {
    /// pytest's arguments for this selection: verbosity, `-k`, `-m`, the
    /// selected paths, then `user_args` (the user's own arguments, last: an
    /// option there that takes an optional value, pytest-cov's bare `--cov`,
    /// must not swallow a selected path).
    pub fn pytest_arguments(&self, user_args: &[String]) -> Vec<String> {
        let mut arguments = Vec::new();
        match self.verbosity {
            level if level > 0 => {
                arguments.push(format!("-{}", "v".repeat(usize::from(level.unsigned_abs()))))
            }
            level if level < 0 => {
                arguments.push(format!("-{}", "q".repeat(usize::from(level.unsigned_abs()))))
            }
            _ => {}
        }
        if let Some(keyword) = &self.keyword {
            arguments.extend(["-k".to_owned(), keyword.clone()]);
        }
        if let Some(markers) = &self.markers {
            arguments.extend(["-m".to_owned(), markers.clone()]);
        }
        arguments.extend(self.selection.arguments());
        arguments.extend(user_args.iter().cloned());
        arguments
    }
}

/// Everything `shoal run` needs, resolved.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// What to collect and with which Python.
    pub collect: CollectSettings,
    /// How many workers to start.
    pub workers: usize,
    /// How workers come to be.
    pub mode: WorkerMode,
    /// How fork mode collects.
    pub collection: CollectionMode,
    /// `-x` / `--maxfail`: stop after this many failures.
    pub max_failures: Option<u64>,
    /// Run the rest when some files fail to collect.
    pub continue_on_collection_errors: bool,
    /// How many times a dead worker may be replaced.
    pub max_worker_restarts: u32,
    /// Seconds a test may run (a `timeout` marker overrides it per test).
    pub timeout: Option<f64>,
    /// Resident memory (KiB) past which a worker is replaced.
    pub worker_memory_limit_kib: Option<u64>,
    /// Markers that make a test serial.
    pub serial_markers: Vec<String>,
    /// `--lf` / `--ff`.
    pub last_failed: LastFailedMode,
    /// `--budget`: seconds the whole run may take.
    pub budget: Option<f64>,
    /// `--reruns`: reruns of a failed test.
    pub reruns: u8,
    /// `--reruns-delay`: seconds before a rerun.
    pub rerun_delay: f64,
    /// `--flaky-fails`: flaky tests fail the run.
    pub flaky_fails: bool,
    /// Where to write the JSON report.
    pub json_report: Option<PathBuf>,
    /// Where to write the JUnit XML report.
    pub junitxml: Option<PathBuf>,
    /// Where to stream events (`-`: stdout).
    pub events: Option<PathBuf>,
    /// Where to write the HTML timeline.
    pub timeline: Option<PathBuf>,
    /// `--color`: whether the terminal report is coloured.
    pub colour: bool,
    /// `--failure-output immediate`: failures print as they happen.
    pub immediate_failures: bool,
    /// A live footer (progress bar, ETA, running tests) instead of letters:
    /// on a terminal, outside CI, at default verbosity.
    pub live_display: bool,
    /// `--durations N`: how many slowest phases to list.
    pub show_durations: Option<usize>,
    /// `--durations-path`: where the history lives, if not at the rootdir.
    pub durations_path: Option<PathBuf>,
    /// `--shard`: the one shard of N this run is.
    pub shard: Option<crate::shard::ShardRequest>,
    /// `--queue`: the build's shared work queue.
    pub queue: Option<crate::queue::QueueSettings>,
}

impl RunSettings {
    /// Resolves `shoal run`'s settings.
    pub fn resolve(args: RunArgs, cwd: PathBuf) -> Result<Self, ShoalError> {
        let file = file_settings(&cwd)?;
        let workers = worker_count(&args, &file)?;
        if let Some(dist) = &args.dist {
            crate::output::notice(&format!(
                "--dist {dist}: shoal schedules by past durations and keeps xdist_group tests on one worker; \
                 xdist's scheduler is not used"
            ));
        }
        let timeout = flag_or_file(
            ("--timeout", "seconds (e.g. `30`, `2.5`, `2m`)"),
            args.timeout.as_deref(),
            parse_seconds,
            file.timeout,
        )?;
        let worker_memory_limit_kib = flag_or_file(
            ("--worker-memory-limit", "a size (e.g. `500M`, `2G`)"),
            args.worker_memory_limit.as_deref(),
            parse_size_kib,
            file.worker_memory_limit,
        )?;
        let budget = flag_or_file(
            ("--budget", "a duration (e.g. `4m30s`, `270`)"),
            args.budget.as_deref(),
            parse_seconds,
            file.budget,
        )?;
        let verbosity =
            i8::try_from(args.verbose).unwrap_or(i8::MAX) - i8::try_from(args.quiet).unwrap_or(i8::MAX);
        let live_display = live_display_wanted(&args, verbosity);
        let mut queue_request = args.queue.request();
        queue_request.queue = queue_request.queue.or_else(|| file.queue.clone());
        let queue = crate::queue::resolve(queue_request, |name| std::env::var(name).ok())?;
        if queue.is_some() && args.shard.is_some() {
            return Err(ShoalError::Usage(
                "--queue and --shard split the work two ways: give one".to_owned(),
            ));
        }
        let mut collect = CollectSettings::resolve(args.selection, verbosity, &file, cwd.clone())?;
        collect.pytest_args.extend(coverage_arguments(&args.coverage));
        Ok(Self {
            collect,
            workers,
            mode: args.mode.or(file.mode).unwrap_or(WorkerMode::Auto),
            collection: args.collect.or(file.collect).unwrap_or(CollectionMode::Auto),
            max_failures: max_failures(args.maxfail, args.exit_first),
            continue_on_collection_errors: args.continue_on_collection_errors,
            max_worker_restarts: args
                .max_worker_restarts
                .or(file.max_worker_restarts)
                .unwrap_or(DEFAULT_MAX_WORKER_RESTARTS),
            json_report: args.json_report,
            junitxml: args.junitxml,
            events: args.events,
            timeline: args.timeline,
            live_display,
            colour: colour_wanted(args.color, |name| std::env::var_os(name), std::io::stdout().is_terminal()),
            immediate_failures: args.failure_output == Some(FailureOutput::Immediate),
            timeout,
            worker_memory_limit_kib,
            serial_markers: serial_markers(&file),
            last_failed: match (args.last_failed, args.failed_first) {
                (true, _) => LastFailedMode::Only,
                (false, true) => LastFailedMode::First,
                (false, false) => LastFailedMode::Off,
            },
            budget,
            reruns: args.reruns.or(file.reruns).unwrap_or(0),
            rerun_delay: args.reruns_delay.or(file.reruns_delay).unwrap_or(0.0).max(0.0),
            flaky_fails: args.flaky_fails || file.flaky_fails.unwrap_or(false),
            show_durations: args.durations,
            durations_path: args.durations_path.map(|path| cwd.join(path)),
            shard: crate::shard::ci::resolve(args.shard.as_deref(), args.shard_total, |name| {
                std::env::var(name).ok()
            })?,
            queue,
        })
    }
}

/// `-n` (capped by `--maxprocesses`), else `[tool.shoal] workers`, else the
/// CPUs this process may use.
fn worker_count(args: &RunArgs, file: &FileSettings) -> Result<usize, ShoalError> {
    let count = flag_or_file(
        ("-n/--workers", "a positive number or `auto`"),
        args.workers.as_deref(),
        WorkerCount::parse,
        file.workers,
    )?;
    let workers = match count.unwrap_or(WorkerCount::Auto) {
        WorkerCount::Fixed(n) => n,
        WorkerCount::Auto => usable_cpus(),
    };
    Ok(args.maxprocesses.map_or(workers, |most| workers.min(most.max(1))))
}

/// A flag's value read by `parse` (a usage error naming `flag` and what it
/// `expects` if it does not), else the file's.
fn flag_or_file<T>(
    (flag, expected): (&str, &str),
    typed: Option<&str>,
    parse: impl Fn(&str) -> Option<T>,
    from_file: Option<T>,
) -> Result<Option<T>, ShoalError> {
    match typed {
        Some(text) => parse(text)
            .map(Some)
            .ok_or_else(|| ShoalError::Usage(format!("{flag}: expected {expected}, got `{text}`"))),
        None => Ok(from_file),
    }
}

/// `-x` / `--maxfail`: after how many failures to stop (`--maxfail 0`: never).
fn max_failures(maxfail: Option<u64>, exit_first: bool) -> Option<u64> {
    match (maxfail, exit_first) {
        (Some(0), false) => None,
        (Some(n), _) => Some(if exit_first { 1 } else { n }),
        (None, true) => Some(1),
        (None, false) => None,
    }
}

/// A live footer: on a terminal, outside CI, at default verbosity, and with
/// stdout not shared with workers' own output (`-s`) or events, which would
/// tear it.
fn live_display_wanted(args: &RunArgs, verbosity: i8) -> bool {
    let stdout_shared =
        args.events.as_deref() == Some(Path::new("-")) || capture_is_off(&args.selection.pytest_args);
    std::io::stdout().is_terminal()
        && std::env::var_os("CI").is_none()
        && std::env::var_os("TERM").is_none_or(|term| term != "dumb")
        && verbosity == 0
        && !stdout_shared
}

/// The markers that make a test serial: `[tool.shoal] serial-markers`, else the default.
fn serial_markers(file: &FileSettings) -> Vec<String> {
    file.serial_markers
        .clone()
        .unwrap_or_else(|| DEFAULT_SERIAL_MARKERS.iter().map(|name| (*name).to_owned()).collect())
}

impl CollectSettings {
    /// Resolves `shoal plan`'s settings: what to collect, and the serial
    /// markers, which shape the partition as they shape a run's.
    pub fn resolve_for_plan(args: SelectionArgs, cwd: PathBuf) -> Result<(Self, Vec<String>), ShoalError> {
        let file = file_settings(&cwd)?;
        let markers = serial_markers(&file);
        Ok((Self::resolve(args, 0, &file, cwd)?, markers))
    }

    /// Resolves `shoal list`'s settings.
    pub fn resolve_for_list(args: SelectionArgs, cwd: PathBuf) -> Result<Self, ShoalError> {
        let file = file_settings(&cwd)?;
        Self::resolve(args, 0, &file, cwd)
    }

    fn resolve(
        args: SelectionArgs,
        verbosity: i8,
        file: &FileSettings,
        cwd: PathBuf,
    ) -> Result<Self, ShoalError> {
        let selection = Selection::resolve(&args.paths, &args.select, &cwd)?;
        let explicit = args.python.or_else(|| file.python.clone());
        let interpreter = locate_interpreter(explicit.as_deref(), &cwd);
        Ok(Self {
            cwd,
            selection,
            keyword: args.keyword,
            markers: args.markers,
            pytest_args: args.pytest_args,
            interpreter,
            verbosity,
        })
    }
}

/// pytest-cov's options spelled for pytest. A bare `--cov` comes last: it
/// would take a following word as its source.
fn coverage_arguments(coverage: &CoverageArgs) -> Vec<String> {
    let mut arguments: Vec<String> = coverage
        .sources
        .iter()
        .filter(|source| !source.is_empty())
        .map(|source| format!("--cov={source}"))
        .collect();
    arguments.extend(coverage.reports.iter().map(|report| format!("--cov-report={report}")));
    let valued = [
        ("--cov-config", &coverage.config),
        ("--cov-fail-under", &coverage.fail_under),
        ("--cov-context", &coverage.context),
        ("--cov-precision", &coverage.precision),
    ];
    arguments.extend(
        valued.into_iter().filter_map(|(flag, value)| value.as_ref().map(|value| format!("{flag}={value}"))),
    );
    let switches = [
        ("--cov-branch", coverage.branch),
        ("--cov-append", coverage.append),
        ("--no-cov-on-fail", coverage.no_cov_on_fail),
        ("--no-cov", coverage.no_cov),
    ];
    arguments.extend(switches.into_iter().filter(|(_, given)| *given).map(|(flag, _)| flag.to_owned()));
    if coverage.sources.iter().any(String::is_empty) {
        arguments.push("--cov".to_owned());
    }
    arguments
}

/// The CPUs this process may use: std honours the affinity mask and the
/// cgroup CPU quota, unlike a count of the host's cores.
pub fn usable_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// The interpreter a `shoal run` with these arguments will use, read before
/// they are parsed (to ask its pytest which options take values): `--python`
/// as typed, else the usual rules (see [`locate_interpreter`]).
pub fn interpreter_for_arguments(arguments: &[String]) -> PathBuf {
    let typed = arguments.iter().enumerate().find_map(|(index, argument)| match argument.as_str() {
        "--" => Some(None),
        "--python" => Some(arguments.get(index + 1).map(PathBuf::from)),
        _ => argument.strip_prefix("--python=").map(|value| Some(PathBuf::from(value))),
    });
    let cwd = std::env::current_dir().unwrap_or_default();
    // Quietly: the command's own resolution reads the file again and warns.
    let from_file = || file::load(&cwd, &mut |_| {}).ok().and_then(|file| file.python);
    let explicit = typed.flatten().or_else(from_file);
    locate_interpreter(explicit.as_deref(), &cwd).path
}

/// `[tool.shoal]` of the nearest pyproject.toml, its warnings printed.
fn file_settings(cwd: &Path) -> Result<FileSettings, ShoalError> {
    file::load(cwd, &mut |warning| crate::output::warn(&warning))
}

/// Whether pytest's arguments turn output capture off (`-s`,
/// `--capture=no`), so test output should reach the terminal live.
pub fn capture_is_off(arguments: &[String]) -> bool {
    arguments.iter().enumerate().any(|(index, argument)| {
        argument == "-s"
            || argument == "--capture=no"
            || (argument == "--capture" && arguments.get(index + 1).is_some_and(|value| value == "no"))
    })
}

/// Whether to colour the terminal report: `--color`, else pytest's and the
/// wider world's variables (`PY_COLORS`, `NO_COLOR`, `FORCE_COLOR`), else
/// whether stdout is a terminal (`TERM=dumb` is not).
fn colour_wanted(
    choice: Option<Colour>,
    var: impl Fn(&str) -> Option<std::ffi::OsString>,
    stdout_is_terminal: bool,
) -> bool {
    let set = |name: &str| var(name).is_some_and(|value| !value.is_empty());
    match choice {
        Some(Colour::Always) => return true,
        Some(Colour::Never) => return false,
        Some(Colour::Auto) | None => {}
    }
    if let Some(value) = var("PY_COLORS") {
        return value == "1";
    }
    if set("NO_COLOR") {
        return false;
    }
    if set("FORCE_COLOR") {
        return true;
    }
    stdout_is_terminal && var("TERM").is_none_or(|term| term != "dumb")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_follows_the_flag_then_the_environment_then_the_terminal() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(key, _)| *key == name).map(|(_, value)| (*value).into())
        };
        assert!(colour_wanted(Some(Colour::Always), env(&[("NO_COLOR", "1")]), false));
        assert!(!colour_wanted(Some(Colour::Never), env(&[]), true));
        assert!(colour_wanted(None, env(&[]), true));
        assert!(!colour_wanted(None, env(&[]), false));
        assert!(!colour_wanted(None, env(&[("NO_COLOR", "1")]), true));
        assert!(colour_wanted(None, env(&[("NO_COLOR", "")]), true), "an empty NO_COLOR is unset");
        assert!(colour_wanted(Some(Colour::Auto), env(&[("FORCE_COLOR", "1")]), false));
        assert!(!colour_wanted(None, env(&[("PY_COLORS", "0"), ("FORCE_COLOR", "1")]), true));
        assert!(!colour_wanted(None, env(&[("TERM", "dumb")]), true));
    }

    /// `shoal run <arguments>` resolved in a directory whose pyproject.toml is `pyproject`.
    fn resolved(pyproject: &str, arguments: &[&str]) -> RunSettings {
        use clap::Parser;
        let directory = tempfile::tempdir().expect("a temporary directory");
        std::fs::write(directory.path().join("pyproject.toml"), pyproject).expect("pyproject.toml written");
        let cli = crate::cli::Cli::try_parse_from(["shoal", "run"].iter().chain(arguments)).expect("parses");
        let crate::cli::Command::Run(args) = cli.command else { panic!("not run") };
        RunSettings::resolve(*args, directory.path().to_owned()).expect("resolves")
    }

    #[test]
    fn the_command_line_wins_over_the_file_which_wins_over_the_defaults() {
        let file = "[tool.shoal]\nworkers = 3\nmode = 'spawn'\ncollect = 'full'\ntimeout = '2m'\n\
                    reruns = 2\nreruns-delay = 0.5\nmax-worker-restarts = 1\nserial-markers = ['db']\n";
        let typed = [
            "-n",
            "5",
            "--mode",
            "fork",
            "--collect",
            "split",
            "--timeout",
            "5",
            "--reruns",
            "1",
            "--reruns-delay",
            "0",
            "--max-worker-restarts",
            "4",
        ];
        let flags = resolved(file, &typed);
        assert_eq!(
            (flags.workers, flags.mode, flags.collection),
            (5, WorkerMode::Fork, CollectionMode::Split)
        );
        assert_eq!((flags.timeout, flags.reruns, flags.rerun_delay), (Some(5.0), 1, 0.0));
        assert_eq!(flags.max_worker_restarts, 4);
        let from_file = resolved(file, &[]);
        assert_eq!((from_file.workers, from_file.mode), (3, WorkerMode::Spawn));
        assert_eq!(from_file.collection, CollectionMode::Full);
        assert_eq!((from_file.timeout, from_file.reruns, from_file.rerun_delay), (Some(120.0), 2, 0.5));
        assert_eq!((from_file.max_worker_restarts, from_file.serial_markers), (1, vec!["db".to_owned()]));
        let defaults = resolved("[project]\nname = 'x'\n", &[]);
        assert_eq!((defaults.workers, defaults.mode), (usable_cpus(), WorkerMode::Auto));
        assert_eq!((defaults.collection, defaults.timeout, defaults.reruns), (CollectionMode::Auto, None, 0));
        assert_eq!(defaults.max_worker_restarts, DEFAULT_MAX_WORKER_RESTARTS);
        assert_eq!(defaults.serial_markers, vec!["serial".to_owned()]);
    }
}
