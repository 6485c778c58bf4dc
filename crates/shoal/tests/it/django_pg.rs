//! pytest-django on a real PostgreSQL (`fixtures/django_pg`, plugins venv):
//! every worker gets its own test database from `workerinput["workerid"]`,
//! as under pytest-xdist, a replacement worker after a crash gets its slot's
//! database again, and no test database is left behind.

use std::collections::{BTreeMap, BTreeSet};

use crate::harness::{Project, Report, read_json_lines};
use crate::plugins::{Postgres, plugins_python};

const TESTS: usize = 14;
const CRASH: &str = "test_a_crash.py::test_crash_inside_a_transaction";

fn text<'a>(value: &'a serde_json::Value, key: &str) -> &'a str {
    value[key].as_str().unwrap_or_else(|| panic!("{key} is not a string in {value}"))
}

/// Runs the fixture on `postgres` with `shoal run -n <workers> --mode <mode>`;
/// returns the report and the tests' database log.
fn run_django(
    postgres: &Postgres,
    workers: usize,
    mode: &str,
    env: &[(&str, &str)],
) -> (Report, Vec<serde_json::Value>) {
    let project = Project::fixture("django_pg").with_python(plugins_python());
    if env.iter().any(|(name, _)| *name == "DJANGO_PG_CRASH") {
        // The crash first, so its slot's replacement has tests left to run.
        project.history_starting_with(CRASH);
    }
    let log = project.path().join("db.log");
    let port = postgres.port().to_string();
    let mut full_env = vec![
        ("DJANGO_PG_HOST", "127.0.0.1"),
        ("DJANGO_PG_PORT", port.as_str()),
        ("DJANGO_PG_LOG", log.to_str().expect("a UTF-8 temp path")),
    ];
    full_env.extend_from_slice(env);
    let count = workers.to_string();
    let report = project.shoal_report(&full_env, &["-n", &count, "--mode", mode]);
    let records = read_json_lines(&log);
    (report, records)
}

/// Every logged test ran in a worker on `test_shoal_<workerid>`, and the
/// report names that worker. Returns the database of each worker.
fn check_databases(
    report: &Report,
    records: &[serde_json::Value],
    workers: usize,
) -> BTreeMap<String, String> {
    let mut database_of = BTreeMap::new();
    for record in records {
        let worker = record["worker"]
            .as_str()
            .unwrap_or_else(|| panic!("a test ran without config.workerinput: {record}"));
        let slot: usize = worker.strip_prefix("gw").and_then(|slot| slot.parse().ok()).expect("gwN");
        assert!(slot < workers, "{worker} with -n {workers}");
        let expected = format!("test_shoal_{worker}");
        assert_eq!(text(record, "settings_name"), expected, "pytest-django's xdist suffix: {record}");
        assert_eq!(text(record, "current_database"), expected, "connected elsewhere: {record}");
        let nodeid = text(record, "nodeid");
        if nodeid != CRASH {
            assert_eq!(report.test(nodeid)["worker"], worker, "{record}");
        }
        database_of.insert(worker.to_owned(), expected);
    }
    database_of
}

fn assert_no_test_database_left(postgres: &Postgres) {
    let left: Vec<String> =
        postgres.databases().into_iter().filter(|name| name.starts_with("test_")).collect();
    assert!(left.is_empty(), "test databases left behind: {left:?}");
}

/// `-n 2` and `-n 3` in one mode, on one server: all pass, each worker on
/// its own database, nothing left behind.
fn check_mode(mode: &str) {
    let postgres = Postgres::start();
    for workers in [2, 3] {
        let (report, records) = run_django(&postgres, workers, mode, &[]);
        report.outcome.assert_code(0);
        assert_eq!(report.outcome.closing_counts(), format!("{TESTS} passed"), "{}", report.outcome.stdout);
        assert_eq!(records.len(), TESTS, "each test logs once: {records:#?}");
        let databases = check_databases(&report, &records, workers);
        assert!(databases.len() >= 2, "-n {workers}: only one worker used the database: {databases:?}");
        assert_no_test_database_left(&postgres);
    }
}

#[test]
fn forked_workers_each_get_their_own_test_database() {
    check_mode("fork");
}

#[test]
fn spawned_workers_each_get_their_own_test_database() {
    check_mode("spawn");
}

/// With `DJANGO_PG_CRASH=1` the first test (by the history) kills its
/// worker inside a transaction; every other test passes. With `-n 1` the
/// crashed slot's replacement runs all of them, so it must get the slot's
/// database (pytest-django recreates it) and drop it at the end; with `-n 2`
/// the other worker may run them all before a replacement is up, and the
/// crashed slot's database may stay until the next run takes it over.
fn check_crash(mode: &str) {
    let postgres = Postgres::start();
    for workers in [2, 1] {
        let (report, records) = run_django(&postgres, workers, mode, &[("DJANGO_PG_CRASH", "1")]);
        let context = format!("{mode} -n {workers}\n{}\n{}", report.outcome.stdout, report.outcome.stderr);
        report.outcome.assert_code(1);
        let outcomes = report.outcomes();
        assert_eq!(outcomes.len(), TESTS, "{outcomes:#?}");
        assert_eq!(outcomes.get(CRASH), Some(&"crashed"), "{context}");
        for (nodeid, outcome) in &outcomes {
            if *nodeid != CRASH {
                assert_eq!(*outcome, "passed", "{nodeid}: {context}");
            }
        }
        check_databases(&report, &records, workers);
        let crashed = records.iter().find(|record| record["nodeid"] == CRASH).expect("the crash test logged");
        let replacement: BTreeSet<&str> = records
            .iter()
            .filter(|record| record["worker"] == crashed["worker"] && record["pid"] != crashed["pid"])
            .map(|record| text(record, "nodeid"))
            .collect();
        if workers == 1 {
            assert_eq!(replacement.len(), TESTS - 1, "the replacement ran {replacement:#?}: {context}");
            assert_no_test_database_left(&postgres);
        } else {
            let left: Vec<String> =
                postgres.databases().into_iter().filter(|name| name.starts_with("test_")).collect();
            let crashed_database = format!("test_shoal_{}", text(crashed, "worker"));
            assert!(left.iter().all(|name| *name == crashed_database), "left behind: {left:?}: {context}");
        }
    }
}

#[test]
fn after_a_crash_the_forked_replacement_gets_the_slots_database() {
    check_crash("fork");
}

#[test]
fn after_a_crash_the_spawned_replacement_gets_the_slots_database() {
    check_crash("spawn");
}
