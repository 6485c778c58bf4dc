//! GitHub Actions: when `GITHUB_ACTIONS=true`, an `::error` annotation for
//! each failure, pointing at the failing line relative to the repository
//! root (`GITHUB_WORKSPACE`), and a Markdown summary of the run appended to
//! `$GITHUB_STEP_SUMMARY`.

use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::errors::ShoalError;
use crate::protocol::{Phase, PhaseReport};
use crate::report::Reporter;
use crate::results::Outcome;
use crate::results::{RunHeader, RunSummary, TestView};

/// Writes annotations to `out` (stdout, where the runner reads workflow
/// commands) and the summary to the step-summary file.
pub struct GithubReporter<W: Write> {
    out: W,
    workspace: PathBuf,
    step_summary: Option<PathBuf>,
}

impl<W: Write> GithubReporter<W> {
    /// A reporter for this workspace and step-summary file.
    pub fn new(out: W, workspace: PathBuf, step_summary: Option<PathBuf>) -> Self {
        Self { out, workspace, step_summary }
    }

    /// The reporter GitHub Actions wants, if shoal runs under it.
    pub fn from_environment(out: W, cwd: &Path) -> Option<Self> {
        if std::env::var("GITHUB_ACTIONS").ok().as_deref() != Some("true") {
            return None;
        }
        let workspace = std::env::var_os("GITHUB_WORKSPACE").map_or_else(|| cwd.to_owned(), PathBuf::from);
        let step_summary =
            std::env::var_os("GITHUB_STEP_SUMMARY").filter(|value| !value.is_empty()).map(PathBuf::from);
        Some(Self::new(out, workspace, step_summary))
    }

    fn relative(&self, rootdir: &str, path: &str) -> String {
        let absolute = Path::new(rootdir).join(path);
        absolute.strip_prefix(&self.workspace).unwrap_or(&absolute).display().to_string()
    }

    fn annotate(&mut self, file: &str, line: Option<u64>, title: &str, message: &str) {
        let line = line.map_or_else(String::new, |line| format!(",line={line}"));
        let _ = writeln!(
            self.out,
            "::error file={}{line},title={}::{}",
            escape_property(file),
            escape_property(title),
            escape_data(message)
        );
    }
}

/// Workflow-command data: `%`, CR and LF escaped.
fn escape_data(text: &str) -> String {
    text.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A")
}

/// Workflow-command property values: also `:` and `,`.
fn escape_property(text: &str) -> String {
    escape_data(text).replace(':', "%3A").replace(',', "%2C")
}

/// The annotation of a failed report: where it failed and why.
fn failure_place(report: &PhaseReport, test: &TestView<'_>) -> (Option<String>, Option<u64>) {
    match (&report.crash_path, report.crash_line) {
        (Some(path), line) => (Some(path.clone()), line),
        _ => (None, test.item.line.map(|line| u64::from(line) + 1)),
    }
}

impl<W: Write> Reporter for GithubReporter<W> {
    fn run_started(&mut self, _header: &RunHeader) {}

    fn test_finished(&mut self, _test: TestView<'_>, _reports: &[PhaseReport], _done: usize, _total: usize) {}

    fn run_finished(&mut self, summary: &RunSummary<'_>) -> Result<(), ShoalError> {
        let rootdir = summary.header.environment.rootdir.clone();
        for test in summary.tests() {
            for report in test.record.failed_reports() {
                let (crash_file, line) = failure_place(report, &test);
                let file = match crash_file {
                    Some(path) => Path::new(&path)
                        .strip_prefix(&self.workspace)
                        .map_or(path.clone(), |relative| relative.display().to_string()),
                    None => self.relative(&rootdir, test.item.path),
                };
                let word = if report.when == Phase::Call { "FAILED" } else { "ERROR" };
                let title = format!("{word} {}", test.nodeid());
                let message = report.longrepr.as_deref().or(report.message.as_deref()).unwrap_or("failed");
                self.annotate(&file, line, &title, message);
            }
            if let Some(crash) = test.record.crash() {
                let file = self.relative(&rootdir, test.item.path);
                let word = test.record.outcome.shoal_word().unwrap_or("CRASHED");
                let title = format!("{word} {}", test.nodeid());
                self.annotate(
                    &file,
                    test.item.line.map(|line| u64::from(line) + 1),
                    &title,
                    &crash.description,
                );
            }
        }
        let _ = self.out.flush();
        let Some(path) = &self.step_summary else { return Ok(()) };
        let markdown = step_summary(summary);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|error| ShoalError::io(format!("opening {}", path.display()), error))?;
        file.write_all(markdown.as_bytes())
            .map_err(|error| ShoalError::io(format!("writing {}", path.display()), error))
    }
}

/// The Markdown summary: counts, failures, flaky tests, timeouts, the
/// slowest tests and how close the run came to its lower bound.
fn step_summary(summary: &RunSummary<'_>) -> String {
    let mut text = String::new();
    let parts = summary.tally.parts();
    let counts = if parts.is_empty() { "no tests ran".to_owned() } else { parts.join(", ") };
    let _ = writeln!(text, "### shoal: {counts} in {:.2}s\n", summary.wall_seconds);
    let cached = summary.records.iter().filter(|record| record.cached).count();
    if cached > 0 {
        let _ = writeln!(
            text,
            "{cached} of {} results are cached (`--affected`): nothing those tests depend on changed since they \
             last passed, so they did not run\n",
            summary.records.len()
        );
    }
    let stats = &summary.stats;
    if stats.test_seconds > 0.0 {
        let workers = summary.header.workers;
        let _ = writeln!(
            text,
            "{workers} workers ({} mode), speed-up {:.2}x, efficiency {:.0}%, wall {:.2}x the lower bound ({:.2}s)\n",
            summary.header.mode,
            stats.test_seconds / summary.wall_seconds.max(f64::EPSILON),
            100.0 * stats.test_seconds / (summary.wall_seconds.max(f64::EPSILON) * workers as f64),
            summary.wall_seconds / stats.lower_bound_seconds.max(f64::EPSILON),
            stats.lower_bound_seconds,
        );
    }
    let list = |text: &mut String, title: &str, outcome: &[Outcome]| {
        let tests: Vec<TestView<'_>> =
            summary.tests().filter(|test| outcome.contains(&test.record.outcome)).collect();
        if tests.is_empty() {
            return;
        }
        let _ = writeln!(text, "**{title}** ({})\n", tests.len());
        for test in tests.iter().take(50) {
            let _ = writeln!(text, "- `{}`", test.nodeid());
        }
        if tests.len() > 50 {
            let _ = writeln!(text, "- … and {} more", tests.len() - 50);
        }
        text.push('\n');
    };
    list(&mut text, "Failures", &[Outcome::Failed, Outcome::Error, Outcome::Crashed]);
    list(&mut text, "Timeouts", &[Outcome::Timeout]);
    list(&mut text, "Flaky", &[Outcome::Flaky]);
    let mut slowest: Vec<(f64, &str)> = summary
        .tests()
        .map(|test| {
            // A timed-out or crashed test has no phase reports: its record's
            // duration is how long it ran.
            let phases: f64 = Phase::ALL.into_iter().map(|phase| test.record.phase_duration(phase)).sum();
            (phases.max(f64::from(test.record.duration)), test.nodeid())
        })
        .filter(|(seconds, _)| *seconds >= 0.005)
        .collect();
    slowest.sort_by(|a, b| b.0.total_cmp(&a.0));
    if slowest.first().is_some_and(|(seconds, _)| *seconds > 0.0) {
        let _ = writeln!(text, "**Slowest tests**\n\n| seconds | test |\n|---:|---|");
        for (seconds, nodeid) in slowest.iter().take(10) {
            let _ = writeln!(text, "| {seconds:.2} | `{nodeid}` |");
        }
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workflow_commands_are_escaped() {
        assert_eq!(escape_data("50% off\nnext"), "50%25 off%0Anext");
        assert_eq!(escape_property("a.py::t[1,2]"), "a.py%3A%3At[1%2C2]");
    }

    #[test]
    fn sample_run_snapshot() {
        let run = crate::report::sample::SampleRun::new();
        let directory = tempfile::tempdir().expect("a temp dir");
        let summary_path = directory.path().join("step_summary.md");
        let mut annotations = Vec::new();
        let mut reporter =
            GithubReporter::new(&mut annotations, PathBuf::from("/home/ci"), Some(summary_path.clone()));
        run.drive(&mut reporter);
        drop(reporter);
        let annotations = String::from_utf8(annotations).expect("UTF-8 output");
        let markdown = std::fs::read_to_string(&summary_path).expect("the summary was written");
        assert_eq!(markdown, step_summary(&run.summary()));
        insta::assert_snapshot!(format!(
            "--- annotations ---\n{annotations}--- step summary ---\n{markdown}"
        ));
    }
}
