//! Resolving what the user typed, the config file and defaults into one
//! concrete [`RunSettings`].
//!
//! Precedence, key by key: the command line; then the environment where an
//! option reads it (`SHOAL_PROFILE`, colour, `--shard auto`); then the
//! selected profile, the profiles it inherits, and the config file's top
//! level (`shoal.toml`, or `[tool.shoal]` in pyproject.toml: see `file`);
//! then defaults. The engine only ever sees the resolved settings, never
//! clap; every resolved value keeps where it came from
//! ([`ResolvedSetting`]), for `shoal config` and the JSON report.
//!
//! [`crate::values`] declares what each setting accepts, once for the
//! command line and the file; `layer` is one table of settings, `flags` the
//! command line as one, `file` reads the config file, `overrides` gives
//! each test its own limits.

mod affected;
mod file;
mod flags;
mod layer;
mod overrides;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

pub use self::affected::AffectedSettings;
use self::file::{ConfigFile, declared_fields};
use self::layer::Layer;
pub use self::overrides::{Overrides, TestLimits};
use crate::cli::{RunArgs, SelectionArgs};
use crate::errors::ShoalError;
use crate::python::{Interpreter, locate_interpreter};
use crate::selection::Selection;
use crate::values::WorkerCount;
pub use crate::values::{CollectionMode, Colour, FailureOutput, ResolvedSetting, WorkerMode};

/// Markers that make a test serial when `serial-markers` does not say
/// otherwise.
const DEFAULT_SERIAL_MARKERS: &[&str] = &["serial"];

/// The environment variable that names a profile when `--profile` does not.
pub const PROFILE_VARIABLE: &str = "SHOAL_PROFILE";

/// The keys whose paths may say `{profile}`.
const REPORT_KEYS: &[&str] = &["json-report", "junitxml", "events", "timeline", "durations-path"];

/// What `{profile}` in a report's path becomes when no profile is selected.
const NO_PROFILE: &str = "default";

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

/// The values a key has when nothing sets it (keys absent here have none).
fn defaults() -> Layer {
    Layer {
        workers: Some(WorkerCount::Auto),
        mode: Some(WorkerMode::Auto),
        collect: Some(CollectionMode::Auto),
        exitfirst: Some(false),
        maxfail: Some(0),
        continue_on_collection_errors: Some(false),
        max_worker_restarts: Some(DEFAULT_MAX_WORKER_RESTARTS),
        reruns: Some(0),
        reruns_delay: Some(0.0),
        flaky_fails: Some(false),
        last_failed: Some(false),
        failed_first: Some(false),
        verbosity: Some(0),
        color: Some(Colour::Auto),
        failure_output: Some(FailureOutput::Final),
        serial_markers: Some(DEFAULT_SERIAL_MARKERS.iter().map(|name| (*name).to_owned()).collect()),
        ..Layer::default()
    }
}

/// The settings of one command, stacked, and where each came from.
#[derive(Debug, Clone)]
pub struct Resolution {
    /// The selected profile, if any.
    pub profile: Option<String>,
    /// Every key with its value and source, in the order of the keys.
    pub settings: Vec<ResolvedSetting>,
    /// The config file read, if any.
    pub config_file: Option<PathBuf>,
    stacked: Layer,
}

impl Resolution {
    /// Stacks `flags` over the selected profile's chain over defaults.
    /// The profile is `typed` (`--profile`), else `SHOAL_PROFILE`.
    fn gather(
        mut flags: Layer,
        typed: Option<String>,
        cwd: &Path,
        warn: &mut dyn FnMut(String),
    ) -> Result<Self, ShoalError> {
        let from_environment = std::env::var(PROFILE_VARIABLE).ok().filter(|name| !name.is_empty());
        let profile_source = match (&typed, &from_environment) {
            (Some(_), _) => "flag --profile".to_owned(),
            (None, Some(_)) => format!("environment {PROFILE_VARIABLE}"),
            (None, None) => "default".to_owned(),
        };
        let profile = typed.or(from_environment);
        let config = file::load(cwd, warn)?;
        let chain = match &config {
            Some(config) => config.chain(profile.as_deref())?,
            None if profile.as_deref().is_some_and(|name| name != NO_PROFILE) => {
                return Err(ShoalError::Usage(format!(
                    "--profile {}: there is no config file (shoal.toml, or [tool.shoal] in pyproject.toml) here or above",
                    profile.unwrap_or_default()
                )));
            }
            None => Vec::new(),
        };
        let from_files =
            chain.iter().rev().fold(Layer::default(), |lower, table| table.layer.clone().over(lower));
        // pytest's options add up: the file's first, then those typed.
        if let (Some(typed), Some(configured)) = (&mut flags.pytest_args, &from_files.pytest_args) {
            typed.splice(0..0, configured.iter().cloned());
        }
        let stacked = flags.clone().over(from_files).over(defaults());
        let mut settings = vec![ResolvedSetting {
            key: "profile".to_owned(),
            value: profile.clone().map_or(serde_json::Value::Null, serde_json::Value::String),
            source: profile_source,
        }];
        settings.extend(sources(&stacked, &flags, &chain, config.as_ref(), cwd));
        for setting in &mut settings {
            if let serde_json::Value::String(text) = &mut setting.value
                && REPORT_KEYS.contains(&setting.key.as_str())
            {
                *text = text.replace("{profile}", profile.as_deref().unwrap_or(NO_PROFILE));
            }
        }
        Ok(Self { profile, settings, config_file: config.map(|config| config.path), stacked })
    }
}

/// Each key's value in `stacked` and the first layer that set it.
fn sources(
    stacked: &Layer,
    flags: &Layer,
    chain: &[&file::Table],
    config: Option<&ConfigFile>,
    cwd: &Path,
) -> Vec<ResolvedSetting> {
    let values: std::collections::HashMap<String, serde_json::Value> =
        stacked.set_keys().into_iter().collect();
    let typed: Vec<String> = flags.set_keys().into_iter().map(|(key, _)| key).collect();
    let shown_path =
        config.map(|config| config.path.strip_prefix(cwd).unwrap_or(&config.path).display().to_string());
    declared_fields::<Layer>()
        .iter()
        .filter(|key| **key != "inherits")
        .map(|&key| {
            let from_file = chain.iter().find_map(|table| table.lines.get(key).map(|line| (table, line)));
            let source = if typed.iter().any(|typed| typed == key) {
                format!("flag {}", flags::flag_of(key))
            } else if let Some((table, line)) = from_file {
                format!("{}:{line} {}", shown_path.as_deref().unwrap_or_default(), table.label)
            } else {
                "default".to_owned()
            };
            ResolvedSetting {
                key: key.to_owned(),
                value: values.get(key).cloned().unwrap_or(serde_json::Value::Null),
                source,
            }
        })
        .collect()
}

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
    /// Arguments for pytest, passed unchanged.
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
    /// Seconds a test may run (an override or a `timeout` marker can say
    /// otherwise per test).
    pub timeout: Option<f64>,
    /// Resident memory (KiB) past which a worker is replaced.
    pub worker_memory_limit_kib: Option<u64>,
    /// Markers that make a test serial.
    pub serial_markers: Vec<String>,
    /// `--lf` / `--ff`.
    pub last_failed: LastFailedMode,
    /// `--affected` and what goes with it; `None` when off.
    pub affected: Option<AffectedSettings>,
    /// `--budget`: seconds the whole run may take.
    pub budget: Option<f64>,
    /// `--reruns`: reruns of a failed test (overrides and markers may say
    /// otherwise per test).
    pub reruns: u8,
    /// `--reruns-delay`: seconds before a rerun.
    pub rerun_delay: f64,
    /// `--flaky-fails`: flaky tests fail the run.
    pub flaky_fails: bool,
    /// Per-test timeouts, reruns and slow timeouts.
    pub overrides: Overrides,
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
    /// The profile and every setting with its source.
    pub resolution: Resolution,
}

impl RunSettings {
    /// Resolves `shoal run`'s settings.
    pub fn resolve(args: RunArgs, cwd: PathBuf) -> Result<Self, ShoalError> {
        if let Some(dist) = &args.dist {
            crate::output::notice(&format!(
                "--dist {dist}: shoal schedules by past durations and keeps xdist_group tests on one worker; \
                 xdist's scheduler is not used"
            ));
        }
        let resolution = Resolution::gather(
            flags::run_layer(&args)?,
            args.selection.profile.clone(),
            &cwd,
            &mut |warning| crate::output::warn(&warning),
        )?;
        let layer = &resolution.stacked;
        let workers = match layer.workers.unwrap_or(WorkerCount::Auto) {
            WorkerCount::Fixed(n) => n,
            WorkerCount::Auto => usable_cpus(),
        };
        let workers = args.maxprocesses.map_or(workers, |most| workers.min(most.max(1)));
        let verbosity = layer.verbosity.unwrap_or(0);
        let mut collect = CollectSettings::from_layer(layer, verbosity, cwd.clone())?;
        collect.pytest_args.extend(coverage_arguments(layer));
        let report_path = |path: &Option<PathBuf>| {
            path.as_deref().map(|path| with_profile(path, resolution.profile.as_deref()))
        };
        let live_display = live_display_wanted(layer.events.as_deref(), &collect.pytest_args, verbosity);
        let queue = queue_settings(&args, layer)?;
        Ok(Self {
            workers,
            mode: layer.mode.unwrap_or(WorkerMode::Auto),
            collection: layer.collect.unwrap_or(CollectionMode::Auto),
            max_failures: max_failures(layer.maxfail, layer.exitfirst == Some(true)),
            continue_on_collection_errors: layer.continue_on_collection_errors == Some(true),
            max_worker_restarts: layer.max_worker_restarts.unwrap_or(DEFAULT_MAX_WORKER_RESTARTS),
            json_report: report_path(&layer.json_report),
            junitxml: report_path(&layer.junitxml),
            events: report_path(&layer.events),
            timeline: report_path(&layer.timeline),
            live_display,
            colour: colour_wanted(
                layer.color,
                |name| std::env::var_os(name),
                std::io::stdout().is_terminal(),
            ),
            immediate_failures: layer.failure_output == Some(FailureOutput::Immediate),
            timeout: layer.timeout,
            worker_memory_limit_kib: layer.worker_memory_limit,
            serial_markers: layer.serial_markers.clone().unwrap_or_default(),
            last_failed: match (layer.last_failed == Some(true), layer.failed_first == Some(true)) {
                (true, _) => LastFailedMode::Only,
                (false, true) => LastFailedMode::First,
                (false, false) => LastFailedMode::Off,
            },
            affected: AffectedSettings::from_layer(layer, &args.explain),
            budget: layer.budget,
            reruns: layer.reruns.unwrap_or(0),
            rerun_delay: layer.reruns_delay.unwrap_or(0.0).max(0.0),
            flaky_fails: layer.flaky_fails == Some(true),
            overrides: overrides_of(layer),
            show_durations: layer.durations,
            durations_path: report_path(&layer.durations_path).map(|path| cwd.join(path)),
            shard: crate::shard::ci::resolve(layer.shard.as_deref(), layer.shard_total, |name| {
                std::env::var(name).ok()
            })?,
            queue,
            collect,
            resolution,
        })
    }

    /// The selected profile's name, if one is.
    pub fn profile(&self) -> Option<&str> {
        self.resolution.profile.as_deref()
    }
}

/// `--queue` (or the file's `queue`) with its flags, against the
/// environment; refused with `--shard`.
fn queue_settings(args: &RunArgs, layer: &Layer) -> Result<Option<crate::queue::QueueSettings>, ShoalError> {
    let mut request = args.queue.request();
    request.queue.clone_from(&layer.queue);
    let queue = crate::queue::resolve(request, |name| std::env::var(name).ok())?;
    if queue.is_some() && layer.shard.is_some() {
        return Err(ShoalError::Usage("--queue and --shard split the work two ways: give one".to_owned()));
    }
    Ok(queue)
}

/// The per-test rules of a stacked layer, over its own values.
fn overrides_of(layer: &Layer) -> Overrides {
    Overrides {
        rules: layer.overrides.clone().unwrap_or_default(),
        defaults: TestLimits {
            timeout: layer.timeout,
            reruns: layer.reruns.unwrap_or(0),
            slow_timeout: layer.slow_timeout,
        },
    }
}

/// `path` with `{profile}` replaced by the profile's name (`default` when
/// none is selected).
fn with_profile(path: &Path, profile: Option<&str>) -> PathBuf {
    match path.to_str() {
        Some(text) if text.contains("{profile}") => {
            PathBuf::from(text.replace("{profile}", profile.unwrap_or(NO_PROFILE)))
        }
        _ => path.to_owned(),
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
fn live_display_wanted(events: Option<&Path>, pytest_args: &[String], verbosity: i8) -> bool {
    let stdout_shared = events == Some(Path::new("-")) || capture_is_off(pytest_args);
    std::io::stdout().is_terminal()
        && std::env::var_os("CI").is_none()
        && std::env::var_os("TERM").is_none_or(|term| term != "dumb")
        && verbosity == 0
        && !stdout_shared
}

impl CollectSettings {
    /// Resolves `shoal plan`'s settings: what to collect, and the serial
    /// markers, which shape the partition as they shape a run's.
    pub fn resolve_for_plan(args: SelectionArgs, cwd: PathBuf) -> Result<(Self, Vec<String>), ShoalError> {
        let resolution =
            Resolution::gather(flags::selection_layer(&args), args.profile, &cwd, &mut |warning| {
                crate::output::warn(&warning)
            })?;
        let markers = resolution.stacked.serial_markers.clone().unwrap_or_default();
        Ok((Self::from_layer(&resolution.stacked, 0, cwd)?, markers))
    }

    /// Resolves `shoal list`'s settings.
    pub fn resolve_for_list(args: SelectionArgs, cwd: PathBuf) -> Result<Self, ShoalError> {
        let resolution =
            Resolution::gather(flags::selection_layer(&args), args.profile, &cwd, &mut |warning| {
                crate::output::warn(&warning)
            })?;
        Self::from_layer(&resolution.stacked, 0, cwd)
    }

    fn from_layer(layer: &Layer, verbosity: i8, cwd: PathBuf) -> Result<Self, ShoalError> {
        let paths = layer.paths.clone().unwrap_or_default();
        let select = layer.select.clone().unwrap_or_default();
        let selection = Selection::resolve(&paths, &select, &cwd)?;
        let interpreter = locate_interpreter(layer.python.as_deref(), &cwd);
        Ok(Self {
            cwd,
            selection,
            keyword: layer.keyword.clone(),
            markers: layer.marker_expression.clone(),
            pytest_args: layer.pytest_args.clone().unwrap_or_default(),
            interpreter,
            verbosity,
        })
    }
}

/// One profile of the config file, for `shoal config --profiles`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileInfo {
    /// Its name.
    pub name: String,
    /// The profile it inherits, if any.
    pub inherits: Option<String>,
    /// `file:line` of its table.
    pub location: String,
}

/// The config file's profiles (none without a file), and its path.
pub fn profiles(cwd: &Path) -> Result<(Option<PathBuf>, Vec<ProfileInfo>), ShoalError> {
    let Some(config) = file::load(cwd, &mut |warning| crate::output::warn(&warning))? else {
        return Ok((None, Vec::new()));
    };
    let shown = config.path.strip_prefix(cwd).unwrap_or(&config.path).display().to_string();
    let profiles = config
        .profiles
        .iter()
        .map(|(name, table)| ProfileInfo {
            name: name.clone(),
            inherits: table.layer.inherits.clone(),
            location: format!("{shown}:{}", table.line),
        })
        .collect();
    Ok((Some(config.path), profiles))
}

/// pytest-cov's options spelled for pytest. A bare `--cov` comes last: it
/// would take a following word as its source.
fn coverage_arguments(layer: &Layer) -> Vec<String> {
    let sources = layer.cov.clone().unwrap_or_default();
    let mut arguments: Vec<String> =
        sources.iter().filter(|source| !source.is_empty()).map(|source| format!("--cov={source}")).collect();
    arguments.extend(layer.cov_report.iter().flatten().map(|report| format!("--cov-report={report}")));
    let valued = [
        ("--cov-config", layer.cov_config.clone()),
        ("--cov-fail-under", layer.cov_fail_under.map(|percent| percent.to_string())),
        ("--cov-context", layer.cov_context.clone()),
        ("--cov-precision", layer.cov_precision.map(|digits| digits.to_string())),
    ];
    arguments
        .extend(valued.into_iter().filter_map(|(flag, value)| value.map(|value| format!("{flag}={value}"))));
    let switches = [
        ("--cov-branch", layer.cov_branch),
        ("--cov-append", layer.cov_append),
        ("--no-cov-on-fail", layer.no_cov_on_fail),
        ("--no-cov", layer.no_cov),
    ];
    arguments.extend(
        switches.into_iter().filter(|(_, given)| *given == Some(true)).map(|(flag, _)| flag.to_owned()),
    );
    if sources.iter().any(String::is_empty) {
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
/// as typed, else the config file's for the profile typed, else the usual
/// rules (see [`locate_interpreter`]).
pub fn interpreter_for_arguments(arguments: &[String]) -> PathBuf {
    let typed = |flag: &str| {
        let with_equals = format!("{flag}=");
        arguments.iter().enumerate().find_map(|(index, argument)| match argument.as_str() {
            "--" => Some(None),
            word if word == flag => Some(arguments.get(index + 1).cloned()),
            _ => argument.strip_prefix(&with_equals).map(|value| Some(value.to_owned())),
        })
    };
    let cwd = std::env::current_dir().unwrap_or_default();
    let profile = typed("--profile").flatten();
    // Quietly: the command's own resolution reads the file again and warns.
    let from_file = || {
        Resolution::gather(Layer::default(), profile, &cwd, &mut |_| {})
            .ok()
            .and_then(|resolution| resolution.stacked.python)
    };
    let explicit = typed("--python").flatten().map(PathBuf::from).or_else(from_file);
    locate_interpreter(explicit.as_deref(), &cwd).path
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

#[cfg(test)]
mod profile_tests {
    use super::*;

    /// `shoal run <arguments>` resolved where pyproject.toml is `pyproject`.
    fn resolve(pyproject: &str, arguments: &[&str]) -> Result<RunSettings, String> {
        use clap::Parser;
        let directory = tempfile::tempdir().expect("a temporary directory");
        std::fs::write(directory.path().join("pyproject.toml"), pyproject).expect("pyproject.toml written");
        let cli = crate::cli::Cli::try_parse_from(["shoal", "run"].iter().chain(arguments)).expect("parses");
        let crate::cli::Command::Run(args) = cli.command else { panic!("not run") };
        RunSettings::resolve(*args, directory.path().to_owned()).map_err(|error| error.to_string())
    }

    const PROJECT: &str = "[tool.shoal]\nworkers = 2\ntimeout = 30\njson-report = 'reports/{profile}.json'\n\
                           pytest-args = ['-p', 'no:cacheprovider']\n\n\
                           [tool.shoal.profile.unit]\ntimeout = 5\nmarker-expression = 'not e2e'\n\n\
                           [tool.shoal.profile.nightly]\ninherits = 'unit'\nreruns = 3\n";

    /// The source of a key's value.
    fn source<'a>(settings: &'a RunSettings, key: &str) -> &'a str {
        let setting = settings.resolution.settings.iter().find(|setting| setting.key == key);
        &setting.unwrap_or_else(|| panic!("no {key}")).source
    }

    #[test]
    fn a_profile_stacks_over_the_top_level_and_under_the_flags() {
        let unit = resolve(PROJECT, &["--profile", "unit"]).unwrap();
        assert_eq!((unit.workers, unit.timeout), (2, Some(5.0)));
        assert_eq!(unit.collect.markers.as_deref(), Some("not e2e"));
        assert_eq!(unit.json_report, Some(PathBuf::from("reports/unit.json")));
        assert_eq!(source(&unit, "timeout"), "pyproject.toml:8 [tool.shoal.profile.unit]");
        assert_eq!(source(&unit, "workers"), "pyproject.toml:2 [tool.shoal]");
        assert_eq!(source(&unit, "profile"), "flag --profile");
        assert_eq!(source(&unit, "max-worker-restarts"), "default");

        let nightly = resolve(PROJECT, &["--profile", "nightly", "--timeout", "9", "--", "-x"]).unwrap();
        assert_eq!((nightly.timeout, nightly.reruns), (Some(9.0), 3));
        assert_eq!(nightly.collect.markers.as_deref(), Some("not e2e"), "inherited from unit");
        assert_eq!(source(&nightly, "timeout"), "flag --timeout");
        assert_eq!(source(&nightly, "reruns"), "pyproject.toml:13 [tool.shoal.profile.nightly]");
        assert_eq!(
            nightly.collect.pytest_args,
            ["-p", "no:cacheprovider", "-x"],
            "the file's, then those typed"
        );

        let none = resolve(PROJECT, &[]).unwrap();
        assert_eq!((none.profile(), none.timeout), (None, Some(30.0)));
        assert_eq!(none.json_report, Some(PathBuf::from("reports/default.json")));
        let setting = none.resolution.settings.iter().find(|setting| setting.key == "json-report").unwrap();
        assert_eq!(setting.value, serde_json::json!("reports/default.json"));
    }

    #[test]
    fn an_unknown_profile_names_the_known_ones() {
        let error = resolve(PROJECT, &["--profile", "e2e"]).unwrap_err();
        assert!(
            error.ends_with("pyproject.toml: no profile `e2e` (known profiles: nightly, unit)"),
            "{error}"
        );
        let error = resolve("[project]\nname = 'x'\n", &["--profile", "e2e"]).unwrap_err();
        assert!(error.contains("there is no config file"), "{error}");
    }

    #[test]
    fn overrides_reach_the_run_with_the_profile_values_under_them() {
        let project = "[tool.shoal.profile.e2e]\ntimeout = 60\nslow-timeout = 10\n\
                       [[tool.shoal.profile.e2e.overrides]]\nmarkers = 'e2e'\ntimeout = 120\nreruns = 2\n";
        let settings = resolve(project, &["--profile", "e2e"]).unwrap();
        assert_eq!(
            settings.overrides.defaults,
            TestLimits { timeout: Some(60.0), reruns: 0, slow_timeout: Some(10.0) }
        );
        assert_eq!(settings.overrides.rules.len(), 1);
    }
}
