//! The `--json-report` file: a versioned, machine-readable record of the run.
//!
//! Shape (`format_version` 1):
//! `{format_version, run: {shoal, python, pytest, workers, mode, started_at,
//! wall_seconds, exit_code, hash_seed, test_seconds, lower_bound_seconds,
//! startup_seconds, workers_cpu_seconds, peak_rss_largest_kib,
//! peak_rss_total_kib}, summary: {outcome: count},
//! tests: [{nodeid, outcome, reason?, duration, setup_duration,
//! call_duration, teardown_duration, worker, path, line, failure?}],
//! collect_errors: [{nodeid, message, longrepr}]}`.
//! Written atomically (temp file, then rename) so a reader never sees half.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::errors::ShoalError;
use crate::outcome::Outcome;
use crate::report::{Reporter, RunHeader, RunSummary, TestRecord};

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
    tests: Vec<TestEntry<'a>>,
    collect_errors: Vec<CollectErrorEntry<'a>>,
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
}

#[derive(Serialize)]
struct TestEntry<'a> {
    nodeid: &'a str,
    outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    duration: f64,
    setup_duration: f64,
    call_duration: f64,
    teardown_duration: f64,
    worker: Option<String>,
    path: &'a str,
    line: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure: Option<String>,
}

#[derive(Serialize)]
struct CollectErrorEntry<'a> {
    nodeid: &'a str,
    message: Option<&'a str>,
    longrepr: Option<&'a str>,
}

/// The failure text of a test: pytest's longrepr of every failed phase, or
/// how the worker died.
fn failure_text(test: &TestRecord) -> Option<String> {
    if let Some(crash) = &test.crash {
        return Some(format!("worker died: {}\n{}", crash.status, crash.output));
    }
    let texts: Vec<&str> = test
        .reports
        .iter()
        .filter(|report| report.outcome == "failed")
        .filter_map(|report| report.longrepr.as_deref())
        .collect();
    (!texts.is_empty()).then(|| texts.join("\n"))
}

fn document<'a>(header: &'a RunHeader, summary: &'a RunSummary<'a>) -> Document<'a> {
    let mut counts = BTreeMap::new();
    for test in summary.tests {
        *counts.entry(test.outcome.as_str()).or_insert(0) += 1;
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
        },
        summary: counts,
        tests: summary
            .tests
            .iter()
            .map(|test| TestEntry {
                nodeid: &test.nodeid,
                outcome: test.outcome,
                reason: test.not_run_reason,
                duration: test.duration,
                setup_duration: test.phase_duration("setup"),
                call_duration: test.phase_duration("call"),
                teardown_duration: test.phase_duration("teardown"),
                worker: test.worker.map(|slot| format!("gw{slot}")),
                path: &test.path,
                line: test.line,
                failure: failure_text(test),
            })
            .collect(),
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

/// Writes `contents` to `path` atomically: a temp file beside it, renamed.
pub fn write_atomically(path: &std::path::Path, contents: &[u8]) -> Result<(), ShoalError> {
    let context = || format!("writing {}", path.display());
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&directory).map_err(|error| ShoalError::io(context(), error))?;
    let mut temporary =
        tempfile::NamedTempFile::new_in(&directory).map_err(|error| ShoalError::io(context(), error))?;
    // Temp files are private; what shoal writes is an ordinary file.
    std::fs::set_permissions(temporary.path(), std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .map_err(|error| ShoalError::io(context(), error))?;
    std::io::Write::write_all(&mut temporary, contents).map_err(|error| ShoalError::io(context(), error))?;
    temporary.persist(path).map_err(|error| ShoalError::io(context(), error.error))?;
    Ok(())
}

impl Reporter for JsonReporter {
    fn run_started(&mut self, _header: &RunHeader) {}

    fn test_finished(&mut self, _test: &TestRecord, _done: usize, _total: usize) {}

    fn run_finished(&mut self, summary: &RunSummary<'_>) -> Result<(), ShoalError> {
        let document = document(summary.header, summary);
        let mut bytes = serde_json::to_vec_pretty(&document).expect("the report always serializes");
        bytes.push(b'\n');
        write_atomically(&self.path, &bytes)
    }
}
