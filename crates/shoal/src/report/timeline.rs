//! `--timeline PATH.html`: one self-contained HTML page (no scripts, no
//! network) that shows where a run spent its time: a lane per worker, a bar
//! per test attempt coloured by outcome (node id, duration and outcome on
//! hover), the run's lower bound marked, idle time visible as gaps.

use std::fmt::Write as _;
use std::path::PathBuf;

use crate::errors::ShoalError;
use crate::fs::write_atomically_with;
use crate::protocol::PhaseReport;
use crate::report::Reporter;
use crate::results::Outcome;
use crate::results::{RunHeader, RunSummary, TestRecord, TestView};

/// Drawing width of the time axis, in pixels.
const WIDTH: f64 = 1200.0;
/// Height of a worker's lane.
const LANE: f64 = 28.0;
/// Left margin for the lane names.
const MARGIN: f64 = 60.0;

/// Writes the timeline when the run ends.
pub struct TimelineReporter {
    path: PathBuf,
}

impl TimelineReporter {
    /// A reporter writing to `path`.
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }
}

fn colour(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Passed | Outcome::Xpassed => "#3c9a5f",
        Outcome::Flaky => "#d9a21b",
        Outcome::Failed | Outcome::Error => "#d0453a",
        Outcome::Timeout => "#8e44ad",
        Outcome::Crashed => "#222222",
        Outcome::Skipped | Outcome::Xfailed | Outcome::NotRun => "#9e9e9e",
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The page for a run.
pub fn render(summary: &RunSummary<'_>) -> String {
    let workers = summary.header.workers.max(1);
    let end = f64::from(
        summary
            .records
            .iter()
            .flat_map(|record| record.earlier_attempts().iter().chain(std::iter::once(record)))
            .map(|attempt| attempt.started + attempt.duration)
            .fold(0.0f32, f32::max),
    )
    .max(summary.wall_seconds)
    .max(f64::EPSILON);
    let scale = WIDTH / end;
    let height = LANE * workers as f64 + 40.0;
    let mut bars = String::new();
    let mut count = 0usize;
    for test in summary.tests() {
        let attempts = test.record.earlier_attempts().iter().chain(std::iter::once(test.record));
        for (index, attempt) in attempts.enumerate() {
            let Some(worker) = attempt.worker else { continue };
            count += 1;
            bar(&mut bars, test.nodeid(), attempt, index + 1, f64::from(worker), scale);
        }
    }
    let bound_x = MARGIN + summary.stats.lower_bound_seconds * scale;
    let mut lanes = String::new();
    for worker in 0..workers {
        let y = 20.0 + LANE * worker as f64;
        let _ = write!(
            lanes,
            r#"<text x="4" y="{:.1}" class="lane">gw{worker}</text><line x1="{MARGIN}" y1="{:.1}" x2="{:.1}" y2="{:.1}" class="grid"/>"#,
            y + LANE * 0.65,
            y + LANE,
            MARGIN + WIDTH,
            y + LANE
        );
    }
    let title = format!(
        "shoal: {} in {:.2}s on {workers} workers ({} mode); lower bound {:.2}s",
        summary.tally.parts().join(", "),
        summary.wall_seconds,
        summary.header.mode,
        summary.stats.lower_bound_seconds
    );
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 16px; }}
.lane {{ font-size: 12px; fill: #333; }}
.grid {{ stroke: #ddd; }}
.bound {{ stroke: #1f5fbf; stroke-dasharray: 4 3; stroke-width: 2; }}
.test {{ stroke: #fff; stroke-width: 0.5; }}
</style></head>
<body>
<h1 style="font-size: 16px">{title}</h1>
<p style="font-size: 12px">Each bar is one test attempt (hover for its node id, duration and outcome); gaps are idle time; the dashed line is the lower bound <code>start-up + max(test time / workers, longest test)</code>. {count} attempts.</p>
<svg xmlns="http://www.w3.org/2000/svg" width="{:.0}" height="{height:.0}" data-attempts="{count}">
{lanes}
{bars}<line x1="{bound_x:.1}" y1="10" x2="{bound_x:.1}" y2="{:.1}" class="bound"><title>lower bound {:.2}s</title></line>
</svg>
</body></html>
"#,
        MARGIN + WIDTH + 20.0,
        height - 10.0,
        summary.stats.lower_bound_seconds,
        title = escape(&title)
    )
}

fn bar(out: &mut String, nodeid: &str, attempt: &TestRecord, number: usize, lane: f64, scale: f64) {
    let x = MARGIN + f64::from(attempt.started) * scale;
    let width = (f64::from(attempt.duration) * scale).max(0.5);
    let y = 22.0 + LANE * lane;
    let outcome = if attempt.outcome == Outcome::Flaky { Outcome::Passed } else { attempt.outcome };
    let _ = writeln!(
        out,
        r#"<rect class="test" x="{x:.2}" y="{y:.1}" width="{width:.2}" height="{:.1}" fill="{}"><title>{} (attempt {number}): {} in {:.3}s</title></rect>"#,
        LANE - 4.0,
        colour(outcome),
        escape(nodeid),
        outcome.as_str(),
        attempt.duration
    );
}

impl Reporter for TimelineReporter {
    fn run_started(&mut self, _header: &RunHeader) {}

    fn test_finished(&mut self, _test: TestView<'_>, _reports: &[PhaseReport], _done: usize, _total: usize) {}

    fn run_finished(&mut self, summary: &RunSummary<'_>) -> Result<(), ShoalError> {
        let page = render(summary);
        write_atomically_with(&self.path, |writer| writer.write_all(page.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_run_snapshot() {
        let run = crate::report::sample::SampleRun::new();
        let page = run.written_by(TimelineReporter::new);
        assert_eq!(page, render(&run.summary()));
        insta::assert_snapshot!(page);
    }
}
