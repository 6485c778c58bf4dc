//! CI control on `fixtures/control`: serial tests run while nothing else
//! runs, a test group stays on one worker in collection order, `--lf` and
//! `--ff` share pytest's own cache with pytest, and `--budget` stops cleanly.

use std::collections::BTreeMap;

use crate::harness::{Project, read_json_lines};

/// One test's run: when and where.
#[derive(Debug, Clone)]
struct Ran {
    nodeid: String,
    start: f64,
    end: f64,
    worker: String,
}

fn runs(project: &Project) -> Vec<Ran> {
    read_json_lines(&project.path().join("control.log"))
        .into_iter()
        .map(|line| Ran {
            nodeid: line["nodeid"].as_str().expect("a nodeid").to_owned(),
            start: line["start"].as_f64().expect("a start"),
            end: line["end"].as_f64().expect("an end"),
            worker: line["worker"].as_str().expect("a worker").to_owned(),
        })
        .collect()
}

fn log_env(project: &Project) -> String {
    project.path().join("control.log").to_str().expect("a UTF-8 path").to_owned()
}

#[test]
fn serial_tests_run_while_nothing_else_runs() {
    let project = Project::fixture("control");
    let log = log_env(&project);
    let report = project.shoal_report(&[("SHOAL_CONTROL_LOG", &log)], &["-n", "2"]);
    report.outcome.assert_code(0);
    let ran = runs(&project);
    assert_eq!(ran.len(), 20, "{}", report.outcome.stdout);
    let serial: Vec<&Ran> = ran.iter().filter(|run| run.nodeid.contains("test_alone")).collect();
    assert_eq!(serial.len(), 3);
    for alone in &serial {
        for other in ran.iter().filter(|other| other.nodeid != alone.nodeid) {
            let overlap = other.start < alone.end && alone.start < other.end;
            assert!(!overlap, "{} overlapped serial {}", other.nodeid, alone.nodeid);
        }
    }
    let last_parallel_end = ran
        .iter()
        .filter(|run| !run.nodeid.contains("test_alone"))
        .map(|run| run.end)
        .fold(f64::MIN, f64::max);
    assert!(serial.iter().all(|alone| alone.start >= last_parallel_end), "serial tests run after the rest");
    let markers = report.test("test_serial.py::test_alone[0]")["markers"].clone();
    assert!(markers.as_array().is_some_and(|names| names.iter().any(|name| name == "serial")), "{markers}");
}

#[test]
fn a_group_runs_on_one_worker_in_collection_order() {
    let project = Project::fixture("control");
    let log = log_env(&project);
    let report = project.shoal_report(&[("SHOAL_CONTROL_LOG", &log)], &["-n", "3"]);
    report.outcome.assert_code(0);
    let ran = runs(&project);
    let mut groups: BTreeMap<&str, Vec<&Ran>> = BTreeMap::new();
    for run in &ran {
        if run.nodeid.contains("test_database") {
            groups.entry("db").or_default().push(run);
        } else if run.nodeid.contains("test_cache") {
            groups.entry("cache").or_default().push(run);
        }
    }
    for (group, members) in &groups {
        let workers: Vec<&str> = members.iter().map(|run| run.worker.as_str()).collect();
        assert!(workers.windows(2).all(|pair| pair[0] == pair[1]), "{group} spread over {workers:?}");
        let mut by_start = members.clone();
        by_start.sort_by(|a, b| a.start.total_cmp(&b.start));
        let order: Vec<&str> = by_start.iter().map(|run| run.nodeid.as_str()).collect();
        let mut collection_order = order.clone();
        collection_order.sort_by_key(|nodeid| nodeid.rsplit('[').next().map(str::to_owned));
        assert_eq!(order, collection_order, "{group} ran out of order");
    }
    assert_eq!(groups["db"].len(), 5);
    assert_eq!(report.test("test_groups.py::test_database[0]")["group"], "db");
    assert_eq!(report.test("test_groups.py::test_cache[2]")["group"], "cache");
}

#[test]
fn last_failed_is_shared_with_pytest_both_ways() {
    let project = Project::fixture("control");
    let failing = "test_sometimes.py::test_fails_when_asked";
    // shoal records the failure; pytest --lf reruns just that test.
    project.shoal_with_env(&[("SHOAL_CONTROL_FAIL", "1")], &["run", "-n", "2"]).assert_code(1);
    let pytest_lf = project.pytest_with_env(&[("SHOAL_CONTROL_FAIL", "1")], &["--lf", "-q"]);
    assert_eq!(pytest_lf.closing_counts(), "1 failed", "{}", pytest_lf.stdout);
    // Fixed: shoal --lf runs only it, passes, and clears the record.
    let report = project.shoal_report(&[], &["-n", "2", "--lf"]);
    report.outcome.assert_code(0);
    assert_eq!(report.node_ids(), vec![failing], "--lf runs only last time's failure");
    // Counted as pytest counts it: the files without a failure are skipped.
    assert_eq!(report.outcome.closing_counts(), "1 passed");
    // Said in the header, where pytest says it.
    let status = "\nrun-last-failure: rerun previous 1 failure (skipped 3 files)\n";
    assert!(report.outcome.stdout.contains(status), "{}", report.outcome.stdout);
    let report = project.shoal_report(&[], &["-n", "2", "--lf"]);
    assert_eq!(report.tests().len(), 20, "nothing failed last time: --lf runs everything");
    let status = "\nrun-last-failure: no previously failed tests, not deselecting items.\n";
    assert!(report.outcome.stdout.contains(status), "{}", report.outcome.stdout);
    // The other way round: pytest records, shoal --lf follows.
    project.pytest_with_env(&[("SHOAL_CONTROL_FAIL", "1")], &["-q"]).assert_code(1);
    let report = project.shoal_report(&[("SHOAL_CONTROL_FAIL", "1")], &["-n", "2", "--lf"]);
    report.outcome.assert_code(1);
    assert_eq!(report.node_ids(), vec![failing]);
}

/// The lines of a run's output that say what `--lf` collected: the
/// collected counts, the `run-last-failure:` status and the closing counts.
fn last_failed_lines(outcome: &crate::harness::Outcome) -> Vec<String> {
    let mut lines: Vec<String> = outcome
        .stdout
        .lines()
        .filter(|line| line.starts_with("collected ") || line.starts_with("run-last-failure: "))
        .map(str::to_owned)
        .collect();
    lines.push(outcome.closing_counts());
    lines
}

#[test]
fn last_failed_counts_what_pytest_collects() {
    // pytest's --lf collects the files holding failures first; from the
    // first with a failure of its own (not in a class) on, it skips files
    // without one and drops the passing tests of files with one, but not a
    // class's tests, nor those of a file named on the command line.
    let project = Project::empty();
    project
        .write("pytest.ini", "[pytest]\n")
        .write(
            "tests/test_a.py",
            "import pytest\n\ndef test_ok(): pass\ndef test_bad(): assert 0\n\n\
             @pytest.mark.parametrize('x', [1, 2])\ndef test_p(x): assert x == 1\n\n\
             class TestC:\n    def test_c_ok(self): pass\n    def test_c_bad(self): assert 0\n",
        )
        .write("tests/test_b.py", "def test_b(): pass\n")
        .write("tests/sub/test_s.py", "def test_s(): pass\n")
        .write(
            "tests/test_0k.py",
            "class TestK:\n    def test_k(self): assert 0\n    def test_k2(self): pass\n",
        );
    let cases: [&[&str]; 3] = [&["tests"], &["tests/test_a.py"], &["tests/test_a.py", "tests/test_b.py"]];
    let check = |args: &[&str]| {
        project.pytest(&["-q", "tests"]).assert_code(1);
        let pytest = project.pytest(&[&["--lf", "-p", "no:randomly"], args].concat());
        let shoal = project.shoal(&[&["run", "-n", "2", "--lf"], args].concat());
        assert_eq!(last_failed_lines(&shoal), last_failed_lines(&pytest), "--lf {args:?}\n{}", shoal.stdout);
    };
    for args in cases {
        check(args);
    }
    // A class's failure alone starts no filtering: everything is collected.
    std::fs::remove_file(project.path().join("tests/test_a.py")).expect("remove");
    project.write("tests/test_a.py", "class TestC:\n    def test_c_bad(self): assert 0\n");
    check(&["tests"]);
}

#[test]
fn failed_first_starts_with_last_times_failures() {
    let project = Project::fixture("control");
    let log = log_env(&project);
    project.shoal_with_env(&[("SHOAL_CONTROL_FAIL", "1")], &["run", "-n", "1"]).assert_code(1);
    std::fs::remove_file(project.path().join("control.log")).ok();
    let report = project.shoal_report(&[("SHOAL_CONTROL_LOG", &log)], &["-n", "1", "--ff"]);
    report.outcome.assert_code(0);
    let mut ran = runs(&project);
    ran.sort_by(|a, b| a.start.total_cmp(&b.start));
    assert_eq!(ran[0].nodeid, "test_sometimes.py::test_fails_when_asked", "{ran:?}");
    assert_eq!(ran.len(), 20);
    let status = "\nrun-last-failure: rerun previous 1 failure first\n";
    assert!(report.outcome.stdout.contains(status), "{}", report.outcome.stdout);
}

#[test]
fn a_budget_starts_only_what_can_end_in_time() {
    let project = Project::empty();
    project.write("pytest.ini", "[pytest]\naddopts = -p no:cacheprovider\n");
    let tests: String =
        (0..12).map(|index| format!("\ndef test_{index:02}():\n    time.sleep(0.5)\n")).collect();
    project.write("test_slow.py", format!("import time\n{tests}"));
    // A first run gives the history the budget is planned with.
    project.shoal(&["run", "-n", "2"]).assert_code(0);
    let started = std::time::Instant::now();
    // 3 s: even a start-up slowed to 2 s by a loaded machine leaves each
    // worker time for a test, and 6 s of tests cannot all fit.
    let report = project.shoal_report(&[], &["-n", "2", "--budget", "3"]);
    let elapsed = started.elapsed().as_secs_f64();
    report.outcome.assert_code(1);
    let counts = report.outcome_counts();
    let passed = counts.get("passed").copied().unwrap_or(0);
    let not_run = counts.get("not_run").copied().unwrap_or(0);
    assert_eq!(passed + not_run, 12, "{counts:?}");
    assert!(passed >= 2 && not_run >= 2, "{counts:?}\n{}", report.outcome.stdout);
    assert!(
        report
            .tests()
            .iter()
            .filter(|test| test["outcome"] == "not_run")
            .all(|test| test["reason"] == "budget")
    );
    assert!(elapsed < 5.5, "the run ended near its 3 s budget: {elapsed:.2}s");
    assert!(report.outcome.stdout.contains("not run"), "{}", report.outcome.stdout);
}

#[test]
fn failed_tests_are_rerun_on_fresh_workers_and_flaky_ones_reported() {
    let project = Project::fixture("reruns");
    let log = project.path().join("attempts.log");
    let log_arg = log.to_str().expect("a UTF-8 path");
    let env = [("SHOAL_FIXTURE_FLAKY", "1"), ("SHOAL_ATTEMPT_LOG", log_arg)];
    let report = project.shoal_report(&env, &["-n", "2", "--reruns", "2"]);
    report.outcome.assert_code(1);
    let outcomes = report.outcomes();
    assert_eq!(outcomes["test_reruns.py::test_fails_on_first_attempt"], "flaky", "{}", report.outcome.stdout);
    assert_eq!(outcomes["test_reruns.py::test_marked_flaky"], "flaky");
    assert_eq!(outcomes["test_reruns.py::test_always_fails"], "failed");
    assert_eq!(outcomes["test_reruns.py::test_steady"], "passed");
    let always = &report.test("test_reruns.py::test_always_fails")["attempts"];
    assert_eq!(always.as_array().map(Vec::len), Some(3), "1 + 2 reruns, each kept: {always}");
    assert!(always.as_array().unwrap().iter().all(|attempt| attempt["failure"].is_string()));
    // Every rerun ran in a process that had run nothing before it.
    let attempts = read_json_lines(&log);
    let mut pids_before: Vec<u64> = Vec::new();
    for entry in &attempts {
        let pid = entry["pid"].as_u64().expect("a pid");
        if entry["attempt"].as_u64() > Some(1) {
            assert!(!pids_before.contains(&pid), "a rerun reused a worker: {attempts:?}");
        }
        pids_before.push(pid);
    }
    let closing = report.outcome.closing_map();
    assert_eq!(
        closing.get("rerun"),
        Some(&4),
        "2 flaky reruns and 2 for the failing test: {}",
        report.outcome.stdout
    );
    assert!(
        report
            .outcome
            .stdout
            .contains("FLAKY test_reruns.py::test_marked_flaky - failed 1 time, passed on attempt 2")
    );
}

#[test]
fn flaky_tests_pass_the_run_unless_flaky_fails() {
    let project = Project::fixture("reruns");
    let env = [("SHOAL_FIXTURE_FLAKY", "1")];
    let select = ["-k", "not always", "-n", "2", "--reruns", "1"];
    let report = project.shoal_report(&env, &select);
    report.outcome.assert_code(0);
    assert_eq!(report.outcome_counts().get("flaky"), Some(&2));
    let mut strict = select.to_vec();
    strict.push("--flaky-fails");
    project.shoal_report(&env, &strict).outcome.assert_code(1);
}

#[test]
fn the_durations_history_keeps_tests_a_run_left_out_by_node_id_or_lf() {
    let project = crate::harness::Project::empty();
    project.write("pytest.ini", "[pytest]\n");
    project.write(
        "test_pay.py",
        "import os\n\ndef test_visa():\n    pass\n\ndef test_cash():\n    assert os.environ.get('FAIL_CASH') != '1'\n",
    );
    let recorded = || -> Vec<String> {
        let text = std::fs::read_to_string(project.path().join(".test_durations")).expect("a history");
        let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).expect("JSON");
        map.keys().cloned().collect()
    };
    project.shoal(&["run", "-n", "1"]).assert_code(0);
    assert_eq!(recorded(), ["test_pay.py::test_cash", "test_pay.py::test_visa"]);
    project.shoal(&["run", "-n", "1", "test_pay.py::test_cash"]).assert_code(0);
    assert_eq!(
        recorded(),
        ["test_pay.py::test_cash", "test_pay.py::test_visa"],
        "node-id selection keeps test_visa"
    );
    project.shoal_with_env(&[("FAIL_CASH", "1")], &["run", "-n", "1"]).assert_code(1);
    project.shoal(&["run", "-n", "1", "--lf"]).assert_code(0);
    assert_eq!(recorded(), ["test_pay.py::test_cash", "test_pay.py::test_visa"], "--lf keeps test_visa");
}
