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
