//! Test outcomes: one final outcome per test, computed from pytest's phase
//! reports; why tests did not run; and the closing-line tally counted the
//! way pytest counts it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use shoal_scheduler::NotRunReason;

use crate::protocol::{Phase, PhaseOutcome, PhaseReport};

/// The one final outcome of a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every phase passed.
    Passed,
    /// The test body failed (or a strict xfail passed, or a subtest failed).
    Failed,
    /// Setup or teardown failed.
    Error,
    /// Skipped in some phase.
    Skipped,
    /// Expected to fail, and failed.
    Xfailed,
    /// Expected to fail, and passed (non-strict).
    Xpassed,
    /// It failed, then passed on a rerun.
    Flaky,
    /// It ran past its timeout and its worker was killed.
    Timeout,
    /// The worker died while running it.
    Crashed,
    /// Never started.
    NotRun,
}

impl Outcome {
    /// The name used in reports (`not_run`, `xfailed`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Passed => "passed",
            Self::Failed => "failed",
            Self::Error => "error",
            Self::Skipped => "skipped",
            Self::Xfailed => "xfailed",
            Self::Xpassed => "xpassed",
            Self::Flaky => "flaky",
            Self::Timeout => "timeout",
            Self::Crashed => "crashed",
            Self::NotRun => "not_run",
        }
    }

    /// The word shoal prints for outcomes pytest has no word for
    /// (`CRASHED`, `TIMEOUT`, `FLAKY`), as pytest prints `FAILED`.
    pub fn shoal_word(self) -> Option<&'static str> {
        match self {
            Self::Crashed => Some("CRASHED"),
            Self::Timeout => Some("TIMEOUT"),
            Self::Flaky => Some("FLAKY"),
            _ => None,
        }
    }

    /// Whether this outcome makes the run fail (and counts for `--maxfail`).
    pub fn is_failure(self) -> bool {
        matches!(self, Self::Failed | Self::Error | Self::Timeout | Self::Crashed)
    }
}

/// The final outcome pytest's reports add up to.
///
/// A failing call makes the test failed even when teardown also failed
/// (pytest shows both); otherwise a failing setup or teardown makes it an
/// error; then xfail markers, then skips.
pub fn outcome_from_reports(reports: &[PhaseReport]) -> Outcome {
    let main = || reports.iter().filter(|report| report.subtest.is_none());
    let call_failed =
        main().any(|report| report.when == Phase::Call && report.outcome == PhaseOutcome::Failed);
    if call_failed {
        return Outcome::Failed;
    }
    if main().any(|report| report.outcome == PhaseOutcome::Failed) {
        return Outcome::Error;
    }
    if reports.iter().any(|report| report.subtest.is_some() && report.outcome == PhaseOutcome::Failed) {
        return Outcome::Failed;
    }
    if main().any(|report| report.category == "xfailed") {
        return Outcome::Xfailed;
    }
    if main().any(|report| report.category == "xpassed") {
        return Outcome::Xpassed;
    }
    if main().any(|report| report.outcome == PhaseOutcome::Skipped) {
        return Outcome::Skipped;
    }
    Outcome::Passed
}

/// Why a run stopped early, and so why its remaining tests did not run
/// (one byte: a run may hold many records).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// `-x` or `--maxfail` was reached.
    MaxFail,
    /// The user interrupted the run.
    Interrupted,
    /// Workers kept dying and the restart budget ran out.
    WorkerRestartsExhausted,
    /// Collection errors stopped the run before any test.
    CollectionErrors,
    /// `--budget`: it could not have ended in time.
    Budget,
}

impl StopReason {
    /// Every cause.
    pub const ALL: [Self; 5] = [
        Self::MaxFail,
        Self::Interrupted,
        Self::WorkerRestartsExhausted,
        Self::CollectionErrors,
        Self::Budget,
    ];

    /// The words reports use, e.g. `max-fail`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MaxFail => "max-fail",
            Self::Interrupted => "interrupted",
            Self::WorkerRestartsExhausted => "worker restarts exhausted",
            Self::CollectionErrors => "collection errors",
            Self::Budget => "budget",
        }
    }

    /// The cause [`StopReason::as_str`] names (as read back from a report).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|cause| cause.as_str() == name)
    }
}

impl From<NotRunReason> for StopReason {
    fn from(reason: NotRunReason) -> Self {
        match reason {
            NotRunReason::MaxFail => Self::MaxFail,
            NotRunReason::Interrupted => Self::Interrupted,
            NotRunReason::WorkerRestartsExhausted => Self::WorkerRestartsExhausted,
            NotRunReason::Budget => Self::Budget,
        }
    }
}

/// The order pytest lists categories in its closing line; others follow in
/// the order they first appeared.
const PYTEST_CATEGORY_ORDER: &[&str] = &[
    "failed",
    "passed",
    "skipped",
    "deselected",
    "xfailed",
    "xpassed",
    "warnings",
    "error",
    "subtests passed",
    "subtests failed",
    "subtests skipped",
];

/// Counts per category, exactly as pytest's terminal counts its reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    counts: Vec<(String, u64)>,
}

impl Tally {
    /// Adds `count` to `category` (an empty category is not counted, as in
    /// pytest).
    pub fn add(&mut self, category: &str, count: u64) {
        if category.is_empty() || count == 0 {
            return;
        }
        match self.counts.iter_mut().find(|(name, _)| name == category) {
            Some((_, total)) => *total += count,
            None => self.counts.push((category.to_owned(), count)),
        }
    }

    /// The count of one category.
    pub fn get(&self, category: &str) -> u64 {
        self.counts.iter().find(|(name, _)| name == category).map_or(0, |(_, count)| *count)
    }

    /// The categories counted, in the order first seen.
    pub fn categories(&self) -> impl Iterator<Item = &str> {
        self.counts.iter().map(|(name, _)| name.as_str())
    }

    /// The closing line's parts in pytest's order, e.g. `["1 failed", "3 passed"]`.
    pub fn parts(&self) -> Vec<String> {
        let known = PYTEST_CATEGORY_ORDER.iter().map(|name| (*name).to_owned());
        let unknown = self
            .counts
            .iter()
            .map(|(name, _)| name.clone())
            .filter(|name| !PYTEST_CATEGORY_ORDER.contains(&name.as_str()));
        known
            .chain(unknown)
            .filter_map(|name| {
                let count = self.get(&name);
                (count > 0).then(|| format!("{count} {}", pluralize(count, &name)))
            })
            .collect()
    }
}

/// pytest's pluralisation: only `error`, `warnings` and `test` change.
fn pluralize(count: u64, noun: &str) -> String {
    if !matches!(noun, "error" | "warnings" | "test") {
        return noun.to_owned();
    }
    let singular = noun.replace("warnings", "warning");
    if count == 1 { singular } else { format!("{singular}s") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Phase::{Call, Setup, Teardown};
    use crate::protocol::PhaseOutcome::{Failed, Passed, Skipped};

    fn report(when: Phase, outcome: PhaseOutcome, category: &str) -> PhaseReport {
        PhaseReport::bare(when, outcome, category, 0.0)
    }

    #[test]
    fn outcomes_follow_pytest_phase_semantics() {
        let ok = report(Setup, Passed, "");
        let teardown_ok = report(Teardown, Passed, "");
        let cases = [
            (vec![ok.clone(), report(Call, Passed, "passed"), teardown_ok.clone()], Outcome::Passed),
            (vec![ok.clone(), report(Call, Failed, "failed"), teardown_ok.clone()], Outcome::Failed),
            (vec![report(Setup, Failed, "error"), teardown_ok.clone()], Outcome::Error),
            (
                vec![ok.clone(), report(Call, Passed, "passed"), report(Teardown, Failed, "error")],
                Outcome::Error,
            ),
            (
                vec![ok.clone(), report(Call, Failed, "failed"), report(Teardown, Failed, "error")],
                Outcome::Failed,
            ),
            (vec![report(Setup, Skipped, "skipped"), teardown_ok.clone()], Outcome::Skipped),
            (vec![ok.clone(), report(Call, Skipped, "xfailed"), teardown_ok.clone()], Outcome::Xfailed),
            (vec![ok.clone(), report(Call, Passed, "xpassed"), teardown_ok.clone()], Outcome::Xpassed),
        ];
        for (reports, expected) in cases {
            assert_eq!(outcome_from_reports(&reports), expected, "{reports:?}");
        }
    }

    #[test]
    fn a_failed_subtest_fails_the_test() {
        let mut subtest = report(Call, Failed, "failed");
        subtest.subtest = Some("[custom]".into());
        let reports = vec![report(Setup, Passed, ""), subtest, report(Call, Passed, "passed")];
        assert_eq!(outcome_from_reports(&reports), Outcome::Failed);
    }

    #[test]
    fn tally_orders_and_pluralizes_like_pytest() {
        let mut tally = Tally::default();
        tally.add("passed", 3);
        tally.add("error", 2);
        tally.add("warnings", 1);
        tally.add("failed", 1);
        tally.add("crashed", 1);
        tally.add("", 5);
        assert_eq!(tally.parts(), vec!["1 failed", "3 passed", "1 warning", "2 errors", "1 crashed"]);
    }
}
