//! pytest-randomly (`fixtures/randomly`, plugins venv): one seed for every
//! worker (the controller's, passed through `workerinput` as under
//! pytest-xdist), so spawned workers collect alike; a given seed reproduces
//! the order and each test's reseeded `random`.

use std::collections::{BTreeMap, BTreeSet};

use crate::harness::{Outcome, Project, read_json_lines};
use crate::plugins::plugins_python;

const TESTS: usize = 21;

fn project() -> Project {
    Project::fixture("randomly").with_python(plugins_python())
}

/// Sequential `python -m pytest <args>` with pytest-randomly left on (the
/// harness's `pytest` turns it off).
fn pytest_randomly(project: &Project, env: &[(&str, &str)], args: &[&str]) -> Outcome {
    let mut command = project.command(project.interpreter());
    command.args(["-m", "pytest"]).args(args).envs(env.iter().copied());
    Outcome::of(command.output().expect("python starts"))
}

/// Each test's seed and first `random.random()`, from a log.
fn seeds_and_draws(log: &std::path::Path) -> (BTreeSet<String>, BTreeMap<String, f64>) {
    let records = read_json_lines(log);
    let seeds = records.iter().map(|record| record["seed"].to_string()).collect();
    let mut draws = BTreeMap::new();
    for record in &records {
        let nodeid = record["nodeid"].as_str().expect("a nodeid").to_owned();
        let draw = record["random"].as_f64().expect("a draw");
        assert!(draws.insert(nodeid, draw).is_none(), "a test ran twice: {records:#?}");
    }
    (seeds, draws)
}

/// `shoal run -n 3 --mode <mode>` with pytest-randomly choosing the seed:
/// every worker uses the same one, nothing aborts, and each test's reseeded
/// `random` is what sequential pytest gives with that seed.
fn check_one_seed(mode: &str) {
    let project = project();
    let log = project.path().join("shoal.log");
    let log_arg = log.to_str().expect("a UTF-8 temp path");
    let report = project.shoal_report(&[("RANDOMLY_LOG", log_arg)], &["-n", "3", "--mode", mode]);
    let output = format!("{}\n{}", report.outcome.stdout, report.outcome.stderr);
    assert!(!output.contains("collected different"), "{output}");
    report.outcome.assert_code(0);
    assert_eq!(report.outcome.closing_counts(), format!("{TESTS} passed"), "{output}");
    let workers: BTreeSet<&str> =
        report.tests().iter().map(|test| test["worker"].as_str().expect("a worker")).collect();
    assert!(workers.len() >= 2, "only one worker ran tests: {workers:?}");

    let (seeds, draws) = seeds_and_draws(&log);
    assert_eq!(draws.len(), TESTS);
    assert_eq!(seeds.len(), 1, "workers used different seeds: {seeds:?}");
    let seed = seeds.first().expect("a seed").clone();
    assert!(seed.parse::<u64>().is_ok(), "the seed is not a number: {seed}");
    // The header shows it, as pytest's does (pytest_report_header).
    let header_line = format!("\nUsing --randomly-seed={seed}\n");
    assert!(report.outcome.stdout.contains(&header_line), "the header does not show seed {seed}:\n{output}");

    let sequential_log = project.path().join("sequential.log");
    let sequential_arg = sequential_log.to_str().expect("a UTF-8 temp path");
    let seed_option = format!("--randomly-seed={seed}");
    pytest_randomly(&project, &[("RANDOMLY_LOG", sequential_arg)], &["-q", &seed_option]).assert_code(0);
    let (_, sequential_draws) = seeds_and_draws(&sequential_log);
    assert_eq!(draws, sequential_draws, "tests drew other numbers than under pytest with seed {seed}");
}

#[test]
fn forked_workers_share_one_seed() {
    check_one_seed("fork");
}

#[test]
fn spawned_workers_share_one_seed_and_collect_alike() {
    check_one_seed("spawn");
}

/// `shoal list` with pytest-randomly's options.
fn listed(project: &Project, seed: &str) -> Vec<String> {
    let option = format!("--randomly-seed={seed}");
    let outcome = project.shoal(&["list", "--", "-p", "randomly", &option]);
    outcome.assert_code(0);
    outcome.stdout.lines().map(str::to_owned).collect()
}

#[test]
fn a_given_seed_reproduces_the_order() {
    let project = project();
    let first = listed(&project, "4321");
    assert_eq!(first.len(), TESTS, "{first:#?}");
    assert_eq!(listed(&project, "4321"), first, "the same seed listed another order");
    let pytest = pytest_randomly(&project, &[], &["--collect-only", "-q", "--randomly-seed=4321"]);
    pytest.assert_code(0);
    let pytest_order: Vec<&str> = pytest.stdout.lines().filter(|line| line.contains("::")).collect();
    assert_eq!(first, pytest_order, "pytest orders seed 4321 otherwise");
    let other = listed(&project, "987");
    assert_ne!(other, first, "another seed gave the same order: pytest-randomly is not shuffling");
    assert_eq!(other.iter().collect::<BTreeSet<_>>(), first.iter().collect::<BTreeSet<_>>());

    // A run with the seed given: every worker uses it, both modes.
    for mode in ["fork", "spawn"] {
        let log = project.path().join(format!("run-{mode}.log"));
        let log_arg = log.to_str().expect("a UTF-8 temp path");
        let report = project.shoal_report(
            &[("RANDOMLY_LOG", log_arg)],
            &["-n", "2", "--mode", mode, "--", "-p", "randomly", "--randomly-seed=4321"],
        );
        report.outcome.assert_code(0);
        assert_eq!(report.outcome.closing_counts(), format!("{TESTS} passed"), "{}", report.outcome.stdout);
        let (seeds, draws) = seeds_and_draws(&log);
        assert_eq!(seeds, BTreeSet::from(["4321".to_owned()]), "{mode}");
        assert_eq!(draws.len(), TESTS);
    }
}
