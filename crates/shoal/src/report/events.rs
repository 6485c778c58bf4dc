//! `--events PATH` (or `-` for stdout): the run as it happens, one JSON
//! object a line, flushed as each is written, so other tools can follow a
//! run live: `run_started`, `test_started`, `test_slow` (past its slow
//! timeout, still running), `test_finished`, `attempt_retried`,
//! `worker_replaced`, `run_finished`. Each carries `event` and `time`
//! (seconds since the run started).

use std::io::Write;
use std::time::Instant;

use serde_json::json;

use crate::errors::ShoalError;
use crate::protocol::PhaseReport;
use crate::report::Reporter;
use crate::results::{RunHeader, RunSummary, TestView};

/// Streams run events as JSON lines.
pub struct EventsReporter {
    out: Box<dyn Write>,
    started: Instant,
}

impl EventsReporter {
    /// Events to `out`.
    pub fn new(out: Box<dyn Write>) -> Self {
        Self { out, started: Instant::now() }
    }

    fn emit(&mut self, mut event: serde_json::Value) {
        event["time"] = json!(self.started.elapsed().as_secs_f64());
        let _ = writeln!(self.out, "{event}");
        let _ = self.out.flush();
    }
}

impl Reporter for EventsReporter {
    fn run_started(&mut self, header: &RunHeader) {
        self.emit(json!({
            "event": "run_started",
            "tests": header.selected,
            "deselected": header.deselected,
            "workers": header.workers,
            "mode": header.mode,
            "python": header.environment.python,
            "pytest": header.environment.pytest,
            "expected_seconds": header.expectation.map(|expectation| expectation.wall_seconds),
            "profile": header.profile,
        }));
    }

    fn test_finished(&mut self, test: TestView<'_>, _reports: &[PhaseReport], done: usize, total: usize) {
        self.emit(json!({
            "event": "test_finished",
            "nodeid": test.nodeid(),
            "outcome": test.record.outcome,
            "reason": test.record.not_run_reason.map(|cause| cause.as_str()),
            "duration": test.record.duration,
            "worker": test.record.worker.map(|slot| format!("gw{slot}")),
            "done": done,
            "total": total,
        }));
    }

    fn test_started(&mut self, nodeid: &str, worker: usize, _elapsed: f64) {
        self.emit(json!({"event": "test_started", "nodeid": nodeid, "worker": format!("gw{worker}")}));
    }

    fn test_slow(&mut self, nodeid: &str, worker: usize, threshold: f64) {
        self.emit(json!({
            "event": "test_slow",
            "nodeid": nodeid,
            "worker": format!("gw{worker}"),
            "slow_timeout": threshold,
        }));
    }

    fn attempt_retried(&mut self, nodeid: &str, worker: usize, next_attempt: u32) {
        self.emit(json!({
            "event": "attempt_retried",
            "nodeid": nodeid,
            "worker": format!("gw{worker}"),
            "next_attempt": next_attempt,
        }));
    }

    fn worker_replaced(&mut self, worker: usize) {
        self.emit(json!({"event": "worker_replaced", "worker": format!("gw{worker}")}));
    }

    fn run_finished(&mut self, summary: &RunSummary<'_>) -> Result<(), ShoalError> {
        self.emit(json!({
            "event": "run_finished",
            "counts": summary.tally.parts(),
            "wall_seconds": summary.wall_seconds,
            "exit_code": summary.exit_code,
        }));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::cell::RefCell;
    use std::rc::Rc;

    /// A writer whose bytes the test can still read after the reporter
    /// took it.
    #[derive(Clone, Default)]
    struct Shared(Rc<RefCell<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.borrow_mut().write(bytes)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn sample_run_snapshot() {
        let run = crate::report::sample::SampleRun::new();
        let out = Shared::default();
        run.drive(&mut EventsReporter::new(Box::new(out.clone())));
        let text = String::from_utf8(out.0.borrow().clone()).expect("UTF-8 output");
        // `time` is wall-clock: check it is there and a number, then redact it.
        let lines: Vec<String> = text
            .lines()
            .map(|line| {
                let mut event: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
                assert!(event["time"].is_f64(), "time is a number in {line}");
                event["time"] = json!("[time]");
                event.to_string()
            })
            .collect();
        insta::assert_snapshot!(lines.join("\n"));
    }
}
