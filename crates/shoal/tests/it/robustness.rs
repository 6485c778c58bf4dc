//! A bad test hurts that test alone: hangs (in Python and stuck in C,
//! ignoring SIGTERM) time out with a stack dump, leaked processes are killed
//! and named, floods of raw output and enormous messages do not break the
//! run, a worker over its memory limit is replaced, and Ctrl-C stops the run
//! cleanly. The tests run `fixtures/hostile`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::Project;

const HOSTILE: (&str, &str) = ("SHOAL_FIXTURE_ALLOW_HOSTILE", "1");

/// Processes whose command line contains `needle` (other than pgrep).
fn processes_named(needle: &str) -> Vec<String> {
    let output = Command::new("pgrep").args(["-af", needle]).output().expect("pgrep runs");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| !line.contains("pgrep"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn hangs_time_out_with_a_stack_dump_and_the_rest_still_runs() {
    let project = Project::fixture("hostile");
    let started = Instant::now();
    let report =
        project.shoal_report(&[HOSTILE], &["-n", "2", "-k", "passes or hangs or stuck", "--timeout", "30"]);
    let elapsed = started.elapsed();
    report.outcome.assert_code(1);
    let outcomes = report.outcomes();
    assert_eq!(outcomes["test_hostile.py::test_hangs_in_python"], "timeout", "{}", report.outcome.stdout);
    assert_eq!(outcomes["test_hostile.py::test_stuck_in_c_ignoring_sigterm"], "timeout");
    assert_eq!(outcomes["test_hostile.py::test_a_passes_first"], "passed");
    assert_eq!(outcomes["test_hostile.py::test_z_passes_last"], "passed");
    // The marker's 1 s wins over --timeout 30; the tests would sleep 60 s.
    assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");
    let failure =
        report.test("test_hostile.py::test_hangs_in_python")["failure"].as_str().unwrap_or_default();
    assert!(failure.contains("timed out after 1s"), "{failure}");
    assert!(
        failure.contains("test_hangs_in_python"),
        "the stack dump shows where the test was stuck:\n{failure}"
    );
    assert!(failure.contains("about to hang"), "the output captured so far is kept:\n{failure}");
    let stuck = report.test("test_hostile.py::test_stuck_in_c_ignoring_sigterm")["failure"]
        .as_str()
        .unwrap_or_default();
    assert!(stuck.contains("test_stuck_in_c_ignoring_sigterm"), "{stuck}");
    let closing = report.outcome.closing_map();
    assert_eq!(closing.get("timeout"), Some(&2), "{}", report.outcome.stdout);
    assert!(
        report.outcome.stdout.contains("TIMEOUT test_hostile.py::test_hangs_in_python - timed out after 1s")
    );
}

#[test]
fn the_command_line_timeout_applies_to_tests_without_a_marker() {
    let project = Project::empty();
    project.write("pytest.ini", "[pytest]\naddopts = -p no:cacheprovider\n");
    project.write(
        "test_slow.py",
        "import time\n\ndef test_slow():\n    time.sleep(30)\n\ndef test_quick():\n    pass\n",
    );
    let report = project.shoal_report(&[], &["-n", "1", "--timeout", "1"]);
    report.outcome.assert_code(1);
    let outcomes = report.outcomes();
    assert_eq!(outcomes["test_slow.py::test_slow"], "timeout", "{}", report.outcome.stdout);
    assert_eq!(outcomes["test_slow.py::test_quick"], "passed");
}

#[test]
fn a_leaked_child_process_is_killed_and_its_test_named() {
    let project = Project::fixture("hostile");
    let marker = format!("shoal-it-leak-{}", std::process::id());
    let report = project.shoal_report(
        &[HOSTILE, ("SHOAL_FIXTURE_LEAK_MARKER", &marker)],
        &["-n", "1", "-k", "leaks or passes"],
    );
    report.outcome.assert_code(0);
    assert!(
        report.outcome.stdout.contains("test_hostile.py::test_leaks_a_child_process left 1 process running"),
        "the summary names the test that leaked:\n{}",
        report.outcome.stdout
    );
    // SIGKILL is sent as the worker ends; give the kernel a moment to finish it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_named(&marker).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        processes_named(&marker).is_empty(),
        "the leaked process survived: {:?}",
        processes_named(&marker)
    );
}

#[test]
fn floods_of_raw_output_and_huge_messages_do_not_break_the_run() {
    let project = Project::fixture("hostile");
    let report = project.shoal_report(&[HOSTILE], &["-n", "2", "-k", "floods or huge or passes"]);
    report.outcome.assert_code(1);
    let outcomes = report.outcomes();
    assert_eq!(outcomes["test_hostile.py::test_floods_raw_output"], "passed");
    assert_eq!(outcomes["test_hostile.py::test_huge_assertion_message"], "failed");
    let failure =
        report.test("test_hostile.py::test_huge_assertion_message")["failure"].as_str().unwrap_or_default();
    assert!(failure.contains("more characters cut]"), "a cut is said, not silent");
    assert!(failure.len() < 1_000_000, "the stored text is bounded: {} bytes", failure.len());
    let peak = report.json["run"]["shoal_peak_rss_kib"].as_u64().expect("shoal's peak memory");
    assert!(peak < 200 * 1024, "shoal's memory stays bounded: {peak} KiB");
}

#[test]
fn a_worker_over_the_memory_limit_is_replaced_before_its_next_test() {
    let project = Project::fixture("hostile");
    let report = project
        .shoal_report(&[HOSTILE], &["-n", "1", "-k", "grows or passes", "--worker-memory-limit", "150M"]);
    report.outcome.assert_code(0);
    assert!(report.outcomes().values().all(|outcome| *outcome == "passed"), "{}", report.outcome.stdout);
    assert!(
        report.outcome.stdout.contains("worker gw0 was replaced")
            && report.outcome.stdout.contains("test_hostile.py::test_grows_memory"),
        "the summary says which worker was replaced after which test:\n{}",
        report.outcome.stdout
    );
}

#[test]
fn ctrl_c_stops_the_run_reports_what_finished_and_leaves_no_process() {
    let project = Project::empty();
    project.write("pytest.ini", "[pytest]\naddopts = -p no:cacheprovider\n");
    let tests: String =
        (0..20).map(|index| format!("\ndef test_{index:02}():\n    time.sleep(0.5)\n")).collect();
    project.write("test_sleepy.py", format!("import time\n{tests}"));
    let report_path = project.path().join("report.json");
    let mut command =
        project.shoal_command(&["run", "-n", "2", "--json-report", report_path.to_str().unwrap()]);
    let child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("shoal starts");
    std::thread::sleep(Duration::from_millis(2500));
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("a pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT is sent");
    let output = child.wait_with_output().expect("shoal ends");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("KeyboardInterrupt"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).expect("the report was written"))
            .expect("a JSON report");
    let tests = report["tests"].as_array().expect("tests");
    assert_eq!(tests.len(), 20, "every test is accounted for");
    let passed = tests.iter().filter(|test| test["outcome"] == "passed").count();
    let interrupted = tests.iter().filter(|test| test["reason"] == "interrupted").count();
    assert!(passed > 0 && interrupted > 0, "{passed} passed, {interrupted} interrupted");
    assert_eq!(passed + interrupted, 20);
    assert!(
        processes_in(project.path()).is_empty(),
        "processes outlived shoal: {:?}",
        processes_in(project.path())
    );
}

#[test]
fn workers_do_not_outlive_a_shoal_that_is_killed_outright() {
    let project = Project::empty();
    project.write("pytest.ini", "[pytest]\naddopts = -p no:cacheprovider\n");
    project.write(
        "test_sleepy.py",
        "import time\n\ndef test_a():\n    time.sleep(30)\n\ndef test_b():\n    time.sleep(30)\n",
    );
    for mode in ["fork", "spawn"] {
        let mut command = project.shoal_command(&["run", "-n", "2", "--mode", mode]);
        let mut child = command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("shoal starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        let workers = || {
            processes_in(project.path())
                .into_iter()
                .filter(|pid| {
                    std::fs::read(format!("/proc/{pid}/cmdline"))
                        .is_ok_and(|line| String::from_utf8_lossy(&line).contains("shoal_worker"))
                })
                .count()
        };
        // Fork mode: the zygote and two workers; spawn mode: two workers.
        let expected = if mode == "fork" { 3 } else { 2 };
        while workers() < expected && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(workers(), expected, "{mode}: the workers never started");
        child.kill().expect("SIGKILL is sent");
        child.wait().expect("shoal is reaped");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !processes_in(project.path()).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(processes_in(project.path()).is_empty(), "{mode}: workers outlived shoal");
    }
}

/// Process ids whose working directory is `directory` (the workers of a
/// run in a test project).
fn processes_in(directory: &std::path::Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == directory))
        .collect()
}

#[test]
fn when_the_zygote_dies_replacements_are_spawned_and_the_run_goes_on() {
    // The first test kills the zygote (its worker's parent) and then its own
    // worker: the replacement can no longer be forked.
    let project = Project::empty();
    project.write(
        "test_zygote.py",
        "import os, signal\n\n\
         def test_a_kills_the_zygote_then_itself():\n    \
             os.kill(os.getppid(), signal.SIGKILL)\n    \
             os._exit(3)\n\n\
         def test_b_runs_on_a_spawned_replacement():\n    \
             assert True\n",
    );
    let report = project.shoal_report(&[], &["-n", "1", "--mode", "fork"]);
    report.outcome.assert_code(1);
    let outcomes = report.outcomes();
    assert_eq!(
        outcomes["test_zygote.py::test_a_kills_the_zygote_then_itself"], "crashed",
        "{}",
        report.outcome.stderr
    );
    assert_eq!(
        outcomes["test_zygote.py::test_b_runs_on_a_spawned_replacement"], "passed",
        "{}",
        report.outcome.stderr
    );
}
