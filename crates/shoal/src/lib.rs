//! shoal: a parallel test runner for pytest suites.
//!
//! The flow: [`cli`] holds what was typed; [`settings`] resolves it with
//! `[tool.shoal]` and defaults; [`selection`] reads selection files;
//! [`python`] finds the interpreter and installs the worker plugin;
//! [`runner`] starts [`worker`]s, checks their collections and drives the
//! pure scheduler (`shoal-scheduler`) over the [`protocol`]; [`report`]ers
//! render the results. [`shard`] splits a suite over CI machines and
//! [`merge`] combines their reports. [`main`] maps everything to pytest's
//! exit codes.

pub mod cli;
pub mod coverage;
pub mod errors;
pub mod fs;
pub mod history;
pub mod lastfailed;
pub mod merge;
pub mod output;
pub mod plan;
pub mod protocol;
pub mod pytest_args;
pub mod python;
pub mod report;
pub mod results;
pub mod runner;
pub mod selection;
pub mod settings;
pub mod shard;
pub mod table;
pub mod worker;

use clap::{CommandFactory, Parser};

use crate::cli::{Cli, Command};
use crate::errors::{ShoalError, exit_code};
use crate::report::Reporter;
use crate::report::events::EventsReporter;
use crate::report::github::GithubReporter;
use crate::report::json::JsonReporter;
use crate::report::junit::JunitReporter;
use crate::report::terminal::TerminalReporter;
use crate::report::timeline::TimelineReporter;
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

/// pytest itself, in this terminal, for a mode that runs no test or needs
/// one process; after `--help`, shoal's own options follow pytest's.
fn run_pytest_in_place(collect: &CollectSettings, reason: pytest_args::InPlace) -> Result<u8, ShoalError> {
    if let pytest_args::InPlace::OneProcess(option) = reason {
        output::notice(&format!(
            "{option}: running the selected tests in one pytest process in this terminal"
        ));
    }
    let code = runner::run_pytest_in_place(collect)?;
    if reason == pytest_args::InPlace::Help {
        let mut command = Cli::command();
        if let Some(run) = command.find_subcommand_mut("run") {
            println!("\nshoal run's own options (pytest's are above):\n\n{}", run.render_help());
        }
    }
    Ok(code)
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

fn dispatch(cli: Cli) -> Result<u8, ShoalError> {
    let cwd =
        std::env::current_dir().map_err(|error| ShoalError::io("reading the current directory", error))?;
    match cli.command {
        Command::Run(args) => {
            let settings = RunSettings::resolve(*args, cwd)?;
            if let Some(reason) = pytest_args::in_place(&settings.collect.pytest_args) {
                return run_pytest_in_place(&settings.collect, reason);
            }
            let full_messages = std::env::var_os("CI").is_some()
                || std::env::var_os("BUILD_NUMBER").is_some()
                || settings.collect.verbosity >= 2;
            let terminal = TerminalReporter::new(
                std::io::stdout().lock(),
                TerminalReporter::<std::io::Stdout>::detect_width(),
                settings.collect.verbosity,
                full_messages,
            )
            .with_durations(settings.show_durations)
            .with_colour(settings.colour)
            .with_immediate_failures(settings.immediate_failures)
            .with_live_display(settings.live_display);
            let mut reporters: Vec<Box<dyn Reporter>> = vec![Box::new(terminal)];
            if let Some(path) = &settings.json_report {
                reporters.push(Box::new(JsonReporter::new(settings.collect.cwd.join(path))));
            }
            if let Some(path) = &settings.events {
                let out: Box<dyn std::io::Write> = if path.as_os_str() == "-" {
                    Box::new(std::io::stdout())
                } else {
                    let path = settings.collect.cwd.join(path);
                    let file = std::fs::File::create(&path)
                        .map_err(|error| ShoalError::io(format!("creating {}", path.display()), error))?;
                    Box::new(std::io::BufWriter::new(file))
                };
                reporters.push(Box::new(EventsReporter::new(out)));
            }
            if let Some(github) = GithubReporter::from_environment(std::io::stdout(), &settings.collect.cwd) {
                reporters.push(Box::new(github));
            }
            if let Some(path) = &settings.timeline {
                reporters.push(Box::new(TimelineReporter::new(settings.collect.cwd.join(path))));
            }
            if let Some(path) = &settings.junitxml {
                reporters.push(Box::new(JunitReporter::new(settings.collect.cwd.join(path))));
            }
            runner::run(&settings, &mut reporters)
        }
        Command::Plan(args) => {
            let durations_path = args.durations_path.as_ref().map(|path| cwd.join(path));
            let shards = args.shards as usize;
            let (settings, serial_markers) = CollectSettings::resolve_for_plan(args.selection, cwd)?;
            shard::plan_command(
                &settings,
                shards,
                durations_path.as_deref(),
                &serial_markers,
                &mut std::io::stdout().lock(),
            )
        }
        Command::Merge(args) => merge::merge_command(&args, &cwd),
        Command::List(args) => {
            let json = args.json;
            let settings = CollectSettings::resolve_for_list(args.selection, cwd)?;
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            match runner::list(&settings, json, &mut out) {
                // `shoal list | head` closing the pipe early is not an error.
                Err(ShoalError::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => {
                    Ok(exit_code::OK)
                }
                result => result,
            }
        }
    }
}
