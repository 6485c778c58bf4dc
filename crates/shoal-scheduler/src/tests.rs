//! Table tests and property tests of the scheduler's invariants.

use super::*;
use proptest::prelude::*;

fn config(workers: usize) -> SchedulerConfig {
    SchedulerConfig { workers, max_failures: None, max_worker_restarts: 2, budget: None, rerun_delay: 0.0 }
}

/// `count` independent tests of 1 s each, dispatched in collection order.
fn uniform(count: usize) -> Workload {
    Workload::uniform(count, 1.0)
}

/// A worker died in its running test, every earlier result received.
fn exited(worker: WorkerId) -> Event {
    Event::WorkerExited { worker, progress: None }
}

fn runs_for(actions: &[Action], worker: WorkerId) -> Vec<TestId> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::Run { worker: to, tests, .. } if *to == worker => Some(tests.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

#[test]
fn long_tests_go_out_one_at_a_time_longest_first() {
    let workload = Workload::one_module(&[1.0, 2.0, 3.0], 0.0);
    let mut scheduler = Scheduler::new(config(2), &workload);
    let actions = scheduler.handle(0.0, Event::WorkerReady { worker: 0 });
    assert_eq!(actions, vec![Action::Run { worker: 0, tests: vec![2], load: vec![] }]);
    let actions = scheduler.handle(0.0, Event::WorkerWantsWork { worker: 0 });
    assert_eq!(actions, vec![Action::Run { worker: 0, tests: vec![1], load: vec![] }]);
}

#[test]
fn the_last_test_is_followed_by_a_shutdown() {
    let mut scheduler = Scheduler::new(config(1), &uniform(2));
    assert_eq!(
        scheduler.handle(0.0, Event::WorkerReady { worker: 0 }),
        vec![Action::Run { worker: 0, tests: vec![0], load: vec![] }]
    );
    assert_eq!(
        scheduler.handle(0.0, Event::WorkerWantsWork { worker: 0 }),
        vec![Action::Run { worker: 0, tests: vec![1], load: vec![] }, Action::Shutdown { worker: 0 }]
    );
    let actions = scheduler.handle(0.0, Event::TestFinished { worker: 0, test: 0, failed: false });
    assert!(actions.is_empty());
    let actions = scheduler.handle(0.0, Event::TestFinished { worker: 0, test: 1, failed: false });
    assert!(actions.is_empty());
    assert!(scheduler.all_tests_final());
}

#[test]
fn a_request_for_work_is_answered_even_when_nothing_is_left() {
    let mut scheduler = Scheduler::new(config(2), &uniform(1));
    scheduler.handle(0.0, Event::WorkerReady { worker: 0 });
    let actions = scheduler.handle(0.0, Event::WorkerReady { worker: 1 });
    assert_eq!(actions, vec![Action::Shutdown { worker: 1 }]);
}

#[test]
fn tiny_tests_go_out_in_batches_long_ones_one_at_a_time() {
    let mut scheduler = Scheduler::new(config(2), &Workload::uniform(1000, 0.0002));
    let first = scheduler.handle(0.0, Event::WorkerReady { worker: 0 });
    assert_eq!(runs_for(&first, 0).len(), MAX_HELD, "tiny tests: a full batch");
    let mut scheduler = Scheduler::new(config(2), &Workload::uniform(1000, 2.0));
    let first = scheduler.handle(0.0, Event::WorkerReady { worker: 0 });
    assert_eq!(runs_for(&first, 0), vec![0], "long tests: one, the next when asked");
}

#[test]
fn max_fail_stops_dispatch_and_reports_the_rest_not_run() {
    let mut scheduler = Scheduler::new(
        SchedulerConfig { max_failures: Some(1), max_worker_restarts: 0, ..config(1) },
        &Workload::uniform(100, 0.001),
    );
    let sent = runs_for(&scheduler.handle(0.0, Event::WorkerReady { worker: 0 }), 0);
    assert!(sent.len() > 2, "a batch of small tests: {sent:?}");
    let actions = scheduler.handle(0.0, Event::TestFinished { worker: 0, test: sent[0], failed: true });
    let unsent: Vec<TestId> = (sent.len()..100).collect();
    assert_eq!(
        actions,
        vec![Action::NotRun { tests: unsent, reason: NotRunReason::MaxFail }, Action::Stop { worker: 0 }]
    );
    let dropped = sent[1..].to_vec();
    let actions = scheduler
        .handle(0.0, Event::WorkerStopped { worker: 0, dropped: dropped.clone(), over_memory: false });
    assert_eq!(actions, vec![Action::NotRun { tests: dropped, reason: NotRunReason::MaxFail }]);
    assert!(scheduler.all_tests_final());
}

#[test]
fn a_dead_worker_loses_its_running_test_and_is_replaced() {
    let mut scheduler = Scheduler::new(config(1), &uniform(4));
    scheduler.handle(0.0, Event::WorkerReady { worker: 0 });
    let actions = scheduler.handle(0.0, exited(0));
    assert_eq!(actions, vec![Action::TestLost { test: 0, worker: 0 }, Action::StartWorker { worker: 0 },]);
    let actions = scheduler.handle(0.0, Event::WorkerReady { worker: 0 });
    assert_eq!(runs_for(&actions, 0), vec![1]);
}

#[test]
fn a_worker_that_dies_with_results_unsent_loses_only_the_test_it_died_in() {
    let mut scheduler = Scheduler::new(config(1), &Workload::uniform(200, 0.0001));
    let first = runs_for(&scheduler.handle(0.0, Event::WorkerReady { worker: 0 }), 0);
    assert!(first.len() >= 4, "tiny tests go out in a batch: {first:?}");
    // It finished two tests whose results never came and died in the third.
    let progress = Some(Progress { started: 3, finished: 2 });
    let actions = scheduler.handle(0.0, Event::WorkerExited { worker: 0, progress });
    let lost: Vec<TestId> = actions
        .iter()
        .filter_map(|action| match action {
            Action::TestLost { test, .. } => Some(*test),
            _ => None,
        })
        .collect();
    assert_eq!(lost, vec![first[2]], "{actions:?}");
    assert!(actions.iter().any(|action| matches!(action, Action::StartWorker { worker: 0 })));
    // The replacement runs the two whose results were lost, first.
    let again = runs_for(&scheduler.handle(0.1, Event::WorkerReady { worker: 0 }), 0);
    assert_eq!(again[..2], first[..2], "{again:?}");
    assert!(!again.contains(&first[2]));
}

#[test]
fn a_worker_that_dies_between_tests_blames_none_of_them() {
    let mut scheduler = Scheduler::new(config(1), &Workload::uniform(200, 0.0001));
    let first = runs_for(&scheduler.handle(0.0, Event::WorkerReady { worker: 0 }), 0);
    let progress = Some(Progress { started: 1, finished: 1 });
    let actions = scheduler.handle(0.0, Event::WorkerExited { worker: 0, progress });
    assert!(
        !actions.iter().any(|action| matches!(action, Action::TestLost { .. } | Action::Retry { .. })),
        "{actions:?}"
    );
    let again = runs_for(&scheduler.handle(0.1, Event::WorkerReady { worker: 0 }), 0);
    assert_eq!(again[..first.len()], first[..], "every test it held runs again, in order");
}

#[test]
fn restarts_exhausted_reports_the_rest_not_run() {
    // A worker that dies before it is ready (a broken start-up) is what
    // the restart budget is for.
    let mut scheduler = Scheduler::new(SchedulerConfig { max_worker_restarts: 1, ..config(1) }, &uniform(3));
    assert_eq!(scheduler.handle(0.0, exited(0)), vec![Action::StartWorker { worker: 0 }]);
    let actions = scheduler.handle(0.0, exited(0));
    assert_eq!(
        actions,
        vec![Action::NotRun { tests: vec![0, 1, 2], reason: NotRunReason::WorkerRestartsExhausted }]
    );
    assert!(scheduler.all_tests_final());
}

#[test]
fn tests_that_crash_or_hang_their_workers_never_exhaust_the_restart_budget() {
    let mut workload = uniform(6);
    workload.timeouts = vec![Some(1.0); 6];
    let mut scheduler = Scheduler::new(SchedulerConfig { max_worker_restarts: 0, ..config(1) }, &workload);
    let mut now = 0.0;
    scheduler.handle(now, Event::WorkerReady { worker: 0 });
    for test in 0..6 {
        // Even tests: crash their fresh worker; odd ones: hang until killed.
        let actions = if test % 2 == 0 {
            scheduler.handle(now, exited(0))
        } else {
            now += 1.0;
            assert_eq!(scheduler.handle(now, Event::Tick), vec![Action::TimeOut { worker: 0, test }]);
            scheduler.handle(now, exited(0))
        };
        assert!(
            actions.iter().all(|action| !matches!(action, Action::NotRun { .. })),
            "test {test}: {actions:?}"
        );
        if test < 5 {
            assert!(actions.contains(&Action::StartWorker { worker: 0 }), "test {test}: {actions:?}");
            scheduler.handle(now, Event::WorkerReady { worker: 0 });
        }
    }
    assert!(scheduler.all_tests_final());
}

#[test]
fn a_test_that_ends_after_its_timeout_fired_is_a_timeout_and_the_kill_is_called_off() {
    let mut workload = uniform(2);
    workload.timeouts = vec![Some(1.0), None];
    let mut scheduler = Scheduler::new(config(1), &workload);
    scheduler.handle(0.0, Event::WorkerReady { worker: 0 });
    assert_eq!(scheduler.handle(1.0, Event::Tick), vec![Action::TimeOut { worker: 0, test: 0 }]);
    // The stack dump's signal woke it (a C sleep returns early), and it
    // reported a pass before the kill.
    let actions = scheduler.handle(1.1, Event::TestFinished { worker: 0, test: 0, failed: false });
    assert_eq!(
        actions[..2],
        [Action::CancelTimeOut { worker: 0 }, Action::TestTimedOut { test: 0, worker: 0 }]
    );
    assert_eq!(scheduler.failures(), 1);
}

#[test]
fn interrupt_before_any_worker_is_ready_reports_everything_not_run() {
    let mut scheduler = Scheduler::new(config(2), &uniform(3));
    let actions = scheduler.handle(0.0, Event::Interrupted);
    assert_eq!(actions[0], Action::NotRun { tests: vec![0, 1, 2], reason: NotRunReason::Interrupted });
    assert!(actions.contains(&Action::Shutdown { worker: 0 }));
    assert!(actions.contains(&Action::Shutdown { worker: 1 }));
    assert!(scheduler.all_tests_final());
}

#[test]
fn a_test_past_its_timeout_is_timed_out_and_its_worker_replaced() {
    let mut workload = uniform(3);
    workload.timeouts = vec![Some(2.0), None, None];
    let mut scheduler = Scheduler::new(config(1), &workload);
    scheduler.handle(10.0, Event::WorkerReady { worker: 0 });
    assert_eq!(scheduler.next_deadline(), Some(12.0));
    assert!(scheduler.handle(11.9, Event::Tick).is_empty());
    assert_eq!(scheduler.handle(12.0, Event::Tick), vec![Action::TimeOut { worker: 0, test: 0 }]);
    assert_eq!(scheduler.next_deadline(), None, "a worker is timed out once");
    let actions = scheduler.handle(12.5, exited(0));
    assert_eq!(actions, vec![Action::TestTimedOut { test: 0, worker: 0 }, Action::StartWorker { worker: 0 }]);
}

#[test]
fn a_test_that_finishes_before_its_timeout_kill_lands_calls_the_kill_off_and_the_next_is_not_blamed() {
    let mut workload = uniform(3);
    workload.timeouts = vec![Some(2.0), Some(2.0), None];
    let mut scheduler = Scheduler::new(config(1), &workload);
    scheduler.handle(10.0, Event::WorkerReady { worker: 0 });
    assert_eq!(scheduler.handle(12.0, Event::Tick), vec![Action::TimeOut { worker: 0, test: 0 }]);
    let actions = scheduler.handle(12.1, Event::TestFinished { worker: 0, test: 0, failed: false });
    assert_eq!(actions.first(), Some(&Action::CancelTimeOut { worker: 0 }), "{actions:?}");
    scheduler.handle(12.1, Event::WorkerWantsWork { worker: 0 });
    let next = scheduler.running(0).map(|(test, _)| test);
    assert!(next.is_some(), "the worker goes on with the next test");
    assert!(scheduler.next_deadline().is_some_and(|deadline| deadline > 12.1), "its own clock");
}

#[test]
fn the_clock_restarts_for_each_test_a_worker_runs() {
    let mut workload = Workload::uniform(3, 0.001);
    workload.timeouts = vec![Some(1.0); 3];
    let mut scheduler = Scheduler::new(config(1), &workload);
    scheduler.handle(0.0, Event::WorkerReady { worker: 0 });
    scheduler.handle(0.8, Event::TestFinished { worker: 0, test: 0, failed: false });
    assert_eq!(scheduler.next_deadline(), Some(1.8));
}

#[test]
fn waiting_for_the_next_instruction_does_not_count_towards_a_timeout() {
    // Test 0 fails and its rerun waits 10 s; meanwhile both workers finish
    // their tests' calls and ask for work that only the rerun can answer.
    let mut workload = Workload::uniform(3, 0.5);
    workload.timeouts = vec![Some(1.0); 3];
    workload.reruns = vec![1, 0, 0];
    let mut scheduler = Scheduler::new(SchedulerConfig { rerun_delay: 10.0, ..config(2) }, &workload);
    scheduler.handle(0.0, Event::WorkerReady { worker: 0 });
    scheduler.handle(0.0, Event::WorkerReady { worker: 1 });
    let actions = scheduler.handle(0.2, Event::TestFinished { worker: 0, test: 0, failed: true });
    assert!(actions.contains(&Action::Run { worker: 0, tests: vec![2], load: vec![] }), "{actions:?}");
    scheduler.handle(0.5, Event::WorkerWantsWork { worker: 1 });
    scheduler.handle(0.6, Event::WorkerWantsWork { worker: 0 });
    // Counting the wait, tests 1 and 2 would time out at 1.0 and 1.2.
    assert_eq!(scheduler.next_deadline(), Some(10.2), "only the rerun's delay is due");
    assert!(scheduler.handle(5.0, Event::Tick).is_empty(), "nothing times out while waiting");
    // Both are answered (ended, for a fresh worker to take the rerun): test
    // 1 used 0.5 s of its second before it asked, test 2 0.4 s.
    let answers = scheduler.handle(10.2, Event::Tick);
    assert_eq!(answers, vec![Action::Shutdown { worker: 0 }, Action::Shutdown { worker: 1 }]);
    let deadline = scheduler.next_deadline().expect("the tests' clocks run again");
    assert!((deadline - (10.2 + 0.5)).abs() < 1e-9, "{deadline}");
}

#[test]
fn a_crash_counts_towards_maxfail() {
    let mut scheduler = Scheduler::new(SchedulerConfig { max_failures: Some(1), ..config(2) }, &uniform(4));
    scheduler.handle(0.0, Event::WorkerReady { worker: 0 });
    scheduler.handle(0.0, Event::WorkerReady { worker: 1 });
    let actions = scheduler.handle(1.0, exited(0));
    assert_eq!(actions[0], Action::TestLost { test: 0, worker: 0 });
    assert!(
        actions.iter().any(|action| matches!(action, Action::NotRun { reason: NotRunReason::MaxFail, .. })),
        "-x stops the run: {actions:?}"
    );
    assert!(!actions.iter().any(|action| matches!(action, Action::StartWorker { .. })), "{actions:?}");
}

#[test]
fn a_test_killed_when_the_interrupt_grace_runs_out_is_not_run_not_crashed() {
    let mut scheduler = Scheduler::new(config(1), &uniform(2));
    scheduler.handle(0.0, Event::WorkerReady { worker: 0 });
    scheduler.handle(1.0, Event::Interrupted);
    let actions = scheduler.handle(6.0, exited(0));
    assert_eq!(actions, vec![Action::NotRun { tests: vec![0], reason: NotRunReason::Interrupted }]);
    assert!(scheduler.all_tests_final());
}

#[test]
fn a_worker_over_its_memory_limit_is_replaced_and_its_tests_run_elsewhere() {
    let mut scheduler = Scheduler::new(
        SchedulerConfig { max_worker_restarts: 0, ..config(1) },
        &Workload::uniform(10, 0.001),
    );
    let sent = runs_for(&scheduler.handle(0.0, Event::WorkerReady { worker: 0 }), 0);
    scheduler.handle(0.0, Event::TestFinished { worker: 0, test: sent[0], failed: false });
    let actions = scheduler
        .handle(0.0, Event::WorkerStopped { worker: 0, dropped: sent[1..].to_vec(), over_memory: true });
    assert!(actions.iter().all(|action| !matches!(action, Action::NotRun { .. })), "{actions:?}");
    let actions = scheduler.handle(0.0, exited(0));
    assert_eq!(actions, vec![Action::StartWorker { worker: 0 }], "no restart budget is needed");
    let actions = scheduler.handle(0.0, Event::WorkerReady { worker: 0 });
    assert_eq!(runs_for(&actions, 0)[0], sent[1], "the dropped tests go out first");
}

/// A simulated worker pool: decisions come from the proptest-chosen script.
#[derive(Debug, Clone)]
enum Step {
    /// The worker with this index (modulo workers) makes progress.
    Progress(usize, bool),
    /// The worker crashes.
    Crash(usize),
    Interrupt,
    /// Time passes by this many seconds.
    Wait(f64),
    /// The worker finishes its running test over its memory limit.
    OverMemory(usize),
}

fn step_strategy() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (0usize..8, any::<bool>()).prop_map(|(worker, failed)| Step::Progress(worker, failed)),
        1 => (0usize..8).prop_map(Step::Crash),
        1 => Just(Step::Interrupt),
        2 => (0.0f64..3.0).prop_map(Step::Wait),
        1 => (0usize..8).prop_map(Step::OverMemory),
    ]
}

#[derive(Default, Clone)]
struct SimulatedWorker {
    alive: bool,
    ready: bool,
    queue: VecDeque<TestId>,
    ending: bool,
    stop_requested: bool,
    /// Asked for its next test and blocked until answered.
    waiting: bool,
    /// Stopped itself over its memory limit: reads no more commands.
    stopped_itself: bool,
    /// It has been sent a test since it started.
    ran_any: bool,
    /// Split collection: the modules this process has imported.
    imported: Vec<usize>,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Whatever happens, every test ends exactly once, no worker holds more
    /// than [`MAX_HELD`], and the run always comes to an end.
    #[test]
    fn every_test_reaches_exactly_one_final_outcome(
        test_count in 0usize..150,
        durations in proptest::collection::vec(0.0f64..3.0, 150),
        modules in proptest::collection::vec(0usize..6, 150),
        setups in proptest::collection::vec(prop_oneof![Just(0.0), 0.0f64..1.0], 6),
        timeouts in proptest::collection::vec(proptest::option::of(0.5f64..5.0), 150),
        groups in proptest::collection::vec(proptest::option::of(0u32..4), 150),
        serial in proptest::collection::vec(proptest::bool::weighted(0.1), 150),
        first in proptest::collection::vec(any::<bool>(), 150),
        budget in proptest::option::of(1.0f64..60.0),
        reruns in proptest::collection::vec(0u8..3, 150),
        workers in 1usize..5,
        max_failures in proptest::option::of(1u64..6),
        restarts in 0u32..3,
        steps in proptest::collection::vec(step_strategy(), 0..400),
        split in any::<bool>(),
        loads in proptest::collection::vec(0.0f64..2.0, 6),
    ) {
        let workload = Workload {
            expected: durations[..test_count].to_vec(),
            module: modules[..test_count].to_vec(),
            module_setup: setups,
            timeouts: timeouts[..test_count].to_vec(),
            group: groups[..test_count].to_vec(),
            serial: serial[..test_count].to_vec(),
            first: first[..test_count].to_vec(),
            // A group's or a serial test's rerun would break its contract
            // (one worker, in order; nothing else running): they get none.
            reruns: (0..test_count).map(|test| if groups[test].is_some() || serial[test] { 0 } else { reruns[test] }).collect(),
            // Split collection: module m is first imported by worker m % workers.
            file: if split { modules[..test_count].to_vec() } else { Vec::new() },
            file_load: if split { loads.clone() } else { Vec::new() },
            initially_loaded: if split {
                (0..workers).map(|worker| (0..6).filter(|module| module % workers == worker).collect()).collect()
            } else {
                Vec::new()
            },
        };
        let allowed_reruns = workload.reruns.clone();
        let mut runs_of = vec![0u32; test_count];
        let mut retried = vec![false; test_count];
        let is_serial = serial.clone();
        let group_of = groups.clone();
        let mut scheduler = Scheduler::new(
            SchedulerConfig { workers, max_failures, max_worker_restarts: restarts, budget, rerun_delay: 0.0 },
            &workload,
        );
        let mut final_count = vec![0u32; test_count];
        let mut simulated: Vec<SimulatedWorker> = workload
            .initially_loaded
            .iter()
            .cloned()
            .chain(std::iter::repeat(Vec::new()))
            .take(workers)
            .map(|imported| SimulatedWorker { alive: true, imported, ..Default::default() })
            .collect();
        let mut inbox: VecDeque<Event> = (0..workers).map(|worker| Event::WorkerReady { worker }).collect();
        for worker in &mut simulated { worker.ready = true; }

        let mut apply = |actions: Vec<Action>, simulated: &mut Vec<SimulatedWorker>, final_count: &mut Vec<u32>, inbox: &mut VecDeque<Event>| {
            for action in actions {
                match action {
                    Action::Run { worker, .. } if simulated[worker].stopped_itself => {
                        // In flight while it stopped: never read, never run.
                    }
                    Action::Run { worker, tests, load } => {
                        if split {
                            let imported = &mut simulated[worker].imported;
                            for module in load {
                                prop_assert!(!imported.contains(&module), "module {} imported twice", module);
                                imported.push(module);
                            }
                            for &test in &tests {
                                prop_assert!(imported.contains(&modules[test]), "test {} runs before its module is imported", test);
                            }
                        } else {
                            prop_assert!(load.is_empty(), "an import with full collection");
                        }
                        let others: Vec<TestId> = simulated
                            .iter()
                            .enumerate()
                            .filter(|(other, state)| *other != worker && state.alive && !state.stopped_itself)
                            .flat_map(|(_, state)| state.queue.iter().copied())
                            .collect();
                        if tests.iter().any(|&test| is_serial[test]) {
                            prop_assert!(others.is_empty(), "a serial test overlaps {:?}", others);
                            prop_assert!(simulated[worker].queue.is_empty() || simulated[worker].waiting, "a serial test queued behind others");
                        }
                        for &test in &tests {
                            if let Some(group) = group_of[test] {
                                prop_assert!(
                                    !others.iter().any(|&other| group_of[other] == Some(group)),
                                    "group {} is on two workers at once", group
                                );
                            }
                        }
                        for &test in &tests {
                            if retried[test] {
                                prop_assert!(!simulated[worker].ran_any, "a rerun went to a worker that ran tests before");
                            }
                        }
                        let state = &mut simulated[worker];
                        prop_assert!(state.alive && !state.ending, "work sent to an ending or dead worker");
                        state.ran_any = true;
                        state.queue.extend(tests);
                        state.waiting = false;
                        prop_assert!(state.queue.len() <= MAX_HELD, "worker holds {} tests", state.queue.len());
                    }
                    Action::Stop { worker } => {
                        simulated[worker].ending = true;
                        simulated[worker].stop_requested = true;
                        simulated[worker].waiting = false;
                    }
                    Action::Shutdown { worker } => {
                        simulated[worker].ending = true;
                        simulated[worker].waiting = false;
                    }
                    Action::StartWorker { worker } => {
                        simulated[worker] = SimulatedWorker { alive: true, ready: true, ..Default::default() };
                        inbox.push_back(Event::WorkerReady { worker });
                    }
                    Action::TestLost { test, .. } | Action::TestTimedOut { test, .. } => final_count[test] += 1,
                    Action::Retry { test, cause, .. } => {
                        retried[test] = true;
                        // A failed attempt was counted when it finished; it is not final.
                        if cause == RetryCause::Failed {
                            final_count[test] -= 1;
                        }
                    }
                    // The simulated kill is immediate: no test finishes after it.
                    Action::CancelTimeOut { .. } => prop_assert!(false, "nothing to cancel"),
                    Action::TimeOut { worker, test } => {
                        prop_assert_eq!(simulated[worker].queue.front().copied(), Some(test), "timed out a test it is not running");
                        // The runner kills the worker; its exit follows.
                        simulated[worker].alive = false;
                        simulated[worker].queue.clear();
                        inbox.push_back(exited(worker));
                    }
                    Action::NotRun { tests, .. } => for test in tests { final_count[test] += 1 },
                }
            }
            Ok(())
        };

        let mut script = steps.into_iter();
        let mut now = 0.0;
        let mut idle_rounds = 0;
        let mut rounds = 0u32;
        loop {
            // Every round counts, not only the script's steps: events that
            // only beget events (a worker started, told to end, replaced...)
            // are a livelock, and must fail rather than hang.
            rounds += 1;
            prop_assert!(rounds < 100_000, "the run never ended: events keep begetting events");
            if let Some(event) = inbox.pop_front() {
                let actions = scheduler.handle(now, event);
                apply(actions, &mut simulated, &mut final_count, &mut inbox)?;
                continue;
            }
            // A worker that was told to stop answers with what it dropped;
            // an ending worker with nothing left exits.
            let mut progressed = false;
            for (worker, state) in simulated.iter_mut().enumerate() {
                if state.alive && state.stop_requested {
                    // As the plugin does: the running test (if any) ends,
                    // then `stopped` lists the rest, which never started.
                    state.stop_requested = false;
                    state.waiting = false;
                    if let Some(test) = state.queue.pop_front() {
                        final_count[test] += 1;
                        inbox.push_back(Event::TestFinished { worker, test, failed: false });
                    }
                    let dropped: Vec<TestId> = state.queue.drain(..).collect();
                    inbox.push_back(Event::WorkerStopped { worker, dropped, over_memory: false });
                    progressed = true;
                } else if state.alive && state.ending && state.queue.is_empty() {
                    state.alive = false;
                    inbox.push_back(exited(worker));
                    progressed = true;
                }
            }
            if progressed { continue; }
            let step = script.next().unwrap_or(Step::Progress(idle_rounds, false));
            idle_rounds += 1;
            prop_assert!(idle_rounds < 5000, "the run never ended");
            match step {
                Step::Progress(index, failed) => {
                    let busy: Vec<usize> = (0..workers)
                        .filter(|&w| simulated[w].alive && !simulated[w].waiting && !simulated[w].queue.is_empty())
                        .collect();
                    if busy.is_empty() {
                        if simulated.iter().all(|w| !w.alive) { break; }
                        continue;
                    }
                    let worker = busy[index % busy.len()];
                    let state = &mut simulated[worker];
                    if state.queue.len() == 1 && !state.ending {
                        // At teardown of its last known test the worker asks
                        // what comes next, and blocks until told.
                        state.waiting = true;
                        inbox.push_back(Event::WorkerWantsWork { worker });
                        continue;
                    }
                    let test = state.queue.pop_front().expect("busy");
                    final_count[test] += 1;
                    runs_of[test] += 1;
                    prop_assert!(runs_of[test] <= 1 + u32::from(allowed_reruns[test]), "test {} ran {} times", test, runs_of[test]);
                    inbox.push_back(Event::TestFinished { worker, test, failed });
                }
                Step::Crash(index) => {
                    let worker = index % workers;
                    if simulated[worker].alive {
                        simulated[worker].alive = false;
                        simulated[worker].queue.clear();
                        inbox.push_back(exited(worker));
                    }
                }
                Step::Interrupt => inbox.push_back(Event::Interrupted),
                Step::Wait(seconds) => {
                    now += seconds;
                    inbox.push_back(Event::Tick);
                }
                Step::OverMemory(index) => {
                    let worker = index % workers;
                    let state = &mut simulated[worker];
                    if state.alive && !state.waiting && !state.ending && !state.queue.is_empty() {
                        // It finishes its test, then stops itself and says which it dropped.
                        let test = state.queue.pop_front().expect("checked");
                        final_count[test] += 1;
                        let dropped: Vec<TestId> = state.queue.drain(..).collect();
                        state.ending = true;
                        state.stopped_itself = true;
                        inbox.push_back(Event::TestFinished { worker, test, failed: false });
                        inbox.push_back(Event::WorkerStopped { worker, dropped, over_memory: true });
                    }
                }
            }
        }
        prop_assert!(scheduler.all_tests_final(), "scheduler still has open tests");
        for (test, count) in final_count.iter().enumerate() {
            prop_assert_eq!(*count, 1, "test {} ended {} times", test, count);
        }
    }
}

#[test]
fn a_worker_ended_because_nothing_left_suits_it_is_not_replaced_while_others_work() {
    // Split collection: worker 0 imported module 0 (ten 1 s tests), worker
    // 1 module 1 (one 10 ms test); importing module 0 costs 30 s, more than
    // sharing its work saves. Replacing worker 1 when it ends would start a
    // worker that is told to end at once, again and again.
    let workload = Workload {
        expected: [vec![1.0; 10], vec![0.01]].concat(),
        module: [vec![0; 10], vec![1]].concat(),
        module_setup: vec![0.0, 0.0],
        file: [vec![0; 10], vec![1]].concat(),
        file_load: vec![30.0, 30.0],
        initially_loaded: vec![vec![0], vec![1]],
        ..Workload::default()
    };
    let mut scheduler = Scheduler::new(config(2), &workload);
    scheduler.handle(0.0, Event::WorkerReady { worker: 0 });
    let actions = scheduler.handle(0.0, Event::WorkerReady { worker: 1 });
    assert_eq!(runs_for(&actions, 1), vec![10]);
    // Module 0 is not worth importing: it is told to end.
    let actions = scheduler.handle(0.0, Event::WorkerWantsWork { worker: 1 });
    assert_eq!(actions, vec![Action::Shutdown { worker: 1 }]);
    scheduler.handle(0.01, Event::TestFinished { worker: 1, test: 10, failed: false });
    let actions = scheduler.handle(0.02, exited(1));
    assert!(!actions.contains(&Action::StartWorker { worker: 1 }), "{actions:?}");
    assert!(actions.iter().all(|action| !matches!(action, Action::NotRun { .. })), "{actions:?}");
}

#[test]
fn a_lone_replacement_takes_what_is_left_however_costly_its_import() {
    // Split collection, one worker: it is retired over its memory limit
    // holding a group whose last test is expected to take no time, so the
    // import is not worth it by the usual measure. No other worker can
    // take the group: the replacement must, or it would be told to end,
    // replaced, told to end, for ever.
    let workload = Workload {
        expected: vec![0.6, 0.0],
        module: vec![0, 0],
        module_setup: vec![0.0],
        group: vec![Some(0), Some(0)],
        file: vec![0, 0],
        file_load: vec![0.2],
        initially_loaded: vec![vec![0]],
        ..Workload::default()
    };
    let mut scheduler = Scheduler::new(config(1), &workload);
    let actions = scheduler.handle(0.0, Event::WorkerReady { worker: 0 });
    assert_eq!(runs_for(&actions, 0), vec![0]);
    let actions = scheduler.handle(0.5, Event::WorkerWantsWork { worker: 0 });
    assert_eq!(runs_for(&actions, 0), vec![1]);
    scheduler.handle(0.6, Event::TestFinished { worker: 0, test: 0, failed: false });
    scheduler.handle(0.6, Event::WorkerStopped { worker: 0, dropped: vec![1], over_memory: true });
    let actions = scheduler.handle(0.7, exited(0));
    assert_eq!(actions, vec![Action::StartWorker { worker: 0 }]);
    let actions = scheduler.handle(0.8, Event::WorkerReady { worker: 0 });
    assert_eq!(runs_for(&actions, 0), vec![1], "{actions:?}");
}

#[test]
fn withheld_tests_wait_for_their_release_and_workers_wait_for_more() {
    let mut scheduler = Scheduler::new(config(2), &uniform(3));
    scheduler.withhold_all();
    assert!(scheduler.handle(0.0, Event::WorkerReady { worker: 0 }).is_empty());
    assert!(scheduler.handle(0.0, Event::WorkerReady { worker: 1 }).is_empty());
    assert_eq!(scheduler.wants_tests(), 2);
    assert!(!scheduler.all_tests_final());
    let actions = scheduler.handle(0.0, Event::TestsReleased { tests: vec![2] });
    assert_eq!(actions, vec![Action::Run { worker: 0, tests: vec![2], load: vec![] }]);
    assert_eq!(scheduler.wants_tests(), 1);
    // Done with its test, the worker waits for more rather than ending.
    assert!(scheduler.handle(1.0, Event::TestFinished { worker: 0, test: 2, failed: false }).is_empty());
    assert!(!scheduler.all_tests_final());
    let actions = scheduler.handle(1.0, Event::NoMoreTests);
    assert_eq!(actions, vec![Action::Shutdown { worker: 0 }, Action::Shutdown { worker: 1 }]);
    // Tests 0 and 1 were never released: another machine ran them.
    assert!(scheduler.all_tests_final());
}

#[test]
fn a_released_unit_of_a_costly_module_stays_on_one_worker() {
    let mut scheduler = Scheduler::new(config(2), &Workload::one_module(&[1.0, 1.0, 1.0, 1.0], 5.0));
    scheduler.withhold_all();
    scheduler.handle(0.0, Event::WorkerReady { worker: 0 });
    scheduler.handle(0.0, Event::WorkerReady { worker: 1 });
    let actions = scheduler.handle(0.0, Event::TestsReleased { tests: vec![0, 1, 2, 3] });
    assert!(runs_for(&actions, 1).is_empty(), "{actions:?}");
    assert_eq!(runs_for(&actions, 0).len(), 1);
}

#[test]
fn the_units_of_a_workload_go_longest_first() {
    let workload = Workload::one_module(&[1.0, 3.0, 2.0], 0.0);
    assert_eq!(workload.units(), vec![vec![1], vec![2], vec![0]]);
}

#[test]
fn with_nothing_to_release_a_worker_waiting_at_teardown_ends_and_the_last_is_replaced() {
    let mut scheduler = Scheduler::new(config(2), &uniform(3));
    scheduler.withhold_all();
    scheduler.handle(0.0, Event::WorkerReady { worker: 0 });
    scheduler.handle(0.0, Event::WorkerReady { worker: 1 });
    scheduler.handle(0.0, Event::TestsReleased { tests: vec![0] });
    scheduler.handle(0.5, Event::WorkerWantsWork { worker: 0 });
    let actions = scheduler.handle(0.5, Event::NothingToRelease);
    // Worker 0 holds test 0 at its teardown: it ends; idle worker 1 stays.
    assert_eq!(actions, vec![Action::Shutdown { worker: 0 }]);
    scheduler.handle(1.0, Event::TestFinished { worker: 0, test: 0, failed: false });
    assert!(scheduler.handle(1.0, exited(0)).is_empty());
    // Worker 1 takes what comes later.
    let actions = scheduler.handle(2.0, Event::TestsReleased { tests: vec![1, 2] });
    assert_eq!(runs_for(&actions, 1), vec![1]);
}

#[test]
fn handed_back_reruns_wait_for_the_shared_queue_and_count_earlier_attempts() {
    let mut workload = uniform(1);
    workload.reruns = vec![3];
    let mut scheduler = Scheduler::new(config(1), &workload);
    scheduler.withhold_all();
    scheduler.hand_reruns_back();
    scheduler.handle(0.0, Event::WorkerReady { worker: 0 });
    scheduler.handle(0.0, Event::TestsReleased { tests: vec![0] });
    let actions = scheduler.handle(1.0, Event::TestFinished { worker: 0, test: 0, failed: true });
    assert!(matches!(actions[..], [Action::Retry { test: 0, next_attempt: 2, .. }]), "{actions:?}");
    assert_eq!(scheduler.take_handed_back(), vec![(0, 1)]);
    // Another machine failed it again: one rerun is left.
    let actions = scheduler.handle(2.0, Event::RerunReleased { test: 0, attempts: 2 });
    assert_eq!(runs_for(&actions, 0), vec![0]);
    let actions = scheduler.handle(3.0, Event::TestFinished { worker: 0, test: 0, failed: true });
    assert!(matches!(actions[..], [Action::Retry { test: 0, next_attempt: 4, .. }]), "{actions:?}");
    assert_eq!(scheduler.take_handed_back(), vec![(0, 3)]);
    scheduler.handle(4.0, Event::RerunReleased { test: 0, attempts: 3 });
    let actions = scheduler.handle(5.0, Event::TestFinished { worker: 0, test: 0, failed: true });
    assert!(!actions.iter().any(|action| matches!(action, Action::Retry { .. })), "{actions:?}");
}
