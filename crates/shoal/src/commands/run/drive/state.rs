//! The state of a run while its tests run: every test's record as it
//! becomes final (told to the reporters), failed attempts kept for reruns,
//! and the records of tests whose worker ended under them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use shoal_scheduler::{Scheduler, TestId};

use crate::pool::Pool;
use crate::protocol::{PhaseReport, WarningMessage};
use crate::report::Reporter;
use crate::results::{CrashDetails, Outcome, Tally, TestDetails, TestRecord, TestView};
use crate::table::TestTable;
use crate::worker::WorkerKey;

/// The state of a run while tests run.
pub(super) struct Run<'a> {
    pub(super) table: TestTable,
    /// The whole collection when `--lf` runs part of it: what a
    /// replacement worker's collection is checked against.
    pub(super) whole_collection: Option<TestTable>,
    /// Every test's record; a test is final once `is_final` says so.
    pub(super) records: Vec<TestRecord>,
    pub(super) is_final: Vec<bool>,
    /// Tests final so far, those reported before the run (cached) included.
    pub(super) done: usize,
    /// Tests the reporters count: the table's and those reported before.
    pub(super) total: usize,
    /// The closing line's counts, added up as reports arrive.
    pub(super) tally: Tally,
    pub(super) warnings: Vec<WarningMessage>,
    pub(super) reporters: &'a mut [Box<dyn Reporter>],
    /// `(worker slot, test)` in the order tests finished.
    pub(super) execution_order: Vec<(u16, u32)>,
    /// Latest CPU seconds and peak memory (KiB) of each worker process.
    pub(super) usage: HashMap<WorkerKey, (f64, u64)>,
    /// The tests' protocol time outside their phases, added up (see
    /// `protocol::Finished::between_phases`).
    pub(super) between_phases_seconds: f64,
    /// When the run started: the scheduler's clock counts from here.
    pub(super) clock: Instant,
    /// The monotonic clock's reading (see `protocol::monotonic_seconds`)
    /// when `clock` read 0: a worker's end times, in the run's seconds.
    pub(super) monotonic_at_start: f64,
    /// Each test's timeout, as the scheduler has it (empty when no test
    /// has one): the record of a test killed for it names it.
    pub(super) timeouts: Vec<Option<f64>>,
    /// Each test's slow timeout (empty when no test has one).
    pub(super) slow_timeouts: Vec<Option<f64>>,
    /// Tests whose results a forked worker may send together (see
    /// `Workload::batchable`).
    pub(super) quick: Vec<bool>,
    /// The test each slot was last reported slow for.
    pub(super) announced_slow: Vec<Option<TestId>>,
    /// The last test each slot finished, with its memory after it (KiB).
    pub(super) last_finished: HashMap<usize, (TestId, u64)>,
    /// What the summary should mention (replaced workers, leaked processes).
    pub(super) notices: Vec<String>,
    /// Failed attempts of tests waiting for a rerun, oldest first.
    pub(super) attempts: HashMap<TestId, Vec<TestRecord>>,
    /// When the test a dead worker was running had started.
    pub(super) died_running_since: HashMap<usize, f64>,
    /// The test each slot was last announced as running.
    pub(super) announced_running: Vec<Option<TestId>>,
    /// Split collection: the test files (node ids) the scheduler's loads
    /// index; empty with full collection.
    pub(super) test_files: Vec<crate::plan::LoadTarget>,
    /// `-x`/`--maxfail` is on: a worker waits for shoal's word after each
    /// test with a failed report, so nothing starts past the limit.
    pub(super) confirm_failures: bool,
    /// The worker waiting for `continue` after the failure just handled.
    pub(super) failure_to_answer: Option<usize>,
    /// With a shared queue: tests whose record became final, with their
    /// reports, until the queue takes them.
    pub(super) outbox: Option<Vec<(TestId, Vec<PhaseReport>)>>,
}

impl Run<'_> {
    /// Seconds since the run started, the scheduler's clock.
    pub(super) fn now(&self) -> f64 {
        self.clock.elapsed().as_secs_f64()
    }

    /// Keeps a failed attempt of a test that will be rerun; pytest-
    /// rerunfailures counts it as a `rerun` in the closing line.
    pub(super) fn keep_attempt(&mut self, test: TestId, record: TestRecord, next_attempt: u32) {
        self.tally.add("rerun", 1);
        let worker = record.worker.map_or(0, usize::from);
        for reporter in self.reporters.iter_mut() {
            reporter.attempt_retried(self.table.nodeid(test), worker, next_attempt);
        }
        self.attempts.entry(test).or_default().push(record);
    }

    /// Tells the reporters of tests workers have begun since last asked.
    pub(super) fn announce_starts(&mut self, scheduler: &Scheduler, workers: usize) {
        self.announced_running.resize(workers, None);
        let elapsed = self.now();
        for worker in 0..workers {
            let running = scheduler.running(worker).map(|(test, _)| test);
            if running == self.announced_running[worker] {
                continue;
            }
            self.announced_running[worker] = running;
            if let Some(test) = running {
                for reporter in self.reporters.iter_mut() {
                    reporter.test_started(self.table.nodeid(test), worker, elapsed);
                }
            }
        }
    }

    /// A running test on `worker` not yet reported slow: it, its slow
    /// timeout, and when it passes it (run seconds).
    fn slow_due(&self, scheduler: &Scheduler, worker: usize) -> Option<(TestId, f64, f64)> {
        let (test, since) = scheduler.running(worker)?;
        let threshold = self.slow_timeouts.get(test).copied().flatten()?;
        if self.announced_slow.get(worker) == Some(&Some(test)) {
            return None;
        }
        Some((test, threshold, since + threshold))
    }

    /// When the scheduler wants a tick (a timeout, a rerun, the budget)
    /// and when the next running test passes its slow timeout.
    pub(super) fn next_wake(&self, scheduler: &Scheduler, workers: usize) -> [Option<Instant>; 2] {
        let at_run_seconds = |at: f64| self.clock + Duration::from_secs_f64(at.max(0.0));
        let slow = (0..workers)
            .filter_map(|worker| self.slow_due(scheduler, worker))
            .map(|(_, _, due)| due)
            .min_by(f64::total_cmp);
        [scheduler.next_deadline().map(at_run_seconds), slow.map(at_run_seconds)]
    }

    /// Tells the reporters of running tests that passed their slow timeout
    /// since last asked (once per test and worker).
    pub(super) fn announce_slow(&mut self, scheduler: &Scheduler, workers: usize) {
        if self.slow_timeouts.is_empty() {
            return;
        }
        self.announced_slow.resize(workers, None);
        let now = self.now();
        for worker in 0..workers {
            let Some((test, threshold, due)) = self.slow_due(scheduler, worker) else { continue };
            if due <= now {
                self.announced_slow[worker] = Some(test);
                for reporter in self.reporters.iter_mut() {
                    reporter.test_slow(self.table.nodeid(test), worker, threshold);
                }
            }
        }
    }

    /// Ticks the reporters that asked for it, when due.
    pub(super) fn refresh(&mut self, last: &mut Instant, interval: Option<Duration>) {
        if interval.is_some_and(|interval| last.elapsed() >= interval) {
            *last = Instant::now();
            let elapsed = self.now();
            self.reporters.iter_mut().for_each(|reporter| reporter.tick(elapsed));
        }
    }

    /// The number of the attempt a test is on (1 for its first run).
    pub(super) fn attempt_of(&self, test: TestId) -> usize {
        1 + self.attempts.get(&test).map_or(0, Vec::len)
    }

    /// Gives a test its final record (once) and tells the reporters. A test
    /// that passes after failed attempts is flaky; its attempts stay with it.
    pub(super) fn record(&mut self, test: TestId, mut record: TestRecord, reports: &[PhaseReport]) {
        if self.is_final[test] {
            return;
        }
        if let Some(earlier) = self.attempts.remove(&test) {
            if record.outcome == Outcome::Passed {
                record.outcome = Outcome::Flaky;
                self.tally.add("flaky", 1);
            }
            record.details.get_or_insert_with(Default::default).earlier_attempts = earlier;
        }
        self.is_final[test] = true;
        self.done += 1;
        for report in reports {
            self.tally.add(&report.category, 1);
        }
        if record.outcome == Outcome::Crashed {
            self.tally.add("crashed", 1);
        }
        if record.outcome == Outcome::Timeout {
            self.tally.add("timeout", 1);
        }
        if record.outcome == Outcome::NotRun {
            self.tally.add("not run", 1);
        }
        if let Some(outbox) = self.outbox.as_mut() {
            outbox.push((test, reports.to_vec()));
        }
        let view = TestView { item: self.table.item(test), record: &record };
        for reporter in self.reporters.iter_mut() {
            reporter.test_finished(view, reports, self.done, self.total);
        }
        self.records[test] = record;
    }
}

/// How a test's worker ended under it: a crash, or a kill for a timeout.
pub(super) fn ending(
    pool: &Pool,
    run: &Run<'_>,
    test: TestId,
    worker: usize,
    outcome: Outcome,
) -> CrashDetails {
    let slot = &pool.slots[worker];
    let status = slot.exit.clone().unwrap_or_else(|| "an unknown status".to_owned());
    let nodeid = run.table.nodeid(test);
    if outcome == Outcome::Timeout {
        let seconds = run.timeouts.get(test).copied().flatten();
        let limit = seconds.map_or_else(String::new, |seconds| format!(" after {seconds}s"));
        let description = if slot.exit.is_some() {
            format!(
                "{nodeid} timed out{limit}: worker gw{worker}'s stacks were dumped and its process group \
                 killed ({status}); a new worker took over"
            )
        } else {
            format!(
                "{nodeid} timed out{limit}: worker gw{worker}'s stacks were dumped; the test ended only then"
            )
        };
        CrashDetails { message: format!("timed out{limit}"), description, output: slot.handle.output_tail() }
    } else {
        CrashDetails {
            message: format!("worker gw{worker} died: {status}"),
            description: format!("worker gw{worker} died while running {nodeid}: {status}"),
            output: slot.handle.output_tail(),
        }
    }
}

/// The record of a test whose worker ended under it.
pub(super) fn ended_record(
    outcome: Outcome,
    worker: usize,
    crash: CrashDetails,
    run: &Run<'_>,
) -> TestRecord {
    let mut record = TestRecord::new(outcome);
    record.worker = u16::try_from(worker).ok();
    if let Some(&since) = run.died_running_since.get(&worker) {
        record.started = since as f32;
        record.duration = (run.now() - since).max(0.0) as f32;
    }
    record.details = Some(Box::new(TestDetails { crash: Some(crash), ..TestDetails::default() }));
    record
}
