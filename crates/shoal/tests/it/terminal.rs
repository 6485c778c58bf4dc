//! The terminal report's options beyond pytest's shape: `--color` (and
//! `NO_COLOR`), `--failure-output immediate`, and what pytest prints on
//! stderr while starting.

use crate::harness::Project;

const RED: &str = "\x1b[31m";
const GREEN: &str = "\x1b[32m";

#[test]
fn colour_marks_outcomes_only_when_asked() {
    let project = Project::fixture("outcomes");
    let coloured = project.shoal(&["run", "-n", "2", "--color", "always"]);
    coloured.assert_code(1);
    assert!(coloured.stdout.contains(&format!("{GREEN}.\x1b[0m")), "a green pass:\n{}", coloured.stdout);
    assert!(
        coloured.stdout.contains(&format!("{RED}FAILED\x1b[0m test_outcomes.py::test_fail")),
        "{}",
        coloured.stdout
    );
    let closing = coloured.stdout.lines().last().expect("a closing line");
    assert!(
        closing.starts_with("\x1b[1;31m=") && closing.ends_with("\x1b[0m"),
        "a bold red closing rule: {closing:?}"
    );

    // Piped output is plain by default, and NO_COLOR wins over `auto`.
    for outcome in [
        project.shoal(&["run", "-n", "2"]),
        project.shoal_with_env(
            &[("NO_COLOR", "1"), ("FORCE_COLOR", "1")],
            &["run", "-n", "2", "--color", "auto"],
        ),
    ] {
        assert!(!outcome.stdout.contains('\x1b'), "no control codes:\n{}", outcome.stdout);
    }
    let forced = project.shoal_with_env(&[("FORCE_COLOR", "1")], &["run", "-n", "2"]);
    assert!(forced.stdout.contains(RED), "FORCE_COLOR colours piped output:\n{}", forced.stdout);

    let wrong = project.shoal(&["run", "--color", "sometimes"]);
    wrong.assert_code(4);
    assert!(wrong.stderr.contains("--color"), "{}", wrong.stderr);
}

#[test]
fn immediate_failures_print_as_they_happen_and_not_again() {
    let project = Project::fixture("outcomes");
    let outcome = project.shoal(&["run", "-n", "1", "--failure-output", "immediate"]);
    outcome.assert_code(1);
    let stdout = &outcome.stdout;
    let failure = stdout.find("_ test_fail _").unwrap_or_else(|| panic!("the failure is shown:\n{stdout}"));
    let last_progress = stdout.rfind("%]").expect("progress");
    assert!(failure < last_progress, "shown before the run ends:\n{stdout}");
    assert_eq!(stdout.matches("E       assert 2 == 3").count(), 1, "shown once:\n{stdout}");
    assert!(!stdout.contains("= FAILURES ="), "no final section:\n{stdout}");
    assert!(stdout.contains("ERROR at setup of test_setup_error"), "errors too:\n{stdout}");
    assert!(stdout.contains("short test summary info"), "{stdout}");

    let wrong = project.shoal(&["run", "--failure-output", "later"]);
    wrong.assert_code(4);
    assert!(wrong.stderr.contains("--failure-output"), "{}", wrong.stderr);
}

/// Runs `shoal <args>` with its stdout on a pseudo-terminal; returns what
/// it wrote there and its exit code.
fn shoal_on_a_terminal(project: &Project, env: &[(&str, &str)], args: &[&str]) -> (String, Option<i32>) {
    const ON_A_PTY: &str = "import os, pty, subprocess, sys
main, side = pty.openpty()
child = subprocess.Popen(sys.argv[1:], stdout=side, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
os.close(side)
chunks = []
while True:
    try:
        data = os.read(main, 65536)
    except OSError:
        break
    if not data:
        break
    chunks.append(data)
sys.stdout.buffer.write(b''.join(chunks))
sys.exit(child.wait())
";
    let shoal = project.shoal_command(args);
    let mut command = project.python_command();
    command.arg("-c").arg(ON_A_PTY).arg(shoal.get_program()).args(shoal.get_args());
    command.envs(env.iter().copied());
    let output = command.output().expect("python starts");
    (String::from_utf8_lossy(&output.stdout).into_owned(), output.status.code())
}

#[test]
fn on_a_terminal_a_live_footer_replaces_the_letters() {
    let project = Project::fixture("outcomes");
    let (screen, code) = shoal_on_a_terminal(&project, &[], &["run", "-n", "2"]);
    assert_eq!(code, Some(1), "{screen}");
    assert!(screen.contains("\x1b[3A\x1b[J"), "the footer (bar and two workers) is redrawn:\n{screen}");
    assert!(screen.contains("] 11/11  "), "the bar counts every test:\n{screen}");
    assert!(
        screen.contains("\x1b[31mFAILED\x1b[0m test_outcomes.py::test_fail"),
        "a failure as it happens:\n{screen}"
    );
    assert!(screen.contains("  gw1 "), "a line per worker:\n{screen}");
    assert!(screen.contains("short test summary info"), "the usual report follows:\n{screen}");

    // Under CI the terminal gets plain lines: pytest's letters, no redraws.
    let (plain, code) =
        shoal_on_a_terminal(&project, &[("CI", "true")], &["run", "-n", "2", "--color", "never"]);
    assert_eq!(code, Some(1), "{plain}");
    assert!(!plain.contains('\x1b'), "no control codes under CI:\n{plain}");
    assert!(plain.contains("test_outcomes.py ") || plain.contains("[100%]"), "{plain}");
}

#[test]
fn what_pytest_prints_on_stderr_while_starting_is_shown_once() {
    // A plugin's configure-time message (pytest-asyncio's deprecation
    // warning, say) reaches the user under pytest: under shoal too, once,
    // however many workers.
    let project = Project::empty();
    project
        .write(
            "conftest.py",
            "import sys\n\ndef pytest_configure(config):\n    sys.stderr.write('configured: hello\\n')\n",
        )
        .write("test_a.py", "def test_one():\n    pass\n\ndef test_two():\n    pass\n");
    let expected = project.pytest(&[]);
    assert!(expected.stderr.contains("configured: hello"), "pytest shows it: {}", expected.stderr);
    let outcome = project.shoal(&["run", "-n", "2"]);
    outcome.assert_code(0);
    assert_eq!(outcome.stderr.matches("configured: hello").count(), 1, "{}", outcome.stderr);
}
