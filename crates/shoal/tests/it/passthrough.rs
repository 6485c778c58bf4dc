//! Arguments after `--` reach pytest in every worker unchanged, and pytest's
//! own complaints about them reach the user.

use crate::harness::Project;

#[test]
fn a_plugin_named_after_double_dash_is_loaded_in_every_worker() {
    let project = Project::fixture("passthrough");
    let without = project.shoal(&["run", "-n", "2"]);
    without.assert_code(1);
    assert!(without.stdout.contains("localplugin is not loaded"), "{}", without.stdout);

    let report = project.shoal_report(&[], &["-n", "2", "--", "-p", "localplugin"]);
    report.outcome.assert_code(0);
    assert_eq!(report.outcome.closing_counts(), "3 passed, 1 warning");
    assert_eq!(report.outcome_counts().get("passed"), Some(&3), "{:#}", report.json);
}

#[test]
fn an_unknown_pytest_flag_shows_pytests_error_and_exits_4() {
    let project = Project::fixture("allpass");
    let expected = project.pytest(&["--no-such-flag"]);
    assert_eq!(expected.code, Some(4), "pytest's usage error code");
    let outcome = project.shoal(&["run", "-n", "2", "--", "--no-such-flag"]);
    outcome.assert_code(4);
    assert!(
        outcome.stderr.contains("unrecognized arguments: --no-such-flag"),
        "pytest's own error is on stderr:\n{}",
        outcome.stderr
    );
}
