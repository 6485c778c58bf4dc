//! One synthetic run, built in memory with every number fixed, for the
//! reporters' snapshot tests: a pass, a call failure, a setup error, a
//! flaky test (failed once, then passed) and a timeout.

use std::time::{Duration, UNIX_EPOCH};

use crate::protocol::Phase::{Call, Setup, Teardown};
use crate::protocol::PhaseOutcome::{Failed, Passed};
use crate::protocol::{CollectedItem, Environment, Phase, PhaseOutcome, PhaseReport};
use crate::report::Reporter;
use crate::results::{
    CrashDetails, Expectation, RunHeader, RunStats, RunSummary, TestDetails, TestRecord, TestView,
};
use crate::results::{Outcome, Tally};
use crate::table::TestTable;

/// Node ids of the sample's tests, in collection order.
pub(crate) const PASS: &str = "tests/test_math.py::test_adds";
pub(crate) const FAIL: &str = "tests/test_math.py::test_divides";
pub(crate) const ERROR: &str = "tests/test_db.py::TestQueries::test_select";
pub(crate) const FLAKY: &str = "tests/test_net.py::test_fetch[http]";
pub(crate) const TIMEOUT: &str = "tests/test_net.py::test_slow_download";

/// The whole run: what the runner would hold when it ends.
pub(crate) struct SampleRun {
    pub(crate) header: RunHeader,
    pub(crate) table: TestTable,
    pub(crate) records: Vec<TestRecord>,
    /// Every pytest report of each test's final attempt.
    pub(crate) reports: Vec<Vec<PhaseReport>>,
    pub(crate) tally: Tally,
    pub(crate) notices: Vec<String>,
}

fn report(
    when: Phase,
    outcome: PhaseOutcome,
    category: &str,
    letter: &str,
    word: &str,
    duration: f64,
) -> PhaseReport {
    PhaseReport {
        letter: letter.into(),
        word: word.into(),
        ..PhaseReport::bare(when, outcome, category, duration)
    }
}

fn passing(setup: f64, call: f64, teardown: f64) -> Vec<PhaseReport> {
    vec![
        report(Setup, Passed, "", "", "", setup),
        report(Call, Passed, "passed", ".", "PASSED", call),
        report(Teardown, Passed, "", "", "", teardown),
    ]
}

fn item(
    nodeid: &str,
    line: u64,
    markers: &[&str],
    timeout: Option<f64>,
    reruns: Option<u8>,
) -> CollectedItem {
    let (path, domain) = nodeid.split_once("::").expect("a test node id");
    CollectedItem {
        nodeid: nodeid.into(),
        path: path.into(),
        line: Some(line),
        domain: domain.replace("::", "."),
        markers: markers.iter().map(|&name| name.to_owned()).collect(),
        timeout,
        group: None,
        reruns,
        ..CollectedItem::default()
    }
}

fn placed(mut record: TestRecord, started: f32) -> TestRecord {
    record.started = started;
    record
}

impl SampleRun {
    /// The sample run.
    pub(crate) fn new() -> Self {
        let mut table = TestTable::default();
        for collected in [
            item(PASS, 2, &[], None, None),
            item(FAIL, 9, &["slow"], None, None),
            item(ERROR, 14, &[], None, None),
            item(FLAKY, 20, &["flaky"], None, Some(1)),
            item(TIMEOUT, 30, &["timeout"], Some(2.0), None),
        ] {
            assert!(table.push(collected));
        }

        let header = RunHeader {
            environment: Environment {
                platform: "linux".into(),
                python: "3.12.3".into(),
                pytest: "8.3.2".into(),
                pluggy: "1.5.0".into(),
                rootdir: "/home/ci/project".into(),
                inifile: Some("/home/ci/project/pyproject.toml".into()),
                plugins: vec!["rerunfailures-14.0".into(), "timeout-2.3.1".into()],
                ..Environment::default()
            },
            workers: 2,
            mode: "fork",
            selected: 5,
            deselected: 0,
            collect_errors: 0,
            collect_skipped: 0,
            collection_notes: Vec::new(),
            hash_seed: "1234".into(),
            max_failures: None,
            budget: None,
            started_at: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            expectation: Some(Expectation { wall_seconds: 3.5, lower_bound_seconds: 2.5 }),
            shard: None,
            profile: Some("ci".to_owned()),
            settings: vec![crate::values::ResolvedSetting {
                key: "timeout".to_owned(),
                value: serde_json::json!(30.0),
                source: "pyproject.toml:12 [tool.shoal.profile.ci]".to_owned(),
            }],
        };

        // A pass on gw0.
        let pass_reports = passing(0.25, 0.5, 0.125);
        let pass = placed(TestRecord::from_reports(Outcome::Passed, 0, 1.0, &pass_reports), 0.25);

        // A call failure on gw1, with pytest's text and captured stdout.
        let mut fail_call = report(Call, Failed, "failed", "F", "FAILED", 0.75);
        fail_call.head_line = Some("test_divides".into());
        fail_call.longrepr = Some(
            "    def test_divides():\n>       assert 1 / 2 == 1\nE       assert 0.5 == 1\n\ntests/test_math.py:11: AssertionError"
                .into(),
        );
        fail_call.message = Some("assert 0.5 == 1".into());
        fail_call.sections = vec![("Captured stdout call".into(), "dividing 1 by 2\n".into())];
        fail_call.crash_path = Some("/home/ci/project/tests/test_math.py".into());
        fail_call.crash_line = Some(11);
        let fail_reports = vec![
            report(Setup, Passed, "", "", "", 0.125),
            fail_call,
            report(Teardown, Passed, "", "", "", 0.125),
        ];
        let fail = placed(TestRecord::from_reports(Outcome::Failed, 1, 1.0, &fail_reports), 0.25);

        // A setup error on gw0: the fixture raised.
        let mut setup_error = report(Setup, Failed, "error", "E", "ERROR", 0.5);
        setup_error.head_line = Some("TestQueries.test_select".into());
        setup_error.longrepr = Some(
            "    @pytest.fixture\n    def db():\n>       raise ConnectionError(\"database is down\")\nE       ConnectionError: database is down\n\ntests/test_db.py:5: ConnectionError"
                .into(),
        );
        setup_error.message = Some("ConnectionError: database is down".into());
        setup_error.crash_path = Some("/home/ci/project/tests/test_db.py".into());
        setup_error.crash_line = Some(5);
        let error_reports = vec![setup_error, report(Teardown, Passed, "", "", "", 0.0)];
        let error = placed(TestRecord::from_reports(Outcome::Error, 0, 0.5, &error_reports), 1.25);

        // A flaky test: its first attempt failed on gw1, its rerun passed on gw0.
        let mut first_call = report(Call, Failed, "failed", "F", "FAILED", 0.25);
        first_call.head_line = Some("test_fetch[http]".into());
        first_call.longrepr = Some("E       ConnectionResetError: connection reset by peer".into());
        first_call.message = Some("ConnectionResetError: connection reset by peer".into());
        let first_reports = vec![
            report(Setup, Passed, "", "", "", 0.0),
            first_call,
            report(Teardown, Passed, "", "", "", 0.0),
        ];
        let first_attempt = placed(TestRecord::from_reports(Outcome::Failed, 1, 0.5, &first_reports), 1.25);
        let flaky_reports = passing(0.0, 0.25, 0.0);
        let mut flaky = placed(TestRecord::from_reports(Outcome::Passed, 0, 0.5, &flaky_reports), 1.75);
        flaky.outcome = Outcome::Flaky;
        flaky.details.get_or_insert_with(Default::default).earlier_attempts = vec![first_attempt];

        // A timeout on gw1: its worker was killed after 2s, as `ended_record` builds it.
        let mut timeout = TestRecord::new(Outcome::Timeout);
        timeout.worker = Some(1);
        timeout.started = 1.75;
        timeout.duration = 2.0;
        timeout.details = Some(Box::new(TestDetails {
            crash: Some(CrashDetails {
                message: "timed out after 2s".into(),
                description: format!(
                    "{TIMEOUT} timed out after 2s: worker gw1's stacks were dumped and its process group \
                     killed (signal 9 (SIGKILL)); a new worker took over"
                ),
                output: "Thread 0x00007f (most recent call first):\n  File \"tests/test_net.py\", line 33 in test_slow_download\n"
                    .into(),
            }),
            ..TestDetails::default()
        }));

        let records = vec![pass, fail, error, flaky, timeout];
        let reports = vec![pass_reports, fail_reports, error_reports, flaky_reports, Vec::new()];

        // Counted as the runner counts: each final report's category, a
        // rerun per kept attempt, then flaky and timeout.
        let mut tally = Tally::default();
        for report in reports.iter().take(3).flatten() {
            tally.add(&report.category, 1);
        }
        tally.add("rerun", 1);
        for report in &reports[3] {
            tally.add(&report.category, 1);
        }
        tally.add("flaky", 1);
        tally.add("timeout", 1);

        let notices = vec!["worker gw1 was replaced after a timeout".to_owned()];
        Self { header, table, records, reports, tally, notices }
    }

    /// The end-of-run summary.
    pub(crate) fn summary(&self) -> RunSummary<'_> {
        RunSummary {
            header: &self.header,
            table: &self.table,
            records: &self.records,
            collect_reports: &[],
            warnings: &[],
            tally: &self.tally,
            stop: None,
            wall_seconds: 4.0,
            exit_code: 1,
            stats: RunStats {
                test_seconds: 5.0,
                lower_bound_seconds: 2.75,
                startup_seconds: 0.25,
                between_phases_seconds: 0.5,
                workers_cpu_seconds: 3.5,
                peak_rss_largest_kib: 65_536,
                peak_rss_total_kib: 131_072,
            },
            notices: &self.notices,
            coverage: None,
        }
    }

    /// Drives a file-writing reporter, made for a path in a fresh temp
    /// directory, through the run; returns what it wrote there.
    pub(crate) fn written_by<R: Reporter>(&self, make: impl FnOnce(std::path::PathBuf) -> R) -> String {
        let directory = tempfile::tempdir().expect("a temp dir");
        let path = directory.path().join("written");
        self.drive(&mut make(path.clone()));
        std::fs::read_to_string(&path).expect("the reporter wrote its file")
    }

    /// Drives a reporter through the whole run, in the order the runner
    /// sends events.
    pub(crate) fn drive(&self, reporter: &mut dyn Reporter) {
        let total = self.table.len();
        reporter.run_started(&self.header);
        let view = |test: usize| TestView { item: self.table.item(test), record: &self.records[test] };
        let started = |reporter: &mut dyn Reporter, test: usize, worker: usize, elapsed: f64| {
            reporter.test_started(self.table.nodeid(test), worker, elapsed);
        };
        // gw0: pass, gw1: fail.
        started(reporter, 0, 0, 0.25);
        started(reporter, 1, 1, 0.25);
        reporter.test_finished(view(0), &self.reports[0], 1, total);
        reporter.test_finished(view(1), &self.reports[1], 2, total);
        // gw0: error, gw1: the flaky test's first attempt, which is retried.
        started(reporter, 2, 0, 1.25);
        started(reporter, 3, 1, 1.25);
        reporter.test_finished(view(2), &self.reports[2], 3, total);
        reporter.attempt_retried(self.table.nodeid(3), 1, 2);
        // gw0: the rerun, gw1: the timeout; gw1 is then replaced.
        started(reporter, 3, 0, 1.75);
        started(reporter, 4, 1, 1.75);
        reporter.test_finished(view(3), &self.reports[3], 4, total);
        // The timeout passes its slow timeout first.
        reporter.test_slow(self.table.nodeid(4), 1, 2.0);
        reporter.worker_replaced(1);
        reporter.test_finished(view(4), &self.reports[4], 5, total);
        reporter.run_finished(&self.summary()).expect("the reporter finishes");
    }
}
