//! `--junitxml` is read by a standard JUnit parser (junitparser) the way
//! pytest's own `--junitxml` file is: the same test cases, with the same
//! classnames, names and results.

use std::process::Command;

use crate::harness::{Project, pytest_major, python};

/// `(classname, name, result)` of every test case, read with junitparser,
/// plus the suite's counts, as one JSON value.
pub(crate) fn parse(path: &std::path::Path) -> serde_json::Value {
    let script = r#"
import json, sys
from junitparser import JUnitXml, Failure, Error, Skipped
xml = JUnitXml.fromfile(sys.argv[1])
cases, suites = [], []
for suite in xml:
    suites.append({"tests": suite.tests, "failures": suite.failures, "errors": suite.errors, "skipped": suite.skipped})
    for case in suite:
        kinds = [type(result).__name__ for result in case.result]
        cases.append([case.classname or "", case.name, kinds[0] if kinds else "passed"])
print(json.dumps({"cases": sorted(cases), "suites": suites}))
"#;
    let output = Command::new(python()).arg("-c").arg(script).arg(path).output().expect("python runs");
    assert!(output.status.success(), "junitparser failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("JSON from the script")
}

fn compare(fixture: &str, extra: &[&str]) {
    let project = Project::fixture(fixture);
    let ours = project.path().join("shoal.xml");
    let theirs = project.path().join("pytest.xml");
    let mut args = vec!["run", "-n", "2", "--junitxml", ours.to_str().expect("a UTF-8 path")];
    args.extend_from_slice(extra);
    project.shoal(&args);
    let mut pytest_args = vec!["--junitxml", theirs.to_str().expect("a UTF-8 path")];
    pytest_args.extend_from_slice(extra);
    project.pytest(&pytest_args);
    let (mut ours, mut theirs) = (parse(&ours), parse(&theirs));
    assert_eq!(ours["cases"], theirs["cases"], "{fixture}: test cases differ from pytest's");
    if pytest_major() < 9 {
        // pytest 7 counts a test whose teardown fails after it passed twice
        // in the suite's `tests` attribute; shoal writes one case for it,
        // as pytest 9 does. The other counts agree.
        for value in [&mut ours, &mut theirs] {
            value["suites"][0]["tests"] = serde_json::Value::Null;
        }
    }
    assert_eq!(ours["suites"], theirs["suites"], "{fixture}: suite counts differ from pytest's");
}

#[test]
fn every_outcome_reads_as_in_pytests_own_junit_file() {
    compare("outcomes", &[]);
}

#[test]
fn odd_node_ids_and_collection_errors_read_as_in_pytests_own_file() {
    compare("ids", &[]);
    compare("collect_error", &["--continue-on-collection-errors"]);
}

#[test]
fn reruns_show_as_flaky_and_rerun_failures_with_worker_properties() {
    let project = Project::fixture("reruns");
    let path = project.path().join("shoal.xml");
    project.shoal_with_env(
        &[("SHOAL_FIXTURE_FLAKY", "1")],
        &["run", "-n", "2", "--reruns", "1", "--junitxml", path.to_str().expect("a UTF-8 path")],
    );
    let xml = std::fs::read_to_string(&path).expect("the JUnit file");
    assert!(xml.contains("<flakyFailure"), "a flaky test keeps its failed attempt:\n{xml}");
    assert!(xml.contains("<rerunFailure"), "a test failing every attempt keeps the earlier ones:\n{xml}");
    assert!(xml.contains(r#"<property name="attempt" value="2"/>"#), "{xml}");
    assert!(xml.contains(r#"<property name="worker" value="gw"#), "{xml}");
    parse(&path);
}

#[test]
fn a_junitxml_among_pytest_arguments_is_written_once_for_the_run() {
    let project = Project::fixture("allpass");
    let path = project.path().join("from-addopts.xml");
    let flag = format!("--junitxml={}", path.to_str().expect("a UTF-8 path"));
    project.shoal(&["run", "-n", "2", "--", &flag]).assert_code(0);
    let parsed = parse(&path);
    assert_eq!(
        parsed["cases"].as_array().map(Vec::len),
        Some(6),
        "every test of the run, not one worker's share"
    );
}
