//! The pure scheduling core of shoal: which test goes to which worker next.
//!
//! The [`Scheduler`] is a state machine with no processes, no clock and no I/O:
//! the runner feeds it [`Event`]s (a worker is ready, a test finished, a worker
//! exited, the user interrupted) and carries out the [`Action`]s it returns
//! (send tests to a worker, stop or shut a worker down, start a replacement,
//! record tests as lost or not run). Keeping it pure makes every decision
//! testable with plain tables and property tests.
//!
//! Tests are identified by [`TestId`], an index into the runner's table of
//! collected tests; the scheduler never sees node ids.
//!
//! # Dispatch
//!
//! One central queue, in the order the runner gives, pulled dynamically: a
//! worker is topped up whenever its queue runs low, so no worker idles while
//! tests wait. pytest tears fixtures down according to the *next* test, so a
//! worker always holds its next test before it finishes the current one: a
//! worker with work holds at least two tests until the queue is empty, and is
//! then told to shut down, which runs its last test with no successor. Early
//! in a run tests go out in chunks (fewer round trips); the chunks shrink as
//! the queue drains so the workers finish together.

use std::collections::VecDeque;

/// Index of a test in the runner's table of collected tests.
pub type TestId = usize;

/// Index of a worker slot (`gw0` is slot 0). A replacement reuses its slot.
pub type WorkerId = usize;

/// The largest chunk sent to a worker at once.
pub const MAX_CHUNK: usize = 64;

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
    /// The worker obeyed a [`Action::Stop`]: these assigned tests did not run.
    WorkerStopped {
        /// The worker.
        worker: WorkerId,
        /// Tests it dropped without starting.
        dropped: Vec<TestId>,
    },
    /// The worker's process is gone, for whatever reason.
    WorkerExited {
        /// The worker.
        worker: WorkerId,
    },
    /// The user asked the run to stop (Ctrl-C, SIGTERM).
    Interrupted,
}

/// Why a test ended without running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NotRunReason {
    /// `-x` or `--maxfail` was reached.
    MaxFail,
    /// Workers kept dying and the restart budget ran out.
    WorkerRestartsExhausted,
    /// The user interrupted the run.
    Interrupted,
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Number of worker slots.
    pub workers: usize,
    /// Stop after this many failed tests (`-x` is 1); `None` never stops.
    pub max_failures: Option<u64>,
    /// How many times in total a dead worker may be replaced.
    pub max_worker_restarts: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TestState {
    Pending,
    Assigned(WorkerId),
    Final,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WorkerPhase {
    /// Started, not yet collected.
    Starting,
    /// Accepting work.
    Active,
    /// Told to stop or shut down; accepts nothing more.
    Ending,
    /// Process gone.
    Exited,
}

#[derive(Debug, Clone)]
struct WorkerState {
    phase: WorkerPhase,
    /// Tests sent and not yet finished, in run order: the first is running.
    assigned: VecDeque<TestId>,
}

/// The scheduling state machine. See the crate docs.
#[derive(Debug, Clone)]
pub struct Scheduler {
    config: SchedulerConfig,
    pending: VecDeque<TestId>,
    tests: Vec<TestState>,
    workers: Vec<WorkerState>,
    failures: u64,
    restarts_used: u32,
    stopping: Option<NotRunReason>,
}

impl Scheduler {
    /// A scheduler for `test_count` tests, dispatched in `order` (a
    /// permutation of `0..test_count`), with every worker slot starting.
    ///
    /// # Panics
    /// When `order` is not a permutation of `0..test_count` or there are no
    /// workers: both are bugs in the caller.
    pub fn new(config: SchedulerConfig, test_count: usize, order: Vec<TestId>) -> Self {
        assert!(config.workers > 0, "a run needs at least one worker");
        let mut seen = vec![false; test_count];
        for &test in &order {
            assert!(test < test_count && !seen[test], "order must be a permutation");
            seen[test] = true;
        }
        assert_eq!(order.len(), test_count, "order must be a permutation");
        let workers = (0..config.workers)
            .map(|_| WorkerState { phase: WorkerPhase::Starting, assigned: VecDeque::new() })
            .collect();
        Self {
            config,
            pending: order.into(),
            tests: vec![TestState::Pending; test_count],
            workers,
            failures: 0,
            restarts_used: 0,
            stopping: None,
        }
    }

    /// Feeds one event and returns what to do, in order.
    pub fn handle(&mut self, event: Event) -> Vec<Action> {
        let mut actions = Vec::new();
        match event {
            Event::WorkerReady { worker } => {
                if self.workers[worker].phase == WorkerPhase::Starting {
                    self.workers[worker].phase = WorkerPhase::Active;
                }
            }
            Event::TestFinished { worker, test, failed } => {
                self.finish_test(worker, test, failed, &mut actions);
            }
            Event::WorkerStopped { worker, dropped } => {
                let reason = self.stopping.unwrap_or(NotRunReason::Interrupted);
                let dropped: Vec<TestId> = dropped
                    .into_iter()
                    .filter(|&test| self.tests[test] == TestState::Assigned(worker))
                    .collect();
                for &test in &dropped {
                    self.tests[test] = TestState::Final;
                }
                self.workers[worker].assigned.retain(|test| !dropped.contains(test));
                if !dropped.is_empty() {
                    actions.push(Action::NotRun { tests: dropped, reason });
                }
            }
            Event::WorkerExited { worker } => self.worker_exited(worker, &mut actions),
            Event::Interrupted => self.stop(NotRunReason::Interrupted, &mut actions),
        }
        self.dispatch(&mut actions);
        actions
    }

    /// True when every test has its final outcome.
    pub fn all_tests_final(&self) -> bool {
        self.tests.iter().all(|state| *state == TestState::Final)
    }

    /// Why the run is stopping early, if it is.
    pub fn stopping(&self) -> Option<NotRunReason> {
        self.stopping
    }

    /// How many failures have been counted towards `--maxfail`.
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// The test a worker is running now (the first it holds), if any.
    pub fn running_on(&self, worker: WorkerId) -> Option<TestId> {
        self.workers[worker].assigned.front().copied()
    }

    fn finish_test(&mut self, worker: WorkerId, test: TestId, failed: bool, actions: &mut Vec<Action>) {
        if self.tests.get(test) != Some(&TestState::Assigned(worker)) {
            return;
        }
        self.tests[test] = TestState::Final;
        self.workers[worker].assigned.retain(|&held| held != test);
        if failed {
            self.failures += 1;
            if self.config.max_failures.is_some_and(|limit| self.failures >= limit) {
                self.stop(NotRunReason::MaxFail, actions);
            }
        }
    }

    fn worker_exited(&mut self, worker: WorkerId, actions: &mut Vec<Action>) {
        let state = &mut self.workers[worker];
        state.phase = WorkerPhase::Exited;
        let held: Vec<TestId> = state.assigned.drain(..).collect();
        let Some((&running, queued)) = held.split_first() else {
            return;
        };
        self.tests[running] = TestState::Final;
        actions.push(Action::TestLost { test: running, worker });
        if let Some(reason) = self.stopping {
            for &test in queued {
                self.tests[test] = TestState::Final;
            }
            if !queued.is_empty() {
                actions.push(Action::NotRun { tests: queued.to_vec(), reason });
            }
            return;
        }
        for &test in queued.iter().rev() {
            self.tests[test] = TestState::Pending;
            self.pending.push_front(test);
        }
        if self.pending.is_empty() {
            return;
        }
        if self.restarts_used < self.config.max_worker_restarts {
            self.restarts_used += 1;
            self.workers[worker].phase = WorkerPhase::Starting;
            actions.push(Action::StartWorker { worker });
        } else if !self.any_worker_can_take_work() {
            self.stop(NotRunReason::WorkerRestartsExhausted, actions);
        }
    }

    fn any_worker_can_take_work(&self) -> bool {
        self.workers.iter().any(|state| matches!(state.phase, WorkerPhase::Starting | WorkerPhase::Active))
    }

    fn stop(&mut self, reason: NotRunReason, actions: &mut Vec<Action>) {
        if self.stopping.is_some_and(|current| current >= reason) {
            return;
        }
        self.stopping = Some(reason);
        let unsent: Vec<TestId> = self.pending.drain(..).collect();
        for &test in &unsent {
            self.tests[test] = TestState::Final;
        }
        if !unsent.is_empty() {
            actions.push(Action::NotRun { tests: unsent, reason });
        }
        for (worker, state) in self.workers.iter_mut().enumerate() {
            match state.phase {
                WorkerPhase::Active | WorkerPhase::Ending if !state.assigned.is_empty() => {
                    state.phase = WorkerPhase::Ending;
                    actions.push(Action::Stop { worker });
                }
                WorkerPhase::Active | WorkerPhase::Starting => {
                    state.phase = WorkerPhase::Ending;
                    actions.push(Action::Shutdown { worker });
                }
                WorkerPhase::Ending | WorkerPhase::Exited => {}
            }
        }
    }

    /// Tops up every active worker whose queue runs low; shuts workers down
    /// once nothing is left to send.
    fn dispatch(&mut self, actions: &mut Vec<Action>) {
        let active = self.workers.iter().filter(|state| state.phase == WorkerPhase::Active).count();
        for worker in 0..self.workers.len() {
            if self.workers[worker].phase != WorkerPhase::Active {
                continue;
            }
            if self.pending.is_empty() {
                self.workers[worker].phase = WorkerPhase::Ending;
                actions.push(Action::Shutdown { worker });
                continue;
            }
            let target = 1 + chunk_size(self.pending.len(), active);
            let held = self.workers[worker].assigned.len();
            if held * 2 > target && held >= 2 {
                continue;
            }
            let take = (target.max(2) - held).min(self.pending.len());
            let tests: Vec<TestId> = self.pending.drain(..take).collect();
            for &test in &tests {
                self.tests[test] = TestState::Assigned(worker);
            }
            self.workers[worker].assigned.extend(tests.iter().copied());
            actions.push(Action::Run { worker, tests });
            if self.pending.is_empty() {
                // Saying so now lets the worker run its last test without
                // waiting for another round trip.
                self.workers[worker].phase = WorkerPhase::Ending;
                actions.push(Action::Shutdown { worker });
            }
        }
    }
}

/// How many tests to hand a worker at once: a quarter of each worker's fair
/// share of what is left, between 1 and [`MAX_CHUNK`].
fn chunk_size(pending: usize, active_workers: usize) -> usize {
    (pending / (4 * active_workers.max(1))).clamp(1, MAX_CHUNK)
}

/// The most tests a worker ever holds at once.
pub const MAX_HELD: usize = MAX_CHUNK + 1;

#[cfg(test)]
mod tests;
