//! What a run reports as a whole: its header (what was known when tests
//! started), where it ended against the physical limits, and the summary
//! every reporter and `shoal merge` work from.

use std::time::SystemTime;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::coverage::CoverageReport;
use crate::protocol::{CollectReport, Environment, WarningMessage};
use crate::results::{StopReason, Tally, TestRecord, TestView};
use crate::table::TestTable;

/// What is known when tests start.
#[derive(Debug, Clone)]
pub struct RunHeader {
    /// What the workers run on.
    pub environment: Environment,
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
    /// Lines the header has after the collected count (pytest's
    /// `pytest_report_collectionfinish`: what `--lf` or `--ff` did).
    pub collection_notes: Vec<String>,
    /// `PYTHONHASHSEED` given to every worker.
    pub hash_seed: String,
    /// `-x`/`--maxfail`: the run stops after this many failures.
    pub max_failures: Option<u64>,
    /// `--budget`: seconds the run may take.
    pub budget: Option<f64>,
    /// When the run started.
    pub started_at: SystemTime,
    /// What the history predicts, when there is history.
    pub expectation: Option<Expectation>,
    /// The shard this run is, with `--shard`.
    pub shard: Option<ShardInfo>,
    /// The profile the run was given, if any.
    pub profile: Option<String>,
    /// Every setting the run resolved, with where it came from (empty for
    /// a merged run).
    pub settings: Vec<crate::values::ResolvedSetting>,
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
    /// The tests' protocol time outside their phases, added up: pytest
    /// making and logging reports, the hooks around the phases (its
    /// plugins' too). In no test's duration, yet a sequential run spends it
    /// too.
    pub between_phases_seconds: f64,
    /// CPU seconds used by the worker processes.
    pub workers_cpu_seconds: f64,
    /// Peak resident memory of the largest worker, in KiB (shared pages of
    /// forked workers count in each).
    pub peak_rss_largest_kib: u64,
    /// Sum of the workers' peaks, in KiB.
    pub peak_rss_total_kib: u64,
}

/// What the JSON report says about a sharded run, for `shoal merge`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ShardInfo {
    /// The shard, 1-based, as in `--shard K/N`.
    #[schemars(range(min = 1))]
    pub index: usize,
    /// The number of shards.
    #[schemars(range(min = 1))]
    pub total: usize,
    /// A fingerprint of the node ids that were partitioned (every shard's,
    /// after `-k`, `-m` and `--lf`): 64-bit FNV-1a over the sorted ids, each
    /// followed by a newline, as 16 hex digits. Every shard of one run has
    /// the same.
    #[schemars(regex(pattern = r"^[0-9a-f]{16}$"))]
    pub collection: String,
    /// How many tests were partitioned over all the shards.
    pub collected: usize,
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
    pub stop: Option<StopReason>,
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
    pub coverage: Option<&'a CoverageReport>,
}

impl<'a> RunSummary<'a> {
    /// Every selected test with its record, in collection order.
    pub fn tests(&self) -> impl Iterator<Item = TestView<'a>> + 'a {
        let table = self.table;
        self.records.iter().enumerate().map(move |(test, record)| TestView { item: table.item(test), record })
    }

    /// The line pytest (or shoal, where pytest has none) prints between
    /// `!` rules when the run stopped early.
    pub fn stop_message(&self) -> Option<String> {
        let header = self.header;
        Some(match self.stop? {
            StopReason::MaxFail => format!("stopping after {} failures", header.max_failures.unwrap_or(0)),
            StopReason::CollectionErrors => {
                let count = header.collect_errors;
                format!("Interrupted: {count} error{} during collection", if count == 1 { "" } else { "s" })
            }
            StopReason::Interrupted => "KeyboardInterrupt".to_owned(),
            StopReason::WorkerRestartsExhausted => {
                "stopping: workers kept dying and the restart budget ran out".to_owned()
            }
            StopReason::Budget => {
                format!(
                    "stopping: the rest would not end within the {}s budget",
                    header.budget.unwrap_or(0.0)
                )
            }
        })
    }
}
