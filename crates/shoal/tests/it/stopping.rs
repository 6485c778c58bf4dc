//! `-x` and `--maxfail`: after enough failures nothing new starts, and the
//! tests that never ran are reported as not run, each exactly once.

use std::collections::BTreeSet;

use crate::harness::{Project, Report};

/// Tests 3 and 7 fail.
const FAILING: [&str; 2] = ["test_slow.py::test_03", "test_slow.py::test_07"];
const TEST_COUNT: usize = 30;
const SLEEP_SECONDS: f64 = 0.05;

/// 30 tests of 0.05 s each.
fn slow_project() -> Project {
    let project = Project::empty();
    project.write("pytest.ini", "[pytest]\naddopts = -p no:cacheprovider\n");
    let mut source = String::from("import time\n");
    for index in 1..=TEST_COUNT {
        let body = if index == 3 || index == 7 { "    assert False, 'planned failure'\n" } else { "" };
        source.push_str(&format!("\n\ndef test_{index:02}():\n    time.sleep({SLEEP_SECONDS})\n{body}"));
    }
    project.write("test_slow.py", source);
    project
}

/// Checks what `-x`/`--maxfail` promise; returns the failed node ids.
fn check_stopped_run(report: &Report, stop_after: u64) -> BTreeSet<String> {
    let outcome = &report.outcome;
    outcome.assert_code(1);
    let all: BTreeSet<String> =
        (1..=TEST_COUNT).map(|index| format!("test_slow.py::test_{index:02}")).collect();
    let outcomes = report.outcomes();
    assert_eq!(
        outcomes.keys().map(|id| (*id).to_owned()).collect::<BTreeSet<_>>(),
        all,
        "every test exactly once"
    );

    let failed: BTreeSet<String> = outcomes
        .iter()
        .filter(|(_, outcome)| **outcome == "failed")
        .map(|(id, _)| (*id).to_owned())
        .collect();
    assert!(!failed.is_empty() && failed.iter().all(|id| FAILING.contains(&id.as_str())), "{failed:?}");
    let not_run: Vec<&serde_json::Value> =
        report.tests().iter().filter(|test| test["outcome"] == "not_run").collect();
    assert!(!not_run.is_empty(), "stopping early left nothing unrun:\n{}", outcome.stdout);
    for test in &not_run {
        assert_eq!(test["reason"], "max-fail", "{test}");
        assert!(test["worker"].is_null(), "a test that did not run names a worker: {test}");
    }
    for test in report.tests().iter().filter(|test| test["outcome"] != "not_run") {
        assert_eq!(test["outcome"] == "failed", failed.contains(test["nodeid"].as_str().unwrap()));
        if test["outcome"] == "passed" {
            let call = test["call_duration"].as_f64().expect("a call duration");
            assert!(call >= SLEEP_SECONDS * 0.9, "{test}: a 0.05 s test took {call}");
            assert!(test["duration"].as_f64().expect("a duration") >= call, "{test}");
        }
    }
    let ran = outcomes.values().filter(|outcome| **outcome != "not_run").count();
    assert_eq!(ran + not_run.len(), TEST_COUNT);

    let closing = outcome.closing_map();
    assert_eq!(closing.get("failed"), Some(&(failed.len() as u64)), "{}", outcome.stdout);
    assert_eq!(closing.get("not run"), Some(&(not_run.len() as u64)), "{}", outcome.stdout);
    assert_eq!(
        closing.get("passed").copied().unwrap_or(0),
        (ran - failed.len()) as u64,
        "{}",
        outcome.stdout
    );
    // pytest and pytest-xdist name the limit that was reached, even when
    // tests already running fail too.
    let notice = format!("stopping after {stop_after} failures");
    assert!(outcome.stdout.contains(&notice), "the stop notice should read {notice:?}:\n{}", outcome.stdout);
    failed
}

#[test]
fn exitfirst_stops_after_the_first_failure() {
    let report = slow_project().shoal_report(&[], &["-n", "2", "-x"]);
    check_stopped_run(&report, 1);
}

#[test]
fn maxfail_stops_after_that_many_failures() {
    let report = slow_project().shoal_report(&[], &["-n", "2", "--maxfail", "2"]);
    let failed = check_stopped_run(&report, 2);
    // Only two tests can fail, and the run stops only once both have.
    assert_eq!(failed, FAILING.iter().map(|id| (*id).to_owned()).collect());
}

/// Tiny tests, several of which fail back to back: a worker holds a batch of
/// them when the first failure is reported.
fn tiny_failing_project() -> Project {
    let project = Project::empty();
    project.write("pytest.ini", "[pytest]\naddopts = -p no:cacheprovider\n");
    let mut source = String::new();
    for index in 1..=40 {
        let body = if index % 5 == 2 { "assert False" } else { "pass" };
        source.push_str(&format!("\n\ndef test_{index:02}():\n    {body}\n"));
    }
    project.write("test_tiny.py", source);
    project
}

#[test]
fn with_one_worker_maxfail_stops_exactly_where_pytest_stops() {
    for limit in ["1", "2", "3"] {
        // A new project each time: no durations history to reorder the tests.
        let project = tiny_failing_project();
        let expected = project.pytest(&["--maxfail", limit]);
        let report = project.shoal_report(&[], &["-n", "1", "--maxfail", limit]);
        assert_eq!(report.outcome.code, expected.code, "--maxfail {limit}");
        let ran: BTreeSet<&str> = report
            .tests()
            .iter()
            .filter(|test| test["outcome"] != "not_run")
            .map(|test| test["nodeid"].as_str().expect("a nodeid"))
            .collect();
        // pytest ran tests 01 up to its limit-th failure, in order.
        let last = 2 + 5 * (limit.parse::<usize>().expect("a number") - 1);
        let pytest_ran: BTreeSet<String> =
            (1..=last).map(|index| format!("test_tiny.py::test_{index:02}")).collect();
        assert_eq!(ran, pytest_ran.iter().map(String::as_str).collect(), "--maxfail {limit}");
        let counts = report.outcome.closing_counts();
        assert!(
            counts.starts_with(&expected.closing_counts()),
            "--maxfail {limit}: shoal {counts:?}, pytest {:?}",
            expected.closing_counts()
        );
    }
}
