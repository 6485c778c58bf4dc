//! What the queue stores as JSON: the build's collection and header, which
//! the first machine publishes and the report reads, and each test's final
//! record as a machine stored it.

use serde::{Deserialize, Serialize};

use crate::protocol::{CollectReport, CollectedItem, Environment, PhaseOutcome, PhaseReport};
use crate::results::{CrashDetails, Outcome, RunHeader, StopReason, TestDetails, TestRecord, TestView};
use crate::table::TestTable;

/// The build, as the first machine collected it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BuildInfo {
    /// Every collected test, in collection order.
    pub collection: Vec<CollectedItem>,
    /// Collectors that did not pass (a skipped module, say).
    pub collect_reports: Vec<CollectReport>,
    /// What the first machine's workers ran on (its rootdir, say); the
    /// keys sit in the build's object itself.
    #[serde(flatten)]
    pub environment: Environment,
    /// `PYTHONHASHSEED` of the workers.
    pub hash_seed: String,
    /// How workers came to be (`fork` or `spawn`).
    pub mode: String,
}

impl BuildInfo {
    /// The build's info from this machine's collection and header.
    pub fn new(table: &TestTable, collect_reports: &[CollectReport], header: &RunHeader) -> Self {
        Self {
            collection: table.items().map(|item| item.to_collected()).collect(),
            collect_reports: collect_reports.to_vec(),
            environment: header.environment.clone(),
            hash_seed: header.hash_seed.clone(),
            mode: header.mode.to_owned(),
        }
    }

    /// Where this machine's collection (`self`) first differs from the
    /// published one, in words naming the differing node ids.
    pub fn first_difference(&self, published: &BuildInfo) -> Option<String> {
        let ours = &self.collection;
        let theirs = &published.collection;
        let position = (0..ours.len().min(theirs.len()))
            .find(|&index| ours[index].nodeid != theirs[index].nodeid)
            .or_else(|| (ours.len() != theirs.len()).then(|| ours.len().min(theirs.len())))?;
        let name = |items: &[CollectedItem]| {
            items
                .get(position)
                .map_or_else(|| "nothing (the collection ends)".to_owned(), |item| item.nodeid.clone())
        };
        Some(format!(
            "test {} is {} here but {} in the published build ({} tests here, {} published)",
            position + 1,
            name(ours),
            name(theirs),
            ours.len(),
            theirs.len()
        ))
    }
}

/// One attempt at a test, as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoredAttempt {
    /// How it ended.
    pub outcome: Outcome,
    /// The worker slot on its machine.
    pub worker: Option<u16>,
    /// Wall seconds.
    pub duration: f32,
    /// Seconds since its machine's run started.
    pub started: f32,
    /// Setup, call and teardown seconds.
    pub phase_seconds: [f32; 3],
    /// pytest's failed reports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_reports: Vec<PhaseReport>,
    /// How the worker ended under it: one line, the account, its output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crash: Option<(String, String, String)>,
}

/// A test's final record as a machine stored it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoredResult {
    /// The test.
    pub nodeid: String,
    /// The machine that ran it.
    pub machine: String,
    /// Its last attempt.
    pub last: StoredAttempt,
    /// Why it did not run (`StopReason`'s name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_run_reason: Option<String>,
    /// Why it was skipped or expected to fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_reason: Option<String>,
    /// Every pytest report of its last attempt (the terminal's letters and
    /// the closing line's counts come from them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reports: Vec<PhaseReport>,
    /// Failed attempts before the last, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier: Vec<StoredAttempt>,
}

impl StoredResult {
    /// What a machine stores of a test's final record.
    pub fn new(machine: &str, test: TestView<'_>, reports: &[PhaseReport]) -> Self {
        let record = test.record;
        Self {
            nodeid: test.nodeid().to_owned(),
            machine: machine.to_owned(),
            last: attempt_of(record),
            not_run_reason: record.not_run_reason.map(|reason| reason.as_str().to_owned()),
            skip_reason: record.skip_reason().map(str::to_owned),
            reports: reports.to_vec(),
            earlier: record.earlier_attempts().iter().map(attempt_of).collect(),
        }
    }

    /// The record again, with its worker slot moved to `lane` (machines'
    /// workers numbered one after another).
    pub fn record(&self, lane: u16) -> TestRecord {
        let mut record = record_of(&self.last, lane);
        record.not_run_reason = self.not_run_reason.as_deref().and_then(StopReason::from_name);
        let earlier: Vec<TestRecord> = self.earlier.iter().map(|attempt| record_of(attempt, lane)).collect();
        if !earlier.is_empty() || self.skip_reason.is_some() {
            let details = record.details.get_or_insert_with(Default::default);
            details.earlier_attempts = earlier;
            details.skip_reason.clone_from(&self.skip_reason);
        }
        record
    }

    /// The closing line's categories this result adds, as a run counts them.
    pub fn categories(&self) -> Vec<&str> {
        let mut categories: Vec<&str> = self.reports.iter().map(|report| report.category.as_str()).collect();
        categories.extend(std::iter::repeat_n("rerun", self.earlier.len()));
        match self.last.outcome {
            Outcome::Flaky => categories.push("flaky"),
            Outcome::Crashed => categories.push("crashed"),
            Outcome::Timeout => categories.push("timeout"),
            Outcome::NotRun => categories.push("not run"),
            _ => {}
        }
        categories
    }
}

impl StoredResult {
    /// This result with the failed attempts other runs handed back before
    /// it (those also in its own earlier attempts counted once): a test
    /// that passes after them is flaky.
    pub fn after(&self, handed_back: &[StoredAttempt]) -> StoredResult {
        let mut result = self.clone();
        let mut earlier: Vec<StoredAttempt> = handed_back.to_vec();
        earlier.extend(self.earlier.iter().filter(|attempt| !handed_back.contains(attempt)).cloned());
        if !earlier.is_empty() && result.last.outcome == Outcome::Passed {
            result.last.outcome = Outcome::Flaky;
        }
        result.earlier = earlier;
        result
    }
}

/// A failed attempt as stored.
pub fn attempt_of(record: &TestRecord) -> StoredAttempt {
    StoredAttempt {
        outcome: record.outcome,
        worker: record.worker,
        duration: record.duration,
        started: record.started,
        phase_seconds: record.phase_seconds,
        failed_reports: record.failed_reports().to_vec(),
        crash: record
            .crash()
            .map(|crash| (crash.message.clone(), crash.description.clone(), crash.output.clone())),
    }
}

fn record_of(attempt: &StoredAttempt, lane: u16) -> TestRecord {
    let mut record = TestRecord::new(attempt.outcome);
    record.worker = attempt.worker.map(|_| lane);
    record.duration = attempt.duration;
    record.started = attempt.started;
    record.phase_seconds = attempt.phase_seconds;
    let failed_reports: Vec<PhaseReport> = attempt
        .failed_reports
        .iter()
        .filter(|report| report.outcome == PhaseOutcome::Failed)
        .cloned()
        .collect();
    let crash = attempt.crash.as_ref().map(|(message, description, output)| CrashDetails {
        message: message.clone(),
        description: description.clone(),
        output: output.clone(),
    });
    if !failed_reports.is_empty() || crash.is_some() {
        record.details = Some(Box::new(TestDetails { failed_reports, crash, ..TestDetails::default() }));
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Machines of one build may run different shoal versions: what one
    /// stores, another reads.
    #[test]
    fn build_info_keeps_its_json_shape() {
        let info = BuildInfo {
            collection: vec![CollectedItem {
                nodeid: "t.py::test".into(),
                path: "t.py".into(),
                line: Some(3),
                domain: "test".into(),
                ..CollectedItem::default()
            }],
            collect_reports: Vec::new(),
            environment: Environment {
                platform: "linux".into(),
                python: "3.12.3".into(),
                pytest: "8.3.2".into(),
                pluggy: "1.5.0".into(),
                rootdir: "/project".into(),
                inifile: Some("/project/pytest.ini".into()),
                plugins: vec!["timeout-2.3.1".into()],
                ..Environment::default()
            },
            hash_seed: "1234".into(),
            mode: "fork".into(),
        };
        let json = concat!(
            r#"{"collection":[{"nodeid":"t.py::test","path":"t.py","line":3,"domain":"test","markers":[]}],"#,
            r#""collect_reports":[],"platform":"linux","python":"3.12.3","pytest":"8.3.2","pluggy":"1.5.0","#,
            r#""rootdir":"/project","inifile":"/project/pytest.ini","plugins":["timeout-2.3.1"],"#,
            r#""report_chars":"fEw","show_capture":"all","no_fold_skipped":false,"tb_style":"auto","no_summary":false,"no_header":false,"progress_style":"progress","hash_seed":"1234","mode":"fork"}"#
        );
        assert_eq!(serde_json::to_string(&info).unwrap(), json);
        assert_eq!(serde_json::from_str::<BuildInfo>(json).unwrap(), info);
        // Stored by a shoal before `report_chars` and the other summary
        // options: pytest's defaults.
        let older = json.replace(r#""report_chars":"fEw","show_capture":"all","no_fold_skipped":false,"tb_style":"auto","no_summary":false,"no_header":false,"progress_style":"progress","#, "");
        assert!(!older.contains("show_capture"));
        assert_eq!(serde_json::from_str::<BuildInfo>(&older).unwrap(), info);
    }
}
