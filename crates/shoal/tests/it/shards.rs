//! Sharding over CI machines, with N shards run here one after another:
//! every collected test runs in exactly one shard, merging gives the counts
//! of one unsharded run, the partition is the same in separate processes
//! whatever the collection order, `--shard auto` reads each CI's
//! variables, `merge` refuses reports that do not belong together, and the
//! workflows of `docs/sharding.md` work as written.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::harness::{Outcome, Project, Report, documented_block};
use crate::report_json::schema_mismatches;

/// The tests of `fixtures/shards`.
const SHARDS_FIXTURE_TESTS: usize = 31;

/// `shoal run --shard <spec> --json-report <name>` (plus `extra`), with
/// its report.
fn run_shard(project: &Project, spec: &str, name: &str, env: &[(&str, &str)], extra: &[&str]) -> Report {
    let mut args = vec!["run", "--shard", spec, "--json-report", name];
    args.extend_from_slice(extra);
    project.report_from(name, || project.shoal_with_env(env, &args))
}

fn path_arg(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// `shard k/N: T tests ...` lines of `shoal plan`: T per shard.
fn planned_counts(plan: &Outcome) -> Vec<usize> {
    plan.stdout
        .lines()
        .filter(|line| line.starts_with("shard "))
        .map(|line| {
            let (_, rest) = line.split_once(": ").expect("shard k/N: ...");
            rest.split_whitespace().next().expect("a count").parse().expect("a number")
        })
        .collect()
}

#[test]
fn every_test_runs_in_one_shard_and_merging_gives_the_unsharded_counts() {
    let fail = [("SHOAL_SHARDS_FAIL", "1")];
    let project = Project::fixture("shards");
    let collected: BTreeSet<String> = project.pytest_node_ids(&[]).into_iter().collect();
    assert_eq!(collected.len(), SHARDS_FIXTURE_TESTS);
    let history_before =
        std::fs::read(project.path().join(".test_durations")).expect("the fixture's history");

    let plan = project.shoal(&["plan", "--shards", "3"]);
    plan.assert_code(0);
    let planned = planned_counts(&plan);
    assert_eq!(planned.len(), 3, "{}", plan.stdout);

    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut reports = Vec::new();
    for shard in 1..=3 {
        let name = format!("shard-{shard}.json");
        let run = run_shard(&project, &format!("{shard}/3"), &name, &fail, &["-n", "2"]);
        let (outcome, report) = (&run.outcome, &run.json);
        let ids = run.node_ids();
        assert!(!ids.is_empty(), "shard {shard} is empty");
        assert_eq!(ids.len(), planned[shard - 1], "shard {shard} runs what plan said");
        let failed = ids.contains(&"test_failing.py::test_sometimes_fails");
        outcome.assert_code(if failed { 1 } else { 0 });
        assert_eq!(
            outcome.closing_map().get("deselected").copied(),
            Some((SHARDS_FIXTURE_TESTS - ids.len()) as u64)
        );
        assert!(
            outcome.stderr.contains(&format!("shard {shard}/3: {} of 31 tests", ids.len())),
            "{}",
            outcome.stderr
        );
        assert_eq!(report["run"]["shard"]["index"], shard);
        assert_eq!(report["run"]["shard"]["total"], 3);
        assert_eq!(report["run"]["shard"]["collected"], SHARDS_FIXTURE_TESTS);
        assert_eq!(schema_mismatches(&project, &project.path().join(&name)), None);
        for id in ids {
            if let Some(other) = seen.insert(id.to_owned(), shard) {
                panic!("{id} ran in shard {other} and in shard {shard}");
            }
        }
        reports.push(name);
    }
    assert_eq!(seen.keys().cloned().collect::<BTreeSet<_>>(), collected, "every test runs in one shard");
    // The module with a costly module-scoped fixture stays on one shard.
    let db_shards: BTreeSet<usize> =
        seen.iter().filter(|(id, _)| id.starts_with("test_db.py::")).map(|(_, &shard)| shard).collect();
    assert_eq!(db_shards.len(), 1, "{seen:#?}");
    assert_eq!(
        std::fs::read(project.path().join(".test_durations")).expect("the history"),
        history_before,
        "shards leave the history to merge"
    );

    let mut merge = vec!["merge"];
    merge.extend(reports.iter().map(String::as_str));
    merge.extend([
        "--json-report",
        "merged.json",
        "--junitxml",
        "merged.xml",
        "--durations-path",
        ".test_durations",
    ]);
    let merged = project.report_from("merged.json", || project.shoal(&merge));
    merged.outcome.assert_code(1);
    assert_eq!(schema_mismatches(&project, &project.path().join("merged.json")), None);
    assert!(merged.json["run"].get("shard").is_none(), "a merged report is a whole run");

    let whole = Project::fixture("shards");
    let unsharded = whole.shoal_report(&fail, &["-n", "2", "--junitxml", "whole.xml"]);
    unsharded.outcome.assert_code(1);
    assert_eq!(merged.json["summary"], unsharded.json["summary"]);
    assert_eq!(
        merged.node_ids().into_iter().collect::<BTreeSet<_>>(),
        unsharded.node_ids().into_iter().collect::<BTreeSet<_>>()
    );
    let ours = crate::junit::parse(&project.path().join("merged.xml"));
    let theirs = crate::junit::parse(&whole.path().join("whole.xml"));
    assert_eq!(ours, theirs, "the merged JUnit file has the unsharded run's cases and counts");

    let history: BTreeMap<String, f64> = serde_json::from_str(
        &std::fs::read_to_string(project.path().join(".test_durations")).expect("the merged history"),
    )
    .expect("pytest-split's format");
    for id in ["test_words.py::test_word[fig]", "test_failing.py::test_sometimes_fails"] {
        assert!(history.contains_key(id), "{id} was measured: {history:#?}");
    }
    assert!(!history.contains_key("test_models.py::test_skipped"), "skipped runs are not recorded");
    assert!(history.contains_key("test_gone.py::test_removed"), "merge prunes nothing");
    let before: BTreeMap<String, f64> =
        serde_json::from_slice(&history_before).expect("the fixture's history");
    let slow = "pkg/test_slow.py::test_slow_one";
    let (old, new) = (before[slow], history[slow]);
    let sample = merged.test(slow)["duration"].as_f64().expect("the slow test's measured duration");
    // Strictly between the old estimate and the new sample (how far depends
    // on the sample, which a loaded machine stretches).
    assert!(
        new != old && (new - old).abs() < (sample - old).abs(),
        "smoothed towards the new sample {sample}: {old} -> {new}"
    );
}

#[test]
fn the_partition_is_the_same_in_separate_processes_whatever_the_collection_order() {
    let project = Project::fixture("shards");
    let listed = |seed: &str| project.shoal_with_env(&[("PYTHONHASHSEED", seed)], &["list"]).stdout;
    assert_ne!(listed("1"), listed("2"), "the two seeds collect test_words.py in different orders");
    let shard_ids = |seed: &str, name: &str| {
        let run = run_shard(&project, "2/3", name, &[("PYTHONHASHSEED", seed)], &["-n", "1"]);
        run.outcome.assert_code(0);
        run.node_ids().into_iter().map(str::to_owned).collect::<BTreeSet<_>>()
    };
    assert_eq!(shard_ids("1", "first.json"), shard_ids("2", "second.json"));
    let plan = |seed: &str| {
        let outcome = project.shoal_with_env(&[("PYTHONHASHSEED", seed)], &["plan", "--shards", "4"]);
        outcome.assert_code(0);
        outcome.stdout
    };
    assert_eq!(plan("1"), plan("2"));
}

#[test]
fn an_empty_shard_exits_0_with_a_notice() {
    let project = Project::fixture("allpass");
    let empty = run_shard(&project, "7/7", "empty.json", &[], &["-n", "1"]);
    let outcome = &empty.outcome;
    outcome.assert_code(0);
    assert!(outcome.stderr.contains("shard 7/7 has no tests: 6 tests over 7 shards"), "{}", outcome.stderr);
    assert_eq!(outcome.closing_counts(), "6 deselected");
    assert_eq!(empty.node_ids().len(), 0);
    // With as many shards as tests, none is empty.
    for shard in 1..=6 {
        let one = run_shard(&project, &format!("{shard}/6"), "one.json", &[], &["-n", "1"]);
        one.outcome.assert_code(0);
        assert_eq!(one.node_ids().len(), 1, "shard {shard}/6");
    }
}

/// A CI system's shard variables and the shard they mean.
struct AutoCase<'a> {
    system: &'a str,
    env: &'a [(&'a str, &'a str)],
    extra: &'a [&'a str],
    /// `(K, N)`, 1-based.
    shard: (u64, u64),
}

#[test]
fn shard_auto_reads_each_ci_systems_variables() {
    let project = Project::fixture("allpass");
    let status_file = project.path().join("bazel-shard-status");
    let status = path_arg(&status_file).to_owned();
    let cases = [
        AutoCase {
            system: "GitLab",
            env: &[("CI_NODE_INDEX", "2"), ("CI_NODE_TOTAL", "3")],
            extra: &[],
            shard: (2, 3),
        },
        AutoCase {
            system: "CircleCI",
            env: &[("CIRCLE_NODE_INDEX", "0"), ("CIRCLE_NODE_TOTAL", "2")],
            extra: &[],
            shard: (1, 2),
        },
        AutoCase {
            system: "Buildkite",
            env: &[("BUILDKITE_PARALLEL_JOB", "2"), ("BUILDKITE_PARALLEL_JOB_COUNT", "3")],
            extra: &[],
            shard: (3, 3),
        },
        AutoCase {
            system: "Bazel",
            env: &[
                ("TEST_SHARD_INDEX", "1"),
                ("TEST_TOTAL_SHARDS", "2"),
                ("TEST_SHARD_STATUS_FILE", &status),
            ],
            extra: &[],
            shard: (2, 2),
        },
        AutoCase {
            system: "Kubernetes",
            env: &[("JOB_COMPLETION_INDEX", "0")],
            extra: &["--shard-total", "3"],
            shard: (1, 3),
        },
    ];
    for AutoCase { system, env, extra, shard: (index, total) } in cases {
        let mut args = vec!["-n", "1"];
        args.extend_from_slice(extra);
        let run = run_shard(&project, "auto", "auto.json", env, &args);
        let outcome = &run.outcome;
        outcome.assert_code(0);
        let announced = format!("shoal: shard {index}/{total} from {system} ");
        assert_eq!(outcome.stderr.matches(&announced).count(), 1, "{system}: {}", outcome.stderr);
        for (variable, value) in env {
            if *variable != "TEST_SHARD_STATUS_FILE" {
                assert!(outcome.stderr.contains(&format!("{variable}={value}")), "{}", outcome.stderr);
            }
        }
        let shard = &run.json["run"]["shard"];
        assert_eq!((shard["index"].as_u64(), shard["total"].as_u64()), (Some(index), Some(total)));
    }
    assert!(status_file.exists(), "Bazel's TEST_SHARD_STATUS_FILE is touched");
    let nothing = project.shoal(&["run", "--shard", "auto"]);
    nothing.assert_code(4);
    assert!(nothing.stderr.contains("--shard auto: none of"), "{}", nothing.stderr);
}

#[test]
fn merge_refuses_reports_that_do_not_belong_together() {
    let project = Project::fixture("allpass");
    let first = run_shard(&project, "1/2", "first.json", &[], &["-n", "1"]);
    first.outcome.assert_code(0);
    let second = run_shard(&project, "2/2", "second.json", &[], &["-n", "1"]);
    second.outcome.assert_code(0);
    run_shard(&project, "2/2", "other-run.json", &[], &["-n", "1", "-k", "test_one"]).outcome.assert_code(0);
    project.shoal(&["run", "-n", "1", "--json-report", "unsharded.json"]).assert_code(0);
    // Shard 2's report with one of shard 1's tests in it too.
    let mut overlapping = second.json;
    let stolen = first.json["tests"][0].clone();
    overlapping["tests"].as_array_mut().expect("tests").push(stolen.clone());
    std::fs::write(project.path().join("overlapping.json"), overlapping.to_string()).expect("write");

    let refusals: &[(&[&str], &str)] = &[
        (&["first.json", "other-run.json"], "are not shards of one run"),
        (&["first.json", "first.json"], "are both shard 1/2"),
        (&["first.json", "overlapping.json"], "the shards overlap"),
        (&["first.json", "unsharded.json"], "not from a sharded run"),
    ];
    for (reports, message) in refusals {
        let mut args = vec!["merge"];
        args.extend_from_slice(reports);
        let outcome = project.shoal(&args);
        outcome.assert_code(4);
        assert!(outcome.stderr.contains(message), "{reports:?}: {}", outcome.stderr);
    }
    let nodeid = stolen["nodeid"].as_str().expect("a node id");
    let outcome = project.shoal(&["merge", "first.json", "overlapping.json"]);
    assert!(outcome.stderr.contains(nodeid), "the overlapping test is named: {}", outcome.stderr);

    let missing = project.shoal(&["merge", "first.json", "--json-report", "partial.json"]);
    missing.assert_code(2);
    assert!(missing.stderr.contains("no report for shard 2/2"), "{}", missing.stderr);
    let complete = project.report_from("all.json", || {
        project.shoal(&["merge", "second.json", "first.json", "--json-report", "all.json"])
    });
    complete.outcome.assert_code(0);
    assert_eq!(complete.json["summary"]["passed"], 6);
}

/// The `shoal` command lines of the yaml block under `## heading` in
/// `docs/sharding.md`.
fn documented_commands(heading: &str) -> Vec<String> {
    documented_block("sharding.md", heading, "yaml")
        .lines()
        .map(|line| line.trim().trim_start_matches("- ").trim_start_matches("run: ").trim())
        .filter(|line| line.starts_with("shoal "))
        .map(|line| line.split(" #").next().unwrap_or(line).trim().to_owned())
        .collect()
}

#[test]
fn the_documented_github_actions_workflow_runs_locally() {
    let commands = documented_commands("GitHub Actions");
    assert_eq!(commands.len(), 2, "a run and a merge: {commands:?}");
    let project = Project::fixture("shards");
    std::fs::create_dir_all(project.path().join("reports")).expect("mkdir");
    for shard in 1..=4 {
        let line = commands[0].replace("${{ matrix.shard }}", &shard.to_string());
        let outcome = project.sh(&line, &[]);
        assert!(matches!(outcome.code, Some(0 | 1)), "{line}: {}\n{}", outcome.stdout, outcome.stderr);
        // actions/download-artifact with merge-multiple puts them in reports/.
        let name = format!("shard-{shard}.json");
        std::fs::rename(project.path().join(&name), project.path().join("reports").join(&name))
            .expect("move");
    }
    let merged = project.report_from("shoal-report.json", || project.sh(&commands[1], &[]));
    merged.outcome.assert_code(0);
    assert_eq!(merged.node_ids().len(), SHARDS_FIXTURE_TESTS);
    assert_eq!(merged.json["summary"]["passed"], SHARDS_FIXTURE_TESTS - 2);
    assert!(project.path().join("junit.xml").exists());
}

#[test]
fn the_documented_gitlab_pipeline_runs_locally() {
    let commands = documented_commands("GitLab CI");
    assert_eq!(commands.len(), 2, "a run and a merge: {commands:?}");
    let project = Project::fixture("shards");
    for shard in 1..=4 {
        let index = shard.to_string();
        let outcome = project.sh(&commands[0], &[("CI_NODE_INDEX", &index), ("CI_NODE_TOTAL", "4")]);
        outcome.assert_code(0);
        assert!(outcome.stderr.contains(&format!("shard {shard}/4 from GitLab")), "{}", outcome.stderr);
    }
    let merged = project.report_from("shoal-report.json", || project.sh(&commands[1], &[]));
    merged.outcome.assert_code(0);
    assert_eq!(merged.node_ids().len(), SHARDS_FIXTURE_TESTS);
}
