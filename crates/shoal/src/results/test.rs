//! One test's final record: its outcome, timings and, when something is to
//! be shown, pytest's failed reports or how its worker ended.

use crate::protocol::{Phase, PhaseOutcome, PhaseReport};
use crate::results::{Outcome, StopReason};
use crate::table::Item;

/// One test's final record, kept small: a run may hold 100,000 of them.
/// What it is (node id, file, line) is in the [`crate::table::TestTable`] at the same
/// index; pytest's full reports are kept only for failures.
#[derive(Debug, Clone, PartialEq)]
pub struct TestRecord {
    /// The final outcome.
    pub outcome: Outcome,
    /// Why it did not run, for [`Outcome::NotRun`].
    pub not_run_reason: Option<StopReason>,
    /// The slot of the worker that ran it.
    pub worker: Option<u16>,
    /// Wall seconds of its whole protocol (0 when it did not run).
    pub duration: f32,
    /// When it started, in seconds since the run started (0 when it did
    /// not run).
    pub started: f32,
    /// Seconds of its setup, call and teardown phases (by
    /// [`Phase::index`]).
    pub phase_seconds: [f32; 3],
    /// Failed reports and crash details, when there are any.
    pub details: Option<Box<TestDetails>>,
    /// Not run: replayed from a past run by `--affected`.
    pub cached: bool,
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
    /// Why it was skipped, or why it was expected to fail (xfailed and
    /// xpassed alike).
    pub skip_reason: Option<String>,
    /// Where it was skipped, as `-rs` folds skips.
    pub skip_at: Option<crate::protocol::SkipPlace>,
    /// A passing (or xpassing) call's report with its captured output, when
    /// `-r P` (or `-r X`) shows it.
    pub passed_output: Option<PhaseReport>,
    /// A passing teardown's own captured output (its sections titled
    /// `teardown`), which pytest prints after the test's failure and under
    /// PASSES and XPASSES.
    pub teardown_output: Vec<(String, String)>,
    /// The phase an xfailed test failed as expected in (pytest 9 names one
    /// other than the call: `XFAIL at setup of`).
    pub xfailed_in: Option<Phase>,
    /// An error whose call passed (its teardown failed): pytest counts and
    /// lists the call as passed too (`-r p`, PASSES).
    pub call_passed: bool,
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
            cached: false,
        }
    }

    /// The record of a test that ran, from pytest's reports.
    pub fn from_reports(outcome: Outcome, worker: usize, duration: f64, reports: &[PhaseReport]) -> Self {
        let mut phase_seconds = [0.0f32; 3];
        for report in reports.iter().filter(|report| report.subtest.is_none()) {
            phase_seconds[report.when.index()] += report.duration as f32;
        }
        let failed_reports: Vec<PhaseReport> =
            reports.iter().filter(|report| report.outcome == PhaseOutcome::Failed).cloned().collect();
        let passed_output = reports
            .iter()
            .find(|report| {
                report.outcome == PhaseOutcome::Passed
                    && report.when == Phase::Call
                    && !report.sections.is_empty()
            })
            .cloned();
        let teardown_output: Vec<(String, String)> = reports
            .iter()
            .filter(|report| report.when == Phase::Teardown && report.outcome == PhaseOutcome::Passed)
            .flat_map(|report| {
                report.sections.iter().filter(|(title, _)| title.contains("teardown")).cloned()
            })
            .collect();
        let xfailed_in = (outcome == Outcome::Xfailed)
            .then(|| reports.iter().find(|report| report.wasxfail.is_some()).map(|report| report.when))
            .flatten();
        let call_passed = outcome == Outcome::Error
            && reports.iter().any(|report| {
                report.when == Phase::Call && report.subtest.is_none() && report.category == "passed"
            });
        let skipped = reports.iter().find(|report| report.outcome == PhaseOutcome::Skipped);
        let (skip_reason, skip_at) = match outcome {
            Outcome::Skipped => (
                skipped.and_then(|report| report.message.clone()),
                skipped.and_then(|report| report.skip_at.clone()),
            ),
            Outcome::Xfailed | Outcome::Xpassed => {
                (reports.iter().find_map(|report| report.wasxfail.clone()), None)
            }
            _ => (None, None),
        };
        Self {
            outcome,
            not_run_reason: None,
            worker: u16::try_from(worker).ok(),
            duration: duration as f32,
            started: 0.0,
            phase_seconds,
            details: (!failed_reports.is_empty()
                || skip_reason.is_some()
                || passed_output.is_some()
                || !teardown_output.is_empty())
            .then(|| {
                Box::new(TestDetails {
                    failed_reports,
                    skip_reason,
                    skip_at,
                    passed_output,
                    teardown_output,
                    xfailed_in,
                    call_passed,
                    ..TestDetails::default()
                })
            }),
            cached: false,
        }
    }

    /// Seconds spent in one phase.
    pub fn phase_duration(&self, phase: Phase) -> f64 {
        f64::from(self.phase_seconds[phase.index()])
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

    /// Where it was skipped, as `-rs` folds skips.
    pub fn skip_at(&self) -> Option<&crate::protocol::SkipPlace> {
        self.details.as_ref().and_then(|details| details.skip_at.as_ref())
    }

    /// Its passing call's report with the captured output `-r P` or
    /// `-r X` shows.
    pub fn passed_output(&self) -> Option<&PhaseReport> {
        self.details.as_ref().and_then(|details| details.passed_output.as_ref())
    }

    /// A passing teardown's own captured sections (see
    /// [`TestDetails::teardown_output`]).
    pub fn teardown_output(&self) -> &[(String, String)] {
        self.details.as_ref().map_or(&[], |details| &details.teardown_output)
    }

    /// Whether its call passed: a passing test, or an error in teardown
    /// after a passing call.
    pub fn call_passed(&self) -> bool {
        self.outcome == Outcome::Passed || self.details.as_ref().is_some_and(|details| details.call_passed)
    }

    /// The phase an xfailed test failed as expected in.
    pub fn xfailed_in(&self) -> Option<Phase> {
        self.details.as_ref().and_then(|details| details.xfailed_in)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::PhaseOutcome;

    fn with_sections(mut report: PhaseReport, titles: &[&str]) -> PhaseReport {
        report.sections = titles.iter().map(|title| ((*title).to_owned(), "text\n".to_owned())).collect();
        report
    }

    #[test]
    fn a_record_keeps_a_passing_teardowns_own_output_and_nothing_else_of_it() {
        let reports = [
            PhaseReport::bare(Phase::Setup, PhaseOutcome::Passed, "", 0.1),
            PhaseReport::bare(Phase::Call, PhaseOutcome::Failed, "failed", 0.1),
            with_sections(
                PhaseReport::bare(Phase::Teardown, PhaseOutcome::Passed, "", 0.1),
                &["Captured stdout setup", "Captured stdout teardown", "Captured log teardown"],
            ),
        ];
        let record = TestRecord::from_reports(Outcome::Failed, 0, 0.3, &reports);
        let titles: Vec<&str> = record.teardown_output().iter().map(|(title, _)| title.as_str()).collect();
        assert_eq!(titles, ["Captured stdout teardown", "Captured log teardown"]);
        // A failed teardown is an error, shown with its own report instead.
        let mut failed_teardown = reports.clone();
        failed_teardown[2].outcome = PhaseOutcome::Failed;
        assert!(
            TestRecord::from_reports(Outcome::Error, 0, 0.3, &failed_teardown).teardown_output().is_empty()
        );
    }

    #[test]
    fn an_error_in_teardown_after_a_passing_call_counts_the_call_as_passed() {
        let setup = PhaseReport::bare(Phase::Setup, PhaseOutcome::Passed, "", 0.1);
        let call = PhaseReport::bare(Phase::Call, PhaseOutcome::Passed, "passed", 0.1);
        let teardown = PhaseReport::bare(Phase::Teardown, PhaseOutcome::Failed, "error", 0.1);
        let record =
            TestRecord::from_reports(Outcome::Error, 0, 0.3, &[setup.clone(), call, teardown.clone()]);
        assert!(record.call_passed());
        let failed_call = PhaseReport::bare(Phase::Call, PhaseOutcome::Failed, "failed", 0.1);
        let record = TestRecord::from_reports(Outcome::Failed, 0, 0.3, &[setup, failed_call, teardown]);
        assert!(!record.call_passed());
        let failed_setup = PhaseReport::bare(Phase::Setup, PhaseOutcome::Failed, "error", 0.1);
        assert!(!TestRecord::from_reports(Outcome::Error, 0, 0.1, &[failed_setup]).call_passed());
    }

    #[test]
    fn an_xfailed_record_knows_the_phase_it_failed_in() {
        let mut setup = PhaseReport::bare(Phase::Setup, PhaseOutcome::Skipped, "xfailed", 0.1);
        setup.wasxfail = Some("[NOTRUN] would hang".into());
        let teardown = PhaseReport::bare(Phase::Teardown, PhaseOutcome::Passed, "", 0.1);
        let record = TestRecord::from_reports(Outcome::Xfailed, 0, 0.2, &[setup.clone(), teardown.clone()]);
        assert_eq!(record.xfailed_in(), Some(Phase::Setup));
        assert_eq!(record.skip_reason(), Some("[NOTRUN] would hang"));
        let mut call = PhaseReport::bare(Phase::Call, PhaseOutcome::Skipped, "xfailed", 0.1);
        call.wasxfail = Some(String::new());
        let passed_setup = PhaseReport::bare(Phase::Setup, PhaseOutcome::Passed, "", 0.1);
        let record = TestRecord::from_reports(Outcome::Xfailed, 0, 0.3, &[passed_setup, call, teardown]);
        assert_eq!(record.xfailed_in(), Some(Phase::Call));
    }
}
