//! `--junitxml PATH`: the JUnit XML file CI systems read, shaped as
//! pytest's own `--junitxml` writes it, so GitHub, GitLab, CircleCI and
//! Jenkins show shoal's runs as they show pytest's.
//!
//! One `testsuite` named `pytest`; a `testcase` per test with pytest's
//! `classname` and `name` (from the node id, by pytest's own
//! `mangle_test_address` rule), `file`, `line` and `time`; `failure`,
//! `error` and `skipped` elements with message and text; captured output
//! of failures as `system-out` / `system-err`; earlier attempts of rerun
//! tests as `flakyFailure` / `rerunFailure` (the Surefire convention); the
//! worker and the attempt as properties. Written atomically.

use std::path::PathBuf;
use std::time::Duration;

use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestRerun, TestSuite};

use crate::errors::ShoalError;
use crate::fs::write_atomically_with;
use crate::protocol::{Phase, PhaseReport};
use crate::report::Reporter;
use crate::results::Outcome;
use crate::results::{RunHeader, RunSummary, TestRecord, TestView};

/// Writes the JUnit XML file when the run ends.
pub struct JunitReporter {
    path: PathBuf,
}

impl JunitReporter {
    /// A reporter writing to `path`.
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }
}

/// pytest's `mangle_test_address`: `a/b/test_x.py::C::t[1]` becomes the
/// classname `a.b.test_x.C` and the name `t[1]`. This mirrors what pytest
/// itself writes; shoal reads node ids nowhere else but in reports.
pub fn classname_and_name(nodeid: &str) -> (String, String) {
    let (path, params) = match nodeid.find('[') {
        Some(bracket) => nodeid.split_at(bracket),
        None => (nodeid, ""),
    };
    let mut names: Vec<String> = path.split("::").map(str::to_owned).collect();
    let file = names[0].replace('/', ".");
    names[0] = file.strip_suffix(".py").map_or(file.clone(), str::to_owned);
    let last = names.len() - 1;
    names[last].push_str(params);
    let name = names.pop().unwrap_or_default();
    (names.join("."), name)
}

fn seconds(value: f64) -> Duration {
    Duration::from_secs_f64(value.max(0.0))
}

/// Captured output of failed reports, as (stdout, stderr).
fn captured(reports: &[PhaseReport]) -> (String, String) {
    let (mut out, mut err) = (String::new(), String::new());
    for report in reports {
        for (title, content) in &report.sections {
            let target = if title.contains("stderr") { &mut err } else { &mut out };
            target.push_str(&format!("----- {title} -----\n{content}"));
        }
    }
    (out, err)
}

/// The status of one attempt, as pytest's junitxml renders it.
fn status_of(record: &TestRecord) -> TestCaseStatus {
    let failed_call = record.failed_reports().iter().find(|report| report.when == Phase::Call);
    let failed_fixture = record.failed_reports().iter().find(|report| report.when != Phase::Call);
    // pytest writes the failure text without the terminal's leading blank
    // line and indentation.
    let text = |report: &PhaseReport| report.longrepr.as_deref().unwrap_or_default().to_owned();
    match record.outcome {
        Outcome::Passed | Outcome::Xpassed | Outcome::Flaky => TestCaseStatus::success(),
        Outcome::Failed if failed_call.is_some() => {
            let report = failed_call.expect("checked");
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
            status.set_message(report.message.clone().unwrap_or_default()).set_description(text(report));
            status
        }
        Outcome::Failed | Outcome::Error => {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Error);
            if let Some(report) = failed_fixture.or(failed_call) {
                let message = report.message.clone().unwrap_or_default();
                status
                    .set_message(format!("failed on {} with \"{message}\"", report.when))
                    .set_description(text(report));
            }
            status
        }
        Outcome::Crashed | Outcome::Timeout => {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
            if let Some(crash) = record.crash() {
                status
                    .set_message(crash.message.clone())
                    .set_description(format!("{}\n{}", crash.description, crash.output));
            }
            status
        }
        Outcome::Skipped | Outcome::Xfailed => {
            let mut status = TestCaseStatus::skipped();
            let kind = if record.outcome == Outcome::Xfailed { "pytest.xfail" } else { "pytest.skip" };
            status.set_type(kind).set_message(record.skip_reason().unwrap_or_default().to_owned());
            status
        }
        Outcome::NotRun => {
            let mut status = TestCaseStatus::skipped();
            let reason = record.not_run_reason.map_or("not run", |cause| cause.as_str());
            status.set_type("shoal.not_run").set_message(format!("not run ({reason})"));
            status
        }
    }
}

fn test_case(test: TestView<'_>) -> TestCase {
    let record = test.record;
    let (classname, name) = classname_and_name(test.nodeid());
    let mut status = status_of(record);
    for earlier in record.earlier_attempts() {
        let mut rerun = TestRerun::new(NonSuccessKind::Failure);
        rerun.set_time(seconds(f64::from(earlier.duration)));
        if let Some(report) = earlier.failed_reports().first() {
            rerun
                .set_message(report.message.clone().unwrap_or_default())
                .set_stack_trace(report.longrepr.clone().unwrap_or_default());
        } else if let Some(crash) = earlier.crash() {
            rerun.set_message(crash.message.clone()).set_stack_trace(crash.description.clone());
        }
        status.add_rerun(rerun);
    }
    let mut case = TestCase::new(name, status);
    case.set_classname(classname).set_time(seconds(f64::from(record.duration)));
    case.extra.insert("file".into(), test.item.path.into());
    if let Some(line) = test.item.line {
        case.extra.insert("line".into(), line.to_string().into());
    }
    if let Some(worker) = record.worker {
        case.add_property(Property::new("worker", format!("gw{worker}")));
    }
    case.add_property(Property::new("attempt", (record.earlier_attempts().len() + 1).to_string()));
    if record.cached {
        // Replayed by --affected: its outcome is from an earlier run.
        case.add_property(Property::new("cached", "true"));
    }
    let (out, err) = captured(record.failed_reports());
    if !out.is_empty() {
        case.set_system_out(out);
    }
    if !err.is_empty() {
        case.set_system_err(err);
    }
    case
}

fn report(summary: &RunSummary<'_>) -> Report {
    let mut suite = TestSuite::new("pytest");
    suite.set_time(seconds(summary.wall_seconds));
    suite.set_timestamp(chrono_timestamp(summary.header));
    // Collectors that failed or were skipped are test cases, as in pytest.
    for collect in summary.collect_reports {
        let (classname, name) = classname_and_name(&collect.nodeid);
        let status = if collect.category == "error" {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Error);
            let text = collect.longrepr.as_deref().unwrap_or_default().to_owned();
            status.set_message("collection failure").set_description(text);
            status
        } else {
            let mut status = TestCaseStatus::skipped();
            status
                .set_message("collection skipped")
                .set_description(collect.message.clone().unwrap_or_default());
            status
        };
        let mut case = TestCase::new(name, status);
        case.set_classname(classname);
        suite.add_test_case(case);
    }
    for test in summary.tests() {
        suite.add_test_case(test_case(test));
    }
    // pytest's readers look for the skipped count on the suite.
    let skipped =
        suite.test_cases.iter().filter(|case| matches!(case.status, TestCaseStatus::Skipped { .. })).count();
    suite.extra.insert("skipped".into(), skipped.to_string().into());
    let mut report = Report::new("pytest-tests");
    report.add_test_suite(suite);
    report
}

fn chrono_timestamp(header: &RunHeader) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::<chrono::Utc>::from(header.started_at).fixed_offset()
}

impl Reporter for JunitReporter {
    fn run_started(&mut self, _header: &RunHeader) {}

    fn test_finished(&mut self, _test: TestView<'_>, _reports: &[PhaseReport], _done: usize, _total: usize) {}

    fn run_finished(&mut self, summary: &RunSummary<'_>) -> Result<(), ShoalError> {
        let report = report(summary);
        write_atomically_with(&self.path, |writer| {
            report.serialize(&mut *writer).map_err(|error| std::io::Error::other(error.to_string()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classnames_follow_pytest_mangling() {
        assert_eq!(
            classname_and_name("tests/unit/test_x.py::TestC::test_m[a::b/c]"),
            ("tests.unit.test_x.TestC".to_owned(), "test_m[a::b/c]".to_owned())
        );
        assert_eq!(
            classname_and_name("test_y.py::test_plain"),
            ("test_y".to_owned(), "test_plain".to_owned())
        );
        assert_eq!(classname_and_name("test_z.py"), (String::new(), "test_z".to_owned()));
    }

    #[test]
    fn sample_run_snapshot() {
        let run = crate::report::sample::SampleRun::new();
        insta::assert_snapshot!(run.written_by(JunitReporter::new));
    }
}
