//! `shoal run --affected` (`fixtures/affected`, docs/affected.md): an edit
//! runs exactly the tests that depend on it, every other test reports its
//! cached outcome in every report, failures always run, and what every
//! test shares (conftests, declared data files, module-level code, the
//! installed packages) runs what it should. The recorder differs on
//! Python 3.12+ (`sys.monitoring`) and before (a trace function):
//! scripts/test.sh runs this module on both.

use std::collections::BTreeSet;

use crate::harness::{Project, Report};

/// `shoal run --affected -n 2 <args>` with a JSON report.
fn affected(project: &Project, env: &[(&str, &str)], args: &[&str]) -> Report {
    let mut full = vec!["--affected", "-n", "2"];
    full.extend_from_slice(args);
    project.shoal_report(env, &full)
}

/// The tests that ran (were not cached), by their function name.
fn ran(report: &Report) -> BTreeSet<String> {
    report
        .tests()
        .iter()
        .filter(|test| test.get("cached").is_none())
        .map(|test| test["nodeid"].as_str().unwrap().rsplit("::").next().unwrap().to_owned())
        .collect()
}

fn names(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

const ALL: &[&str] = &[
    "test_base",
    "test_add",
    "test_sub",
    "test_box",
    "test_lazy",
    "test_data",
    "test_always",
    "test_skipped",
];

/// Edits a file of the project: `from` must be in it.
fn edit(project: &Project, file: &str, from: &str, to: &str) {
    let path = project.path().join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{from:?} is not in {file}");
    std::fs::write(path, text.replace(from, to)).unwrap();
}

#[test]
fn an_edit_to_one_function_runs_exactly_the_tests_that_ran_it_and_the_rest_report_cached() {
    let project = Project::fixture("affected");
    let first = affected(&project, &[], &[]);
    first.outcome.assert_code(0);
    assert!(first.outcome.stderr.contains("no usable record"), "{}", first.outcome.stderr);
    assert_eq!(ran(&first), names(ALL));

    // Two workers recorded; their records merged: everything is cached but
    // the test marked no_cache.
    let junit = project.path().join("junit.xml");
    let second = affected(&project, &[], &["--junitxml", junit.to_str().unwrap()]);
    second.outcome.assert_code(0);
    assert_eq!(ran(&second), names(&["test_always"]));
    assert_eq!(second.outcomes()["tests/test_marked.py::test_skipped"], "skipped");
    assert_eq!(second.outcomes()["tests/test_calc.py::test_sub"], "passed");
    assert_eq!(second.test("tests/test_calc.py::test_sub")["cached"], true);
    assert!(second.outcome.closing_counts().contains("7 cached"), "{}", second.outcome.stdout);
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert_eq!(xml.matches(r#"name="cached" value="true""#).count(), 7, "{xml}");

    // A body edit (and comments and blank lines elsewhere).
    edit(&project, "pkg/calc.py", "    return a - b\n", "    return (a - b)\n");
    edit(&project, "pkg/calc.py", "def add(a, b):\n", "# adds\n\ndef add(a, b):\n");
    let third = affected(
        &project,
        &[],
        &["--explain", "tests/test_calc.py::test_sub", "--explain", "tests/test_calc.py::test_add"],
    );
    third.outcome.assert_code(0);
    assert_eq!(ran(&third), names(&["test_sub", "test_always"]));
    let stderr = &third.outcome.stderr;
    assert!(
        stderr.contains("tests/test_calc.py::test_sub: runs: pkg/calc.py: function sub changed"),
        "{stderr}"
    );
    assert!(stderr.contains("tests/test_calc.py::test_add: cached (passed)"), "{stderr}");
    assert_eq!(ran(&affected(&project, &[], &[])), names(&["test_always"]));

    // A method's edit runs the test that ran it.
    edit(&project, "pkg/calc.py", "        return LIMIT\n", "        return LIMIT + 0\n");
    assert_eq!(ran(&affected(&project, &[], &[])), names(&["test_box", "test_always"]));
}

#[test]
fn conftests_data_files_module_level_code_and_packages_run_what_depends_on_them() {
    let project = Project::fixture("affected");
    let extra = project.path().join("extra");
    std::fs::create_dir_all(extra.join("fake_dist-1.0.dist-info")).unwrap();
    let pythonpath = extra.to_str().unwrap().to_owned();
    let env = [("PYTHONPATH", pythonpath.as_str())];
    affected(&project, &env, &[]).outcome.assert_code(0);
    assert_eq!(ran(&affected(&project, &env, &[])), names(&["test_always"]));

    edit(&project, "tests/sub/conftest.py", "return 1", "return 2 - 1");
    assert_eq!(ran(&affected(&project, &env, &[])), names(&["test_base", "test_always"]));

    edit(&project, "tests/data/value.txt", "1", "1 ");
    let data = affected(&project, &env, &[]);
    assert_eq!(ran(&data), names(ALL));
    assert!(
        data.outcome.stderr.contains("every test runs: a file in affected-inputs changed"),
        "{}",
        data.outcome.stderr
    );

    edit(&project, "pkg/calc.py", "LIMIT = 10", "LIMIT = 5 * 2");
    let module_level = affected(&project, &env, &[]);
    assert_eq!(ran(&module_level), names(ALL));
    assert!(
        module_level.outcome.stderr.contains("pkg/calc.py: its module-level code"),
        "{}",
        module_level.outcome.stderr
    );

    // Imported by a test, not at collection: still every test's.
    edit(&project, "pkg/lazy.py", "FACTOR = 3", "FACTOR = 1 + 2");
    assert!(ran(&affected(&project, &env, &[])).contains("test_lazy"));

    std::fs::rename(extra.join("fake_dist-1.0.dist-info"), extra.join("fake_dist-2.0.dist-info")).unwrap();
    let packages = affected(&project, &env, &[]);
    assert_eq!(ran(&packages), names(ALL));
    assert!(packages.outcome.stderr.contains("installed packages changed"), "{}", packages.outcome.stderr);
    assert_eq!(ran(&affected(&project, &env, &[])), names(&["test_always"]));
}

#[test]
fn a_failing_test_always_runs_and_force_runs_everything() {
    let project = Project::fixture("affected");
    project.write("tests/test_fails.py", "def test_fails():\n    assert False\n");
    affected(&project, &[], &[]).outcome.assert_code(1);
    let again = affected(&project, &[], &["--explain", "tests/test_fails.py::test_fails"]);
    again.outcome.assert_code(1);
    assert_eq!(ran(&again), names(&["test_fails", "test_always"]));
    assert!(again.outcome.stderr.contains("runs: it was failed last time"), "{}", again.outcome.stderr);
    let forced = affected(&project, &[], &["--force"]);
    assert_eq!(ran(&forced).len(), ALL.len() + 1);
    // -k combines: deselected tests keep their records.
    let keyword = affected(&project, &[], &["-k", "test_add or test_sub"]);
    assert_eq!(ran(&keyword), names(&[]));
    assert_eq!(keyword.tests().len(), 2);
}

#[test]
fn a_foreign_store_is_ignored_with_its_notice() {
    let project = Project::fixture("affected");
    affected(&project, &[], &[]).outcome.assert_code(0);
    let store = project.path().join(".shoal_affected.json");
    let text = std::fs::read_to_string(&store).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["rootdir"] = "/somewhere/else".into();
    std::fs::write(&store, json.to_string()).unwrap();
    let foreign = affected(&project, &[], &[]);
    assert!(
        foreign.outcome.stderr.contains("was made for rootdir /somewhere/else; it is ignored"),
        "{}",
        foreign.outcome.stderr
    );
    assert_eq!(ran(&foreign), names(ALL));
    assert_eq!(ran(&affected(&project, &[], &[])), names(&["test_always"]));
}

#[test]
fn without_affected_a_worker_has_no_tracer_and_no_recorder() {
    let project = Project::fixture("affected");
    project.write(
        "tests/test_observe.py",
        "import sys\n\n\ndef test_nothing_observable():\n    assert sys.gettrace() is None and sys.getprofile() is None\n    \
         assert 'shoal_affected' not in sys.modules\n    if hasattr(sys, 'monitoring'):\n        \
         assert all(sys.monitoring.get_tool(tool) is None for tool in range(6))\n",
    );
    let report = project.shoal_report(&[], &["-n", "2", "-k", "observable"]);
    report.outcome.assert_code(0);
    assert_eq!(report.outcomes()["tests/test_observe.py::test_nothing_observable"], "passed");
    assert!(!project.path().join(".shoal_affected.json").exists());
}

#[test]
fn a_function_a_test_calls_twice_is_still_recorded_for_the_next_test_on_the_worker() {
    let project = Project::fixture("affected");
    project.write(
        "tests/test_twice.py",
        "from pkg.calc import add\n\n\ndef test_twice():\n    assert add(1, 1) + add(2, 2) == 6\n\n\n\
         def test_once_after():\n    assert add(1, 1) == 2\n",
    );
    let run = |args: &[&str]| {
        let mut full = vec!["--affected", "-n", "1", "tests/test_twice.py"];
        full.extend_from_slice(args);
        project.shoal_report(&[], &full)
    };
    run(&[]).outcome.assert_code(0);
    assert_eq!(ran(&run(&[])), names(&[]));
    edit(&project, "pkg/calc.py", "    return a + b\n", "    return b + a\n");
    assert_eq!(ran(&run(&[])), names(&["test_twice", "test_once_after"]));
}

#[test]
fn every_way_a_test_runs_project_code_is_recorded_on_a_worker_that_runs_it_again_and_again() {
    let project = Project::fixture("affected");
    project.write(
        "pkg/shapes.py",
        "def countdown(n):\n    while n:\n        yield n\n        n -= 1\n\n\n\
         def cleanup():\n    return 'clean'\n\n\n\
         class Square:\n    def area(self):\n        return 4\n\n    measure = area\n",
    );
    // The same function at the same line of two files: equal code objects,
    // two blocks.
    project.write("pkg/one.py", "def helper():\n    return 1\n");
    project.write("pkg/two.py", "def helper():\n    return 1\n");
    // One worker runs them in this order: countdown runs again after a
    // test that did not run it.
    project.write(
        "tests/test_paths.py",
        "import pytest\n\nfrom pkg import one, shapes, two\n\n\n\
         @pytest.fixture\ndef tidy():\n    yield\n    shapes.cleanup()\n\n\n\
         def test_generator():\n    assert list(shapes.countdown(2)) == [2, 1]\n\n\n\
         def test_teardown(tidy):\n    pass\n\n\n\
         def test_method():\n    assert shapes.Square().measure() == 4\n\n\n\
         def test_twins():\n    assert one.helper() + two.helper() == 2\n\n\n\
         def test_nothing():\n    pass\n\n\n\
         def test_generator_again():\n    assert sum(shapes.countdown(3)) == 6\n\n\n\
         def test_late_import():\n    from pkg import lazy\n\n    assert lazy.FACTOR == 3\n",
    );
    let run = || project.shoal_report(&[], &["--affected", "-n", "1", "tests/test_paths.py"]);
    run().outcome.assert_code(0);
    assert_eq!(ran(&run()), names(&[]));
    edit(&project, "pkg/shapes.py", "        n -= 1\n", "        n = n - 1\n");
    assert_eq!(ran(&run()), names(&["test_generator", "test_generator_again"]));
    edit(&project, "pkg/shapes.py", "    return 'clean'\n", "    return 'tidy'\n");
    assert_eq!(ran(&run()), names(&["test_teardown"]));
    edit(&project, "pkg/shapes.py", "        return 4\n", "        return 2 * 2\n");
    assert_eq!(ran(&run()), names(&["test_method"]));
    edit(&project, "pkg/two.py", "    return 1\n", "    return 2 - 1\n");
    assert_eq!(ran(&run()), names(&["test_twins"]));
    edit(&project, "pkg/lazy.py", "FACTOR = 3\n", "FACTOR = 1 + 2\n");
    assert!(ran(&run()).contains("test_late_import"));
}

#[test]
fn shoal_why_says_what_a_run_would_decide_and_runs_nothing() {
    let project = Project::fixture("affected");
    project.write("tests/test_touch.py", "def test_touch():\n    open('touched', 'w').close()\n");
    let none = project.shoal(&["why", "tests/test_calc.py::test_sub"]);
    none.assert_code(0);
    assert_eq!(none.stdout, "tests/test_calc.py::test_sub: runs: there is no usable record of past runs\n");

    affected(&project, &[], &["-k", "not test_touch"]).outcome.assert_code(0);
    let store = project.path().join(".shoal_affected.json");
    let recorded = std::fs::read(&store).unwrap();
    edit(&project, "pkg/calc.py", "    return a - b\n", "    return (a - b)\n");
    let why = project.shoal(&[
        "why",
        "tests/test_calc.py::test_sub",
        "tests/test_calc.py::test_add",
        "tests/test_marked.py",
        "tests/test_touch.py",
    ]);
    why.assert_code(0);
    assert_eq!(
        why.stdout,
        "tests/test_calc.py::test_sub: runs: pkg/calc.py: function sub changed\n\
         tests/test_calc.py::test_add: cached (passed): nothing it ran, read or was configured by changed\n\
         tests/test_marked.py::test_always: runs: it is marked no_cache\n\
         tests/test_marked.py::test_skipped: cached (skipped): nothing it ran, read or was configured by changed\n\
         tests/test_touch.py::test_touch: runs: it has no record: it is new or never ran under --affected\n"
    );
    // Nothing ran and nothing was recorded.
    assert!(!project.path().join("touched").exists());
    assert_eq!(std::fs::read(&store).unwrap(), recorded);

    // The run's own --explain agrees.
    let run = affected(&project, &[], &["--explain", "tests/test_calc.py::test_sub"]);
    assert!(
        run.outcome
            .stderr
            .contains("--explain tests/test_calc.py::test_sub: runs: pkg/calc.py: function sub changed"),
        "{}",
        run.outcome.stderr
    );
    // pytest's arguments are part of every key, as in a run.
    let arguments = project.shoal(&["why", "tests/test_calc.py::test_add", "--", "-p", "no:randomly"]);
    assert_eq!(arguments.stdout, "tests/test_calc.py::test_add: runs: pytest's arguments changed\n");
    project.shoal(&["why", "tests/test_nowhere.py"]).assert_code(4);
}

/// A table filled at import by a function no test calls (the miss the
/// mutation check found in toolz: `_signatures.create_signature_registry`).
const REGISTRY: &str = "\"\"\"Filled at import: tests read what double made, never calling it.\"\"\"\n\n\n\
                        def double(values):\n    \"\"\"\n    >>> double([1])\n    {1: 2}\n    \"\"\"\n    \
                        return {value: value * 2 for value in values}\n\n\n\
                        TABLE = double([1, 2, 3])\n";

#[test]
fn a_function_run_at_collection_runs_every_test_when_it_changes() {
    let project = Project::fixture("affected");
    project.write("pkg/registry.py", REGISTRY);
    project.write(
        "tests/test_registry.py",
        "from pkg.registry import TABLE\n\n\ndef test_table():\n    assert TABLE[2] == 4\n",
    );
    affected(&project, &[], &[]).outcome.assert_code(0);
    assert_eq!(ran(&affected(&project, &[], &[])), names(&["test_always"]));
    edit(&project, "pkg/registry.py", "value * 2", "value * 3");
    let changed = affected(&project, &[], &["--explain", "tests/test_registry.py::test_table"]);
    changed.outcome.assert_code(1);
    assert_eq!(changed.outcomes()["tests/test_registry.py::test_table"], "failed");
    assert!(
        changed.outcome.stderr.contains(
            "every test runs: pkg/registry.py: function double, run at collection or at an import (for every test), changed"
        ),
        "{}",
        changed.outcome.stderr
    );
}

#[test]
fn a_function_run_by_an_import_inside_a_test_counts_for_the_later_tests_of_its_worker() {
    let project = Project::fixture("affected");
    project.write("pkg/registry.py", REGISTRY);
    project.write(
        "tests/test_late.py",
        "def test_imports():\n    from pkg.registry import TABLE\n\n    assert TABLE[1] == 2\n\n\n\
         def test_reads_after():\n    from pkg.registry import TABLE\n\n    assert TABLE[2] == 4\n",
    );
    let run = || project.shoal_report(&[], &["--affected", "-n", "1", "tests/test_late.py"]);
    run().outcome.assert_code(0);
    assert_eq!(ran(&run()), names(&[]));
    edit(&project, "pkg/registry.py", "value * 2", "value * 3");
    let changed = run();
    assert_eq!(ran(&changed), names(&["test_imports", "test_reads_after"]));
    assert_eq!(changed.outcomes()["tests/test_late.py::test_reads_after"], "failed");
}

#[test]
fn a_module_whose_doctests_are_collected_is_every_tests_import_too() {
    let project = Project::fixture("affected");
    project.write("pkg/registry.py", REGISTRY.replace("TABLE = ", "LIMIT = 2\nTABLE = "));
    project.write(
        "tests/test_registry.py",
        "from pkg.registry import LIMIT\n\n\ndef test_limit():\n    assert LIMIT == 2\n",
    );
    let run = || affected(&project, &[], &["--doctest-modules", "pkg", "tests"]);
    run().outcome.assert_code(0);
    assert_eq!(ran(&run()), names(&["test_always"]));
    edit(&project, "pkg/registry.py", "LIMIT = 2", "LIMIT = 3");
    let changed = run();
    assert_eq!(changed.outcomes()["pkg/registry.py::pkg.registry.double"], "passed");
    assert_eq!(changed.outcomes()["tests/test_registry.py::test_limit"], "failed");
    assert!(
        changed.outcome.stderr.contains("pkg/registry.py: its module-level code"),
        "{}",
        changed.outcome.stderr
    );
}
