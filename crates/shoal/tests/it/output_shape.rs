//! shoal's terminal output is pytest's, line for line, apart from what
//! parallel running changes: the progress lines (completion order, no file
//! names), shoal's one header line, and the timing in the closing line.

use crate::harness::{Outcome, Project};

/// The letters pytest and shoal print per report while tests run.
const PROGRESS_LETTERS: &str = ".FEsxXCu";

/// A normalised transcript: the lines with the progress block replaced by
/// one placeholder (with how its last line ends) and the closing line
/// reduced to its counts, plus the progress letters in sorted order.
#[derive(Debug, PartialEq, Eq)]
struct Transcript {
    lines: Vec<String>,
    progress_letters: String,
}

/// The letters of a progress line (`test_a.py ..F   [ 50%]` or `..F   [ 50%]`;
/// `[ 5/10]` under `console_output_style = count`; the letters alone under
/// `classic`).
fn progress_letters(line: &str) -> Option<&str> {
    let body = match line.strip_suffix(']') {
        Some(body) => {
            let (body, progress) = body.rsplit_once('[')?;
            if !progress.ends_with('%') && !progress.contains('/') {
                return None;
            }
            body
        }
        None => line,
    };
    let letters = body.trim_end().rsplit(' ').next()?;
    (!letters.is_empty() && letters.chars().all(|c| PROGRESS_LETTERS.contains(c))).then_some(letters)
}

fn is_shoal_header(line: &str) -> bool {
    line.starts_with("shoal ") && line.contains(" worker") && line.contains(" mode)")
}

fn transcript(outcome: &Outcome) -> Transcript {
    let counts = outcome.closing_counts();
    let mut lines = Vec::new();
    let mut letters: Vec<char> = Vec::new();
    let all: Vec<&str> = outcome.stdout.lines().collect();
    let closing = all.iter().rposition(|line| line.starts_with('=') && line.contains(" in "));
    // shoal's own figures (speed-up, lower bound, CPU, memory) have no
    // counterpart in pytest: the section is left out of the comparison.
    let mut in_shoal_section = false;
    for (index, line) in all.iter().enumerate() {
        if line.starts_with('=') && line.contains(" shoal ") {
            in_shoal_section = true;
            continue;
        }
        if in_shoal_section && !line.starts_with('=') {
            continue;
        }
        in_shoal_section = false;
        if Some(index) == closing {
            lines.push(format!("<closing line: {counts}>"));
        } else if is_shoal_header(line) {
            continue;
        } else if let Some(found) = progress_letters(line) {
            letters.extend(found.chars());
            // The block keeps how its last line ends (`[100%]`, `[11/11]`
            // or nothing): the lines before depend on the order of results.
            let ending = line.rsplit_once(found).map_or("", |(_, after)| after.trim());
            if lines.last().is_some_and(|last| last.starts_with("<progress")) {
                lines.pop();
            }
            lines.push(format!("<progress ending {ending:?}>"));
        } else {
            lines.push((*line).to_owned());
        }
    }
    letters.sort_unstable();
    Transcript { lines, progress_letters: letters.into_iter().collect() }
}

fn assert_same_output(name: &str, args: &[&str]) {
    let project = Project::fixture(name);
    let expected = project.pytest(args);
    let mut shoal_args = vec!["run", "-n", "2"];
    shoal_args.extend_from_slice(args);
    let actual = project.shoal(&shoal_args);
    assert_eq!(actual.code, expected.code, "{name}: exit code\n{}\n{}", actual.stdout, actual.stderr);
    let (actual_transcript, expected_transcript) = (transcript(&actual), transcript(&expected));
    if actual_transcript != expected_transcript {
        let first_difference = actual_transcript
            .lines
            .iter()
            .zip(&expected_transcript.lines)
            .position(|(a, b)| a != b)
            .unwrap_or(actual_transcript.lines.len().min(expected_transcript.lines.len()));
        panic!(
            "{name}: shoal's output differs from pytest's from normalised line {}:\n  shoal:  {:?}\n  pytest: {:?}\n\
             lines only shoal prints: {:#?}\nlines only pytest prints: {:#?}\n\
             progress letters: shoal {:?}, pytest {:?}\n--- shoal stdout\n{}\n--- pytest stdout\n{}",
            first_difference + 1,
            actual_transcript.lines.get(first_difference),
            expected_transcript.lines.get(first_difference),
            lines_missing_from(&actual_transcript.lines, &expected_transcript.lines),
            lines_missing_from(&expected_transcript.lines, &actual_transcript.lines),
            actual_transcript.progress_letters,
            expected_transcript.progress_letters,
            actual.stdout,
            expected.stdout
        );
    }
}

/// The lines of `these` left over once each line of `those` has been
/// matched with one equal line (a multiset difference).
fn lines_missing_from<'a>(these: &'a [String], those: &[String]) -> Vec<&'a str> {
    let mut unmatched: Vec<&str> = those.iter().map(String::as_str).collect();
    let mut extra = Vec::new();
    for line in these {
        match unmatched.iter().position(|other| other == line) {
            Some(index) => {
                unmatched.remove(index);
            }
            None => extra.push(line.as_str()),
        }
    }
    extra
}

#[test]
fn progress_letters_are_recognised() {
    assert_eq!(progress_letters("test_a.py .FE.s     [ 40%]"), Some(".FE.s"));
    assert_eq!(progress_letters("..x                  [100%]"), Some("..x"));
    assert_eq!(progress_letters("FAILED test_a.py::test_x - assert 1 == 2"), None);
    assert_eq!(progress_letters("see [50%]"), None);
    assert_eq!(progress_letters("test_a.py .FE    [ 3/11]"), Some(".FE"));
    assert_eq!(progress_letters("test_a.py .FEs"), Some(".FEs"));
    assert_eq!(progress_letters("rootdir: /tmp/x"), None);
    assert_eq!(progress_letters("E   assert [1] == [2]"), None);
}

#[test]
fn every_outcome_kind_is_reported_as_pytest_reports_it() {
    assert_same_output("outcomes", &[]);
}

#[test]
fn odd_node_ids_are_reported_as_pytest_reports_them() {
    assert_same_output("ids", &[]);
}

#[test]
fn a_collection_error_is_reported_as_pytest_reports_it() {
    assert_same_output("collect_error", &[]);
}

#[test]
fn a_collection_error_with_continue_is_reported_as_pytest_reports_it() {
    assert_same_output("collect_error", &["--continue-on-collection-errors"]);
}

#[test]
fn the_short_summary_shows_what_dash_r_asks_for_as_pytest_shows_it() {
    // Folded skips (a module's, a marker's, a parametrized test's), xfails
    // and xpasses with and without reasons (some decided at setup), passes
    // with their output, teardown output after failures and passes.
    for chars in ["-ra", "-rA", "-rs", "-rxX", "-rP", "-rN"] {
        assert_same_output("skips", &[chars]);
    }
    // A test whose teardown failed after its call passed is listed as passed too.
    assert_same_output("outcomes", &["-ra"]);
    assert_same_output("outcomes", &["-rA"]);
}

#[test]
fn a_failed_subtest_is_summarised_as_pytest_summarises_it() {
    // pytest 9's own subtests (`SUBFAILED[mixed] (i=1) test_x.py::test`);
    // short tracebacks leave out the object addresses of the arguments.
    if crate::harness::pytest_major() >= 9 {
        assert_same_output("subtests", &["--tb=short", "-rA"]);
    }
}

#[test]
fn tracebacks_are_shown_as_dash_dash_tb_asks() {
    for style in ["--tb=no", "--tb=line"] {
        assert_same_output("outcomes", &["-rA", style]);
    }
}

#[test]
fn no_header_leaves_out_the_platform_and_plugin_lines() {
    assert_same_output("outcomes", &["--no-header"]);
}

#[test]
fn progress_is_shown_as_console_output_style_asks() {
    for style in ["classic", "count", "progress"] {
        assert_same_output("outcomes", &["-o", &format!("console_output_style={style}")]);
    }
}

#[test]
fn disable_warnings_leaves_out_the_warnings_summary() {
    assert_same_output("outcomes", &["--disable-warnings"]);
}

#[test]
fn no_summary_leaves_out_pytests_own_sections() {
    // From pytest 9.2 plugins' sections (the slowest durations) still show.
    // (A minimum no phase reaches keeps the listing the same every run.)
    assert_same_output("outcomes", &["-rA", "--no-summary", "--durations=2", "--durations-min=10"]);
}

#[test]
fn the_slowest_durations_hide_what_durations_min_asks() {
    // Every phase that ran is counted, none listed.
    assert_same_output("outcomes", &["--durations=0", "--durations-min=10"]);
}

#[test]
fn captured_output_is_shown_as_show_capture_asks() {
    for show in ["no", "stdout", "stderr", "log", "all"] {
        assert_same_output("skips", &["-rA", &format!("--show-capture={show}")]);
    }
}

#[test]
fn skips_are_listed_one_by_one_under_no_fold_skipped() {
    // pytest 8.3 added the flag.
    if crate::harness::pytest_version() >= (8, 3) {
        assert_same_output("skips", &["-rs", "--no-fold-skipped"]);
    }
}
