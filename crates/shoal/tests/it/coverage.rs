//! `--cov`: the combined coverage of shoal's workers is what sequential
//! `pytest --cov` measures, line for line and branch for branch, in fork and
//! spawn mode, with pytest-cov's terminal report and `--cov-fail-under`.
//! Runs `fixtures/coverage` (a small package with branches, and a conftest
//! that imports part of it while collecting).

use crate::harness::{Outcome, Project};

/// The coverage.py JSON report at `relative` in the project, without its
/// `meta` (timestamps, versions).
fn coverage_json(project: &Project, relative: &str) -> serde_json::Value {
    let path = project.path().join(relative);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("no {}: {error}", path.display()));
    let mut json: serde_json::Value = serde_json::from_str(&text).expect("coverage JSON");
    json.as_object_mut().expect("an object").remove("meta");
    json
}

/// The line numbers of `file` (in the coverage report) that ran.
fn executed_lines(report: &serde_json::Value, file: &str) -> Vec<u64> {
    report["files"][file]["executed_lines"]
        .as_array()
        .unwrap_or_else(|| panic!("{file} is not in the report:\n{report:#}"))
        .iter()
        .map(|line| line.as_u64().expect("a line number"))
        .collect()
}

/// The 1-based number of the line of `file` in the project that contains `text`.
fn line_of(project: &Project, file: &str, text: &str) -> u64 {
    let source = std::fs::read_to_string(project.path().join(file)).expect("the source");
    let index =
        source.lines().position(|line| line.contains(text)).unwrap_or_else(|| panic!("{text:?} in {file}"));
    u64::try_from(index + 1).expect("a small line number")
}

/// The report table: from the `Name` header to the `TOTAL` line.
fn report_table(outcome: &Outcome) -> Vec<&str> {
    let lines: Vec<&str> = outcome.stdout.lines().collect();
    let start = lines.iter().position(|line| line.starts_with("Name ")).unwrap_or_else(|| {
        panic!("no coverage table\nstdout:\n{}\nstderr:\n{}", outcome.stdout, outcome.stderr)
    });
    let end = lines.iter().position(|line| line.starts_with("TOTAL")).expect("a TOTAL line");
    lines[start..=end].to_vec()
}

#[test]
fn combined_coverage_equals_sequential_pytest_cov_in_both_modes() {
    let project = Project::fixture("coverage");
    project
        .pytest(&["--cov=covpkg", "--cov-branch", "--cov-report=json:pytest.json", "-p", "no:cacheprovider"])
        .assert_code(0);
    let expected = coverage_json(&project, "pytest.json");
    // Not trivially equal: some lines and branches are left, and what the
    // conftest imports while collecting counts.
    assert!(expected["totals"]["missing_lines"].as_u64() > Some(0), "{expected:#}");
    assert!(expected["totals"]["missing_branches"].as_u64() > Some(0), "{expected:#}");
    let registry = line_of(&project, "src/covpkg/setup_time.py", "REGISTRY = {}");
    assert!(executed_lines(&expected, "src/covpkg/setup_time.py").contains(&registry));

    for mode in ["fork", "spawn"] {
        let report = format!("--cov-report=json:shoal-{mode}.json");
        project
            .shoal(&["run", "-n", "2", "--mode", mode, "--cov=covpkg", "--cov-branch", &report])
            .assert_code(0);
        let measured = coverage_json(&project, &format!("shoal-{mode}.json"));
        assert_eq!(measured["files"], expected["files"], "{mode} mode: the files differ");
        assert_eq!(measured["totals"], expected["totals"], "{mode} mode: the totals differ");
    }
    // The combined data file is where pytest-cov leaves it, and nothing else.
    let mut data_files: Vec<String> = std::fs::read_dir(project.path())
        .expect("the project")
        .map(|entry| entry.expect("an entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".coverage"))
        .collect();
    data_files.sort();
    assert_eq!(data_files, vec![".coverage"]);
}

#[test]
fn the_terminal_report_and_fail_under_are_pytest_covs() {
    let project = Project::fixture("coverage");
    let options = ["--cov=covpkg", "--cov-report=term-missing", "--cov-fail-under=90"];
    let mut pytest_args = options.to_vec();
    pytest_args.extend(["-p", "no:cacheprovider"]);
    let pytest = project.pytest(&pytest_args);
    pytest.assert_code(1);
    let mut shoal_args = vec!["run", "-n", "2"];
    shoal_args.extend(options);
    let shoal = project.shoal(&shoal_args);
    shoal.assert_code(1);
    assert_eq!(report_table(&shoal), report_table(&pytest));
    for expected in [
        "ERROR: Coverage failure: total of",
        "tests coverage",
        "coverage: platform",
        "FAIL Required test coverage of 90% not reached. Total coverage:",
    ] {
        assert!(pytest.stdout.contains(expected), "pytest says no {expected:?}:\n{}", pytest.stdout);
        assert!(shoal.stdout.contains(expected), "shoal says no {expected:?}:\n{}", shoal.stdout);
    }
    assert!(shoal.stdout.contains("11 passed"), "{}", shoal.stdout);

    // The same options after `--` and a threshold that is met.
    let met = project.shoal(&["run", "-n", "2", "--", "--cov=covpkg", "--cov-fail-under=50"]);
    met.assert_code(0);
    assert!(met.stdout.contains("Required test coverage of 50% reached."), "{}", met.stdout);
}

#[test]
fn addopts_and_a_coverage_config_with_parallel_branch_and_omit_are_honoured() {
    let project = Project::fixture("coverage");
    project.write(
        "pytest.ini",
        "[pytest]\npythonpath = src\ntestpaths = tests\n\
         addopts = --cov=covpkg --cov-config=cov-parallel.toml --cov-report=json:report.json\n",
    );
    project.pytest(&["-p", "no:cacheprovider"]).assert_code(0);
    let expected = coverage_json(&project, "report.json");
    assert!(expected["files"].get("src/covpkg/setup_time.py").is_none(), "omit is ignored:\n{expected:#}");
    assert!(expected["totals"]["num_branches"].as_u64() > Some(0), "branch is ignored:\n{expected:#}");
    std::fs::remove_file(project.path().join("report.json")).expect("remove the report");

    project.shoal(&["run", "-n", "2"]).assert_code(0);
    let measured = coverage_json(&project, "report.json");
    assert_eq!(measured["files"], expected["files"]);
    assert_eq!(measured["totals"], expected["totals"]);
}

#[test]
fn a_killed_worker_keeps_the_coverage_of_the_tests_it_finished() {
    // `test_circle` runs, then `test_dies` kills (or hangs) the same worker;
    // `test_large` runs on a replacement.
    for (death, extra) in [("crash", None), ("hang", Some("--timeout=2"))] {
        for mode in ["fork", "spawn"] {
            let project = Project::fixture("coverage");
            let mut args = vec!["run", "-n", "1", "--mode", mode, "killed/test_killed.py"];
            args.extend(extra);
            args.extend(["--cov=covpkg", "--cov-report=json:killed.json"]);
            let outcome = project.shoal_with_env(&[("COVERAGE_FIXTURE_DEATH", death)], &args);
            outcome.assert_code(1);
            assert!(outcome.stdout.contains("2 passed"), "{death}, {mode}:\n{}", outcome.stdout);
            let report = coverage_json(&project, "killed.json");
            let executed = executed_lines(&report, "src/covpkg/shapes.py");
            let circle = line_of(&project, "src/covpkg/shapes.py", "math.pi * size * size");
            let large = line_of(&project, "src/covpkg/shapes.py", "return \"large\"");
            assert!(executed.contains(&circle), "{death}, {mode}: the dead worker's finished test is lost");
            assert!(executed.contains(&large), "{death}, {mode}: the replacement's test is lost");
        }
    }
}
