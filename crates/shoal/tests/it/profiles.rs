//! Profiles (`fixtures/profiles`, `docs/profiles.md`): each profile runs
//! its tests with its timeouts and reruns, overrides by marker and path
//! included (read back from the JSON report); `shoal config` names every
//! value's source; a misspelt key names its file and line; a test past its
//! slow timeout gets its `SLOW` line while it still runs, and one slow
//! against its history is named in the summary; and the documented
//! configuration and CI jobs run as written.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use crate::harness::{Outcome, Project, Report, documented_block};
use crate::report_json::schema_mismatches;

/// `(nodeid, outcome, attempts, failure)` of each test of a report, sorted.
fn tests_of(report: &serde_json::Value) -> Vec<(String, String, usize, String)> {
    let mut tests: Vec<(String, String, usize, String)> = report["tests"]
        .as_array()
        .expect("a tests array")
        .iter()
        .map(|test| {
            (
                test["nodeid"].as_str().expect("a node id").to_owned(),
                test["outcome"].as_str().expect("an outcome").to_owned(),
                test.get("attempts").and_then(|attempts| attempts.as_array()).map_or(0, Vec::len),
                test.get("failure").and_then(|failure| failure.as_str()).unwrap_or_default().to_owned(),
            )
        })
        .collect();
    tests.sort();
    tests
}

/// `(nodeid, outcome, attempts)` of each of `tests`.
fn attempts_of(tests: &[(String, String, usize, String)]) -> Vec<(&str, &str, usize)> {
    tests
        .iter()
        .map(|(nodeid, outcome, attempts, _)| (nodeid.as_str(), outcome.as_str(), *attempts))
        .collect()
}

/// The source a report's `run.settings` gives for `key`.
fn source_of<'a>(report: &'a serde_json::Value, key: &str) -> &'a str {
    report["run"]["settings"][key]["source"].as_str().unwrap_or_else(|| panic!("no setting {key}"))
}

/// The line of `text` in the fixture's pyproject.toml (1-based).
fn line_of(project: &Project, text: &str) -> usize {
    let pyproject = std::fs::read_to_string(project.path().join("pyproject.toml")).expect("pyproject.toml");
    1 + pyproject.lines().position(|line| line == text).unwrap_or_else(|| panic!("no line `{text}`"))
}

#[test]
fn the_unit_profile_runs_the_unit_tests_with_its_timeout_and_its_path_override() {
    let project = Project::fixture("profiles");
    // The database test took 0.2s last time; it takes 1.5s now.
    project.write(".test_durations", r#"{"tests/unit/test_db.py::test_query": 0.2}"#);
    let run = project.report_from("report-unit.json", || project.shoal(&["run", "--profile", "unit"]));
    let (outcome, report) = (&run.outcome, &run.json);
    outcome.assert_code(1);
    let slow = "tests/unit/test_db.py::test_query was slow against its history: ";
    assert!(outcome.stdout.contains(slow), "{}", outcome.stdout);
    assert_eq!(schema_mismatches(&project, &project.path().join("report-unit.json")), None);
    assert_eq!(report["run"]["profile"], "unit");
    let tests = tests_of(report);
    assert_eq!(
        attempts_of(&tests),
        [
            ("tests/unit/test_db.py::test_query", "passed", 0),
            ("tests/unit/test_math.py::test_add", "passed", 0),
            ("tests/unit/test_math.py::test_hangs", "timeout", 0),
            ("tests/unit/test_math.py::test_sub", "passed", 0),
        ],
        "the database test outlives the profile's 1s under its override's 6s"
    );
    assert!(tests[2].3.contains("timed out after 1s"), "{}", tests[2].3);
    let notices = report["notices"].as_array().expect("notices");
    assert!(
        notices.iter().any(|notice| notice.as_str().is_some_and(|notice| notice.starts_with(slow))),
        "{notices:?}"
    );
    assert_eq!(report["run"]["settings"]["timeout"]["value"], 1.0);
    let profile_line = line_of(&project, "[tool.shoal.profile.unit]");
    assert_eq!(
        source_of(report, "timeout"),
        format!("pyproject.toml:{} [tool.shoal.profile.unit]", profile_line + 2)
    );
    assert_eq!(source_of(report, "profile"), "flag --profile");
    assert_eq!(
        source_of(report, "workers"),
        format!("pyproject.toml:{} [tool.shoal]", line_of(&project, "workers = 2"))
    );
}

#[test]
fn the_e2e_profile_runs_the_marked_tests_with_reruns_and_the_quick_ones_without() {
    let project = Project::fixture("profiles");
    let run = project
        .report_from("report-e2e.json", || project.shoal_with_env(&[("SHOAL_PROFILE", "e2e")], &["run"]));
    run.outcome.assert_code(1);
    let report = &run.json;
    assert_eq!(report["run"]["profile"], "e2e");
    assert_eq!(source_of(report, "profile"), "environment SHOAL_PROFILE");
    let tests = tests_of(report);
    assert_eq!(
        attempts_of(&tests),
        [
            ("tests/e2e/test_checkout.py::test_pay", "flaky", 2),
            ("tests/e2e/test_checkout.py::test_refund", "failed", 3),
            ("tests/e2e/test_quick.py::test_ping", "timeout", 0),
        ],
        "only e2e-marked tests; two reruns by the marker override, none and 1s for the quick ones"
    );
    assert!(tests[2].3.contains("timed out after 1s"), "{}", tests[2].3);
    assert_eq!(report["run"]["settings"]["marker-expression"]["value"], "e2e");
}

/// `shoal config` lines as `key -> (value, source)`.
fn config_lines(outcome: &Outcome) -> std::collections::BTreeMap<String, (String, String)> {
    outcome
        .stdout
        .lines()
        .filter(|line| !line.starts_with("config file:"))
        .map(|line| {
            let (key, rest) = line.split_once(' ').expect("key value (source)");
            let (value, source) = rest.trim().rsplit_once("  (").expect("a source");
            (key.to_owned(), (value.trim().to_owned(), source.trim_end_matches(')').to_owned()))
        })
        .collect()
}

#[test]
fn shoal_config_shows_every_values_source_and_lists_the_profiles() {
    let project = Project::fixture("profiles");
    let outcome = project.shoal_with_env(&[("SHOAL_PROFILE", "slow")], &["config", "-n", "3"]);
    outcome.assert_code(0);
    assert!(outcome.stdout.starts_with("config file: "), "{}", outcome.stdout);
    let lines = config_lines(&outcome);
    let at = |text: &str, table: &str| format!("pyproject.toml:{} {table}", line_of(&project, text));
    let expected = [
        ("profile", "slow", "environment SHOAL_PROFILE".to_owned()),
        ("workers", "3", "flag -n".to_owned()),
        ("slow-timeout", "0.5", at("slow-timeout = 0.5", "[tool.shoal.profile.slow]")),
        ("timeout", "60.0", at("timeout = 60", "[tool.shoal.profile.slow]")),
        ("paths", "[\"tests/slow\"]", at("paths = [\"tests/slow\"]", "[tool.shoal.profile.slow]")),
        ("json-report", "report-slow.json", at("json-report = \"report-{profile}.json\"", "[tool.shoal]")),
        ("max-worker-restarts", "8", "default".to_owned()),
        ("budget", "-", "default".to_owned()),
    ];
    for (key, value, source) in expected {
        assert_eq!(lines.get(key), Some(&(value.to_owned(), source)), "{key}:\n{}", outcome.stdout);
    }
    // Inherited from `unit`: its override, with the line of unit's table.
    let (_, source) = &lines["overrides"];
    assert!(source.ends_with("[tool.shoal.profile.unit]"), "{source}");
    assert!(lines.values().all(|(_, source)| !source.is_empty()));

    let profiles = project.shoal(&["config", "--profiles"]);
    profiles.assert_code(0);
    let names: Vec<&str> =
        profiles.stdout.lines().map(|line| line.split_whitespace().next().unwrap_or("")).collect();
    assert_eq!(names, ["e2e", "slow", "unit"], "{}", profiles.stdout);
    assert!(profiles.stdout.contains("inherits unit"), "{}", profiles.stdout);
}

#[test]
fn a_misspelt_key_names_its_file_and_line_and_an_unknown_profile_the_known_ones() {
    let project = Project::fixture("profiles");
    let pyproject = std::fs::read_to_string(project.path().join("pyproject.toml")).expect("pyproject.toml");
    let misspelt = pyproject.replace("timeout = 60\n", "timout = 60\n");
    project.write("pyproject.toml", &misspelt);
    let line = line_of(&project, "timout = 60");
    let outcome = project.shoal(&["config", "--profile", "slow"]);
    outcome.assert_code(0);
    let expected = format!(
        "{}: line {line}: [tool.shoal.profile.slow] has an unknown key `timout`",
        project.path().join("pyproject.toml").display()
    );
    assert!(outcome.stderr.contains(&expected), "{expected}\n{}", outcome.stderr);

    project.write("pyproject.toml", pyproject.replace("timeout = 60\n", "timeout = \"soon\"\n"));
    let wrong = project.shoal(&["run", "--profile", "slow"]);
    wrong.assert_code(4);
    assert!(
        wrong.stderr.contains(&format!(
            "line {line}: [tool.shoal.profile.slow] timeout: invalid value: string \"soon\""
        )),
        "{}",
        wrong.stderr
    );

    project.write("pyproject.toml", &pyproject);
    let unknown = project.shoal(&["run", "--profile", "nightly"]);
    unknown.assert_code(4);
    assert!(
        unknown.stderr.contains("no profile `nightly` (known profiles: e2e, slow, unit)"),
        "{}",
        unknown.stderr
    );
}

#[test]
fn a_standalone_shoal_toml_has_the_same_keys_without_the_prefix() {
    let project = Project::empty();
    project.write("shoal.toml", "workers = 2\n\n[profile.ci]\nreruns = 3\n");
    let outcome = project.shoal(&["config", "--profile", "ci"]);
    outcome.assert_code(0);
    let lines = config_lines(&outcome);
    assert_eq!(lines["reruns"], ("3".to_owned(), "shoal.toml:4 [profile.ci]".to_owned()));
    assert_eq!(lines["workers"], ("2".to_owned(), "shoal.toml:1 shoal.toml's top level".to_owned()));
}

#[test]
fn a_test_past_its_slow_timeout_gets_its_slow_line_while_it_still_runs() {
    let project = Project::fixture("profiles");
    let mut child = project
        .shoal_command(&["run", "--profile", "slow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("shoal starts");
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut seen = Vec::new();
    for line in stdout.lines() {
        let line = line.expect("a line");
        seen.push(line.clone());
        if line == "SLOW [>0.5s] tests/slow/test_wait.py::test_waits_for_the_harness" {
            // The test waits for this file: it can only pass if the line
            // came while it ran.
            std::fs::write(project.path().join("slow-seen"), "").expect("write");
        }
    }
    let status = child.wait().expect("shoal ends");
    assert_eq!(status.code(), Some(0), "{}", seen.join("\n"));
    assert!(project.path().join("slow-seen").exists(), "no SLOW line:\n{}", seen.join("\n"));
}

/// The fixture with the documented configuration as its pyproject.toml.
fn documented_project() -> Project {
    let project = Project::fixture("profiles");
    project.write(
        "pyproject.toml",
        documented_block("profiles.md", "The origin CI job as two profiles", "toml"),
    );
    project
}

/// A documented job's command `line` for `profile`, with the report it
/// writes.
fn run_documented(project: &Project, profile: &str, line: &str, env: &[(&str, &str)]) -> Report {
    project.report_from(format!("reports/{profile}.json"), || project.sh(line, env))
}

/// The node ids and outcomes of a report written by a documented job.
fn documented_report(project: &Project, profile: &str, run: &Report) -> Vec<(String, String)> {
    let report = &run.json;
    assert_eq!(report["run"]["profile"], profile);
    assert!(project.path().join(format!("reports/{profile}.xml")).exists(), "the JUnit file");
    tests_of(report).into_iter().map(|(nodeid, outcome, _, _)| (nodeid, outcome)).collect()
}

/// What the documented profiles give on the fixture.
fn expected(profile: &str) -> Vec<(String, String)> {
    let tests: &[(&str, &str)] = if profile == "unit" {
        &[
            ("tests/e2e/test_checkout.py::test_helper_unmarked", "passed"),
            ("tests/unit/test_db.py::test_query", "passed"),
            ("tests/unit/test_math.py::test_add", "passed"),
            ("tests/unit/test_math.py::test_hangs", "passed"),
            ("tests/unit/test_math.py::test_sub", "passed"),
        ]
    } else {
        &[
            ("tests/e2e/test_checkout.py::test_pay", "flaky"),
            ("tests/e2e/test_checkout.py::test_refund", "failed"),
            ("tests/e2e/test_quick.py::test_ping", "passed"),
        ]
    };
    tests.iter().map(|(nodeid, outcome)| ((*nodeid).to_owned(), (*outcome).to_owned())).collect()
}

#[test]
fn the_documented_github_actions_jobs_run_locally() {
    let block = documented_block("profiles.md", "GitHub Actions", "yaml");
    let commands: Vec<&str> = block
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- run: "))
        .filter(|line| line.starts_with("shoal "))
        .collect();
    assert_eq!(commands, ["shoal run --profile ${{ matrix.profile }}"]);
    let project = documented_project();
    for (profile, code) in [("unit", 0), ("e2e", 1)] {
        let line = commands[0].replace("${{ matrix.profile }}", profile);
        let run = run_documented(&project, profile, &line, &[]);
        run.outcome.assert_code(code);
        assert_eq!(documented_report(&project, profile, &run), expected(profile), "{profile}");
    }
}

#[test]
fn the_documented_gitlab_jobs_run_locally() {
    let block = documented_block("profiles.md", "GitLab CI", "yaml");
    let commands: Vec<&str> = block
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- "))
        .filter(|line| line.starts_with("shoal "))
        .collect();
    assert_eq!(commands, ["shoal run"]);
    let profiles: Vec<&str> =
        block.lines().filter_map(|line| line.trim().strip_prefix("SHOAL_PROFILE: ")).collect();
    assert_eq!(profiles, ["unit", "e2e"]);
    let project = documented_project();
    for profile in profiles {
        let run = run_documented(&project, profile, commands[0], &[("SHOAL_PROFILE", profile)]);
        let outcome = &run.outcome;
        assert!(matches!(outcome.code, Some(0 | 1)), "{}\n{}", outcome.stdout, outcome.stderr);
        assert_eq!(documented_report(&project, profile, &run), expected(profile), "{profile}");
    }
}
