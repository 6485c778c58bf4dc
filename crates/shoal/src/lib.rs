//! shoal: a parallel test runner for pytest suites.
//!
//! Layers, each using only those below it (`tests/architecture.rs` checks
//! there is no cycle):
//! - [`commands`]: `run` (in phases), `list`, `plan`, `merge`, `report`, `replay`, `why`, `config`, each a thin
//!   composition of the layers below; this file only dispatches to them.
//! - [`report`]: reporters, fed by the run's events (terminal, JSON, JUnit,
//!   GitHub, timeline, event stream); only the commands build them.
//! - [`pool`]: the worker processes and the collection phase, over
//!   [`worker`] (one process, its pipes and signals) and [`protocol`].
//! - [`plan`], [`shard`], [`history`], [`lastfailed`], [`coverage`]: what
//!   the scheduler is given, the partition across machines, what the run
//!   remembers.
//! - [`results`]: the results model every consumer shares (outcomes,
//!   records, the run's header and summary); [`table`]: the collected tests.
//! - [`settings`] resolves [`cli`] with the config file's profiles and defaults, both
//!   typed with the words [`values`] declares once;
//!   [`selection`], [`pytest_args`], [`python`]: their inputs.
//! - Shared mechanics: [`fs`] (atomic writes), [`output`], [`errors`]
//!   (pytest's exit codes).
//!
//! The pure scheduler is its own crate, `shoal-scheduler`.

pub mod affected;
pub mod cli;
pub mod commands;
pub mod coverage;
pub mod errors;
pub mod fs;
pub mod history;
pub mod lastfailed;
pub mod output;
pub mod plan;
pub mod pool;
pub mod protocol;
pub mod pytest_args;
pub mod python;
pub mod queue;
pub mod report;
pub mod results;
pub mod selection;
pub mod settings;
pub mod shard;
pub mod table;
pub mod values;
pub mod worker;

use clap::{CommandFactory, Parser};

use crate::cli::{Cli, Command};
use crate::errors::{ShoalError, exit_code};
use crate::settings::{CollectSettings, RunSettings};

/// Runs shoal with these command-line arguments and returns the exit code.
pub fn main(arguments: impl IntoIterator<Item = std::ffi::OsString>) -> u8 {
    let cli = match Cli::try_parse_from(with_pytest_arguments_apart(arguments.into_iter().collect())) {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() { exit_code::USAGE_ERROR } else { exit_code::OK };
        }
    };
    match dispatch(cli) {
        Ok(code) => code,
        Err(error) => {
            output::error(&error.to_string());
            error.exit_code()
        }
    }
}

/// `shoal run` takes pytest's options as `pytest` does, anywhere among its
/// own: they are moved behind a `--` for clap (see [`pytest_args`]).
fn with_pytest_arguments_apart(arguments: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let Some(words) =
        arguments.iter().map(|word| word.to_str().map(str::to_owned)).collect::<Option<Vec<String>>>()
    else {
        return arguments;
    };
    if !matches!(words.get(1).map(String::as_str), Some("run" | "pytest")) {
        return arguments;
    }
    let command = Cli::command();
    let own = pytest_args::OwnOptions::of(command.find_subcommand("run").expect("shoal has a run command"));
    let mut table = None;
    let mut takes_value = |option: &str| {
        table
            .get_or_insert_with(|| {
                let python = settings::interpreter_for_arguments(&words[2..]);
                pytest_args::PytestOptions::load(&python, &python::cache_root())
            })
            .takes_value(option)
    };
    let split = pytest_args::split(&words[2..], &own, &mut takes_value);
    words[..2].iter().cloned().chain(split).map(std::ffi::OsString::from).collect()
}

/// `shoal report` (or `shoal merge --queue`), with its JUnit, JSON report
/// and durations history paths.
fn queued_report(
    queue: cli::QueueArgs,
    outputs: cli::OutputArgs,
    cwd: &std::path::Path,
) -> Result<u8, ShoalError> {
    let queue = queue::resolve(queue.request(), |name| std::env::var(name).ok())?
        .ok_or_else(|| ShoalError::Usage("shoal report needs --queue URL and --build ID".to_owned()))?;
    commands::report::report(&commands::report::ReportInputs {
        queue,
        junitxml: outputs.junitxml.map(|path| cwd.join(path)),
        json_report: outputs.json_report.map(|path| cwd.join(path)),
        durations_path: cwd.join(outputs.durations_path.unwrap_or_else(|| ".test_durations".into())),
    })
}

fn dispatch(cli: Cli) -> Result<u8, ShoalError> {
    let cwd =
        std::env::current_dir().map_err(|error| ShoalError::io("reading the current directory", error))?;
    match cli.command {
        Command::Run(args) => commands::run::command(&RunSettings::resolve(*args, cwd)?),
        Command::Plan(args) => {
            let durations_path = args.durations_path.as_ref().map(|path| cwd.join(path));
            let shards = args.shards as usize;
            let (settings, serial_markers) = CollectSettings::resolve_for_plan(args.selection, cwd)?;
            commands::plan::plan(
                &settings,
                shards,
                durations_path.as_deref(),
                &serial_markers,
                &mut std::io::stdout().lock(),
            )
        }
        Command::Replay(args) => commands::replay::replay(&commands::replay::ReplayInputs {
            report: cwd.join(&args.report),
            nodeid: args.nodeid,
            interpreter: python::locate_interpreter(args.python.as_deref(), &cwd),
            cwd,
            print_only: args.print,
            pytest_args: args.pytest_args,
        }),
        Command::Merge(args) if args.queue.queue.is_some() => queued_report(args.queue, args.outputs, &cwd),
        Command::Merge(args) => commands::merge::merge(&commands::merge::MergeInputs {
            reports: args.reports.iter().map(|path| cwd.join(path)).collect(),
            junitxml: args.outputs.junitxml.map(|path| cwd.join(path)),
            json_report: args.outputs.json_report.map(|path| cwd.join(path)),
            durations_path: args.outputs.durations_path.map(|path| cwd.join(path)),
        }),
        Command::Report(args) => queued_report(args.queue, args.outputs, &cwd),
        Command::Why(args) => {
            let (settings, options) = CollectSettings::resolve_for_why(args, cwd)?;
            commands::why::why(&settings, &options, &mut std::io::stdout().lock())
        }
        Command::Config(args) => {
            let stdout = std::io::stdout();
            commands::config::config(*args, cwd, &mut stdout.lock())
        }
        Command::List(args) => {
            let json = args.json;
            let settings = CollectSettings::resolve_for_list(args.selection, cwd)?;
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            match commands::list::list(&settings, json, &mut out) {
                // `shoal list | head` closing the pipe early is not an error.
                Err(ShoalError::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => {
                    Ok(exit_code::OK)
                }
                result => result,
            }
        }
    }
}
