//! Tests that kill their worker: each is reported as crashed on the worker
//! that ran it, the others still run, and nothing is lost when the restart
//! budget runs out.

use std::collections::BTreeMap;

use crate::harness::{Project, RECORDING_CONFTEST, read_json_lines};

const CRASHING: [&str; 3] =
    ["test_crash.py::test_2_os_exit", "test_crash.py::test_3_sigkill", "test_crash.py::test_4_segfault"];
const PASSING: [&str; 3] = [
    "test_crash.py::test_1_passes_before",
    "test_crash.py::test_5_passes_after",
    "test_crash.py::test_6_passes_after",
];

/// Runs `fixtures/crash` with crashes on; returns the report and, from a
/// log the tests write in setup, the workers that started each test.
fn crash_run(extra: &[&str]) -> (crate::harness::Report, BTreeMap<String, Vec<String>>) {
    let project = Project::fixture("crash");
    project.write("conftest.py", RECORDING_CONFTEST);
    let log = project.path().join("env.log");
    let log_arg = log.to_str().expect("a UTF-8 temp path");
    let mut args = vec!["-n", "2"];
    args.extend_from_slice(extra);
    let report =
        project.shoal_report(&[("SHOAL_FIXTURE_ALLOW_CRASH", "1"), ("SHOAL_ENV_LOG", log_arg)], &args);
    let mut started_on: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for record in read_json_lines(&log) {
        let nodeid = record["nodeid"].as_str().expect("a nodeid").to_owned();
        let worker = record["PYTEST_XDIST_WORKER"].as_str().expect("a worker").to_owned();
        started_on.entry(nodeid).or_default().push(worker);
    }
    (report, started_on)
}

#[test]
fn each_crash_is_charged_to_its_test_and_worker() {
    let (report, started_on) = crash_run(&[]);
    report.outcome.assert_code(1);
    let outcomes = report.outcomes();
    assert_eq!(outcomes.len(), 6, "{:#}", report.json);
    for nodeid in CRASHING {
        assert_eq!(outcomes.get(nodeid), Some(&"crashed"), "{nodeid}\n{}", report.outcome.stdout);
        let workers = &started_on[nodeid];
        assert_eq!(workers.len(), 1, "{nodeid} was started more than once: {workers:?}");
        assert_eq!(report.test(nodeid)["worker"], workers[0].as_str(), "{nodeid}: the worker that ran it");
        let failure = report.test(nodeid)["failure"].as_str().unwrap_or_default();
        assert!(!failure.is_empty(), "{nodeid}: a crash says how the worker died");
    }
    for nodeid in PASSING {
        assert_eq!(outcomes.get(nodeid), Some(&"passed"), "{nodeid}\n{}", report.outcome.stdout);
    }
    let closing = report.outcome.closing_map();
    assert_eq!(closing.get("crashed"), Some(&3), "{}", report.outcome.stdout);
    assert_eq!(closing.get("passed"), Some(&3), "{}", report.outcome.stdout);
}

#[test]
fn without_restarts_the_tests_left_are_not_run_and_none_is_lost() {
    let (report, started_on) = crash_run(&["--max-worker-restarts", "0"]);
    report.outcome.assert_code(1);
    let outcomes = report.outcomes();
    assert_eq!(outcomes.len(), 6, "every test exactly once: {:#}", report.json);
    let crashed: Vec<&str> = CRASHING.iter().copied().filter(|id| outcomes[id] == "crashed").collect();
    // Two workers and no replacement: at most two crashes, and a crashing
    // test that did not crash a worker cannot have run.
    assert!(!crashed.is_empty() && crashed.len() <= 2, "{outcomes:#?}");
    for nodeid in CRASHING {
        assert!(matches!(outcomes[nodeid], "crashed" | "not_run"), "{nodeid}: {}", outcomes[nodeid]);
    }
    for nodeid in PASSING {
        assert!(matches!(outcomes[nodeid], "passed" | "not_run"), "{nodeid}: {}", outcomes[nodeid]);
    }
    for test in report.tests() {
        let nodeid = test["nodeid"].as_str().expect("a nodeid");
        match test["outcome"].as_str() {
            Some("not_run") => {
                let reason = test["reason"].as_str().unwrap_or_default();
                assert!(!reason.is_empty() && reason != "max-fail", "{nodeid}: reason {reason:?}");
                assert!(!started_on.contains_key(nodeid), "{nodeid} started but is reported not run");
            }
            _ => {
                assert!(started_on.contains_key(nodeid), "{nodeid} never started but has an outcome: {test}")
            }
        }
    }
    let not_run = outcomes.values().filter(|outcome| **outcome == "not_run").count();
    assert!(not_run >= 1, "{outcomes:#?}");
    assert_eq!(
        report.outcome.closing_map().get("not run"),
        Some(&(not_run as u64)),
        "{}",
        report.outcome.stdout
    );
}

#[test]
fn under_lf_spawned_replacements_are_accepted_and_the_crashes_run_again() {
    // A replacement collects the whole suite, while --lf runs three tests:
    // it is checked against the whole collection, not the three.
    let project = Project::fixture("crash");
    project.write("pytest.ini", "[pytest]\n"); // with the cache, for --lf
    let env = [("SHOAL_FIXTURE_ALLOW_CRASH", "1")];
    project.shoal_with_env(&env, &["run", "-n", "2", "--mode", "spawn"]).assert_code(1);
    let report = project.shoal_report(&env, &["-n", "2", "--mode", "spawn", "--lf"]);
    report.outcome.assert_code(1);
    let outcomes = report.outcomes();
    assert_eq!(outcomes.len(), 3, "only the last failures run: {outcomes:?}");
    for nodeid in CRASHING {
        assert_eq!(outcomes.get(nodeid), Some(&"crashed"), "{nodeid}\n{}", report.outcome.stdout);
    }
    assert!(!report.outcome.stderr.contains("collected different tests"), "{}", report.outcome.stderr);
    assert_eq!(report.outcome.closing_map().get("crashed"), Some(&3), "{}", report.outcome.stdout);
}
