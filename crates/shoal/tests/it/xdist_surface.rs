//! pytest-xdist's worker surface in shoal's workers, on `fixtures/xdist_surface`:
//! `config.workerinput`/`workeroutput`, the `PYTEST_XDIST_*` variables, the
//! `worker_id` and `testrun_uid` fixtures, xdist's helpers where xdist is
//! installed, `pytest_configure_node`, and a `getbasetemp().parent` shared by
//! the run's workers, so xdist's FileLock recipe makes its data once. The tests
//! check themselves from inside; each also logs what it saw, checked here
//! across workers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::harness::{Project, Report, has_xdist, read_json_lines};

/// What one run of the fixture gave: the report, each test's log record
/// (by node id) and the lines of the producer log.
struct SurfaceRun {
    report: Report,
    records: Vec<serde_json::Value>,
    productions: Vec<serde_json::Value>,
}

/// A suffix that keeps log names apart between runs in one project.
fn next_log_number() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    COUNTER.fetch_add(1, Ordering::Relaxed).to_string()
}

fn text<'a>(value: &'a serde_json::Value, key: &str) -> &'a str {
    value[key].as_str().unwrap_or_else(|| panic!("{key} is not a string in {value}"))
}

/// Runs `fixtures/xdist_surface` with `shoal run -n <workers> --mode <mode>`.
fn run_surface(project: &Project, workers: usize, mode: &str, env: &[(&str, &str)]) -> SurfaceRun {
    let number = next_log_number();
    let log = project.path().join(format!("surface-{number}.log"));
    let producer_log = project.path().join(format!("producer-{number}.log"));
    let count = workers.to_string();
    let mut full_env = vec![
        ("XDIST_SURFACE_WORKERS", count.as_str()),
        ("XDIST_SURFACE_LOG", log.to_str().expect("a UTF-8 temp path")),
        ("XDIST_SURFACE_PRODUCER_LOG", producer_log.to_str().expect("a UTF-8 temp path")),
    ];
    full_env.extend_from_slice(env);
    let report = project.shoal_report(&full_env, &["-n", &count, "--mode", mode]);
    SurfaceRun { report, records: read_json_lines(&log), productions: read_json_lines(&producer_log) }
}

/// The fixture's node ids as sequential pytest collects them.
fn surface_node_ids(project: &Project) -> BTreeSet<String> {
    let ids: BTreeSet<String> = project.pytest_node_ids(&[]).into_iter().collect();
    assert_eq!(ids.len(), 22, "{ids:#?}");
    ids
}

/// Checks one healthy run: everything passed in a worker that saw xdist's
/// surface, one test run id, one producer, per-worker temp dirs under one
/// shared parent. Returns the shared parent.
fn check_surface(project: &Project, run: &SurfaceRun, workers: usize) -> String {
    let outcome = &run.report.outcome;
    outcome.assert_code(0);
    let expected_counts = if has_xdist() { "22 passed" } else { "21 passed, 1 skipped" };
    assert_eq!(outcome.closing_counts(), expected_counts, "{}\n{}", outcome.stdout, outcome.stderr);

    let node_ids = surface_node_ids(project);
    assert_eq!(run.report.tests().len(), node_ids.len(), "{}", outcome.stdout);
    // A test skipped by its marker (xdist's helpers without xdist) does not
    // set up its fixtures, so does not log.
    let outcomes = run.report.outcomes();
    let ran: BTreeSet<String> =
        node_ids.into_iter().filter(|id| outcomes.get(id.as_str()) != Some(&"skipped")).collect();
    let logged: Vec<&str> = run.records.iter().map(|record| text(record, "nodeid")).collect();
    assert_eq!(logged.len(), ran.len(), "each test logs once: {logged:#?}");
    assert_eq!(logged.iter().map(|id| (*id).to_owned()).collect::<BTreeSet<_>>(), ran);
    check_records(&run.records, workers, &run.report);

    assert_eq!(
        run.productions.len(),
        1,
        "the FileLock recipe produced its session data {} times, not once: {:#?}",
        run.productions.len(),
        run.productions
    );
    let tokens: BTreeSet<&str> = run.records.iter().map(|record| text(record, "session_token")).collect();
    assert_eq!(tokens.len(), 1, "workers got different session data: {tokens:?}");

    // Temp dirs: one basetemp per worker, all beside each other in one parent.
    let mut basetemp_of: BTreeMap<&str, &str> = BTreeMap::new();
    for record in &run.records {
        let worker = text(record, "worker_id");
        let basetemp = text(record, "basetemp");
        let previous = basetemp_of.entry(worker).or_insert(basetemp);
        assert_eq!(*previous, basetemp, "{worker} used two basetemps");
        assert_eq!(record["legacy_basetemp"], record["basetemp"], "tmpdir_factory's basetemp: {record}");
        let tmp_path = Path::new(text(record, "tmp_path"));
        assert!(tmp_path.starts_with(basetemp), "{} is not under {basetemp}", tmp_path.display());
    }
    let distinct: BTreeSet<&str> = basetemp_of.values().copied().collect();
    assert_eq!(distinct.len(), basetemp_of.len(), "workers share a basetemp: {basetemp_of:#?}");
    let parents: BTreeSet<&Path> =
        basetemp_of.values().map(|basetemp| Path::new(basetemp).parent().expect("a parent")).collect();
    assert_eq!(parents.len(), 1, "the basetemps have no one shared parent: {basetemp_of:#?}");
    let tmp_paths: BTreeSet<&str> = run.records.iter().map(|record| text(record, "tmp_path")).collect();
    assert_eq!(tmp_paths.len(), run.records.len(), "tmp_paths are not distinct");
    if workers >= 2 {
        assert!(basetemp_of.len() >= 2, "only one worker ran tests with -n {workers}: {basetemp_of:#?}");
    }
    parents.first().expect("a parent").to_str().expect("UTF-8").to_owned()
}

/// Checks every record was made in a worker with a consistent xdist surface:
/// workerid, env, fixtures and the report's worker agree; one test run id;
/// one controller token from `pytest_configure_node`.
fn check_records(records: &[serde_json::Value], workers: usize, report: &Report) {
    let count = workers.to_string();
    let mut run_ids = BTreeSet::new();
    let mut controller_tokens = BTreeSet::new();
    for record in records {
        assert_eq!(record["in_worker"], true, "no config.workerinput: {record}");
        let input = &record["workerinput"];
        let workerid = text(input, "workerid");
        let slot: usize = workerid
            .strip_prefix("gw")
            .and_then(|slot| slot.parse().ok())
            .unwrap_or_else(|| panic!("workerid {workerid:?} is not gwN"));
        assert!(slot < workers, "{workerid} with -n {workers}");
        assert_eq!(input["workercount"], workers, "{record}");
        assert_eq!(text(record, "worker_id"), workerid, "the worker_id fixture: {record}");
        assert_eq!(text(record, "PYTEST_XDIST_WORKER"), workerid, "{record}");
        assert_eq!(text(record, "PYTEST_XDIST_WORKER_COUNT"), count, "{record}");
        let uid = text(input, "testrunuid");
        assert!(uid.len() >= 16 && uid.chars().all(|c| c.is_ascii_hexdigit()), "testrunuid {uid:?}");
        assert_eq!(text(record, "testrun_uid"), uid, "the testrun_uid fixture: {record}");
        assert_eq!(text(record, "PYTEST_XDIST_TESTRUNUID"), uid, "{record}");
        run_ids.insert(uid.to_owned());
        assert_eq!(record["workeroutput_type"], "dict", "config.workeroutput: {record}");
        if has_xdist() {
            assert_eq!(record["xdist_is_worker"], true, "xdist.is_xdist_worker: {record}");
            assert_eq!(text(record, "xdist_worker_id"), workerid, "xdist.get_xdist_worker_id: {record}");
        }
        let argv: Vec<&str> = input["mainargv"]
            .as_array()
            .unwrap_or_else(|| panic!("mainargv is not a list: {record}"))
            .iter()
            .map(|argument| argument.as_str().expect("a string argument"))
            .collect();
        assert!(
            argv.windows(2).any(|pair| pair == ["-n", count.as_str()]),
            "mainargv is not shoal's: {argv:?}"
        );
        let sent = &input["xdist_surface_from_controller"];
        assert_eq!(text(sent, "gateway_id"), workerid, "pytest_configure_node's node.gateway.id: {record}");
        assert_eq!(text(sent, "workerid"), workerid, "{record}");
        assert_ne!(text(sent, "token"), "missing", "node.config is not the configured config: {record}");
        controller_tokens.insert(text(sent, "token").to_owned());
        let nodeid = text(record, "nodeid");
        if report.test(nodeid)["outcome"] != "crashed" {
            assert_eq!(report.test(nodeid)["worker"], workerid, "the report names the worker: {record}");
        }
    }
    assert_eq!(run_ids.len(), 1, "workers of one run saw several testrunuids: {run_ids:?}");
    assert_eq!(
        controller_tokens.len(),
        1,
        "pytest_configure_node ran in several controllers: {controller_tokens:?}"
    );
}

#[test]
fn two_forked_workers_have_xdists_surface() {
    let project = Project::fixture("xdist_surface");
    let run = run_surface(&project, 2, "fork", &[]);
    check_surface(&project, &run, 2);
}

#[test]
fn three_forked_workers_have_xdists_surface() {
    let project = Project::fixture("xdist_surface");
    let run = run_surface(&project, 3, "fork", &[]);
    check_surface(&project, &run, 3);
}

#[test]
fn two_spawned_workers_have_xdists_surface() {
    let project = Project::fixture("xdist_surface");
    let run = run_surface(&project, 2, "spawn", &[]);
    check_surface(&project, &run, 2);
}

#[test]
fn three_spawned_workers_have_xdists_surface() {
    let project = Project::fixture("xdist_surface");
    let run = run_surface(&project, 3, "spawn", &[]);
    check_surface(&project, &run, 3);
}

#[test]
fn each_run_has_its_own_test_run_id_and_shared_directory() {
    let project = Project::fixture("xdist_surface");
    let first = run_surface(&project, 2, "fork", &[]);
    let first_parent = check_surface(&project, &first, 2);
    let second = run_surface(&project, 2, "fork", &[]);
    let second_parent = check_surface(&project, &second, 2);
    assert_ne!(first_parent, second_parent, "two runs share the directory the FileLock recipe uses");
    let uid = |run: &SurfaceRun| text(&run.records[0]["workerinput"], "testrunuid").to_owned();
    assert_ne!(uid(&first), uid(&second), "two runs have the same testrunuid");
}

/// With `XDIST_SURFACE_CRASH=1` the crash test (first, by the history)
/// kills its worker: it is `crashed`, everything else passes, and a
/// replacement worker has the same slot's workerinput. With `-n 1` the
/// replacement runs every other test; with `-n 2` the other worker may run
/// them all before a replacement is up.
fn check_replacement_keeps_the_workerinput(mode: &str) {
    let crash = "test_crash.py::test_crash_when_asked";
    for workers in [1, 2] {
        let project = Project::fixture("xdist_surface");
        project.history_starting_with(crash);
        let run = run_surface(&project, workers, mode, &[("XDIST_SURFACE_CRASH", "1")]);
        let report = &run.report;
        let context = format!("{mode} -n {workers}\n{}\n{}", report.outcome.stdout, report.outcome.stderr);
        report.outcome.assert_code(1);
        let outcomes = report.outcomes();
        assert_eq!(outcomes.get(crash), Some(&"crashed"), "{context}");
        for (nodeid, outcome) in &outcomes {
            if *nodeid != crash {
                assert!(matches!(*outcome, "passed" | "skipped"), "{nodeid}: {outcome}: {context}");
            }
        }
        assert_eq!(outcomes.len(), 22, "{outcomes:#?}");
        check_records(&run.records, workers, report);
        assert_eq!(run.productions.len(), 1, "the session data was produced again: {:#?}", run.productions);

        let crashed =
            run.records.iter().find(|record| record["nodeid"] == crash).expect("the crash test logged");
        let slot = text(crashed, "worker_id");
        let replacement: Vec<&serde_json::Value> = run
            .records
            .iter()
            .filter(|record| record["worker_id"] == slot && record["pid"] != crashed["pid"])
            .collect();
        if workers == 1 {
            let skipped = outcomes.values().filter(|outcome| **outcome == "skipped").count();
            assert_eq!(replacement.len(), 21 - skipped, "the replacement's tests: {context}");
        }
        let parent =
            |record: &serde_json::Value| Path::new(text(record, "basetemp")).parent().map(Path::to_owned);
        for record in replacement {
            assert_eq!(
                record["workerinput"], crashed["workerinput"],
                "the replacement's workerinput differs"
            );
            assert_eq!(
                parent(record),
                parent(crashed),
                "the replacement's basetemp is not beside the others"
            );
        }
    }
}

#[test]
fn a_replacement_worker_gets_its_slots_workerinput_in_fork_mode() {
    check_replacement_keeps_the_workerinput("fork");
}

#[test]
fn a_replacement_worker_gets_its_slots_workerinput_in_spawn_mode() {
    check_replacement_keeps_the_workerinput("spawn");
}
