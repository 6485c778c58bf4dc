//! What shoal's plugin leaves in a worker that a test could observe: nothing
//! beyond what pytest-xdist's worker has. `fixtures/footprint` checks it from
//! inside the tests, under `filterwarnings = error` and Python's development
//! mode (a file object the plugin dropped unclosed would error a test).

use crate::harness::{Project, has_xdist};

const DEVELOPMENT_MODE: [(&str, &str); 1] = [("PYTHONDEVMODE", "1")];

#[test]
fn the_plugin_leaves_nothing_a_test_can_observe_in_fork_and_spawn_mode() {
    let project = Project::fixture("footprint");
    let expected = project.pytest_with_env(&DEVELOPMENT_MODE, &[]);
    assert_eq!(expected.code, Some(0), "sequential pytest:\n{}", expected.stdout);
    for mode in ["fork", "spawn"] {
        for workers in ["1", "2"] {
            let report = project
                .shoal_report(&DEVELOPMENT_MODE, &["-n", workers, "--mode", mode, "--", "-W", "error"]);
            assert_eq!(
                report.outcome.closing_counts(),
                expected.closing_counts(),
                "{mode} -n {workers}:\n{}\n{}",
                report.outcome.stdout,
                report.outcome.stderr
            );
            report.outcome.assert_code(0);
        }
    }
}

#[test]
fn the_same_checks_pass_under_pytest_xdist() {
    // The fixture's own yardstick: what xdist's workers show.
    if !has_xdist() {
        return;
    }
    let project = Project::fixture("footprint");
    let outcome = project.pytest_with_env(&DEVELOPMENT_MODE, &["-n", "2"]);
    assert_eq!(outcome.code, Some(0), "{}", outcome.stdout);
}
