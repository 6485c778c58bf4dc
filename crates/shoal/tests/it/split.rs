//! Split collection (fork mode's default): the collecting process imports no
//! test file, each worker imports its share once, and the run selects,
//! runs and counts exactly what sequential pytest does. Runs
//! `fixtures/split` (packages, a plain directory with a helper other files
//! import, a subdirectory conftest, an inherited test, doctests sharing a
//! node id with their module), whose files log the process importing them.

use std::collections::{BTreeMap, BTreeSet};

use crate::harness::{Project, read_json_lines};

/// The test files of `fixtures/split` (each logs its import).
const TEST_FILES: [&str; 5] = [
    "pkg/test_alpha.py",
    "pkg/sub/test_beta.py",
    "plain/test_gamma.py",
    "plain/test_epsilon.py",
    "helpers_dir/test_delta.py",
];

/// A shoal run of `fixtures/split` with an import log: the JSON report's
/// outcomes, the closing counts, the collecting process's pid (the one that
/// imported conftest.py), the pids that imported each test file and those
/// that built each test.
struct SplitRun {
    outcomes: BTreeMap<String, String>,
    counts: String,
    collector: u64,
    imported_by: BTreeMap<String, Vec<u64>>,
    built_by: BTreeMap<String, Vec<u64>>,
}

/// `args` without a `--collect` of their own ask for split collection.
fn split_run(project: &Project, args: &[&str]) -> SplitRun {
    let log = project.path().join("imports.log");
    let _ = std::fs::remove_file(&log);
    let log_arg = log.to_str().expect("a UTF-8 temp path").to_owned();
    let mut full_args = Vec::new();
    if !args.iter().any(|argument| argument.starts_with("--collect")) {
        full_args.extend(["--collect", "split"]);
    }
    full_args.extend_from_slice(args);
    let report = project.shoal_report(&[("SHOAL_SPLIT_LOG", &log_arg)], &full_args);
    let mut collector = None;
    let mut imported_by: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut built_by: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for line in read_json_lines(&log) {
        let pid = line["pid"].as_u64().expect("a pid");
        if let Some(nodeids) = line["built"].as_array() {
            for nodeid in nodeids {
                built_by.entry(nodeid.as_str().expect("a node id").to_owned()).or_default().push(pid);
            }
            continue;
        }
        match line["module"].as_str().expect("a module") {
            "conftest" => collector = Some(pid),
            module => imported_by.entry(module.to_owned()).or_default().push(pid),
        }
    }
    SplitRun {
        outcomes: report
            .outcomes()
            .into_iter()
            .map(|(id, outcome)| (id.to_owned(), outcome.to_owned()))
            .collect(),
        counts: report.outcome.closing_counts(),
        collector: collector.expect("conftest.py was imported"),
        imported_by,
        built_by,
    }
}

#[test]
fn each_worker_imports_its_share_and_the_run_counts_as_pytest() {
    let project = Project::fixture("split");
    for selection in [
        &[][..],
        &["-k", "alpha or gamma"],
        &["-m", "not slow"],
        &["--", "--deselect", "pkg/test_alpha.py::test_marked"],
        // A module and its doctests: two collectors under one node id.
        &["--", "--doctest-modules"],
    ] {
        let pytest_args: Vec<&str> = selection.iter().copied().filter(|&argument| argument != "--").collect();
        let expected_ids: BTreeSet<String> = project.pytest_node_ids(&pytest_args).into_iter().collect();
        let expected = project.pytest(&pytest_args);
        for workers in ["2", "3"] {
            let mut args = vec!["-n", workers];
            args.extend_from_slice(selection);
            let run = split_run(&project, &args);
            let what = format!("-n {workers} {selection:?}");
            assert_eq!(run.outcomes.keys().cloned().collect::<BTreeSet<_>>(), expected_ids, "{what}");
            assert_eq!(run.counts, expected.closing_counts(), "{what}");
            let mut importers = BTreeSet::new();
            for file in TEST_FILES {
                let pids = run.imported_by.get(file).cloned().unwrap_or_default();
                assert_eq!(pids.len(), 1, "{what}: {file} imported by {pids:?}, not once");
                assert_ne!(pids[0], run.collector, "{what}: {file} was imported by the collecting process");
                importers.insert(pids[0]);
            }
            assert!(
                importers.len() >= 2,
                "{what}: one process imported every test file: {:?}",
                run.imported_by
            );
        }
    }
}

#[test]
fn keeping_the_imports_the_collecting_process_imports_every_test_file_and_the_workers_build_the_tests() {
    let project = Project::fixture("split");
    for selection in [&[][..], &["-k", "alpha or gamma"], &["--", "--doctest-modules"]] {
        let pytest_args: Vec<&str> = selection.iter().copied().filter(|&argument| argument != "--").collect();
        let expected_ids: BTreeSet<String> = project.pytest_node_ids(&pytest_args).into_iter().collect();
        let expected = project.pytest(&pytest_args);
        let mut args = vec!["-n", "2", "--collect", "items"];
        args.extend_from_slice(selection);
        let run = split_run(&project, &args);
        let what = format!("{selection:?}");
        assert_eq!(run.outcomes.keys().cloned().collect::<BTreeSet<_>>(), expected_ids, "{what}");
        assert_eq!(run.counts, expected.closing_counts(), "{what}");
        for file in TEST_FILES {
            assert_eq!(run.imported_by[file], vec![run.collector], "{what}: {file}");
        }
        for nodeid in &expected_ids {
            assert!(run.built_by.contains_key(nodeid), "{what}: {nodeid} was run but never built");
        }
        // Every item built, deselected ones too: which worker builds the
        // files that hold the selected tests depends on the partition, but
        // the files are shared out, so at least two workers build some.
        let mut builders: BTreeSet<u64> = BTreeSet::new();
        for (nodeid, pids) in &run.built_by {
            // (A worker given tests of a file it has not built builds it too.)
            assert!(!pids.contains(&run.collector), "{what}: {nodeid} was built by the collecting process");
            builders.extend(pids);
        }
        assert!(builders.len() >= 2, "{what}: one process built every test: {:?}", run.built_by);
    }
}

#[test]
fn keeping_the_imports_a_module_that_fails_or_skips_at_import_is_imported_once_and_reported_as_in_pytest() {
    let project = Project::empty();
    let logged = "import os\nwith open(os.path.join(os.path.dirname(__file__), 'imports.log'), 'a') as log:\n    \
                  log.write(__name__ + '\\n')\n";
    project
        .write("test_ok.py", format!("{logged}def test_ok():\n    pass\n"))
        .write(
            "test_broken.py",
            format!("{logged}import no_such_module_here\n\ndef test_never():\n    pass\n"),
        )
        .write(
            "test_skipped.py",
            format!("{logged}import pytest\npytest.skip('not here', allow_module_level=True)\n"),
        )
        .write(
            "test_more.py",
            format!(
                "{logged}import pytest\n\n@pytest.mark.parametrize('n', range(3))\ndef test_n(n):\n    pass\n"
            ),
        );
    let imports = |what: &str| {
        let path = project.path().join("imports.log");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let _ = std::fs::remove_file(&path);
        let mut modules: Vec<String> = text.lines().map(str::to_owned).collect();
        modules.sort();
        assert_eq!(modules, ["test_broken", "test_more", "test_ok", "test_skipped"], "{what}: imports");
    };
    let expected = project.pytest(&["--continue-on-collection-errors"]);
    imports("pytest");
    let run = project.shoal(&["run", "-n", "2", "--collect", "items", "--continue-on-collection-errors"]);
    imports("shoal --collect items");
    assert_eq!(run.closing_counts(), expected.closing_counts());
    assert_eq!(run.code, expected.code, "{}", run.stdout);
    let shown = "E   ModuleNotFoundError: No module named 'no_such_module_here'";
    assert!(expected.stdout.contains(shown), "pytest: {}", expected.stdout);
    assert!(run.stdout.contains(shown), "shoal: {}", run.stdout);
}

#[test]
fn full_collection_and_node_id_selections_import_in_the_collecting_process() {
    let project = Project::fixture("split");
    let full = split_run(&project, &["-n", "2", "--collect", "full"]);
    for file in TEST_FILES {
        assert_eq!(full.imported_by[file], vec![full.collector], "--collect full: {file}");
    }
    // A node id needs its file imported to be found: such runs collect in full.
    let named = split_run(&project, &["-n", "2", "pkg/test_alpha.py::test_marked", "plain"]);
    assert_eq!(named.imported_by["pkg/test_alpha.py"], vec![named.collector]);
    assert_eq!(named.outcomes.len(), 4, "{:?}", named.outcomes);
}

#[test]
fn a_helper_found_through_another_test_files_directory_is_found_as_in_pytest() {
    // Two files, two workers: each imports one. test_epsilon imports a
    // helper that is importable only because collecting test_delta put its
    // directory on sys.path, as sequential pytest does.
    let project = Project::fixture("split");
    let files = ["plain/test_epsilon.py", "helpers_dir/test_delta.py"];
    project.pytest(&files).assert_code(0);
    let mut args = vec!["-n", "2"];
    args.extend(files);
    let run = split_run(&project, &args);
    assert_ne!(run.imported_by[files[0]], run.imported_by[files[1]], "one worker imported both");
    assert_eq!(run.outcomes["plain/test_epsilon.py::test_helper_from_another_directory"], "passed");
}

#[test]
fn a_fresh_worker_imports_the_files_of_the_tests_it_is_given() {
    // The failing test is rerun on a freshly forked worker, which has
    // imported nothing: it must import that file first.
    let project = Project::fixture("split");
    let run = split_run(&project, &["-n", "2", "--reruns", "1"]);
    assert_eq!(run.outcomes["pkg/sub/test_beta.py::test_fails_on_purpose"], "failed");
    assert!(run.counts.contains("1 rerun"), "{}", run.counts);
    let pids = &run.imported_by["pkg/sub/test_beta.py"];
    assert_eq!(pids.len(), 2, "imported by {pids:?}");
    assert_ne!(pids[0], pids[1]);
}

#[test]
fn import_costs_go_to_the_history() {
    let project = Project::fixture("split");
    split_run(&project, &["-n", "2"]);
    let text = std::fs::read_to_string(project.path().join(".shoal_history.json")).expect("the history");
    let history: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let files: BTreeSet<&str> =
        history["file_collect"].as_object().expect("file_collect").keys().map(String::as_str).collect();
    for file in TEST_FILES {
        assert!(files.contains(file), "{file} has no import cost in {history:#}");
    }
}

#[test]
fn by_default_collection_is_split_only_when_history_says_importing_is_a_large_share() {
    let project = Project::fixture("split");
    // No history: every test file is imported before forking, as pytest does.
    let first = split_run(&project, &["-n", "2", "--collect", "auto"]);
    for file in TEST_FILES {
        assert_eq!(first.imported_by[file], vec![first.collector], "no history: {file}");
    }
    // A history where importing the test files costs seconds: split.
    let file_collect: serde_json::Map<String, serde_json::Value> =
        TEST_FILES.iter().map(|file| ((*file).to_owned(), serde_json::json!(2.0))).collect();
    let history = serde_json::json!({"format_version": 1, "module_setup": {}, "file_collect": file_collect});
    project.write(".shoal_history.json", history.to_string());
    let heavy = split_run(&project, &["-n", "2", "--collect", "auto"]);
    let importers: BTreeSet<u64> =
        TEST_FILES.iter().flat_map(|file| heavy.imported_by[*file].clone()).collect();
    assert!(!importers.contains(&heavy.collector), "heavy imports: split {:?}", heavy.imported_by);
    assert_eq!(heavy.outcomes, first.outcomes);
}

/// Writes a durations history in which every test takes 0.1 s:
/// `tests/test_big.py` holds most of the run, more than a worker's fair
/// share, so split collection spreads it over the workers in parts. (Each
/// run rewrites the history with what it measured; the tests write this one
/// again before each run.)
fn write_spread_history(project: &Project, ids: &[String]) {
    let durations: BTreeMap<&str, f64> = ids.iter().map(|id| (id.as_str(), 0.1)).collect();
    project.write(".test_durations", serde_json::to_string_pretty(&durations).expect("JSON"));
}

/// What `fixtures/spread` gives under pytest: one failure, one skip.
fn spread_outcome(nodeid: &str) -> &'static str {
    match nodeid {
        "tests/test_big.py::test_numbers[17]" => "failed",
        "tests/test_big.py::test_skipped" => "skipped",
        _ => "passed",
    }
}

/// The workers that ran tests of `tests/test_big.py`.
fn big_file_workers(report: &crate::harness::Report) -> BTreeSet<String> {
    report
        .tests()
        .iter()
        .filter(|test| test["nodeid"].as_str().is_some_and(|id| id.starts_with("tests/test_big.py::")))
        .map(|test| test["worker"].as_str().expect("a worker").to_owned())
        .collect()
}

#[test]
fn a_file_with_most_of_the_tests_is_spread_over_the_workers_and_runs_as_in_pytest() {
    let project = Project::fixture("spread");
    let ids = project.pytest_node_ids(&[]);
    let expected_counts = project.pytest(&[]).closing_counts();
    let log = project.path().join("collected.log");
    let log_arg = log.to_str().expect("a UTF-8 temp path").to_owned();
    for workers in ["2", "3"] {
        write_spread_history(&project, &ids);
        let _ = std::fs::remove_file(&log);
        let report =
            project.shoal_report(&[("SPREAD_LOG", &log_arg)], &["-n", workers, "--collect", "split"]);
        // Each worker built the items of its part only: together, each test
        // once. (A worker's first collection is its share; a later one is a
        // part it took over, when importing it paid.)
        let mut seen_pids = BTreeSet::new();
        let mut collected: Vec<String> = read_json_lines(&log)
            .iter()
            .filter(|line| seen_pids.insert(line["pid"].as_u64().expect("a pid")))
            .flat_map(|line| line["items"].as_array().expect("items").clone())
            .map(|id| id.as_str().expect("a node id").to_owned())
            .collect();
        collected.sort();
        let mut expected_collected = ids.clone();
        expected_collected.sort();
        assert_eq!(collected, expected_collected, "-n {workers}: collected by the workers");
        // Every test once, in pytest's collection order, with pytest's outcome.
        assert_eq!(report.node_ids(), ids, "-n {workers}\n{}", report.outcome.stdout);
        for (nodeid, outcome) in report.outcomes() {
            assert_eq!(outcome, spread_outcome(nodeid), "-n {workers}: {nodeid}");
        }
        assert_eq!(report.outcome.closing_counts(), expected_counts, "-n {workers}");
        let spread_over = big_file_workers(&report);
        assert_eq!(spread_over.len(), workers.parse::<usize>().unwrap(), "-n {workers}: {spread_over:?}");
    }
    // Selection applies to each part as to the whole file.
    for selection in [&["-k", "words or method"][..], &["--", "--deselect", "tests/test_big.py::test_plain"]]
    {
        let pytest_args: Vec<&str> = selection.iter().copied().filter(|&argument| argument != "--").collect();
        let expected = project.pytest_node_ids(&pytest_args);
        let mut args = vec!["-n", "2", "--collect", "split"];
        args.extend_from_slice(selection);
        write_spread_history(&project, &ids);
        let report = project.shoal_report(&[], &args);
        assert_eq!(report.node_ids(), expected, "{selection:?}\n{}", report.outcome.stdout);
        assert_eq!(big_file_workers(&report).len(), 2, "{selection:?}");
    }
}

#[test]
fn a_spread_files_parts_are_balanced_by_the_tests_expected_time() {
    let project = Project::fixture("spread");
    let ids = project.pytest_node_ids(&[]);
    // By history, test_numbers' even numbers take 1 s and every other test
    // 10 ms: they are the first 30 tests of the file, so by position one
    // part would hold every slow test.
    let slow = |id: &str| {
        id.strip_prefix("tests/test_big.py::test_numbers[")
            .and_then(|rest| rest.trim_end_matches(']').parse::<u32>().ok())
            .is_some_and(|number| number % 2 == 0)
    };
    let durations: BTreeMap<&str, f64> =
        ids.iter().map(|id| (id.as_str(), if slow(id) { 1.0 } else { 0.01 })).collect();
    project.write(".test_durations", serde_json::to_string_pretty(&durations).expect("JSON"));
    let log = project.path().join("collected.log");
    let log_arg = log.to_str().expect("a UTF-8 temp path").to_owned();
    let report = project.shoal_report(&[("SPREAD_LOG", &log_arg)], &["-n", "2", "--collect", "split"]);
    for (nodeid, outcome) in report.outcomes() {
        assert_eq!(outcome, spread_outcome(nodeid), "{nodeid}");
    }
    // Each worker's first collection is its part of the file (the
    // collecting process logs an empty one).
    let mut seen_pids = BTreeSet::new();
    let slow_per_part: Vec<usize> = read_json_lines(&log)
        .iter()
        .filter(|line| !line["items"].as_array().expect("items").is_empty())
        .filter(|line| seen_pids.insert(line["pid"].as_u64().expect("a pid")))
        .map(|line| {
            let items = line["items"].as_array().expect("items");
            items.iter().filter(|id| slow(id.as_str().expect("a node id"))).count()
        })
        .collect();
    assert_eq!(slow_per_part.iter().sum::<usize>(), 15, "{slow_per_part:?}");
    assert!(
        slow_per_part.iter().all(|&count| (7..=8).contains(&count)),
        "slow tests per part: {slow_per_part:?}"
    );
}

#[test]
fn a_crashed_worker_holding_a_part_of_a_spread_file_is_replaced_and_the_part_finished() {
    let project = Project::fixture("spread");
    let ids = project.pytest_node_ids(&[]);
    write_spread_history(&project, &ids);
    let crashing = "tests/test_big.py::test_numbers[4]";
    let report = project.shoal_report(&[("SPREAD_CRASH", crashing)], &["-n", "2", "--collect", "split"]);
    assert_eq!(report.node_ids(), ids, "{}", report.outcome.stdout);
    for (nodeid, outcome) in report.outcomes() {
        let expected = if nodeid == crashing { "crashed" } else { spread_outcome(nodeid) };
        assert_eq!(outcome, expected, "{nodeid}\n{}", report.outcome.stdout);
    }
    assert_eq!(big_file_workers(&report).len(), 2);
}
