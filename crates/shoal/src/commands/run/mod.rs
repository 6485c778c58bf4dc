//! `shoal run`: the run, in phases with typed hand-offs.
//!
//! Start the workers and collect ([`crate::pool`], asking `planner`
//! whether to split collection), learn pytest's own settings from the
//! collecting process once (`Learned`), then:
//! `select` (`--lf`, `--shard`, then `affected` for `--affected`) → `prepare` (the workload and the
//! header) → `drive` (the scheduling loop, to every test's final record)
//! → `conclude` (remember durations and failures; exit code, coverage and
//! summary).

pub(crate) mod affected;
mod conclude;
mod drive;
mod planner;
mod prepare;
mod queued;
mod select;

use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use clap::CommandFactory;

use crate::cli::Cli;
use crate::coverage::CoverageRun;
use crate::errors::{ShoalError, exit_code};
use crate::lastfailed::LastFailed;
use crate::pool::{CollectionEnd, Pool, run_directory, worker_spec};
use crate::protocol::{CoverageOptions, Hello};
use crate::pytest_args::InPlace;
use crate::report::Reporter;
use crate::report::events::EventsReporter;
use crate::report::github::GithubReporter;
use crate::report::json::JsonReporter;
use crate::report::junit::JunitReporter;
use crate::report::terminal::TerminalReporter;
use crate::report::timeline::TimelineReporter;
use crate::results::Tally;
use crate::settings::{CollectSettings, RunSettings};

use self::conclude::Ending;
use self::drive::DriveStart;
use self::planner::RunPlanner;
use self::prepare::RunStart;

/// `shoal run`: pytest in place for its modes that run no test, else the
/// run with the reporters the settings ask for.
pub fn command(settings: &RunSettings) -> Result<u8, ShoalError> {
    if let Some(reason) = crate::pytest_args::in_place(&settings.collect.pytest_args) {
        return pytest_in_place(&settings.collect, reason);
    }
    let mut reporters = reporters(settings)?;
    run(settings, &mut reporters)
}

/// The reporters the settings ask for: the terminal always.
fn reporters(settings: &RunSettings) -> Result<Vec<Box<dyn Reporter>>, ShoalError> {
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
    .to_terminal(std::io::IsTerminal::is_terminal(&std::io::stdout()))
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
    Ok(reporters)
}

/// pytest itself, in this terminal, for a mode that runs no test or needs
/// one process; after `--help`, shoal's own options follow pytest's.
fn pytest_in_place(collect: &CollectSettings, reason: InPlace) -> Result<u8, ShoalError> {
    if let InPlace::OneProcess(option) = reason {
        crate::output::notice(&format!(
            "{option}: running the selected tests in one pytest process in this terminal"
        ));
    }
    let code = run_pytest_in_place(collect)?;
    if reason == InPlace::Help {
        let mut command = Cli::command();
        if let Some(run) = command.find_subcommand_mut("run") {
            println!("\nshoal run's own options (pytest's are above):\n\n{}", run.render_help());
        }
    }
    Ok(code)
}

/// Runs pytest itself, in this terminal, for what shoal would only get in
/// the way of: pytest's modes that run no test (`--co`, `--fixtures`,
/// `--markers`, ...: their output is pytest's, exactly) and those that need
/// one process (`--pdb`, `--trace`, `--setup-show`, `--sw`). Returns
/// pytest's exit code.
pub fn run_pytest_in_place(collect: &CollectSettings) -> Result<u8, ShoalError> {
    collect.interpreter.run_pytest_here(&collect.pytest_arguments(&collect.pytest_args), &collect.cwd)
}

/// pytest's own settings that shoal honours, from its command line, ini
/// file or plugins, as the collecting process reported them in `hello`:
/// learnt once, here.
pub(super) struct Learned {
    /// `-x`/`--maxfail`: shoal's own flag, else pytest's.
    max_failures: Option<u64>,
    /// `--continue-on-collection-errors`, shoal's or pytest's.
    continue_on_collection_errors: bool,
    /// pytest's last-failed record, when its cache plugin is on.
    last_failed: Option<LastFailed>,
    /// pytest's own `--junitxml`, when shoal was not given one: written too.
    pytest_junitxml: Option<PathBuf>,
    /// pytest-cov's options, with `--cov`.
    coverage: Option<CoverageOptions>,
}

impl Learned {
    fn new(settings: &RunSettings, hello: &Hello) -> Self {
        Self {
            max_failures: settings.max_failures.or((hello.maxfail > 0).then_some(hello.maxfail)),
            continue_on_collection_errors: settings.continue_on_collection_errors
                || hello.continue_on_collection_errors,
            last_failed: hello
                .cache_dir
                .as_deref()
                .map(|directory| LastFailed::load(std::path::Path::new(directory))),
            pytest_junitxml: hello
                .junitxml
                .as_ref()
                .filter(|_| settings.junitxml.is_none())
                .map(PathBuf::from),
            coverage: hello.coverage.clone(),
        }
    }
}

/// The whole run, phase by phase; returns the exit code.
fn run(settings: &RunSettings, reporters: &mut [Box<dyn Reporter>]) -> Result<u8, ShoalError> {
    let clock = Instant::now();
    let started_at = SystemTime::now();
    // An unreachable queue fails before anything starts.
    let session = settings.queue.as_ref().map(crate::queue::Session::connect).transpose()?;
    let run_directory = run_directory()?;
    let spec = run_spec(settings, run_directory.path())?;
    let shards = spec.affected_directory.clone();
    let hash_seed = spec.hash_seed.clone();
    let coverage = CoverageRun::new(
        spec.python.clone(),
        spec.plugin_dir.clone(),
        spec.working_directory.clone(),
        spec.coverage_directory.clone(),
    );
    coverage.prepare()?;
    let mut pool = Pool::new(spec, settings.collect.interpreter.origin);
    let mut planner = RunPlanner::new(settings);
    let mut collected =
        match pool.start_and_collect(settings.mode, settings.workers, &settings.collect, &mut planner)? {
            CollectionEnd::Done(collected) => collected,
            CollectionEnd::Interrupted => {
                pool.kill_all();
                return Ok(exit_code::INTERRUPTED);
            }
        };
    announce_plugin_limits(&collected.hello);
    let mut learned = Learned::new(settings, &collected.hello);
    let history = planner.into_history(&collected.hello.environment.rootdir);
    let table = std::mem::take(&mut collected.table);
    let mut selected = select::select(settings, table, learned.last_failed.as_ref(), &history)?;
    let affected_run = (settings.affected.as_ref().zip(shards)).map(|(options, shards)| {
        affected::narrow(options, settings, &collected.hello, &mut selected, shards)
    });
    let start = RunStart { clock, started_at, hash_seed, workers: pool.slots.len() };
    let mut prepared = prepare::prepare(settings, &learned, &collected, &selected, &history, &start)?;
    if let Some(affected_run) = &affected_run {
        prepared.header.selected = affected_run.selected_count();
    }
    let tally = start_reports(reporters, &prepared.header, &collected, affected_run.as_ref());
    let mut feed = join_queue(session, &collected, &learned, &selected.table, &prepared, pool.slots.len())?;
    let drive_start = DriveStart {
        table: selected.table,
        whole_collection: selected.whole_collection,
        tally,
        warnings: std::mem::take(&mut collected.warnings),
        workload: prepared.workload,
        test_files: prepared.test_files,
        collect_errors: collected.collect_errors(),
        slow_timeouts: prepared.slow_timeouts,
        clock,
        reporters: &mut *reporters,
        source: feed.as_mut().map(|feed| feed as &mut dyn drive::WorkSource),
        reported_before: affected_run.as_ref().map_or(0, affected::AffectedRun::cached_count),
    };
    let mut results = drive::run_tests(&mut pool, settings, &learned, drive_start)?;
    if let Some(feed) = feed {
        queued::conclude(feed, &mut results)?;
    }
    if let Some(affected_run) = affected_run {
        affected_run.finish(&mut results);
    }
    let order_notices = conclude::order_notices(settings, learned.last_failed.as_ref(), &history, &results);
    results.notices.extend(order_notices);
    results.notices.extend(conclude::slow_notices(&history, &results));
    conclude::remember(settings, &collected, &results, history, learned.last_failed.take());
    let ending = Ending {
        settings,
        clock,
        header: &prepared.header,
        collected: &collected,
        startup_seconds: prepared.startup_seconds,
        coverage: learned.coverage.as_ref().map(|options| (options, &coverage)),
        pytest_junitxml: learned.pytest_junitxml.as_deref(),
    };
    let exit = conclude::conclude(&ending, &results, reporters, || drive::shut_down(&mut pool));
    drive::shut_down(&mut pool);
    exit
}

/// The workers' specification (with `--affected`, where they record).
fn run_spec(
    settings: &RunSettings,
    run_directory: &std::path::Path,
) -> Result<crate::worker::WorkerSpec, ShoalError> {
    let mut spec = worker_spec(
        &settings.collect,
        settings.workers,
        settings.worker_memory_limit_kib,
        &settings.serial_markers,
        run_directory,
    )?;
    spec.affected_directory = affected::shards_directory(settings, run_directory)?;
    spec.last_failed_only = settings.last_failed == crate::settings::LastFailedMode::Only;
    Ok(spec)
}

/// Tells the reporters the run starts (and, with `--affected`, of the
/// cached tests); returns the closing line's counts so far.
fn start_reports(
    reporters: &mut [Box<dyn Reporter>],
    header: &crate::results::RunHeader,
    collected: &crate::pool::Collected,
    affected_run: Option<&affected::AffectedRun>,
) -> Tally {
    for reporter in reporters.iter_mut() {
        reporter.run_started(header);
    }
    let mut tally = Tally::default();
    for report in &collected.collect_reports {
        tally.add(&report.category, 1);
    }
    if let Some(affected_run) = affected_run {
        affected_run.report_cached(reporters, &mut tally);
    }
    tally
}

/// With `--queue`, joins the build (unless collection errors stop the run
/// before any test).
fn join_queue(
    session: Option<crate::queue::Session>,
    collected: &crate::pool::Collected,
    learned: &Learned,
    table: &crate::table::TestTable,
    prepared: &prepare::Prepared,
    workers: usize,
) -> Result<Option<queued::QueueFeed>, ShoalError> {
    let stops_at_collection = collected.collect_errors() > 0 && !learned.continue_on_collection_errors;
    let Some(session) = session.filter(|_| !stops_at_collection) else { return Ok(None) };
    let header = &prepared.header;
    queued::QueueFeed::join(session, table, &collected.collect_reports, header, &prepared.workload, workers)
        .map(Some)
}

/// One line for each plugin that cannot do under shoal what it does alone.
fn announce_plugin_limits(hello: &Hello) {
    if let Some(path) = &hello.html_report {
        crate::output::notice(&format!(
            "pytest-html: {path} is not written (its report is built in one process from every test's \
             report); use --junitxml or --json-report"
        ));
    }
    if hello.environment.plugins.iter().any(|plugin| plugin.starts_with("syrupy-")) {
        crate::output::notice(
            "syrupy: its snapshot report, the unused-snapshot check and their removal by --snapshot-update \
             need pytest-xdist's controller and are not done; snapshots are still compared and written",
        );
    }
    if hello.benchmarks_disabled {
        crate::output::notice(
            "pytest-benchmark: benchmarks are disabled, as under pytest-xdist (they cannot be timed \
             reliably in parallel); run them with plain pytest",
        );
    }
}
