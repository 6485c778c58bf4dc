//! `shoal replay`: a test whose outcome depends on the tests its worker ran
//! before it (`fixtures/order_effect`) fails again when replayed after them,
//! in one pytest process, and passes alone.

use crate::harness::Project;

const VICTIM: &str = "test_order.py::test_victim";

#[test]
fn a_test_failing_after_its_workers_earlier_tests_fails_again_when_replayed() {
    let project = Project::fixture("order_effect");
    // One worker runs all three in collection order: the victim fails.
    let report = project.shoal_report(&[], &["-n", "1"]);
    assert_eq!(report.outcomes()[VICTIM], "failed", "{}", report.outcome.stdout);
    let report_path = project.path().join(".shoal-it-report.json");
    let report_arg = report_path.to_str().expect("a UTF-8 temp path");

    let printed = project.shoal(&[
        "replay",
        report_arg,
        VICTIM,
        "--python",
        project.interpreter().to_str().unwrap(),
        "--print",
    ]);
    printed.assert_code(0);
    let command = printed.stdout.trim();
    let polluter = command.find("test_order.py::test_polluter").expect("the polluter is replayed");
    let victim = command.find(VICTIM).expect("the victim is replayed");
    assert!(polluter < victim, "{command}");

    let replayed =
        project.shoal(&["replay", report_arg, VICTIM, "--python", project.interpreter().to_str().unwrap()]);
    replayed.assert_code(1);
    assert_eq!(replayed.closing_counts(), "1 failed, 2 passed", "{}", replayed.stdout);
    assert!(replayed.stderr.contains("after the 2 tests gw0 ran before it"), "{}", replayed.stderr);
    // Alone it passes: the order is what fails it.
    project.pytest(&[VICTIM]).assert_code(0);

    let unknown = project.shoal(&["replay", report_arg, "test_order.py::nope"]);
    unknown.assert_code(4);
    assert!(unknown.stderr.contains("no test test_order.py::nope"), "{}", unknown.stderr);
}

#[test]
fn a_test_that_passed_last_time_and_fails_after_other_tests_is_named_with_its_replay() {
    let project = Project::fixture("order_effect");
    // Alone it passes: the history and pytest's cache know it as passing.
    project.shoal(&["run", "-n", "1", VICTIM]).assert_code(0);
    // With the others (which have no history, so they go first) it fails.
    let outcome = project.shoal(&["run", "-n", "1", "--json-report", "run.json"]);
    outcome.assert_code(1);
    let notice = format!(
        "{VICTIM} failed, and passed last time: worker gw0 ran 2 tests before it; \
         `shoal replay run.json {VICTIM}` reruns it after them"
    );
    assert!(outcome.stdout.contains(&notice), "{}", outcome.stdout);
    // It fails again (the history now says the polluter is the longest, so
    // it goes first): it failed last time, and nothing more is said.
    let durations = r#"{"test_order.py::test_polluter": 5.0, "test_order.py::test_bystander": 0.001,
        "test_order.py::test_victim": 0.001}"#;
    project.write(".test_durations", durations);
    let again = project.shoal(&["run", "-n", "1"]);
    again.assert_code(1);
    assert!(!again.stdout.contains("passed last time"), "{}", again.stdout);
}
