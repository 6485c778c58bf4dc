//! The end of the run in pytest's shape: collection errors, errors and
//! failures sections, warnings summary, coverage, slowest durations, shoal's
//! efficiency line and the short test summary.

use super::*;
use crate::protocol::SkipPlace;

impl<W: Write> TerminalReporter<W> {
    pub(super) fn print_collect_errors(&mut self, summary: &RunSummary<'_>) {
        for report in summary.collect_reports.iter().filter(|report| report.category == "error") {
            self.sep('_', &format!("ERROR collecting {}", report.nodeid));
            if let Some(text) = &report.longrepr {
                self.line(text.trim_end_matches('\n'));
            }
        }
    }

    /// A report's text, then its captured sections as `--show-capture`
    /// lets them through (pytest's `_outrep_summary`).
    pub(super) fn print_report_body(&mut self, report: &crate::protocol::PhaseReport) {
        if let Some(text) = &report.longrepr {
            self.line(text.trim_end_matches('\n'));
        }
        self.print_sections(&report.sections);
    }

    fn print_sections(&mut self, sections: &[(String, String)]) {
        let show_capture = self.environment.summary.show_capture;
        for (title, content) in sections.iter().filter(|(title, _)| show_capture.shows(title)) {
            self.sep('-', title);
            self.line(content.strip_suffix('\n').unwrap_or(content));
        }
    }

    /// pytest's `_handle_teardown_sections`: the output of a test's passing
    /// teardown, after its failure or its pass.
    fn print_teardown_output(&mut self, test: TestView<'_>) {
        self.print_sections(test.record.teardown_output());
    }

    /// `-r P`, and `-r X` from pytest 8 on: the passing (xpassing) tests
    /// under PASSES (XPASSES), each with its captured output.
    pub(super) fn print_passes(&mut self, summary: &RunSummary<'_>) {
        let environment = &summary.header.environment;
        let pytest_7 = environment.is_pytest_7();
        for (character, outcome, title) in
            [('P', Outcome::Passed, "PASSES"), ('X', Outcome::Xpassed, "XPASSES")]
        {
            if !environment.summary.report_chars.contains(character) || (character == 'X' && pytest_7) {
                continue;
            }
            let listed = |test: &TestView<'_>| match outcome {
                Outcome::Passed => test.record.call_passed(),
                _ => test.record.outcome == outcome,
            };
            let mut tests = summary.tests().filter(listed).peekable();
            if tests.peek().is_none() {
                continue;
            }
            self.sep('=', title);
            for test in tests {
                if let Some(report) = test.record.passed_output() {
                    let name = report.head_line.as_deref().unwrap_or(test.item.domain);
                    self.coloured_sep('_', name, Colour::Green);
                    self.print_report_body(report);
                }
                self.print_teardown_output(test);
            }
        }
    }

    /// Only collection errors (their tests' errors were printed as they came).
    pub(super) fn print_collect_error_section(&mut self, summary: &RunSummary<'_>) {
        if summary.collect_reports.iter().any(|report| report.category == "error") {
            self.sep('=', "ERRORS");
            self.print_collect_errors(summary);
        }
    }

    pub(super) fn print_errors(&mut self, summary: &RunSummary<'_>) {
        let is_error = |report: &&PhaseReport| report.when != Phase::Call;
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
    pub(super) fn print_errors_of(&mut self, test: TestView<'_>) {
        for report in test.record.failed_reports().iter().filter(|report| report.when != Phase::Call) {
            let name = report.head_line.as_deref().unwrap_or(test.item.domain);
            self.coloured_sep('_', &format!("ERROR at {} of {name}", report.when), Colour::Red);
            self.print_report_body(report);
        }
    }

    pub(super) fn print_failures(&mut self, summary: &RunSummary<'_>) {
        let any = summary.tests().any(|test| {
            test.record.crash().is_some()
                || test.record.failed_reports().iter().any(|r| r.when == Phase::Call)
        });
        if !any {
            return;
        }
        self.sep('=', "FAILURES");
        for test in summary.tests() {
            self.print_failure_of(test);
        }
    }

    /// A test's failed calls and its crash, if any, each under its heading
    /// (under `--tb=line`, each failure as its crash line, after its text
    /// from pytest 9 on).
    pub(super) fn print_failure_of(&mut self, test: TestView<'_>) {
        for report in test.record.failed_reports().iter().filter(|report| report.when == Phase::Call) {
            if self.environment.summary.failures_as_lines() {
                if self.environment.pytest_major() >= 9 {
                    self.print_report_body(report);
                }
                self.line(report.crash_text.as_deref().unwrap_or_default());
                continue;
            }
            let name = report.head_line.as_deref().unwrap_or(test.item.domain);
            self.coloured_sep('_', name, Colour::Red);
            self.print_report_body(report);
            self.print_teardown_output(test);
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
    pub(super) fn print_failure_now(&mut self, test: TestView<'_>) {
        let nothing_to_show = test.record.crash().is_none() && test.record.failed_reports().is_empty();
        if nothing_to_show || !self.environment.summary.shows_tracebacks() {
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
    pub(super) fn print_coverage_error(&mut self, summary: &RunSummary<'_>) {
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
    pub(super) fn print_coverage(&mut self, summary: &RunSummary<'_>) {
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

    /// The warnings summary, unless `--disable-warnings` (pytest's `-r w`).
    pub(super) fn print_warnings(&mut self, summary: &RunSummary<'_>) {
        if summary.warnings.is_empty() || !summary.header.environment.summary.report_chars.contains('w') {
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

    /// pytest's `--durations` section: the slowest phases first; those
    /// under `--durations-min` (5 ms unless `-vv`) hidden.
    pub(super) fn print_slowest(&mut self, summary: &RunSummary<'_>) {
        let Some(count) = self.show_durations else { return };
        let environment = &summary.header.environment;
        let pytest_7 = environment.is_pytest_7();
        let given_minimum = environment.summary.durations_min;
        let minimum = match given_minimum {
            // pytest 7 lists every phase under -vv, whatever the minimum.
            Some(_) | None if pytest_7 && self.verbosity >= 2 => 0.0,
            Some(minimum) => minimum,
            None if self.verbosity >= 2 => 0.0,
            None => 0.005,
        };
        // pytest 8 suggests -vv only when the minimum was not given.
        let hint =
            if pytest_7 || given_minimum.is_none() { "  Use -vv to show these durations." } else { "" };
        let mut phases: Vec<(f64, Phase, &str)> = summary
            .tests()
            .filter(|test| test.record.outcome != Outcome::NotRun)
            .flat_map(|test| {
                let nodeid = test.item.nodeid;
                Phase::ALL.into_iter().map(move |phase| (test.record.phase_duration(phase), phase, nodeid))
            })
            // A phase that did not run (the call of a test skipped at
            // setup) has no time and no report to list.
            .filter(|(duration, _, _)| *duration > 0.0)
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
            if *duration < minimum {
                self.line("");
                self.line(&format!("({} durations < {minimum}s hidden.{hint})", phases.len() - index));
                break;
            }
            self.line(&format!("{duration:.2}s {when:<8} {nodeid}"));
        }
    }

    /// shoal's own figures: how close the run came to the physical limit.
    pub(super) fn print_stats(&mut self, summary: &RunSummary<'_>) {
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
        if stats.between_phases_seconds >= 0.005 {
            // What pytest does per test outside its phases: no phase's
            // duration holds it, so the bound above leaves it out.
            let spread = (stats.test_seconds + stats.between_phases_seconds) / workers.max(1) as f64;
            let bound = stats.startup_seconds + spread.max(stats.lower_bound_seconds - stats.startup_seconds);
            self.line(&format!(
                "between phases {:.2}s (pytest's reports and hooks, in no test's duration): \
                 counting them, the bound is {bound:.2}s and wall is {:.2}x it",
                stats.between_phases_seconds,
                wall / bound.max(f64::EPSILON)
            ));
        }
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

    pub(super) fn short_summary_line(&self, word: &str, nodeid: &str, message: Option<&str>) -> String {
        self.coloured_summary_line(word, Colour::of_mark(word), nodeid, message)
    }

    /// A short summary line whose word (a plugin's) has a colour of its own.
    fn coloured_summary_line(
        &self,
        word: &str,
        colour: Option<Colour>,
        nodeid: &str,
        message: Option<&str>,
    ) -> String {
        let line = format!("{word} {nodeid}");
        let shown = format!("{} {nodeid}", self.paint(word, colour, false));
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

    /// The short test summary: what pytest's `-r` characters ask for, in
    /// their order (`fE` by default), then shoal's own lines.
    pub(super) fn print_short_summary(&mut self, summary: &RunSummary<'_>) {
        let mut lines = Vec::new();
        for character in summary.header.environment.summary.report_chars.chars() {
            match character {
                'f' => self.failed_lines(summary, &mut lines),
                'E' => self.error_lines(summary, &mut lines),
                's' => self.skipped_lines(summary, &mut lines),
                'x' | 'X' => self.expected_failure_lines(summary, character == 'X', &mut lines),
                'p' => lines.extend(
                    summary
                        .tests()
                        .filter(|test| test.record.call_passed())
                        .map(|test| self.short_summary_line("PASSED", test.nodeid(), None)),
                ),
                // `P` (passes with their output) is not shown.
                _ => {}
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

    /// `-r f`: failed tests (and subtests), crashed and flaky ones.
    fn failed_lines(&self, summary: &RunSummary<'_>, lines: &mut Vec<String>) {
        for test in summary.tests() {
            for report in test.record.failed_reports().iter().filter(|report| report.when == Phase::Call) {
                // A subtest's line has the word its status gave (pytest 9:
                // `SUBFAILED[mixed] (i=1)`), in the colour of failures.
                let word = match &report.subtest {
                    Some(_) if !report.word.is_empty() => &report.word,
                    _ => "FAILED",
                };
                let colour = Colour::of_mark("FAILED");
                lines.push(self.coloured_summary_line(
                    word,
                    colour,
                    test.nodeid(),
                    report.message.as_deref(),
                ));
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
    }

    /// `-r E`: collection errors, then tests' set-up and teardown errors.
    fn error_lines(&self, summary: &RunSummary<'_>, lines: &mut Vec<String>) {
        for report in summary.collect_reports.iter().filter(|report| report.category == "error") {
            lines.push(self.short_summary_line("ERROR", &report.nodeid, report.message.as_deref()));
        }
        for test in summary.tests() {
            for report in test.record.failed_reports().iter().filter(|report| report.when != Phase::Call) {
                lines.push(self.short_summary_line("ERROR", test.nodeid(), report.message.as_deref()));
            }
        }
    }

    /// `-r s`: skips folded as pytest folds them, by where and why (a
    /// `skip` marker's by file alone), collectors' skips first.
    fn skipped_lines(&self, summary: &RunSummary<'_>, lines: &mut Vec<String>) {
        if summary.header.environment.summary.no_fold_skipped {
            return self.unfolded_skipped_lines(summary, lines);
        }
        let collectors = summary.collect_reports.iter().filter(|report| report.category == "skipped");
        let collectors =
            collectors.map(|report| (report.skip_at.clone(), report.message.clone().unwrap_or_default()));
        let tests = summary.tests().filter(|test| test.record.outcome == Outcome::Skipped).map(|test| {
            let place = test.record.skip_at().cloned();
            // A record replayed from elsewhere may not know where: its file.
            let place = place.or_else(|| Some(SkipPlace(test.item.path.to_owned(), None)));
            (place, test.record.skip_reason().unwrap_or_default().to_owned())
        });
        let mut folded: Vec<(SkipPlace, String, usize)> = Vec::new();
        for (place, reason) in collectors.chain(tests) {
            let Some(place) = place else { continue };
            let reason = reason.strip_prefix("Skipped: ").map_or(reason.clone(), str::to_owned);
            match folded.iter_mut().find(|(known, why, _)| *known == place && *why == reason) {
                Some((_, _, count)) => *count += 1,
                None => folded.push((place, reason, 1)),
            }
        }
        let word = self.paint("SKIPPED", Colour::of_mark("SKIPPED"), false);
        for (SkipPlace(path, line), reason, count) in folded {
            lines.push(match line {
                Some(line) => format!("{word} [{count}] {path}:{line}: {reason}"),
                None => format!("{word} [{count}] {path}: {reason}"),
            });
        }
    }

    /// `-r s` under `--no-fold-skipped`: each skipped collector and test,
    /// with its reason as pytest words it (`Skipped: ` kept).
    fn unfolded_skipped_lines(&self, summary: &RunSummary<'_>, lines: &mut Vec<String>) {
        let collectors = summary
            .collect_reports
            .iter()
            .filter(|report| report.category == "skipped")
            .map(|report| (report.nodeid.as_str(), report.message.as_deref()));
        let tests = summary
            .tests()
            .filter(|test| test.record.outcome == Outcome::Skipped)
            .map(|test| (test.nodeid(), test.record.skip_reason()));
        let word = self.paint("SKIPPED", Colour::of_mark("SKIPPED"), false);
        for (nodeid, reason) in collectors.chain(tests) {
            lines.push(match reason.filter(|reason| !reason.is_empty()) {
                Some(reason) => format!("{word} {nodeid} - {reason}"),
                None => format!("{word} {nodeid}"),
            });
        }
    }

    /// `-r x` and `-r X`: tests that failed as expected, or passed though
    /// expected to fail, with the reason. pytest 9 names the phase of an
    /// xfail outside the call (`XFAIL at setup of ...`).
    fn expected_failure_lines(&self, summary: &RunSummary<'_>, passed: bool, lines: &mut Vec<String>) {
        let (outcome, word) = if passed { (Outcome::Xpassed, "XPASS") } else { (Outcome::Xfailed, "XFAIL") };
        // pytest 7 wrote an XPASS line's reason after a space, always.
        let pytest_7 = summary.header.environment.is_pytest_7();
        let names_the_phase = summary.header.environment.pytest_major() >= 9;
        let painted = self.paint(word, Colour::of_mark(word), false);
        for test in summary.tests().filter(|test| test.record.outcome == outcome) {
            let reason = test.record.skip_reason().unwrap_or_default();
            let test_name = match test.record.xfailed_in() {
                Some(phase) if names_the_phase && phase != Phase::Call => {
                    format!("at {phase} of {}", test.nodeid())
                }
                _ => test.nodeid().to_owned(),
            };
            lines.push(match (passed && pytest_7, reason.is_empty()) {
                (true, _) => format!("{painted} {test_name} {reason}"),
                (false, true) => format!("{painted} {test_name}"),
                (false, false) => format!("{painted} {test_name} - {reason}"),
            });
        }
    }
}

/// pytest's `_format_trimmed(" - {}", message, available)`: the first line
/// of the message, cut with `...` to fit.
pub(super) fn trim_message(message: &str, available: usize) -> Option<String> {
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
