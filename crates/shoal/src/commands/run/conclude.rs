//! The last phases: remember what the run measured (the durations history,
//! pytest's last-failed record), then conclude: the exit code, pytest-cov's
//! combined report, and the summary every reporter ends with.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::coverage::{CoverageReport, CoverageRun};
use crate::errors::{ShoalError, exit_code};
use crate::history::{History, HistoryPaths};
use crate::lastfailed::LastFailed;
use crate::plan;
use crate::pool::Collected;
use crate::protocol::CoverageOptions;
use crate::report::Reporter;
use crate::results::{Outcome, RunHeader, RunStats, RunSummary, StopReason, TestRecord};
use crate::settings::RunSettings;
use crate::table::TestTable;

use super::drive::Results;

/// Folds the run's durations into the history (kept as it was by a sharded
/// run: every shard must partition from the same history, and `shoal
/// merge` folds the shards' measurements in) and updates pytest's
/// last-failed record. Failing to save either is a warning.
pub(super) fn remember(
    settings: &RunSettings,
    collected: &Collected,
    results: &Results,
    mut history: History,
    last_failed: Option<LastFailed>,
) {
    let rootdir = Path::new(&collected.hello.environment.rootdir);
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
    let whole_collection = results.whole_collection.as_ref().unwrap_or(&results.table);
    let mut measured = plan::measurements(&results.records, &results.execution_order, &results.table);
    measured.file_collect =
        collected.file_seconds.iter().map(|(file, seconds)| (file.as_str(), *seconds)).collect();
    measured.file_import =
        collected.import_seconds.iter().map(|(file, seconds)| (file.as_str(), *seconds)).collect();
    measured.file_building = collected.building_seconds(whole_collection);
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
    let history_paths = HistoryPaths::new(rootdir, settings.durations_path.as_deref());
    // A queued build's history is written by `shoal report`, from every
    // machine's measurements.
    if settings.shard.is_none()
        && settings.queue.is_none()
        && let Err(error) = history.save(&history_paths)
    {
        crate::output::warn(&format!("the durations history was not saved: {error}"));
    }
    if let Some(mut record) = last_failed {
        record.update(
            results
                .records
                .iter()
                .enumerate()
                .map(|(test, record)| (results.table.nodeid(test), record.outcome)),
            collected
                .collect_reports
                .iter()
                .filter(|report| report.category == "error")
                .map(|r| r.nodeid.as_str()),
        );
        if let Err(error) = record.save() {
            crate::output::warn(&format!("pytest's last-failed record was not saved: {error}"));
        }
    }
}

/// The most failures [`order_notices`] names.
const ORDER_NOTICES: usize = 5;

/// A test is slow against its history when it took more than this many
/// times its recorded duration...
const SLOWER_THAN_HISTORY: f64 = 2.0;

/// ...and at least this many seconds more: a 2 ms test taking 5 ms is noise.
const SLOWER_BY_AT_LEAST: f64 = 1.0;

/// At most this many slow tests are named; the rest are counted.
const SLOW_NOTICES: usize = 10;

/// The tests that took more than twice their recorded duration (and a
/// second more), slowest against their history first: where a performance
/// regression in a test shows first. Timed-out tests are named elsewhere.
pub(super) fn slow_notices(history: &History, results: &Results) -> Vec<String> {
    let tests = results.records.iter().enumerate().map(|(test, record)| (results.table.nodeid(test), record));
    slow_against_history(tests, &history.durations)
}

/// [`slow_notices`] of `(nodeid, record)` pairs against recorded durations.
fn slow_against_history<'a>(
    tests: impl Iterator<Item = (&'a str, &'a TestRecord)>,
    recorded: &BTreeMap<String, f64>,
) -> Vec<String> {
    let mut slow: Vec<(f64, String)> = tests
        .filter(|(_, record)| !matches!(record.outcome, Outcome::NotRun | Outcome::Timeout))
        .filter_map(|(nodeid, record)| {
            let recorded = *recorded.get(nodeid)?;
            let took = f64::from(record.duration);
            (took > SLOWER_THAN_HISTORY * recorded && took - recorded >= SLOWER_BY_AT_LEAST).then(|| {
                let ratio = took / recorded.max(f64::EPSILON);
                let notice = format!(
                    "{nodeid} was slow against its history: {took:.2}s, {ratio:.1}x its recorded {recorded:.2}s"
                );
                (ratio, notice)
            })
        })
        .collect();
    slow.sort_by(|(left, _), (right, _)| right.total_cmp(left));
    let more = slow.len().saturating_sub(SLOW_NOTICES);
    let mut notices: Vec<String> = slow.into_iter().take(SLOW_NOTICES).map(|(_, notice)| notice).collect();
    if more > 0 {
        notices.push(format!("{more} more tests were slow against their history"));
    }
    notices
}

/// For each test that fails now and passed last time (it is in the history
/// and not in pytest's last-failed record) after other tests ran on its
/// worker: a line saying so, and how to rerun it after those tests alone.
pub(super) fn order_notices(
    settings: &RunSettings,
    last_failed: Option<&LastFailed>,
    history: &History,
    results: &Results,
) -> Vec<String> {
    let Some(last_failed) = last_failed else { return Vec::new() };
    let records = &results.records;
    let newly_failing = records.iter().enumerate().filter(|(test, record)| {
        let nodeid = results.table.nodeid(*test);
        record.outcome.is_failure()
            && record.outcome != Outcome::NotRun
            && history.durations.contains_key(nodeid)
            && !last_failed.contains(nodeid)
    });
    // How many tests its worker slot finished before each test: the order
    // results arrived in (start times, taken as results arrive, can blur
    // for sub-millisecond tests). A rerun's last attempt counts.
    let mut finished_on_slot: HashMap<u16, usize> = HashMap::new();
    let mut ran_before = vec![0usize; records.len()];
    for &(slot, test) in &results.execution_order {
        let count = finished_on_slot.entry(slot).or_default();
        ran_before[test as usize] = *count;
        *count += 1;
    }
    let mut notices: Vec<String> = Vec::new();
    let mut more = 0;
    for (test, record) in newly_failing {
        let (Some(worker), before) = (record.worker, ran_before[test]) else { continue };
        if before == 0 {
            continue;
        }
        if notices.len() == ORDER_NOTICES {
            more += 1;
            continue;
        }
        let nodeid = results.table.nodeid(test);
        let replay = match &settings.json_report {
            Some(path) => format!("`shoal replay {} {nodeid}` reruns it after them", path.display()),
            None => {
                format!("run with --json-report PATH, then `shoal replay PATH {nodeid}` reruns it after them")
            }
        };
        notices.push(format!(
            "{nodeid} failed, and passed last time: worker gw{worker} ran {before} test{} before it; {replay}",
            if before == 1 { "" } else { "s" }
        ));
    }
    if more > 0 {
        notices.push(format!(
            "{more} more tests failed that passed last time, after other tests on their worker"
        ));
    }
    notices
}

/// What the end of the run needs beyond its results.
pub(super) struct Ending<'a> {
    pub(super) settings: &'a RunSettings,
    /// When the run started.
    pub(super) clock: std::time::Instant,
    pub(super) header: &'a RunHeader,
    pub(super) collected: &'a Collected,
    pub(super) startup_seconds: f64,
    /// pytest-cov's options, with `--cov`, and the run that combines the
    /// workers' data.
    pub(super) coverage: Option<(&'a CoverageOptions, &'a CoverageRun)>,
    /// pytest's own `--junitxml`, when shoal was not given one.
    pub(super) pytest_junitxml: Option<&'a Path>,
}

/// The exit code and the summary: every reporter's last word. With
/// coverage, `shut_down_workers` runs first (every worker must have written
/// its data before it is combined).
pub(super) fn conclude(
    ending: &Ending<'_>,
    results: &Results,
    reporters: &mut [Box<dyn Reporter>],
    shut_down_workers: impl FnOnce(),
) -> Result<u8, ShoalError> {
    let settings = ending.settings;
    let collect_errors = ending.collected.collect_errors();
    let mut tally = results.tally.clone();
    tally.add("deselected", ending.header.deselected);
    tally.add("warnings", results.warnings.len() as u64);
    let any_failure = results.records.iter().any(|record| {
        record.outcome.is_failure() || (settings.flaky_fails && record.outcome == Outcome::Flaky)
    }) || collect_errors > 0;
    let mut exit = exit_code_of(results, ending.header, any_failure);
    let mut coverage_report = None;
    if let Some((options, coverage)) = ending.coverage {
        shut_down_workers();
        coverage_report = report_coverage(coverage, options, results.stop, any_failure)?;
        if coverage_report.as_ref().is_some_and(|report| report.fail_under_missed)
            && matches!(exit, exit_code::OK | exit_code::NO_TESTS_COLLECTED)
        {
            // pytest-cov counts a missed --cov-fail-under as a failed test.
            exit = exit_code::TESTS_FAILED;
        }
    }
    let summary = RunSummary {
        header: ending.header,
        table: &results.table,
        records: &results.records,
        collect_reports: &ending.collected.collect_reports,
        warnings: &results.warnings,
        tally: &tally,
        stop: results.stop,
        wall_seconds: ending.clock.elapsed().as_secs_f64(),
        exit_code: exit,
        stats: run_stats(results, ending.header.workers, ending.startup_seconds),
        notices: &results.notices,
        coverage: coverage_report.as_ref(),
    };
    let mut reported: Result<(), ShoalError> =
        reporters.iter_mut().try_for_each(|reporter| reporter.run_finished(&summary));
    if let Some(path) = ending.pytest_junitxml {
        let junit = crate::report::junit::JunitReporter::new(path.to_owned()).run_finished(&summary);
        reported = reported.and(junit);
    }
    reported.map(|()| exit)
}

/// pytest's exit code for how the run ended.
fn exit_code_of(results: &Results, header: &RunHeader, any_failure: bool) -> u8 {
    match results.stop {
        Some(StopReason::Interrupted | StopReason::CollectionErrors) => exit_code::INTERRUPTED,
        _ if any_failure => exit_code::TESTS_FAILED,
        Some(StopReason::MaxFail | StopReason::WorkerRestartsExhausted | StopReason::Budget) => {
            exit_code::TESTS_FAILED
        }
        // A shard left empty while other shards have tests is no failure.
        None if results.table.is_empty()
            && header.shard.as_ref().is_none_or(|shard| shard.collected == 0)
            && results.whole_collection.as_ref().is_none_or(TestTable::is_empty) =>
        {
            exit_code::NO_TESTS_COLLECTED
        }
        None => exit_code::OK,
    }
}

/// Combines the workers' coverage and writes pytest-cov's reports, as
/// pytest-cov would at the end of this run: nothing after an interrupt or
/// collection errors (pytest's test loop never ended normally), data but no
/// report after a failure with `--no-cov-on-fail`.
fn report_coverage(
    coverage: &CoverageRun,
    options: &CoverageOptions,
    stop: Option<StopReason>,
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
fn run_stats(results: &Results, workers: usize, startup_seconds: f64) -> RunStats {
    let durations: Vec<f64> = results.records.iter().map(|record| f64::from(record.duration)).collect();
    let test_seconds: f64 = durations.iter().sum();
    let longest = durations.iter().copied().fold(0.0, f64::max);
    let usage = results.usage.values();
    RunStats {
        test_seconds,
        lower_bound_seconds: startup_seconds + (test_seconds / workers.max(1) as f64).max(longest),
        startup_seconds,
        between_phases_seconds: results.between_phases_seconds,
        workers_cpu_seconds: usage.clone().map(|(cpu, _)| cpu).sum(),
        peak_rss_largest_kib: usage.clone().map(|(_, rss)| *rss).max().unwrap_or(0),
        peak_rss_total_kib: usage.map(|(_, rss)| rss).sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tests_twice_as_slow_as_their_history_and_a_second_more_are_named_slowest_first() {
        let record = |outcome, seconds: f32| {
            let mut record = TestRecord::new(outcome);
            record.duration = seconds;
            record
        };
        let recorded: BTreeMap<String, f64> = [("a", 1.0), ("b", 0.5), ("c", 0.001), ("d", 1.0), ("e", 1.0)]
            .map(|(id, s)| (id.to_owned(), s))
            .into();
        let records = [
            ("a", record(Outcome::Passed, 2.5)),
            ("b", record(Outcome::Failed, 3.0)),
            ("c", record(Outcome::Passed, 0.9)),
            ("d", record(Outcome::Timeout, 9.0)),
            ("e", record(Outcome::Passed, 1.9)),
            ("new", record(Outcome::Passed, 9.0)),
        ];
        let notices = slow_against_history(records.iter().map(|(id, record)| (*id, record)), &recorded);
        assert_eq!(
            notices,
            [
                "b was slow against its history: 3.00s, 6.0x its recorded 0.50s",
                "a was slow against its history: 2.50s, 2.5x its recorded 1.00s",
            ],
            "c is under a second more, d timed out, e is under twice, new has no history"
        );
    }
}
