//! Reporters: sinks fed by the run's events, which never influence the run.
//!
//! The run command calls every [`Reporter`] with the same facts from the
//! results model: the run started ([`RunHeader`]), a test ended
//! ([`crate::results::TestRecord`]), the run ended ([`RunSummary`]). Each
//! reporter renders them its own way: the terminal in pytest's shape, the
//! JSON report file. Only the commands build reporters: this is a leaf.

pub mod events;
pub mod github;
pub mod json;
pub mod junit;
#[cfg(test)]
pub(crate) mod sample;
pub mod terminal;
pub mod timeline;

use crate::protocol::PhaseReport;
use crate::results::{RunHeader, RunSummary, TestView};

/// A sink of run events.
pub trait Reporter {
    /// Collection is done and tests are about to start.
    fn run_started(&mut self, header: &RunHeader);
    /// A test has its final outcome; `done` of `total` are final now.
    /// `reports` are all of pytest's reports for it (empty if it did not run).
    fn test_finished(&mut self, test: TestView<'_>, reports: &[PhaseReport], done: usize, total: usize);
    /// The run is over.
    fn run_finished(&mut self, summary: &RunSummary<'_>) -> Result<(), crate::errors::ShoalError>;

    /// A test attempt failed and the test will be rerun.
    fn attempt_retried(&mut self, _nodeid: &str, _worker: usize, _next_attempt: u32) {}

    /// A worker slot gets a new process (after a crash, a timeout, the
    /// memory limit, or for a rerun).
    fn worker_replaced(&mut self, _worker: usize) {}

    /// A worker began a test (`elapsed`: seconds since the run started).
    fn test_started(&mut self, _nodeid: &str, _worker: usize, _elapsed: f64) {}

    /// A test has been running on `worker` for longer than its slow
    /// timeout, `threshold` seconds, and is still running.
    fn test_slow(&mut self, _nodeid: &str, _worker: usize, _threshold: f64) {}

    /// How often this reporter wants [`Reporter::tick`] while tests run.
    fn refresh_interval(&self) -> Option<std::time::Duration> {
        None
    }

    /// Time passes (for live displays); `elapsed` as in `test_started`.
    fn tick(&mut self, _elapsed: f64) {}
}
