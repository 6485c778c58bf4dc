//! Resolving what the user typed, `[tool.shoal]` and defaults into one
//! concrete [`RunSettings`].
//!
//! Precedence: command line, then `[tool.shoal]` in the nearest
//! `pyproject.toml` (the current directory or its ancestors), then defaults.
//! The engine only ever sees the resolved settings, never clap.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use crate::cli::{CoverageArgs, RunArgs, SelectionArgs};
use crate::errors::ShoalError;
use crate::python::{Interpreter, locate_interpreter};
use crate::selection::Selection;

/// Keys `[tool.shoal]` understands.
const KNOWN_KEYS: &[&str] = &[
    "workers",
    "python",
    "max-worker-restarts",
    "mode",
    "collect",
    "timeout",
    "worker-memory-limit",
    "serial-markers",
    "budget",
    "reruns",
    "reruns-delay",
    "flaky-fails",
];

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

/// How workers come to be (see [`crate::worker`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerMode {
    /// One process collects, then forks warm workers (the default on Linux).
    Fork,
    /// Every worker is its own pytest process that collects on its own.
    Spawn,
    /// Fork where it is safe, else spawn with a notice saying why.
    Auto,
}

/// How fork mode collects (see [`crate::runner`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CollectionMode {
    /// The zygote stops at the test files; each worker imports and collects
    /// its share of them.
    Split,
    /// The zygote imports and collects everything before forking.
    Full,
    /// Split where history says it pays, else full (the default; see
    /// [`crate::plan::split_pays`]).
    Auto,
}

impl CollectionMode {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "split" => Some(Self::Split),
            "full" => Some(Self::Full),
            "auto" => Some(Self::Auto),
            _ => None,
        }
    }
}

impl WorkerMode {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "fork" => Some(Self::Fork),
            "spawn" => Some(Self::Spawn),
            "auto" => Some(Self::Auto),
            _ => None,
        }
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
}

/// `[tool.shoal]`, as found.
#[derive(Debug, Default, Clone, PartialEq)]
struct FileSettings {
    workers: Option<WorkerCount>,
    python: Option<PathBuf>,
    max_worker_restarts: Option<u32>,
    mode: Option<WorkerMode>,
    collection: Option<CollectionMode>,
    timeout: Option<f64>,
    worker_memory_limit_kib: Option<u64>,
    serial_markers: Option<Vec<String>>,
    budget: Option<f64>,
    reruns: Option<u8>,
    rerun_delay: Option<f64>,
    flaky_fails: Option<bool>,
}

/// A worker count as typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WorkerCount {
    Auto,
    Fixed(usize),
}

fn parse_worker_count(text: &str) -> Option<WorkerCount> {
    if text == "auto" {
        return Some(WorkerCount::Auto);
    }
    text.parse::<usize>().ok().filter(|&n| n > 0).map(WorkerCount::Fixed)
}

impl RunSettings {
    /// Resolves `shoal run`'s settings.
    pub fn resolve(args: RunArgs, cwd: PathBuf) -> Result<Self, ShoalError> {
        let file = load_file_settings(&cwd)?;
        let workers = match &args.workers {
            Some(text) => parse_worker_count(text).ok_or_else(|| {
                ShoalError::Usage(format!("-n/--workers: expected a positive number or `auto`, got `{text}`"))
            })?,
            None => file.workers.unwrap_or(WorkerCount::Auto),
        };
        let workers = match workers {
            WorkerCount::Fixed(n) => n,
            WorkerCount::Auto => usable_cpus(),
        };
        let workers = args.maxprocesses.map_or(workers, |most| workers.min(most.max(1)));
        if let Some(dist) = &args.dist {
            crate::output::notice(&format!(
                "--dist {dist}: shoal schedules by past durations and keeps xdist_group tests on one worker; \
                 xdist's scheduler is not used"
            ));
        }
        let mode = match &args.mode {
            Some(text) => WorkerMode::parse(text).ok_or_else(|| {
                ShoalError::Usage(format!("--mode: expected `fork`, `spawn` or `auto`, got `{text}`"))
            })?,
            None => file.mode.unwrap_or(WorkerMode::Auto),
        };
        let collection = match &args.collect {
            Some(text) => CollectionMode::parse(text).ok_or_else(|| {
                ShoalError::Usage(format!("--collect: expected `auto`, `split` or `full`, got `{text}`"))
            })?,
            None => file.collection.unwrap_or(CollectionMode::Auto),
        };
        let timeout = match &args.timeout {
            Some(text) => Some(parse_seconds(text).ok_or_else(|| {
                ShoalError::Usage(format!(
                    "--timeout: expected seconds (e.g. `30`, `2.5`, `2m`), got `{text}`"
                ))
            })?),
            None => file.timeout,
        };
        let worker_memory_limit_kib = match &args.worker_memory_limit {
            Some(text) => Some(parse_size_kib(text).ok_or_else(|| {
                ShoalError::Usage(format!(
                    "--worker-memory-limit: expected a size (e.g. `500M`, `2G`), got `{text}`"
                ))
            })?),
            None => file.worker_memory_limit_kib,
        };
        let budget = match &args.budget {
            Some(text) => Some(parse_seconds(text).ok_or_else(|| {
                ShoalError::Usage(format!(
                    "--budget: expected a duration (e.g. `4m30s`, `270`), got `{text}`"
                ))
            })?),
            None => file.budget,
        };
        let last_failed = match (args.last_failed, args.failed_first) {
            (true, _) => LastFailedMode::Only,
            (false, true) => LastFailedMode::First,
            (false, false) => LastFailedMode::Off,
        };
        let max_failures = match (args.maxfail, args.exit_first) {
            (Some(0), false) => None,
            (Some(n), _) => Some(if args.exit_first { 1 } else { n }),
            (None, true) => Some(1),
            (None, false) => None,
        };
        // Workers' own output (`-s`) and events on stdout would tear a live footer.
        let stdout_shared =
            args.events.as_deref() == Some(Path::new("-")) || capture_is_off(&args.selection.pytest_args);
        let verbosity =
            i8::try_from(args.verbose).unwrap_or(i8::MAX) - i8::try_from(args.quiet).unwrap_or(i8::MAX);
        let mut collect = CollectSettings::resolve(args.selection, verbosity, &file, cwd.clone())?;
        collect.pytest_args.extend(coverage_arguments(&args.coverage));
        Ok(Self {
            collect,
            workers,
            mode,
            collection,
            max_failures,
            continue_on_collection_errors: args.continue_on_collection_errors,
            max_worker_restarts: args
                .max_worker_restarts
                .or(file.max_worker_restarts)
                .unwrap_or(DEFAULT_MAX_WORKER_RESTARTS),
            json_report: args.json_report,
            junitxml: args.junitxml,
            events: args.events,
            timeline: args.timeline,
            live_display: std::io::stdout().is_terminal()
                && std::env::var_os("CI").is_none()
                && std::env::var_os("TERM").is_none_or(|term| term != "dumb")
                && verbosity == 0
                && !stdout_shared,
            colour: colour_wanted(
                args.color.as_deref(),
                |name| std::env::var_os(name),
                std::io::stdout().is_terminal(),
            )?,
            immediate_failures: match args.failure_output.as_deref() {
                None | Some("final") => false,
                Some("immediate") => true,
                Some(other) => {
                    return Err(ShoalError::Usage(format!(
                        "--failure-output: expected `immediate` or `final`, got `{other}`"
                    )));
                }
            },
            timeout,
            worker_memory_limit_kib,
            serial_markers: serial_markers(&file),
            last_failed,
            budget,
            reruns: args.reruns.or(file.reruns).unwrap_or(0),
            rerun_delay: args.reruns_delay.or(file.rerun_delay).unwrap_or(0.0).max(0.0),
            flaky_fails: args.flaky_fails || file.flaky_fails.unwrap_or(false),
            show_durations: args.durations,
            durations_path: args.durations_path.map(|path| cwd.join(path)),
            shard: crate::shard::ci::resolve(args.shard.as_deref(), args.shard_total, |name| {
                std::env::var(name).ok()
            })?,
        })
    }
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
        let file = load_file_settings(&cwd)?;
        let markers = serial_markers(&file);
        Ok((Self::resolve(args, 0, &file, cwd)?, markers))
    }

    /// Resolves `shoal list`'s settings.
    pub fn resolve_for_list(args: SelectionArgs, cwd: PathBuf) -> Result<Self, ShoalError> {
        let file = load_file_settings(&cwd)?;
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

/// Seconds from `30`, `2.5` or a duration such as `2m` / `1m30s`.
fn parse_seconds(text: &str) -> Option<f64> {
    let seconds = match text.trim().parse::<f64>() {
        Ok(seconds) => seconds,
        Err(_) => humantime::parse_duration(text.trim()).ok()?.as_secs_f64(),
    };
    (seconds.is_finite() && seconds > 0.0).then_some(seconds)
}

/// KiB from a size such as `512M`, `2G`, `1.5GiB`, `800MB` or plain bytes.
fn parse_size_kib(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.trim().parse().ok()?;
    let multiplier = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0 / 1024.0,
        "k" | "kb" | "kib" => 1.0,
        "m" | "mb" | "mib" => 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0,
        _ => return None,
    };
    let kib = number * multiplier;
    (kib.is_finite() && kib >= 1.0).then_some(kib as u64)
}

/// The CPUs this process may use: std honours the affinity mask and the
/// cgroup CPU quota, unlike a count of the host's cores.
pub fn usable_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// Finds the nearest pyproject.toml from `cwd` upwards and reads its
/// `[tool.shoal]` table; no file or no table means no settings.
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
    let explicit = typed.flatten().or_else(|| load_file_settings(&cwd).ok().and_then(|file| file.python));
    locate_interpreter(explicit.as_deref(), &cwd).path
}

fn load_file_settings(cwd: &Path) -> Result<FileSettings, ShoalError> {
    for directory in cwd.ancestors() {
        let path = directory.join("pyproject.toml");
        if path.is_file() {
            let text = std::fs::read_to_string(&path)
                .map_err(|error| ShoalError::io(format!("reading {}", path.display()), error))?;
            return parse_file_settings(&text, &path);
        }
    }
    Ok(FileSettings::default())
}

fn parse_file_settings(text: &str, path: &Path) -> Result<FileSettings, ShoalError> {
    let config_error = |message: String| ShoalError::Config { path: path.to_owned(), message };
    let document: toml::Table =
        toml::from_str(text).map_err(|error| config_error(format!("not valid TOML: {error}")))?;
    let Some(table) = document.get("tool").and_then(|tool| tool.get("shoal")) else {
        return Ok(FileSettings::default());
    };
    let table = table.as_table().ok_or_else(|| config_error("[tool.shoal] must be a table".to_owned()))?;
    let mut settings = FileSettings::default();
    for (key, value) in table {
        match key.as_str() {
            "workers" => {
                let count = match value {
                    toml::Value::Integer(n) => {
                        usize::try_from(*n).ok().filter(|&n| n > 0).map(WorkerCount::Fixed)
                    }
                    toml::Value::String(text) => parse_worker_count(text),
                    _ => None,
                };
                settings.workers = Some(count.ok_or_else(|| {
                    config_error(format!(
                        "[tool.shoal] workers: expected a positive number or \"auto\", got {value}"
                    ))
                })?);
            }
            "python" => {
                let text = value.as_str().ok_or_else(|| {
                    config_error(format!("[tool.shoal] python: expected a path string, got {value}"))
                })?;
                settings.python = Some(PathBuf::from(text));
            }
            "max-worker-restarts" => {
                let count = value.as_integer().and_then(|n| u32::try_from(n).ok());
                settings.max_worker_restarts = Some(count.ok_or_else(|| {
                    config_error(format!(
                        "[tool.shoal] max-worker-restarts: expected a number of restarts, got {value}"
                    ))
                })?);
            }
            "collect" => {
                let collection = value.as_str().and_then(CollectionMode::parse);
                settings.collection = Some(collection.ok_or_else(|| {
                    config_error(format!("[tool.shoal] collect: expected \"split\" or \"full\", got {value}"))
                })?);
            }
            "mode" => {
                let mode = value.as_str().and_then(WorkerMode::parse);
                settings.mode = Some(mode.ok_or_else(|| {
                    config_error(format!(
                        "[tool.shoal] mode: expected \"fork\", \"spawn\" or \"auto\", got {value}"
                    ))
                })?);
            }
            "timeout" => {
                let seconds = match value {
                    toml::Value::Integer(n) => Some(*n as f64).filter(|n| *n > 0.0),
                    toml::Value::Float(n) => Some(*n).filter(|n| *n > 0.0),
                    toml::Value::String(text) => parse_seconds(text),
                    _ => None,
                };
                settings.timeout = Some(seconds.ok_or_else(|| {
                    config_error(format!(
                        "[tool.shoal] timeout: expected seconds (e.g. 30 or \"2m\"), got {value}"
                    ))
                })?);
            }
            "reruns" => {
                let count = value.as_integer().and_then(|n| u8::try_from(n).ok());
                settings.reruns = Some(count.ok_or_else(|| {
                    config_error(format!(
                        "[tool.shoal] reruns: expected a number of reruns (0-255), got {value}"
                    ))
                })?);
            }
            "reruns-delay" => {
                let seconds =
                    value.as_float().or_else(|| value.as_integer().map(|n| n as f64)).filter(|n| *n >= 0.0);
                settings.rerun_delay = Some(seconds.ok_or_else(|| {
                    config_error(format!("[tool.shoal] reruns-delay: expected seconds, got {value}"))
                })?);
            }
            "flaky-fails" => {
                settings.flaky_fails = Some(value.as_bool().ok_or_else(|| {
                    config_error(format!("[tool.shoal] flaky-fails: expected true or false, got {value}"))
                })?);
            }
            "serial-markers" => {
                let names: Option<Vec<String>> = value
                    .as_array()
                    .and_then(|items| items.iter().map(|item| item.as_str().map(str::to_owned)).collect());
                settings.serial_markers = Some(names.ok_or_else(|| {
                    config_error(format!(
                        "[tool.shoal] serial-markers: expected a list of marker names, got {value}"
                    ))
                })?);
            }
            "budget" => {
                let seconds = match value {
                    toml::Value::Integer(n) => Some(*n as f64).filter(|n| *n > 0.0),
                    toml::Value::Float(n) => Some(*n).filter(|n| *n > 0.0),
                    toml::Value::String(text) => parse_seconds(text),
                    _ => None,
                };
                settings.budget = Some(seconds.ok_or_else(|| {
                    config_error(format!(
                        "[tool.shoal] budget: expected a duration (e.g. \"4m30s\"), got {value}"
                    ))
                })?);
            }
            "worker-memory-limit" => {
                let kib = value.as_str().and_then(parse_size_kib);
                settings.worker_memory_limit_kib = Some(kib.ok_or_else(|| {
                    config_error(format!(
                        "[tool.shoal] worker-memory-limit: expected a size such as \"500M\", got {value}"
                    ))
                })?);
            }
            unknown => crate::output::warn(&format!(
                "{}: [tool.shoal] has an unknown key `{unknown}` (known: {})",
                path.display(),
                KNOWN_KEYS.join(", ")
            )),
        }
    }
    Ok(settings)
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
    choice: Option<&str>,
    var: impl Fn(&str) -> Option<std::ffi::OsString>,
    stdout_is_terminal: bool,
) -> Result<bool, ShoalError> {
    let set = |name: &str| var(name).is_some_and(|value| !value.is_empty());
    match choice {
        Some("always" | "yes") => return Ok(true),
        Some("never" | "no") => return Ok(false),
        Some("auto") | None => {}
        Some(other) => {
            return Err(ShoalError::Usage(format!(
                "--color: expected `auto`, `always` or `never`, got `{other}`"
            )));
        }
    }
    if let Some(value) = var("PY_COLORS") {
        return Ok(value == "1");
    }
    if set("NO_COLOR") {
        return Ok(false);
    }
    if set("FORCE_COLOR") {
        return Ok(true);
    }
    Ok(stdout_is_terminal && var("TERM").is_none_or(|term| term != "dumb"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FileSettings, String> {
        parse_file_settings(text, Path::new("pyproject.toml")).map_err(|error| error.to_string())
    }

    #[test]
    fn reads_the_tool_shoal_table() {
        let settings = parse(
            "[project]\nname='x'\n[tool.shoal]\nworkers = 3\npython = '.venv/bin/python'\nmax-worker-restarts = 2\nmode = 'spawn'\n",
        )
        .unwrap();
        assert_eq!(settings.workers, Some(WorkerCount::Fixed(3)));
        assert_eq!(settings.python, Some(PathBuf::from(".venv/bin/python")));
        assert_eq!(settings.max_worker_restarts, Some(2));
        assert_eq!(settings.mode, Some(WorkerMode::Spawn));
        assert_eq!(parse("[tool.shoal]\nworkers = 'auto'\n").unwrap().workers, Some(WorkerCount::Auto));
    }

    #[test]
    fn no_table_means_defaults() {
        assert_eq!(parse("[tool.other]\nx = 1\n").unwrap(), FileSettings::default());
    }

    #[test]
    fn bad_values_name_the_file_and_key() {
        assert_eq!(
            parse("[tool.shoal]\nworkers = 0\n").unwrap_err(),
            "pyproject.toml: [tool.shoal] workers: expected a positive number or \"auto\", got 0"
        );
        assert!(parse("[tool.shoal\n").unwrap_err().starts_with("pyproject.toml: not valid TOML"));
    }

    #[test]
    fn timeouts_and_sizes_parse_in_the_usual_spellings() {
        assert_eq!(parse_seconds("30"), Some(30.0));
        assert_eq!(parse_seconds("2.5"), Some(2.5));
        assert_eq!(parse_seconds("1m30s"), Some(90.0));
        assert_eq!(parse_seconds("0"), None);
        assert_eq!(parse_seconds("soon"), None);
        assert_eq!(parse_size_kib("500M"), Some(500 * 1024));
        assert_eq!(parse_size_kib("2G"), Some(2 * 1024 * 1024));
        assert_eq!(parse_size_kib("1.5GiB"), Some(1536 * 1024));
        assert_eq!(parse_size_kib("1048576"), Some(1024));
        assert_eq!(parse_size_kib("12 parsecs"), None);
    }

    #[test]
    fn worker_counts_parse_auto_and_positive_numbers() {
        assert_eq!(parse_worker_count("auto"), Some(WorkerCount::Auto));
        assert_eq!(parse_worker_count("12"), Some(WorkerCount::Fixed(12)));
        assert_eq!(parse_worker_count("0"), None);
        assert_eq!(parse_worker_count("-2"), None);
    }

    #[test]
    fn colour_follows_the_flag_then_the_environment_then_the_terminal() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(key, _)| *key == name).map(|(_, value)| (*value).into())
        };
        assert!(colour_wanted(Some("always"), env(&[("NO_COLOR", "1")]), false).unwrap());
        assert!(!colour_wanted(Some("no"), env(&[]), true).unwrap());
        assert!(colour_wanted(None, env(&[]), true).unwrap());
        assert!(!colour_wanted(None, env(&[]), false).unwrap());
        assert!(!colour_wanted(None, env(&[("NO_COLOR", "1")]), true).unwrap());
        assert!(colour_wanted(None, env(&[("NO_COLOR", "")]), true).unwrap(), "an empty NO_COLOR is unset");
        assert!(colour_wanted(Some("auto"), env(&[("FORCE_COLOR", "1")]), false).unwrap());
        assert!(!colour_wanted(None, env(&[("PY_COLORS", "0"), ("FORCE_COLOR", "1")]), true).unwrap());
        assert!(!colour_wanted(None, env(&[("TERM", "dumb")]), true).unwrap());
        let error = colour_wanted(Some("sometimes"), env(&[]), true).unwrap_err();
        assert!(error.to_string().contains("--color"), "{error}");
    }
}
