//! pytest's command line, unchanged: the same argument vectors through
//! sequential `pytest` and through `shoal run`, on `fixtures/cli`. A run
//! must give pytest's exit code and closing line; a mode that runs no test
//! must print what pytest prints.

use crate::harness::{Outcome, Project, in_parallel};

/// Argument vectors that run tests. shoal adds `-n 2` (or `-n 1` where
/// pytest stops early, so that the same tests run before the stop).
const RUNNING: &[&[&str]] = &[
    &[],
    &["--tb=short"],
    &["--tb", "short"],
    &["--tb=line"],
    &["--tb", "no"],
    &["-rA"],
    &["-rA", "-q"],
    &["-q"],
    &["-qq"],
    &["-v"],
    &["-k", "pass"],
    &["-kpass"],
    &["-k", "not fail and not warns"],
    &["-m", "slow"],
    &["-m", "not slow"],
    &["-W", "error"],
    &["-W", "error::UserWarning"],
    &["-p", "no:cacheprovider"],
    &["--runxfail"],
    &["--strict-markers"],
    &["-o", "xfail_strict=true"],
    &["--deselect", "test_basic.py::test_fail"],
    &["--deselect=test_basic.py::test_fail", "--deselect=test_basic.py::test_warns"],
    &["--ignore=tests"],
    &["--ignore", "tests"],
    &["tests"],
    &["tests", "--tb=short"],
    &["test_basic.py::test_pass", "-q"],
    &["test_basic.py", "-k", "param", "-v"],
    &["--rootdir=."],
    &["-c", "pytest.ini"],
    &["-s"],
    &["--capture=no"],
    &["--capture=sys"],
    &["-l"],
    &["--showlocals", "--tb=long"],
    &["--import-mode=importlib"],
    &["--confcutdir=."],
    &["--durations=3"],
    &["-p", "no:warnings"],
    &["--disable-warnings"],
    &["-sv", "--tb=native"],
    &["--", "--tb=short"],
    &["-k", "param", "--", "-q"],
];

/// Argument vectors where pytest stops early; shoal runs them with one
/// worker and also counts the tests it did not start (`N not run`).
const STOPPING: &[&[&str]] = &[&["-x"], &["--exitfirst", "-q"], &["--maxfail", "1"], &["--maxfail=1", "-rA"]];

/// pytest's modes that run no test (and `--setup-show`, which shoal hands to
/// one pytest process): the whole output must be pytest's.
const NOT_RUNNING: &[&[&str]] = &[
    &["--co"],
    &["--co", "-q"],
    &["--collect-only", "-qq"],
    &["--collect-only", "-k", "param"],
    &["--markers"],
    &["--fixtures"],
    &["--setup-plan"],
    &["--setup-only", "-k", "pass"],
    &["--fixtures-per-test", "-k", "param"],
    &["--version"],
    // Runs the tests, in one pytest process: the set-up trace is pytest's.
    &["--setup-show", "-k", "pass or param"],
];

/// The closing line's counts, without the duration; the last line where
/// there is none (`-qq`). (With `-s`, shoal echoes the workers' output as
/// it comes, which may be after the closing line.)
fn closing(outcome: &Outcome) -> String {
    let mut lines = outcome.stdout.lines().rev().filter(|line| !line.trim().is_empty());
    let closing_line = lines
        .clone()
        .find(|line| line.contains(" in ") && line.trim_end_matches('=').trim_end().ends_with('s'));
    let last = closing_line.or_else(|| lines.next()).unwrap_or_default();
    let last = last.trim_matches('=').trim();
    last.rsplit_once(" in ").map_or(last, |(counts, _)| counts).to_owned()
}

/// pytest's output with its timings and temporary paths taken out.
fn comparable(text: &str, project: &Project) -> String {
    let root = project.path().display().to_string();
    text.lines()
        .map(|line| {
            let line = line.replace(&root, "ROOT");
            match line.rsplit_once(" in ") {
                Some((head, tail)) if tail.trim_end_matches(['=', ' ']).ends_with('s') => {
                    format!("{head} in T")
                }
                _ => line,
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `shoal run` with `--python`, arguments exactly as a user types them.
fn shoal_run(project: &Project, workers: &str, args: &[&str]) -> Outcome {
    let mut full = vec!["run", "-n", workers];
    full.extend_from_slice(args);
    project.shoal(&full)
}

#[test]
fn runs_give_pytests_exit_code_and_closing_line() {
    let differences: Vec<String> = in_parallel(RUNNING, |args| {
        let project = Project::fixture("cli");
        // shoal's `--` hands what follows to pytest as arguments: pytest
        // gets them without it (its own `--` would make them paths).
        let pytest_args: Vec<&str> = args.iter().copied().filter(|argument| *argument != "--").collect();
        let expected = project.pytest(&pytest_args);
        let actual = shoal_run(&project, "2", args);
        (actual.code != expected.code || closing(&actual) != closing(&expected)).then(|| {
            format!(
                "{args:?}: pytest {:?} {:?}, shoal {:?} {:?}\n{}",
                expected.code,
                closing(&expected),
                actual.code,
                closing(&actual),
                actual.stderr
            )
        })
    })
    .into_iter()
    .flatten()
    .collect();
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}

#[test]
fn early_stops_give_pytests_exit_code_and_closing_line() {
    in_parallel(STOPPING, |args| {
        // A new project each time: a durations history would put the
        // longest tests first, not pytest's order.
        let project = Project::fixture("cli");
        let expected = project.pytest(args);
        let actual = shoal_run(&project, "1", args);
        assert_eq!(actual.code, expected.code, "{args:?}\n{}", actual.stdout);
        let counts = closing(&actual);
        let (ran, not_run) = counts.rsplit_once(", ").expect("tests not started are counted");
        assert!(not_run.ends_with(" not run"), "{args:?}: {counts}");
        assert_eq!(ran, closing(&expected), "{args:?}\n{}", actual.stdout);
    });
}

#[test]
fn modes_that_run_no_test_print_what_pytest_prints() {
    in_parallel(NOT_RUNNING, |args| {
        let project = Project::fixture("cli");
        let expected = project.pytest(args);
        let actual = shoal_run(&project, "2", args);
        assert_eq!(actual.code, expected.code, "{args:?}\n{}", actual.stderr);
        assert_eq!(
            comparable(&actual.stdout, &project),
            comparable(&expected.stdout, &project),
            "{args:?}\nstderr:\n{}",
            actual.stderr
        );
    });
}

#[test]
fn help_is_pytests_then_shoals() {
    let project = Project::fixture("cli");
    let expected = project.pytest(&["--help"]);
    let actual = shoal_run(&project, "2", &["--help"]);
    assert_eq!(actual.code, Some(0));
    assert!(actual.stdout.starts_with(&expected.stdout), "{}", actual.stdout);
    assert!(actual.stdout.contains("--worker-memory-limit"), "shoal's own options follow");
}

#[test]
fn an_unknown_option_gets_pytests_error_and_exit_code() {
    let project = Project::fixture("cli");
    let expected = project.pytest(&["--bogus-flag"]);
    let actual = shoal_run(&project, "2", &["--bogus-flag"]);
    assert_eq!(actual.code, expected.code);
    assert_eq!(actual.code, Some(4));
    assert!(actual.stderr.contains("unrecognized arguments: --bogus-flag"), "{}", actual.stderr);
}

#[test]
fn shoal_pytest_is_shoal_run_for_scripts_that_can_only_change_the_command() {
    let project = Project::fixture("cli");
    let python = crate::harness::python().to_str().expect("a UTF-8 interpreter path");
    let expected = project.pytest(&["--tb=short", "-q"]);
    let actual = project.shoal_as_typed(&["pytest", "--python", python, "-n", "2", "--tb=short", "-q"]);
    assert_eq!(actual.code, expected.code, "{}", actual.stderr);
    assert_eq!(closing(&actual), closing(&expected), "{}", actual.stdout);
}

/// The header lines that say where pytest's configuration came from.
fn configuration_lines(outcome: &Outcome) -> Vec<String> {
    outcome
        .stdout
        .lines()
        .filter(|line| line.starts_with("rootdir:") || line.starts_with("configfile:"))
        .map(str::to_owned)
        .collect()
}

/// A configuration case: its name, the files written, the arguments and
/// the environment.
type ConfigurationCase<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [&'a str], &'a [(&'a str, &'a str)]);

#[test]
fn configuration_is_found_and_read_as_pytest_finds_and_reads_it() {
    let test = "def test_pass():\n    pass\n\ndef test_other():\n    pass\n";
    let cases: [ConfigurationCase<'_>; 8] = [
        ("pytest.ini", &[("pytest.ini", "[pytest]\naddopts = -k pass\n")], &[], &[]),
        (
            "pyproject ini_options",
            &[("pyproject.toml", "[tool.pytest.ini_options]\naddopts = \"-k pass\"\n")],
            &[],
            &[],
        ),
        (
            "pyproject [tool.pytest]",
            &[("pyproject.toml", "[tool.pytest]\naddopts = [\"-k\", \"pass\"]\n")],
            &[],
            &[],
        ),
        ("tox.ini", &[("tox.ini", "[pytest]\naddopts = -k pass\n")], &[], &[]),
        ("setup.cfg", &[("setup.cfg", "[tool:pytest]\naddopts = -k pass\n")], &[], &[]),
        (
            "-c",
            &[("pytest.ini", "[pytest]\n"), ("other.ini", "[pytest]\naddopts = -k other\n")],
            &["-c", "other.ini"],
            &[],
        ),
        ("--rootdir", &[("pytest.ini", "[pytest]\n")], &["--rootdir=sub"], &[]),
        ("PYTEST_ADDOPTS", &[("pytest.ini", "[pytest]\n")], &[], &[("PYTEST_ADDOPTS", "-k other")]),
    ];
    for (name, files, args, env) in cases {
        let project = Project::empty();
        project.write("test_config.py", test);
        std::fs::create_dir_all(project.path().join("sub")).expect("a sub directory");
        for (file, text) in files {
            project.write(file, *text);
        }
        let expected = project.pytest_with_env(env, args);
        let mut shoal_args = vec!["run", "-n", "2"];
        shoal_args.extend_from_slice(args);
        let actual = project.shoal_with_env(env, &shoal_args);
        assert_eq!(configuration_lines(&actual), configuration_lines(&expected), "{name}\n{}", actual.stdout);
        assert_eq!(
            (actual.code, closing(&actual)),
            (expected.code, closing(&expected)),
            "{name}\n{}",
            actual.stdout
        );
    }
}
