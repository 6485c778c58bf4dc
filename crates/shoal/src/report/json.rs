//! The `--json-report` file: a versioned, machine-readable record of the run.
//!
//! Shape (`format_version` 1):
//! `{format_version, run: {shoal, python, pytest, workers, mode, started_at,
//! wall_seconds, exit_code, hash_seed, test_seconds, lower_bound_seconds,
//! startup_seconds, workers_cpu_seconds, peak_rss_largest_kib,
//! peak_rss_total_kib, shoal_cpu_seconds, shoal_peak_rss_kib, shard? {index,
//! total, collection, collected}},
//! summary: {outcome: count},
//! tests: [{nodeid, outcome, reason?, duration, started, setup_duration,
//! call_duration, teardown_duration, worker, path, line, group?, markers,
//! attempts? (each: attempt, outcome, duration, worker, failure?), failure?}],
//! collect_errors: [{nodeid, message, longrepr}]}`.
//! Written atomically (temp file, then rename) so a reader never sees half.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::errors::ShoalError;
use crate::fs::write_atomically_with;
use crate::protocol::{Phase, PhaseReport};
use crate::report::Reporter;
use crate::results::{Outcome, StopReason};
use crate::results::{RunHeader, RunSummary, TestRecord, TestView};

/// The version of the report's shape; bump it on incompatible changes.
pub const FORMAT_VERSION: u32 = 1;

/// Writes the JSON report when the run ends.
pub struct JsonReporter {
    path: PathBuf,
}

impl JsonReporter {
    /// A reporter writing to `path`.
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }
}

#[derive(Serialize)]
struct Document<'a> {
    format_version: u32,
    run: RunSection<'a>,
    summary: BTreeMap<&'static str, u64>,
    tests: Tests<'a>,
    collect_errors: Vec<CollectErrorEntry<'a>>,
    notices: &'a [String],
}

#[derive(Serialize)]
struct RunSection<'a> {
    shoal: &'static str,
    python: &'a str,
    pytest: &'a str,
    workers: usize,
    mode: &'a str,
    started_at: String,
    wall_seconds: f64,
    exit_code: u8,
    hash_seed: &'a str,
    test_seconds: f64,
    lower_bound_seconds: f64,
    startup_seconds: f64,
    workers_cpu_seconds: f64,
    peak_rss_largest_kib: u64,
    peak_rss_total_kib: u64,
    shoal_cpu_seconds: f64,
    shoal_peak_rss_kib: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    shard: Option<&'a crate::results::ShardInfo>,
}

/// The tests, serialized one by one as the file is written (a list of
/// 100,000 entries is never built in memory).
struct Tests<'a>(&'a RunSummary<'a>);

impl Serialize for Tests<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.tests().map(|test| {
            let record = test.record;
            TestEntry {
                nodeid: test.nodeid(),
                outcome: record.outcome,
                reason: record.not_run_reason.map(StopReason::as_str),
                duration: f64::from(record.duration),
                started: f64::from(record.started),
                setup_duration: record.phase_duration(Phase::Setup),
                call_duration: record.phase_duration(Phase::Call),
                teardown_duration: record.phase_duration(Phase::Teardown),
                worker: record.worker.map(|slot| format!("gw{slot}")),
                path: test.item.path,
                line: test.item.line,
                group: test.item.group.map(|(_, name)| name),
                markers: test.item.markers().collect(),
                attempts: attempts_of(record),
                failure: failure_text(record),
            }
        }))
    }
}

#[derive(Serialize)]
struct TestEntry<'a> {
    nodeid: &'a str,
    outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    duration: f64,
    started: f64,
    setup_duration: f64,
    call_duration: f64,
    teardown_duration: f64,
    worker: Option<String>,
    path: &'a str,
    line: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<&'a str>,
    markers: Vec<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    attempts: Vec<AttemptEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure: Option<String>,
}

/// One attempt of a rerun test.
#[derive(Serialize)]
struct AttemptEntry {
    attempt: usize,
    outcome: Outcome,
    duration: f64,
    worker: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure: Option<String>,
}

/// Every attempt of a test that was rerun (empty when it ran once).
fn attempts_of(record: &TestRecord) -> Vec<AttemptEntry> {
    let earlier = record.earlier_attempts();
    if earlier.is_empty() {
        return Vec::new();
    }
    earlier
        .iter()
        .chain(std::iter::once(record))
        .enumerate()
        .map(|(index, attempt)| AttemptEntry {
            attempt: index + 1,
            outcome: if attempt.outcome == Outcome::Flaky { Outcome::Passed } else { attempt.outcome },
            duration: f64::from(attempt.duration),
            worker: attempt.worker.map(|slot| format!("gw{slot}")),
            failure: failure_text(attempt),
        })
        .collect()
}

#[derive(Serialize)]
struct CollectErrorEntry<'a> {
    nodeid: &'a str,
    message: Option<&'a str>,
    longrepr: Option<&'a str>,
}

/// shoal's own CPU seconds and peak memory (KiB) so far, without its workers.
fn own_usage() -> (f64, u64) {
    match nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF) {
        Ok(usage) => {
            let seconds = |time: nix::sys::time::TimeVal| time.tv_sec() as f64 + time.tv_usec() as f64 / 1e6;
            (
                seconds(usage.user_time()) + seconds(usage.system_time()),
                u64::try_from(usage.max_rss()).unwrap_or(0),
            )
        }
        Err(_) => (0.0, 0),
    }
}

/// The failure text of a test: pytest's longrepr of every failed phase, or
/// how the worker died.
fn failure_text(record: &TestRecord) -> Option<String> {
    if let Some(crash) = record.crash() {
        return Some(format!("{}\n{}", crash.description, crash.output));
    }
    let texts: Vec<&str> =
        record.failed_reports().iter().filter_map(|report| report.longrepr.as_deref()).collect();
    (!texts.is_empty()).then(|| texts.join("\n"))
}

fn document<'a>(header: &'a RunHeader, summary: &'a RunSummary<'a>) -> Document<'a> {
    let mut counts = BTreeMap::new();
    for record in summary.records {
        *counts.entry(record.outcome.as_str()).or_insert(0) += 1;
    }
    Document {
        format_version: FORMAT_VERSION,
        run: RunSection {
            shoal: env!("CARGO_PKG_VERSION"),
            python: &header.python,
            pytest: &header.pytest,
            workers: header.workers,
            mode: header.mode,
            started_at: humantime::format_rfc3339_millis(header.started_at).to_string(),
            wall_seconds: summary.wall_seconds,
            exit_code: summary.exit_code,
            hash_seed: &header.hash_seed,
            test_seconds: summary.stats.test_seconds,
            lower_bound_seconds: summary.stats.lower_bound_seconds,
            startup_seconds: summary.stats.startup_seconds,
            workers_cpu_seconds: summary.stats.workers_cpu_seconds,
            peak_rss_largest_kib: summary.stats.peak_rss_largest_kib,
            peak_rss_total_kib: summary.stats.peak_rss_total_kib,
            shoal_cpu_seconds: own_usage().0,
            shoal_peak_rss_kib: own_usage().1,
            shard: header.shard.as_ref(),
        },
        summary: counts,
        tests: Tests(summary),
        notices: summary.notices,
        collect_errors: summary
            .collect_reports
            .iter()
            .filter(|report| report.category == "error")
            .map(|report| CollectErrorEntry {
                nodeid: &report.nodeid,
                message: report.message.as_deref(),
                longrepr: report.longrepr.as_deref(),
            })
            .collect(),
    }
}

impl Reporter for JsonReporter {
    fn run_started(&mut self, _header: &RunHeader) {}

    fn test_finished(&mut self, _test: TestView<'_>, _reports: &[PhaseReport], _done: usize, _total: usize) {}

    fn run_finished(&mut self, summary: &RunSummary<'_>) -> Result<(), ShoalError> {
        let document = document(summary.header, summary);
        write_atomically_with(&self.path, |writer| {
            serde_json::to_writer_pretty(&mut *writer, &document)?;
            writer.write_all(b"\n")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_run_snapshot() {
        let run = crate::report::sample::SampleRun::new();
        let text = run.written_by(JsonReporter::new);
        let mut document: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        // shoal's own version and usage vary from build to build and run to run.
        for key in ["shoal", "shoal_cpu_seconds", "shoal_peak_rss_kib"] {
            assert!(document["run"].get(key).is_some(), "run.{key} is there");
            document["run"][key] = serde_json::json!("[redacted]");
        }
        insta::assert_snapshot!(serde_json::to_string_pretty(&document).expect("serializes"));
    }
}
