//! `--json-report`: a versioned record of the run in which every collected
//! test appears exactly once with its outcome, timings and worker, in the
//! shape `docs/json-report.schema.json` documents.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::harness::{Project, parse_rfc3339_utc, python_output};

/// Validates the report file `argv[2]` against the JSON Schema `argv[1]`,
/// printing every error (not only the first); exits 1 if there are any.
const VALIDATE_AGAINST_SCHEMA: &str = r#"
import json, sys, jsonschema
schema_path, report_path = sys.argv[1:]
with open(schema_path, encoding="utf-8") as schema_file:
    schema = json.load(schema_file)
with open(report_path, encoding="utf-8") as report_file:
    report = json.load(report_file)
jsonschema.Draft202012Validator.check_schema(schema)
errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(report), key=lambda error: error.json_path)
for error in errors:
    print(f"{error.json_path}: {error.message}")
sys.exit(1 if errors else 0)
"#;

/// One `shoal run --json-report` whose report is checked against the schema.
struct SchemaCase {
    fixture: &'static str,
    env: &'static [(&'static str, &'static str)],
    args: &'static [&'static str],
    expected_code: i32,
}

/// Runs that between them write every part of the report: every outcome but
/// `timeout`, not-run reasons, rerun attempts, crashes, collection errors
/// and a shard.
const SCHEMA_CASES: &[SchemaCase] = &[
    SchemaCase { fixture: "outcomes", env: &[], args: &["-n", "2"], expected_code: 1 },
    SchemaCase { fixture: "outcomes", env: &[], args: &["-n", "1", "-x"], expected_code: 1 },
    SchemaCase {
        fixture: "reruns",
        env: &[("SHOAL_FIXTURE_FLAKY", "1")],
        args: &["-n", "2", "--reruns", "1"],
        expected_code: 1,
    },
    SchemaCase {
        fixture: "collect_error",
        env: &[],
        args: &["-n", "2", "--continue-on-collection-errors"],
        expected_code: 1,
    },
    SchemaCase { fixture: "collect_error", env: &[], args: &["-n", "2"], expected_code: 2 },
    SchemaCase { fixture: "allpass", env: &[], args: &["-n", "2", "--shard", "2/3"], expected_code: 0 },
    SchemaCase {
        fixture: "crash",
        env: &[("SHOAL_FIXTURE_ALLOW_CRASH", "1")],
        args: &["-n", "2"],
        expected_code: 1,
    },
];

/// Each test of `fixtures/outcomes` and its one final outcome (README).
const OUTCOMES: &[(&str, &str)] = &[
    ("test_outcomes.py::test_pass", "passed"),
    ("test_outcomes.py::test_fail", "failed"),
    ("test_outcomes.py::test_setup_error", "error"),
    ("test_outcomes.py::test_teardown_error", "error"),
    ("test_outcomes.py::test_skip_marker", "skipped"),
    ("test_outcomes.py::test_skip_in_body", "skipped"),
    ("test_outcomes.py::test_skipif_true", "skipped"),
    ("test_outcomes.py::test_xfail_fails", "xfailed"),
    ("test_outcomes.py::test_xpass_non_strict", "xpassed"),
    ("test_outcomes.py::test_xpass_strict", "failed"),
    ("test_outcomes.py::test_warns", "passed"),
];

/// Text each failing test's `failure` must contain.
const FAILURE_TEXTS: &[(&str, &str)] = &[
    ("test_outcomes.py::test_fail", "assert 2 == 3"),
    ("test_outcomes.py::test_setup_error", "RuntimeError: setup fixture exploded"),
    ("test_outcomes.py::test_teardown_error", "RuntimeError: teardown fixture exploded"),
    ("test_outcomes.py::test_xpass_strict", "[XPASS(strict)]"),
];

fn seconds(value: &serde_json::Value, what: &str) -> f64 {
    let number = value.as_f64().unwrap_or_else(|| panic!("{what} is not a number: {value}"));
    assert!(number.is_finite() && number >= 0.0, "{what} = {number}");
    number
}

#[test]
fn the_run_section_describes_the_run() {
    let project = Project::fixture("outcomes");
    let report = project.shoal_report(&[], &["-n", "2"]);
    report.outcome.assert_code(1);
    let json = &report.json;
    assert_eq!(json["format_version"], 1);
    let run = &json["run"];
    assert_eq!(run["shoal"], env!("CARGO_PKG_VERSION"));
    assert_eq!(run["python"], python_output("import platform; print(platform.python_version())"));
    assert_eq!(run["pytest"], python_output("import pytest; print(pytest.__version__)"));
    assert_eq!(run["workers"], 2);
    assert_eq!(run["exit_code"], 1);

    let started_at = parse_rfc3339_utc(run["started_at"].as_str().expect("started_at is a string"));
    // The report has millisecond precision.
    let slack = Duration::from_millis(5);
    assert!(
        report.before <= started_at + slack && started_at <= report.after,
        "started_at {} is not within the command's run",
        run["started_at"]
    );
    let wall = seconds(&run["wall_seconds"], "wall_seconds");
    let elapsed = report.after.duration_since(report.before).expect("time went forward").as_secs_f64();
    assert!(wall > 0.0 && wall <= elapsed, "wall_seconds {wall} for a command that took {elapsed}s");
}

#[test]
fn every_test_appears_once_with_its_own_outcome() {
    let project = Project::fixture("outcomes");
    let report = project.shoal_report(&[], &["-n", "2"]);
    let outcomes = report.outcomes();
    let expected: BTreeMap<&str, &str> = OUTCOMES.iter().copied().collect();
    assert_eq!(outcomes, expected, "{:#}", report.json);

    let collected: BTreeSet<String> = project.pytest_node_ids(&[]).into_iter().collect();
    let reported: BTreeSet<String> = report.node_ids().into_iter().map(str::to_owned).collect();
    assert_eq!(reported, collected);
    assert_eq!(report.tests().len(), collected.len());

    let mut expected_summary: BTreeMap<String, u64> = BTreeMap::new();
    for (_, outcome) in OUTCOMES {
        *expected_summary.entry((*outcome).to_owned()).or_insert(0) += 1;
    }
    let summary: BTreeMap<String, u64> =
        serde_json::from_value(report.json["summary"].clone()).expect("summary maps outcomes to counts");
    assert_eq!(summary, expected_summary);
    assert_eq!(summary, report.outcome_counts());
}

#[test]
fn pytests_work_between_the_phases_is_reported_apart_from_the_tests_durations() {
    // A conftest hook that takes 50 ms per logged report: pytest's own work
    // after each phase, which no phase's duration holds.
    let project = Project::empty();
    project
        .write("conftest.py", "import time\n\ndef pytest_runtest_logreport(report):\n    time.sleep(0.05)\n")
        .write("test_quick.py", "def test_a():\n    pass\n\ndef test_b():\n    pass\n");
    let report = project.shoal_report(&[], &["-n", "1"]);
    report.outcome.assert_code(0);
    let run = &report.json["run"];
    let tests = seconds(&run["test_seconds"], "test_seconds");
    let between = seconds(&run["between_phases_seconds"], "between_phases_seconds");
    // Two tests, three reports each.
    assert!(between >= 6.0 * 0.05, "between_phases_seconds {between}, expected at least 0.3:\n{run:#}");
    assert!(tests < 0.2, "the reports' hooks are not the tests' time: test_seconds {tests}\n{run:#}");
    let line =
        report.outcome.stdout.lines().find(|line| line.starts_with("between phases ")).unwrap_or_else(|| {
            panic!("the summary shows the time between phases:\n{}", report.outcome.stdout)
        });
    assert!(line.contains("counting them, the bound is"), "{line}");
}

#[test]
fn each_test_has_timings_a_worker_and_failure_text_for_failures() {
    let project = Project::fixture("outcomes");
    let report = project.shoal_report(&[], &["-n", "2"]);
    let wall = seconds(&report.json["run"]["wall_seconds"], "wall_seconds");
    let failure_texts: BTreeMap<&str, &str> = FAILURE_TEXTS.iter().copied().collect();
    for test in report.tests() {
        let nodeid = test["nodeid"].as_str().expect("a nodeid");
        let duration = seconds(&test["duration"], "duration");
        let phases: f64 = ["setup_duration", "call_duration", "teardown_duration"]
            .iter()
            .map(|key| seconds(&test[*key], key))
            .sum();
        assert!(duration <= wall, "{nodeid}: duration {duration} longer than the run ({wall})");
        assert!(phases <= wall, "{nodeid}: phases {phases} longer than the run ({wall})");
        assert!(
            matches!(test["worker"].as_str(), Some("gw0" | "gw1")),
            "{nodeid}: worker {}",
            test["worker"]
        );
        match failure_texts.get(nodeid) {
            Some(needle) => {
                let failure =
                    test["failure"].as_str().unwrap_or_else(|| panic!("{nodeid} has no failure text"));
                assert!(failure.contains(needle), "{nodeid}: failure text lacks {needle:?}:\n{failure}");
            }
            None => assert!(test["failure"].is_null(), "{nodeid} passed but has failure text: {test}"),
        }
    }
}

#[test]
fn awkward_node_ids_survive_the_json_report() {
    let project = Project::fixture("ids");
    let report = project.shoal_report(&[], &["-n", "2"]);
    report.outcome.assert_code(0);
    let collected = project.pytest_node_ids(&[]);
    let mut reported: Vec<&str> = report.node_ids();
    reported.sort_unstable();
    let mut collected: Vec<&str> = collected.iter().map(String::as_str).collect();
    collected.sort_unstable();
    assert_eq!(reported, collected);
    assert_eq!(report.test("test_params.py::test_awkward_str[back\\\\slash]")["outcome"], "passed");
    assert_eq!(report.test("test_unit.py::TestWithSetup::test_expected_failure")["outcome"], "xfailed");
}

#[test]
fn collection_errors_are_recorded() {
    let project = Project::fixture("collect_error");
    let report = project.shoal_report(&[], &["-n", "2", "--continue-on-collection-errors"]);
    report.outcome.assert_code(1);
    let errors = report.json["collect_errors"].as_array().expect("a collect_errors array");
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0]["nodeid"], "test_broken.py");
    let longrepr = errors[0]["longrepr"].as_str().expect("a longrepr");
    assert!(longrepr.contains("No module named 'shoal_fixture_module_that_does_not_exist'"), "{longrepr}");
    assert_eq!(report.json["summary"], serde_json::json!({"passed": 2}));
}

#[test]
fn events_stream_the_run_as_json_lines() {
    let project = crate::harness::Project::fixture("reruns");
    let path = project.path().join("events.jsonl");
    project
        .shoal_with_env(
            &[("SHOAL_FIXTURE_FLAKY", "1")],
            &["run", "-n", "2", "--reruns", "1", "--events", path.to_str().expect("a UTF-8 path")],
        )
        .assert_code(1);
    let events = crate::harness::read_json_lines(&path);
    let kinds: Vec<&str> = events.iter().map(|event| event["event"].as_str().expect("an event")).collect();
    assert_eq!(kinds.first(), Some(&"run_started"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"run_finished"), "{kinds:?}");
    assert_eq!(kinds.iter().filter(|kind| **kind == "test_finished").count(), 4, "one per test");
    assert_eq!(kinds.iter().filter(|kind| **kind == "attempt_retried").count(), 3, "{kinds:?}");
    assert!(kinds.contains(&"worker_replaced"), "reruns run on fresh workers: {kinds:?}");
    assert_eq!(kinds.iter().filter(|kind| **kind == "test_started").count(), 7, "one per attempt: {kinds:?}");
    for (index, event) in events.iter().enumerate().filter(|(_, event)| event["event"] == "test_finished") {
        let started = events[..index]
            .iter()
            .any(|earlier| earlier["event"] == "test_started" && earlier["nodeid"] == event["nodeid"]);
        assert!(started, "{} finished before it started: {kinds:?}", event["nodeid"]);
    }
    let times: Vec<f64> = events.iter().map(|event| event["time"].as_f64().expect("a time")).collect();
    assert!(times.windows(2).all(|pair| pair[0] <= pair[1]), "events come in order: {times:?}");
}

/// The schema.
fn schema_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/json-report.schema.json")
}

/// What is wrong with a report file against the schema, if anything.
pub(crate) fn schema_mismatches(project: &Project, report: &std::path::Path) -> Option<String> {
    let validation = project
        .python_command()
        .args(["-c", VALIDATE_AGAINST_SCHEMA])
        .arg(schema_path())
        .arg(report)
        .output()
        .expect("python starts");
    (!validation.status.success()).then(|| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&validation.stdout),
            String::from_utf8_lossy(&validation.stderr)
        )
    })
}

#[test]
fn reports_match_the_documented_schema() {
    let schema = schema_path();
    let mut mismatches = Vec::new();
    for SchemaCase { fixture, env, args, expected_code } in SCHEMA_CASES {
        let project = Project::fixture(fixture);
        let report = project.shoal_report(env, args);
        report.outcome.assert_code(*expected_code);
        let report_copy = project.path().join("report-to-validate.json");
        std::fs::write(&report_copy, report.json.to_string()).expect("write the report copy");
        if let Some(errors) = schema_mismatches(&project, &report_copy) {
            mismatches.push(format!("{fixture} {args:?}:\n{errors}"));
        }
    }
    assert!(mismatches.is_empty(), "reports do not match {}:\n{}", schema.display(), mismatches.join("\n"));
}
