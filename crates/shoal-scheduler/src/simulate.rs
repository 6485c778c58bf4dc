//! Predicting a run: the scheduler driven by virtual time.
//!
//! Because the scheduler is pure, the same code that dispatches a real run
//! can be fed imagined completions: each test takes its expected time, and a
//! worker pays a module's set-up the first time it runs a test of that
//! module. The finish time of that imagined run is the expected wall time.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use crate::{Action, Event, Scheduler, SchedulerConfig, Workload};

/// Virtual seconds, totally ordered.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Instant(f64);

impl Eq for Instant {}

impl PartialOrd for Instant {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Instant {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Expected seconds from the first worker being ready to the last test
/// ending, on `workers` workers.
pub fn simulate(workload: &Workload, workers: usize) -> f64 {
    let config = SchedulerConfig {
        workers,
        max_failures: None,
        max_worker_restarts: 0,
        budget: None,
        rerun_delay: 0.0,
    };
    let mut scheduler = Scheduler::new(config, workload);
    let mut queues: Vec<VecDeque<usize>> = vec![VecDeque::new(); workers];
    let mut last_module: Vec<Option<usize>> = vec![None; workers];
    let mut busy = vec![false; workers];
    let mut completions: BinaryHeap<Reverse<(Instant, usize, usize)>> = BinaryHeap::new();
    let mut now = 0.0;
    let mut actions: Vec<Action> =
        (0..workers).flat_map(|worker| scheduler.handle(0.0, Event::WorkerReady { worker })).collect();
    loop {
        for action in actions.drain(..) {
            if let Action::Run { worker, tests, .. } = action {
                queues[worker].extend(tests);
            }
        }
        for worker in 0..workers {
            if busy[worker] {
                continue;
            }
            let Some(&test) = queues[worker].front() else { continue };
            let module = workload.module[test];
            let setup = if last_module[worker] == Some(module) { 0.0 } else { workload.module_setup[module] };
            last_module[worker] = Some(module);
            busy[worker] = true;
            completions.push(Reverse((Instant(now + setup + workload.expected[test]), worker, test)));
        }
        let Some(Reverse((Instant(at), worker, test))) = completions.pop() else { break };
        now = at;
        busy[worker] = false;
        // At teardown a worker that holds nothing more asks for its next
        // test; then its test is finished.
        if queues[worker].len() == 1 {
            actions = scheduler.handle(now, Event::WorkerWantsWork { worker });
            for action in actions.drain(..) {
                if let Action::Run { worker, tests, .. } = action {
                    queues[worker].extend(tests);
                }
            }
        }
        queues[worker].pop_front();
        actions = scheduler.handle(now, Event::TestFinished { worker, test, failed: false });
    }
    now
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_first_reaches_the_lower_bound_when_it_can() {
        let workload = Workload::one_module(&[1.0, 1.0, 1.0, 3.0, 2.0, 2.0], 0.0);
        // 10 s of work on two workers: 3+2 and 2+1+1+1.
        assert!((simulate(&workload, 2) - 5.0).abs() < 1e-9);
        // The two longest tests never end up on one worker.
        let workload = Workload::one_module(&[4.0, 3.0, 2.0, 1.0, 1.0, 1.0], 0.0);
        assert!((simulate(&workload, 2) - 6.0).abs() < 1e-9, "{}", simulate(&workload, 2));
        assert!((simulate(&workload, 1) - 12.0).abs() < 1e-9);
    }

    #[test]
    fn module_setup_is_paid_once_per_worker() {
        let workload = Workload {
            expected: vec![0.1; 4],
            module: vec![0, 0, 1, 1],
            module_setup: vec![1.0, 1.0],
            timeouts: Vec::new(),
            ..Workload::default()
        };
        // Each worker takes one module: 1 s set-up + 0.2 s of tests.
        assert!((simulate(&workload, 2) - 1.2).abs() < 1e-9);
    }
}
