//! The `--json-report` file: a versioned, machine-readable record of the run.
//!
//! Its shape is the types of [`format`](mod@format), which `shoal merge`
//! reads back and `docs/json-report.schema.json` is generated from. The
//! tests are serialized one by one from the run's records as the file is
//! written. Written atomically (temp file, then rename) so a reader never
//! sees half.

pub mod format;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use self::format::{
    AttemptEntry, CollectError, Document, FORMAT_VERSION, RunSection, SettingEntry, TestEntry,
};
use crate::errors::ShoalError;
use crate::fs::write_atomically_with;
use crate::protocol::{Phase, PhaseReport};
use crate::report::Reporter;
use crate::results::Outcome;
use crate::results::{RunHeader, RunSummary, TestRecord, TestView};

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

/// The tests, serialized one by one as the file is written (a list of
/// 100,000 entries is never built in memory).
struct Tests<'a>(&'a RunSummary<'a>);

impl Serialize for Tests<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.tests().map(test_entry))
    }
}

/// One test's entry, borrowing from its record and the test table.
fn test_entry(test: TestView<'_>) -> TestEntry<'_> {
    let record = test.record;
    TestEntry {
        nodeid: Cow::Borrowed(test.nodeid()),
        outcome: record.outcome,
        reason: record.not_run_reason.map(|reason| Cow::Borrowed(reason.as_str())),
        duration: f64::from(record.duration),
        started: f64::from(record.started),
        setup_duration: record.phase_duration(Phase::Setup),
        call_duration: record.phase_duration(Phase::Call),
        teardown_duration: record.phase_duration(Phase::Teardown),
        worker: record.worker.map(|slot| format!("gw{slot}")),
        path: Cow::Borrowed(test.item.path),
        line: test.item.line,
        group: test.item.group.map(|(_, name)| Cow::Borrowed(name)),
        markers: test.item.markers().map(Cow::Borrowed).collect(),
        attempts: attempts_of(record),
        failure: failure_text(record),
        cached: record.cached,
    }
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

/// The report of a run, its tests to be streamed from its records.
fn document<'a>(header: &'a RunHeader, summary: &'a RunSummary<'a>) -> Document<'a, Tests<'a>> {
    let mut counts = BTreeMap::new();
    for record in summary.records {
        *counts.entry(Cow::Borrowed(record.outcome.as_str())).or_insert(0) += 1;
    }
    Document {
        format_version: FORMAT_VERSION,
        run: RunSection {
            shoal: Cow::Borrowed(env!("CARGO_PKG_VERSION")),
            python: Cow::Borrowed(&header.environment.python),
            pytest: Cow::Borrowed(&header.environment.pytest),
            workers: header.workers,
            mode: Cow::Borrowed(header.mode),
            started_at: Cow::Owned(humantime::format_rfc3339_millis(header.started_at).to_string()),
            wall_seconds: summary.wall_seconds,
            exit_code: summary.exit_code,
            hash_seed: Cow::Borrowed(&header.hash_seed),
            test_seconds: summary.stats.test_seconds,
            lower_bound_seconds: summary.stats.lower_bound_seconds,
            startup_seconds: summary.stats.startup_seconds,
            between_phases_seconds: summary.stats.between_phases_seconds,
            workers_cpu_seconds: summary.stats.workers_cpu_seconds,
            peak_rss_largest_kib: summary.stats.peak_rss_largest_kib,
            peak_rss_total_kib: summary.stats.peak_rss_total_kib,
            shoal_cpu_seconds: own_usage().0,
            shoal_peak_rss_kib: own_usage().1,
            shard: header.shard.as_ref().map(Cow::Borrowed),
            profile: header.profile.as_deref().map(Cow::Borrowed),
            settings: header
                .settings
                .iter()
                .map(|setting| {
                    let entry =
                        SettingEntry { value: setting.value.clone(), source: Cow::Borrowed(&setting.source) };
                    (Cow::Borrowed(setting.key.as_str()), entry)
                })
                .collect(),
        },
        summary: counts,
        tests: Tests(summary),
        notices: Cow::Borrowed(summary.notices),
        collect_errors: summary
            .collect_reports
            .iter()
            .filter(|report| report.category == "error")
            .map(|report| CollectError {
                nodeid: Cow::Borrowed(&report.nodeid),
                message: report.message.as_deref().map(Cow::Borrowed),
                longrepr: report.longrepr.as_deref().map(Cow::Borrowed),
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
