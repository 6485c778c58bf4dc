//! The scheduler's vocabulary: the [`Event`]s it is told, the [`Action`]s
//! it decides, why tests end without running, and its configuration.

use crate::{TestId, WorkerId};

/// A worker's own count, kept where it survives the worker's death, of the
/// tests it started and finished (counted before their results were sent).
/// Finished tests beyond the results that arrived lost their results: they
/// go back to the queue, blamed for nothing. A test started and not
/// finished is the one it died in; none such: it died between two tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Tests it started.
    pub started: u64,
    /// Tests it finished.
    pub finished: u64,
}

/// What the scheduler is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A worker finished collecting and waits for work.
    WorkerReady {
        /// The worker.
        worker: WorkerId,
    },
    /// A test assigned to the worker ended, with whatever outcome.
    TestFinished {
        /// The worker that ran it.
        worker: WorkerId,
        /// The test.
        test: TestId,
        /// Whether it counts as a failure for `--maxfail`.
        failed: bool,
    },
    /// The worker holds nothing after its running test and needs its next
    /// test (or to hear there is none) before that test can tear down.
    WorkerWantsWork {
        /// The worker.
        worker: WorkerId,
    },
    /// The worker obeyed a [`Action::Stop`], or stopped itself because its
    /// memory passed the limit: these assigned tests did not run.
    WorkerStopped {
        /// The worker.
        worker: WorkerId,
        /// Tests it dropped without starting.
        dropped: Vec<TestId>,
        /// It stopped because its memory passed the limit: it is to be
        /// replaced and its tests run elsewhere.
        over_memory: bool,
    },
    /// The worker's process is gone, for whatever reason.
    WorkerExited {
        /// The worker.
        worker: WorkerId,
        /// Its own count of the tests it started and finished, when it kept
        /// one (a worker that sends quick tests' results together does).
        /// `None`: every result it had was sent at once.
        progress: Option<Progress>,
    },
    /// The user asked the run to stop (Ctrl-C, SIGTERM).
    Interrupted,
    /// Time has passed: deadlines up to now are due.
    Tick,
    /// A shared queue hands these withheld tests to this run, as one unit
    /// (see [`crate::Scheduler::withhold_all`]).
    TestsReleased {
        /// The tests.
        tests: Vec<TestId>,
    },
    /// The shared queue has nothing to release now (other machines, or
    /// this one, hold the rest). A worker waiting at its test's teardown
    /// for a next test ends: its test's result is what the rest may wait
    /// for. A fresh worker starts if work comes.
    NothingToRelease,
    /// No more tests will be released.
    NoMoreTests,
    /// A shared queue hands this withheld test to this run for a rerun,
    /// after `attempts` failed attempts (anywhere): it counts them towards
    /// its reruns.
    RerunReleased {
        /// The test.
        test: TestId,
        /// Failed attempts it has made.
        attempts: u8,
    },
}

/// Why a test ended without running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NotRunReason {
    /// `-x` or `--maxfail` was reached.
    MaxFail,
    /// Workers kept dying and the restart budget ran out.
    WorkerRestartsExhausted,
    /// The time budget (`--budget`) would not let them end in time.
    Budget,
    /// The user interrupted the run.
    Interrupted,
}

/// How a retried attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryCause {
    /// It failed (reported by pytest).
    Failed,
    /// Its worker died under it.
    Crashed,
    /// It ran past its timeout.
    TimedOut,
}

/// What the runner must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Append these tests to the worker's queue.
    Run {
        /// The worker.
        worker: WorkerId,
        /// Tests, in the order it runs them.
        tests: Vec<TestId>,
        /// Split collection: test files (indexes into the workload's
        /// `file_load`) the worker must import and collect first.
        load: Vec<usize>,
    },
    /// Tell the worker to drop its queue and end after its current test.
    Stop {
        /// The worker.
        worker: WorkerId,
    },
    /// Tell the worker to run what it holds, then end.
    Shutdown {
        /// The worker.
        worker: WorkerId,
    },
    /// Start a new worker in this slot (it reports [`Event::WorkerReady`]).
    StartWorker {
        /// The slot.
        worker: WorkerId,
    },
    /// The test ran past its timeout: dump the worker's stacks and kill its
    /// process group (its exit is then reported as [`Event::WorkerExited`]).
    TimeOut {
        /// The worker.
        worker: WorkerId,
        /// The test it is stuck in.
        test: TestId,
    },
    /// The test a worker was being timed out for finished before the kill
    /// landed: call the kill off; the worker goes on.
    CancelTimeOut {
        /// The worker.
        worker: WorkerId,
    },
    /// The test's worker was killed for running past its timeout: its final
    /// outcome is a timeout.
    TestTimedOut {
        /// The test.
        test: TestId,
        /// The worker that was running it.
        worker: WorkerId,
    },
    /// The test's attempt failed (or crashed, or timed out) and it has
    /// reruns left: it is not final; it runs again on a fresh worker.
    Retry {
        /// The test.
        test: TestId,
        /// The worker the failed attempt ran on.
        worker: WorkerId,
        /// How the attempt ended.
        cause: RetryCause,
        /// The number of the attempt to come (2 for the first rerun).
        next_attempt: u32,
    },
    /// The worker died while running this test: its final outcome is a crash.
    TestLost {
        /// The test.
        test: TestId,
        /// The worker that was running it.
        worker: WorkerId,
    },
    /// These tests end without running.
    NotRun {
        /// The tests.
        tests: Vec<TestId>,
        /// Why.
        reason: NotRunReason,
    },
}

/// Limits the scheduler enforces.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerConfig {
    /// Number of worker slots.
    pub workers: usize,
    /// Stop after this many failed tests (`-x` is 1); `None` never stops.
    pub max_failures: Option<u64>,
    /// How many times a worker that died before finishing any test, with
    /// no test running (a broken start-up), may be replaced in a run.
    pub max_worker_restarts: u32,
    /// `--budget`: the clock reading by which every test must have ended;
    /// no test expected to end later is started.
    pub budget: Option<f64>,
    /// `--reruns-delay`: seconds between a failed attempt and its rerun.
    pub rerun_delay: f64,
}
