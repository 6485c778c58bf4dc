//! The third phase: the scheduling loop. Every worker event goes to the
//! [`Scheduler`], and the actions it returns are carried out: commands to
//! workers, replacements, final outcomes. Reporters hear of every result;
//! they never steer the run. Signals arrive on the same queue as worker
//! events: the first Ctrl-C stops scheduling and gives running tests a short
//! grace, the second kills every worker at once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use shoal_scheduler::Workload;
use shoal_scheduler::{Action, Event, RetryCause, Scheduler, SchedulerConfig, TestId};

use crate::errors::ShoalError;
use crate::pool::{Pool, SlotPhase, check_same_collection};
use crate::protocol::{
    FilePart, Finished, PhaseOutcome, PhaseReport, WarningMessage, WorkerCommand, WorkerMessage,
};
use crate::report::Reporter;
use crate::results::{Outcome, StopReason, Tally, TestRecord, outcome_from_reports};
use crate::settings::RunSettings;
use crate::table::TestTable;
use crate::worker::{Exit, WorkerEvent, WorkerKey, Zygote, describe_exit};

use super::Learned;

mod state;

use self::state::{Run, ended_record, ending};

/// How long running tests get to finish after the first Ctrl-C.
const INTERRUPT_GRACE: Duration = Duration::from_secs(5);

/// How long workers get to exit after their last test before being killed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What driving the run produced, for the phases after it.
pub(super) struct Results {
    /// The tests run, in collection order.
    pub(super) table: TestTable,
    /// The whole collection when `--lf` or `--shard` ran part of it.
    pub(super) whole_collection: Option<TestTable>,
    /// Every test's final record, at the table's indexes.
    pub(super) records: Vec<TestRecord>,
    /// The closing line's counts of the reports.
    pub(super) tally: Tally,
    /// Warnings, in the order recorded.
    pub(super) warnings: Vec<WarningMessage>,
    /// `(worker slot, test)` in the order tests finished.
    pub(super) execution_order: Vec<(u16, u32)>,
    /// Latest CPU seconds and peak memory (KiB) of each worker process.
    pub(super) usage: HashMap<WorkerKey, (f64, u64)>,
    /// The tests' protocol time outside their phases, added up.
    pub(super) between_phases_seconds: f64,
    /// What the summary should mention (replaced workers, leaked processes).
    pub(super) notices: Vec<String>,
    /// Why the run stopped early, if it did.
    pub(super) stop: Option<StopReason>,
}

/// Where the tests come from when a shared queue hands them out (see
/// [`crate::queue`]): the scheduler starts with every test withheld and the
/// source releases them, and hears of every final record.
pub(super) trait WorkSource {
    /// Takes the records that became final, and releases tests to the
    /// scheduler while its workers wait (or tells it none will come);
    /// returns the scheduler's actions.
    fn pump(&mut self, scheduler: &mut Scheduler, finals: Finals<'_>) -> Result<Vec<Action>, ShoalError>;
    /// When to pump again though nothing happened (other machines hold the
    /// rest of the work).
    fn poll_at(&self) -> Option<Instant>;
}

/// Records that became final since the last pump, and the run's clock.
pub(super) struct Finals<'a> {
    pub(super) table: &'a TestTable,
    pub(super) records: &'a [TestRecord],
    pub(super) is_final: &'a [bool],
    /// Failed attempts of tests waiting for a rerun, oldest first.
    pub(super) attempts: &'a HashMap<TestId, Vec<TestRecord>>,
    /// Each newly final test with all of pytest's reports of its last attempt.
    pub(super) newly: Vec<(TestId, Vec<PhaseReport>)>,
    pub(super) now: f64,
}

/// What the run starts driving from.
pub(super) struct DriveStart<'a> {
    pub(super) table: TestTable,
    pub(super) whole_collection: Option<TestTable>,
    /// The collection's reports, counted.
    pub(super) tally: Tally,
    /// Warnings of the collection.
    pub(super) warnings: Vec<WarningMessage>,
    pub(super) workload: Workload,
    /// Split collection: the test files the workload's imports index.
    pub(super) test_files: Vec<crate::plan::LoadTarget>,
    /// Collection errors (the run stops before any test, unless told not to).
    pub(super) collect_errors: usize,
    /// Each test's slow timeout (empty when no test has one).
    pub(super) slow_timeouts: Vec<Option<f64>>,
    pub(super) clock: Instant,
    pub(super) reporters: &'a mut [Box<dyn Reporter>],
    /// A shared queue the tests come from, if any.
    pub(super) source: Option<&'a mut dyn WorkSource>,
    /// Tests already told to the reporters (cached by `--affected`).
    pub(super) reported_before: usize,
}

/// Runs the tests: every one ends with its final record.
pub(super) fn run_tests(
    pool: &mut Pool,
    settings: &RunSettings,
    learned: &Learned,
    start: DriveStart<'_>,
) -> Result<Results, ShoalError> {
    let test_count = start.table.len();
    let mut run = Run {
        records: vec![TestRecord::new(Outcome::NotRun); test_count],
        is_final: vec![false; test_count],
        total: test_count + start.reported_before,
        table: start.table,
        whole_collection: start.whole_collection,
        done: start.reported_before,
        tally: start.tally,
        warnings: start.warnings,
        reporters: start.reporters,
        execution_order: Vec::new(),
        usage: HashMap::new(),
        between_phases_seconds: 0.0,
        clock: start.clock,
        monotonic_at_start: crate::protocol::monotonic_seconds() - start.clock.elapsed().as_secs_f64(),
        timeouts: start.workload.timeouts.clone(),
        slow_timeouts: start.slow_timeouts,
        quick: start.workload.batchable(),
        announced_slow: Vec::new(),
        last_finished: HashMap::new(),
        notices: Vec::new(),
        attempts: HashMap::new(),
        died_running_since: HashMap::new(),
        announced_running: Vec::new(),
        test_files: start.test_files,
        confirm_failures: learned.max_failures.is_some(),
        failure_to_answer: None,
        outbox: start.source.is_some().then(Vec::new),
    };
    let stop = if start.collect_errors > 0 && !learned.continue_on_collection_errors {
        for slot in 0..pool.slots.len() {
            pool.send(slot, &WorkerCommand::Shutdown);
        }
        pool.shutdown_zygote();
        for test in 0..test_count {
            // Not counted in the closing line: pytest does not run them either.
            run.records[test].not_run_reason = Some(StopReason::CollectionErrors);
            run.is_final[test] = true;
        }
        Some(StopReason::CollectionErrors)
    } else {
        let mut scheduler = Scheduler::new(
            SchedulerConfig {
                workers: pool.slots.len(),
                max_failures: learned.max_failures,
                max_worker_restarts: settings.max_worker_restarts,
                budget: settings.budget,
                rerun_delay: settings.rerun_delay,
            },
            &start.workload,
        );
        drop(start.workload);
        if start.source.is_some() {
            scheduler.withhold_all();
        }
        drive(pool, &mut run, scheduler, start.source)?
    };
    Ok(Results {
        table: run.table,
        whole_collection: run.whole_collection,
        records: run.records,
        tally: run.tally,
        warnings: run.warnings,
        execution_order: run.execution_order,
        usage: run.usage,
        between_phases_seconds: run.between_phases_seconds,
        notices: run.notices,
        stop,
    })
}

/// Ends the workers and the zygote and waits for them. Workers the
/// scheduler never needed (no tests, or fewer than workers) may still wait
/// for their first command.
pub(super) fn shut_down(pool: &mut Pool) {
    for slot in 0..pool.slots.len() {
        pool.send(slot, &WorkerCommand::Shutdown);
    }
    pool.shutdown_zygote();
    wait_for_exit(pool);
}

/// The scheduling loop: events in, scheduler decisions out, until every
/// test has its outcome and every worker has ended.
fn drive(
    pool: &mut Pool,
    run: &mut Run<'_>,
    mut scheduler: Scheduler,
    mut source: Option<&mut dyn WorkSource>,
) -> Result<Option<StopReason>, ShoalError> {
    let mut interrupted_at: Option<Instant> = None;
    workers_ready(pool, run, &mut scheduler)?;
    let refresh_interval = run.reporters.iter().filter_map(|reporter| reporter.refresh_interval()).min();
    let mut last_refresh = Instant::now();
    loop {
        pump(pool, run, &mut scheduler, source.as_deref_mut())?;
        if scheduler.all_tests_final() {
            // Every result is in (a worker's last test ends with its session
            // fixtures torn down); the processes' own exits are awaited
            // after the report.
            break;
        }
        run.announce_starts(&scheduler, pool.slots.len());
        run.announce_slow(&scheduler, pool.slots.len());
        run.refresh(&mut last_refresh, refresh_interval);
        let refresh_due = refresh_interval.map(|interval| last_refresh + interval);
        // A shared queue's next look counts as a wake-up too.
        let poll_due = source.as_deref().and_then(WorkSource::poll_at);
        let deadline =
            [interrupted_at.map(|at| at + INTERRUPT_GRACE), pool.next_kill(), refresh_due, poll_due]
                .into_iter()
                .chain(run.next_wake(&scheduler, pool.slots.len()))
                .flatten()
                .min();
        let Some(event) = pool.receive(deadline) else {
            pool.run_due_kills();
            if interrupted_at.is_some_and(|at| at.elapsed() >= INTERRUPT_GRACE) {
                // The grace after Ctrl-C ran out: end it by force.
                pool.kill_all();
                interrupted_at = None;
            }
            let actions = scheduler.handle(run.now(), Event::Tick);
            execute(pool, run, actions)?;
            continue;
        };
        let actions = match event {
            WorkerEvent::Messages(key, messages) => {
                handle_messages(pool, run, &mut scheduler, key, messages)?;
                continue;
            }
            WorkerEvent::Interrupt => {
                if interrupted_at.is_some() {
                    pool.kill_all();
                }
                interrupted_at.get_or_insert_with(Instant::now);
                scheduler.handle(run.now(), Event::Interrupted)
            }
            WorkerEvent::ProtocolError(key, error) => {
                if let Some(slot) = pool.current(key) {
                    pool.slots[slot].protocol_error = Some(error);
                    pool.slots[slot].handle.signal_group(Signal::SIGKILL);
                }
                continue;
            }
            WorkerEvent::Exited(key, _) if key == Zygote::KEY => {
                pool.zygote_exited = true;
                continue;
            }
            WorkerEvent::Exited(key, exit) => {
                let Some(slot) = pool.current(key) else { continue };
                worker_exited(pool, run, &mut scheduler, slot, exit)
            }
        };
        execute(pool, run, actions)?;
    }
    // The last records (and, after a stop, those the stop ended).
    pump(pool, run, &mut scheduler, source)?;
    Ok(scheduler.stopping().map(StopReason::from))
}

/// Spawned workers are ready once collected (forked ones say so).
fn workers_ready(pool: &mut Pool, run: &mut Run<'_>, scheduler: &mut Scheduler) -> Result<(), ShoalError> {
    for slot in 0..pool.slots.len() {
        if pool.slots[slot].phase == SlotPhase::Running {
            let actions = scheduler.handle(run.now(), Event::WorkerReady { worker: slot });
            execute(pool, run, actions)?;
        }
    }
    Ok(())
}

/// Hands a shared queue what became final since it last asked, and carries
/// out what its releases made the scheduler decide.
fn pump(
    pool: &mut Pool,
    run: &mut Run<'_>,
    scheduler: &mut Scheduler,
    source: Option<&mut (dyn WorkSource + '_)>,
) -> Result<(), ShoalError> {
    let Some(source) = source else { return Ok(()) };
    let newly = run.outbox.as_mut().map(std::mem::take).unwrap_or_default();
    let finals = Finals {
        table: &run.table,
        records: &run.records,
        is_final: &run.is_final,
        attempts: &run.attempts,
        newly,
        now: run.now(),
    };
    let actions = source.pump(scheduler, finals)?;
    execute(pool, run, actions)
}

/// A batch of messages from one worker, each handled in turn.
fn handle_messages(
    pool: &mut Pool,
    run: &mut Run<'_>,
    scheduler: &mut Scheduler,
    key: WorkerKey,
    messages: Vec<WorkerMessage>,
) -> Result<(), ShoalError> {
    for message in messages {
        // A message may replace the worker (a crash is noticed elsewhere,
        // but a failed collection check kills it): look the slot up again
        // each time.
        let Some(slot) = pool.current(key) else { break };
        let actions = handle_message(pool, run, scheduler, slot, message)?;
        execute(pool, run, actions)?;
        if let Some(slot) = run.failure_to_answer.take() {
            pool.send(slot, &WorkerCommand::Continue);
        }
        run.announce_starts(scheduler, pool.slots.len());
    }
    Ok(())
}

/// A worker process ended: how is kept for the record of the test it ran.
fn worker_exited(
    pool: &mut Pool,
    run: &mut Run<'_>,
    scheduler: &mut Scheduler,
    slot: usize,
    exit: Exit,
) -> Vec<Action> {
    if let Some((_, since)) = scheduler.running(slot) {
        run.died_running_since.insert(slot, since);
    }
    let state = &mut pool.slots[slot];
    state.phase = SlotPhase::Exited;
    let mut description = describe_exit(exit.status);
    if let Some(error) = &state.protocol_error {
        description = format!("{description} after a protocol error: {error}");
    }
    state.exit = Some(description);
    // Grandchildren a test left behind die with the worker's group.
    state.handle.signal_group(Signal::SIGKILL);
    scheduler.handle(run.now(), Event::WorkerExited { worker: slot, progress: exit.progress })
}

fn handle_message(
    pool: &mut Pool,
    run: &mut Run<'_>,
    scheduler: &mut Scheduler,
    slot: usize,
    message: WorkerMessage,
) -> Result<Vec<Action>, ShoalError> {
    if pool.slots[slot].phase == SlotPhase::Starting {
        return replacement_message(pool, run, scheduler, slot, message);
    }
    Ok(match message {
        WorkerMessage::Finished(finished) => test_finished(pool, run, scheduler, slot, &finished)?,
        WorkerMessage::Warning(warning) => {
            if warning.when == "runtest" {
                run.warnings.push(warning);
            }
            Vec::new()
        }
        WorkerMessage::Stopped { dropped, over_memory } => {
            if over_memory && let Some(&(test, rss_kib)) = run.last_finished.get(&slot) {
                run.notices.push(format!(
                    "worker gw{slot} was replaced: {} MiB resident after {} passed the worker memory limit",
                    rss_kib / 1024,
                    run.table.nodeid(test)
                ));
            }
            let dropped = dropped.iter().filter_map(|nodeid| run.table.find(nodeid)).collect();
            scheduler.handle(run.now(), Event::WorkerStopped { worker: slot, dropped, over_memory })
        }

        WorkerMessage::WantWork => scheduler.handle(run.now(), Event::WorkerWantsWork { worker: slot }),
        WorkerMessage::Hello(_)
        | WorkerMessage::CollectReport(_)
        | WorkerMessage::Collected { .. }
        | WorkerMessage::CollectionFinished { .. }
        | WorkerMessage::ZygoteReady { .. }
        | WorkerMessage::TestFiles { .. }
        | WorkerMessage::Ready { .. }
        | WorkerMessage::ChildExited { .. } => Vec::new(),
    })
}

/// A test's result: its record (or a kept attempt, when it is rerun), the
/// answer a worker waits for after a failure under `-x`/`--maxfail`, and
/// the worker's usage.
fn test_finished(
    pool: &Pool,
    run: &mut Run<'_>,
    scheduler: &mut Scheduler,
    slot: usize,
    finished: &Finished,
) -> Result<Vec<Action>, ShoalError> {
    let Some(test) = run.table.find(&finished.nodeid) else {
        return Err(ShoalError::Internal(format!("a worker ran an unknown test `{}`", finished.nodeid)));
    };
    let outcome = outcome_from_reports(&finished.reports);
    let mut record = TestRecord::from_reports(outcome, slot, finished.duration, &finished.reports);
    // The worker's own end time is exact; the time a message is handled
    // lags for messages that arrive together, and so does the scheduler's
    // start mark.
    let ended = finished.ended.map_or_else(|| run.now(), |ended| ended - run.monotonic_at_start);
    record.started = (ended - finished.duration).max(0.0) as f32;
    let actions =
        scheduler.handle(run.now(), Event::TestFinished { worker: slot, test, failed: outcome.is_failure() });
    let timed_out = actions.iter().any(|action| {
        matches!(action, Action::TestTimedOut { test: ended, .. }
            | Action::Retry { test: ended, cause: RetryCause::TimedOut, .. } if *ended == test)
    });
    let rerun = actions.iter().find_map(|action| match action {
        Action::Retry { test: retried, next_attempt, .. } if *retried == test => Some(*next_attempt),
        _ => None,
    });
    if timed_out {
        // It ended only after its timeout fired: the timeout's
        // record (made by `execute`) is the one kept.
        run.died_running_since.insert(slot, f64::from(record.started));
    } else if let Some(next_attempt) = rerun {
        run.keep_attempt(test, record, next_attempt);
    } else {
        // Counted as the test's duration is: for the record kept.
        run.between_phases_seconds += finished.between_phases;
        run.record(test, record, &finished.reports);
    }
    if run.confirm_failures && finished.reports.iter().any(|report| report.outcome == PhaseOutcome::Failed) {
        // The worker waits for this answer before its next test;
        // a `stop` among the actions (sent first) overrides it.
        run.failure_to_answer = Some(slot);
    }
    run.execution_order.push((
        u16::try_from(slot).expect("fewer than 65536 workers"),
        u32::try_from(test).expect("fewer than 4 billion tests"),
    ));
    if let (Some(cpu_seconds), Some(max_rss_kib)) = (finished.cpu_seconds, finished.max_rss_kib) {
        run.usage.insert(pool.slots[slot].handle.key, (cpu_seconds, max_rss_kib));
    }
    run.last_finished.insert(slot, (test, finished.rss_kib));
    for (nodeid, pids) in &finished.leaked {
        run.notices.push(format!(
            "{nodeid} left {} process{} running (killed with worker gw{slot}'s process group)",
            pids.len(),
            if pids.len() == 1 { "" } else { "es" }
        ));
    }
    Ok(actions)
}

/// A message from a worker that is starting: a forked one saying it is
/// ready, or a spawned replacement collecting again (its collection must
/// match the run's before it gets tests).
fn replacement_message(
    pool: &mut Pool,
    run: &Run<'_>,
    scheduler: &mut Scheduler,
    slot: usize,
    message: WorkerMessage,
) -> Result<Vec<Action>, ShoalError> {
    if let WorkerMessage::Ready { pid, workerinput } = message {
        pool.remember_workerinput(slot, workerinput);
        let state = &mut pool.slots[slot];
        state.handle.pid = Some(pid);
        state.phase = SlotPhase::Running;
        return Ok(scheduler.handle(run.now(), Event::WorkerReady { worker: slot }));
    }
    let state = &mut pool.slots[slot];
    state.collection.record(message)?;
    if !state.collection.finished {
        return Ok(Vec::new());
    }
    let fresh = std::mem::take(&mut state.collection.table);
    let expected = run.whole_collection.as_ref().unwrap_or(&run.table);
    if let Err(error) = check_same_collection(expected, &fresh, slot) {
        crate::output::warn(&format!("replacement {error}"));
        state.handle.signal_group(Signal::SIGKILL);
        return Ok(Vec::new());
    }
    state.phase = SlotPhase::Running;
    Ok(scheduler.handle(run.now(), Event::WorkerReady { worker: slot }))
}

fn execute(pool: &mut Pool, run: &mut Run<'_>, actions: Vec<Action>) -> Result<(), ShoalError> {
    for action in actions {
        match action {
            Action::Run { worker, tests, load } => {
                let attempts = tests
                    .iter()
                    .filter(|&&test| run.attempt_of(test) > 1)
                    .map(|&test| (run.table.nodeid(test).to_owned(), run.attempt_of(test)))
                    .collect();
                let nodeids = tests.iter().map(|&test| run.table.nodeid(test).to_owned()).collect();
                let (mut whole, mut parts) = (Vec::new(), Vec::new());
                for target in load.iter().map(|&file| &run.test_files[file]) {
                    match &target.part {
                        None => whole.push(target.file.clone()),
                        Some(([part, count], assigned)) => {
                            parts.push(FilePart(target.file.clone(), *part, *count, assigned.clone()));
                        }
                    }
                }
                let confirm_failures = run.confirm_failures;
                let batch = tests.iter().all(|&test| run.quick.get(test).copied().unwrap_or(false));
                pool.send(
                    worker,
                    &WorkerCommand::Run { nodeids, attempts, load: whole, parts, confirm_failures, batch },
                );
            }
            // A failed attempt reported by pytest was kept where it arrived.
            Action::Retry { cause: RetryCause::Failed, .. } => {}
            Action::Retry { test, worker, cause, next_attempt } => {
                let outcome = if cause == RetryCause::TimedOut { Outcome::Timeout } else { Outcome::Crashed };
                let record = ended_record(outcome, worker, ending(pool, run, test, worker, outcome), run);
                run.keep_attempt(test, record, next_attempt);
            }
            Action::Stop { worker } => pool.send(worker, &WorkerCommand::Stop),
            Action::Shutdown { worker } => pool.send(worker, &WorkerCommand::Shutdown),
            Action::StartWorker { worker } => {
                for reporter in run.reporters.iter_mut() {
                    reporter.worker_replaced(worker);
                }
                pool.replace(worker)?;
            }
            Action::TestLost { test, worker } => {
                let crash = ending(pool, run, test, worker, Outcome::Crashed);
                let record = ended_record(Outcome::Crashed, worker, crash, run);
                run.record(test, record, &[]);
            }
            Action::TimeOut { worker, .. } => pool.time_out(worker),
            Action::CancelTimeOut { worker } => pool.cancel_time_out(worker),
            Action::TestTimedOut { test, worker } => {
                let crash = ending(pool, run, test, worker, Outcome::Timeout);
                let record = ended_record(Outcome::Timeout, worker, crash, run);
                run.record(test, record, &[]);
            }
            Action::NotRun { tests, reason } => {
                for test in tests {
                    let mut record = TestRecord::new(Outcome::NotRun);
                    record.not_run_reason = Some(reason.into());
                    run.record(test, record, &[]);
                }
            }
        }
    }
    Ok(())
}

/// Gives workers that were told to end a moment to do so, then kills them
/// (at once on Ctrl-C: the report is written by now).
fn wait_for_exit(pool: &mut Pool) {
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    while !pool.all_exited() {
        match pool.receive(Some(deadline)) {
            Some(WorkerEvent::Exited(key, _)) if key == Zygote::KEY => pool.zygote_exited = true,
            Some(WorkerEvent::Exited(key, _)) => {
                if let Some(slot) = pool.current(key) {
                    pool.slots[slot].phase = SlotPhase::Exited;
                }
            }
            // Ctrl-C while workers end (tearing down session fixtures):
            // as during the run's grace, a further one kills them at once.
            Some(WorkerEvent::Interrupt) | None => {
                pool.kill_all();
                return;
            }
            Some(_) => {}
        }
    }
}
