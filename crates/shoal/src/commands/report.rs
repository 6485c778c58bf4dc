//! `shoal report --queue URL --build ID`: waits until a queued build is
//! drained, then writes what one machine running every test would have: the
//! terminal's report and closing line, the JSON report, the JUnit file, the
//! GitHub summary, and the durations history; its exit code is the build's.
//!
//! The records come back from what the machines stored (the first result of
//! each test); machines' workers are numbered one after another (machine
//! names in order), so a lane of the report is one worker of one machine.
//! Start times are each machine's own (seconds since that machine started).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use crate::errors::{ShoalError, exit_code};
use crate::history::{History, HistoryPaths};
use crate::protocol::{CollectReport, PhaseReport, WarningMessage};
use crate::queue::session::POLL;
use crate::queue::{BuildInfo, QueueError, QueueSettings, Session, StoredResult};
use crate::report::Reporter;
use crate::report::github::GithubReporter;
use crate::report::json::JsonReporter;
use crate::report::junit::JunitReporter;
use crate::report::terminal::TerminalReporter;
use crate::results::{Outcome, RunHeader, RunStats, RunSummary, StopReason, Tally, TestRecord, TestView};
use crate::table::TestTable;

/// What `shoal report` was given.
#[derive(Debug, Clone)]
pub struct ReportInputs {
    /// The queue and the build.
    pub queue: QueueSettings,
    /// Where to write the JUnit XML file.
    pub junitxml: Option<PathBuf>,
    /// Where to write the JSON report.
    pub json_report: Option<PathBuf>,
    /// The durations history to fold the build's measurements into.
    pub durations_path: PathBuf,
}

/// The build, read back as one run.
struct Build {
    header: RunHeader,
    table: TestTable,
    records: Vec<TestRecord>,
    /// Every pytest report of each test's last attempt, at its index.
    reports: Vec<Vec<PhaseReport>>,
    tally: Tally,
    execution_order: Vec<(u16, u32)>,
    missing: usize,
}

/// Waits for the build, reports it; returns the build's exit code.
pub fn report(inputs: &ReportInputs) -> Result<u8, ShoalError> {
    let mut session = Session::connect(&inputs.queue)?;
    let info = session.wait_for_info()?;
    wait_until_drained(&mut session)?;
    let stored = session.results()?;
    let results: Vec<StoredResult> = stored
        .results
        .iter()
        .map(|result| result.after(stored.handed_back.get(&result.nodeid).map_or(&[], Vec::as_slice)))
        .collect();
    let mut build = Build::read(&info, &results, &stored.machines);
    build.tally.add("warnings", stored.warnings.len() as u64);
    let exit = build.exit_code();
    let mut reporters = reporters(inputs);
    for reporter in &mut reporters {
        reporter.run_started(&build.header);
    }
    for test in 0..build.table.len() {
        let view = TestView { item: build.table.item(test), record: &build.records[test] };
        for reporter in &mut reporters {
            reporter.test_finished(view, &build.reports[test], test + 1, build.table.len());
        }
    }
    let notices: Vec<String> = (build.missing > 0)
        .then(|| {
            format!(
                "{} tests have no stored result: their machines stopped before recording them",
                build.missing
            )
        })
        .into_iter()
        .collect();
    let summary = build.summary(exit, &info.collect_reports, &stored.warnings, &notices);
    reporters.iter_mut().try_for_each(|reporter| reporter.run_finished(&summary))?;
    let paths = HistoryPaths::new(std::path::Path::new("."), Some(&inputs.durations_path));
    let mut history = History::load(&paths);
    let measured = crate::plan::measurements(&build.records, &build.execution_order, &build.table);
    history.merge(&measured, |nodeid| build.table.find(nodeid).is_some(), |_| true);
    if let Err(error) = history.save(&paths) {
        crate::output::warn(&format!("the durations history was not saved: {error}"));
    }
    Ok(exit)
}

/// Polls until every unit is acknowledged; fails when units are left and
/// no machine's heartbeat has been alive for the queue wait.
fn wait_until_drained(session: &mut Session) -> Result<(), ShoalError> {
    let wait = session.settings().wait;
    let mut nobody_since: Option<Instant> = None;
    let mut announced = false;
    loop {
        let progress = session.progress()?;
        if progress.remaining() == 0 {
            return Ok(());
        }
        if !announced {
            crate::output::notice(&format!(
                "waiting for build {}: {} of {} units left",
                session.settings().build,
                progress.remaining(),
                progress.units
            ));
            announced = true;
        }
        if progress.alive > 0 {
            nobody_since = None;
        } else if nobody_since.get_or_insert_with(Instant::now).elapsed() >= wait {
            return Err(QueueError::Abandoned(format!(
                "build {}: {} of {} units are not done and no machine has been alive for {}s; rerun a machine \
                 of the build (same --build) to finish them",
                session.settings().build,
                progress.remaining(),
                progress.units,
                wait.as_secs_f64()
            ))
            .into());
        }
        std::thread::sleep(POLL);
    }
}

fn reporters(inputs: &ReportInputs) -> Vec<Box<dyn Reporter>> {
    let full_messages = std::env::var_os("CI").is_some();
    let width = TerminalReporter::<std::io::Stdout>::detect_width();
    let terminal = TerminalReporter::new(std::io::stdout().lock(), width, 0, full_messages);
    let mut reporters: Vec<Box<dyn Reporter>> = vec![Box::new(terminal)];
    if let Some(path) = &inputs.json_report {
        reporters.push(Box::new(JsonReporter::new(path.clone())));
    }
    if let Some(path) = &inputs.junitxml {
        reporters.push(Box::new(JunitReporter::new(path.clone())));
    }
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    if let Some(github) = GithubReporter::from_environment(std::io::stdout(), &cwd) {
        reporters.push(Box::new(github));
    }
    reporters
}

impl Build {
    fn read(info: &BuildInfo, results: &[StoredResult], machines: &[(String, usize)]) -> Self {
        let mut table = TestTable::default();
        for item in &info.collection {
            table.push(item.clone());
        }
        let mut first_lane: HashMap<&str, usize> = HashMap::new();
        let mut next = 0;
        for (machine, workers) in machines {
            first_lane.insert(machine, next);
            next += workers;
        }
        let by_nodeid: HashMap<&str, &StoredResult> =
            results.iter().map(|result| (result.nodeid.as_str(), result)).collect();
        let mut build = Self {
            header: header(info, next, table.len()),
            records: Vec::with_capacity(table.len()),
            reports: Vec::with_capacity(table.len()),
            tally: Tally::default(),
            execution_order: Vec::new(),
            missing: 0,
            table: TestTable::default(),
        };
        for report in &info.collect_reports {
            build.tally.add(&report.category, 1);
        }
        let mut lanes: BTreeMap<u16, Vec<(f32, u32)>> = BTreeMap::new();
        for test in 0..table.len() {
            let Some(result) = by_nodeid.get(table.nodeid(test)) else {
                let mut record = TestRecord::new(Outcome::NotRun);
                record.not_run_reason = Some(StopReason::Interrupted);
                build.tally.add("not run", 1);
                build.missing += 1;
                build.records.push(record);
                build.reports.push(Vec::new());
                continue;
            };
            let machine_lane = first_lane.get(result.machine.as_str()).copied().unwrap_or(0);
            let lane = u16::try_from(machine_lane + usize::from(result.last.worker.unwrap_or(0)))
                .unwrap_or(u16::MAX);
            let record = result.record(lane);
            if !matches!(record.outcome, Outcome::Crashed | Outcome::Timeout | Outcome::NotRun) {
                lanes.entry(lane).or_default().push((record.started, test as u32));
            }
            for category in result.categories() {
                build.tally.add(category, 1);
            }
            build.records.push(record);
            build.reports.push(result.reports.clone());
        }
        for (lane, mut tests) in lanes {
            tests.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            build.execution_order.extend(tests.into_iter().map(|(_, test)| (lane, test)));
        }
        build.table = table;
        build
    }

    /// The build's exit code: 2 when tests have no result, 1 when any
    /// failed (or a file failed to collect, the run going on with
    /// `--continue-on-collection-errors`), 5 when there were none, else 0.
    fn exit_code(&self) -> u8 {
        if self.missing > 0 {
            exit_code::INTERRUPTED
        } else if self.header.collect_errors > 0
            || self.records.iter().any(|record| record.outcome.is_failure())
        {
            exit_code::TESTS_FAILED
        } else if self.records.is_empty() {
            exit_code::NO_TESTS_COLLECTED
        } else {
            exit_code::OK
        }
    }

    fn summary<'a>(
        &'a self,
        exit: u8,
        collect_reports: &'a [CollectReport],
        warnings: &'a [WarningMessage],
        notices: &'a [String],
    ) -> RunSummary<'a> {
        let durations = self.records.iter().map(|record| f64::from(record.duration));
        let test_seconds: f64 = durations.clone().sum();
        let longest = durations.clone().fold(0.0, f64::max);
        let ends = self.records.iter().map(|record| f64::from(record.started + record.duration));
        RunSummary {
            header: &self.header,
            table: &self.table,
            records: &self.records,
            collect_reports,
            warnings,
            tally: &self.tally,
            stop: (self.missing > 0).then_some(StopReason::Interrupted),
            wall_seconds: ends.fold(0.0, f64::max),
            exit_code: exit,
            stats: RunStats {
                test_seconds,
                lower_bound_seconds: (test_seconds / self.header.workers.max(1) as f64).max(longest),
                startup_seconds: 0.0,
                between_phases_seconds: 0.0,
                workers_cpu_seconds: 0.0,
                peak_rss_largest_kib: 0,
                peak_rss_total_kib: 0,
            },
            notices,
            coverage: None,
        }
    }
}

fn header(info: &BuildInfo, workers: usize, selected: usize) -> RunHeader {
    let collect_errors = info.collect_reports.iter().filter(|report| report.category == "error").count();
    RunHeader {
        environment: info.environment.clone(),
        workers,
        mode: if info.mode == "fork" { "fork" } else { "spawn" },
        selected,
        deselected: 0,
        collect_errors,
        collect_skipped: info.collect_reports.len() - collect_errors,
        collection_notes: Vec::new(),
        hash_seed: info.hash_seed.clone(),
        max_failures: None,
        budget: None,
        started_at: SystemTime::now(),
        expectation: None,
        shard: None,
        profile: None,
        settings: Vec::new(),
    }
}
