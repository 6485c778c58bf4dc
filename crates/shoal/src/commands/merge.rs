//! `shoal merge`: the JSON reports of a sharded run's shards made into one
//! JSON report, one JUnit file and one durations history.
//!
//! Reports are read back into the records a run holds and handed to the
//! same JSON and JUnit writers a run uses; the durations come from the same
//! measuring and smoothing rules ([`crate::plan::measurements`],
//! [`History::merge`]), each shard's workers kept apart.
//!
//! Refused, with a message naming the files: a report that is not from a
//! `--shard` run, reports of different runs (another collection or another
//! number of shards), two reports of one shard, and a test in two reports.
//! Missing shards are a warning: the files are written and the exit code is
//! 2, as for an interrupted run.
//!
//! What the JSON report does not keep cannot come back: the merged JUnit
//! file has no captured output, skip reasons or failure phase (a setup or
//! teardown error reads as a setup error), and merged tests are in file
//! and line order, which is pytest's collection order in most suites.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::errors::{ShoalError, exit_code};
use crate::history::{History, HistoryPaths};
use crate::protocol::{CollectReport, CollectedItem, Environment, Phase, PhaseOutcome, PhaseReport};
use crate::report::Reporter;
use crate::report::json::JsonReporter;
use crate::report::json::format::{Document, FORMAT_VERSION, TestEntry};
use crate::report::junit::JunitReporter;
use crate::results::ShardInfo;
use crate::results::{CrashDetails, RunHeader, RunStats, RunSummary, TestDetails, TestRecord};
use crate::results::{Outcome, StopReason, Tally};
use crate::table::TestTable;

/// A `--json-report` file, read back.
type ReportFile = Document<'static>;

/// A report with the file it came from and its shard.
struct Shard {
    path: PathBuf,
    info: ShardInfo,
    report: ReportFile,
}

/// `shoal merge`: returns the merged run's exit code.
/// What `shoal merge` was given, as absolute paths.
#[derive(Debug, Clone)]
pub struct MergeInputs {
    /// The shards' `--json-report` files.
    pub reports: Vec<PathBuf>,
    /// Where to write the merged JUnit XML file.
    pub junitxml: Option<PathBuf>,
    /// Where to write the merged JSON report.
    pub json_report: Option<PathBuf>,
    /// The durations history to fold the shards' measurements into.
    pub durations_path: Option<PathBuf>,
}

/// Merges the shards' reports; returns the exit code the unsharded run
/// would have had.
pub fn merge(args: &MergeInputs) -> Result<u8, ShoalError> {
    let mut shards = args.reports.iter().map(|path| read(path)).collect::<Result<Vec<_>, _>>()?;
    shards.sort_by_key(|shard| shard.info.index);
    check_same_run(&shards)?;
    let total = shards[0].info.total;
    let missing: Vec<String> = (1..=total)
        .filter(|index| shards.iter().all(|shard| shard.info.index != *index))
        .map(|index| format!("{index}/{total}"))
        .collect();
    if !missing.is_empty() {
        crate::output::warn(&format!(
            "no report for shard{} {}: the merged report lacks their tests",
            if missing.len() == 1 { "" } else { "s" },
            missing.join(", ")
        ));
    }
    let merged = Merged::from(&shards);
    let collected = shards[0].info.collected;
    if missing.is_empty() && merged.table.len() != collected {
        crate::output::warn(&format!(
            "the shards hold {} tests but {collected} were partitioned: some tests ran nowhere",
            merged.table.len()
        ));
    }
    let exit = merged_exit_code(&shards, &merged.records, !missing.is_empty());
    let summary_header = merged.header(&shards);
    let summary = RunSummary {
        header: &summary_header,
        table: &merged.table,
        records: &merged.records,
        collect_reports: &merged.collect_reports,
        warnings: &[],
        tally: &Tally::default(),
        stop: None,
        wall_seconds: shards.iter().map(|shard| shard.report.run.wall_seconds).fold(0.0, f64::max),
        exit_code: exit,
        stats: merged.stats(&shards),
        notices: &merged.notices,
        coverage: None,
    };
    if let Some(path) = &args.json_report {
        JsonReporter::new(path.clone()).run_finished(&summary)?;
    }
    if let Some(path) = &args.junitxml {
        JunitReporter::new(path.clone()).run_finished(&summary)?;
    }
    if let Some(path) = &args.durations_path {
        let paths = HistoryPaths::new(Path::new("."), Some(path));
        let mut history = History::load(&paths);
        // Merging sees only the shards' tests, not the whole collection,
        // so it prunes nothing: runs, which collect everything, do.
        history.merge(
            &crate::plan::measurements(&merged.records, &merged.execution_order, &merged.table),
            |_| true,
            |_| true,
        );
        history.save(&paths)?;
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for record in &merged.records {
        *counts.entry(record.outcome.as_str()).or_default() += 1;
    }
    let counts: Vec<String> = counts.iter().map(|(outcome, count)| format!("{count} {outcome}")).collect();
    crate::output::notice(&format!(
        "merged {} of {total} shard reports: {} tests ({}); exit code {exit}",
        shards.len(),
        merged.table.len(),
        if counts.is_empty() { "none".to_owned() } else { counts.join(", ") }
    ));
    Ok(exit)
}

fn read(path: &Path) -> Result<Shard, ShoalError> {
    let refused = |message: String| ShoalError::Usage(format!("{}: {message}", path.display()));
    let text =
        std::fs::read(path).map_err(|error| ShoalError::io(format!("reading {}", path.display()), error))?;
    let report: ReportFile = serde_json::from_slice(&text)
        .map_err(|error| refused(format!("not a shoal JSON report ({error})")))?;
    if report.format_version != FORMAT_VERSION {
        return Err(refused(format!(
            "format_version {} (this shoal reads {FORMAT_VERSION})",
            report.format_version
        )));
    }
    let info = report.run.shard.clone().map(Cow::into_owned).ok_or_else(|| {
        refused("not from a sharded run (no run.shard): run each shard with --shard K/N".to_owned())
    })?;
    Ok(Shard { path: path.to_owned(), info, report })
}

/// Refuses reports of different runs and overlapping shards.
fn check_same_run(shards: &[Shard]) -> Result<(), ShoalError> {
    let first = &shards[0];
    let describe = |shard: &Shard| {
        format!(
            "{} (shard {}/{} of collection {}, {} tests)",
            shard.path.display(),
            shard.info.index,
            shard.info.total,
            shard.info.collection,
            shard.info.collected
        )
    };
    for shard in &shards[1..] {
        if (shard.info.total, &shard.info.collection) != (first.info.total, &first.info.collection) {
            return Err(ShoalError::Usage(format!(
                "{} and {} are not shards of one run: different collections or shard counts",
                describe(first),
                describe(shard)
            )));
        }
    }
    for pair in shards.windows(2) {
        if pair[0].info.index == pair[1].info.index {
            return Err(ShoalError::Usage(format!(
                "{} and {} are both shard {}/{}",
                pair[0].path.display(),
                pair[1].path.display(),
                pair[0].info.index,
                pair[0].info.total
            )));
        }
    }
    let mut seen: HashMap<&str, &Path> = HashMap::new();
    for shard in shards {
        for test in &shard.report.tests {
            if let Some(other) = seen.insert(&test.nodeid, &shard.path) {
                return Err(ShoalError::Usage(format!(
                    "{} is in both {} and {}: the shards overlap (were they split with different \
                     durations histories?)",
                    test.nodeid,
                    other.display(),
                    shard.path.display()
                )));
            }
        }
    }
    Ok(())
}

/// The shards' tests as one run.
struct Merged {
    table: TestTable,
    records: Vec<TestRecord>,
    /// `(lane, test)`: each shard's worker is a lane of its own.
    execution_order: Vec<(u16, u32)>,
    collect_reports: Vec<CollectReport>,
    notices: Vec<String>,
}

impl Merged {
    fn from(shards: &[Shard]) -> Self {
        let mut tests: Vec<(usize, &TestEntry<'_>)> = shards
            .iter()
            .enumerate()
            .flat_map(|(shard, file)| file.report.tests.iter().map(move |test| (shard, test)))
            .collect();
        tests.sort_by(|(_, a), (_, b)| (&a.path, a.line, &a.nodeid).cmp(&(&b.path, b.line, &b.nodeid)));
        let mut table = TestTable::default();
        let mut records = Vec::with_capacity(tests.len());
        let mut lanes: BTreeMap<(usize, u16), Vec<(f64, u32)>> = BTreeMap::new();
        for (shard, test) in tests {
            table.push(CollectedItem {
                nodeid: test.nodeid.to_string(),
                path: test.path.to_string(),
                line: test.line.map(u64::from),
                domain: test.nodeid.split_once("::").map_or("", |(_, name)| name).replace("::", "."),
                markers: test.markers.iter().map(|marker| marker.to_string()).collect(),
                group: test.group.as_deref().map(str::to_owned),
                ..CollectedItem::default()
            });
            let index = u32::try_from(records.len()).expect("fewer than 4 billion tests");
            if let Some(worker) = slot(test.worker.as_deref())
                && !matches!(test.outcome, Outcome::Crashed | Outcome::Timeout | Outcome::NotRun)
            {
                lanes.entry((shard, worker)).or_default().push((test.started, index));
            }
            records.push(record_of(test));
        }
        let mut execution_order = Vec::new();
        for (lane, tests) in lanes.into_values().enumerate() {
            let mut tests = tests;
            tests.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let lane = u16::try_from(lane).unwrap_or(u16::MAX);
            execution_order.extend(tests.into_iter().map(|(_, test)| (lane, test)));
        }
        // Every shard collects everything: a collection error is in each report.
        let mut collect_reports: Vec<CollectReport> = Vec::new();
        for error in shards.iter().flat_map(|shard| &shard.report.collect_errors) {
            if collect_reports.iter().all(|known| known.nodeid != error.nodeid) {
                collect_reports.push(CollectReport {
                    nodeid: error.nodeid.to_string(),
                    outcome: "failed".to_owned(),
                    category: "error".to_owned(),
                    longrepr: error.longrepr.as_deref().map(str::to_owned),
                    message: error.message.as_deref().map(str::to_owned),
                    skip_at: None,
                });
            }
        }
        let notices = shards
            .iter()
            .flat_map(|shard| {
                shard.report.notices.iter().map(move |notice| format!("shard {}: {notice}", shard.info.index))
            })
            .collect();
        Self { table, records, execution_order, collect_reports, notices }
    }

    fn header(&self, shards: &[Shard]) -> RunHeader {
        let first = &shards[0].report.run;
        let started_at = shards
            .iter()
            .filter_map(|shard| humantime::parse_rfc3339(&shard.report.run.started_at).ok())
            .min()
            .unwrap_or_else(SystemTime::now);
        RunHeader {
            // The shards' reports keep only these of what they ran on.
            environment: Environment {
                python: first.python.to_string(),
                pytest: first.pytest.to_string(),
                // pytest's default summary options.
                ..Environment::default()
            },
            workers: shards.iter().map(|shard| shard.report.run.workers).sum(),
            mode: if first.mode == "fork" { "fork" } else { "spawn" },
            selected: self.table.len(),
            deselected: 0,
            collect_errors: self.collect_reports.len(),
            collect_skipped: 0,
            collection_notes: Vec::new(),
            hash_seed: first.hash_seed.to_string(),
            max_failures: None,
            budget: None,
            started_at,
            expectation: None,
            shard: None,
            // The shards ran one profile; their settings differ by shard.
            profile: first.profile.as_deref().map(str::to_owned),
            settings: Vec::new(),
        }
    }

    fn stats(&self, shards: &[Shard]) -> RunStats {
        let runs = || shards.iter().map(|shard| &shard.report.run);
        RunStats {
            test_seconds: self.records.iter().map(|record| f64::from(record.duration)).sum(),
            lower_bound_seconds: runs().map(|run| run.lower_bound_seconds).fold(0.0, f64::max),
            startup_seconds: runs().map(|run| run.startup_seconds).fold(0.0, f64::max),
            between_phases_seconds: runs().map(|run| run.between_phases_seconds).sum(),
            workers_cpu_seconds: runs().map(|run| run.workers_cpu_seconds).sum(),
            peak_rss_largest_kib: runs().map(|run| run.peak_rss_largest_kib).max().unwrap_or(0),
            peak_rss_total_kib: runs().map(|run| run.peak_rss_total_kib).sum(),
        }
    }
}

/// The worker slot of `gwN`.
fn slot(worker: Option<&str>) -> Option<u16> {
    worker?.strip_prefix("gw")?.parse().ok()
}

/// A test's record, as far as the report kept it.
fn record_of(test: &TestEntry<'_>) -> TestRecord {
    let mut record =
        attempt_record(test.outcome, test.duration, test.worker.as_deref(), test.failure.as_deref());
    record.not_run_reason = test.reason.as_deref().and_then(StopReason::from_name);
    record.started = test.started as f32;
    record.cached = test.cached;
    record.phase_seconds =
        [test.setup_duration as f32, test.call_duration as f32, test.teardown_duration as f32];
    if let Some((_, earlier)) = test.attempts.split_last() {
        let earlier: Vec<TestRecord> = earlier
            .iter()
            .map(|attempt| {
                attempt_record(
                    attempt.outcome,
                    attempt.duration,
                    attempt.worker.as_deref(),
                    attempt.failure.as_deref(),
                )
            })
            .collect();
        if !earlier.is_empty() {
            record.details.get_or_insert_with(Default::default).earlier_attempts = earlier;
        }
    }
    record
}

/// One attempt's record: its outcome, and its failure text as pytest's
/// report (a crash or a timeout as how the worker ended).
fn attempt_record(
    outcome: Outcome,
    duration: f64,
    worker: Option<&str>,
    failure: Option<&str>,
) -> TestRecord {
    let mut record = TestRecord::new(outcome);
    record.worker = slot(worker);
    record.duration = duration as f32;
    let Some(text) = failure else { return record };
    let details = match outcome {
        Outcome::Crashed | Outcome::Timeout => {
            let (description, output) = text.split_once('\n').unwrap_or((text, ""));
            let crash = CrashDetails {
                message: description.to_owned(),
                description: description.to_owned(),
                output: output.to_owned(),
            };
            TestDetails { crash: Some(crash), ..TestDetails::default() }
        }
        _ => {
            let when = if outcome == Outcome::Error { Phase::Setup } else { Phase::Call };
            TestDetails { failed_reports: vec![failed_report(when, text)], ..TestDetails::default() }
        }
    };
    record.details = Some(Box::new(details));
    record
}

/// A failed phase report carrying pytest's failure text; its one-line
/// message is the text's first `E ` line, as pytest's crash message is.
fn failed_report(when: Phase, longrepr: &str) -> PhaseReport {
    let message = longrepr
        .lines()
        .find_map(|line| line.strip_prefix("E ").map(|rest| rest.trim().to_owned()))
        .or_else(|| longrepr.lines().rev().find(|line| !line.trim().is_empty()).map(str::to_owned));
    PhaseReport {
        when,
        outcome: PhaseOutcome::Failed,
        category: if when == Phase::Call { "failed" } else { "error" }.to_owned(),
        letter: String::new(),
        word: String::new(),
        duration: 0.0,
        subtest: None,
        wasxfail: None,
        head_line: None,
        longrepr: Some(longrepr.to_owned()),
        message,
        sections: Vec::new(),
        crash_path: None,
        crash_line: None,
        skip_at: None,
        crash_text: None,
    }
}

/// The merged run's exit code: 2 when shards are missing; else the worst
/// of the shards' interruptions and internal errors; else 1 when any shard
/// failed; else 5 when no shard had tests; else 0.
fn merged_exit_code(shards: &[Shard], records: &[TestRecord], missing_shards: bool) -> u8 {
    let codes = || shards.iter().map(|shard| shard.report.run.exit_code);
    if missing_shards {
        return exit_code::INTERRUPTED;
    }
    if let Some(worst) =
        codes().filter(|code| (exit_code::INTERRUPTED..=exit_code::USAGE_ERROR).contains(code)).max()
    {
        return worst;
    }
    if codes().any(|code| code == exit_code::TESTS_FAILED)
        || records.iter().any(|record| record.outcome.is_failure())
    {
        return exit_code::TESTS_FAILED;
    }
    if records.is_empty() { exit_code::NO_TESTS_COLLECTED } else { exit_code::OK }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_read_back_as_the_reports_the_writers_take() {
        let record = attempt_record(
            Outcome::Failed,
            0.5,
            Some("gw3"),
            Some("def test():\n>       assert 2 == 3\nE       assert 2 == 3\n\nt.py:2: AssertionError"),
        );
        assert_eq!(record.worker, Some(3));
        let report = &record.failed_reports()[0];
        assert_eq!((report.when, report.message.as_deref()), (Phase::Call, Some("assert 2 == 3")));
        let crashed =
            attempt_record(Outcome::Crashed, 1.0, Some("gw0"), Some("worker gw0 died: signal 9\nlast words"));
        let crash = crashed.crash().expect("a crash");
        assert_eq!(
            (crash.description.as_str(), crash.output.as_str()),
            ("worker gw0 died: signal 9", "last words")
        );
    }
}
