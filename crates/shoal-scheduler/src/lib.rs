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
//! Size: over 600 lines, because this file is one state machine, the
//! [`Scheduler`]'s answer to every event, which reads best whole; its
//! vocabulary (`messages`), queue (`queue`) and simulation are apart.
//!
//! # Dispatch
//!
//! One central queue (`queue`), longest expected first (by classes of
//! duration, each in collection order) and keeping a
//! module with costly set-up on one worker, pulled dynamically: a worker is
//! topped up whenever its queue runs low, so no worker idles while tests
//! wait. pytest tears fixtures down according to the *next* test: a worker
//! that reaches the teardown of its last known test asks (`want_work`) and
//! waits, so its next test is decided at the last moment, knowing what every
//! other worker is doing; once nothing is left it is told to shut down,
//! which runs its last test with no successor. A worker may also hold up to
//! [`LOOKAHEAD_SECONDS`] of expected work (fewer round trips for tiny
//! tests), less as the queue drains so the workers finish together. The wait
//! for an answer does not count towards a test's timeout.

mod messages;
mod queue;
mod simulate;

use std::collections::VecDeque;

pub use messages::{Action, Event, NotRunReason, Progress, RetryCause, SchedulerConfig};
pub use queue::{LOCALITY_MIN_SETUP, Workload};
pub use simulate::simulate;

/// Index of a test in the runner's table of collected tests.
pub type TestId = usize;

/// Index of a worker slot (`gw0` is slot 0). A replacement reuses its slot.
pub type WorkerId = usize;

/// The most tests a worker ever holds at once.
pub const MAX_HELD: usize = 65;

/// Expected seconds of work a worker holds beyond its next test, at most:
/// enough to hide a round trip, little enough to keep the tail balanced.
pub const LOOKAHEAD_SECONDS: f64 = 0.05;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TestState {
    Pending,
    /// Not this run's yet: a shared queue may release it (see
    /// [`Scheduler::withhold_all`]).
    Withheld,
    /// Sent to this worker (a `u32` keeps the table small for big suites).
    Assigned(u32),
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
    /// The worker asked for its next test and has not been answered.
    wants_work: bool,
    /// When it asked: the wait for an answer does not count towards the
    /// running test's timeout (the test is done and waits to tear down).
    wants_work_since: f64,
    /// When its running test started (seconds on the runner's clock).
    running_since: Option<f64>,
    /// It was told to die for a timeout.
    timing_out: bool,
    /// It stopped itself over the memory limit and is to be replaced.
    retiring: bool,
    /// It has run nothing since it started (a rerun needs such a worker).
    fresh: bool,
    /// It was shut down to be replaced by a fresh worker for a rerun.
    recycling: bool,
    /// Results received from its process (`TestFinished`), since it started.
    results: u64,
}

/// The scheduling state machine. See the crate docs.
#[derive(Debug, Clone)]
pub struct Scheduler {
    config: SchedulerConfig,
    queue: queue::WorkQueue,
    tests: Vec<TestState>,
    workers: Vec<WorkerState>,
    failures: u64,
    /// Workers that died before finishing any test with no test to blame
    /// (a broken start-up), replaced against `max_worker_restarts`.
    restarts_used: u32,
    stopping: Option<NotRunReason>,
    /// Per-test timeouts in seconds (empty: none).
    timeouts: Vec<Option<f64>>,
    /// The runner's clock, as of the event being handled.
    now: f64,
    /// Reruns each test may have (empty: none).
    reruns: Vec<u8>,
    /// Attempts each test has made so far (failed ones, before a rerun).
    attempts: Vec<u8>,
    /// Tests waiting for a rerun, with the clock reading from which it may
    /// start (`--reruns-delay`).
    retries: VecDeque<(TestId, f64)>,
    /// Tests are withheld and more may be released: workers wait for them
    /// rather than end.
    more_coming: bool,
    /// Reruns go back to the shared queue (see [`Scheduler::hand_reruns_back`]).
    hand_back: bool,
    /// Tests handed back for a rerun, with the attempts made, not yet taken
    /// by the runner.
    handed_back: Vec<(TestId, u8)>,
}

impl Scheduler {
    /// A scheduler for the tests of `workload`, with every worker slot
    /// starting.
    ///
    /// # Panics
    /// When there are no workers, or the workload's vectors disagree: both
    /// are bugs in the caller.
    pub fn new(config: SchedulerConfig, workload: &Workload) -> Self {
        assert!(config.workers > 0, "a run needs at least one worker");
        assert_eq!(workload.expected.len(), workload.module.len(), "one module per test");
        let workers = (0..config.workers)
            .map(|_| WorkerState {
                phase: WorkerPhase::Starting,
                assigned: VecDeque::new(),
                wants_work: false,
                wants_work_since: 0.0,
                running_since: None,
                timing_out: false,
                retiring: false,
                fresh: true,
                recycling: false,
                results: 0,
            })
            .collect();
        Self {
            queue: queue::WorkQueue::new(workload, config.workers),
            tests: vec![TestState::Pending; workload.len()],
            config,
            workers,
            failures: 0,
            restarts_used: 0,
            stopping: None,
            timeouts: workload.timeouts.clone(),
            now: 0.0,
            reruns: workload.reruns.clone(),
            attempts: if workload.reruns.is_empty() { Vec::new() } else { vec![0; workload.len()] },
            retries: VecDeque::new(),
            more_coming: false,
            hand_back: false,
            handed_back: Vec::new(),
        }
    }

    /// With tests withheld: a failed test with reruns left is handed back
    /// (withheld again, for [`Scheduler::take_handed_back`]) instead of
    /// rerun here, so that any machine may rerun it
    /// ([`Event::RerunReleased`]).
    pub fn hand_reruns_back(&mut self) {
        self.hand_back = true;
    }

    /// The tests handed back for a rerun since last asked, each with the
    /// attempts it has made.
    pub fn take_handed_back(&mut self) -> Vec<(TestId, u8)> {
        std::mem::take(&mut self.handed_back)
    }

    /// Withholds every test: the runner releases them unit by unit
    /// ([`Event::TestsReleased`], when [`Scheduler::wants_tests`] says
    /// workers wait) until it says none will come ([`Event::NoMoreTests`]).
    /// Tests never released take no part in the run. Call before any event.
    pub fn withhold_all(&mut self) {
        self.queue.withhold_all();
        self.tests.iter_mut().for_each(|state| *state = TestState::Withheld);
        self.more_coming = true;
    }

    /// With tests withheld: how many active workers wait for work that only
    /// a release can give (0 once none will come, or while tests are
    /// queued).
    pub fn wants_tests(&self) -> usize {
        if !self.more_coming || !self.queue.is_empty() {
            return 0;
        }
        self.workers
            .iter()
            .filter(|state| {
                state.phase == WorkerPhase::Active && (state.wants_work || state.assigned.is_empty())
            })
            .count()
    }

    /// Feeds one event, at `now` seconds on the runner's clock (any fixed
    /// origin; it only has to move forward), and returns what to do, in order.
    pub fn handle(&mut self, now: f64, event: Event) -> Vec<Action> {
        self.now = self.now.max(now);
        let mut actions = Vec::new();
        match event {
            Event::WorkerReady { worker } => {
                if self.workers[worker].phase == WorkerPhase::Starting {
                    self.workers[worker].phase = WorkerPhase::Active;
                    self.workers[worker].fresh = true;
                }
            }
            Event::WorkerWantsWork { worker } => {
                let state = &mut self.workers[worker];
                // With more than the running test held, a batch is already
                // on its way and answers the request.
                state.wants_work = state.assigned.len() <= 1;
                state.wants_work_since = self.now;
            }
            Event::TestFinished { worker, test, failed } => {
                self.finish_test(worker, test, failed, &mut actions);
            }
            Event::WorkerStopped { worker, over_memory, .. } => {
                // A worker says `stopped` between tests: nothing it was sent
                // and has not finished will run on it, whether it listed it
                // (its queue) or not (a batch still on its way).
                let state = &mut self.workers[worker];
                let held: Vec<TestId> = state.assigned.drain(..).collect();
                state.running_since = None;
                match self.stopping {
                    Some(reason) => {
                        for &test in &held {
                            self.tests[test] = TestState::Final;
                        }
                        if !held.is_empty() {
                            actions.push(Action::NotRun { tests: held, reason });
                        }
                    }
                    None => {
                        // Over the memory limit: its tests go to the others.
                        let state = &mut self.workers[worker];
                        state.retiring = over_memory;
                        state.phase = WorkerPhase::Ending;
                        for &test in &held {
                            self.tests[test] = TestState::Pending;
                        }
                        self.queue.requeue_from(worker, &held);
                    }
                }
            }
            Event::WorkerExited { worker, progress } => self.worker_exited(worker, progress, &mut actions),
            Event::Interrupted => self.stop(NotRunReason::Interrupted, &mut actions),
            Event::Tick => self.time_out_due(&mut actions),
            Event::TestsReleased { tests } => self.release(&tests),
            Event::NothingToRelease => self.end_waiting_workers(&mut actions),
            Event::NoMoreTests => self.more_coming = false,
            Event::RerunReleased { test, attempts } => {
                if let Some(made) = self.attempts.get_mut(test) {
                    *made = (*made).max(attempts);
                }
                self.release(&[test]);
            }
        }
        self.dispatch(&mut actions);
        actions
    }

    /// True when every test has its final outcome (withheld tests that
    /// were never released count as done once none will come).
    pub fn all_tests_final(&self) -> bool {
        !self.more_coming
            && self.tests.iter().all(|state| matches!(state, TestState::Final | TestState::Withheld))
    }

    /// With nothing queued and nothing to release: workers blocked at a
    /// test's teardown end, so that test can end.
    fn end_waiting_workers(&mut self, actions: &mut Vec<Action>) {
        if !self.nothing_queued() {
            return;
        }
        for worker in 0..self.workers.len() {
            let state = &self.workers[worker];
            if state.phase == WorkerPhase::Active && state.wants_work && !state.assigned.is_empty() {
                self.end_worker(worker, actions);
            }
        }
    }

    fn nothing_queued(&self) -> bool {
        self.queue.is_empty() && self.retries.is_empty()
    }

    /// Queues released tests (those still withheld) as one unit.
    fn release(&mut self, tests: &[TestId]) {
        let released: Vec<TestId> = tests
            .iter()
            .copied()
            .filter(|&test| self.tests.get(test) == Some(&TestState::Withheld))
            .collect();
        if self.stopping.is_some() || released.is_empty() {
            return;
        }
        for &test in &released {
            self.tests[test] = TestState::Pending;
        }
        self.queue.add_unit(&released);
    }

    /// Why the run is stopping early, if it is.
    pub fn stopping(&self) -> Option<NotRunReason> {
        self.stopping
    }

    /// How many failures have been counted towards `--maxfail`.
    pub fn failures(&self) -> u64 {
        self.failures
    }

    fn finish_test(&mut self, worker: WorkerId, test: TestId, failed: bool, actions: &mut Vec<Action>) {
        self.workers[worker].results += 1;
        if self.tests.get(test) != Some(&TestState::Assigned(slot(worker))) {
            return;
        }
        let state = &mut self.workers[worker];
        let mut timed_out = false;
        if state.timing_out && state.assigned.front() == Some(&test) {
            // It ended between the stack dump and the kill: the kill must
            // not land on the next test. It still ran past its timeout (the
            // dump's signal may even be what woke it), so it timed out.
            state.timing_out = false;
            timed_out = true;
            if self.stopping.is_none() {
                state.phase = WorkerPhase::Active;
            }
            actions.push(Action::CancelTimeOut { worker });
        }
        state.assigned.retain(|&held| held != test);
        // A worker runs what it holds back to back: the next test starts now.
        state.running_since = (!state.assigned.is_empty()).then_some(self.now);
        let cause = if timed_out { RetryCause::TimedOut } else { RetryCause::Failed };
        if (failed || timed_out) && self.retry(worker, test, cause, actions) {
            return;
        }
        self.tests[test] = TestState::Final;
        if timed_out {
            actions.push(Action::TestTimedOut { test, worker });
        }
        if failed || timed_out {
            self.count_failure(actions);
        }
    }

    /// Counts a failure towards `-x`/`--maxfail`, stopping at the limit.
    fn count_failure(&mut self, actions: &mut Vec<Action>) {
        self.failures += 1;
        if self.config.max_failures.is_some_and(|limit| self.failures >= limit) {
            self.stop(NotRunReason::MaxFail, actions);
        }
    }

    /// Queues a rerun of a failed attempt when the test has reruns left and
    /// the run is not stopping; says whether it did.
    fn retry(
        &mut self,
        worker: WorkerId,
        test: TestId,
        cause: RetryCause,
        actions: &mut Vec<Action>,
    ) -> bool {
        let allowed = self.reruns.get(test).copied().unwrap_or(0);
        if self.stopping.is_some() || self.attempts.get(test).is_none_or(|&made| made >= allowed) {
            return false;
        }
        self.attempts[test] += 1;
        if self.hand_back {
            self.tests[test] = TestState::Withheld;
            self.handed_back.push((test, self.attempts[test]));
        } else {
            self.tests[test] = TestState::Pending;
            self.retries.push_back((test, self.now + self.config.rerun_delay));
        }
        actions.push(Action::Retry { test, worker, cause, next_attempt: u32::from(self.attempts[test]) + 1 });
        true
    }

    /// Whether nothing is left to send: no queued test, no rerun, and no
    /// release to come.
    fn nothing_left(&self) -> bool {
        self.nothing_queued() && !self.more_coming
    }

    fn worker_exited(&mut self, worker: WorkerId, progress: Option<Progress>, actions: &mut Vec<Action>) {
        self.queue.forget_imports(worker);
        let state = &mut self.workers[worker];
        // Told to end (nothing left suits it), and it did.
        let ended_as_told =
            state.phase == WorkerPhase::Ending && !state.timing_out && state.assigned.is_empty();
        let ended_for_a_fresh_start = state.retiring || state.recycling;
        state.phase = WorkerPhase::Exited;
        state.running_since = None;
        let held: Vec<TestId> = state.assigned.drain(..).collect();
        // Only a death no test explains counts against the restart budget:
        // one before the worker finished any test, with none running (it
        // could not start, collect or import). A test that crashes or hangs
        // its worker ends as `crashed` or `timeout` and costs nobody else;
        // a worker retired over its memory limit or recycled for a rerun
        // was ended on purpose. (A retired worker's tests were taken back
        // when it said `stopped`.)
        let (timed_out, free_replacement) = (
            state.timing_out,
            ended_for_a_fresh_start || ended_as_told || state.results > 0 || !held.is_empty(),
        );
        // Results it finished and never sent; whether it died in a test (one
        // that dies before starting any is taken to die in its first).
        let (unreported, in_test) = match progress {
            Some(Progress { started, finished }) => {
                (finished.saturating_sub(state.results), started > finished || started == 0)
            }
            None => (0, true),
        };
        let unreported = usize::try_from(unreported).unwrap_or(usize::MAX);
        state.timing_out = false;
        state.retiring = false;
        state.recycling = false;
        state.results = 0;
        if !self.settle_held(worker, &held, (unreported, in_test), timed_out, actions) {
            return;
        }
        if self.stopping.is_some() || self.nothing_left() {
            return;
        }
        let others_busy = self.workers.iter().any(|state| !state.assigned.is_empty());
        if ended_as_told && !ended_for_a_fresh_start && (self.any_worker_can_take_work() || others_busy) {
            // What is left suits the other workers, or waits on what they
            // run (a serial test, a budget they may use up): a replacement
            // would be told to end at once, and replaced again, and again.
            // The last worker to end replaces itself, alone, and a lone
            // worker takes whatever fits.
            return;
        }
        if free_replacement || self.restarts_used < self.config.max_worker_restarts {
            if !free_replacement {
                self.restarts_used += 1;
            }
            self.workers[worker].phase = WorkerPhase::Starting;
            actions.push(Action::StartWorker { worker });
        } else if !self.any_worker_can_take_work() {
            self.stop(NotRunReason::WorkerRestartsExhausted, actions);
        }
    }

    /// The tests a dead worker held: the one it ran is retried or ends as
    /// lost or timed out (not run, when Ctrl-C's grace ran out); the others
    /// (those finished whose results never came, and those not started) go
    /// back to the queue, or end not run when the run is stopping.
    /// Returns false when the run is stopping.
    fn settle_held(
        &mut self,
        worker: WorkerId,
        held: &[TestId],
        (unreported, in_test): (usize, bool),
        timed_out: bool,
        actions: &mut Vec<Action>,
    ) -> bool {
        let unreported = unreported.min(held.len());
        let running = held.get(unreported).filter(|_| in_test).copied();
        let queued: Vec<TestId> = held
            .iter()
            .enumerate()
            .filter(|&(index, _)| index != unreported || !in_test)
            .map(|(_, &test)| test)
            .collect();
        let Some(running) = running else {
            if queued.is_empty() {
                self.queue.release(worker);
                return true;
            }
            return self.requeue_held(worker, &queued, actions);
        };
        let cause = if timed_out { RetryCause::TimedOut } else { RetryCause::Crashed };
        if self.stopping == Some(NotRunReason::Interrupted) && !timed_out {
            // Killed when the grace after Ctrl-C ran out: interrupted, not
            // failed.
            self.tests[running] = TestState::Final;
            actions.push(Action::NotRun { tests: vec![running], reason: NotRunReason::Interrupted });
        } else if !self.retry(worker, running, cause, actions) {
            self.tests[running] = TestState::Final;
            actions.push(if timed_out {
                Action::TestTimedOut { test: running, worker }
            } else {
                Action::TestLost { test: running, worker }
            });
            // A crash or a timeout is a failure, for -x and --maxfail too.
            self.count_failure(actions);
        }
        self.requeue_held(worker, &queued, actions)
    }

    /// Tests a dead worker held and did not die in: back to the queue, or
    /// not run when the run is stopping (then returns false).
    fn requeue_held(&mut self, worker: WorkerId, queued: &[TestId], actions: &mut Vec<Action>) -> bool {
        if let Some(reason) = self.stopping {
            for &test in queued {
                self.tests[test] = TestState::Final;
            }
            if !queued.is_empty() {
                actions.push(Action::NotRun { tests: queued.to_vec(), reason });
            }
            return false;
        }
        for &test in queued {
            self.tests[test] = TestState::Pending;
        }
        self.queue.requeue_from(worker, queued);
        true
    }

    /// The test a worker is running and when it started (clock seconds).
    pub fn running(&self, worker: WorkerId) -> Option<(TestId, f64)> {
        let state = &self.workers[worker];
        Some((*state.assigned.front()?, state.running_since?))
    }

    /// When the next running test passes its timeout, if any has one.
    pub fn next_deadline(&self) -> Option<f64> {
        let budget = self.config.budget.filter(|_| self.stopping.is_none());
        let rerun = self.retries.iter().map(|&(_, ready)| ready).filter(|&ready| ready > self.now);
        (0..self.workers.len())
            .filter_map(|worker| self.deadline_of(worker))
            .chain(budget)
            .chain(rerun)
            .min_by(f64::total_cmp)
    }

    fn deadline_of(&self, worker: WorkerId) -> Option<f64> {
        let state = &self.workers[worker];
        if state.timing_out || state.wants_work || state.phase == WorkerPhase::Exited {
            return None;
        }
        let running = *state.assigned.front()?;
        let timeout = self.timeouts.get(running).copied().flatten()?;
        Some(state.running_since? + timeout)
    }

    fn time_out_due(&mut self, actions: &mut Vec<Action>) {
        for worker in 0..self.workers.len() {
            if self.deadline_of(worker).is_some_and(|deadline| deadline <= self.now) {
                let state = &mut self.workers[worker];
                state.timing_out = true;
                state.phase = WorkerPhase::Ending;
                let test = *state.assigned.front().expect("a deadline means a running test");
                actions.push(Action::TimeOut { worker, test });
            }
        }
    }

    fn any_worker_can_take_work(&self) -> bool {
        self.workers.iter().any(|state| matches!(state.phase, WorkerPhase::Starting | WorkerPhase::Active))
    }

    fn any_other_worker_can_take_work(&self, worker: WorkerId) -> bool {
        self.workers.iter().enumerate().any(|(other, state)| {
            other != worker && matches!(state.phase, WorkerPhase::Starting | WorkerPhase::Active)
        })
    }

    fn stop(&mut self, reason: NotRunReason, actions: &mut Vec<Action>) {
        if self.stopping.is_some_and(|current| current >= reason) {
            return;
        }
        self.stopping = Some(reason);
        self.more_coming = false;
        let mut unsent = self.queue.drain_all();
        unsent.extend(self.retries.drain(..).map(|(test, _)| test));
        unsent.sort_unstable();
        for &test in &unsent {
            self.tests[test] = TestState::Final;
        }
        if !unsent.is_empty() {
            actions.push(Action::NotRun { tests: unsent, reason });
        }
        for worker in 0..self.workers.len() {
            self.answer_wants_work(worker);
            let state = &mut self.workers[worker];
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
        if self.stopping.is_none() && self.budget_left().is_some_and(|left| left <= 0.0) {
            self.stop(NotRunReason::Budget, actions);
        }
        let active = self.workers.iter().filter(|state| state.phase == WorkerPhase::Active).count();
        for worker in 0..self.workers.len() {
            if self.workers[worker].phase != WorkerPhase::Active {
                continue;
            }
            if self.nothing_left() {
                self.end_worker(worker, actions);
                continue;
            }
            if self.dispatch_rerun(worker, actions) {
                continue;
            }
            if self.queue.is_empty() {
                // Only reruns are left, and they wait for their delay.
                continue;
            }
            if self.queue.only_serial_left() {
                self.dispatch_serial(worker, actions);
                continue;
            }
            let lookahead =
                (self.queue.remaining_seconds() / (4 * active.max(1)) as f64).min(LOOKAHEAD_SECONDS);
            let state = &self.workers[worker];
            let mut held_seconds: f64 = state.assigned.iter().map(|&test| self.queue.expected(test)).sum();
            let mut count = state.assigned.len();
            let must = state.wants_work || count == 0;
            let top_up = held_seconds < lookahead / 2.0 && count <= MAX_HELD / 2;
            if !must && !top_up {
                continue;
            }
            // Under a budget, a test must be expected to end in time after
            // what this worker already holds.
            let limit = self.budget_left().map(|left| left - held_seconds);
            let alone = !self.any_other_worker_can_take_work(worker);
            let mut tests = Vec::new();
            while count < MAX_HELD && ((must && tests.is_empty()) || held_seconds < lookahead) {
                let limit =
                    limit.map(|limit| limit - tests.iter().map(|&t| self.queue.expected(t)).sum::<f64>());
                let Some(test) = self.queue.take_for(worker, limit, alone) else { break };
                held_seconds += self.queue.expected(test);
                count += 1;
                tests.push(test);
            }
            if tests.is_empty() {
                if must {
                    // What is left belongs to other workers' modules and is
                    // not worth paying their set-up again here, or would not
                    // end within the budget.
                    self.end_worker(worker, actions);
                    self.stop_if_nothing_fits(actions);
                }
                continue;
            }
            self.assign(worker, tests, actions);
        }
    }

    /// The serial phase: one serial test at a time on one worker, while no
    /// other worker holds any test; the other workers end.
    fn dispatch_serial(&mut self, worker: WorkerId, actions: &mut Vec<Action>) {
        let state = &self.workers[worker];
        if !(state.wants_work || state.assigned.is_empty()) {
            return;
        }
        let serial_runner = (0..self.workers.len()).find(|&candidate| {
            let state = &self.workers[candidate];
            state.phase == WorkerPhase::Active && (state.wants_work || state.assigned.is_empty())
        });
        if serial_runner != Some(worker) {
            self.end_worker(worker, actions);
            return;
        }
        let others_busy = self.workers.iter().enumerate().any(|(other, state)| {
            other != worker && state.phase != WorkerPhase::Exited && !state.assigned.is_empty()
        });
        if others_busy || self.workers[worker].assigned.len() > 1 {
            // It waits (blocked at its test's teardown, or idle) until the
            // others are done: a serial test runs while nothing else runs.
            return;
        }
        let limit = self.budget_left().map(|left| {
            left - self.workers[worker].assigned.iter().map(|&test| self.queue.expected(test)).sum::<f64>()
        });
        match self.queue.take_serial(limit) {
            Some(test) => self.assign(worker, vec![test], actions),
            None => {
                self.end_worker(worker, actions);
                self.stop_if_nothing_fits(actions);
            }
        }
    }

    /// Reruns go to fresh workers: a fresh worker that needs work gets one
    /// (alone); when none is fresh or starting, a worker that needs work is
    /// shut down to be replaced by one. Says whether it acted.
    fn dispatch_rerun(&mut self, worker: WorkerId, actions: &mut Vec<Action>) -> bool {
        let state = &self.workers[worker];
        let must = state.wants_work || state.assigned.is_empty();
        let Some(position) = self.retries.iter().position(|&(_, ready)| ready <= self.now) else {
            return false;
        };
        // A rerun is parallel work: it never runs beside a serial test. (This
        // worker's own serial test is done: it waits to tear down.)
        let serial_running = self.workers.iter().enumerate().any(|(other, state)| {
            other != worker && state.assigned.iter().any(|&test| self.queue.is_serial(test))
        });
        if !must || serial_running {
            return false;
        }
        if state.fresh && state.assigned.is_empty() {
            let (test, _) = self.retries.remove(position).expect("a found position");
            self.assign(worker, vec![test], actions);
            return true;
        }
        let fresh_coming = self.workers.iter().any(|other| {
            other.phase == WorkerPhase::Starting
                || other.recycling
                || (other.phase == WorkerPhase::Active && other.fresh && other.assigned.is_empty())
        });
        // With nothing else left to send, a worker that is not fresh has no
        // use: it is recycled even when a fresh one is coming (else it could
        // hold a finished serial test's teardown while the rerun waits on it).
        if !self.queue.is_empty() && (fresh_coming || !self.queue.only_serial_left()) {
            return false;
        }
        self.workers[worker].recycling = true;
        self.end_worker(worker, actions);
        true
    }

    /// Clears a pending request for work, moving the running test's start
    /// forward by the time the worker waited for the answer.
    fn answer_wants_work(&mut self, worker: WorkerId) {
        let state = &mut self.workers[worker];
        if std::mem::take(&mut state.wants_work) {
            let waited = self.now - state.wants_work_since;
            if let Some(since) = state.running_since.as_mut() {
                *since += waited;
            }
        }
    }

    fn assign(&mut self, worker: WorkerId, tests: Vec<TestId>, actions: &mut Vec<Action>) {
        self.answer_wants_work(worker);
        self.workers[worker].fresh = false;
        for &test in &tests {
            self.tests[test] = TestState::Assigned(slot(worker));
        }
        if self.workers[worker].assigned.is_empty() {
            self.workers[worker].running_since = Some(self.now);
        }
        self.workers[worker].assigned.extend(tests.iter().copied());
        let load = self.queue.take_loads(worker, &tests);
        actions.push(Action::Run { worker, tests, load });
        if self.nothing_left() {
            // Saying so now lets the worker run its last test without
            // waiting for another round trip.
            self.workers[worker].phase = WorkerPhase::Ending;
            actions.push(Action::Shutdown { worker });
        }
    }

    fn end_worker(&mut self, worker: WorkerId, actions: &mut Vec<Action>) {
        self.answer_wants_work(worker);
        self.workers[worker].phase = WorkerPhase::Ending;
        actions.push(Action::Shutdown { worker });
    }

    /// Seconds left in the budget, if there is one.
    fn budget_left(&self) -> Option<f64> {
        self.config.budget.map(|end| end - self.now)
    }

    /// Under a budget: once no worker can take work and nothing is running,
    /// what is left cannot end in time.
    fn stop_if_nothing_fits(&mut self, actions: &mut Vec<Action>) {
        if self.config.budget.is_some()
            && !self.nothing_left()
            && self
                .workers
                .iter()
                .all(|state| state.phase != WorkerPhase::Active && state.assigned.is_empty())
        {
            self.stop(NotRunReason::Budget, actions);
        }
    }
}

/// A worker slot as stored per test.
fn slot(worker: WorkerId) -> u32 {
    u32::try_from(worker).expect("fewer than 4 billion workers")
}

#[cfg(test)]
mod tests;
