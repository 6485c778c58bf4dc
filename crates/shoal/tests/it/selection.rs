//! Selection files and positional paths: what they select runs exactly once,
//! and every mistake in them is a usage error that names the place at fault.

use std::collections::BTreeSet;

use crate::harness::{Outcome, Project};

/// The set of node ids, panicking on a repeat.
fn unique(ids: &[&str]) -> BTreeSet<String> {
    let mut set = BTreeSet::new();
    for id in ids {
        assert!(set.insert((*id).to_owned()), "{id} ran twice: {ids:#?}");
    }
    set
}

#[test]
fn a_selection_file_with_comments_odd_node_ids_a_directory_and_duplicates() {
    let project = Project::fixture("ids");
    project.write(
        "selection.txt",
        concat!(
            "# tests picked by a change detector\n",
            "\n",
            "test_params.py::test_awkward_str[with space]\n",
            "   \n",
            "test_params.py::test_awkward_str[[bracketed]]   # brackets inside brackets\n",
            "test_params.py::test_non_ascii[caf\\xe9]\n",
            "test_params.py::test_explicit_ids[big::one]\n",
            "pkg/sub\n",
            "test_params.py::test_awkward_str[with space]\n",
            "./pkg/sub\n",
            "\t# an indented comment\n",
        ),
    );
    let expected: BTreeSet<String> = project
        .pytest_node_ids(&[
            "test_params.py::test_awkward_str[with space]",
            "test_params.py::test_awkward_str[[bracketed]]",
            "test_params.py::test_non_ascii[caf\\xe9]",
            "test_params.py::test_explicit_ids[big::one]",
            "pkg/sub",
        ])
        .into_iter()
        .collect();
    // The escaped non-ASCII id is a real one, and the directory brought its 10.
    assert!(expected.contains("test_params.py::test_non_ascii[caf\\xe9]"), "{expected:#?}");
    assert_eq!(expected.len(), 14, "{expected:#?}");

    let report = project.shoal_report(&[], &["-n", "2", "--select", "selection.txt"]);
    report.outcome.assert_code(0);
    assert_eq!(unique(&report.node_ids()), expected);
    assert_eq!(report.outcome.closing_counts(), "12 passed, 1 skipped, 1 xfailed");
}

#[test]
fn several_selection_files_and_positional_paths_combine() {
    let project = Project::fixture("ids");
    project
        .write("first.txt", "pkg/sub/test_deep.py::DeepCase\ntest_unit.py  # overlaps the positional one\n");
    project.write("second.txt", "# only classes\ntest_params.py::TestOuter\n");
    let expected: BTreeSet<String> = project
        .pytest_node_ids(&["test_unit.py", "pkg/sub/test_deep.py::DeepCase", "test_params.py::TestOuter"])
        .into_iter()
        .collect();
    assert_eq!(expected.len(), 4 + 3 + 4, "{expected:#?}");

    let report = project
        .shoal_report(&[], &["-n", "2", "--select", "first.txt", "test_unit.py", "--select", "second.txt"]);
    report.outcome.assert_code(0);
    assert_eq!(unique(&report.node_ids()), expected);
}

/// Asserts a usage error: exit 4, `needle` on stderr, and no run started.
fn assert_usage_error(outcome: &Outcome, needle: &str) {
    outcome.assert_code(4);
    assert!(outcome.stderr.contains(needle), "stderr should contain {needle:?}:\n{}", outcome.stderr);
    assert!(
        !outcome.stdout.contains("test session starts"),
        "nothing should run on a usage error:\n{}",
        outcome.stdout
    );
}

#[test]
fn a_missing_selection_file_is_a_usage_error() {
    let project = Project::fixture("allpass");
    let outcome = project.shoal(&["run", "-n", "2", "--select", "not-written.txt"]);
    assert_usage_error(&outcome, "not-written.txt");
}

#[test]
fn a_selection_line_naming_a_missing_path_names_file_and_line() {
    let project = Project::fixture("allpass");
    project.write("selection.txt", "# comment\ntest_one.py\n\ntest_gone.py::test_x[a b]\ntest_two.py\n");
    let outcome = project.shoal(&["run", "-n", "2", "--select", "selection.txt"]);
    assert_usage_error(&outcome, "selection.txt:4");
    assert!(outcome.stderr.contains("test_gone.py"), "{}", outcome.stderr);
}

#[test]
fn non_utf8_bytes_in_a_selection_file_name_the_line() {
    let project = Project::fixture("allpass");
    project.write("selection.txt", b"test_one.py\n# fine\ntest_two.py::test_two_a[\xff\xfe]\n".as_slice());
    let outcome = project.shoal(&["run", "-n", "2", "--select", "selection.txt"]);
    assert_usage_error(&outcome, "selection.txt:3");
}

#[test]
fn a_missing_positional_path_is_a_usage_error() {
    let project = Project::fixture("allpass");
    let outcome = project.shoal(&["run", "-n", "2", "test_one.py", "tests/nowhere.py"]);
    assert_usage_error(&outcome, "tests/nowhere.py");
}
