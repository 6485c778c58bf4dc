//! The terminal report, in pytest's shape: header, progress, errors and
//! failures with pytest's own text, warnings, the short test summary and the
//! closing line, counted as pytest counts them.
//!
//! Progress is printed as tests end, in completion order: a letter per
//! report (`.`, `F`, `E`, `s`, `x`, `X`) wrapped with a percentage, as
//! pytest-xdist prints it, or with `-v` one line per test naming its worker.
//!
//! With colour on, the marks are pytest's: green for passes, red for
//! failures, yellow for skips and the like, and the closing rule in the
//! run's colour. With `--failure-output immediate`, each failure's text is
//! printed as the test ends, and not again at the end.
//!
//! Live (on a terminal, outside CI, at default verbosity), progress letters
//! give way to a footer redrawn a few times a second: a progress bar with
//! counts, elapsed time and an ETA, and what each worker runs now; each
//! failure is printed above it as it happens.

use std::io::Write;
use std::path::Path;

use crate::protocol::PhaseReport;
use crate::report::Reporter;
use crate::results::Outcome;
use crate::results::{PHASES, RunHeader, RunSummary, TestView};

/// Width of pytest's ` [100%]` progress column.
const PROGRESS_WIDTH: usize = 7;

/// How often progress reaches the terminal at most.
const PROGRESS_FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

/// Writes pytest-shaped output to a stream (stdout in real runs).
pub struct TerminalReporter<W: Write> {
    out: W,
    width: usize,
    verbosity: i8,
    /// Whether failure messages in the short summary are shown whole
    /// (pytest does so under CI and with `-vv`).
    full_messages: bool,
    /// `--durations N`: how many slowest phases to list (0: all).
    show_durations: Option<usize>,
    line_length: usize,
    /// Whether any progress was printed (pytest then ends it with a blank line).
    printed_progress: bool,
    /// When progress was last flushed: flushing per test would cost a
    /// system call per test.
    last_flush: std::time::Instant,
    /// Whether to mark output with ANSI colours.
    colour: bool,
    /// Whether failures are printed as they happen (then not at the end).
    immediate_failures: bool,
    /// The live footer's state, when the display is live.
    live: Option<LiveFooter>,
}

/// How often the live footer is redrawn.
const LIVE_REFRESH: std::time::Duration = std::time::Duration::from_millis(150);

/// Width of the live progress bar, in cells.
const BAR_CELLS: usize = 24;

/// What the live footer shows, and how many lines of it are on screen.
#[derive(Debug, Default)]
struct LiveFooter {
    /// Per worker: the test it runs and when it began (run seconds).
    running: Vec<Option<(String, f64)>>,
    passed: usize,
    failed: usize,
    skipped: usize,
    done: usize,
    total: usize,
    elapsed: f64,
    /// The plan's expected wall time, from the durations history.
    expected_wall: Option<f64>,
    /// Lines drawn below the output, to erase before the next write.
    drawn: usize,
}

impl LiveFooter {
    /// Seconds left: the plan's when there is history, else the pace so far.
    fn eta(&self) -> Option<f64> {
        match self.expected_wall {
            Some(wall) => Some((wall - self.elapsed).max(0.0)),
            None if self.done > 0 => Some(self.elapsed / self.done as f64 * (self.total - self.done) as f64),
            None => None,
        }
    }

    /// The footer's lines, each at most `width - 1` characters.
    fn lines(&self, width: usize) -> Vec<String> {
        let filled = (self.done * BAR_CELLS).checked_div(self.total).unwrap_or(BAR_CELLS);
        let mut head = format!(
            "[{}{}] {}/{}  {} passed, {} failed, {} skipped  {:.1}s",
            "#".repeat(filled),
            "-".repeat(BAR_CELLS - filled),
            self.done,
            self.total,
            self.passed,
            self.failed,
            self.skipped,
            self.elapsed
        );
        if let Some(eta) = self.eta() {
            head.push_str(&format!("  ETA {eta:.0}s"));
        }
        let mut lines = vec![head];
        for (worker, running) in self.running.iter().enumerate() {
            lines.push(match running {
                Some((nodeid, since)) => {
                    format!("  gw{worker} {:>6.1}s  {nodeid}", (self.elapsed - since).max(0.0))
                }
                None => format!("  gw{worker}    idle"),
            });
        }
        let keep = width.saturating_sub(1).max(1);
        lines.into_iter().map(|line| line.chars().take(keep).collect()).collect()
    }
}

/// pytest's colours for outcomes and rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Colour {
    Green,
    Red,
    Yellow,
}

impl Colour {
    /// The colour pytest gives a progress letter or a `-v` outcome word.
    fn of_mark(mark: &str) -> Option<Self> {
        match mark {
            "." | "PASSED" => Some(Self::Green),
            "F" | "E" | "C" | "T" | "FAILED" | "ERROR" | "CRASHED" | "TIMEOUT" => Some(Self::Red),
            "s" | "x" | "X" | "SKIPPED" | "XFAIL" | "XPASS" | "FLAKY" => Some(Self::Yellow),
            _ => None,
        }
    }

    fn code(self) -> &'static str {
        match self {
            Self::Green => "32",
            Self::Red => "31",
            Self::Yellow => "33",
        }
    }
}

impl<W: Write> TerminalReporter<W> {
    /// A reporter writing to `out`, `width` columns wide.
    pub fn new(out: W, width: usize, verbosity: i8, full_messages: bool) -> Self {
        Self {
            out,
            width,
            verbosity,
            full_messages,
            show_durations: None,
            line_length: 0,
            printed_progress: false,
            last_flush: std::time::Instant::now(),
            colour: false,
            immediate_failures: false,
            live: None,
        }
    }

    /// Show a live footer instead of progress letters (for a terminal).
    #[must_use]
    pub fn with_live_display(mut self, live: bool) -> Self {
        self.live = live.then(LiveFooter::default);
        self
    }

    /// Removes the live footer from the screen, so output can go above it.
    fn erase_footer(&mut self) {
        if let Some(footer) = self.live.as_mut().filter(|footer| footer.drawn > 0) {
            let _ = write!(self.out, "\x1b[{}A\x1b[J", footer.drawn);
            footer.drawn = 0;
        }
    }

    /// Draws the live footer below the output.
    fn draw_footer(&mut self) {
        let Some(footer) = self.live.as_ref() else { return };
        let lines = footer.lines(self.width);
        for line in &lines {
            let _ = writeln!(self.out, "{line}");
        }
        if let Some(footer) = self.live.as_mut() {
            footer.drawn = lines.len();
        }
        let _ = self.out.flush();
    }

    /// Live: counts the test, prints its failure above the footer, redraws.
    fn live_test_finished(&mut self, test: TestView<'_>, done: usize, total: usize) {
        let Some(footer) = self.live.as_mut() else { return };
        footer.done = done;
        footer.total = total;
        match test.record.outcome {
            Outcome::Passed | Outcome::Flaky | Outcome::Xpassed => footer.passed += 1,
            Outcome::Skipped | Outcome::Xfailed => footer.skipped += 1,
            Outcome::NotRun => {}
            _ => footer.failed += 1,
        }
        if let Some(slot) = test.record.worker.map(usize::from)
            && footer
                .running
                .get(slot)
                .is_some_and(|running| running.as_ref().is_some_and(|(id, _)| id == test.nodeid()))
        {
            footer.running[slot] = None;
        }
        self.erase_footer();
        let failed = test.record.outcome.is_failure();
        if failed && self.immediate_failures {
            self.print_failure_now(test);
        } else if failed {
            let only_errors = test.record.failed_reports().iter().all(|report| report.when != "call");
            let word =
                test.record.outcome.shoal_word().unwrap_or(if only_errors { "ERROR" } else { "FAILED" });
            let line = format!("{} {}", self.paint(word, Some(Colour::Red), false), test.nodeid());
            self.line(&line);
        }
        self.draw_footer();
    }

    /// Mark output with ANSI colours.
    #[must_use]
    pub fn with_colour(mut self, colour: bool) -> Self {
        self.colour = colour;
        self
    }

    /// Print each failure as its test ends (`--failure-output immediate`).
    #[must_use]
    pub fn with_immediate_failures(mut self, immediate: bool) -> Self {
        self.immediate_failures = immediate;
        self
    }

    /// `text` in `colour` (bold when `bold`), when colour is on.
    fn paint(&self, text: &str, colour: Option<Colour>, bold: bool) -> String {
        match colour {
            Some(colour) if self.colour => {
                format!("\x1b[{}{}m{text}\x1b[0m", if bold { "1;" } else { "" }, colour.code())
            }
            _ => text.to_owned(),
        }
    }

    /// Also list the N slowest phases (`--durations N`, 0 for all).
    #[must_use]
    pub fn with_durations(mut self, count: Option<usize>) -> Self {
        self.show_durations = count;
        self
    }

    /// The width pytest would use: `$COLUMNS`, the terminal's, else 80.
    pub fn detect_width() -> usize {
        let width = std::env::var("COLUMNS")
            .ok()
            .and_then(|value| value.parse::<usize>().ok())
            .or_else(|| terminal_size::terminal_size().map(|(width, _)| usize::from(width.0)))
            .unwrap_or(80);
        if width < 40 { 80 } else { width }
    }

    /// The writer, for tests.
    pub fn into_inner(self) -> W {
        self.out
    }

    /// pytest's `TerminalWriter.sep`: a title centred in a rule.
    fn sep(&mut self, character: char, title: &str) {
        let _ = writeln!(self.out, "{}", rule(character, title, self.width));
    }

    /// A rule in a colour, bold, as pytest marks a failure's heading.
    fn coloured_sep(&mut self, character: char, title: &str, colour: Colour) {
        let line = self.paint(&rule(character, title, self.width), Some(colour), true);
        self.line(&line);
    }

    fn line(&mut self, text: &str) {
        let _ = writeln!(self.out, "{text}");
    }

    fn end_progress_line(&mut self, done: usize, total: usize) {
        let percent = (done * 100).checked_div(total).unwrap_or(100);
        let fill = (self.width.saturating_sub(1)).saturating_sub(self.line_length);
        let _ = writeln!(self.out, "{:>fill$}", format!("[{percent:>3}%]"));
        self.line_length = 0;
    }

    fn print_collect_errors(&mut self, summary: &RunSummary<'_>) {
        for report in summary.collect_reports.iter().filter(|report| report.category == "error") {
            self.sep('_', &format!("ERROR collecting {}", report.nodeid));
            if let Some(text) = &report.longrepr {
                self.line(text.trim_end_matches('\n'));
            }
        }
    }

    fn print_report_body(&mut self, report: &crate::protocol::PhaseReport) {
        if let Some(text) = &report.longrepr {
            self.line(text.trim_end_matches('\n'));
        }
        for (title, content) in &report.sections {
            self.sep('-', title);
            self.line(content.strip_suffix('\n').unwrap_or(content));
        }
    }

    /// Only collection errors (their tests' errors were printed as they came).
    fn print_collect_error_section(&mut self, summary: &RunSummary<'_>) {
        if summary.collect_reports.iter().any(|report| report.category == "error") {
            self.sep('=', "ERRORS");
            self.print_collect_errors(summary);
        }
    }

    fn print_errors(&mut self, summary: &RunSummary<'_>) {
        let is_error = |report: &&PhaseReport| report.when != "call";
        let has_test_errors =
            summary.tests().any(|test| test.record.failed_reports().iter().any(|r| is_error(&r)));
        let has_collect_errors = summary.collect_reports.iter().any(|report| report.category == "error");
        if !has_test_errors && !has_collect_errors {
            return;
        }
        self.sep('=', "ERRORS");
        self.print_collect_errors(summary);
        for test in summary.tests() {
            self.print_errors_of(test);
        }
    }

    /// A test's setup and teardown errors, each under its heading.
    fn print_errors_of(&mut self, test: TestView<'_>) {
        for report in test.record.failed_reports().iter().filter(|report| report.when != "call") {
            let name = report.head_line.as_deref().unwrap_or(test.item.domain);
            self.coloured_sep('_', &format!("ERROR at {} of {name}", report.when), Colour::Red);
            self.print_report_body(report);
        }
    }

    fn print_failures(&mut self, summary: &RunSummary<'_>) {
        let any = summary.tests().any(|test| {
            test.record.crash().is_some() || test.record.failed_reports().iter().any(|r| r.when == "call")
        });
        if !any {
            return;
        }
        self.sep('=', "FAILURES");
        for test in summary.tests() {
            self.print_failure_of(test);
        }
    }

    /// A test's failed calls and its crash, if any, each under its heading.
    fn print_failure_of(&mut self, test: TestView<'_>) {
        for report in test.record.failed_reports().iter().filter(|report| report.when == "call") {
            let name = report.head_line.as_deref().unwrap_or(test.item.domain);
            self.coloured_sep('_', name, Colour::Red);
            self.print_report_body(report);
        }
        if let Some(crash) = test.record.crash() {
            self.coloured_sep('_', test.item.domain, Colour::Red);
            self.line(&crash.description);
            if !crash.output.trim().is_empty() {
                self.sep('-', "worker output");
                self.line(crash.output.trim_end_matches('\n'));
            }
        }
    }

    /// `--failure-output immediate`: a test's errors and failures as it
    /// ends, between progress lines.
    fn print_failure_now(&mut self, test: TestView<'_>) {
        if test.record.crash().is_none() && test.record.failed_reports().is_empty() {
            return;
        }
        if self.line_length > 0 {
            let _ = writeln!(self.out);
            self.line_length = 0;
        }
        self.print_errors_of(test);
        self.print_failure_of(test);
        let _ = self.out.flush();
    }

    /// pytest-cov's complaints, printed where it prints them: as the test
    /// loop ends, before the failures.
    fn print_coverage_error(&mut self, summary: &RunSummary<'_>) {
        let Some(coverage) = summary.coverage else { return };
        if let Some(warning) = &coverage.warning {
            let line = self.paint(&format!("WARNING: {warning}"), Some(Colour::Red), true);
            self.line(&line);
        }
        if let Some(error) = &coverage.error {
            let line = self.paint(&format!("ERROR: {error}"), Some(Colour::Red), true);
            self.line(&line);
        }
    }

    /// pytest-cov's `tests coverage` section.
    fn print_coverage(&mut self, summary: &RunSummary<'_>) {
        let Some(coverage) = summary.coverage else { return };
        if coverage.text.is_empty() && coverage.fail_under.is_none() {
            return;
        }
        self.sep('=', "tests coverage");
        let _ = write!(self.out, "{}", coverage.text);
        if let Some(line) = &coverage.fail_under {
            let colour = if coverage.fail_under_missed { Colour::Red } else { Colour::Green };
            let line = self.paint(line, Some(colour), coverage.fail_under_missed);
            self.line(&line);
        }
    }

    fn print_warnings(&mut self, summary: &RunSummary<'_>) {
        if summary.warnings.is_empty() {
            return;
        }
        self.sep('=', "warnings summary");
        // Grouped by text, like pytest: the node ids, then the warning once.
        let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
        for warning in summary.warnings {
            match groups.iter_mut().find(|(text, _)| *text == warning.text) {
                Some((_, nodeids)) => nodeids.push(&warning.nodeid),
                None => groups.push((&warning.text, vec![&warning.nodeid])),
            }
        }
        for (text, nodeids) in groups {
            let mut listed: Vec<&str> = Vec::new();
            for nodeid in nodeids {
                if !listed.contains(&nodeid) {
                    listed.push(nodeid);
                }
            }
            for nodeid in &listed {
                if !nodeid.is_empty() {
                    self.line(nodeid);
                }
            }
            for text_line in text.trim_end_matches('\n').lines() {
                self.line(&format!("  {text_line}"));
            }
            self.line("");
        }
        self.line("-- Docs: https://docs.pytest.org/en/stable/how-to/capture-warnings.html");
    }

    /// pytest's `--durations` section: the slowest phases first; below
    /// 5 ms hidden unless `-vv`.
    fn print_slowest(&mut self, summary: &RunSummary<'_>) {
        const MINIMUM: f64 = 0.005;
        let Some(count) = self.show_durations else { return };
        let mut phases: Vec<(f64, &str, &str)> = summary
            .tests()
            .filter(|test| test.record.outcome != Outcome::NotRun)
            .flat_map(|test| {
                let nodeid = test.item.nodeid;
                PHASES.iter().map(move |when| (test.record.phase_duration(when), *when, nodeid))
            })
            .collect();
        if phases.is_empty() {
            return;
        }
        phases.sort_by(|a, b| b.0.total_cmp(&a.0));
        if count == 0 {
            self.sep('=', "slowest durations");
        } else {
            self.sep('=', &format!("slowest {count} durations"));
            phases.truncate(count);
        }
        for (index, (duration, when, nodeid)) in phases.iter().enumerate() {
            if self.verbosity < 2 && *duration < MINIMUM {
                self.line("");
                self.line(&format!(
                    "({} durations < {MINIMUM}s hidden.  Use -vv to show these durations.)",
                    phases.len() - index
                ));
                break;
            }
            self.line(&format!("{duration:.2}s {when:<8} {nodeid}"));
        }
    }

    /// shoal's own figures: how close the run came to the physical limit.
    fn print_stats(&mut self, summary: &RunSummary<'_>) {
        let stats = &summary.stats;
        let workers = summary.header.workers;
        if self.verbosity < 0 || summary.records.is_empty() || stats.test_seconds <= 0.0 {
            for notice in summary.notices {
                self.line(&format!("shoal: {notice}"));
            }
            return;
        }
        let wall = summary.wall_seconds.max(f64::EPSILON);
        self.sep('=', "shoal");
        self.line(&format!(
            "wall {wall:.2}s, tests {:.2}s: speed-up {:.2}x, efficiency {:.0}% of {workers} worker{}",
            stats.test_seconds,
            stats.test_seconds / wall,
            100.0 * stats.test_seconds / (wall * workers as f64),
            if workers == 1 { "" } else { "s" }
        ));
        self.line(&format!(
            "lower bound {:.2}s (start-up {:.2}s + max(tests / workers, longest test)): wall is {:.2}x the bound",
            stats.lower_bound_seconds,
            stats.startup_seconds,
            wall / stats.lower_bound_seconds.max(f64::EPSILON)
        ));
        if let Some(expectation) = summary.header.expectation {
            self.line(&format!("expected {:.2}s from history", expectation.wall_seconds));
        }
        self.line(&format!(
            "workers: {:.2}s CPU ({:.0}% of {workers} worker{} over the wall time), peak memory {} largest, {} total",
            stats.workers_cpu_seconds,
            100.0 * stats.workers_cpu_seconds / (wall * workers as f64),
            if workers == 1 { "" } else { "s" },
            format_kib(stats.peak_rss_largest_kib),
            format_kib(stats.peak_rss_total_kib)
        ));
        for notice in summary.notices {
            self.line(notice);
        }
    }

    fn short_summary_line(&self, word: &str, nodeid: &str, message: Option<&str>) -> String {
        let line = format!("{word} {nodeid}");
        let shown = format!("{} {nodeid}", self.paint(word, Colour::of_mark(word), false));
        let Some(message) = message else { return shown };
        if self.full_messages {
            return format!("{shown} - {message}");
        }
        let available = self.width.saturating_sub(line.chars().count());
        match trim_message(message, available) {
            Some(trimmed) => format!("{shown}{trimmed}"),
            None => shown,
        }
    }

    fn print_short_summary(&mut self, summary: &RunSummary<'_>) {
        let mut lines = Vec::new();
        for test in summary.tests() {
            for report in test.record.failed_reports().iter().filter(|report| report.when == "call") {
                let nodeid = match &report.subtest {
                    Some(description) => format!("{}{description}", test.nodeid()),
                    None => test.nodeid().to_owned(),
                };
                lines.push(self.short_summary_line("FAILED", &nodeid, report.message.as_deref()));
            }
            if let Some(crash) = test.record.crash() {
                let word = test.record.outcome.shoal_word().unwrap_or("CRASHED");
                lines.push(self.short_summary_line(word, test.nodeid(), Some(&crash.message)));
            }
            if test.record.outcome == Outcome::Flaky {
                let failed = test.record.earlier_attempts().len();
                let message = format!(
                    "failed {failed} time{}, passed on attempt {}",
                    if failed == 1 { "" } else { "s" },
                    failed + 1
                );
                lines.push(self.short_summary_line("FLAKY", test.nodeid(), Some(&message)));
            }
        }
        for report in summary.collect_reports.iter().filter(|report| report.category == "error") {
            lines.push(self.short_summary_line("ERROR", &report.nodeid, report.message.as_deref()));
        }
        for test in summary.tests() {
            for report in test.record.failed_reports().iter().filter(|report| report.when != "call") {
                lines.push(self.short_summary_line("ERROR", test.nodeid(), report.message.as_deref()));
            }
        }
        // Tests a collection error kept from running are not listed: pytest
        // does not list them either.
        let mut not_run = summary.tests().filter(|test| {
            test.record.outcome == Outcome::NotRun
                && test.record.not_run_reason != Some(crate::results::StopReason::CollectionErrors)
        });
        if let Some(first) = not_run.next() {
            let reason = first.record.not_run_reason.map_or("not run", |cause| cause.as_str());
            lines.push(format!("NOT RUN {} tests ({reason})", 1 + not_run.count()));
        }
        if lines.is_empty() {
            return;
        }
        self.sep('=', "short test summary info");
        for line in lines {
            self.line(&line);
        }
    }
}

/// pytest's `_format_trimmed(" - {}", message, available)`: the first line
/// of the message, cut with `...` to fit.
fn trim_message(message: &str, available: usize) -> Option<String> {
    let first_line = message.split('\n').next().unwrap_or_default();
    const PREFIX: &str = " - ";
    const ELLIPSIS: &str = "...";
    if PREFIX.len() + ELLIPSIS.len() > available {
        return None;
    }
    if PREFIX.len() + first_line.chars().count() <= available {
        return Some(format!("{PREFIX}{first_line}"));
    }
    let keep = available - ELLIPSIS.len() - PREFIX.len();
    let cut: String = first_line.chars().take(keep).collect();
    Some(format!("{PREFIX}{cut}{ELLIPSIS}"))
}

/// pytest's `TerminalWriter.sep` for a `width`-column terminal.
pub fn rule(character: char, title: &str, width: usize) -> String {
    let title_width = title.chars().count();
    let fill_count = (width.saturating_sub(title_width + 2) / 2).max(1);
    let fill = character.to_string().repeat(fill_count);
    let mut line = format!("{fill} {title} {fill}");
    if line.chars().count() < width {
        line.push(character);
    }
    line
}

impl<W: Write> Reporter for TerminalReporter<W> {
    fn run_started(&mut self, header: &RunHeader) {
        if let Some(footer) = self.live.as_mut() {
            footer.running = vec![None; header.workers];
            footer.total = header.selected;
            footer.expected_wall = header.expectation.map(|expectation| expectation.wall_seconds);
        }
        if self.verbosity < 0 {
            return;
        }
        self.sep('=', "test session starts");
        self.line(&format!(
            "platform {} -- Python {}, pytest-{}, pluggy-{}",
            header.platform, header.python, header.pytest, header.pluggy
        ));
        self.line(&format!("rootdir: {}", header.rootdir));
        if let Some(inifile) = &header.inifile {
            let shown = best_relative_path(Path::new(&header.rootdir), Path::new(inifile));
            self.line(&format!("configfile: {shown}"));
        }
        if !header.plugins.is_empty() {
            self.line(&format!("plugins: {}", header.plugins.join(", ")));
        }
        let mut line = format!(
            "shoal {}: {} worker{} ({} mode)",
            env!("CARGO_PKG_VERSION"),
            header.workers,
            if header.workers == 1 { "" } else { "s" },
            header.mode
        );
        if let Some(expectation) = header.expectation {
            line.push_str(&format!(
                ", {} tests expected to take {:.1}s (lower bound {:.1}s)",
                header.selected, expectation.wall_seconds, expectation.lower_bound_seconds
            ));
        }
        self.line(&line);
        let collected = header.selected as u64 + header.deselected;
        let mut line = format!("collected {collected} item{}", if collected == 1 { "" } else { "s" });
        if header.collect_errors > 0 {
            let count = header.collect_errors;
            line.push_str(&format!(" / {count} error{}", if count == 1 { "" } else { "s" }));
        }
        if header.deselected > 0 {
            line.push_str(&format!(" / {} deselected", header.deselected));
        }
        if header.collect_skipped > 0 {
            line.push_str(&format!(" / {} skipped", header.collect_skipped));
        }
        if header.deselected > 0 {
            line.push_str(&format!(" / {} selected", header.selected));
        }
        self.line(&line);
        self.line("");
    }

    fn test_finished(&mut self, test: TestView<'_>, reports: &[PhaseReport], done: usize, total: usize) {
        if self.live.is_some() {
            self.live_test_finished(test, done, total);
            return;
        }
        if self.verbosity > 0 {
            if test.record.outcome == Outcome::NotRun {
                return;
            }
            let word = match test.record.outcome.shoal_word() {
                Some(word) => word,
                None => reports
                    .iter()
                    .filter(|report| !report.word.is_empty() && report.subtest.is_none())
                    .map(|report| report.word.as_str())
                    .find(|word| *word != "PASSED")
                    .unwrap_or("PASSED"),
            };
            let percent = done * 100 / total.max(1);
            let worker = test.record.worker.map_or_else(String::new, |slot| format!("[gw{slot}] "));
            let word = self.paint(word, Colour::of_mark(word), false);
            self.line(&format!("{worker}[{percent:>3}%] {word} {}", test.nodeid()));
            self.printed_progress = true;
            if self.immediate_failures {
                self.print_failure_now(test);
            }
            return;
        }
        if self.verbosity < -2 {
            return;
        }
        let letters: String = match test.record.outcome {
            Outcome::Crashed => "C".to_owned(),
            Outcome::Timeout => "T".to_owned(),
            Outcome::NotRun => String::new(),
            _ => reports.iter().map(|report| report.letter.as_str()).collect(),
        };
        for letter in letters.chars() {
            if self.line_length + 1 > self.width.saturating_sub(PROGRESS_WIDTH + 1) {
                self.end_progress_line(done, total);
            }
            let letter = letter.to_string();
            let mark = self.paint(&letter, Colour::of_mark(&letter), false);
            let _ = write!(self.out, "{mark}");
            self.line_length += 1;
            self.printed_progress = true;
        }
        if self.immediate_failures {
            self.print_failure_now(test);
        }
        if done == total && self.line_length > 0 {
            self.end_progress_line(done, total);
        }
        if self.last_flush.elapsed() >= PROGRESS_FLUSH_INTERVAL || done == total {
            let _ = self.out.flush();
            self.last_flush = std::time::Instant::now();
        }
    }

    fn test_started(&mut self, nodeid: &str, worker: usize, elapsed: f64) {
        if let Some(footer) = self.live.as_mut() {
            if footer.running.len() <= worker {
                footer.running.resize(worker + 1, None);
            }
            footer.running[worker] = Some((nodeid.to_owned(), elapsed));
        }
    }

    fn refresh_interval(&self) -> Option<std::time::Duration> {
        self.live.as_ref().map(|_| LIVE_REFRESH)
    }

    fn tick(&mut self, elapsed: f64) {
        if let Some(footer) = self.live.as_mut() {
            footer.elapsed = elapsed;
            self.erase_footer();
            self.draw_footer();
        }
    }

    fn run_finished(&mut self, summary: &RunSummary<'_>) -> Result<(), crate::errors::ShoalError> {
        self.erase_footer();
        self.live = None;
        if self.line_length > 0 {
            let total = summary.records.len();
            let done = summary.records.iter().filter(|record| record.outcome != Outcome::NotRun).count();
            self.end_progress_line(done, total);
        }
        // As pytest: `-qq` shows all but the closing line; `-qqq` nothing.
        if self.verbosity >= -2 {
            if self.verbosity >= 0 && self.printed_progress {
                self.line("");
            }
            self.print_coverage_error(summary);
            if self.immediate_failures {
                self.print_collect_error_section(summary);
            } else {
                self.print_errors(summary);
                self.print_failures(summary);
            }
            self.print_warnings(summary);
            self.print_coverage(summary);
            self.print_slowest(summary);
            self.print_stats(summary);
            self.print_short_summary(summary);
            if let Some(message) = summary.stop_message() {
                self.sep('!', &message);
            }
            if self.verbosity < -1 {
                return self
                    .out
                    .flush()
                    .map_err(|error| crate::errors::ShoalError::io("writing the terminal report", error));
            }
            let parts = summary.tally.parts();
            let counts = if parts.is_empty() { "no tests ran".to_owned() } else { parts.join(", ") };
            let closing = format!("{counts} in {}", format_session_duration(summary.wall_seconds));
            let colour = main_colour(summary.tally);
            let closing = if self.verbosity >= 0 { rule('=', &closing, self.width) } else { closing };
            let closing = self.paint(&closing, Some(colour), true);
            self.line(&closing);
        }
        self.out.flush().map_err(|error| crate::errors::ShoalError::io("writing the terminal report", error))
    }
}

/// pytest's main colour for the closing rule: red with failures, yellow
/// with warnings, xpasses or categories pytest does not know, else green
/// when anything passed.
fn main_colour(tally: &crate::results::Tally) -> Colour {
    const KNOWN: [&str; 8] =
        ["failed", "passed", "skipped", "deselected", "xfailed", "xpassed", "warnings", "error"];
    let has = |category: &str| tally.get(category) > 0;
    if ["failed", "error", "crashed", "timeout"].into_iter().any(has) {
        Colour::Red
    } else if has("warnings") || has("xpassed") || tally.categories().any(|name| !KNOWN.contains(&name)) {
        Colour::Yellow
    } else if has("passed") {
        Colour::Green
    } else {
        Colour::Yellow
    }
}

/// Memory in MiB or GiB.
fn format_kib(kib: u64) -> String {
    let mib = kib as f64 / 1024.0;
    if mib >= 1024.0 { format!("{:.1} GiB", mib / 1024.0) } else { format!("{mib:.0} MiB") }
}

/// pytest's `format_session_duration`.
pub fn format_session_duration(seconds: f64) -> String {
    if seconds < 60.0 {
        return format!("{seconds:.2}s");
    }
    let whole = seconds as u64;
    format!("{seconds:.2}s ({}:{:02}:{:02})", whole / 3600, whole / 60 % 60, whole % 60)
}

/// `dest` as pytest's `bestrelpath` shows it from `directory`: relative,
/// going up with `..` where needed (`configfile: ../pytest.ini` under
/// `--rootdir=sub`).
fn best_relative_path(directory: &Path, dest: &Path) -> String {
    if directory == dest {
        return ".".to_owned();
    }
    let common = directory.components().zip(dest.components()).take_while(|(a, b)| a == b).count();
    if common == 0 {
        return dest.display().to_string();
    }
    let ups = directory.components().count() - common;
    let parts: Vec<String> = std::iter::repeat_n("..".to_owned(), ups)
        .chain(dest.components().skip(common).map(|part| part.as_os_str().to_string_lossy().into_owned()))
        .collect();
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_file_is_shown_relative_to_the_rootdir_as_pytest_shows_it() {
        let rootdir = Path::new("/p/sub");
        assert_eq!(best_relative_path(rootdir, Path::new("/p/sub/pytest.ini")), "pytest.ini");
        assert_eq!(best_relative_path(rootdir, Path::new("/p/pytest.ini")), "../pytest.ini");
        assert_eq!(best_relative_path(Path::new("/p/a"), Path::new("/p/ab/tox.ini")), "../ab/tox.ini");
    }

    #[test]
    fn rules_match_pytest_at_80_columns() {
        assert_eq!(
            rule('=', "test session starts", 80),
            "============================= test session starts =============================="
        );
        assert_eq!(
            rule('=', "1 failed, 1 passed in 0.05s", 80),
            "========================= 1 failed, 1 passed in 0.05s =========================="
        );
        assert_eq!(rule('=', "x", 80).chars().count(), 80);
    }

    #[test]
    fn durations_are_formatted_like_pytest() {
        assert_eq!(format_session_duration(4.214), "4.21s");
        assert_eq!(format_session_duration(65.12), "65.12s (0:01:05)");
    }

    #[test]
    fn long_messages_are_trimmed_with_an_ellipsis() {
        assert_eq!(trim_message("assert 1 == 2\nmore", 40).as_deref(), Some(" - assert 1 == 2"));
        assert_eq!(trim_message("abcdefghij", 10).as_deref(), Some(" - abcd..."));
        assert_eq!(trim_message("abc", 5), None);
    }

    /// The terminal's output for the sample run, the version redacted.
    fn sample_output(colour: bool) -> String {
        let run = crate::report::sample::SampleRun::new();
        let mut reporter = TerminalReporter::new(Vec::new(), 80, 0, false).with_colour(colour);
        run.drive(&mut reporter);
        let text = String::from_utf8(reporter.into_inner()).expect("UTF-8 output");
        text.replace(env!("CARGO_PKG_VERSION"), "[version]")
    }

    #[test]
    fn sample_run_snapshot() {
        insta::assert_snapshot!(sample_output(false));
    }

    #[test]
    fn sample_run_snapshot_in_colour() {
        insta::assert_snapshot!(sample_output(true));
    }
}
