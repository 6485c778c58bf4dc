//! What each worker process is given: its identity in the environment, a
//! shared hash seed, its own temp directories, fixture scopes as pytest would
//! run them, and no xdist of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::{Project, RECORDING_CONFTEST, has_xdist, python, read_json_lines};

/// The 8 tests of `fixtures/workerenv` that log their environment.
const RECORDING_TESTS: &[&str] = &[
    "test_env_a.py::test_env_a[0]",
    "test_env_a.py::test_env_a[1]",
    "test_env_a.py::test_env_a[2]",
    "test_env_a.py::test_env_a[3]",
    "test_env_b.py::test_env_b_one",
    "test_env_b.py::test_env_b_two",
    "test_env_b.py::TestEnvB::test_env_b_three",
    "test_env_b.py::TestEnvB::test_env_b_four",
];

fn text<'a>(record: &'a serde_json::Value, key: &str) -> &'a str {
    record[key].as_str().unwrap_or_else(|| panic!("{key} is not set in {record}"))
}

/// Runs `fixtures/workerenv` with `workers` workers and checks what every
/// test saw; returns the log records.
fn run_workerenv(project: &Project, workers: usize, extra: &[&str]) -> Vec<serde_json::Value> {
    let log = project.path().join(format!("env-{}.log", next_log_number()));
    let log_arg = log.to_str().expect("a UTF-8 temp path");
    let count = workers.to_string();
    let mut args = vec!["-n", &count];
    args.extend_from_slice(extra);
    // Instant tests could all be run by the first worker before the others
    // are ready; a few milliseconds each leaves room for every worker.
    let spread = "import time\n\nimport pytest\n\n\n@pytest.fixture(autouse=True)\ndef spread():\n    time.sleep(0.05)\n";
    if !std::fs::read_to_string(project.path().join("conftest.py")).unwrap_or_default().contains("def spread")
    {
        let existing = std::fs::read_to_string(project.path().join("conftest.py")).unwrap_or_default();
        project.write("conftest.py", format!("{existing}\n{spread}"));
    }
    let report = project.shoal_report(&[("SHOAL_ENV_LOG", log_arg)], &args);
    // The set-ordered parametrization collects alike in every worker: no
    // collection mismatch, everything ran.
    report.outcome.assert_code(0);
    assert_eq!(report.outcome.closing_counts(), "18 passed", "{}", report.outcome.stdout);
    assert_eq!(report.tests().len(), 18);
    assert_eq!(report.node_ids().iter().filter(|id| id.contains("test_word_unsorted[")).count(), 5);

    let records = read_json_lines(&log);
    let logged: Vec<&str> = records.iter().map(|record| text(record, "nodeid")).collect();
    let logged_set: BTreeSet<&str> = logged.iter().copied().collect();
    assert_eq!(logged.len(), logged_set.len(), "a test ran twice: {logged:#?}");
    assert_eq!(logged_set, RECORDING_TESTS.iter().copied().collect(), "each test ran once");

    let seeds: BTreeSet<&str> = records.iter().map(|record| text(record, "PYTHONHASHSEED")).collect();
    assert_eq!(seeds.len(), 1, "workers saw different hash seeds: {seeds:?}");
    assert_eq!(Some(*seeds.first().unwrap()), report.json["run"]["hash_seed"].as_str(), "the report's seed");

    let mut pids_by_worker: BTreeMap<usize, BTreeSet<u64>> = BTreeMap::new();
    for record in &records {
        let slot: usize = text(record, "SHOAL_WORKER").parse().expect("SHOAL_WORKER is a number");
        assert!(slot < workers, "SHOAL_WORKER {slot} with {workers} workers");
        assert_eq!(text(record, "SHOAL_WORKER_COUNT"), count);
        assert_eq!(text(record, "PYTEST_XDIST_WORKER"), format!("gw{slot}"));
        assert_eq!(text(record, "PYTEST_XDIST_WORKER_COUNT"), count);
        let nodeid = text(record, "nodeid");
        assert_eq!(
            report.test(nodeid)["worker"],
            format!("gw{slot}"),
            "the report names the worker that ran it"
        );
        pids_by_worker.entry(slot).or_default().insert(record["pid"].as_u64().expect("a pid"));
    }
    for (slot, pids) in &pids_by_worker {
        assert_eq!(pids.len(), 1, "gw{slot} ran in several processes: {pids:?}");
    }
    let pids: BTreeSet<u64> = pids_by_worker.values().flatten().copied().collect();
    assert_eq!(pids.len(), pids_by_worker.len(), "two workers shared a process");
    if workers >= 3 {
        assert!(pids.len() > 1, "only one worker process ran tests with -n {workers}: {records:#?}");
    }

    let tmp_paths: BTreeSet<&str> = records.iter().map(|record| text(record, "tmp_path")).collect();
    assert_eq!(tmp_paths.len(), records.len(), "tmp_paths are not distinct: {records:#?}");
    records
}

/// A suffix that keeps log names apart between runs in one project.
fn next_log_number() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    COUNTER.fetch_add(1, Ordering::Relaxed).to_string()
}

#[test]
fn each_worker_knows_who_it_is_and_all_share_one_hash_seed() {
    let project = Project::fixture("workerenv");
    run_workerenv(&project, 2, &[]);
}

#[test]
fn three_workers_collect_the_set_ordered_tests_alike_every_time() {
    let project = Project::fixture("workerenv");
    // Tests of 50 ms, so that a worker that becomes ready a little later
    // than the others (a fork under load) still finds work: the check that
    // several processes ran tests is about shoal using them, not about a race.
    let conftest = std::fs::read_to_string(project.path().join("conftest.py")).expect("the conftest");
    project.write(
        "conftest.py",
        format!("{conftest}\n\nimport time\n\n\n@pytest.fixture(autouse=True)\ndef _shoal_it_pace():\n    time.sleep(0.05)\n"),
    );
    for _ in 0..3 {
        run_workerenv(&project, 3, &[]);
    }
}

/// Runs `fixtures/workerenv` with `-- --basetemp <basetemp>` and checks each
/// worker got its own directory below it.
fn check_user_basetemp(project: &Project, basetemp: &Path) {
    let basetemp_arg = basetemp.to_str().expect("a UTF-8 temp path");
    let records = run_workerenv(project, 3, &["--", "--basetemp", basetemp_arg]);
    let mut directory_of_worker: BTreeMap<&str, PathBuf> = BTreeMap::new();
    for record in &records {
        let tmp_path = Path::new(text(record, "tmp_path"));
        let relative = tmp_path
            .strip_prefix(basetemp)
            .unwrap_or_else(|_| panic!("{} is not under {}", tmp_path.display(), basetemp.display()));
        let worker_directory = basetemp.join(relative.components().next().expect("a subdirectory"));
        assert_ne!(worker_directory, tmp_path, "tmp_path sits directly in the basetemp");
        let previous = directory_of_worker
            .entry(text(record, "PYTEST_XDIST_WORKER"))
            .or_insert(worker_directory.clone());
        assert_eq!(*previous, worker_directory, "one worker used two directories");
    }
    let directories: BTreeSet<&PathBuf> = directory_of_worker.values().collect();
    assert_eq!(
        directories.len(),
        directory_of_worker.len(),
        "workers share a directory: {directory_of_worker:#?}"
    );
}

#[test]
fn a_user_basetemp_gets_one_subdirectory_per_worker() {
    let project = Project::fixture("workerenv");
    let basetemp = project.path().join("existing-basetemp");
    std::fs::create_dir(&basetemp).expect("mkdir");
    check_user_basetemp(&project, &basetemp);
}

#[test]
fn a_user_basetemp_that_does_not_exist_yet_works_as_with_pytest() {
    // pytest creates a missing `--basetemp` directory (its parent must
    // exist); so must shoal, whose workers use directories below it.
    let project = Project::fixture("workerenv");
    let basetemp = project.path().join("new-basetemp");
    let basetemp_arg = basetemp.to_str().expect("a UTF-8 temp path");
    project.pytest(&["--basetemp", basetemp_arg]).assert_code(0);
    std::fs::remove_dir_all(&basetemp).expect("pytest created it");
    check_user_basetemp(&project, &basetemp);
}

/// Runs `fixtures/scopes` with the fixture log on and checks the logs.
fn check_scopes(workers: &str) {
    let project = Project::fixture("scopes");
    let log_dir = project.path().join("fixture-logs");
    std::fs::create_dir(&log_dir).expect("mkdir");
    let log_arg = log_dir.to_str().expect("a UTF-8 temp path");
    let outcome = project.shoal_with_env(&[("SHOAL_FIXTURE_LOG_DIR", log_arg)], &["run", "-n", workers]);
    outcome.assert_code(0);
    assert_eq!(outcome.closing_counts(), "21 passed");

    let check = Command::new(python())
        .arg(project.path().join("check_log.py"))
        .arg(&log_dir)
        .output()
        .expect("python runs");
    assert!(
        check.status.success(),
        "-n {workers}: fixture setup and teardown are not as pytest orders them:\n{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    let workers: usize = workers.parse().expect("a count");
    let mut function_setups = Vec::new();
    for entry in std::fs::read_dir(&log_dir).expect("the log dir") {
        let path = entry.expect("an entry").path();
        let name = path.file_name().expect("a name").to_string_lossy().into_owned();
        let slot = name.strip_prefix("gw").and_then(|rest| rest.strip_suffix(".log"));
        assert!(
            slot.and_then(|slot| slot.parse::<usize>().ok()).is_some_and(|slot| slot < workers),
            "unexpected log {name}"
        );
        let text = std::fs::read_to_string(&path).expect("a log");
        function_setups
            .extend(text.lines().filter_map(|line| line.strip_prefix("setup function:")).map(str::to_owned));
    }
    let unique: BTreeSet<&String> = function_setups.iter().collect();
    assert_eq!(unique.len(), 21, "{function_setups:#?}");
    assert_eq!(function_setups.len(), 21, "a test ran twice: {function_setups:#?}");
}

#[test]
fn fixture_scopes_nest_per_worker_with_two_workers() {
    check_scopes("2");
}

#[test]
fn fixture_scopes_nest_per_worker_with_three_workers() {
    check_scopes("3");
}

#[test]
fn a_user_xdist_addopts_does_not_start_xdist_inside_workers() {
    let project = Project::fixture("allpass");
    project.write("pytest.ini", "[pytest]\naddopts = -p no:cacheprovider -n 2\n");
    project.write("conftest.py", RECORDING_CONFTEST);
    let log = project.path().join("env.log");
    let log_arg = log.to_str().expect("a UTF-8 temp path");

    if !has_xdist() {
        // Without pytest-xdist pytest itself rejects `-n`: shoal must pass
        // pytest's usage error through, as sequential pytest gives it.
        let expected = project.pytest(&[]);
        let outcome = project.shoal(&["run", "-n", "3"]);
        assert_eq!(outcome.code, expected.code, "{}", outcome.stderr);
        assert!(outcome.stderr.contains("-n"), "pytest's complaint is shown:\n{}", outcome.stderr);
        return;
    }

    let report = project.shoal_report(&[("SHOAL_ENV_LOG", log_arg)], &["-n", "3"]);
    report.outcome.assert_code(0);
    assert_eq!(report.outcome.closing_counts(), "6 passed");
    assert_eq!(report.json["summary"], serde_json::json!({"passed": 6}));
    assert_eq!(report.tests().len(), 6);
    for test in report.tests() {
        let worker = test["worker"].as_str().expect("a worker name");
        assert!(["gw0", "gw1", "gw2"].contains(&worker), "{test}");
    }
    let records = read_json_lines(&log);
    assert_eq!(records.len(), 6, "{records:#?}");
    for record in &records {
        // An xdist worker started inside shoal's (from `-n auto`) would
        // count the machine's CPUs, not shoal's three workers.
        assert_eq!(record["PYTEST_XDIST_WORKER_COUNT"], "3", "an xdist worker ran the test: {record}");
        assert_eq!(record["workerid"], record["PYTEST_XDIST_WORKER"], "xdist's workerinput: {record}");
        assert_eq!(record["PYTEST_XDIST_WORKER"], format!("gw{}", text(record, "SHOAL_WORKER")), "{record}");
        let nodeid = text(record, "nodeid");
        assert_eq!(report.test(nodeid)["worker"], record["PYTEST_XDIST_WORKER"], "{record}");
    }
}

#[test]
fn workers_that_get_no_test_do_not_hold_up_the_end_of_the_run() {
    // A run takes well under a second here; idle workers left waiting for a
    // command that never comes would hold it up until shoal kills them.
    let limit = std::time::Duration::from_secs(5);
    let cases: [(&str, &[&str]); 3] =
        [("empty", &["run", "-n", "2"]), ("allpass", &["run", "-n", "8"]), ("allpass", &["run", "-n", "8"])];
    for (name, args) in cases {
        let project = Project::fixture(name);
        let started = std::time::Instant::now();
        let outcome = project.shoal(args);
        let elapsed = started.elapsed();
        assert!(
            matches!(outcome.code, Some(0 | 5)),
            "{name} {args:?}: {}\n{}",
            outcome.stdout,
            outcome.stderr
        );
        assert!(
            elapsed < limit,
            "{name} {args:?} took {elapsed:?} though its closing line says {:?}",
            outcome.stdout.lines().last().unwrap_or_default()
        );
    }
}
