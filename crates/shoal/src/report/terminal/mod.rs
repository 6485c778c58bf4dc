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

mod live;
mod summary;

use std::io::Write;
use std::path::Path;

use crate::protocol::{Environment, Phase, PhaseReport};
use crate::report::Reporter;
use crate::results::Outcome;

use self::live::{LIVE_REFRESH, LiveFooter};
use crate::results::{RunHeader, RunSummary, TestView};

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
    /// What the workers run on and the summary options they were given
    /// (`--show-capture`, `--tb`, ...), known when the run starts.
    environment: Environment,
    /// Whether the output is a terminal (pytest then rewrites its
    /// `collecting ...` line in place; elsewhere `-v` keeps it).
    to_terminal: bool,
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
            environment: Environment::default(),
            to_terminal: false,
        }
    }

    /// Show a live footer instead of progress letters (for a terminal).
    #[must_use]
    pub fn with_live_display(mut self, live: bool) -> Self {
        self.live = live.then(LiveFooter::default);
        self
    }

    /// The output is a terminal.
    #[must_use]
    pub fn to_terminal(mut self, to_terminal: bool) -> Self {
        self.to_terminal = to_terminal;
        self
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

    /// The header's platform line and what pytest and its plugins add to
    /// it (rebuilt from the environment for a report read back).
    fn print_platform_and_plugins(&mut self, environment: &Environment) {
        let mut platform = format!(
            "platform {} -- Python {}, pytest-{}, pluggy-{}",
            environment.platform, environment.python, environment.pytest, environment.pluggy
        );
        if self.verbosity > 0 && !environment.executable.is_empty() {
            platform.push_str(&format!(" -- {}", environment.executable));
        }
        self.line(&platform);
        if !environment.header_lines.is_empty() {
            for line in &environment.header_lines {
                self.line(line);
            }
            return;
        }
        self.line(&format!("rootdir: {}", environment.rootdir));
        if let Some(inifile) = &environment.inifile {
            let shown = best_relative_path(Path::new(&environment.rootdir), Path::new(inifile));
            self.line(&format!("configfile: {shown}"));
        }
        if !environment.plugins.is_empty() {
            self.line(&format!("plugins: {}", environment.plugins.join(", ")));
        }
    }

    /// What follows the letters at the end of a line, as pytest's
    /// `console_output_style` asks: `[ 50%]`, `[ 5/10]`, or nothing.
    fn progress(&self, done: usize, total: usize) -> Option<String> {
        match self.environment.summary.progress_style.as_str() {
            "none" => None,
            "count" => Some(format!("[{done:>width$}/{total}]", width = total.to_string().len())),
            _ => {
                let percent = (done * 100).checked_div(total).unwrap_or(100);
                Some(format!("[{percent:>3}%]"))
            }
        }
    }

    /// How wide [`Self::progress`] is at its widest, without formatting it
    /// (asked after every test).
    fn progress_width(&self, total: usize) -> Option<usize> {
        match self.environment.summary.progress_style.as_str() {
            "none" => None,
            "count" => Some(2 * (total.checked_ilog10().unwrap_or(0) as usize + 1) + 3),
            _ => Some("[100%]".len()),
        }
    }

    fn end_progress_line(&mut self, done: usize, total: usize) {
        match self.progress(done, total) {
            Some(progress) => {
                let fill = (self.width.saturating_sub(1)).saturating_sub(self.line_length);
                let _ = writeln!(self.out, "{progress:>fill$}");
            }
            None => {
                let _ = writeln!(self.out);
            }
        }
        self.line_length = 0;
    }
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
        self.environment = header.environment.clone();
        if let Some(footer) = self.live.as_mut() {
            footer.running = vec![None; header.workers];
            footer.slow = vec![false; header.workers];
            footer.total = header.selected;
            footer.expected_wall = header.expectation.map(|expectation| expectation.wall_seconds);
        }
        if self.verbosity < 0 {
            return;
        }
        self.sep('=', "test session starts");
        if !header.environment.summary.no_header {
            self.print_platform_and_plugins(&header.environment);
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
        if self.verbosity >= 1 && !self.to_terminal {
            line.insert_str(0, "collecting ... ");
        }
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
        for note in &header.collection_notes {
            self.line(note);
        }
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
                None if test.record.cached => cached_mark(test.record.outcome).0,
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
            let cached = if test.record.cached { " (cached)" } else { "" };
            self.line(&format!("{worker}[{percent:>3}%] {word} {}{cached}", test.nodeid()));
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
            outcome if test.record.cached => cached_mark(outcome).1.to_owned(),
            _ => reports.iter().map(|report| report.letter.as_str()).collect(),
        };
        // pytest wraps the letters only when it shows progress after them.
        let wrap_at = self.progress_width(total).map(|shown| self.width.saturating_sub(shown + 2));
        for letter in letters.chars() {
            if wrap_at.is_some_and(|wrap_at| self.line_length + 1 > wrap_at) {
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
                footer.slow.resize(worker + 1, false);
            }
            footer.running[worker] = Some((nodeid.to_owned(), elapsed));
            footer.slow[worker] = false;
        }
    }

    fn test_slow(&mut self, nodeid: &str, worker: usize, threshold: f64) {
        if self.verbosity < -2 {
            return;
        }
        let line = format!("{} [>{threshold}s] {nodeid}", self.paint("SLOW", Some(Colour::Yellow), true));
        if let Some(footer) = self.live.as_mut() {
            if let Some(slow) = footer.slow.get_mut(worker) {
                *slow = true;
            }
            self.erase_footer();
            self.line(&line);
            self.draw_footer();
            return;
        }
        // A line of its own, between progress letters.
        if self.line_length > 0 {
            self.line("");
            self.line_length = 0;
        }
        self.line(&line);
        let _ = self.out.flush();
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
            // `--no-summary` leaves out pytest's own sections (and before
            // pytest 9.2 its plugins' too); `--tb=no` the tracebacks.
            let environment = &summary.header.environment;
            let own_sections = environment.summary.shows_own_sections();
            let plugin_sections = own_sections || environment.pytest_version() >= (9, 2);
            let tracebacks = environment.summary.shows_tracebacks();
            if tracebacks && self.immediate_failures {
                self.print_collect_error_section(summary);
            } else if tracebacks {
                self.print_errors(summary);
                self.print_failures(summary);
            }
            if own_sections {
                self.print_warnings(summary);
            }
            if tracebacks {
                self.print_passes(summary);
            }
            if plugin_sections {
                self.print_coverage(summary);
                self.print_slowest(summary);
            }
            self.print_stats(summary);
            if own_sections {
                self.print_short_summary(summary);
            }
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

/// pytest's word and letter for an outcome replayed from the cache
/// (`--affected`), which has no reports of its own.
fn cached_mark(outcome: Outcome) -> (&'static str, &'static str) {
    match outcome {
        Outcome::Skipped => ("SKIPPED", "s"),
        Outcome::Xfailed => ("XFAIL", "x"),
        Outcome::Xpassed => ("XPASS", "X"),
        _ => ("PASSED", "."),
    }
}

#[cfg(test)]
mod tests {
    use super::summary::trim_message;
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
    fn verbose_output_elsewhere_than_a_terminal_keeps_the_collecting_prefix() {
        let collected_line = |verbosity: i8, to_terminal: bool| {
            let run = crate::report::sample::SampleRun::new();
            let mut reporter =
                TerminalReporter::new(Vec::new(), 80, verbosity, false).to_terminal(to_terminal);
            run.drive(&mut reporter);
            let text = String::from_utf8(reporter.into_inner()).expect("UTF-8 output");
            text.lines().find(|line| line.contains("collected ")).expect("a collected line").to_owned()
        };
        assert!(collected_line(1, false).starts_with("collecting ... collected "));
        assert!(collected_line(1, true).starts_with("collected "));
        assert!(collected_line(0, false).starts_with("collected "));
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
