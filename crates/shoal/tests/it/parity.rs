//! shoal's closing line and exit code equal sequential pytest's, project by
//! project, and `-k`/`-m` select what pytest selects.

use std::collections::BTreeSet;

use crate::harness::{Outcome, Project, pytest_major};

/// Runs shoal (`-n 2` unless `shoal_args` names a count) and sequential
/// pytest on one copy of the project and compares closing line and exit code.
/// Returns shoal's outcome.
fn assert_parity_on(project: &Project, name: &str, shoal_args: &[&str], pytest_args: &[&str]) -> Outcome {
    let expected = project.pytest(pytest_args);
    let mut args = vec!["run"];
    if !shoal_args.contains(&"-n") {
        args.extend(["-n", "2"]);
    }
    args.extend_from_slice(shoal_args);
    let actual = project.shoal(&args);
    assert_eq!(
        (actual.closing_counts(), actual.code),
        (expected.closing_counts(), expected.code),
        "{name} {shoal_args:?}: shoal vs pytest {pytest_args:?}\nshoal stdout:\n{}\nshoal stderr:\n{}\npytest stdout:\n{}",
        actual.stdout,
        actual.stderr,
        expected.stdout
    );
    actual
}

fn assert_parity(name: &str, shoal_args: &[&str], pytest_args: &[&str]) -> Outcome {
    assert_parity_on(&Project::fixture(name), name, shoal_args, pytest_args)
}

#[test]
fn every_outcome_kind_counts_as_pytest_counts_it() {
    assert_parity("outcomes", &[], &[]);
}

#[test]
fn odd_node_ids_classes_and_unittest_tests() {
    assert_parity("ids", &[], &[]);
}

#[test]
fn fixtures_of_every_scope() {
    assert_parity("scopes", &[], &[]);
}

#[test]
fn marked_tests_without_selection() {
    assert_parity("markers", &[], &[]);
}

#[test]
fn a_collection_error_interrupts_the_run_like_pytest() {
    assert_parity("collect_error", &[], &[]).assert_code(2);
}

#[test]
fn continue_on_collection_errors_runs_the_rest_like_pytest() {
    let flag = "--continue-on-collection-errors";
    let outcome = assert_parity("collect_error", &[flag], &[flag]);
    outcome.assert_code(1);
    assert_eq!(outcome.closing_counts(), "2 passed, 1 error");
}

#[test]
fn pytest_9_subtests_are_counted_like_pytest() {
    let project = Project::fixture("subtests");
    assert_parity_on(&project, "subtests", &[], &[]);
    if pytest_major() >= 9 {
        // Passing subtests are only counted when the verbosity is not 0,
        // which `-q` changes as much as `-v` does.
        assert_parity_on(&project, "subtests", &["-v"], &["-v"]);
        assert_parity_on(&project, "subtests", &["-q"], &["-q"]);
    }
}

#[test]
fn pytest_options_after_double_dash_change_results_like_pytest() {
    let project = Project::fixture("passthrough");
    assert_parity_on(&project, "passthrough", &[], &[]);
    assert_parity_on(&project, "passthrough", &["--", "-p", "localplugin"], &["-p", "localplugin"]);
    assert_parity_on(
        &project,
        "passthrough",
        &["--", "-p", "localplugin", "-W", "error::UserWarning"],
        &["-p", "localplugin", "-W", "error::UserWarning"],
    );
}

#[test]
fn worker_facts_project() {
    assert_parity("workerenv", &[], &[]);
}

#[test]
fn a_project_without_tests_ran_nothing_like_pytest() {
    assert_parity("empty", &[], &[]).assert_code(5);
}

#[test]
fn an_all_passing_project() {
    assert_parity("allpass", &[], &[]).assert_code(0);
}

#[test]
fn the_crash_project_with_crashes_disabled() {
    assert_parity("crash", &[], &[]);
}

/// The `markers` project's selections, the tests each selects (from
/// fixtures/README.md) and the worker count to run it with: the counts take
/// turns so that each of 1, 2 and 3 sees both `-k` and `-m`.
const SELECTIONS: &[(&str, &str, &[&str], &str)] = &[
    ("-k", "alpha", &["test_alpha_one", "test_alpha_two"], "1"),
    (
        "-k",
        "not beta",
        &[
            "test_alpha_one",
            "test_alpha_two",
            "TestGamma::test_gamma_one",
            "TestGamma::test_gamma_two",
            "TestGamma::test_gamma_three",
        ],
        "3",
    ),
    ("-m", "slow", &["test_alpha_two", "test_beta_two", "TestGamma::test_gamma_three"], "2"),
    ("-m", "db and not slow", &["test_beta_one"], "3"),
    (
        "-k",
        "gamma",
        &["TestGamma::test_gamma_one", "TestGamma::test_gamma_two", "TestGamma::test_gamma_three"],
        "2",
    ),
    ("-m", "db", &["test_beta_one", "test_beta_two"], "1"),
    ("-k", "alpha and not two", &["test_alpha_one"], "3"),
];

#[test]
fn keyword_and_marker_expressions_select_what_pytest_selects() {
    let project = Project::fixture("markers");
    for (flag, expression, selected, workers) in SELECTIONS {
        let expected = project.pytest(&[flag, expression]);
        let report = project.shoal_report(&[], &["-n", workers, flag, expression]);
        let actual = &report.outcome;
        assert_eq!(
            (actual.closing_counts(), actual.code),
            (expected.closing_counts(), expected.code),
            "{flag} {expression:?} -n {workers}\nshoal stdout:\n{}\nshoal stderr:\n{}",
            actual.stdout,
            actual.stderr
        );
        let expected_ids: BTreeSet<String> =
            selected.iter().map(|name| format!("test_select.py::{name}")).collect();
        let ran: BTreeSet<String> = report.node_ids().into_iter().map(str::to_owned).collect();
        assert_eq!(ran, expected_ids, "{flag} {expression:?} -n {workers}: the tests in the JSON report");
    }
}
