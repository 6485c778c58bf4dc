//! Reporters: sinks fed by the runner's events, which never influence the run.
//!
//! The runner calls every [`Reporter`] with the same facts: the run started
//! ([`RunHeader`]), a test ended ([`TestRecord`]), the run ended
//! ([`RunSummary`]). Each reporter renders them its own way: the terminal in
//! pytest's shape, the JSON report file.

pub mod json;
pub mod terminal;

use std::time::SystemTime;

use crate::outcome::{Outcome, Tally};
use crate::protocol::{CollectReport, PhaseReport, WarningMessage};

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

/// One test's final record.
#[derive(Debug, Clone)]
pub struct TestRecord {
    /// pytest's node id.
    pub nodeid: String,
    /// File, relative to the rootdir.
    pub path: String,
    /// 0-based line of the definition.
    pub line: Option<u64>,
    /// Name within the file.
    pub domain: String,
    /// The final outcome.
    pub outcome: Outcome,
    /// Why it did not run, for [`Outcome::NotRun`].
    pub not_run_reason: Option<&'static str>,
    /// The slot of the worker that ran it.
    pub worker: Option<usize>,
    /// Wall seconds of its whole protocol (0 when it did not run).
    pub duration: f64,
    /// pytest's reports, in order.
    pub reports: Vec<PhaseReport>,
    /// For a crash: how the worker ended and the tail of its output.
    pub crash: Option<CrashDetails>,
}

/// How a worker died under a test.
#[derive(Debug, Clone)]
pub struct CrashDetails {
    /// E.g. `signal 11 (SIGSEGV)`.
    pub status: String,
    /// The tail of the worker's stderr and stdout.
    pub output: String,
}

impl TestRecord {
    /// Seconds spent in one phase.
    pub fn phase_duration(&self, when: &str) -> f64 {
        self.reports
            .iter()
            .filter(|report| report.when == when && report.subtest.is_none())
            .map(|report| report.duration)
            .sum()
    }
}

/// Why the run ended early, in the words pytest prints between `!` rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopNotice {
    /// `-x` / `--maxfail`.
    MaxFail(u64),
    /// Collection errors without `--continue-on-collection-errors`.
    CollectionErrors(usize),
    /// Ctrl-C or SIGTERM.
    Interrupted,
    /// Dead workers exhausted the restart budget.
    WorkerRestartsExhausted,
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
        }
    }
}

/// Everything known at the end.
#[derive(Debug, Clone)]
pub struct RunSummary<'a> {
    /// The header, when collection got that far.
    pub header: &'a RunHeader,
    /// Every selected test, in collection order.
    pub tests: &'a [TestRecord],
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
}

/// A sink of run events.
pub trait Reporter {
    /// Collection is done and tests are about to start.
    fn run_started(&mut self, header: &RunHeader);
    /// A test has its final outcome; `done` of `total` are final now.
    fn test_finished(&mut self, test: &TestRecord, done: usize, total: usize);
    /// The run is over.
    fn run_finished(&mut self, summary: &RunSummary<'_>) -> Result<(), crate::errors::ShoalError>;
}
