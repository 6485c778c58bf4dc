//! The run: one event loop that owns the truth of the run.
//!
//! It starts the workers, waits for their collections and checks they agree,
//! then feeds every worker event to the [`Scheduler`] and carries out the
//! actions it returns: commands to workers, replacements, final outcomes.
//! Reporters see the results; they never steer the run. Signals arrive on the
//! same queue as worker events: the first Ctrl-C stops scheduling and gives
//! running tests a short grace, the second kills every worker at once.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;
use shoal_scheduler::{Action, Event, RetryCause, Scheduler, SchedulerConfig, TestId};

use clap::CommandFactory;

use crate::cli::Cli;
use crate::coverage::{CoverageReport, CoverageRun};
use crate::errors::{ShoalError, exit_code};
use crate::history::{History, HistoryPaths};
use crate::lastfailed::LastFailed;
use crate::plan;
use crate::protocol::{Hello, PhaseReport, WarningMessage, WorkerCommand, WorkerMessage};
use crate::pytest_args::InPlace;
use crate::report::Reporter;
use crate::report::events::EventsReporter;
use crate::report::github::GithubReporter;
use crate::report::json::JsonReporter;
use crate::report::junit::JunitReporter;
use crate::report::terminal::TerminalReporter;
use crate::report::timeline::TimelineReporter;
use crate::results::{
    CrashDetails, Expectation, RunHeader, RunStats, RunSummary, StopReason, TestDetails, TestRecord, TestView,
};
use crate::results::{Outcome, Tally, outcome_from_reports};
use crate::settings::{CollectSettings, CollectionMode, LastFailedMode, RunSettings};
use crate::table::TestTable;
use crate::worker::{WorkerEvent, WorkerKey, Zygote, describe_exit};

use crate::pool::{
    CollectionEnd, CollectionPlanner, Pool, SlotPhase, check_same_collection, run_directory, worker_spec,
};

/// How long running tests get to finish after the first Ctrl-C.
const INTERRUPT_GRACE: Duration = Duration::from_secs(5);

/// How long workers get to exit after their last test before being killed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Runs pytest itself, in this terminal, for what shoal would only get in
/// the way of: pytest's modes that run no test (`--co`, `--fixtures`,
/// `--markers`, ...: their output is pytest's, exactly) and those that need
/// one process (`--pdb`, `--trace`, `--setup-show`, `--sw`). Returns
/// pytest's exit code.
pub fn run_pytest_in_place(collect: &CollectSettings) -> Result<u8, ShoalError> {
    let status = std::process::Command::new(&collect.interpreter.path)
        .args(["-m", "pytest"])
        .args(collect.pytest_arguments(&collect.pytest_args))
        .current_dir(&collect.cwd)
        .status()
        .map_err(|source| ShoalError::PythonNotStartable {
            python: collect.interpreter.path.clone(),
            origin: collect.interpreter.origin,
            source,
        })?;
    Ok(status.code().and_then(|code| u8::try_from(code).ok()).unwrap_or(exit_code::INTERNAL_ERROR))
}

/// The state of a run once tests are known.
struct Run<'a> {
    table: TestTable,
    /// The whole collection when `--lf` runs part of it: what a
    /// replacement worker's collection is checked against.
    whole_collection: Option<TestTable>,
    /// Every test's record; a test is final once `is_final` says so.
    records: Vec<TestRecord>,
    is_final: Vec<bool>,
    done: usize,
    /// The closing line's counts, added up as reports arrive.
    tally: Tally,
    warnings: Vec<WarningMessage>,
    reporters: &'a mut [Box<dyn Reporter>],
    /// `(worker slot, test)` in the order tests finished.
    execution_order: Vec<(u16, u32)>,
    /// Latest CPU seconds and peak memory (KiB) of each worker process.
    usage: HashMap<WorkerKey, (f64, u64)>,
    /// When the run started: the scheduler's clock counts from here.
    clock: Instant,
    /// `--timeout`, for tests without a marker of their own.
    default_timeout: Option<f64>,
    /// The last test each slot finished, with its memory after it (KiB).
    last_finished: HashMap<usize, (TestId, u64)>,
    /// What the summary should mention (replaced workers, leaked processes).
    notices: Vec<String>,
    /// Failed attempts of tests waiting for a rerun, oldest first.
    attempts: HashMap<TestId, Vec<TestRecord>>,
    /// When the test a dead worker was running had started.
    died_running_since: HashMap<usize, f64>,
    /// The test each slot was last announced as running.
    announced_running: Vec<Option<TestId>>,
    /// Split collection: the test files (node ids) the scheduler's loads
    /// index; empty with full collection.
    test_files: Vec<String>,
    /// `-x`/`--maxfail` is on: a worker waits for shoal's word after each
    /// test with a failed report, so nothing starts past the limit.
    confirm_failures: bool,
    /// The worker waiting for `continue` after the failure just handled.
    failure_to_answer: Option<usize>,
}

impl Run<'_> {
    /// Seconds since the run started, the scheduler's clock.
    fn now(&self) -> f64 {
        self.clock.elapsed().as_secs_f64()
    }

    /// Keeps a failed attempt of a test that will be rerun; pytest-
    /// rerunfailures counts it as a `rerun` in the closing line.
    fn keep_attempt(&mut self, test: TestId, record: TestRecord, next_attempt: u32) {
        self.tally.add("rerun", 1);
        let worker = record.worker.map_or(0, usize::from);
        for reporter in self.reporters.iter_mut() {
            reporter.attempt_retried(self.table.nodeid(test), worker, next_attempt);
        }
        self.attempts.entry(test).or_default().push(record);
    }

    /// Tells the reporters of tests workers have begun since last asked.
    fn announce_starts(&mut self, scheduler: &Scheduler, workers: usize) {
        self.announced_running.resize(workers, None);
        let elapsed = self.now();
        for worker in 0..workers {
            let running = scheduler.running(worker).map(|(test, _)| test);
            if running == self.announced_running[worker] {
                continue;
            }
            self.announced_running[worker] = running;
            if let Some(test) = running {
                for reporter in self.reporters.iter_mut() {
                    reporter.test_started(self.table.nodeid(test), worker, elapsed);
                }
            }
        }
    }

    /// Ticks the reporters that asked for it, when due.
    fn refresh(&mut self, last: &mut Instant, interval: Option<Duration>) {
        if interval.is_some_and(|interval| last.elapsed() >= interval) {
            *last = Instant::now();
            let elapsed = self.now();
            self.reporters.iter_mut().for_each(|reporter| reporter.tick(elapsed));
        }
    }

    /// The number of the attempt a test is on (1 for its first run).
    fn attempt_of(&self, test: TestId) -> usize {
        1 + self.attempts.get(&test).map_or(0, Vec::len)
    }

    /// Gives a test its final record (once) and tells the reporters. A test
    /// that passes after failed attempts is flaky; its attempts stay with it.
    fn record(&mut self, test: TestId, mut record: TestRecord, reports: &[PhaseReport]) {
        if self.is_final[test] {
            return;
        }
        if let Some(earlier) = self.attempts.remove(&test) {
            if record.outcome == Outcome::Passed {
                record.outcome = Outcome::Flaky;
                self.tally.add("flaky", 1);
            }
            record.details.get_or_insert_with(Default::default).earlier_attempts = earlier;
        }
        self.is_final[test] = true;
        self.done += 1;
        for report in reports {
            self.tally.add(&report.category, 1);
        }
        if record.outcome == Outcome::Crashed {
            self.tally.add("crashed", 1);
        }
        if record.outcome == Outcome::Timeout {
            self.tally.add("timeout", 1);
        }
        if record.outcome == Outcome::NotRun {
            self.tally.add("not run", 1);
        }
        let view = TestView { item: self.table.item(test), record: &record };
        for reporter in self.reporters.iter_mut() {
            reporter.test_finished(view, reports, self.done, self.table.len());
        }
        self.records[test] = record;
    }
}

/// Whether the selection names tests inside files (`file.py::test`): split
/// collection hands whole files to the workers, so such a run collects in
/// full.
fn names_tests(collect: &CollectSettings) -> bool {
    // `--deselect ID` names a test too, but to leave it out: split
    // collection applies it in the workers.
    let deselected =
        collect.pytest_args.windows(2).filter(|pair| pair[0] == "--deselect").map(|pair| &pair[1]);
    let deselected: HashSet<&String> = deselected.collect();
    collect.selection.entries.iter().any(|entry| entry.argument.contains("::"))
        || collect.pytest_args.iter().any(|argument| {
            !argument.starts_with('-') && argument.contains("::") && !deselected.contains(argument)
        })
}

/// pytest plugins whose `pytest_collection_modifyitems` works on the whole
/// collection at once (selecting a part of it, or ordering tests across
/// files): under split collection each worker would apply them to its share.
const WHOLE_COLLECTION_PLUGINS: &[&str] = &["split", "test-groups", "order", "ordering", "depends"];

/// The first active plugin (as `name-version`) that needs the whole
/// collection, if any.
fn plugin_needing_whole_collection(plugins: &[String]) -> Option<&str> {
    plugins.iter().map(String::as_str).find(|plugin| {
        plugin.rsplit_once('-').is_some_and(|(name, _)| WHOLE_COLLECTION_PLUGINS.contains(&name))
    })
}

/// `shoal run`: pytest in place for its modes that run no test, else the
/// run with the reporters the settings ask for.
pub fn command(settings: &RunSettings) -> Result<u8, ShoalError> {
    if let Some(reason) = crate::pytest_args::in_place(&settings.collect.pytest_args) {
        return pytest_in_place(&settings.collect, reason);
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
    run(settings, &mut reporters)
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

/// The run's answers to the collection phase: whether to split collection
/// (asked once the zygote's `hello` names the plugins and the rootdir) and
/// each worker's share of the test files, from the durations history, read
/// here once for the whole run.
struct RunPlanner<'a> {
    settings: &'a RunSettings,
    history: Option<History>,
}

impl<'a> RunPlanner<'a> {
    fn new(settings: &'a RunSettings) -> Self {
        Self { settings, history: None }
    }

    fn history(&mut self, rootdir: &str) -> &History {
        let durations = self.settings.durations_path.as_deref();
        self.history.get_or_insert_with(|| History::load(&HistoryPaths::new(Path::new(rootdir), durations)))
    }
}

impl CollectionPlanner for RunPlanner<'_> {
    fn split(&mut self, hello: &Hello) -> bool {
        let settings = self.settings;
        let history = self.history(&hello.rootdir);
        if settings.collection == CollectionMode::Full || names_tests(&settings.collect) {
            return false;
        }
        match plugin_needing_whole_collection(&hello.plugins) {
            Some(plugin) => {
                crate::output::notice(&format!(
                    "collecting every test file before forking: {plugin} works on the whole collection"
                ));
                false
            }
            None if settings.collection == CollectionMode::Split => true,
            None => {
                let reason = plan::split_pays(history, settings.workers);
                if let Some(reason) = &reason {
                    crate::output::notice(reason);
                }
                reason.is_some()
            }
        }
    }

    fn shares(&mut self, files: &[String], together: &[Vec<usize>], workers: usize) -> Vec<Vec<usize>> {
        let history = self.history.as_ref().expect("split was decided, with the history, before shares");
        plan::file_shares(files, together, history, workers)
    }
}

/// `shoal run`: the whole run; returns the exit code.
fn run(settings: &RunSettings, reporters: &mut [Box<dyn Reporter>]) -> Result<u8, ShoalError> {
    let started = Instant::now();
    let started_at = SystemTime::now();
    let run_directory = run_directory()?;
    let spec = worker_spec(
        &settings.collect,
        settings.workers,
        settings.worker_memory_limit_kib,
        &settings.serial_markers,
        run_directory.path(),
    )?;
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
    let hello = &collected.hello;
    announce_plugin_limits(hello);
    let max_failures = settings.max_failures.or((hello.maxfail > 0).then_some(hello.maxfail));
    let continue_on_collection_errors =
        settings.continue_on_collection_errors || hello.continue_on_collection_errors;

    // Node ids are opaque keys; the table stores a test collected twice once.
    let mut table = std::mem::take(&mut collected.table);
    // What a replacement worker must collect, when --lf runs only part of it.
    let mut whole_collection = None;
    let last_failed = hello.cache_dir.as_deref().map(|directory| LastFailed::load(Path::new(directory)));
    let mut deselected_by_last_failed = 0;
    if settings.last_failed != LastFailedMode::Off {
        match &last_failed {
            None => crate::output::warn(
                "--lf/--ff need pytest's cache plugin, which is off here; running everything",
            ),
            Some(record) if settings.last_failed == LastFailedMode::Only => {
                let failed_tests: Vec<TestId> =
                    (0..table.len()).filter(|&test| record.contains(table.nodeid(test))).collect();
                let failed = failed_tests.len();
                if failed == 0 {
                    crate::output::notice(
                        "run-last-failure: no previously failed tests, not deselecting items.",
                    );
                } else {
                    // As pytest does: files without a failure are skipped
                    // whole (not counted); other tests of files that had
                    // one are deselected.
                    let failing_files: HashSet<u32> =
                        failed_tests.iter().map(|&test| table.item(test).module).collect();
                    let skipped_files = table.module_count() - failing_files.len();
                    deselected_by_last_failed = (0..table.len())
                        .filter(|&test| {
                            failing_files.contains(&table.item(test).module)
                                && !record.contains(table.nodeid(test))
                        })
                        .count();
                    let files = if skipped_files > 0 {
                        format!(
                            " (skipped {skipped_files} file{})",
                            if skipped_files == 1 { "" } else { "s" }
                        )
                    } else {
                        String::new()
                    };
                    crate::output::notice(&format!(
                        "run-last-failure: rerun previous {failed} failure{}{files}",
                        if failed == 1 { "" } else { "s" }
                    ));
                    let (failed_only, _) = table.retain(|test| record.contains(table.nodeid(test)));
                    whole_collection = Some(std::mem::replace(&mut table, failed_only));
                }
            }
            Some(_) => {}
        }
    }
    let history_paths = HistoryPaths::new(Path::new(&hello.rootdir), settings.durations_path.as_deref());
    let history = History::load(&history_paths);
    let shard = match &settings.shard {
        Some(request) => Some(crate::shard::narrow(
            request,
            &mut table,
            &mut whole_collection,
            &history,
            &settings.serial_markers,
        )?),
        None => None,
    };
    let deselected_by_shard = shard.as_ref().map_or(0, |narrowed| narrowed.left_out);
    let collect_errors = collected.collect_reports.iter().filter(|report| report.category == "error").count();
    let header = RunHeader {
        platform: hello.platform.clone(),
        python: hello.python.clone(),
        pytest: hello.pytest.clone(),
        pluggy: hello.pluggy.clone(),
        rootdir: hello.rootdir.clone(),
        inifile: hello.inifile.clone(),
        plugins: hello.plugins.clone(),
        workers: pool.slots.len(),
        mode: collected.mode,
        selected: table.len(),
        deselected: (collected.deselected.len() + deselected_by_last_failed + deselected_by_shard) as u64,
        collect_errors,
        collect_skipped: collected.collect_reports.len() - collect_errors,
        hash_seed,
        max_failures,
        budget: settings.budget,
        started_at,
        expectation: None,
        shard: shard.map(|narrowed| narrowed.info),
    };
    let mut workload = plan::workload(&table, &history, settings.timeout);
    let test_files = match &collected.split {
        Some(split) => {
            let oversubscription = pool.slots.len() as f64 / crate::settings::usable_cpus() as f64;
            plan::set_split_collection(
                &mut workload,
                &table,
                split,
                &collected.file_seconds,
                oversubscription,
            )?;
            split.files.clone()
        }
        None => Vec::new(),
    };
    plan::mark_serial_and_groups(&mut workload, &table, &settings.serial_markers);
    plan::set_reruns(&mut workload, &table, settings.reruns);
    // --ff, and any budget, put last time's failures first.
    if (settings.last_failed == LastFailedMode::First || settings.budget.is_some())
        && let Some(record) = &last_failed
    {
        workload.first = (0..table.len()).map(|test| record.contains(table.nodeid(test))).collect();
    }
    let has_history = !history.is_empty();
    // The history is read again to merge this run in: no need to hold it.
    drop(history);
    let startup_seconds = started.elapsed().as_secs_f64();
    let header = RunHeader {
        expectation: has_history.then(|| Expectation {
            wall_seconds: startup_seconds + shoal_scheduler::simulate(&workload, pool.slots.len()),
            lower_bound_seconds: startup_seconds + workload.lower_bound(pool.slots.len()),
        }),
        ..header
    };
    if let (Some(budget), Some(expectation)) = (settings.budget, header.expectation)
        && expectation.wall_seconds > budget
    {
        crate::output::warn(&format!(
            "history expects {:.1}s, over the {budget}s budget: tests that cannot end in time will not be started",
            expectation.wall_seconds
        ));
    }
    for reporter in reporters.iter_mut() {
        reporter.run_started(&header);
    }
    let test_count = table.len();
    let mut tally = Tally::default();
    for report in &collected.collect_reports {
        tally.add(&report.category, 1);
    }
    let mut run = Run {
        records: vec![TestRecord::new(Outcome::NotRun); test_count],
        is_final: vec![false; test_count],
        table,
        whole_collection,
        done: 0,
        tally,
        warnings: collected.warnings,
        reporters,
        execution_order: Vec::new(),
        usage: HashMap::new(),
        clock: started,
        default_timeout: settings.timeout,
        last_finished: HashMap::new(),
        notices: Vec::new(),
        attempts: HashMap::new(),
        died_running_since: HashMap::new(),
        announced_running: Vec::new(),
        test_files,
        confirm_failures: max_failures.is_some(),
        failure_to_answer: None,
    };

    let mut stop = None;
    if collect_errors > 0 && !continue_on_collection_errors {
        stop = Some(StopReason::CollectionErrors);
        for slot in 0..pool.slots.len() {
            pool.send(slot, &WorkerCommand::Shutdown);
        }
        pool.shutdown_zygote();
        for test in 0..test_count {
            // Not counted in the closing line: pytest does not run them either.
            run.records[test].not_run_reason = Some(StopReason::CollectionErrors);
            run.is_final[test] = true;
        }
    } else {
        let scheduler = Scheduler::new(
            SchedulerConfig {
                workers: pool.slots.len(),
                max_failures,
                max_worker_restarts: settings.max_worker_restarts,
                budget: settings.budget,
                rerun_delay: settings.rerun_delay,
            },
            &workload,
        );
        drop(workload);
        stop = drive(&mut pool, &mut run, scheduler)?.or(stop);
    }

    let records = std::mem::take(&mut run.records);
    let mut history = History::load(&history_paths);
    let deselected: HashSet<&str> = collected.deselected.iter().map(String::as_str).collect();
    // Files named by node id (`test_pay.py::test_visa`) were collected in
    // part: their other tests keep their entries.
    let files_named_in_part: HashSet<PathBuf> = settings
        .collect
        .selection
        .entries
        .iter()
        .filter_map(|entry| entry.argument.split_once("::"))
        .filter_map(|(file, _)| settings.collect.cwd.join(file).canonicalize().ok())
        .collect();
    let whole_collection = run.whole_collection.as_ref().unwrap_or(&run.table);
    let rootdir = Path::new(&hello.rootdir);
    let mut measured = plan::measurements(&records, &run.execution_order, &run.table);
    measured.file_collect =
        collected.file_seconds.iter().map(|(file, seconds)| (file.as_str(), *seconds)).collect();
    history.merge(
        &measured,
        |nodeid| {
            whole_collection.find(nodeid).is_some()
                || deselected.contains(nodeid)
                || rootdir
                    .join(crate::history::file_of(nodeid))
                    .canonicalize()
                    .is_ok_and(|file| files_named_in_part.contains(&file))
        },
        |file| rootdir.join(file).exists(),
    );
    // Every shard must partition from the same history: a sharded run
    // leaves it as it was, and `shoal merge` folds the shards' measurements in.
    if settings.shard.is_none()
        && let Err(error) = history.save(&history_paths)
    {
        crate::output::warn(&format!("the durations history was not saved: {error}"));
    }
    drop(history);
    if let Some(mut record) = last_failed {
        record.update(
            records.iter().enumerate().map(|(test, record)| (run.table.nodeid(test), record.outcome)),
            collected
                .collect_reports
                .iter()
                .filter(|report| report.category == "error")
                .map(|report| report.nodeid.as_str()),
        );
        if let Err(error) = record.save() {
            crate::output::warn(&format!("pytest's last-failed record was not saved: {error}"));
        }
    }
    let stats = run_stats(&records, &run, pool.slots.len(), startup_seconds);
    let mut tally = std::mem::take(&mut run.tally);
    tally.add("deselected", header.deselected);
    tally.add("warnings", run.warnings.len() as u64);
    let any_failure = records.iter().any(|record| {
        record.outcome.is_failure() || (settings.flaky_fails && record.outcome == Outcome::Flaky)
    }) || collect_errors > 0;
    let mut exit = match &stop {
        Some(StopReason::Interrupted | StopReason::CollectionErrors) => exit_code::INTERRUPTED,
        _ if any_failure => exit_code::TESTS_FAILED,
        Some(StopReason::MaxFail | StopReason::WorkerRestartsExhausted | StopReason::Budget) => {
            exit_code::TESTS_FAILED
        }
        // A shard left empty while other shards have tests is no failure.
        None if test_count == 0 && header.shard.as_ref().is_none_or(|shard| shard.collected == 0) => {
            exit_code::NO_TESTS_COLLECTED
        }
        None => exit_code::OK,
    };
    let mut coverage_report = None;
    if let Some(options) = &hello.coverage {
        // Every worker must have written its last data file before they are
        // combined; without coverage, reports come first and workers end after.
        shut_down(&mut pool);
        coverage_report = report_coverage(&coverage, options, &stop, any_failure)?;
        if coverage_report.as_ref().is_some_and(|report| report.fail_under_missed)
            && matches!(exit, exit_code::OK | exit_code::NO_TESTS_COLLECTED)
        {
            // pytest-cov counts a missed --cov-fail-under as a failed test.
            exit = exit_code::TESTS_FAILED;
        }
    }
    let summary = RunSummary {
        header: &header,
        table: &run.table,
        records: &records,
        collect_reports: &collected.collect_reports,
        warnings: &run.warnings,
        tally: &tally,
        stop,
        wall_seconds: started.elapsed().as_secs_f64(),
        exit_code: exit,
        stats,
        notices: &run.notices,
        coverage: coverage_report.as_ref(),
    };
    let mut reported: Result<(), ShoalError> =
        run.reporters.iter_mut().try_for_each(|reporter| reporter.run_finished(&summary));
    if settings.junitxml.is_none()
        && let Some(path) = &hello.junitxml
    {
        let junit = crate::report::junit::JunitReporter::new(PathBuf::from(path)).run_finished(&summary);
        reported = reported.and(junit);
    }
    shut_down(&mut pool);
    reported.map(|()| exit)
}

/// One line for each plugin that cannot do under shoal what it does alone.
fn announce_plugin_limits(hello: &Hello) {
    if let Some(path) = &hello.html_report {
        crate::output::notice(&format!(
            "pytest-html: {path} is not written (its report is built in one process from every test's \
             report); use --junitxml or --json-report"
        ));
    }
    if hello.plugins.iter().any(|plugin| plugin.starts_with("syrupy-")) {
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

/// Ends the workers and the zygote and waits for them. Workers the
/// scheduler never needed (no tests, or fewer than workers) may still wait
/// for their first command.
fn shut_down(pool: &mut Pool) {
    for slot in 0..pool.slots.len() {
        pool.send(slot, &WorkerCommand::Shutdown);
    }
    pool.shutdown_zygote();
    wait_for_exit(pool);
}

/// Combines the workers' coverage and writes pytest-cov's reports, as
/// pytest-cov would at the end of this run: nothing after an interrupt or
/// collection errors (pytest's test loop never ended normally), data but no
/// report after a failure with `--no-cov-on-fail`.
fn report_coverage(
    coverage: &CoverageRun,
    options: &crate::protocol::CoverageOptions,
    stop: &Option<StopReason>,
    any_failure: bool,
) -> Result<Option<CoverageReport>, ShoalError> {
    if matches!(stop, Some(StopReason::Interrupted | StopReason::CollectionErrors)) {
        return Ok(None);
    }
    let skip_on_failure = options.get("no_cov_on_fail").and_then(serde_json::Value::as_bool).unwrap_or(false);
    let width = crate::report::terminal::TerminalReporter::<std::io::Stdout>::detect_width();
    coverage.combine_and_report(options, !(any_failure && skip_on_failure), width).map(Some)
}

/// The run's figures against the physical limit.
fn run_stats(records: &[TestRecord], run: &Run<'_>, workers: usize, startup_seconds: f64) -> RunStats {
    let durations: Vec<f64> = records.iter().map(|record| f64::from(record.duration)).collect();
    let test_seconds: f64 = durations.iter().sum();
    let longest = durations.iter().copied().fold(0.0, f64::max);
    RunStats {
        test_seconds,
        lower_bound_seconds: startup_seconds + (test_seconds / workers.max(1) as f64).max(longest),
        startup_seconds,
        workers_cpu_seconds: run.usage.values().map(|(cpu, _)| cpu).sum(),
        peak_rss_largest_kib: run.usage.values().map(|(_, rss)| *rss).max().unwrap_or(0),
        peak_rss_total_kib: run.usage.values().map(|(_, rss)| rss).sum(),
    }
}

/// The scheduling loop: events in, scheduler decisions out, until every
/// test has its outcome and every worker has ended.
fn drive(
    pool: &mut Pool,
    run: &mut Run<'_>,
    mut scheduler: Scheduler,
) -> Result<Option<StopReason>, ShoalError> {
    let mut interrupted_at: Option<Instant> = None;
    // Spawned workers are ready once collected; forked ones say so.
    for slot in 0..pool.slots.len() {
        if pool.slots[slot].phase == SlotPhase::Running {
            let actions = scheduler.handle(run.now(), Event::WorkerReady { worker: slot });
            execute(pool, run, actions)?;
        }
    }
    let refresh_interval = run.reporters.iter().filter_map(|reporter| reporter.refresh_interval()).min();
    let mut last_refresh = Instant::now();
    loop {
        if scheduler.all_tests_final() {
            // Every result is in (a worker's last test ends with its session
            // fixtures torn down); the processes' own exits are awaited
            // after the report.
            break;
        }
        run.announce_starts(&scheduler, pool.slots.len());
        run.refresh(&mut last_refresh, refresh_interval);
        let timeout_due =
            scheduler.next_deadline().map(|at| run.clock + Duration::from_secs_f64(at.max(0.0)));
        let refresh_due = refresh_interval.map(|interval| last_refresh + interval);
        let deadline =
            [interrupted_at.map(|at| at + INTERRUPT_GRACE), timeout_due, pool.next_kill(), refresh_due]
                .into_iter()
                .flatten()
                .min();
        let Some(event) = pool.receive(deadline) else {
            pool.run_due_kills();
            if interrupted_at.is_some_and(|at| at.elapsed() >= INTERRUPT_GRACE) {
                // The grace after Ctrl-C ran out: end it by force.
                pool.kill_all();
                interrupted_at = None;
            }
            let actions = scheduler.handle(run.now(), Event::Tick);
            execute(pool, run, actions)?;
            continue;
        };
        let actions = match event {
            WorkerEvent::Interrupt => {
                if interrupted_at.is_some() {
                    pool.kill_all();
                }
                interrupted_at.get_or_insert_with(Instant::now);
                scheduler.handle(run.now(), Event::Interrupted)
            }
            WorkerEvent::Messages(key, messages) => {
                for message in messages {
                    // A message may replace the worker (a crash is noticed
                    // elsewhere, but a failed collection check kills it):
                    // look the slot up again each time.
                    let Some(slot) = pool.current(key) else { break };
                    let actions = handle_message(pool, run, &mut scheduler, slot, message)?;
                    execute(pool, run, actions)?;
                    if let Some(slot) = run.failure_to_answer.take() {
                        pool.send(slot, &WorkerCommand::Continue);
                    }
                    run.announce_starts(&scheduler, pool.slots.len());
                }
                continue;
            }
            WorkerEvent::ProtocolError(key, error) => {
                if let Some(slot) = pool.current(key) {
                    pool.slots[slot].protocol_error = Some(error);
                    pool.slots[slot].handle.signal_group(Signal::SIGKILL);
                }
                continue;
            }
            WorkerEvent::Exited(key, _) if key == Zygote::KEY => {
                pool.zygote_exited = true;
                continue;
            }
            WorkerEvent::Exited(key, status) => {
                let Some(slot) = pool.current(key) else { continue };
                if let Some((_, since)) = scheduler.running(slot) {
                    run.died_running_since.insert(slot, since);
                }
                let state = &mut pool.slots[slot];
                state.phase = SlotPhase::Exited;
                let mut description = describe_exit(status);
                if let Some(error) = &state.protocol_error {
                    description = format!("{description} after a protocol error: {error}");
                }
                state.exit = Some(description);
                // Grandchildren a test left behind die with the worker's group.
                state.handle.signal_group(Signal::SIGKILL);
                scheduler.handle(run.now(), Event::WorkerExited { worker: slot })
            }
        };
        execute(pool, run, actions)?;
    }
    Ok(scheduler.stopping().map(StopReason::from))
}

fn handle_message(
    pool: &mut Pool,
    run: &mut Run<'_>,
    scheduler: &mut Scheduler,
    slot: usize,
    message: WorkerMessage,
) -> Result<Vec<Action>, ShoalError> {
    if pool.slots[slot].phase == SlotPhase::Starting {
        return replacement_message(pool, run, scheduler, slot, message);
    }
    Ok(match message {
        WorkerMessage::Finished(finished) => {
            let Some(test) = run.table.find(&finished.nodeid) else {
                return Err(ShoalError::Internal(format!(
                    "a worker ran an unknown test `{}`",
                    finished.nodeid
                )));
            };
            let outcome = outcome_from_reports(&finished.reports);
            let mut record = TestRecord::from_reports(outcome, slot, finished.duration, &finished.reports);
            // The result arrives as the test ends, so the end is the precise
            // instant; the scheduler's start mark can lag behind coalesced messages.
            record.started = (run.now() - finished.duration).max(0.0) as f32;
            let actions = scheduler
                .handle(run.now(), Event::TestFinished { worker: slot, test, failed: outcome.is_failure() });
            let timed_out = actions.iter().any(|action| {
                matches!(action, Action::TestTimedOut { test: ended, .. }
                    | Action::Retry { test: ended, cause: RetryCause::TimedOut, .. } if *ended == test)
            });
            let rerun = actions.iter().find_map(|action| match action {
                Action::Retry { test: retried, next_attempt, .. } if *retried == test => Some(*next_attempt),
                _ => None,
            });
            if timed_out {
                // It ended only after its timeout fired: the timeout's
                // record (made by `execute`) is the one kept.
                run.died_running_since.insert(slot, f64::from(record.started));
            } else if let Some(next_attempt) = rerun {
                run.keep_attempt(test, record, next_attempt);
            } else {
                run.record(test, record, &finished.reports);
            }
            if run.confirm_failures && finished.reports.iter().any(|report| report.outcome == "failed") {
                // The worker waits for this answer before its next test;
                // a `stop` among the actions (sent first) overrides it.
                run.failure_to_answer = Some(slot);
            }
            run.execution_order.push((
                u16::try_from(slot).expect("fewer than 65536 workers"),
                u32::try_from(test).expect("fewer than 4 billion tests"),
            ));
            run.usage.insert(pool.slots[slot].handle.key, (finished.cpu_seconds, finished.max_rss_kib));
            run.last_finished.insert(slot, (test, finished.rss_kib));
            for (nodeid, pids) in &finished.leaked {
                run.notices.push(format!(
                    "{nodeid} left {} process{} running (killed with worker gw{slot}'s process group)",
                    pids.len(),
                    if pids.len() == 1 { "" } else { "es" }
                ));
            }
            actions
        }
        WorkerMessage::Warning(warning) => {
            if warning.when == "runtest" {
                run.warnings.push(warning);
            }
            Vec::new()
        }
        WorkerMessage::Stopped { dropped, over_memory } => {
            if over_memory && let Some(&(test, rss_kib)) = run.last_finished.get(&slot) {
                run.notices.push(format!(
                    "worker gw{slot} was replaced: {} MiB resident after {} passed the worker memory limit",
                    rss_kib / 1024,
                    run.table.nodeid(test)
                ));
            }
            let dropped = dropped.iter().filter_map(|nodeid| run.table.find(nodeid)).collect();
            scheduler.handle(run.now(), Event::WorkerStopped { worker: slot, dropped, over_memory })
        }

        WorkerMessage::WantWork => scheduler.handle(run.now(), Event::WorkerWantsWork { worker: slot }),
        WorkerMessage::Hello(_)
        | WorkerMessage::CollectReport(_)
        | WorkerMessage::Collected { .. }
        | WorkerMessage::CollectionFinished { .. }
        | WorkerMessage::ZygoteReady { .. }
        | WorkerMessage::TestFiles { .. }
        | WorkerMessage::Ready { .. }
        | WorkerMessage::ChildExited { .. } => Vec::new(),
    })
}

/// A message from a worker that is starting: a forked one saying it is
/// ready, or a spawned replacement collecting again (its collection must
/// match the run's before it gets tests).
fn replacement_message(
    pool: &mut Pool,
    run: &Run<'_>,
    scheduler: &mut Scheduler,
    slot: usize,
    message: WorkerMessage,
) -> Result<Vec<Action>, ShoalError> {
    if let WorkerMessage::Ready { pid, workerinput } = message {
        pool.remember_workerinput(slot, workerinput);
        let state = &mut pool.slots[slot];
        state.handle.pid = Some(pid);
        state.phase = SlotPhase::Running;
        return Ok(scheduler.handle(run.now(), Event::WorkerReady { worker: slot }));
    }
    let state = &mut pool.slots[slot];
    state.collection.record(message)?;
    if !state.collection.finished {
        return Ok(Vec::new());
    }
    let fresh = std::mem::take(&mut state.collection.table);
    let expected = run.whole_collection.as_ref().unwrap_or(&run.table);
    if let Err(error) = check_same_collection(expected, &fresh, slot) {
        crate::output::warn(&format!("replacement {error}"));
        state.handle.signal_group(Signal::SIGKILL);
        return Ok(Vec::new());
    }
    state.phase = SlotPhase::Running;
    Ok(scheduler.handle(run.now(), Event::WorkerReady { worker: slot }))
}

fn execute(pool: &mut Pool, run: &mut Run<'_>, actions: Vec<Action>) -> Result<(), ShoalError> {
    for action in actions {
        match action {
            Action::Run { worker, tests, load } => {
                let attempts = tests
                    .iter()
                    .filter(|&&test| run.attempt_of(test) > 1)
                    .map(|&test| (run.table.nodeid(test).to_owned(), run.attempt_of(test)))
                    .collect();
                let nodeids = tests.iter().map(|&test| run.table.nodeid(test).to_owned()).collect();
                let load = load.iter().map(|&file| run.test_files[file].clone()).collect();
                let confirm_failures = run.confirm_failures;
                pool.send(worker, &WorkerCommand::Run { nodeids, attempts, load, confirm_failures });
            }
            // A failed attempt reported by pytest was kept where it arrived.
            Action::Retry { cause: RetryCause::Failed, .. } => {}
            Action::Retry { test, worker, cause, next_attempt } => {
                let outcome = if cause == RetryCause::TimedOut { Outcome::Timeout } else { Outcome::Crashed };
                let record = ended_record(outcome, worker, ending(pool, run, test, worker, outcome), run);
                run.keep_attempt(test, record, next_attempt);
            }
            Action::Stop { worker } => pool.send(worker, &WorkerCommand::Stop),
            Action::Shutdown { worker } => pool.send(worker, &WorkerCommand::Shutdown),
            Action::StartWorker { worker } => {
                for reporter in run.reporters.iter_mut() {
                    reporter.worker_replaced(worker);
                }
                pool.replace(worker)?;
            }
            Action::TestLost { test, worker } => {
                let crash = ending(pool, run, test, worker, Outcome::Crashed);
                let record = ended_record(Outcome::Crashed, worker, crash, run);
                run.record(test, record, &[]);
            }
            Action::TimeOut { worker, .. } => pool.time_out(worker),
            Action::CancelTimeOut { worker } => pool.cancel_time_out(worker),
            Action::TestTimedOut { test, worker } => {
                let crash = ending(pool, run, test, worker, Outcome::Timeout);
                let record = ended_record(Outcome::Timeout, worker, crash, run);
                run.record(test, record, &[]);
            }
            Action::NotRun { tests, reason } => {
                for test in tests {
                    let mut record = TestRecord::new(Outcome::NotRun);
                    record.not_run_reason = Some(reason.into());
                    run.record(test, record, &[]);
                }
            }
        }
    }
    Ok(())
}

/// How a test's worker ended under it: a crash, or a kill for a timeout.
fn ending(pool: &Pool, run: &Run<'_>, test: TestId, worker: usize, outcome: Outcome) -> CrashDetails {
    let slot = &pool.slots[worker];
    let status = slot.exit.clone().unwrap_or_else(|| "an unknown status".to_owned());
    let nodeid = run.table.nodeid(test);
    if outcome == Outcome::Timeout {
        let seconds = run.table.item(test).timeout.filter(|seconds| *seconds > 0.0).or(run.default_timeout);
        let limit = seconds.map_or_else(String::new, |seconds| format!(" after {seconds}s"));
        let description = if slot.exit.is_some() {
            format!(
                "{nodeid} timed out{limit}: worker gw{worker}'s stacks were dumped and its process group \
                 killed ({status}); a new worker took over"
            )
        } else {
            format!(
                "{nodeid} timed out{limit}: worker gw{worker}'s stacks were dumped; the test ended only then"
            )
        };
        CrashDetails { message: format!("timed out{limit}"), description, output: slot.handle.output_tail() }
    } else {
        CrashDetails {
            message: format!("worker gw{worker} died: {status}"),
            description: format!("worker gw{worker} died while running {nodeid}: {status}"),
            output: slot.handle.output_tail(),
        }
    }
}

/// The record of a test whose worker ended under it.
fn ended_record(outcome: Outcome, worker: usize, crash: CrashDetails, run: &Run<'_>) -> TestRecord {
    let mut record = TestRecord::new(outcome);
    record.worker = u16::try_from(worker).ok();
    if let Some(&since) = run.died_running_since.get(&worker) {
        record.started = since as f32;
        record.duration = (run.now() - since).max(0.0) as f32;
    }
    record.details = Some(Box::new(TestDetails { crash: Some(crash), ..TestDetails::default() }));
    record
}

/// Gives workers that were told to end a moment to do so, then kills them
/// (at once on Ctrl-C: the report is written by now).
fn wait_for_exit(pool: &mut Pool) {
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    while !pool.all_exited() {
        match pool.receive(Some(deadline)) {
            Some(WorkerEvent::Exited(key, _)) if key == Zygote::KEY => pool.zygote_exited = true,
            Some(WorkerEvent::Exited(key, _)) => {
                if let Some(slot) = pool.current(key) {
                    pool.slots[slot].phase = SlotPhase::Exited;
                }
            }
            // Ctrl-C while workers end (tearing down session fixtures):
            // as during the run's grace, a further one kills them at once.
            Some(WorkerEvent::Interrupt) | None => {
                pool.kill_all();
                return;
            }
            Some(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugins_that_need_the_whole_collection_are_recognised_by_name() {
        let plugins = |names: &[&str]| names.iter().map(|name| (*name).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            plugin_needing_whole_collection(&plugins(&["xdist-3.8.0", "split-0.10.0"])),
            Some("split-0.10.0")
        );
        assert_eq!(plugin_needing_whole_collection(&plugins(&["order-1.3.0"])), Some("order-1.3.0"));
        assert_eq!(plugin_needing_whole_collection(&plugins(&["cov-7.1.0", "randomly-3.16.0"])), None);
    }
}
