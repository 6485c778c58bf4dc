//! What newer Pythons change: 3.12 warns when a process with other threads
//! forks, and coverage.py may measure with `sys.monitoring` (3.12+). Run on
//! every interpreter of scripts/test.sh's matrix.

use crate::harness::{Project, python_output};

/// The test interpreter's `(major, minor)`.
fn python_version() -> (u32, u32) {
    let text = python_output("import sys; print('%d %d' % sys.version_info[:2])");
    let (major, minor) = text.split_once(' ').expect("two numbers");
    (major.parse().expect("a major version"), minor.parse().expect("a minor version"))
}

const FORKING_TESTS: &str = r#"import os
import warnings


def threads():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("Threads:"))


def test_a_fork_in_a_test_warns_nothing():
    # Python 3.12+ warns (DeprecationWarning) when a process with other
    # threads forks: the worker must have no thread a test did not start.
    assert threads() == 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pid = os.fork()
        if pid == 0:
            os._exit(0)
    os.waitpid(pid, 0)
    assert [str(warning.message) for warning in caught] == []


def test_after_the_fork():
    assert threads() == 1
"#;

#[test]
fn a_test_that_forks_finds_its_worker_single_threaded() {
    let project = Project::empty();
    project.write("test_forking.py", FORKING_TESTS);
    let pytest = project.pytest(&["-p", "no:cacheprovider", "-W", "error::DeprecationWarning"]);
    pytest.assert_code(0);
    assert_eq!(pytest.closing_counts(), "2 passed");
    for mode in ["fork", "spawn"] {
        let shoal = project.shoal(&[
            "run",
            "-n",
            "2",
            "--mode",
            mode,
            "--timeout",
            "60",
            "--",
            "-W",
            "error::DeprecationWarning",
        ]);
        shoal.assert_code(0);
        assert_eq!(shoal.closing_counts(), "2 passed", "{mode} mode:\n{}", shoal.stdout);
    }
}

#[test]
fn coverage_measured_with_sys_monitoring_equals_pytest_covs() {
    if python_version() < (3, 12) {
        // sys.monitoring is new in 3.12; coverage.py uses its C tracer before.
        return;
    }
    let project = Project::fixture("coverage");
    // Proof that the measuring core is sys.monitoring, in every process.
    project.write(
        "tests/test_core.py",
        "import sys\n\n\ndef test_measured_with_sys_monitoring():\n    \
         assert sys.monitoring.get_tool(sys.monitoring.COVERAGE_ID) == \"coverage.py\"\n",
    );
    let sysmon = [("COVERAGE_CORE", "sysmon")];
    // coverage.py's sys.monitoring core keeps recording a function paused
    // with `no_cover` if the function ran before in the same process (under
    // pytest-cov too), so the pause is left out: what it measures would
    // depend on which tests share a worker.
    let deselect = "not test_not_measured";
    project
        .pytest_with_env(
            &sysmon,
            &["-k", deselect, "--cov=covpkg", "--cov-report=json:pytest.json", "-p", "no:cacheprovider"],
        )
        .assert_code(0);
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(project.path().join("pytest.json")).expect("pytest.json"),
    )
    .expect("coverage JSON");
    assert!(expected["totals"]["missing_lines"].as_u64() > Some(0), "{expected:#}");
    for mode in ["fork", "spawn"] {
        let report = format!("--cov-report=json:shoal-{mode}.json");
        let outcome = project.shoal_with_env(
            &sysmon,
            &["run", "-n", "2", "--mode", mode, "-k", deselect, "--cov=covpkg", &report],
        );
        outcome.assert_code(0);
        assert_eq!(outcome.closing_counts(), "11 passed, 1 deselected", "{mode} mode:\n{}", outcome.stdout);
        let measured: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(project.path().join(format!("shoal-{mode}.json")))
                .expect("shoal's JSON"),
        )
        .expect("coverage JSON");
        assert_eq!(measured["files"], expected["files"], "{mode} mode: the files differ");
        assert_eq!(measured["totals"], expected["totals"], "{mode} mode: the totals differ");
    }
}
