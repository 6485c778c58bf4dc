//! The live footer on a terminal: what each worker runs, a progress bar and
//! the expected time left, redrawn in place below the output.

use super::*;

/// How often the live footer is redrawn.
pub(super) const LIVE_REFRESH: std::time::Duration = std::time::Duration::from_millis(150);

/// Width of the live progress bar, in cells.
pub(super) const BAR_CELLS: usize = 24;

/// What the live footer shows, and how many lines of it are on screen.
#[derive(Debug, Default)]
pub(super) struct LiveFooter {
    /// Per worker: the test it runs and when it began (run seconds).
    pub(super) running: Vec<Option<(String, f64)>>,
    /// Per worker: whether its test has passed its slow timeout.
    pub(super) slow: Vec<bool>,
    pub(super) passed: usize,
    pub(super) failed: usize,
    pub(super) skipped: usize,
    pub(super) done: usize,
    pub(super) total: usize,
    pub(super) elapsed: f64,
    /// The plan's expected wall time, from the durations history.
    pub(super) expected_wall: Option<f64>,
    /// Lines drawn below the output, to erase before the next write.
    pub(super) drawn: usize,
}

impl LiveFooter {
    /// Seconds left: the plan's when there is history, else the pace so far.
    pub(super) fn eta(&self) -> Option<f64> {
        match self.expected_wall {
            Some(wall) => Some((wall - self.elapsed).max(0.0)),
            None if self.done > 0 => Some(self.elapsed / self.done as f64 * (self.total - self.done) as f64),
            None => None,
        }
    }

    /// The footer's lines, each at most `width - 1` characters.
    pub(super) fn lines(&self, width: usize) -> Vec<String> {
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
                    let slow = if self.slow.get(worker).copied().unwrap_or(false) { "SLOW " } else { "" };
                    format!("  gw{worker} {:>6.1}s  {slow}{nodeid}", (self.elapsed - since).max(0.0))
                }
                None => format!("  gw{worker}    idle"),
            });
        }
        let keep = width.saturating_sub(1).max(1);
        lines.into_iter().map(|line| line.chars().take(keep).collect()).collect()
    }
}

impl<W: Write> TerminalReporter<W> {
    /// Removes the live footer from the screen, so output can go above it.
    pub(super) fn erase_footer(&mut self) {
        if let Some(footer) = self.live.as_mut().filter(|footer| footer.drawn > 0) {
            let _ = write!(self.out, "\x1b[{}A\x1b[J", footer.drawn);
            footer.drawn = 0;
        }
    }

    /// Draws the live footer below the output.
    pub(super) fn draw_footer(&mut self) {
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
    pub(super) fn live_test_finished(&mut self, test: TestView<'_>, done: usize, total: usize) {
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
            let only_errors = test.record.failed_reports().iter().all(|report| report.when != Phase::Call);
            let word =
                test.record.outcome.shoal_word().unwrap_or(if only_errors { "ERROR" } else { "FAILED" });
            let line = format!("{} {}", self.paint(word, Some(Colour::Red), false), test.nodeid());
            self.line(&line);
        }
        self.draw_footer();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Reporter;

    #[test]
    fn a_slow_test_gets_its_line_above_the_footer_and_its_mark_in_it() {
        let run = crate::report::sample::SampleRun::new();
        let mut reporter = TerminalReporter::new(Vec::new(), 80, 0, false).with_live_display(true);
        reporter.run_started(&run.header);
        reporter.test_started("tests/test_net.py::test_slow_download", 1, 0.5);
        reporter.tick(3.0);
        reporter.test_slow("tests/test_net.py::test_slow_download", 1, 2.0);
        let footer = reporter.live.as_ref().expect("live").lines(80);
        assert_eq!(footer[2], "  gw1    2.5s  SLOW tests/test_net.py::test_slow_download");
        let output = String::from_utf8(reporter.into_inner()).expect("UTF-8");
        assert!(output.contains("SLOW [>2s] tests/test_net.py::test_slow_download\n"), "{output}");
    }
}
