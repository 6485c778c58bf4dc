//! Tests that kill their worker: each is reported as crashed on the worker
//! that ran it, the others still run (crashes never use up the restart
//! budget), and nothing is lost when workers that cannot start use it up.

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
fn crashing_tests_cost_no_restarts_even_with_none_allowed() {
    // The restart budget is for workers that cannot start; a test that
    // kills its worker ends as `crashed` and the others still run.
    for mode in ["fork", "spawn"] {
        let (report, _) = crash_run(&["--max-worker-restarts", "0", "--mode", mode]);
        report.outcome.assert_code(1);
        let outcomes = report.outcomes();
        for nodeid in CRASHING {
            assert_eq!(outcomes.get(nodeid), Some(&"crashed"), "{mode}: {nodeid}\n{}", report.outcome.stdout);
        }
        for nodeid in PASSING {
            assert_eq!(outcomes.get(nodeid), Some(&"passed"), "{mode}: {nodeid}\n{}", report.outcome.stdout);
        }
    }
}

/// Kills every worker forked after the first two (the replacements) before
/// it can take a test: a broken start-up.
const REPLACEMENTS_DIE_CONFTEST: &str = r#"
import os

forks = 0


def _count_fork():
    global forks
    forks += 1


def _die_if_replacement():
    if forks >= 2:
        os._exit(1)


os.register_at_fork(after_in_parent=_count_fork, after_in_child=_die_if_replacement)
"#;

#[test]
fn workers_that_die_starting_up_exhaust_the_budget_and_the_rest_is_not_run() {
    let project = Project::fixture("crash");
    project.write("conftest.py", format!("{RECORDING_CONFTEST}\n{REPLACEMENTS_DIE_CONFTEST}"));
    let log = project.path().join("env.log");
    let log_arg = log.to_str().expect("a UTF-8 temp path");
    let env = [("SHOAL_FIXTURE_ALLOW_CRASH", "1"), ("SHOAL_ENV_LOG", log_arg)];
    let report = project.shoal_report(&env, &["-n", "2", "--mode", "fork", "--max-worker-restarts", "1"]);
    report.outcome.assert_code(1);
    let started: Vec<String> = read_json_lines(&log)
        .iter()
        .map(|record| record["nodeid"].as_str().expect("a nodeid").to_owned())
        .collect();
    let outcomes = report.outcomes();
    assert_eq!(outcomes.len(), 6, "every test exactly once: {:#}", report.json);
    let mut not_run = 0;
    for test in report.tests() {
        let nodeid = test["nodeid"].as_str().expect("a nodeid");
        if test["outcome"] == "not_run" {
            not_run += 1;
            assert_eq!(test["reason"], "worker restarts exhausted", "{test}");
            assert!(!started.iter().any(|id| id == nodeid), "{nodeid} started but is reported not run");
        } else {
            assert!(
                started.iter().any(|id| id == nodeid),
                "{nodeid} never started but has an outcome: {test}"
            );
        }
    }
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

#[test]
fn a_worker_that_dies_before_sending_its_batched_results_is_charged_only_for_its_crash() {
    let project = Project::fixture("crash_batched");
    project.write("conftest.py", RECORDING_CONFTEST);
    project.shoal(&["run", "-n", "1", "--mode", "fork"]).assert_code(0);
    // With a timeout for every test too: quick tests sharing one still
    // send their results together.
    for extra in [&[][..], &["--timeout", "30"][..]] {
        crash_with_results_waiting(&project, extra);
    }
}

/// Runs `fixtures/crash_batched` with its crash on until the worker dies
/// with results waiting (whether it does depends on timing: they go after
/// 50 ms), checking every try in full. Each try starts from a history that
/// says every test is quick (a loaded machine's measured one may not), so
/// the worker holds many tests at once and sends their results together.
fn crash_with_results_waiting(project: &Project, extra: &[&str]) {
    let quick: serde_json::Map<String, serde_json::Value> =
        (0..1000).map(|n| (format!("test_batched.py::test_quick[{n}]"), serde_json::json!(0.0001))).collect();
    for attempt in 1..=5 {
        project.write(".test_durations", serde_json::Value::Object(quick.clone()).to_string());
        let tag = format!("{}-{attempt}", extra.len());
        let (log, mark) =
            (project.path().join(format!("env{tag}.log")), project.path().join(format!("crashed{tag}")));
        let env = [
            ("SHOAL_ENV_LOG", log.to_str().expect("a UTF-8 temp path")),
            ("SHOAL_FIXTURE_CRASH_MARK", mark.to_str().expect("a UTF-8 temp path")),
        ];
        let mut args = vec!["-n", "1", "--mode", "fork"];
        args.extend_from_slice(extra);
        let report = project.shoal_report(&env, &args);
        report.outcome.assert_code(1);
        assert_eq!(
            report.outcome.closing_counts(),
            "999 passed, 1 crashed",
            "{extra:?}: {}",
            report.outcome.stdout
        );
        let crashed = std::fs::read_to_string(&mark).expect("the dying test left its mark");
        assert_eq!(report.outcomes().get(crashed.as_str()), Some(&"crashed"), "{crashed}");
        let records = read_json_lines(&log);
        let nodeids: Vec<&str> =
            records.iter().map(|record| record["nodeid"].as_str().expect("a nodeid")).collect();
        let first_process = &records[0]["pid"];
        let before_crash =
            &nodeids[..records.iter().take_while(|record| &record["pid"] == first_process).count()];
        assert_eq!(before_crash.last(), Some(&crashed.as_str()), "the fifth test of the first worker died");
        let mut starts: BTreeMap<&str, usize> = BTreeMap::new();
        for &nodeid in &nodeids {
            *starts.entry(nodeid).or_default() += 1;
        }
        assert_eq!(starts[crashed.as_str()], 1, "the crash is not retried");
        // Results finished but not yet sent when the worker died were lost:
        // those tests ran again, and only tests the dead worker had run.
        let again: Vec<&str> =
            starts.iter().filter(|&(_, &count)| count > 1).map(|(&nodeid, _)| nodeid).collect();
        assert!(again.iter().all(|nodeid| before_crash.contains(nodeid)), "{again:?}");
        assert_eq!(
            (starts.len(), nodeids.len()),
            (1000, 1000 + again.len()),
            "every other test started once"
        );
        if !again.is_empty() {
            return;
        }
    }
    panic!("{extra:?}: in five tries, the worker never had results waiting when it died");
}

#[test]
fn among_crashing_and_hanging_tests_every_healthy_test_passes_every_run() {
    for (mode, workers) in [("fork", "2"), ("fork", "3"), ("spawn", "2"), ("spawn", "3")] {
        let project = Project::fixture("crashmix");
        let report =
            project.shoal_report(&[("SHOAL_FIXTURE_ALLOW_CRASH", "1")], &["-n", workers, "--mode", mode]);
        report.outcome.assert_code(1);
        let outcomes = report.outcomes();
        assert_eq!(outcomes.len(), 49, "{mode} -n {workers}: {outcomes:#?}");
        for (nodeid, outcome) in &outcomes {
            let expected = if nodeid.contains("::test_crash_") {
                "crashed"
            } else if nodeid.contains("::test_hang_") {
                "timeout"
            } else {
                "passed"
            };
            assert_eq!(*outcome, expected, "{mode} -n {workers}: {nodeid}\n{}", report.outcome.stdout);
        }
        assert_eq!(report.outcome.closing_counts(), "42 passed, 4 crashed, 3 timeout", "{mode} -n {workers}");
    }
}
