//! Reporters: sinks fed by the runner's events, which never influence the run.
//!
//! The runner calls every [`Reporter`] with the same facts: the run started
//! ([`RunHeader`]), a test ended ([`TestRecord`]), the run ended
//! ([`RunSummary`]). Each reporter renders them its own way: the terminal in
//! pytest's shape, the JSON report file.

pub mod events;
pub mod github;
pub mod json;
pub mod junit;
#[cfg(test)]
pub(crate) mod sample;
pub mod terminal;
pub mod timeline;

use std::time::SystemTime;

use crate::outcome::{NotRunCause, Outcome, Tally};
use crate::protocol::{CollectReport, PhaseReport, WarningMessage};
use crate::table::{Item, TestTable};

/// What is known when tests start.
#[derive(Debug, Clone)]
pub struct RunHeader {
    /// `sys.platform` of the workers.
    pub platform: String,
    /// Python version.
    pub python: String,
    /// pytest version.
    pub pytest: String,
    /// pluggy version.
    pub pluggy: String,
    /// pytest's rootdir.
    pub rootdir: String,
    /// pytest's ini file, if any.
    pub inifile: Option<String>,
    /// Installed plugins (`name-version`).
    pub plugins: Vec<String>,
    /// Worker processes.
    pub workers: usize,
    /// How workers come to be.
    pub mode: &'static str,
    /// Tests selected to run.
    pub selected: usize,
    /// Tests deselected by `-k`, `-m` or plugins.
    pub deselected: u64,
    /// Collection errors.
    pub collect_errors: usize,
    /// Collectors skipped (e.g. a module-level skip).
    pub collect_skipped: usize,
    /// `PYTHONHASHSEED` given to every worker.
    pub hash_seed: String,
    /// When the run started.
    pub started_at: SystemTime,
    /// What the history predicts, when there is history.
    pub expectation: Option<Expectation>,
    /// The shard this run is, with `--shard`.
    pub shard: Option<crate::shard::ShardInfo>,
}

/// The history's prediction for a run, in wall seconds from shoal's start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Expectation {
    /// The scheduler's plan, simulated with expected durations.
    pub wall_seconds: f64,
    /// `max(total / workers, longest test)` plus the start-up so far: no
    /// schedule can beat it.
    pub lower_bound_seconds: f64,
}

/// Where the run ended up against the physical limits.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RunStats {
    /// Sum of the tests' own durations.
    pub test_seconds: f64,
    /// The lower bound for this run, from the measured durations plus the
    /// start-up: `max(total / workers, longest) + start-up`.
    pub lower_bound_seconds: f64,
    /// Seconds from shoal's start until the first worker was ready.
    pub startup_seconds: f64,
    /// CPU seconds used by the worker processes.
    pub workers_cpu_seconds: f64,
    /// Peak resident memory of the largest worker, in KiB (shared pages of
    /// forked workers count in each).
    pub peak_rss_largest_kib: u64,
    /// Sum of the workers' peaks, in KiB.
    pub peak_rss_total_kib: u64,
}

/// One test's final record, kept small: a run may hold 100,000 of them.
/// What it is (node id, file, line) is in the [`TestTable`] at the same
/// index; pytest's full reports are kept only for failures.
#[derive(Debug, Clone, PartialEq)]
pub struct TestRecord {
    /// The final outcome.
    pub outcome: Outcome,
    /// Why it did not run, for [`Outcome::NotRun`].
    pub not_run_reason: Option<NotRunCause>,
    /// The slot of the worker that ran it.
    pub worker: Option<u16>,
    /// Wall seconds of its whole protocol (0 when it did not run).
    pub duration: f32,
    /// When it started, in seconds since the run started (0 when it did
    /// not run).
    pub started: f32,
    /// Seconds of its setup, call and teardown phases.
    pub phase_seconds: [f32; 3],
    /// Failed reports and crash details, when there are any.
    pub details: Option<Box<TestDetails>>,
}

/// What a failing test leaves to show.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TestDetails {
    /// pytest's reports that failed, in order (subtests included).
    pub failed_reports: Vec<PhaseReport>,
    /// For a crash or a timeout: how the worker ended and its last output.
    pub crash: Option<CrashDetails>,
    /// Failed attempts before the last one (`--reruns`), oldest first.
    pub earlier_attempts: Vec<TestRecord>,
    /// Why it was skipped, or why it was expected to fail.
    pub skip_reason: Option<String>,
}

/// How a worker ended under a test (a crash, or a kill for a timeout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrashDetails {
    /// One line for the short summary, e.g. `worker gw0 died: signal 11
    /// (SIGSEGV)` or `timed out after 2s`.
    pub message: String,
    /// The full account for the failures section.
    pub description: String,
    /// The tail of the worker's stderr and stdout (for a timeout, with
    /// every thread's stack).
    pub output: String,
}

/// The phases, in the order of [`TestRecord::phase_seconds`].
pub const PHASES: [&str; 3] = ["setup", "call", "teardown"];

impl TestRecord {
    /// A record with nothing but an outcome.
    pub fn new(outcome: Outcome) -> Self {
        Self {
            outcome,
            not_run_reason: None,
            worker: None,
            duration: 0.0,
            started: 0.0,
            phase_seconds: [0.0; 3],
            details: None,
        }
    }

    /// The record of a test that ran, from pytest's reports.
    pub fn from_reports(outcome: Outcome, worker: usize, duration: f64, reports: &[PhaseReport]) -> Self {
        let mut phase_seconds = [0.0f32; 3];
        for report in reports.iter().filter(|report| report.subtest.is_none()) {
            if let Some(phase) = PHASES.iter().position(|name| *name == report.when) {
                phase_seconds[phase] += report.duration as f32;
            }
        }
        let failed_reports: Vec<PhaseReport> =
            reports.iter().filter(|report| report.outcome == "failed").cloned().collect();
        let skip_reason = match outcome {
            Outcome::Skipped => {
                reports.iter().find(|report| report.outcome == "skipped").and_then(|r| r.message.clone())
            }
            Outcome::Xfailed => reports.iter().find_map(|report| report.wasxfail.clone()),
            _ => None,
        };
        Self {
            outcome,
            not_run_reason: None,
            worker: u16::try_from(worker).ok(),
            duration: duration as f32,
            started: 0.0,
            phase_seconds,
            details: (!failed_reports.is_empty() || skip_reason.is_some())
                .then(|| Box::new(TestDetails { failed_reports, skip_reason, ..TestDetails::default() })),
        }
    }

    /// Seconds spent in one phase (`setup`, `call` or `teardown`).
    pub fn phase_duration(&self, when: &str) -> f64 {
        PHASES.iter().position(|name| *name == when).map_or(0.0, |phase| f64::from(self.phase_seconds[phase]))
    }

    /// The reports that failed.
    pub fn failed_reports(&self) -> &[PhaseReport] {
        self.details.as_ref().map_or(&[], |details| &details.failed_reports)
    }

    /// Failed attempts before the last one, oldest first.
    pub fn earlier_attempts(&self) -> &[TestRecord] {
        self.details.as_ref().map_or(&[], |details| &details.earlier_attempts)
    }

    /// Why it was skipped, or why it was expected to fail.
    pub fn skip_reason(&self) -> Option<&str> {
        self.details.as_ref().and_then(|details| details.skip_reason.as_deref())
    }

    /// How the worker ended, for a crash or a timeout.
    pub fn crash(&self) -> Option<&CrashDetails> {
        self.details.as_ref().and_then(|details| details.crash.as_ref())
    }
}

/// A test with its record, as reporters see it.
#[derive(Debug, Clone, Copy)]
pub struct TestView<'a> {
    /// What was collected.
    pub item: Item<'a>,
    /// How it ended.
    pub record: &'a TestRecord,
}

impl<'a> TestView<'a> {
    /// The node id.
    pub fn nodeid(&self) -> &'a str {
        self.item.nodeid
    }
}

/// Why the run ended early, in the words pytest prints between `!` rules.
#[derive(Debug, Clone, PartialEq)]
pub enum StopNotice {
    /// `-x` / `--maxfail`.
    MaxFail(u64),
    /// Collection errors without `--continue-on-collection-errors`.
    CollectionErrors(usize),
    /// Ctrl-C or SIGTERM.
    Interrupted,
    /// Dead workers exhausted the restart budget.
    WorkerRestartsExhausted,
    /// `--budget` ran out.
    Budget(f64),
}

impl StopNotice {
    /// The line pytest (or shoal, where pytest has none) prints.
    pub fn message(&self) -> String {
        match self {
            Self::MaxFail(count) => format!("stopping after {count} failures"),
            Self::CollectionErrors(count) => {
                format!("Interrupted: {count} error{} during collection", if *count == 1 { "" } else { "s" })
            }
            Self::Interrupted => "KeyboardInterrupt".to_owned(),
            Self::WorkerRestartsExhausted => {
                "stopping: workers kept dying and the restart budget ran out".to_owned()
            }
            Self::Budget(seconds) => {
                format!("stopping: the rest would not end within the {seconds}s budget")
            }
        }
    }
}

/// Everything known at the end.
#[derive(Debug, Clone)]
pub struct RunSummary<'a> {
    /// The header, when collection got that far.
    pub header: &'a RunHeader,
    /// Every selected test, in collection order.
    pub table: &'a TestTable,
    /// Their records, at the same indexes.
    pub records: &'a [TestRecord],
    /// Collectors that failed or were skipped.
    pub collect_reports: &'a [CollectReport],
    /// Warnings, in the order recorded.
    pub warnings: &'a [WarningMessage],
    /// The closing-line counts.
    pub tally: &'a Tally,
    /// Why the run stopped early, if it did.
    pub stop: Option<StopNotice>,
    /// Wall seconds of the whole run.
    pub wall_seconds: f64,
    /// The exit code shoal returns.
    pub exit_code: u8,
    /// Efficiency figures.
    pub stats: RunStats,
    /// Things the run had to deal with: workers replaced over the memory
    /// limit, processes tests left running.
    pub notices: &'a [String],
    /// pytest-cov's report, with `--cov`.
    pub coverage: Option<&'a crate::coverage::CoverageReport>,
}

impl<'a> RunSummary<'a> {
    /// Every selected test with its record, in collection order.
    pub fn tests(&self) -> impl Iterator<Item = TestView<'a>> + 'a {
        let table = self.table;
        self.records.iter().enumerate().map(move |(test, record)| TestView { item: table.item(test), record })
    }
}

/// A sink of run events.
pub trait Reporter {
    /// Collection is done and tests are about to start.
    fn run_started(&mut self, header: &RunHeader);
    /// A test has its final outcome; `done` of `total` are final now.
    /// `reports` are all of pytest's reports for it (empty if it did not run).
    fn test_finished(&mut self, test: TestView<'_>, reports: &[PhaseReport], done: usize, total: usize);
    /// The run is over.
    fn run_finished(&mut self, summary: &RunSummary<'_>) -> Result<(), crate::errors::ShoalError>;

    /// A test attempt failed and the test will be rerun.
    fn attempt_retried(&mut self, _nodeid: &str, _worker: usize, _next_attempt: u32) {}

    /// A worker slot gets a new process (after a crash, a timeout, the
    /// memory limit, or for a rerun).
    fn worker_replaced(&mut self, _worker: usize) {}

    /// A worker began a test (`elapsed`: seconds since the run started).
    fn test_started(&mut self, _nodeid: &str, _worker: usize, _elapsed: f64) {}

    /// How often this reporter wants [`Reporter::tick`] while tests run.
    fn refresh_interval(&self) -> Option<std::time::Duration> {
        None
    }

    /// Time passes (for live displays); `elapsed` as in `test_started`.
    fn tick(&mut self, _elapsed: f64) {}
}
