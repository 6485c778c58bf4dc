//! shoal exits with pytest's codes: 0 passed, 1 failed, 2 interrupted by
//! collection errors, 4 usage error, 5 nothing ran.

use std::process::Command;

use crate::harness::{Project, python};

#[test]
fn all_passed_is_0() {
    Project::fixture("allpass").shoal(&["run", "-n", "2"]).assert_code(0);
}

#[test]
fn failures_are_1() {
    Project::fixture("outcomes").shoal(&["run", "-n", "2"]).assert_code(1);
}

#[test]
fn collection_errors_are_2() {
    let outcome = Project::fixture("collect_error").shoal(&["run", "-n", "2"]);
    outcome.assert_code(2);
    assert!(outcome.stdout.contains("Interrupted: 1 error during collection"), "{}", outcome.stdout);
}

#[test]
fn a_bad_worker_count_is_4() {
    let project = Project::fixture("allpass");
    for count in ["zero", "0", "-3"] {
        let outcome = project.shoal(&["run", "-n", count]);
        outcome.assert_code(4);
        assert!(
            outcome.stderr.contains(count),
            "-n {count}: the message names the value:\n{}",
            outcome.stderr
        );
    }
}

#[test]
fn a_bad_selection_is_4() {
    Project::fixture("allpass").shoal(&["run", "-n", "2", "--select", "absent.txt"]).assert_code(4);
}

#[test]
fn an_unknown_shoal_flag_is_4() {
    let outcome = Project::fixture("allpass").shoal(&["run", "--no-such-shoal-flag"]);
    outcome.assert_code(4);
    assert!(outcome.stderr.contains("--no-such-shoal-flag"), "{}", outcome.stderr);
}

#[test]
fn a_python_without_pytest_is_4_and_says_how_to_install_it() {
    let project = Project::fixture("allpass");
    // A fresh venv of the test interpreter's Python, without pip or pytest.
    let venv = project.path().join("bare-venv");
    let created = Command::new(python())
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .output()
        .expect("python runs");
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let bare = venv.join("bin/python");
    let probe = Command::new(&bare).args(["-c", "import pytest"]).output().expect("the venv's python runs");
    assert!(!probe.status.success(), "the bare venv should not have pytest");

    let bare = bare.to_str().expect("a UTF-8 temp path");
    for subcommand in ["run", "list"] {
        let outcome = project.shoal_as_typed(&[subcommand, "--python", bare]);
        outcome.assert_code(4);
        assert!(
            outcome.stderr.contains(bare),
            "{subcommand}: the message names the interpreter:\n{}",
            outcome.stderr
        );
        assert!(
            outcome.stderr.contains("pip install pytest"),
            "{subcommand}: the message says how to install pytest:\n{}",
            outcome.stderr
        );
    }
}

#[test]
fn an_empty_project_is_5() {
    let outcome = Project::fixture("empty").shoal(&["run", "-n", "2"]);
    outcome.assert_code(5);
    assert_eq!(outcome.closing_counts(), "no tests ran");
}

#[test]
fn everything_deselected_is_5_like_pytest() {
    let project = Project::fixture("allpass");
    let expected = project.pytest(&["-k", "nomatch"]);
    let outcome = project.shoal(&["run", "-n", "2", "-k", "nomatch"]);
    outcome.assert_code(5);
    assert_eq!(outcome.closing_counts(), expected.closing_counts());
    assert_eq!(outcome.code, expected.code);
}
