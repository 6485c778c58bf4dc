//! Under GitHub Actions, failures become `::error` annotations pointing at
//! the failing line relative to the repository root, and a Markdown summary
//! is appended to the step summary.

use crate::harness::Project;

#[test]
fn failures_are_annotated_at_their_failing_line_and_summarised() {
    let project = Project::fixture("outcomes");
    // Every outcome test takes well under the 5 ms a test needs to be listed
    // among the slowest; this one is certain to be.
    project.write("test_slow.py", "import time\n\n\ndef test_slow():\n    time.sleep(0.05)\n");
    let summary = project.path().join("step-summary.md");
    std::fs::write(&summary, "earlier steps\n").expect("a step summary");
    let workspace = project.path().to_str().expect("a UTF-8 path");
    let outcome = project.shoal_with_env(
        &[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_WORKSPACE", workspace),
            ("GITHUB_STEP_SUMMARY", summary.to_str().expect("a UTF-8 path")),
        ],
        &["run", "-n", "2"],
    );
    outcome.assert_code(1);
    let annotations: Vec<&str> = outcome.stdout.lines().filter(|line| line.starts_with("::error ")).collect();
    assert_eq!(annotations.len(), 4, "two failures and two errors:\n{}", outcome.stdout);
    assert!(
        annotations.iter().any(|line| line.starts_with(
            "::error file=test_outcomes.py,line=28,title=FAILED test_outcomes.py%3A%3Atest_fail::"
        )),
        "the failing assert is on line 28:\n{annotations:#?}"
    );
    assert!(annotations.iter().all(|line| !line.contains('\r')), "messages are escaped");
    let markdown = std::fs::read_to_string(&summary).expect("the summary");
    assert!(markdown.starts_with("earlier steps\n"), "the summary is appended, not overwritten");
    assert!(markdown.contains("### shoal: 2 failed, 4 passed"), "{markdown}");
    assert!(markdown.contains("- `test_outcomes.py::test_setup_error`"), "{markdown}");
    assert!(markdown.contains("**Slowest tests**"), "{markdown}");
    assert!(markdown.contains("`test_slow.py::test_slow` |"), "the slow test is listed:\n{markdown}");
}

#[test]
fn outside_github_actions_there_are_no_annotations() {
    let project = Project::fixture("outcomes");
    let outcome = project.shoal(&["run", "-n", "2"]);
    assert!(!outcome.stdout.contains("::error"), "{}", outcome.stdout);
}
