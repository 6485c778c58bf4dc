//! `shoal replay REPORT.json NODEID`: reproduce an outcome that depends on
//! test order. A run's JSON report keeps which worker ran each test and
//! when; the test is run again in one pytest process, in this terminal,
//! after the tests its worker ran before it, in the same order.
//!
//! A subcommand rather than `shoal run --replay`: it runs one process with
//! one order read from a report, and none of a run's options applies.

use std::path::{Path, PathBuf};

use crate::errors::{ShoalError, exit_code};
use crate::python::Interpreter;
use crate::report::json::format::{Document, TestEntry};

/// What `shoal replay` was given.
#[derive(Debug, Clone)]
pub struct ReplayInputs {
    /// The run's `--json-report` file.
    pub report: PathBuf,
    /// The test to reproduce.
    pub nodeid: String,
    /// The interpreter with pytest.
    pub interpreter: Interpreter,
    /// Where to run pytest (the run's directory).
    pub cwd: PathBuf,
    /// Print the command instead of running it.
    pub print_only: bool,
    /// More arguments for pytest.
    pub pytest_args: Vec<String>,
}

/// Runs (or prints) the replay; returns pytest's exit code.
pub fn replay(inputs: &ReplayInputs) -> Result<u8, ShoalError> {
    let order = order_before(&read(&inputs.report)?, &inputs.nodeid)
        .map_err(|message| ShoalError::Usage(format!("{}: {message}", inputs.report.display())))?;
    let mut arguments = vec!["-p".to_owned(), "no:randomly".to_owned()];
    arguments.extend(inputs.pytest_args.iter().cloned());
    arguments.extend(order.tests.iter().cloned());
    let shown = [inputs.interpreter.path.display().to_string(), "-m".to_owned(), "pytest".to_owned()]
        .into_iter()
        .chain(arguments.iter().map(|argument| shell_quoted(argument)))
        .collect::<Vec<_>>()
        .join(" ");
    if inputs.print_only {
        println!("{shown}");
        return Ok(exit_code::OK);
    }
    crate::output::notice(&format!(
        "replaying {} after the {} test{} {} ran before it, in one pytest process: {shown}",
        inputs.nodeid,
        order.tests.len() - 1,
        if order.tests.len() == 2 { "" } else { "s" },
        order.worker
    ));
    inputs.interpreter.run_pytest_here(&arguments, &inputs.cwd)
}

fn read(path: &Path) -> Result<Document<'static>, ShoalError> {
    let text =
        std::fs::read(path).map_err(|error| ShoalError::io(format!("reading {}", path.display()), error))?;
    serde_json::from_slice(&text)
        .map_err(|error| ShoalError::Usage(format!("{}: not a shoal JSON report ({error})", path.display())))
}

/// The tests to run, in order, ending with the one to reproduce.
#[derive(Debug, PartialEq)]
struct Order {
    worker: String,
    tests: Vec<String>,
}

/// The tests `nodeid`'s worker ran before it (by their start), then it.
fn order_before(report: &Document<'_>, nodeid: &str) -> Result<Order, String> {
    let target = report
        .tests
        .iter()
        .find(|test| test.nodeid == nodeid)
        .ok_or_else(|| format!("no test {nodeid} among its {} tests", report.tests.len()))?;
    let worker = target.worker.clone().ok_or_else(|| format!("{nodeid} did not run in that run"))?;
    let mut before: Vec<&TestEntry<'_>> = report
        .tests
        .iter()
        .filter(|test| test.worker.as_deref() == Some(worker.as_str()) && test.started < target.started)
        .collect();
    before.sort_by(|a, b| a.started.total_cmp(&b.started));
    let tests = before.iter().map(|test| test.nodeid.to_string()).chain([nodeid.to_owned()]).collect();
    Ok(Order { worker, tests })
}

/// An argument as a shell would need it to be typed.
fn shell_quoted(argument: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./:=@,+".contains(c);
    if !argument.is_empty() && argument.chars().all(plain) {
        argument.to_owned()
    } else {
        format!("'{}'", argument.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(tests: &[(&str, Option<&str>, f64)]) -> Document<'static> {
        let entries: Vec<serde_json::Value> = tests
            .iter()
            .map(|(nodeid, worker, started)| {
                serde_json::json!({"nodeid": nodeid, "outcome": "passed", "duration": 0.1, "started": started,
                    "setup_duration": 0.0, "call_duration": 0.1, "teardown_duration": 0.0, "worker": worker,
                    "path": "t.py", "markers": []})
            })
            .collect();
        let mut document = serde_json::from_str::<serde_json::Value>(
            r#"{"format_version": 1, "run": {"python": "3", "pytest": "9", "workers": 2, "mode": "fork",
                "started_at": "2026-12-02T00:00:00Z", "wall_seconds": 1.0, "exit_code": 1, "hash_seed": "1",
                "test_seconds": 1.0, "lower_bound_seconds": 1.0, "startup_seconds": 0.1}, "summary": {},
                "tests": [], "collect_errors": []}"#,
        )
        .expect("a report");
        document["tests"] = serde_json::Value::Array(entries);
        serde_json::from_value(document).expect("a report shoal reads")
    }

    #[test]
    fn the_order_is_what_the_tests_worker_ran_before_it() {
        let report = report(&[
            ("t.py::c", Some("gw0"), 2.0),
            ("t.py::a", Some("gw0"), 0.5),
            ("t.py::other", Some("gw1"), 0.1),
            ("t.py::victim", Some("gw0"), 3.0),
            ("t.py::later", Some("gw0"), 4.0),
        ]);
        assert_eq!(
            order_before(&report, "t.py::victim"),
            Ok(Order {
                worker: "gw0".to_owned(),
                tests: vec!["t.py::a".into(), "t.py::c".into(), "t.py::victim".into()]
            })
        );
        assert!(order_before(&report, "t.py::missing").unwrap_err().contains("no test t.py::missing"));
        let not_run = self::report(&[("t.py::x", None, 0.0)]);
        assert!(order_before(&not_run, "t.py::x").unwrap_err().contains("did not run"));
    }

    #[test]
    fn arguments_are_shown_as_a_shell_takes_them() {
        assert_eq!(shell_quoted("t.py::test[a b]"), "'t.py::test[a b]'");
        assert_eq!(shell_quoted("t.py::test_x"), "t.py::test_x");
        assert_eq!(shell_quoted("it's"), r"'it'\''s'");
    }
}
